"""Named evaluation configs (`--config=NAME[:ARG]`): each file's `get_config(arg)` returns a partial
`vtab_eval.config` dict, and its docstring gives the command, the expected runtime and result."""
