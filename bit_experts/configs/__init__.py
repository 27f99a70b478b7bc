"""Training configs: plain Python files with `get_config(arg=None)` returning a dict.

Each file's docstring gives the exact command, the expected runtime and the expected result.
"""
