r"""The main job on the embedded offline world, in one command (minutes on 2 CPU cores).

    python -m vtab_eval.demo --workdir=runs/demo [--quick] [--results_page=docs/results/demo.md]

Generates the glyph world, trains a small BiT baseline, 6 full and 6 adapter experts and the EPN,
publishes them as a TF Hub collection, then on four downstream tasks ranks the experts with every
selector and fine-tunes under the VTAB-1k protocol (the `demo` evaluation config). Writes
WORKDIR/evaluation/report.md (+ summary.json, plots/) and WORKDIR/demo_summary.md; re-running
reuses finished stages (`vtab_eval.offline_demo`). `--quick`: the same path with tiny sizes.
Measured times and results, with their machines: docs/results/demo.md.
"""

import os
import platform

from absl import app, flags

from bit_experts import cli, determinism
from vtab_eval import config, files, offline_demo, protocol, report

FLAGS = flags.FLAGS
EXECUTOR = config.EXECUTOR_FLAGS


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
    config.define_flags("run", names=config.EXECUTOR_FLAGS)  # where the evaluate stage runs


def expectation_lines(results, tasks_dir):
    """Plain statements about the expected outcome, computed from the results (never by hand):
    kNN "better" or "worse" than B only where their intervals do not overlap."""
    entries = files.read_json(os.path.join(tasks_dir, "tasks.json"), "task index")["tasks"]
    lines = []
    for info in entries:
        knn, base = (results.get(m, {}).get(info["name"]) or {} for m in ("knn", "baseline"))
        k, b = protocol.task_summary(knn), protocol.task_summary(base)
        if not info.get("near_expert") or not k or not b:
            continue
        picked = knn["selections"][0]["selection"]["selected_name"]
        gap = f"{100 * (k['value'] - b['value']):+.1f} points"
        if k["ci_low"] is None or b["ci_low"] is None:
            verdict = f"{gap}, called neither better nor worse: a single outcome has no interval"
        elif k["ci_low"] > b["ci_high"] or k["ci_high"] < b["ci_low"]:
            verdict = f"{'better' if k['value'] > b['value'] else 'worse'} ({gap}, 95% intervals "
            verdict += "apart)"
        else:
            verdict = f"{gap}, within overlapping 95% intervals: not separated"
        lines.append(
            f"- `{info['name']}` is built near the `{info['near_expert']}` domain: kNN picked "
            f"`{picked}` ({100 * k['value']:.1f}% test accuracy, {k['kind']} of n = {k['n']}) "
            f"against the baseline's {100 * b['value']:.1f}% (n = {b['n']}): {verdict}."
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


def summary_markdown(config, tasks_dir, timings, command):
    """The demo's results section (README-ready) of its evaluation `config`: command, machine,
    load, seed, timings, table, expectations, and how many outcomes each cell holds (issue 16:
    every number carries its seed and machine)."""
    eval_dir, order = config["output_dir"], config["selection"]["selectors"]
    found = report.load_results(eval_dir)
    results = {
        m: found[m] for m in sorted(found, key=lambda m: order.index(m) if m in order else 99)
    }
    # The run's summary.json holds every method's group intervals already (bootstraps are slow).
    written = files.read_json(os.path.join(eval_dir, "summary.json")) or {}
    summaries = {
        m: written[m]["groups"]
        for m in results
        if "bootstrap" in (written.get(m) or {}).get("groups", {})  # group_summary's form only
    }
    table = report.markdown_report(results, title="Demo results", summaries=summaries)
    table = table.replace("# Demo results\n", "", 1).replace("\n## ", "\n#### ")
    outcomes = sorted(
        {
            (r.get("summary") or {}).get("n") or len(r.get("outcomes") or [])
            for by_task in results.values()
            for r in by_task.values()
        }
    )
    quick = " (quick mode)" if config["finetune"]["sweep"] == "demo_quick" else ""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    stage_times = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    lines = [
        f"Measured by `{command}`{quick} on {machine_line()} (load average {load} when the report "
        f"was written), seed {config['seed']}, op determinism "
        f"{'on' if config['deterministic'] else 'off'}: {sum(timings.values()) / 60:.1f} minutes "
        f"({stage_times}).",
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
    files.write_text(page_path, f"{head}{start}\n{text}{end}{rest.split(end, 1)[1]}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from vtab_eval import engine  # after parsing: it imports TensorFlow (seconds)

    command = "python -m vtab_eval.demo" + (" --quick" if FLAGS.quick else "")
    command += f" --seed={FLAGS.seed}" if FLAGS.seed else ""
    with cli.one_line_errors("vtab_eval.demo", (ValueError, FileNotFoundError, FileExistsError)):
        cfg = offline_demo.evaluation_config(
            FLAGS.workdir,
            FLAGS.quick,
            seed=FLAGS.seed,
            deterministic=FLAGS.deterministic,
            strategy=FLAGS.strategy,
            include_baseline=FLAGS.include_baseline,
            executor={k.split(".")[1]: FLAGS[n].value for n, (k, _) in EXECUTOR.items()},
        )
        determinism.configure(cfg["seed"], cfg["deterministic"])  # the seed is checked
        determinism.fix_threads(cfg["executor"]["threads_per_item"])  # every stage: TF not started
        on_task_done = lambda out: report.write(out, with_plots=False)
        evaluate = lambda: engine.evaluate(cfg, on_task_done=on_task_done)
        timings = offline_demo.run_demo(FLAGS.workdir, cfg, evaluate)
        report.write(cfg["output_dir"])
        tasks_dir = offline_demo.paths(FLAGS.workdir)["tasks"]
        summary = summary_markdown(cfg, tasks_dir, timings, command)
        summary_path = os.path.join(os.path.dirname(cfg["output_dir"]), "demo_summary.md")
        files.write_text(summary_path, summary)
        page = FLAGS.results_page or FLAGS.update_readme
        if page:
            replace_section(page, summary)
    print(summary)
    print(f"Report: {os.path.join(cfg['output_dir'], 'report.md')}; summary: {summary_path}")


if __name__ == "__main__":
    define_flags()
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
