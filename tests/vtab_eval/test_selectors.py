"""The selector registry, the battery every registered selector passes, and the choice."""

import math
import sys

import numpy as np
import pytest
import selector_battery as battery
import vtab_eval_toys as toys

from vtab_eval import selectors

POOL = [
    toys.Entry("b", "baseline", "baseline", "feature_vector", {}),
    toys.Entry("e", "expert", "full", "feature_vector", {}),
    toys.Entry("epn", "epn", "epn", "epn", {}),
]


@pytest.mark.parametrize("name", selectors.names())
def test_every_registered_selector_passes_the_battery(name):
    found = battery.assert_selector_battery(name, battery.FakeContext(), POOL)
    selector = selectors.get(name)
    if found is not None and selector.kind != "none":  # every proxy finds the planted expert
        best = selectors.select_best(found.scores, selector.higher_is_better, name)
        assert best.selected == battery.PLANTED


def test_registry_names_kinds_and_lookup():
    assert selectors.names()[:1] == ("knn",)  # the paper's selector comes first
    assert selectors.names("feature") == ("knn", "logme", "linear_loo", "ncm", "gbc")
    assert selectors.names(rows=True) == ("knn", "linear_loo", "ncm")
    assert selectors.names(("epn", "classifier")) == ("domain_prediction", "label_matching")
    assert selectors.names("every") == ("hindsight",)
    assert set(selectors.names()) == set().union(*(selectors.names(k) for k in selectors.KINDS))
    # label_matching was a KL divergence (lower is better) until issue 25; now none is.
    assert all(selectors.get(n).higher_is_better for n in selectors.names())
    with pytest.raises(
        ValueError, match=r"unknown selection method 'oracle'; expected one of .*knn"
    ):
        selectors.get("oracle")


def test_register_refuses_bad_selectors_and_unregister_undoes_it():
    def make(name, **attributes):
        return type("Toy", (selectors.Selector,), {"name": name, **attributes})

    with pytest.raises(ValueError, match="already registered"):
        selectors.register(make("knn"))
    with pytest.raises(ValueError, match="name must match"):
        selectors.register(make("Bad-Name"))
    with pytest.raises(ValueError, match="kind 'images'"):
        selectors.register(make("toy_kind", kind="images"))
    with pytest.raises(ValueError, match="higher-is-better"):
        selectors.register(make("toy_rows", rows=True, higher_is_better=False))
    toy = make("toy_registered", kind="none")
    assert selectors.register(toy) is toy
    try:
        assert selectors.names()[-1] == "toy_registered" and isinstance(
            selectors.get("toy_registered"), toy
        )
    finally:
        selectors.unregister("toy_registered")
    assert "toy_registered" not in selectors.names()
    assert not any(n.startswith("toy") for n in selectors.names())


def test_candidates_and_baseline_of_a_pool():
    assert selectors.candidates(POOL) == POOL[:2]
    assert selectors.candidates(POOL, include_baseline=False) == POOL[1:2]
    assert selectors.find_baseline(POOL) is POOL[0] and selectors.find_baseline(POOL[1:]) is None
    assert selectors.entry_info("/hub/m/") == {
        "handle": "/hub/m/",
        "name": "m",
        "kind": "third_party",
    }
    assert selectors.entry_info(POOL[1]) == {"handle": "e", "name": "expert", "kind": "full"}


def test_select_best_picks_highest_or_lowest():
    scores = {"a": 0.2, "b": 0.9, "c": 0.5}
    high = selectors.select_best(scores)
    assert (high.selected, high.higher_is_better, high.tie_broken, high.tie_note) == (
        "b",
        True,
        False,
        "",
    )
    low = selectors.select_best(scores, higher_is_better=False, method="a_divergence")
    assert (low.selected, low.method) == ("a", "a_divergence")
    assert low.scores == scores


def test_ties_go_to_first_in_collection_order_and_are_reported():
    scores = {"z": 0.5, "m": 0.91, "a": 0.91, "q": 0.91}
    result = selectors.select_best(scores)
    assert result.selected == "m"
    assert result.tie_broken
    assert "3 experts tied at 0.91" in result.tie_note
    assert "m, a, q" in result.tie_note
    reordered = selectors.select_best({"a": 0.91, "m": 0.91, "z": 0.5})
    assert reordered.selected == "a"


def test_non_finite_scores_never_win():
    scores = {"nan": math.nan, "inf": math.inf, "ok": 0.1, "neg_inf": -math.inf}
    assert selectors.select_best(scores).selected == "ok"
    assert selectors.select_best(scores, higher_is_better=False).selected == "ok"


@pytest.mark.parametrize(
    "scores, message",
    [({}, "no experts"), ({"a": math.nan}, "finite"), ({"a": "high"}, "not a number")],
)
def test_select_best_rejects_unusable_scores(scores, message):
    with pytest.raises(ValueError, match=message):
        selectors.select_best(scores)


def test_validate_task_labels_accepts_and_normalises():
    labels = selectors.validate_task_labels(np.array([0.0, 2.0, 1.0]), num_classes=3)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [0, 2, 1])


@pytest.mark.parametrize(
    "labels, num_classes, message",
    [
        ([3], None, "at least 2 images"),
        ([], None, "at least 2 images"),
        ([4, 4, 4], None, "at least 2 classes; all 3 are 4"),
        ([0, -1, 1], None, "non-negative"),
        ([0, 1, 5], 5, r"\[0, 5\); got maximum 5"),
        ([[0, 1], [1, 0]], None, "1-D"),
        ([0.5, 1.0], None, "non-integer"),
        (["a", "b"], None, "integer class ids"),
        ([0, 1], 1, r"\[0, 1\); got maximum 1"),
    ],
)
def test_validate_task_labels_rejects(labels, num_classes, message):
    with pytest.raises(ValueError, match=message):
        selectors.validate_task_labels(labels, num_classes=num_classes)


def test_the_documented_example_selector_reaches_the_commands_through_a_config_file(
    tmp_path, monkeypatch
):
    import pathlib
    import re

    from vtab_eval import config

    doc = (pathlib.Path(__file__).parents[2] / "docs" / "selection.md").read_text()
    code = re.search(r"in `my_selector.py`:\n\n```python\n(.*?)```", doc, re.S)[1]
    (tmp_path / "my_selector.py").write_text(code)
    (tmp_path / "mine.py").write_text(
        "import my_selector\n\n\ndef get_config(arg=None):\n    return {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = config.make(str(tmp_path / "mine.py"), selection={"selectors": ["feature_norm"]})
        assert cfg["selection"]["selectors"] == ["feature_norm"]
        chosen = selectors.get("feature_norm")
        features = {"a": np.ones((4, 3)), "b": np.zeros((4, 3))}
        ctx = type("Ctx", (), {"features": lambda self: (features, np.arange(4))})()
        assert chosen.kind == "feature" and chosen.score(ctx).scores == {"a": math.sqrt(3), "b": 0}
    finally:
        selectors.unregister("feature_norm")
        monkeypatch.delitem(sys.modules, "my_selector", raising=False)
