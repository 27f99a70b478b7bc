"""The main job on the embedded offline world, end to end: upstream -> experts -> collection ->
selection -> fine-tuning -> report. `python -m vtab_eval.demo` is its command line.

Every stage writes under one work directory and is skipped when its output is complete, so re-running
after a kill (or after the job finished) reuses what is done. Stages:

  upstream   bit_experts.training.job.run_job with the `world_demo` config
  publish    hub_export.publish.publish of the upstream work directory into collection/
  tasks      bit_experts.world.write_downstream_tasks into tasks/
  evaluate   per task: every candidate fine-tuned (the best expert in hindsight), then the
             baseline, random, label_matching, domain_prediction and knn selectors side by side
  report     evaluation/report.md (+ summary.json, plots/) and demo_summary.md
"""

import hashlib
import json
import os
import platform
import time

DEMO_TASKS = ("digits", "greek_lower_heldout_fonts", "glyph_count", "textures")
SELECTORS = ("baseline", "random", "label_matching", "domain_prediction", "knn")
HINDSIGHT = "hindsight"
IMAGE_SIZE = 32


def demo_sweep(quick):
    """The demo's local sweep: one setting, so the VTAB-1k protocol trains on train800val200 and
    tests (there is nothing to tune); 52 fine-tunes (13 candidates x 4 tasks) fit 2 CPU cores.
    Any `vtab_eval.sweeps` preset can replace it (`--sweep`), at a proportional cost."""
    from vtab_eval import sweeps

    if quick:
        return [sweeps.make_setting(0.03, 20, 32, resolution=IMAGE_SIZE, name="quick_lr0.03")]
    return [
        sweeps.make_setting(
            0.03, 50, 32, warmup_steps=5, schedule="cosine", resolution=IMAGE_SIZE, name="lr0.03"
        )
    ]


def memoized_finetune(cache_dir):
    """`finetune_and_evaluate` with results kept on disk, keyed by everything that determines them.

    The selectors and the hindsight search often fine-tune the same expert with the same setting,
    splits and seed; this runs each such fine-tune once (and keeps it across a killed run).
    """
    from vtab_eval import finetune, report

    def run(handle, task, train_split, eval_split, setting, *, seed, **kwargs):
        identity = json.dumps(
            [handle, task.name, train_split, eval_split, setting, int(seed)], sort_keys=True
        )
        path = os.path.join(cache_dir, hashlib.sha256(identity.encode()).hexdigest()[:24] + ".json")
        found = report.read_json(path)
        if found is not None:
            return found
        result = finetune.finetune_and_evaluate(
            handle, task, train_split, eval_split, setting, seed=seed, **kwargs
        )
        report.write_json(path, result)
        return result

    return run


def _stage(name, log, timings):
    class _Timer:
        def __enter__(self):
            self.start = time.time()
            log(f"== {name} ==")

        def __exit__(self, *exc):
            if exc[0] is None:
                timings[name] = round(time.time() - self.start, 1)
                log(f"== {name} done in {timings[name]:.0f}s ==")

    return _Timer()


def run_upstream(upstream_dir, quick, log):
    from bit_experts.training import config as training_config
    from bit_experts.training import job

    config = training_config.load_config("world_demo:quick" if quick else "world_demo")
    if quick:
        config["experts"]["top_k"] = 1  # the same path with one expert of each kind, for tests
    job.run_job(config, upstream_dir, print_fn=log)


def run_publish(upstream_dir, collection_dir, log):
    from hub_export import collection, publish

    manifest = os.path.join(collection_dir, collection.MANIFEST_FILE)
    if os.path.isfile(manifest):
        log(f"{manifest} exists: collection already published")
        return
    publish.publish([upstream_dir], collection_dir, log=log)


def run_hindsight(pool, task, sweep, eval_dir, finetune_fn, strategy, log):
    """Fine-tunes every candidate (the baseline too) and records the best one's outcome."""
    from vtab_eval import protocol, ranking, report

    path = os.path.join(eval_dir, "results", report.task_slug(task.name), f"{HINDSIGHT}.json")
    done = report.read_json(path)
    if done is not None and done.get("complete"):
        return done
    per_expert = {}
    for entry in ranking.candidates(pool, include_baseline=True):
        state = protocol.run_protocol(
            lambda i, e=entry: (e.handle, {"selected_name": e.name}),
            task,
            sweep,
            scheme="vtab1k",
            strategy=strategy,
            log=log,
            finetune_fn=finetune_fn,
        )
        per_expert[entry.name] = state
        log(f"{task.name} / {HINDSIGHT}: {entry.name} -> {state['summary']['median']:.3f}")
    best = max(per_expert, key=lambda name: per_expert[name]["summary"]["median"])
    result = dict(
        per_expert[best],
        task=task.name,
        group=task.group,
        metric=task.metric,
        method=HINDSIGHT,
        scheme="vtab1k",
        sweep=sweep,
        experts={name: s["summary"] for name, s in per_expert.items()},
    )
    report.write_json(path, result)
    return result


def _ordered(results):
    order = [*SELECTORS, HINDSIGHT]
    return {
        m: results[m] for m in sorted(results, key=lambda m: order.index(m) if m in order else 99)
    }


