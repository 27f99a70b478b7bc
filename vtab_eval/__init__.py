"""vtab_eval: expert selection and VTAB-1k fine-tuning (docs/evaluation.md, docs/selection.md).

The public Python API (docs/api.md), imported lazily on first use so that `import vtab_eval` stays
cheap and creates no import cycle with hub_export:

  rank_command(collection_spec, task_name, output_json, ...)   `vtab_eval.rank.rank_command`
  run_command(collection_spec, task_names, output_dir, ...)    `vtab_eval.run.run_command`
"""

import importlib

from bit_experts import cli

cli.quiet_start()  # Before TensorFlow is imported: hides its start-up lines for our commands.

_API = {
    "rank_command": ("vtab_eval.rank", "rank_command"),
    "run_command": ("vtab_eval.run", "run_command"),
}
__all__ = sorted(_API)


def __getattr__(name):
    # Unknown names raise AttributeError, so `from vtab_eval import rank` still imports the
    # submodule.
    if name not in _API:
        raise AttributeError(f"module 'vtab_eval' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
