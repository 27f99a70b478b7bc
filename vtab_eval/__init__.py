"""vtab_eval: expert selection and VTAB-1k fine-tuning (docs/evaluation.md, docs/selection.md).

The public Python API (docs/api.md): `make_config`, `evaluate`, `rank_experts`, `write_report` and, for one
release, the old spellings `rank_command` and `run_command`. Each is imported on first use from the
module `_API` names, so that `import vtab_eval` stays cheap and creates no import cycle with
hub_export.
"""

# Importing bit_experts first hides TF's start-up lines for our commands (bit_experts.cli).
from bit_experts import lazy_api

_API = {
    "make_config": ("vtab_eval.config", "make"),
    "evaluate": ("vtab_eval.engine", "evaluate"),
    "rank_experts": ("vtab_eval.engine", "rank"),
    "write_report": ("vtab_eval.report", "write"),
    "rank_command": ("vtab_eval.compat", "rank_command"),
    "run_command": ("vtab_eval.compat", "run_command"),
}
lazy_api.install(globals(), _API)
