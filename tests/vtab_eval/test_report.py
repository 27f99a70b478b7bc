"""Reports: group table in the paper's format, selections, kNN scores, comparison, and `write`,
which reads result files only (plots: test_plots.py; aggregates and intervals: test_protocol.py)."""

import ast
import json
import os
import pathlib

import numpy as np
import pytest

from vtab_eval import confidence, files, protocol, ranking, report, selectors


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
        "| cifar100 | natural | median | 60.0 [59.0, 62.0] n = 3 | 50.0 [49.0, 52.0] n = 3 |"
        in lines
    )
    assert "| cifar100 | expert_b | baseline |" in lines
    # kNN scores per expert per task, the selected one in bold, left-out ones absent.
    assert "| expert_b | **62.0** |" in lines and "| expert_a | 41.0 |" in lines
    assert not any(line.startswith("| expert_c") for line in lines)
    # Tasks are grouped natural -> specialized -> structured.
    assert text.index("| dtd | natural") < text.index("| eurosat |") < text.index("| clevr_count |")


def test_compare_puts_runs_side_by_side(tmp_path):
    for name, results in (("pool1", RESULTS), ("pool2", {"knn": RESULTS["knn"]})):
        for method, by_task in results.items():
            for task, result in by_task.items():
                files.write_json(
                    str(tmp_path / name / "results" / files.task_slug(task) / f"{method}.json"),
                    result,
                )
    text = report.compare([str(tmp_path / "pool1"), str(tmp_path / "pool2")])
    assert "| pool1:baseline | 50.0 | 80.0 | — | 65.0 | median |" in text.splitlines()
    assert "| pool2:knn | 65.0 | 90.0 | 50.0 | 67.5 | median |" in text.splitlines()
    with pytest.raises(FileNotFoundError, match="results"):
        report.load_results(str(tmp_path))


def _task(group, outcomes, kind="median"):
    return {
        "group": group,
        "outcomes": list(outcomes),
        "summary": protocol.aggregate(outcomes, kind),
    }


def test_markdown_shows_group_intervals_and_each_rows_aggregate():
    rng = np.random.default_rng(2)
    results = {
        "knn": {
            "cifar100": _task("natural", rng.normal(0.6, 0.03, 30)),
            "cars196": _task("natural", rng.normal(0.7, 0.03, 30), "mean"),
        }
    }
    summary = protocol.group_summary(results["knn"])
    lines = report.markdown_report(results).splitlines()
    natural = summary["natural"]
    cell = f"{100 * natural['mean']:.1f} [{100 * natural['ci_low']:.1f}, {100 * natural['ci_high']:.1f}]"
    assert f"| knn | {cell} | {cell} | mean, median |" in lines
    row = next(line for line in lines if line.startswith("| cars196 |"))
    assert row.startswith("| cars196 | natural | mean | ") and row.endswith(" n = 30 |")
    assert any(line.startswith("| cifar100 | natural | median | ") for line in lines)


def _write_results(out, results):
    for method, by_task in results.items():
        for task, result in by_task.items():
            path = out / "results" / files.task_slug(task) / f"{method}.json"
            files.write_json(str(path), {"task": task, "method": method, **result})


def _tree(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names
    )


