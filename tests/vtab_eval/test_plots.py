"""Plots of an evaluation run (issue 15, item 3): ranking scores and fine-tuning outcomes."""

import os

import numpy as np
import pytest

from vtab_eval import plots, protocol

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


def _task(group, outcomes, kind="median"):
    return {
        "group": group,
        "outcomes": list(outcomes),
        "summary": protocol.aggregate(outcomes, kind),
    }


def test_plot_marks_the_selected_expert(tmp_path):
    path = plots.plot_scores(RANKING, str(tmp_path / "plots" / "cifar.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "plots") == ["cifar.png"]  # No temporary file left behind.
    with pytest.raises(ValueError, match="no scored experts"):
        plots.plot_scores({**RANKING, "experts": RANKING["experts"][2:]}, str(tmp_path / "x.png"))


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
    rows = plots.ranking_rows(ranking)
    assert [r["name"] for r in rows] == ["c", "b", "B", "a"]  # Selected first among the ties.
    assert [(r["selected"], r["tie"], r["baseline"]) for r in rows] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (False, False, False),
    ]
    assert (rows[3]["ci_low"], rows[3]["ci_high"]) == (0.9, 0.95) and rows[0]["ci_low"] is None
    lower = plots.ranking_rows({**ranking, "higher_is_better": False, "selected": "/m/a"})
    assert [r["name"] for r in lower] == ["a", "B", "b", "c"]


def test_plots_write_pngs(tmp_path):
    ranking = {
        **RANKING,
        "task": "digits",
        "experts": [dict(e, ci_low=0.3, ci_high=0.7) for e in RANKING["experts"][:2]],
    }
    path = plots.plot_scores(ranking, str(tmp_path / "r.png"))
    rng = np.random.default_rng(0)
    results = {
        m: {t: _task(g, rng.normal(0.7, 0.02, 5)) for t, g in (("a", "natural"), ("b", None))}
        for m in ("knn", "baseline")
    }
    outcomes = plots.plot_outcomes(results, str(tmp_path / "o.png"))
    for png in (path, outcomes):
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["o.png", "r.png"]
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_outcomes({"knn": {}}, str(tmp_path / "x.png"))
