"""Reports: group table in the paper's format, selections, kNN scores, plots, comparison."""

import json
import os

import numpy as np
import pytest

from vtab_eval import report


def _result(task, group, method, median, selected="expert_b", ranking=None):
    return {
        "task": task,
        "group": group,
        "method": method,
        "complete": True,
        "summary": {
            "median": median,
            "ci_low": median - 0.01,
            "ci_high": median + 0.02,
            "num_outcomes": 3,
        },
        "selections": [{"handle": f"/m/{selected}", "selection": {"selected_name": selected}}],
        **({"ranking": ranking} if ranking else {}),
    }


RANKING = {
    "task": "cifar100",
    "method": "knn",
    "selected": "/m/expert_b",
    "higher_is_better": True,
    "experts": [
        {"handle": "/m/expert_a", "name": "expert_a", "score": 0.41},
        {"handle": "/m/expert_b", "name": "expert_b", "score": 0.62},
        {"handle": "/m/expert_c", "name": "expert_c", "score": None},
    ],
}
RESULTS = {
    "knn": {
        "cifar100": _result("cifar100", "natural", "knn", 0.60, ranking=RANKING),
        "dtd": _result("dtd", "natural", "knn", 0.70),
        "eurosat": _result("eurosat", "specialized", "knn", 0.90),
        "clevr_count": _result("clevr_count", "structured", "knn", 0.50),
    },
    "baseline": {
        "cifar100": _result("cifar100", "natural", "baseline", 0.50, "baseline"),
        "eurosat": _result("eurosat", "specialized", "baseline", 0.80, "baseline"),
    },
}


def test_markdown_report_sections():
    text = report.markdown_report(RESULTS)
    lines = text.splitlines()
    assert "| Method | Natural | Specialized | Structured | Mean | Per-task aggregate |" in lines
    # These results carry summaries but no outcomes: no interval can be bootstrapped.
    assert "| knn | 65.0 | 90.0 | 50.0 | 67.5 | median |" in lines
    assert "| baseline | 50.0 | 80.0 | — | 65.0 | median |" in lines
    assert (
        "| cifar100 | natural | median | 60.0 [59.0, 62.0] n=3 | 50.0 [49.0, 52.0] n=3 |" in lines
    )
    assert "| cifar100 | expert_b | baseline |" in lines
    # kNN scores per expert per task, the selected one in bold, left-out ones absent.
    assert "| expert_b | **62.0** |" in lines and "| expert_a | 41.0 |" in lines
    assert not any(line.startswith("| expert_c") for line in lines)
    # Tasks are grouped natural -> specialized -> structured.
    assert text.index("| dtd | natural") < text.index("| eurosat |") < text.index("| clevr_count |")


