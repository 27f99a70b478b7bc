"""Selector scores and the deterministic choice among them."""

import math

import numpy as np
import pytest

from vtab_eval import confidence, knn, selectors


def test_select_best_picks_highest_or_lowest():
    scores = {"a": 0.2, "b": 0.9, "c": 0.5}
    high = selectors.select_best(scores)
    assert (high.selected, high.higher_is_better, high.tie_broken, high.tie_note) == (
        "b",
        True,
        False,
        "",
    )
    low = selectors.select_best(scores, higher_is_better=False, method="label_matching")
    assert (low.selected, low.method) == ("a", "label_matching")
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


def _clustered_features(rng, labels, separation, dim=16):
    centres = rng.normal(size=(labels.max() + 1, dim)) * separation
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32)


def test_knn_scores_rank_the_planted_best_expert_first():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    features = {
        "noise": rng.normal(size=(100, 16)).astype(np.float32),
        "planted": _clustered_features(rng, labels, separation=8.0),
        "weak": _clustered_features(rng, labels, separation=0.7),
    }
    scores = selectors.knn_scores(features, labels, chunk_size=32)
    assert list(scores) == ["noise", "planted", "weak"]
    for handle, value in scores.items():
        assert value == knn.loo_1nn_accuracy(features[handle], labels)
    assert selectors.select_best(scores).selected == "planted"
    assert scores["planted"] > scores["weak"] > scores["noise"]


def test_knn_scores_reject_mismatched_sizes_and_bad_labels():
    features = {"a": np.zeros((5, 3), np.float32)}
    with pytest.raises(ValueError, match="features for 5 images but there are 4 labels"):
        selectors.knn_scores(features, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        selectors.knn_scores(features, [1, 1, 1, 1, 1])


@pytest.mark.parametrize("method", selectors.FEATURE_METHODS)
def test_every_feature_proxy_ranks_the_planted_expert_first(method):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    features = {
        "noise": rng.normal(size=(100, 16)).astype(np.float32),
        "planted": _clustered_features(rng, labels, separation=8.0),
        "weak": _clustered_features(rng, labels, separation=0.7),
    }
    scores, correct = selectors.feature_scores(method, features, labels)
    assert list(scores) == ["noise", "planted", "weak"]
    assert scores["planted"] > scores["weak"] > scores["noise"]
    assert selectors.select_best(scores, method=method).selected == "planted"
    if method in selectors.ROW_METHODS:
        assert list(correct) == list(scores)
        for handle, hits in correct.items():
            assert hits.dtype == bool and hits.shape == (100,)
            assert scores[handle] == float(np.mean(hits))
        if method == "knn":
            assert scores == selectors.knn_scores(features, labels)
    else:
        assert correct is None
    named = {
        "knn": selectors.knn_scores,
        "logme": selectors.logme_scores,
        "linear_loo": selectors.linear_loo_scores,
        "ncm": selectors.ncm_scores,
        "gbc": selectors.gbc_scores,
    }[method]
    assert named(features, labels) == scores


def test_feature_proxies_name_the_expert_with_bad_features():
    labels = [0, 1, 0, 1]
    bad = {"ok": np.eye(4), "broken": np.full((4, 2), np.nan)}
    with pytest.raises(ValueError, match="expert 'broken'.*NaN"):
        selectors.feature_scores("ncm", bad, labels)
    with pytest.raises(ValueError, match="features for 3 images"):
        selectors.feature_scores("logme", {"a": np.ones((3, 2))}, labels)
    with pytest.raises(ValueError, match="no per-row correctness"):
        selectors.row_correctness("gbc", {"a": np.eye(4)}, labels)
    with pytest.raises(ValueError, match="unknown feature proxy"):
        selectors.feature_scores("oracle", {"a": np.eye(4)}, labels)


def _hits(count, total=200, offset=0):
    hits = np.zeros(total, dtype=bool)
    hits[offset : offset + count] = True
    return hits


def test_baseline_fallback_keeps_a_confident_pick_and_falls_back_otherwise():
    baseline = _hits(150)
    clear = _hits(150) | _hits(30, offset=150)  # 30 more images right, none lost
    marginal = _hits(149) | _hits(2, offset=150)  # +2, -1: within noise
    for expert, keeps in [(clear, True), (marginal, False)]:
        correct = {"B": baseline, "e": expert}
        scores = {h: float(np.mean(c)) for h, c in correct.items()}
        selection = selectors.select_best(scores)
        assert selection.selected == "e"
        p = confidence.paired_win_probability(expert, baseline).p_better
        assert (p >= 0.9) == keeps
        decision = selectors.baseline_fallback(selection, "B", correct)
        assert decision == selectors.FallbackDecision("e" if keeps else "B", not keeps, "e", p)
        # The threshold is the caller's: at p itself the pick stays, just above it B wins.
        assert not selectors.baseline_fallback(selection, "B", correct, p).fired
        assert selectors.baseline_fallback(selection, "B", correct, min(1.0, p + 1e-9)).fired


def test_baseline_fallback_when_the_proxy_picks_b_or_b_was_not_ranked():
    correct = {"B": _hits(160), "e": _hits(150)}
    selection = selectors.select_best({h: float(np.mean(c)) for h, c in correct.items()})
    decision = selectors.baseline_fallback(selection, "B", correct)
    assert decision == selectors.FallbackDecision("B", False, "e", None)
    with pytest.raises(ValueError, match="was not ranked"):
        selectors.baseline_fallback(selection, "B0", correct)
    with pytest.raises(ValueError, match="fallback_confidence"):
        selectors.baseline_fallback(selection, "B", correct, 1.5)


def test_domain_prediction_prefers_the_expert_the_epn_believes_in():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 4))
    logits[:, 2] += 3.0  # planted: the EPN thinks these images come from expert "c"
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = ["a", "b", "c", "d"]
    scores = selectors.domain_prediction_scores(probs, names)
    assert list(scores) == names
    # float64 on both sides, same formula: default rtol 1e-7 is ~1e9 float64 ulps.
    np.testing.assert_allclose(scores["b"], np.mean(np.log(probs[:, 1])))
    # The log of the geometric mean, not of the arithmetic mean.
    assert scores["b"] < np.log(np.mean(probs[:, 1]))
    assert selectors.select_best(scores, method="domain_prediction").selected == "c"


