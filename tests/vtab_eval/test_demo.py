"""The README's main job in quick mode, end to end, through its real command line."""

import json
import os
import subprocess
import sys
import time

import pytest

from vtab_eval import config, offline_demo

METHODS = config.make("demo")["selection"]["selectors"]  # every selector, then hindsight


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    cmd = [sys.executable, "-m", "vtab_eval.demo", f"--workdir={workdir}", "--quick"]
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir, done, time.time() - start


def _results(workdir):
    from vtab_eval import report

    return report.load_results(os.path.join(workdir, "evaluation"))


def test_every_task_has_a_result_for_every_method(demo_run):
    workdir, _, _ = demo_run
    results = _results(workdir)
    assert set(results) == set(METHODS)
    for method, by_task in results.items():
        assert sorted(by_task) == sorted(offline_demo.DEMO_TASKS), method  # the folders' names
        for result in by_task.values():
            assert result["complete"]
            # Folder tasks: the median of the outcomes, as VTAB-1k reports it.
            assert result["summary"]["kind"] == "median"
            assert 0.0 <= result["summary"]["value"] <= 1.0


def test_real_digits_are_learnt_above_chance_by_every_method(demo_run):
    workdir, _, _ = demo_run
    for method, by_task in _results(workdir).items():
        digits = by_task["digits"]
        assert digits["summary"]["value"] > 0.2, (method, digits["summary"])  # chance: 0.1


def test_hindsight_is_the_best_of_every_fine_tuned_candidate(demo_run):
    workdir, _, _ = demo_run
    results = _results(workdir)
    for task, hindsight in results["hindsight"].items():
        best = max(s["value"] for s in hindsight["experts"].values())
        assert hindsight["summary"]["value"] == best
        # Every selector fine-tunes one of the candidates hindsight tried, with the same protocol.
        for method in METHODS[:-1]:
            # Medians of the same stored accuracies (ratios of counts, float64): 1e-9 only absorbs
            # float64 rounding of the median (< 1e-15); accuracies differ in steps of 1/500.
            assert results[method][task]["summary"]["value"] <= best + 1e-9, (method, task)


def test_report_collection_and_summary_are_written(demo_run):
    workdir, done, _ = demo_run
    from hub_export import collection

    pool = collection.resolve_pool(os.path.join(workdir, "collection"))
    kinds = {e.kind for e in pool}
    assert {"baseline", "full", "adapter"} <= kinds
    assert collection.find(pool, role="epn") is not None
    report_md = (workdir / "evaluation" / "report.md").read_text()
    assert "| knn |" in report_md and "| hindsight |" in report_md
    plots = workdir / "evaluation" / "plots"
    assert (plots / "outcomes.png").stat().st_size > 0
    assert any(p.name.endswith("__knn.png") for p in plots.iterdir())
    groups = json.loads((workdir / "evaluation" / "summary.json").read_text())["knn"]["groups"]
    assert groups["all"]["num_tasks"] == len(offline_demo.DEMO_TASKS)
    summary = (workdir / "demo_summary.md").read_text()
    assert "quick mode" in summary and "| digits |" in summary
    # Every reported number carries its machine, seed and outcome count (issue 16).
    assert "seed 0, op determinism on" in summary and "load average" in summary
    assert "Outcomes per cell: 1. With n = 1" in summary
    timings = json.loads((workdir / "timings.json").read_text())
    assert set(timings) == {"upstream", "publish", "tasks", "evaluate"}
    assert "== evaluate done" in done.stdout + done.stderr
    # Where the report is: said when the evaluation starts and at the end; no absolute path in it.
    report_path = workdir / "evaluation" / "report.md"
    assert f"the report is {report_path}, rewritten as each task finishes" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith(f"Report: {report_path};")
    assert str(workdir) not in report_md and str(workdir) not in summary