def test_plot_marks_the_selected_expert(tmp_path):
    path = report.plot_scores(RANKING, str(tmp_path / "plots" / "cifar.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "plots") == ["cifar.png"]  # No temporary file left behind.
    with pytest.raises(ValueError, match="no scored experts"):
        report.plot_scores({**RANKING, "experts": RANKING["experts"][2:]}, str(tmp_path / "x.png"))


def test_compare_puts_runs_side_by_side(tmp_path):
    for name, results in (("pool1", RESULTS), ("pool2", {"knn": RESULTS["knn"]})):
        for method, by_task in results.items():
            for task, result in by_task.items():
                report.write_json(
                    str(tmp_path / name / "results" / report.task_slug(task) / f"{method}.json"),
                    result,
                )
    text = report.compare([str(tmp_path / "pool1"), str(tmp_path / "pool2")])
    assert "| pool1:baseline | 50.0 | 80.0 | — | 65.0 | median |" in text.splitlines()
    assert "| pool2:knn | 65.0 | 90.0 | 50.0 | 67.5 | median |" in text.splitlines()
    with pytest.raises(FileNotFoundError, match="results"):
        report.load_results(str(tmp_path))


def test_task_slug_and_atomic_json(tmp_path):
    slug = report.task_slug("folder:/data/my flowers")
    assert slug.startswith("folder_data_my_flowers-")
    # Injective: names that give the same readable part still get different slugs.
    assert report.task_slug("folder:/data/my_flowers") != slug
    assert report.task_slug("a/b") != report.task_slug("a_b")
    report.write_json(str(tmp_path / "a.json"), {"x": 1})
    assert report.read_json(str(tmp_path / "a.json")) == {"x": 1}
    assert report.read_json(str(tmp_path / "missing.json")) is None
    assert os.listdir(tmp_path) == ["a.json"]


# --- aggregates and intervals (issue 10, items 4 and 5) ----------------------------------------


def test_the_aggregate_is_a_property_of_the_suite():
    assert report.suite_aggregate("vtab1k") == "median"  # The paper's VTAB-1k tables.
    assert report.suite_aggregate("table3") == "mean"  # Its table 3: mean over 30 trials.
    assert report.suite_aggregate("folder") == "median"
    assert report.suite_aggregate("folder", "mean") == "mean"
    assert report.suite_aggregate("table3", "mean") == "mean"
    with pytest.raises(ValueError, match="vtab1k suite reports the median"):
        report.suite_aggregate("vtab1k", "mean")
    with pytest.raises(ValueError, match="unknown aggregate 'mode'"):
        report.suite_aggregate("folder", "mode")
    with pytest.raises(ValueError, match="unknown suite"):
        report.suite_aggregate("vtab2k")


def test_aggregate_value_interval_and_edge_cases():
    values = np.random.default_rng(0).normal(0.6, 0.05, size=30)
    for kind, fn in (("median", np.median), ("mean", np.mean)):
        out = report.aggregate(values, kind)
        assert set(out) == {"value", "ci_low", "ci_high", "n", "kind"}
        assert (out["kind"], out["n"]) == (kind, 30) and out["value"] == float(fn(values))
        assert values.min() <= out["ci_low"] < out["value"] < out["ci_high"] <= values.max()
        assert report.aggregate(values, kind) == out  # Fixed seed: the same interval every time.
        assert report.aggregate(values, kind, seed=1) != out
    # Fewer outcomes, wider interval.
    small = report.aggregate(values[:6], "mean")
    large = report.aggregate(values, "mean")
    assert small["ci_high"] - small["ci_low"] > large["ci_high"] - large["ci_low"]
    # One outcome has no spread to resample: no interval (reported as n=1).
    assert report.aggregate([0.7], "median") == {
        "value": 0.7,
        "ci_low": None,
        "ci_high": None,
        "n": 1,
        "kind": "median",
    }
    assert report.aggregate([0.5] * 4, "mean")["ci_low"] == 0.5
    for bad, message in (([], "non-empty"), ([0.1, float("nan")], "finite")):
        with pytest.raises(ValueError, match=message):
            report.aggregate(bad, "mean")
    with pytest.raises(ValueError, match="unknown aggregate"):
        report.aggregate([0.1, 0.2], "max")


def test_mean_interval_agrees_with_normal_theory():
    # For the mean of 30 normal outcomes the percentile bootstrap interval approaches
    # mean +- 1.96 * s / sqrt(n) (s with divisor n, the bootstrap's plug-in spread). Monte Carlo
    # error of a 2.5% quantile from 9999 resamples is ~0.03 of that spread, and the small-sample
    # skew of the resampled means a few hundredths more: 0.15 of the spread bounds both.
    values = np.random.default_rng(3).normal(0.8, 0.04, size=30)
    spread = values.std() / np.sqrt(values.size)
    out = report.aggregate(values, "mean")
    assert out["ci_low"] == pytest.approx(values.mean() - 1.96 * spread, abs=0.15 * spread)
    assert out["ci_high"] == pytest.approx(values.mean() + 1.96 * spread, abs=0.15 * spread)


def _task(group, outcomes, kind="median"):
    return {"group": group, "outcomes": list(outcomes), "summary": report.aggregate(outcomes, kind)}


def test_group_summary_means_and_stratified_bootstrap():
    rng = np.random.default_rng(5)
    a, b, c = rng.normal(0.6, 0.03, 30), rng.normal(0.8, 0.02, 30), rng.normal(0.5, 0.05, 12)
    results = {
        "cifar100": _task("natural", a, "mean"),
        "dtd": _task("natural", b, "mean"),
        "clevr_count": _task("structured", c, "mean"),
        "eurosat": {"group": "specialized", "summary": {"value": 0.9, "n": 1, "kind": "mean"}},
    }
    out = report.group_summary(results)
    assert list(out) == ["natural", "specialized", "structured", "all", "bootstrap"]
    natural = out["natural"]
    assert natural["mean"] == pytest.approx((a.mean() + b.mean()) / 2, abs=1e-12)
    assert (natural["num_tasks"], natural["tasks"]) == (2, ["cifar100", "dtd"])
    assert natural["aggregates"] == ["mean"]
    # The same stratified bootstrap by hand: resample each task's outcomes on its own.
    draws = np.random.default_rng(99)
    means = (
        a[draws.integers(0, 30, (40_000, 30))].mean(1)
        + b[draws.integers(0, 30, (40_000, 30))].mean(1)
    ) / 2
    spread = means.std()
    # Quantile Monte Carlo error: ~0.03 spread (9999 resamples) and ~0.015 (40000); 0.15 is >4 SE.
    assert natural["ci_low"] == pytest.approx(np.percentile(means, 2.5), abs=0.15 * spread)
    assert natural["ci_high"] == pytest.approx(np.percentile(means, 97.5), abs=0.15 * spread)
    # A task with one outcome enters with its value; alone, its group has no interval.
    assert out["specialized"] == {
        "mean": 0.9,
        "ci_low": None,
        "ci_high": None,
        "num_tasks": 1,
        "tasks": ["eurosat"],
        "aggregates": ["mean"],
    }
    everything = out["all"]
    assert everything["mean"] == pytest.approx(
        (a.mean() + b.mean() + c.mean() + 0.9) / 4, abs=1e-12
    )
    assert everything["ci_low"] < everything["mean"] < everything["ci_high"]
    assert out["bootstrap"] == {
        "confidence_level": 0.95,
        "n_resamples": report.BOOTSTRAP_RESAMPLES,
        "seed": report.BOOTSTRAP_SEED,
        "method": "percentile",
        "resampled": "each task's outcomes, independently (stratified by task)",
    }
    assert json.loads(json.dumps(out)) == out  # summary.json takes it as it is.
    assert report.group_summary(results) == out  # Fixed seed.


def test_markdown_shows_group_intervals_and_each_rows_aggregate():
    rng = np.random.default_rng(2)
    results = {
        "knn": {
            "cifar100": _task("natural", rng.normal(0.6, 0.03, 30)),
            "cars196": _task("natural", rng.normal(0.7, 0.03, 30), "mean"),
        }
    }
    summary = report.group_summary(results["knn"])
    lines = report.markdown_report(results).splitlines()
    natural = summary["natural"]
    cell = f"{100 * natural['mean']:.1f} [{100 * natural['ci_low']:.1f}, {100 * natural['ci_high']:.1f}]"
    assert f"| knn | {cell} | {cell} | mean, median |" in lines
    row = next(line for line in lines if line.startswith("| cars196 |"))
    assert row.startswith("| cars196 | natural | mean | ") and row.endswith(" n=30 |")
    assert any(line.startswith("| cifar100 | natural | median | ") for line in lines)


# --- plots (issue 15, item 3) --------------------------------------------------------------------


def test_ranking_rows_sort_and_mark_baseline_and_ties():
    experts = [
        {
            "handle": "/m/a",
            "name": "a",
            "kind": "full",
            "score": 0.93,
            "ci_low": 0.9,
            "ci_high": 0.95,
        },
        {"handle": "/m/b", "name": "b", "kind": "full", "score": 0.95},
        {"handle": "/m/B", "name": "B", "kind": "baseline", "score": 0.94},
        {"handle": "/m/c", "name": "c", "kind": "full", "score": 0.95},
        {"handle": "/m/d", "name": "d", "kind": "full", "score": None},
    ]
    ranking = {"task": "t", "method": "knn", "selected": "/m/c", "experts": experts}
    rows = report.ranking_rows(ranking)
    assert [r["name"] for r in rows] == ["c", "b", "B", "a"]  # Selected first among the ties.
    assert [(r["selected"], r["tie"], r["baseline"]) for r in rows] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (False, False, False),
    ]
    assert (rows[3]["ci_low"], rows[3]["ci_high"]) == (0.9, 0.95) and rows[0]["ci_low"] is None
    lower = report.ranking_rows({**ranking, "higher_is_better": False, "selected": "/m/a"})
    assert [r["name"] for r in lower] == ["a", "B", "b", "c"]


def test_display_names_have_no_paths():
    assert report.display_name("cifar100") == "cifar100"
    assert report.display_name("folder:/tmp/tmpab12/tasks/world_digits/") == "world_digits"


def test_plots_write_pngs(tmp_path):
    ranking = {
        **RANKING,
        "task": "folder:/tmp/tmpxyz/tasks/digits",
        "experts": [dict(e, ci_low=0.3, ci_high=0.7) for e in RANKING["experts"][:2]],
    }
    path = report.plot_scores(ranking, str(tmp_path / "r.png"))
    rng = np.random.default_rng(0)
    results = {
        m: {t: _task(g, rng.normal(0.7, 0.02, 5)) for t, g in (("a", "natural"), ("b", None))}
        for m in ("knn", "baseline")
    }
    outcomes = report.plot_outcomes(results, str(tmp_path / "o.png"))
    for png in (path, outcomes):
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["o.png", "r.png"]
    with pytest.raises(ValueError, match="nothing to plot"):
        report.plot_outcomes({"knn": {}}, str(tmp_path / "x.png"))
