"""`run_command` and `rank_command`, the Python API before evaluation configs (one release more).

Each maps its old keyword arguments onto an evaluation config (`vtab_eval.config`) and makes the
call the command makes. New code builds a config (`vtab_eval.make_config`) and calls
`vtab_eval.evaluate` or `vtab_eval.rank`. docs/api.md lists both.
"""

import warnings

# Old keyword -> config key, for run_command (and rank_command where the name is shared).
_RUN_KEYS = {
    "selectors": "selection.selectors",
    "sweep": "finetune.sweep",
    "learning_rates": "finetune.learning_rates",
    "steps": "finetune.steps",
    "batch_size": "finetune.batch_size",
    "resolution": "finetune.resolution",
    "selection_resolution": "selection.resolution",
    "random_search_size": "finetune.random_search_size",
    "num_selections": "protocol.num_selections",
    "num_retrains": "protocol.num_retrains",
    "scheme": "protocol.scheme",
    "search": "protocol.search",
    "aggregate": "protocol.aggregate",
    "strategy": "finetune.strategy",
    "tpu": "finetune.tpu",
    "include_baseline": "selection.include_baseline",
    "save_models": "finetune.save_models",
}
_RANK_KEYS = {
    "method": "selection.selectors",
    "split": "selection.split",
    "resolution": "selection.resolution",
    "batch_size": "selection.batch_size",
    "include_baseline": "selection.include_baseline",
    "num_shards": "selection.num_shards",
    "shard_index": "selection.shard_index",
    "cache_only": "selection.cache_only",
    "verify_checksums": "selection.verify_checksums",
    "fallback": "selection.fallback",
    "fallback_confidence": "selection.fallback_confidence",
    "precision": "selection.precision",
}
_TOP = ("data_dir", "cache_dir", "seed", "deterministic", "skip_bad_images", "plot_png")


def _config(table, options, base):
    from vtab_eval import config

    for name, value in options.items():
        if name in table:
            value = [value] if name == "method" else list(value) if name == "selectors" else value
            base = config.set_key(base, table[name], value)
        elif name in _TOP:
            base[name] = value
        else:
            raise TypeError(f"unexpected keyword argument {name!r}")
    return config.resolve(base)


def run_command(collection_spec, task_names, output_dir, **options):
    """Old spelling of `vtab_eval.evaluate` (+ the report); returns method -> task -> result.

    Keywords as `python -m vtab_eval.run`'s flags, plus `dry_run` (print the plan, return None),
    `report_only`, `log` and `finetune_fn`.
    """
    from vtab_eval import engine, report

    warnings.warn("run_command: use vtab_eval.evaluate(config)", DeprecationWarning, stacklevel=2)
    dry_run, report_only = options.pop("dry_run", False), options.pop("report_only", False)
    log, finetune_fn = options.pop("log", print), options.pop("finetune_fn", None)
    progress = options.pop("progress", True)
    if report_only:
        return report.write(output_dir)
    base = {"collection": collection_spec, "tasks": list(task_names), "output_dir": output_dir}
    config = _config(_RUN_KEYS, options, base)
    if dry_run:
        engine.dry_run(config, log, finetune_fn)
        return None
    from vtab_eval import runner

    executor = runner.make_executor(config, log, progress=progress, finetune_fn=finetune_fn)
    engine.evaluate(
        config,
        executor=executor,
        log=log,
        on_task_done=lambda out: report.write(out, with_plots=False),
    )
    return report.write(config["output_dir"])


def rank_command(collection_spec, task_name, output_json, **options):
    """Old spelling of `vtab_eval.rank`; keywords as `python -m vtab_eval.rank`'s flags and
    `log`. Returns the ranking (or shard report) dict written to `output_json`."""
    from vtab_eval import engine, plots

    warnings.warn("rank_command: use vtab_eval.rank(config)", DeprecationWarning, stacklevel=2)
    log = options.pop("log", print)
    base = {"collection": collection_spec, "tasks": [task_name], "output_json": output_json}
    config = _config(_RANK_KEYS, options, base)
    result = engine.rank(config, log)
    if config["plot_png"] and "selected" in result:
        plots.plot_scores(result, config["plot_png"])
    return result
