"""Selects an expert and fine-tunes it on one task or many, then reports; resumable after a kill.

    python -m vtab_eval.run --collection=C --tasks=vtab1k --output_dir=OUT \
        --selectors=knn,random,baseline --sweep=vtab_lightweight

Every fine-tune that finishes is recorded at once in OUT/results/<task>/<method>.json (written
atomically), so re-running the same command after a kill skips finished work and continues. The
report (OUT/report.md, OUT/summary.json, OUT/plots/) is rewritten after every task. Flags, layout
and JSON schema: docs/evaluation.md.
"""

import os
import sys
import time

from absl import app, flags

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
        "selectors", ["knn"], "Selection methods side by side; 'baseline' = no expert."
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
    flags.DEFINE_integer(
        "num_selections", 1, "Repeated selections (+ sweeps) per task (paper: 10)."
    )
    flags.DEFINE_integer("num_retrains", 1, "Final fine-tunes per selection (paper: 3).")
    flags.DEFINE_enum(
        "scheme",
        "auto",
        ["auto", "vtab1k", "full"],
        "Splits: vtab1k (train800/val200/...), full (train/val/trainval/test); auto: "
        "full for table3 tasks, vtab1k otherwise.",
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
    flags.DEFINE_integer("seed", 0, "Base seed of the random selector and of random search.")
    flags.DEFINE_bool("include_baseline", False, "Rank the baseline B together with the experts.")
    flags.DEFINE_bool("report_only", False, "Only rewrite the report from existing results.")
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
):
    """The sweep for one task: from flags when learning rates are given, else the preset."""
    from vtab_eval import sweeps

    if learning_rates or steps:
        return sweeps.from_values(
            [float(x) for x in learning_rates or []],
            [int(x) for x in steps or []],
            batch_size,
            resolution or 224,
        )
    dataset_size, image_size = 1000, 224
    if preset == "bit_hyperrule":
        sizes = {"vtab1k": "train800val200", "full": "trainval"}
        ds = task.load(sizes[scheme], data_dir=data_dir)
        image_size = tuple(int(d) for d in next(iter(ds))["image"].shape[:2])
        count = int(ds.cardinality())
        dataset_size = count if count > 0 else sum(1 for _ in ds)
    return sweeps.get_sweep(
        preset,
        dataset_size=dataset_size,
        image_size=image_size,
        resolution=resolution or None,
        num_settings=random_search_size,
        seed=seed,
    )


def _result_path(output_dir, task_name, method):
    from vtab_eval import report

    return os.path.join(output_dir, "results", report.task_slug(task_name), f"{method}.json")


