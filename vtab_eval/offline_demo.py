"""The main job on the embedded offline world, end to end: upstream -> experts -> collection ->
selection -> fine-tuning -> report. `python -m vtab_eval.demo` is its command line.

Every stage writes under one work directory and is skipped when its output is complete, so re-running
after a kill (or after the job finished) reuses what is done. Stages:

  upstream   bit_experts.training.job.run_job with the `world_demo` config
  publish    hub_export.publish.publish of the upstream work directory into collection/
  tasks      bit_experts.world.write_downstream_tasks into tasks/
  evaluate   `vtab_eval.run.run_command` on the four tasks: the baseline, random,
             label_matching, domain_prediction and knn selectors side by side, and hindsight (every
             candidate fine-tuned, the best reported); identical fine-tunes run once, and each is
             kept in evaluation/finetunes/ the moment it ends, so a killed demo redoes none
  report     evaluation/report.md (+ summary.json, plots/) and demo_summary.md
"""

import json
import os
import platform
import time

from bit_experts import atomic_files

DEMO_TASKS = ("digits", "greek_lower_heldout_fonts", "glyph_count", "textures")
SELECTORS = ("baseline", "random", "label_matching", "domain_prediction", "knn")
HINDSIGHT = "hindsight"  # = vtab_eval.stages.HINDSIGHT
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
    """Publishes the upstream work directory's modules into `collection_dir`; returns the entries
    written. Always runs `hub_export.publish.publish`, which is the stage's completion check: it
    skips every module already listed from the same source (content fingerprints, not the
    manifest's existence), so a rerun after a kill finishes the collection and one after a finished
    publish writes nothing."""
    from hub_export import publish

    written = publish.publish([upstream_dir], collection_dir, log=log)
    if not written:
        log(f"{collection_dir}: every module already published from the same source")
    return written


def _ordered(results):
    order = [*SELECTORS, HINDSIGHT]
    return {
        m: results[m] for m in sorted(results, key=lambda m: order.index(m) if m in order else 99)
    }


def expectation_lines(results, tasks_dir):
    """Plain statements about the expected outcome, computed from the results (never by hand)."""
    from vtab_eval import report

    with open(os.path.join(tasks_dir, "tasks.json"), encoding="utf-8") as f:
        listing = json.load(f)
    entries = listing["tasks"] if isinstance(listing, dict) else listing
    lines = []
    for info in entries:
        near = info.get("near_expert")
        name = f"folder:{os.path.join(tasks_dir, info['name'])}"
        knn = results.get("knn", {}).get(name)
        base = results.get("baseline", {}).get(name)
        knn_summary = report.task_summary(knn) if knn else None
        base_summary = report.task_summary(base) if base else None
        if not near or not knn_summary or not base_summary:
            continue
        picked = knn["selections"][0]["selection"]["selected_name"]
        knn_acc, base_acc = knn_summary["value"], base_summary["value"]
        kind = knn_summary["kind"]
        lines.append(
            f"- `{info['name']}` is built near the `{near}` domain: kNN picked `{picked}` "
            f"({100 * knn_acc:.1f}% test accuracy, {kind} of n = {knn_summary['n']}) against "
            f"the baseline's {100 * base_acc:.1f}% "
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


def summary_markdown(eval_dir, tasks_dir, timings, command, quick, seed=0, deterministic=True):
    """The demo's results section (README-ready): command, machine, load, seed, timings, table,
    expectations, and how many outcomes each cell holds (issue 16: every number carries its seed
    and machine)."""
    from vtab_eval import report

    results = _ordered(report.load_results(eval_dir))
    # The run's summary.json holds every method's group intervals already (bootstraps are slow).
    written = report.read_json(os.path.join(eval_dir, "summary.json")) or {}
    summaries = {
        m: written[m]["groups"]
        for m in results
        if "bootstrap" in (written.get(m) or {}).get("groups", {})  # group_summary's form only
    }
    table = report.markdown_report(results, title="Demo results", summaries=summaries)
    table = table.replace("# Demo results\n", "", 1).replace("\n## ", "\n#### ")
    total = sum(timings.values())
    stage_times = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    short = {f"folder:{os.path.join(tasks_dir, t)}": t for t in DEMO_TASKS}
    for long_name, short_name in short.items():
        table = table.replace(long_name, short_name)
    outcomes = sorted(
        {
            (r.get("summary") or {}).get("n") or len(r.get("outcomes") or [])
            for by_task in results.values()
            for r in by_task.values()
        }
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"Measured by `{command}`{' (quick mode)' if quick else ''} on {machine_line()} "
        f"(load average {load} when the report was written), seed {seed}, op determinism "
        f"{'on' if deterministic else 'off'}: {total / 60:.1f} minutes ({stage_times}).",
        "",
        f"Outcomes per cell: {', '.join(str(n) for n in outcomes) or 'none'}. "
        + (
            "With n = 1 a cell is one fine-tune: it cannot separate methods whose difference is "
            "within the seed-to-seed spread; rerun with other `--seed` values to measure that "
            "spread. Other CPUs give other numbers."
            if outcomes == [1]
            else "Other CPUs give other numbers."
        ),
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
    workdir,
    quick=False,
    strategy="default",
    log=print,
    command="python -m vtab_eval.demo",
    seed=0,
    deterministic=True,
    include_baseline=True,
    progress=True,
):
    """Runs (or resumes) the whole demo under `workdir`; returns the summary markdown.

    `seed` is the base seed of every selection and fine-tune (`vtab_eval.run`), `deterministic`
    asks for TF op determinism, `include_baseline` ranks B with the experts.
    """
    from bit_experts import world
    from vtab_eval import report, run

    atomic_files.require_local(
        workdir, "--workdir", "the demo reads its task folders from a local disk; run it there"
    )
    workdir = atomic_files.abspath(workdir)
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
        run.run_command(
            collection_dir,
            [f"folder:{os.path.join(tasks_dir, t)}" for t in DEMO_TASKS],
            eval_dir,
            selectors=(*SELECTORS, HINDSIGHT),
            sweep_settings=demo_sweep(quick),
            log=log,
            strategy=strategy,
            selection_resolution=IMAGE_SIZE,
            seed=seed,
            deterministic=deterministic,
            include_baseline=include_baseline,
            progress=progress,
        )

    timed("evaluate", evaluate)
    summary = summary_markdown(
        eval_dir, tasks_dir, timings, command, quick, seed=seed, deterministic=deterministic
    )
    report.atomic_write_text(os.path.join(workdir, "demo_summary.md"), summary)
    return summary
