"""vtab_eval: expert selection and VTAB-1k fine-tuning (docs/evaluation.md, docs/selection.md).

The public Python API (docs/api.md), imported lazily on first use so that `import vtab_eval` stays
cheap and creates no import cycle with hub_export:

  rank_command(collection_spec, task_name, output_json, ...)   `vtab_eval.rank.rank_command`
  run_command(collection_spec, task_names, output_dir, ...)    `vtab_eval.run.run_command`
"""

# Importing bit_experts first hides TF's start-up lines for our commands (bit_experts.cli).
from bit_experts import lazy_api

_API = {
    "rank_command": ("vtab_eval.rank", "rank_command"),
    "run_command": ("vtab_eval.run", "run_command"),
}
lazy_api.install(globals(), _API)