def expectation_lines(results, tasks_dir):
    """Plain statements about the expected outcome, computed from the results (never by hand)."""
    with open(os.path.join(tasks_dir, "tasks.json"), encoding="utf-8") as f:
        listing = json.load(f)
    entries = listing["tasks"] if isinstance(listing, dict) else listing
    lines = []
    for info in entries:
        near = info.get("near_expert")
        name = f"folder:{os.path.join(tasks_dir, info['name'])}"
        knn = results.get("knn", {}).get(name)
        base = results.get("baseline", {}).get(name)
        if not near or not knn or not base:
            continue
        picked = knn["selections"][0]["selection"]["selected_name"]
        knn_acc, base_acc = knn["summary"]["median"], base["summary"]["median"]
        lines.append(
            f"- `{info['name']}` is built near the `{near}` domain: kNN picked `{picked}` "
            f"({100 * knn_acc:.1f}% test accuracy) against the baseline's {100 * base_acc:.1f}% "
            f"({'better' if knn_acc > base_acc else 'not better'})."
        )
    return lines


def machine_line():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, no GPU"


def summary_markdown(eval_dir, tasks_dir, timings, command, quick):
    """The demo's results section (README-ready): command, machine, timings, table, expectations."""
    from vtab_eval import report

    results = _ordered(report.load_results(eval_dir))
    table = report.markdown_report(results, title="Demo results")
    table = table.replace("# Demo results\n", "", 1).replace("\n## ", "\n#### ")
    total = sum(timings.values())
    stage_times = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    short = {f"folder:{os.path.join(tasks_dir, t)}": t for t in DEMO_TASKS}
    for long_name, short_name in short.items():
        table = table.replace(long_name, short_name)
    lines = [
        f"Measured by `{command}`{' (quick mode)' if quick else ''} on {machine_line()}: "
        f"{total / 60:.1f} minutes ({stage_times}).",
        "",
        "Methods: `baseline` fine-tunes B itself; `random`, `label_matching`, `domain_prediction` and",
        "`knn` select one expert from the collection and fine-tune it; `hindsight` fine-tunes every",
        "expert (and B) and reports the best test result, the upper bound of any selector.",
        "",
        *expectation_lines(results, tasks_dir),
        "",
        table.strip(),
    ]
    return "\n".join(lines) + "\n"


def replace_readme_section(
    readme_path, text, start="<!-- demo-results:start -->", end="<!-- demo-results:end -->"
):
    """Replaces what stands between the two markers of `readme_path` with `text` (atomically)."""
    from vtab_eval import report

    with open(readme_path, encoding="utf-8") as f:
        content = f.read()
    if start not in content or end not in content:
        raise ValueError(f"{readme_path} has no {start} ... {end} markers")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    report.atomic_write_text(readme_path, f"{head}{start}\n{text}{end}{tail}")


def run_demo(
    workdir, quick=False, strategy="default", log=print, command="python -m vtab_eval.demo"
):
    """Runs (or resumes) the whole demo under `workdir`; returns the summary markdown."""
    from bit_experts import world
    from bit_experts.training import strategies
    from hub_export import collection
    from vtab_eval import report, run, tasks

    workdir = os.path.abspath(workdir)
    upstream_dir = os.path.join(workdir, "upstream")
    collection_dir = os.path.join(workdir, "collection")
    tasks_dir = os.path.join(workdir, "tasks")
    eval_dir = os.path.join(workdir, "evaluation")
    timings_path = os.path.join(workdir, "timings.json")
    timings = report.read_json(timings_path) or {}

    def timed(name, fn):
        # A finished stage keeps the time of the run that finished it; calling it again is cheap
        # (each stage skips what is complete) and catches outputs deleted since.
        if name in timings:
            log(f"== {name}: finished earlier in {timings[name]:.0f}s ==")
            fn()
            return
        with _stage(name, log, timings):
            fn()
        report.write_json(timings_path, timings)

    timed("upstream", lambda: run_upstream(upstream_dir, quick, log))
    timed("publish", lambda: run_publish(upstream_dir, collection_dir, log))
    timed(
        "tasks",
        lambda: world.write_downstream_tasks(tasks_dir, seed=0, image_size=IMAGE_SIZE),
    )

    def evaluate():
        pool = collection.resolve_pool(collection_dir)
        sweep = demo_sweep(quick)
        finetune_fn = memoized_finetune(os.path.join(eval_dir, "finetunes"))
        dist = strategies.make_strategy(strategy)
        task_names = [f"folder:{os.path.join(tasks_dir, t)}" for t in DEMO_TASKS]
        for name in task_names:
            run_hindsight(pool, tasks.get_task(name), sweep, eval_dir, finetune_fn, dist, log)
        run.run_command(
            collection_dir,
            task_names,
            eval_dir,
            selectors=SELECTORS,
            sweep_settings=sweep,
            log=log,
            finetune_fn=finetune_fn,
            strategy=strategy,
            selection_resolution=IMAGE_SIZE,
        )

    timed("evaluate", evaluate)
    summary = summary_markdown(eval_dir, tasks_dir, timings, command, quick)
    report.atomic_write_text(os.path.join(workdir, "demo_summary.md"), summary)
    return summary