def test_rerun_reuses_finished_work_and_writes_the_results_page(demo_run, tmp_path):
    workdir, _, first_seconds = demo_run
    before = (workdir / "evaluation" / "summary.json").read_text()
    markers = "<!-- demo-results:start -->\nold\n<!-- demo-results:end -->\n"
    pages = {flag: tmp_path / f"{flag}.md" for flag in ("results_page", "update_readme")}
    for flag, page in pages.items():  # --update_readme: the old name, kept for one release
        page.write_text("# Demo\n" + markers)
        start = time.time()
        again = subprocess.run(
            [
                sys.executable,
                "-m",
                "vtab_eval.demo",
                f"--workdir={workdir}",
                "--quick",
                f"--{flag}={page}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert again.returncode == 0, again.stderr[-4000:]
        assert time.time() - start < first_seconds / 2
        assert "already published" in again.stdout + again.stderr
        assert (workdir / "evaluation" / "summary.json").read_text() == before
        summary = (workdir / "demo_summary.md").read_text()
        assert page.read_text() == (
            f"# Demo\n<!-- demo-results:start -->\n{summary}<!-- demo-results:end -->\n"
        ), flag


def test_results_section_is_replaced_between_markers(tmp_path):
    from vtab_eval import demo  # the command's module (flags are defined only as a program)

    page = tmp_path / "demo.md"
    page.write_text("top\n<!-- demo-results:start -->\nold\n<!-- demo-results:end -->\nbottom\n")
    demo.replace_section(page, "new table\n")
    assert page.read_text() == (
        "top\n<!-- demo-results:start -->\nnew table\n<!-- demo-results:end -->\nbottom\n"
    )
    (tmp_path / "bare.md").write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        demo.replace_section(tmp_path / "bare.md", "x")
    assert (tmp_path / "bare.md").read_text() == "no markers"


def test_expectations_call_knn_better_only_where_the_intervals_are_apart(tmp_path):
    """Issue 26: a single 1.8-point gap was called "better" right after "n = 1 cannot separate
    methods"; now only intervals that do not overlap say better or worse."""
    from vtab_eval import demo, files, protocol

    files.write_json(str(tmp_path / "tasks.json"), {"tasks": [{"name": "t", "near_expert": "g"}]})
    name = "t"  # the task's name in results: its folder's

    def line(knn, base):
        results = {
            method: {
                name: {"summary": protocol.aggregate(outcomes, "median"), "outcomes": outcomes}
            }
            for method, outcomes in (("knn", knn), ("baseline", base))
        }
        results["knn"][name]["selections"] = [{"selection": {"selected_name": "expert_g"}}]
        (found,) = demo.expectation_lines(results, str(tmp_path))
        return found

    single = line([0.978], [0.960])
    assert single.endswith(
        "against the baseline's 96.0% (n = 1): +1.8 points, called neither better nor worse: a "
        "single outcome has no interval."
    )
    assert "better (+7.0 points, 95% intervals apart)" in line(
        [0.97, 0.975, 0.98], [0.9, 0.905, 0.91]
    )
    assert "worse (-7.0 points" in line([0.9, 0.905, 0.91], [0.97, 0.975, 0.98])
    overlapping = line([0.95, 0.97, 0.99], [0.94, 0.96, 0.98])
    assert overlapping.endswith("+1.0 points, within overlapping 95% intervals: not separated.")


def test_the_demo_evaluates_the_demo_config_under_its_workdir(tmp_path):
    made = offline_demo.evaluation_config(str(tmp_path), quick=True, seed=3, strategy="one_device")
    named = config.make("demo:quick")
    where = offline_demo.paths(str(tmp_path))
    assert made["collection"] == where["collection"] and made["output_dir"] == where["evaluation"]
    assert made["tasks"] == [
        f"folder:{os.path.join(where['tasks'], t)}" for t in offline_demo.DEMO_TASKS
    ]
    assert made["selection"] == named["selection"] and made["protocol"] == named["protocol"]
    assert made["finetune"] == dict(named["finetune"], strategy="one_device")
    assert made["finetune"]["sweep"] == "demo_quick" and made["seed"] == 3
    full = offline_demo.evaluation_config(str(tmp_path), include_baseline=False)
    assert full["finetune"]["sweep"] == "demo" and full["selection"]["include_baseline"] is False
    with pytest.raises(ValueError, match="unknown config key 'sede'"):
        offline_demo.evaluation_config(str(tmp_path), sede=1)


def test_expert_quality_command_on_the_demo_upstream(demo_run, tmp_path):
    """`python -m bit_experts.expert_quality` on the quick demo's world job: one row per expert,
    counts of held-out slice images, consistent intervals, the JSON and the printed table."""
    from bit_experts.training import slice_eval

    workdir, _, _ = demo_run
    upstream = os.path.join(workdir, "upstream")
    out = tmp_path / "quality.json"
    cmd = [sys.executable, "-m", "bit_experts.expert_quality", f"--workdir={upstream}"]
    done = subprocess.run(
        [*cmd, "--images_per_class=2", f"--output_json={out}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    table = json.loads(out.read_text())
    slices = slice_eval.slice_labels(upstream)
    kinds = {row["kind"] for row in table.values()}
    assert kinds == {"full", "adapter"}  # the quick demo trains one expert of each kind
    for name, row in table.items():
        assert row["n"] == 2 * len(slices[row["slice"]]) == 2 * row["num_labels"], name
        assert row["delta_low"] <= row["delta"] <= row["delta_high"], name
        printed = f"| {name} | {row['slice']} | {row['n']} | {100 * row['expert_acc']:.1f} | "
        assert printed in done.stdout, name
    bad = subprocess.run([*cmd, "--images_per_class=0"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == (
        "bit_experts.expert_quality: error: --images_per_class must be >= 1, got 0"
    )


def test_a_bad_seed_is_one_line_before_any_work(tmp_path):
    workdir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "vtab_eval.demo", f"--workdir={workdir}", "--seed=-3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("vtab_eval.demo")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines == [
        "vtab_eval.demo: error: bad config: seed must be an int in [0, 2**31 - 1], got -3"
    ]
    assert not workdir.exists()


def test_a_link_out_of_the_demo_workdir_is_refused_before_the_first_stage(tmp_path):
    workdir, outside = tmp_path / "demo", tmp_path / "elsewhere"
    (workdir / "evaluation").mkdir(parents=True)
    outside.mkdir()
    (workdir / "evaluation" / "results").symlink_to(outside)
    config = offline_demo.evaluation_config(str(workdir), quick=True)
    evaluated, lines = [], []
    with pytest.raises(ValueError, match=r"--workdir .*: 'evaluation/results' is a symbolic link"):
        offline_demo.run_demo(str(workdir), config, lambda: evaluated.append(1), log=lines.append)
    assert evaluated == [] and lines == [] and sorted(os.listdir(workdir)) == ["evaluation"]
