r"""Selects experts and fine-tunes them on one task or many, then reports; resumable after a kill.

    python -m vtab_eval.run --collection=C --tasks=vtab1k --output_dir=OUT \
        --selectors=knn,random,baseline --sweep=vtab_lightweight

Everything is checked before anything trains. The run is a plan of fine-tunes, each identified by
its content (module checksum, task fingerprint, splits, setting, seed); identical fine-tunes run
once, and each is recorded the moment it ends in OUT/finetunes/<key>.json, so re-running the same
command after a kill redoes nothing finished. `--dry_run` prints the plan and a time estimate.
Results (OUT/results/<task>/<method>.json) and the report (OUT/report.md, OUT/summary.json) are
written from those records as tasks finish, the plots (OUT/plots/) at the end; every fine-tune
writes TensorBoard scalars, every final one its test-set predictions (and with `--save_models` a
SavedModel). Flags, layout and JSON schema: docs/evaluation.md.
"""

import os

from absl import app, flags

from bit_experts import atomic_files, cli

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command's flags (only when run as a program, so that importing this
    module next to other entry points never clashes over flag names)."""
    flags.DEFINE_string(
        "collection", None, "Collection dir, manifest.json or text file of handles."
    )
    flags.DEFINE_list("tasks", None, "Task names, folder:PATH, or a suite: vtab1k, table3.")
    flags.DEFINE_string("output_dir", None, "Results, rankings, plots and the report go here.")
    flags.DEFINE_list(
        "selectors",
        ["knn"],
        "Selection methods side by side; 'baseline' = no expert; 'hindsight' = every candidate "
        "fine-tuned, the best on test reported.",
    )
    flags.DEFINE_string(
        "sweep",
        "local",
        "Sweep preset: vtab_lightweight, bit_hyperrule, local, quick, random_search.",
    )
    flags.DEFINE_list(
        "learning_rates", None, "Sweep given by flags: learning rates (with --steps)."
    )
    flags.DEFINE_list("steps", None, "Sweep given by flags: step counts (with --learning_rates).")
    flags.DEFINE_integer("batch_size", 512, "Batch size of a sweep given by flags.")
    flags.DEFINE_integer("resolution", 0, "Fine-tuning image side; 0: the sweep preset's.")
    flags.DEFINE_integer(
        "selection_resolution", 0, "Ranking image side; 0: module metadata, else 224."
    )
    flags.DEFINE_integer("random_search_size", 36, "Settings drawn by --sweep=random_search.")
    flags.DEFINE_integer("num_selections", 1, "Repeated selections per task (paper: 10).")
    flags.DEFINE_integer("num_retrains", 1, "Final fine-tunes per selection (paper: 3).")
    flags.DEFINE_enum(
        "scheme",
        "auto",
        ["auto", "vtab1k", "full"],
        "Splits: vtab1k (train800/val200/...), full (train/val/trainval/test); auto: "
        "full for table3 tasks, vtab1k otherwise.",
    )
    flags.DEFINE_enum(
        "search",
        "auto",
        ["auto", "per_selection", "once"],
        "Tuning search: per_selection (VTAB-1k: every selection tunes its own expert), once "
        "(table 3: one search, then every retrain uses its best setting); auto: once for table3 "
        "tasks.",
    )
    flags.DEFINE_string("data_dir", None, "TFDS data directory.")
    flags.DEFINE_string("cache_dir", None, "Feature cache; default OUT/feature_cache.")
    flags.DEFINE_enum(
        "strategy",
        "default",
        ["default", "one_device", "mirrored", "multi_worker", "tpu"],
        "tf.distribute strategy for fine-tuning.",
    )
    flags.DEFINE_string("tpu", "", "TPU address for --strategy=tpu.")
    flags.DEFINE_integer(
        "seed", 0, "Base seed: selections, random search and every fine-tune's seed derive from it."
    )
    flags.DEFINE_bool(
        "deterministic", True, "TF op determinism and seeded RNGs (--nodeterministic: off)."
    )
    flags.DEFINE_enum(
        "aggregate",
        "auto",
        ["auto", "median", "mean"],
        "Aggregate of a task's outcomes: auto = the suite's (median for VTAB-1k, mean for table "
        "3, median for folders); folder tasks may choose.",
    )
    flags.DEFINE_bool("include_baseline", True, "Rank the baseline B together with the experts.")
    flags.DEFINE_bool("report_only", False, "Only rewrite the report from existing results.")
    flags.DEFINE_bool(
        "dry_run", False, "Check and print the plan with a time estimate; no training."
    )
    flags.DEFINE_bool(
        "save_models", False, "Also export every final fine-tune as a SavedModel (OUT/models/)."
    )
    flags.DEFINE_bool(
        "skip_bad_images", False, "Leave out undecodable images of folder tasks with a warning."
    )
    flags.DEFINE_list(
        "compare",
        None,
        "Output dirs of earlier runs to put side by side in OUT/comparison.md (no training).",
    )


def expand_tasks(names):
    """Task names with suites ("vtab1k", "table3", "all") expanded, duplicates dropped."""
    from vtab_eval import tasks

    expanded = []
    for name in names:
        name = name.strip()
        if name in tasks.SUITES:
            expanded += tasks.list_tasks(name)
        elif name:
            expanded.append(name)
    if not expanded:
        raise ValueError("no tasks given; pass --tasks=NAME[,NAME...] or a suite such as vtab1k")
    return list(dict.fromkeys(expanded))


def _numbers(values, kind, flag):
    out = []
    for value in values or []:
        try:
            out.append(kind(value))
        except ValueError:
            what = "a number" if kind is float else "an integer"
            raise ValueError(f"{flag}: {value!r} is not {what}") from None
    return out


def build_sweep(
    preset,
    *,
    task,
    scheme,
    data_dir=None,
    resolution=0,
    learning_rates=None,
    steps=None,
    batch_size=512,
    random_search_size=36,
    seed=0,
    log=None,
):
    """The sweep for one task, with the task's augmentation policy applied (`sweeps.for_task`).

    From flags when learning rates or steps are given, else the preset. BiT-HyperRule's schedule
    and resolution come from the whole final training split (`train800val200`, or `trainval` in
    the full scheme): its image count and the side of its median image area
    (`sweeps.split_statistics`, which logs the size chosen through `log`). The settings returned
    are the ones fine-tuning runs, so spec keys and result identities describe what ran.
    """
    from vtab_eval import sweeps

    if learning_rates or steps:
        settings = sweeps.from_values(
            _numbers(learning_rates, float, "--learning_rates"),
            _numbers(steps, int, "--steps"),
            batch_size,
            resolution or 224,
        )
        return sweeps.for_task(settings, task)
    dataset_size, image_size = 1000, 224
    if preset == "bit_hyperrule":
        split = {"vtab1k": "train800val200", "full": "trainval"}[scheme]
        stats = sweeps.split_statistics(task, split, data_dir, log)
        dataset_size, image_size = stats["num_images"], stats["image_side"]
    settings = sweeps.get_sweep(
        preset,
        dataset_size=dataset_size,
        image_size=image_size,
        resolution=resolution or None,
        num_settings=random_search_size,
        seed=seed,
    )
    return sweeps.for_task(settings, task)


def _search(search, task):
    if search != "auto":
        return search
    return "once" if task.suite == "table3" else "per_selection"


def make_jobs(
    task_names,
    *,
    sweep="local",
    sweep_settings=None,
    scheme="auto",
    search="auto",
    data_dir=None,
    resolution=0,
    learning_rates=None,
    steps=None,
    batch_size=512,
    random_search_size=36,
    seed=0,
    skip_bad_images=False,
    aggregate=None,
    log=None,
):
    """One `stages.Job` per task (suites expanded): the task, its scheme, search and sweep.

    `sweep_settings` (a list of settings) replaces the preset for every task; like a preset's, it
    goes through `sweeps.for_task` before anything is keyed on it. `aggregate`: None or "auto"
    (each suite's), "median" or "mean" (folder tasks only; ValueError for another suite).
    """
    from vtab_eval import stages, sweeps, tasks

    aggregate = None if aggregate in (None, "auto") else aggregate
    jobs = []
    for name in expand_tasks(task_names):
        task = _get_task(tasks, name, skip_bad_images)
        task_scheme = (
            scheme if scheme != "auto" else ("full" if task.suite == "table3" else "vtab1k")
        )
        if sweep_settings:
            task_sweep = sweeps.for_task(list(sweep_settings), task)
        else:
            task_sweep = build_sweep(
                sweep,
                task=task,
                scheme=task_scheme,
                data_dir=data_dir,
                resolution=resolution,
                learning_rates=learning_rates,
                steps=steps,
                batch_size=batch_size,
                random_search_size=random_search_size,
                seed=seed,
                log=log,
            )
        jobs.append(
            stages.Job(
                task, task_scheme, _search(search, task), list(task_sweep), aggregate=aggregate
            )
        )
    return jobs


def _get_task(tasks, name, skip_bad_images):
    import inspect

    if skip_bad_images and "skip_bad_images" in inspect.signature(tasks.get_task).parameters:
        return tasks.get_task(name, skip_bad_images=True)
    return tasks.get_task(name)


def evaluate(
    jobs,
    methods,
    pool,
    executor,
    config,
    *,
    output_dir,
    cache_dir,
    data_dir=None,
    label_priors=None,
    log=print,
):
    """Stages 1-4 of `vtab_eval.stages` for every job and method; returns method -> task -> result.

    Results and the report are rewritten as the run goes, from the memo only (never training):
    every result file when the final fine-tunes start (with the outcomes recorded so far and
    `complete: false` where some are missing), each (task, method) result file again as soon as
    its last final fine-tune is recorded, and OUT/report.md + summary.json (no plots) as soon as
    a task's last one is. A killed run thus keeps a report of what it finished.
    """
    from vtab_eval import stages

    ctx = dict(
        config=config,
        output_dir=output_dir,
        cache_dir=cache_dir,
        data_dir=data_dir,
        label_priors=label_priors,
        log=log,
    )
    groups = {}
    for job in jobs:
        for method in methods:
            try:
                groups[(job.task.name, method)] = stages.select(job, method, pool, ctx)
            except ranking_unavailable() as err:
                log(f"{job.task.name} / {method}: SKIPPED: {err}")
    tracks = [t for group in groups.values() for t in group]
    for track in tracks:
        stages.plan_tuning(track, config)
    retrains = set().union(*[stages.retrain_placeholders(t, config) for t in tracks] or [set()])
    executor.run([s for t in tracks for specs in t.tuning for s in specs], later=len(retrains))
    for track in tracks:
        stages.plan_retrains(track, config, executor.memo)
    results = {}

    def write_group(task_name, method):
        results.setdefault(method, {})[task_name] = stages.write_result(
            groups[(task_name, method)], executor.memo, config, pool, output_dir, log
        )

    # Final fine-tunes not yet recorded, per (task, method) group and per task. Retrain specs
    # run in job order, so tasks finish one after another.
    pending = {
        group: {
            s.key
            for t in group_tracks
            for specs in t.retrains
            for s in specs
            if executor.memo.get(s) is None
        }
        for group, group_tracks in groups.items()
    }
    by_task = {}
    for (task_name, _), keys in pending.items():
        by_task.setdefault(task_name, set()).update(keys)
    for task_name, method in groups:
        write_group(task_name, method)
    if any(by_task.values()):
        write_report(output_dir, plots=False)

    def on_result(spec, _):
        for (task_name, method), keys in pending.items():
            if spec.key in keys:
                keys.discard(spec.key)
                if not keys:
                    write_group(task_name, method)
        keys = by_task.get(spec.task.name)
        if keys and spec.key in keys:
            keys.discard(spec.key)
            if not keys:
                write_report(output_dir, plots=False)

    executor.run([s for t in tracks for specs in t.retrains for s in specs], on_result=on_result)
    for (task_name, method), keys in pending.items():
        if keys:  # Not reported through on_result (not expected): written from the memo now.
            write_group(task_name, method)
    return results


def ranking_unavailable():
    from vtab_eval import ranking

    return ranking.SelectorUnavailable


def run_command(
    collection_spec,
    task_names,
    output_dir,
    *,
    selectors=("knn",),
    sweep="local",
    learning_rates=None,
    steps=None,
    batch_size=512,
    resolution=0,
    selection_resolution=0,
    random_search_size=36,
    num_selections=1,
    num_retrains=1,
    scheme="auto",
    search="auto",
    data_dir=None,
    cache_dir=None,
    strategy="default",
    tpu="",
    seed=0,
    deterministic=True,
    include_baseline=True,
    report_only=False,
    dry_run=False,
    save_models=False,
    skip_bad_images=False,
    log=print,
    progress=True,
    finetune_fn=None,
    sweep_settings=None,
    aggregate="auto",
):
    """Does what the command does, with plain arguments; returns method -> task -> result.

    Every problem with the input is found before anything trains (`vtab_eval.preflight`) and
    raised as one ValueError with a line per problem. `sweep_settings` (a list of
    `vtab_eval.sweeps` settings) replaces the sweep preset/flags. `aggregate` ("auto", "median",
    "mean") is the aggregate of each task's outcomes (`stages.Job`). With `dry_run` the plan is
    printed through `log` and nothing trains; it returns None.
    """
    from vtab_eval import executor as executor_lib
    from vtab_eval import preflight, ranking, stages

    output_dir = atomic_files.abspath(output_dir)
    unknown = [m for m in selectors if m not in stages.METHODS]
    if unknown:
        raise ValueError(f"--selectors: unknown {unknown}; expected some of {stages.METHODS}")
    if report_only:
        return write_report(output_dir)
    problems = preflight.check_numbers(
        batch_size=batch_size,
        num_selections=num_selections,
        num_retrains=num_retrains,
        random_search_size=random_search_size,
        resolution=resolution,
        selection_resolution=selection_resolution,
    )
    problems += preflight.check_output_dir(output_dir, "--output_dir")
    if save_models and atomic_files.is_url(output_dir):
        problems.append(
            f"--save_models: --output_dir={output_dir} is a URL; fine-tuned models are saved by a "
            "folder rename, which needs a local --output_dir (docs/workdir.md)"
        )
    problems += preflight.check_output_dir(cache_dir, "--cache_dir") if cache_dir else []
    from bit_experts.training import strategies
    from hub_export import collection

    try:
        pool = collection.resolve_pool(collection_spec, check_signatures=False)
        jobs = make_jobs(
            task_names,
            sweep=sweep,
            sweep_settings=sweep_settings,
            scheme=scheme,
            search=search,
            data_dir=data_dir,
            resolution=resolution,
            learning_rates=learning_rates,
            steps=steps,
            batch_size=batch_size,
            random_search_size=random_search_size,
            seed=seed,
            skip_bad_images=skip_bad_images,
            aggregate=aggregate,
            log=log,
        )
    except (ValueError, FileNotFoundError) as err:
        preflight.raise_problems(problems + [str(err)])
        raise
    sizes, found = preflight.check_jobs(jobs, data_dir)
    problems += found + preflight.check_pool(pool) + preflight.check_old_layout(output_dir, jobs)
    preflight.raise_problems(problems)
    config = stages.Config(
        num_selections=num_selections,
        num_retrains=num_retrains,
        seed=seed,
        deterministic=deterministic,
        include_baseline=include_baseline,
        # 0: each module at its own recommended resolution (never the first module's for all).
        selection_resolution=selection_resolution or None,
        collection=collection_spec,
    )
    dist = strategies.make_strategy(strategy, tpu)
    if dry_run:
        preflight.print_plan(
            jobs,
            sizes,
            pool,
            selectors,
            config,
            dist,
            data_dir,
            log,
            finetune_fn,
            memo=executor_lib.Memo(os.path.join(output_dir, "finetunes")),
        )
        return None
    executor = executor_lib.Executor(
        os.path.join(output_dir, "finetunes"),
        output_dir=output_dir,
        save_models=save_models,
        finetune_fn=finetune_fn,
        data_dir=data_dir,
        strategy=dist,
        log=log,
        progress=progress,
    )
    priors = ranking.load_label_priors(collection_spec) if "label_matching" in selectors else None
    try:
        evaluate(
            jobs,
            selectors,
            pool,
            executor,
            config,
            output_dir=output_dir,
            cache_dir=cache_dir or os.path.join(output_dir, "feature_cache"),
            data_dir=data_dir,
            label_priors=priors,
            log=log,
        )
    finally:
        executor.close()
    return write_report(output_dir)


def write_report(output_dir, plots=True):
    """Rewrites OUT/report.md and OUT/summary.json from OUT/results; returns the results.

    Reads result files only (never trains). summary.json: method -> {"groups":
    `report.group_summary` (group means with bootstrap intervals), "tasks": task -> its summary
    (`report.aggregate`'s {"value", "ci_low", "ci_high", "n", "kind"}, or null before any outcome)}.
    With `plots`: OUT/plots/outcomes.png (`report.plot_outcomes`) and any missing ranking plot
    OUT/plots/<task slug>__<method>.png (`report.plot_scores`; each is also drawn when its ranking
    is computed). Runs rewrite the report without plots as tasks finish, and with them at the end.
    """
    from vtab_eval import report

    results = report.load_results(output_dir)
    summaries = {method: report.group_summary(by_task) for method, by_task in results.items()}
    report.atomic_write_text(
        os.path.join(output_dir, "report.md"),
        report.markdown_report(results, summaries=summaries),
    )
    summary = {
        method: {
            "groups": summaries[method],
            "tasks": {name: r.get("summary") for name, r in by_task.items()},
        }
        for method, by_task in results.items()
    }
    report.write_json(os.path.join(output_dir, "summary.json"), summary)
    if plots:
        _write_plots(output_dir, results, summaries)
    return results


def _write_plots(output_dir, results, summaries):
    from vtab_eval import report

    folder = os.path.join(output_dir, "plots")
    if any(report.task_summary(r) for by_task in results.values() for r in by_task.values()):
        report.plot_outcomes(results, os.path.join(folder, "outcomes.png"), summaries=summaries)
    for method, by_task in results.items():
        for task_name, result in by_task.items():
            ranking = result.get("ranking")
            path = os.path.join(folder, f"{report.task_slug(task_name)}__{method}.png")
            if method == "baseline" or not ranking or atomic_files.exists(path):
                continue
            try:
                report.plot_scores(ranking, path)
            except ValueError:  # No scored expert: nothing to draw.
                continue


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    with cli.one_line_errors("vtab_eval.run", (ValueError, FileNotFoundError, FloatingPointError)):
        if FLAGS.compare:
            from vtab_eval import report

            text = report.compare(FLAGS.compare)
            report.atomic_write_text(os.path.join(FLAGS.output_dir, "comparison.md"), text)
            print(text)
            return
        if not FLAGS.report_only and not (FLAGS.collection and FLAGS.tasks):
            raise app.UsageError("--collection and --tasks are required (unless --report_only)")
        if not FLAGS.report_only:
            from bit_experts import determinism

            determinism.configure(FLAGS.seed, FLAGS.deterministic)
        run_command(
            FLAGS.collection,
            FLAGS.tasks or [],
            FLAGS.output_dir,
            selectors=FLAGS.selectors,
            sweep=FLAGS.sweep,
            learning_rates=FLAGS.learning_rates,
            steps=FLAGS.steps,
            batch_size=FLAGS.batch_size,
            resolution=FLAGS.resolution,
            selection_resolution=FLAGS.selection_resolution,
            random_search_size=FLAGS.random_search_size,
            num_selections=FLAGS.num_selections,
            num_retrains=FLAGS.num_retrains,
            scheme=FLAGS.scheme,
            data_dir=FLAGS.data_dir,
            cache_dir=FLAGS.cache_dir,
            strategy=FLAGS.strategy,
            tpu=FLAGS.tpu,
            search=FLAGS.search,
            seed=FLAGS.seed,
            deterministic=FLAGS.deterministic,
            include_baseline=FLAGS.include_baseline,
            aggregate=FLAGS.aggregate,
            report_only=FLAGS.report_only,
            dry_run=FLAGS.dry_run,
            save_models=FLAGS.save_models,
            skip_bad_images=FLAGS.skip_bad_images,
        )
        if not FLAGS.dry_run:
            report_md = os.path.join(FLAGS.output_dir, "report.md")
            print(atomic_files.read_bytes(report_md).decode("utf-8"))


if __name__ == "__main__":
    define_flags()
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
