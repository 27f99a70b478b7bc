"""`run_command` and `rank_command`, the Python API before evaluation configs (one release more).

Each maps its old keywords (the command's flags, `vtab_eval.config.FLAGS`) onto an evaluation
config and makes the call the command makes. New code builds a config (`vtab_eval.make_config`)
and calls `vtab_eval.evaluate` or `vtab_eval.rank_experts` (docs/api.md).
"""

import warnings

from vtab_eval import config, engine, plots, report, runner

_POSITIONAL = {"collection", "tasks", "dataset", "output_dir", "output_json"}


def _config(command, options, base):
    keys = {n: k for n, (k, _) in config.FLAGS[command].items() if n not in _POSITIONAL}
    keys["plot_png"] = "plot_png"  # run_command took it too
    for name, value in options.items():
        if name not in keys:
            raise TypeError(f"unexpected keyword argument {name!r}")
        value = [value] if name == "method" else list(value) if name == "selectors" else value
        base = config.set_key(base, keys[name], value)
    return config.resolve(base)


def run_command(collection_spec, task_names, output_dir, **options):
    """Old spelling of `vtab_eval.evaluate` (+ the report); returns method -> task -> result.

    Keywords as `python -m vtab_eval.run`'s flags, plus `dry_run` (print the plan, return None),
    `report_only`, `log`, `progress` and `finetune_fn`.
    """
    warnings.warn("run_command: use vtab_eval.evaluate(config)", DeprecationWarning, stacklevel=2)
    dry_run, report_only = options.pop("dry_run", False), options.pop("report_only", False)
    log, finetune_fn = options.pop("log", print), options.pop("finetune_fn", None)
    progress = options.pop("progress", True)
    if report_only:
        return report.write(output_dir)
    base = {"collection": collection_spec, "tasks": list(task_names), "output_dir": output_dir}
    cfg = _config("run", options, base)
    if dry_run:
        engine.dry_run(cfg, log, finetune_fn)
        return None
    executor = runner.make_executor(cfg, log, progress=progress, finetune_fn=finetune_fn)
    on_task_done = lambda out: report.write(out, with_plots=False)
    engine.evaluate(cfg, executor=executor, log=log, on_task_done=on_task_done)
    return report.write(cfg["output_dir"])


def rank_command(collection_spec, task_name, output_json, **options):
    """Old spelling of `vtab_eval.rank_experts`; keywords as `python -m vtab_eval.rank`'s flags and
    `log`. Returns the ranking (or shard report) dict written to `output_json`."""
    warnings.warn(
        "rank_command: use vtab_eval.rank_experts(config)", DeprecationWarning, stacklevel=2
    )
    log = options.pop("log", print)
    base = {"collection": collection_spec, "tasks": [task_name], "output_json": output_json}
    cfg = _config("rank", options, base)
    result = engine.rank(cfg, log)
    if cfg["plot_png"] and "selected" in result:
        plots.plot_scores(result, cfg["plot_png"])
    return result