def test_write_reads_result_files_only(tmp_path):
    rng = np.random.default_rng(4)
    knn_dtd = dict(_task("natural", rng.normal(0.7, 0.02, 4)), ranking=RANKING)
    results = {
        "knn": {"dtd": knn_dtd, "eurosat": _task("specialized", rng.normal(0.9, 0.01, 4))},
        "baseline": {"dtd": dict(_task("natural", rng.normal(0.6, 0.02, 4)), ranking=RANKING)},
    }
    out = tmp_path / "out"  # results/ only: no memo, no models, no rankings
    _write_results(out, results)
    before = {p: (out / p).read_bytes() for p in _tree(out)}
    loaded = report.write(str(out), with_plots=False)
    assert {m: sorted(by) for m, by in loaded.items()} == {
        "knn": ["dtd", "eurosat"],
        "baseline": ["dtd"],
    }
    assert loaded["knn"]["dtd"]["outcomes"] == knn_dtd["outcomes"]
    assert _tree(out) == sorted([*before, "report.md", "summary.json"])  # no plots asked
    assert {p: (out / p).read_bytes() for p in before} == before  # results left alone
    summary = json.loads((out / "summary.json").read_text())
    # The group means and intervals are the protocol's, from the files' outcomes.
    assert summary["knn"]["groups"] == protocol.group_summary(loaded["knn"])
    assert summary["knn"]["tasks"]["eurosat"] == results["knn"]["eurosat"]["summary"]
    assert (out / "report.md").read_text() == report.markdown_report(loaded)
    # With plots: every method's outcomes, and each ranking's scores except the baseline's.
    report.write(str(out))
    plots = sorted(p for p in _tree(out) if p.startswith("plots"))
    assert plots == sorted(["plots/outcomes.png", f"plots/{files.task_slug('dtd')}__knn.png"])
    for path in plots:
        assert (out / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unreadable_result_file_is_one_line_naming_it(tmp_path):
    _write_results(tmp_path, {"knn": {"dtd": _task("natural", [0.5, 0.6])}})
    path = tmp_path / "results" / files.task_slug("dtd") / "knn.json"
    path.write_text(path.read_text()[:20])  # a disk that filled up mid-write, say
    with pytest.raises(files.StateFileError, match=f"^{path}: this result file cannot be read"):
        report.write(str(tmp_path))
    assert not (tmp_path / "report.md").exists()


def test_only_the_commands_import_the_report():
    """The report only reads result files; nothing below the commands imports it (issue 22)."""
    root = pathlib.Path(report.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "vtab_eval":
                names = {a.name for a in node.names}
            elif isinstance(node, (ast.ImportFrom, ast.Import)):
                names = {node.module} if isinstance(node, ast.ImportFrom) else set()
                names |= {a.name.replace("vtab_eval.", "") for a in node.names}
            else:
                continue
            if "report" in names or "vtab_eval.report" in names:
                importers.add(path.relative_to(root).as_posix())
    # The commands (run, rank, demo) and the old Python API they keep for one release.
    assert importers == {"run.py", "rank.py", "demo.py", "compat.py"}


def test_a_random_search_is_reported_as_this_packages_own_space():
    assert "Random search" not in report.markdown_report(RESULTS)
    searched = {
        "knn": {
            "cifar10": dict(
                _result("cifar10", "natural", "knn", 0.9), sweep_preset="random_search"
            ),
            "dtd": dict(_result("dtd", "natural", "knn", 0.7), sweep_preset="local"),
        }
    }
    text = " ".join(report.markdown_report(searched).split())
    assert "Random search (cifar10): the settings were drawn from this package's own" in text
    assert "not the paper's, which gives only their number (36) for table 3" in text
    assert "(dtd" not in text and "cifar10, dtd" not in text


def test_single_outcomes_show_n_1_where_an_interval_would_stand():
    one = {"dtd": _task("natural", [0.61]), "cifar100": _task("natural", [0.52])}
    lines = report.markdown_report({"knn": one, "random": {"dtd": _task("natural", [0.6, 0.7])}})
    lines = lines.splitlines()
    # Every task of the group has one outcome: no interval, "n = 1" in its place.
    assert "| knn | 56.5 (n = 1) | 56.5 (n = 1) | median |" in lines
    assert "| dtd | natural | median | 61.0 (n = 1) | 65.0 [60.0, 70.0] n = 2 |" in lines
    assert any(line.startswith("| random | 65.0 [60.0, 70.0] | ") for line in lines)
    text = " ".join(lines)
    assert "One outcome has no interval: `n = 1` stands in its place" in text


def _hits(first, extra=(), n=300):
    """bool [n]: hits on the first `first` images and on the images `extra`."""
    hits = np.arange(n) < first
    hits[list(extra)] = True
    return hits


def _sure_ranking(b_hits, fallback_confidence=0.9):
    """A knn ranking annotated by `confidence.annotate` from per-image hits of four experts and B
    (`b_hits`), with the baseline fallback at `fallback_confidence`."""
    correct = {"a": _hits(240), "b": _hits(234, [290, 291, 292]), "c": _hits(150)}
    correct |= {"d": _hits(135), "B": b_hits}
    scores = {h: float(np.mean(c)) for h, c in correct.items()}
    experts = [
        {"handle": h, "name": "baseline" if h == "B" else f"expert_{h}", "score": scores[h]}
        | {"kind": "baseline" if h == "B" else "full"}
        for h in correct
    ]
    selection = selectors.select_best(scores, True, "knn")
    result = {"task": "cifar100", "method": "knn", "higher_is_better": True, "experts": experts}
    result.update(selected=selection.selected, selected_name=f"expert_{selection.selected}")
    options = dict(ranking.DEFAULTS, fallback="baseline", n_resamples=999)
    options["fallback_confidence"] = fallback_confidence
    confidence.annotate(result, selection, correct, "B", options)
    return result


def test_ranking_confidence_shows_the_top_candidates_b_and_the_win_chances():
    result = _sure_ranking(_hits(90))
    said = report.ranking_confidence(result)
    info = {e["name"]: e for e in result["experts"]}
    cell = lambda n: (
        f"{n} {info[n]['score']:.3f} [{info[n]['ci_low']:.3f}, {info[n]['ci_high']:.3f}]"
    )
    # The top three best first, the pick marked, then B (ranked last); expert_d (fourth) not.
    expected = [
        cell("expert_a") + " (selected)",
        cell("expert_b"),
        cell("expert_c"),
        cell("baseline"),
    ]
    assert said["candidates"] == "; ".join(expected)
    top, vs_b = result["pairwise"]
    tie = f" (tie {top['p_tie']:.3f})"
    assert said["chances"] == (
        f"P(expert_a beats expert_b, the runner-up) = {top['p_better']:.3f}{tie}; "
        f"P(expert_a beats baseline, B) = {vs_b['p_better']:.3f}"
    )
    assert 0.2 < top["p_better"] < 0.9 and vs_b["p_better"] > 0.999  # a coin toss; a sure win
    assert said["fallback"] == "fallback to B did not fire (needs P >= 0.9)"
    lines = report.confidence_lines(result)
    assert lines == [
        f"top candidates, score [95% interval]: {said['candidates']}",
        said["chances"],
        said["fallback"],
    ]


def test_a_fallback_that_fires_says_what_b_replaced_and_the_report_shows_it():
    result = _sure_ranking(_hits(237, [295, 296]))  # B: 239 hits, 2 of them where a misses
    assert result["fallback"]["fired"] and result["selected"] == "B"
    said = report.ranking_confidence(result)
    assert said["fallback"] == "fallback to B fired (needs P >= 0.9): B replaces expert_a"
    assert said["candidates"].split("; ")[1].endswith(" (selected)")  # B, second by score
    assert said["candidates"].startswith("expert_a ") and said["candidates"].count("; ") == 2
    results = {
        "knn": {"cifar100": dict(_result("cifar100", "natural", "knn", 0.6), ranking=result)}
    }
    lines = report.markdown_report(results).splitlines()
    row = f"| cifar100 | knn | {said['candidates']} | {said['chances']} | {said['fallback']} |"
    assert row in lines
    # Without per-image hits: scores only, no interval, no chances.
    no_hits = "top candidates, score (no interval: no per-image hits): "
    assert report.confidence_lines(RANKING) == [
        no_hits + "expert_b 0.620 (selected); expert_a 0.410"
    ]