def test_domain_prediction_clips_zero_probabilities():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    scores = selectors.domain_prediction_scores(probs, ["x", "y"])
    assert math.isfinite(scores["y"])
    # float64 on both sides: approx's rel 1e-6 is ample; without the floor it is -inf.
    assert scores["y"] == pytest.approx(0.5 * (np.log(selectors.LOG_PROB_FLOOR) + np.log(0.5)))


@pytest.mark.parametrize(
    "probs, names, message",
    [
        (np.full((3, 2), 0.5), ["a", "b", "c"], "2 expert columns but 3"),
        (np.full((3, 2), 0.5), ["a", "a"], "unique"),
        (np.full(3, 0.5), ["a", "b", "c"], "2-D"),
        (np.array([[1.5, -0.5]]), ["a", "b"], r"\[0, 1\]"),
    ],
)
def test_domain_prediction_rejects_bad_input(probs, names, message):
    with pytest.raises(ValueError, match=message):
        selectors.domain_prediction_scores(probs, names)


def test_label_matching_prefers_the_matching_prior():
    rng = np.random.default_rng(2)
    # The task's images look like upstream labels 0-2; sigmoid outputs, rows do not sum to 1.
    upstream = rng.uniform(0.0, 0.05, size=(40, 6))
    upstream[:, :3] += rng.uniform(0.5, 0.9, size=(40, 3))
    task = upstream.mean(axis=0) / upstream.mean(axis=0).sum()
    priors = {
        "animals": np.array([0, 0, 0, 5, 9, 4.0]),
        "matching": task * 1000,  # counts proportional to the task's distribution
        "partial": np.array([6, 0, 0, 3, 0, 1.0]),
    }
    scores = selectors.label_matching_scores(upstream, priors)
    assert list(scores) == list(priors)
    # Not rounding: PRIOR_EPSILON (1e-6) smoothing makes KL ~6 * 1e-6 > 0; 1e-4 bounds it, and
    # the next-best prior scores > 0.1.
    assert scores["matching"] == pytest.approx(0.0, abs=1e-4)
    assert 0 < scores["partial"] < scores["animals"]
    assert math.isfinite(scores["animals"])  # zero prior mass is smoothed, not infinite
    result = selectors.select_best(scores, higher_is_better=False, method="label_matching")
    assert result.selected == "matching"


def test_label_matching_is_kl_of_task_from_expert():
    upstream = np.array([[0.8, 0.2, 0.0], [0.6, 0.4, 0.0]])
    prior = np.array([0.5, 0.25, 0.25])
    task = np.array([0.7, 0.3, 0.0])  # mean of the rows; already sums to 1
    expert = (prior + selectors.PRIOR_EPSILON) / (1 + 3 * selectors.PRIOR_EPSILON)
    expected = sum(t * np.log(t / e) for t, e in zip(task, expert) if t > 0)
    score = selectors.label_matching_scores(upstream, {"e": prior})["e"]
    # Same float64 formula: rel 1e-9 is ~1e7 float64 ulps.
    assert score == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "upstream, priors, message",
    [
        (np.full((2, 3), 0.5), {"e": np.ones(4)}, "expected \\(3,\\)"),
        (np.full((2, 3), 0.5), {"e": np.array([1.0, -1.0, 1.0])}, "non-negative"),
        (np.full((2, 3), 0.5), {"e": np.zeros(3)}, "sums to 0"),
        (np.zeros((2, 3)), {"e": np.ones(3)}, "sums to 0"),
        (np.full((2, 3), 0.5), {}, "empty"),
    ],
)
def test_label_matching_rejects_bad_input(upstream, priors, message):
    with pytest.raises(ValueError, match=message):
        selectors.label_matching_scores(upstream, priors)


def test_random_scores_are_seeded_and_pick_every_expert_sometimes():
    names = ["a", "b", "c", "d"]
    assert selectors.random_scores(names, seed=3) == selectors.random_scores(names, seed=3)
    assert selectors.random_scores(names, seed=3) != selectors.random_scores(names, seed=4)
    picks = {selectors.select_best(selectors.random_scores(names, s)).selected for s in range(60)}
    assert picks == set(names)
    with pytest.raises(ValueError, match="unique"):
        selectors.random_scores(["a", "a"], seed=0)
    with pytest.raises(ValueError, match="seed"):
        selectors.random_scores(names, seed=-1)


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
        ([0, 1], 1, "num_classes"),
    ],
)
def test_validate_task_labels_rejects(labels, num_classes, message):
    with pytest.raises(ValueError, match=message):
        selectors.validate_task_labels(labels, num_classes=num_classes)
