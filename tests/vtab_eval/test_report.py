"""Reports: group table in the paper's format, selections, kNN scores, plots, comparison."""

import os

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


def test_group_means():
    means = report.group_means(RESULTS["knn"])
    assert means["natural"] == pytest.approx(0.65)
    assert means["specialized"] == pytest.approx(0.90)
    assert means["structured"] == pytest.approx(0.50)
    assert means["mean"] == pytest.approx((0.6 + 0.7 + 0.9 + 0.5) / 4)


def test_markdown_report_sections():
    text = report.markdown_report(RESULTS)
    lines = text.splitlines()
    assert "| Method | Natural | Specialized | Structured | Mean |" in lines
    assert "| knn | 65.0 | 90.0 | 50.0 | 67.5 |" in lines
    assert "| baseline | 50.0 | 80.0 | — | 65.0 |" in lines
    assert "| cifar100 | natural | 60.0 [59.0, 62.0] n=3 | 50.0 [49.0, 52.0] n=3 |" in lines
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
    assert "| pool1:baseline | 50.0 | 80.0 | — | 65.0 |" in text.splitlines()
    assert "| pool2:knn | 65.0 | 90.0 | 50.0 | 67.5 |" in text.splitlines()
    with pytest.raises(FileNotFoundError, match="results"):
        report.load_results(str(tmp_path))


def test_task_slug_and_atomic_json(tmp_path):
    assert report.task_slug("folder:/data/my flowers") == "folder_data_my_flowers"
    report.write_json(str(tmp_path / "a.json"), {"x": 1})
    assert report.read_json(str(tmp_path / "a.json")) == {"x": 1}
    assert report.read_json(str(tmp_path / "missing.json")) is None
    assert os.listdir(tmp_path) == ["a.json"]