def evaluate_task(
    task,
    method,
    pool,
    *,
    output_dir,
    config,
    sweep,
    scheme,
    strategy,
    data_dir,
    cache_dir,
    label_priors=None,
    log=print,
    finetune_fn=None,
):
    """Runs (or resumes) selection + the protocol for one task and method; returns the result.

    `finetune_fn` replaces `vtab_eval.finetune.finetune_and_evaluate` (e.g. a memoising wrapper
    that lets several methods share the fine-tunes of an expert they all picked).
    """
    from vtab_eval import protocol, ranking, report

    path = _result_path(output_dir, task.name, method)
    previous = report.read_json(path)
    if previous is not None and previous.get("config") != config:
        raise ValueError(
            f"{path} was written with different settings ({previous.get('config')}); use another "
            "--output_dir or delete it to start this task again"
        )
    if previous is not None and previous.get("complete"):
        log(f"{task.name} / {method}: already complete, skipped")
        return previous
    result = previous or {
        "task": task.name,
        "group": task.group,
        "metric": task.metric,
        "method": method,
        "scheme": scheme,
        "config": config,
        "sweep": sweep,
    }
    rankings = {}

    def select(index):
        seed = config["seed"] + index if method == "random" else config["seed"]
        if seed not in rankings:
            ranking_path = os.path.join(
                output_dir, "rankings", report.task_slug(task.name), f"{method}_seed{seed}.json"
            )
            found = report.read_json(ranking_path)
            if found is None:
                found = ranking.rank(
                    pool,
                    task,
                    method,
                    resolution=config["selection_resolution"],
                    cache_dir=cache_dir,
                    data_dir=data_dir,
                    seed=seed,
                    include_baseline=config["include_baseline"],
                    label_priors=label_priors,
                    log=log,
                )
                report.write_json(ranking_path, found)
                if method != "baseline":
                    report.plot_scores(
                        found,
                        os.path.join(
                            output_dir, "plots", f"{report.task_slug(task.name)}__{method}.png"
                        ),
                    )
            rankings[seed] = found
            result.setdefault("ranking", found)
        found = rankings[seed]
        log(f"{task.name} / {method}: selected {found['selected_name']}")
        return found["selected"], {
            "selected_name": found["selected_name"],
            "seed": seed,
            "score": next(e["score"] for e in found["experts"] if e["handle"] == found["selected"]),
        }

    def save(state):
        result.update(state)
        report.write_json(path, result)

    state = {k: result[k] for k in ("selections",) if k in result}
    protocol.run_protocol(
        select,
        task,
        sweep,
        num_selections=config["num_selections"],
        num_retrains=config["num_retrains"],
        scheme=scheme,
        data_dir=data_dir,
        strategy=strategy,
        state=state,
        save=save,
        log=log,
        finetune_fn=finetune_fn,
    )
    return result


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
    data_dir=None,
    cache_dir=None,
    strategy="default",
    tpu="",
    seed=0,
    include_baseline=False,
    report_only=False,
    log=print,
    finetune_fn=None,
    sweep_settings=None,
):
    """Does what the command does, with plain arguments; returns method -> task -> result.

    `sweep_settings` (a list of `vtab_eval.sweeps` settings) replaces the sweep preset/flags.
    """
    from vtab_eval import ranking, tasks

    output_dir = os.path.abspath(output_dir)
    unknown = [m for m in selectors if m not in ranking.METHODS]
    if unknown:
        raise ValueError(f"unknown selectors {unknown}; expected some of {ranking.METHODS}")
    if not report_only:
        from bit_experts.training import strategies
        from hub_export import collection

        pool = collection.resolve_pool(collection_spec, check_signatures=False)
        selection_resolution = selection_resolution or ranking.default_resolution(pool)
        cache_dir = cache_dir or os.path.join(output_dir, "feature_cache")
        dist = strategies.make_strategy(strategy, tpu)
        priors = (
            ranking.load_label_priors(collection_spec) if "label_matching" in selectors else None
        )
        names = expand_tasks(task_names)
        start = time.time()
        for t, name in enumerate(names):
            task = tasks.get_task(name)
            task_scheme = (
                scheme if scheme != "auto" else ("full" if task.suite == "table3" else "vtab1k")
            )
            task_sweep = sweep_settings or build_sweep(
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
            )
            for method in selectors:
                config = {
                    "collection": collection_spec,
                    "sweep": [s["name"] for s in task_sweep],
                    "num_selections": num_selections,
                    "num_retrains": num_retrains,
                    "scheme": task_scheme,
                    "selection_resolution": selection_resolution,
                    "seed": seed,
                    "include_baseline": include_baseline,
                }
                log(
                    f"[task {t + 1}/{len(names)}] {name} / {method} "
                    f"({time.time() - start:.0f}s elapsed)"
                )
                try:
                    evaluate_task(
                        task,
                        method,
                        pool,
                        output_dir=output_dir,
                        config=config,
                        sweep=task_sweep,
                        scheme=task_scheme,
                        strategy=dist,
                        data_dir=data_dir,
                        cache_dir=cache_dir,
                        label_priors=priors,
                        log=log,
                        finetune_fn=finetune_fn,
                    )
                except ranking.SelectorUnavailable as err:
                    log(f"{name} / {method}: SKIPPED: {err}")
            write_report(output_dir)
    return write_report(output_dir)


def write_report(output_dir):
    """Rewrites OUT/report.md and OUT/summary.json from the results; returns the results."""
    from vtab_eval import report

    results = report.load_results(output_dir)
    report.atomic_write_text(os.path.join(output_dir, "report.md"), report.markdown_report(results))
    summary = {
        method: {
            "groups": report.group_means(by_task),
            "tasks": {name: r.get("summary") for name, r in by_task.items()},
        }
        for method, by_task in results.items()
    }
    report.write_json(os.path.join(output_dir, "summary.json"), summary)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    try:
        if FLAGS.compare:
            from vtab_eval import report

            text = report.compare(FLAGS.compare)
            report.atomic_write_text(os.path.join(FLAGS.output_dir, "comparison.md"), text)
            print(text)
            return
        if not FLAGS.report_only and not (FLAGS.collection and FLAGS.tasks):
            raise app.UsageError("--collection and --tasks are required (unless --report_only)")
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
            seed=FLAGS.seed,
            include_baseline=FLAGS.include_baseline,
            report_only=FLAGS.report_only,
        )
        print(open(os.path.join(FLAGS.output_dir, "report.md"), encoding="utf-8").read())
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        sys.exit(f"vtab_eval.run: error: {err}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
