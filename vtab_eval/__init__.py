"""vtab_eval: expert selection and VTAB-1k fine-tuning (docs/evaluation.md, docs/selection.md).

The public Python API (docs/api.md), imported lazily on first use so that `import vtab_eval` stays
cheap and creates no import cycle with hub_export:

  make_config(name=None, **changes)   a checked evaluation config       `vtab_eval.config.make`
  evaluate(config)                    select, fine-tune, write results  `vtab_eval.engine.evaluate`
  rank(config)                        rank one task's experts           `vtab_eval.engine.rank`
  write_report(output_dir)            report.md, summary.json, plots    `vtab_eval.report.write`
  rank_command, run_command           the old spellings, for one release (`vtab_eval.compat`)
"""

# Importing bit_experts first hides TF's start-up lines for our commands (bit_experts.cli).
from bit_experts import lazy_api

_API = {
    "make_config": ("vtab_eval.config", "make"),
    "evaluate": ("vtab_eval.engine", "evaluate"),
    "rank": ("vtab_eval.engine", "rank"),
    "write_report": ("vtab_eval.report", "write"),
    "rank_command": ("vtab_eval.compat", "rank_command"),
    "run_command": ("vtab_eval.compat", "run_command"),
}
lazy_api.install(globals(), _API)
