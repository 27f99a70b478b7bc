r"""The main job on the embedded offline world, in one command (minutes on 2 CPU cores).

    python -m vtab_eval.demo --workdir=runs/demo [--quick] [--results_page=docs/results/demo.md]

Generates the glyph world, trains a small BiT baseline, 6 full and 6 adapter experts and the EPN,
publishes them as a TF Hub collection, then on four downstream tasks ranks the experts with every
selector, fine-tunes under the VTAB-1k protocol with a small sweep (the `demo` evaluation config)
and writes the report: WORKDIR/evaluation/report.md (+ summary.json, plots/) and
WORKDIR/demo_summary.md. Re-running reuses finished stages. `--quick` runs the same path with tiny
sizes. Measured times and results, with their machines: docs/results/demo.md.
"""

import json
import os
import platform

from absl import app, flags

from bit_experts import cli
from vtab_eval import files, offline_demo, protocol, report

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags (defined only when run as a program, as `vtab_eval.run` does)."""
    flags.DEFINE_string("workdir", "runs/demo", "Where every stage writes its output.")
    flags.DEFINE_bool("quick", False, "Tiny sizes, same path (tests, smoke runs).")
    flags.DEFINE_enum(
        "strategy", "default", ["default", "one_device", "mirrored"], "tf.distribute strategy."
    )
    flags.DEFINE_integer("seed", 0, "Base seed of every selection and fine-tune.")
    flags.DEFINE_bool("deterministic", True, "TF op determinism and seeded RNGs.")
    flags.DEFINE_bool("include_baseline", True, "Rank the baseline B together with the experts.")
    flags.DEFINE_string(
        "results_page", None, "Also write the results section into this page, between markers."
    )
    flags.DEFINE_string("update_readme", None, "Old name of --results_page (one release more).")


def _ordered(results):
    order = [*offline_demo.SELECTORS, offline_demo.HINDSIGHT]
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
        knn_summary = protocol.task_summary(knn) if knn else None
        base_summary = protocol.task_summary(base) if base else None
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
    results = _ordered(report.load_results(eval_dir))
    # The run's summary.json holds every method's group intervals already (bootstraps are slow).
    written = files.read_json(os.path.join(eval_dir, "summary.json")) or {}
    summaries = {
        m: written[m]["groups"]
        for m in results
        if "bootstrap" in (written.get(m) or {}).get("groups", {})  # group_summary's form only
    }
    table = report.markdown_report(results, title="Demo results", summaries=summaries)
    table = table.replace("# Demo results\n", "", 1).replace("\n## ", "\n#### ")
    total = sum(timings.values())
    stage_times = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    short = {f"folder:{os.path.join(tasks_dir, t)}": t for t in offline_demo.DEMO_TASKS}
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


def replace_section(
    page_path, text, start="<!-- demo-results:start -->", end="<!-- demo-results:end -->"
):
    """Replaces what stands between the two markers of `page_path` with `text` (atomically)."""
    with open(page_path, encoding="utf-8") as f:
        content = f.read()
    if start not in content or end not in content:
        raise ValueError(f"{page_path} has no {start} ... {end} markers")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    files.write_text(page_path, f"{head}{start}\n{text}{end}{tail}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from bit_experts import determinism
    from vtab_eval import engine

    command = "python -m vtab_eval.demo" + (" --quick" if FLAGS.quick else "")
    if FLAGS.seed:
        command += f" --seed={FLAGS.seed}"
    determinism.configure(FLAGS.seed, FLAGS.deterministic)
    with cli.one_line_errors("vtab_eval.demo", (ValueError, FileNotFoundError, FileExistsError)):
        config = offline_demo.evaluation_config(
            FLAGS.workdir,
            FLAGS.quick,
            seed=FLAGS.seed,
            deterministic=FLAGS.deterministic,
            strategy=FLAGS.strategy,
            include_baseline=FLAGS.include_baseline,
        )
        eval_dir = config["output_dir"]

        def evaluate():
            engine.evaluate(config, on_task_done=lambda out: report.write(out, with_plots=False))

        timings = offline_demo.run_demo(FLAGS.workdir, config, evaluate)
        report.write(eval_dir)
        where = offline_demo.paths(FLAGS.workdir)
        summary = summary_markdown(
            eval_dir,
            where["tasks"],
            timings,
            command,
            FLAGS.quick,
            seed=FLAGS.seed,
            deterministic=FLAGS.deterministic,
        )
        files.write_text(os.path.join(os.path.dirname(eval_dir), "demo_summary.md"), summary)
        page = FLAGS.results_page or FLAGS.update_readme
        if page:
            replace_section(page, summary)
    print(summary)
    print(
        f"Report: {os.path.join(eval_dir, 'report.md')}; summary: "
        f"{os.path.join(os.path.dirname(eval_dir), 'demo_summary.md')}"
    )


if __name__ == "__main__":
    define_flags()
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
