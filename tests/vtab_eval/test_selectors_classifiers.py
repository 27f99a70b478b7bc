"""domain_prediction and label_matching: their formulas, their inputs and what they need."""

import math

import numpy as np
import pytest
import selector_battery as battery

from vtab_eval import selectors
from vtab_eval.selectors import classifiers

domain_prediction = selectors.get("domain_prediction").score_probabilities
label_matching = selectors.get("label_matching").score_probabilities


def test_domain_prediction_prefers_the_expert_the_epn_believes_in():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 4))
    logits[:, 2] += 3.0  # planted: the EPN thinks these images come from expert "c"
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = ["a", "b", "c", "d"]
    scores = domain_prediction(probs, names)
    assert list(scores) == names
    # float64 on both sides, same formula: default rtol 1e-7 is ~1e9 float64 ulps.
    np.testing.assert_allclose(scores["b"], np.mean(np.log(probs[:, 1])))
    # The log of the geometric mean, not of the arithmetic mean.
    assert scores["b"] < np.log(np.mean(probs[:, 1]))
    assert selectors.select_best(scores, method="domain_prediction").selected == "c"


def test_domain_prediction_clips_zero_probabilities():
    scores = domain_prediction(np.array([[1.0, 0.0], [0.5, 0.5]]), ["x", "y"])
    assert math.isfinite(scores["y"])
    # float64 on both sides: approx's rel 1e-6 is ample; without the floor it is -inf.
    expected = 0.5 * (np.log(classifiers.LOG_PROB_FLOOR) + np.log(0.5))
    assert scores["y"] == pytest.approx(expected)


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
        domain_prediction(probs, names)


def test_domain_prediction_reads_the_epn_columns_by_alias():
    ctx = battery.FakeContext()
    ctx.modules["epn"].metadata["outputs"] = ["weak", "planted", "other"]  # columns renamed
    scores = selectors.get("domain_prediction").score(ctx).scores
    assert list(scores) == ["planted", "weak"]  # "noise" has no column: not scored
    expected = domain_prediction(ctx.outputs["epn"], ["weak", "planted", "other"])
    assert scores == {"planted": expected["planted"], "weak": expected["weak"]}
    assert ctx.record["num_images"] == len(ctx.labels)


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
    scores = label_matching(upstream, priors)
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
    expert = (prior + classifiers.PRIOR_EPSILON) / (1 + 3 * classifiers.PRIOR_EPSILON)
    expected = sum(t * np.log(t / e) for t, e in zip(task, expert) if t > 0)
    # Same float64 formula: rel 1e-9 is ~1e7 float64 ulps.
    assert label_matching(upstream, {"e": prior})["e"] == pytest.approx(expected, rel=1e-9)


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
        label_matching(upstream, priors)


@pytest.mark.parametrize(
    "method, change, message",
    [
        ("domain_prediction", lambda c: c.modules.pop("epn"), "needs the EPN module"),
        ("domain_prediction", lambda c: c.modules["epn"].metadata.clear(), "lacks 'outputs'"),
        ("label_matching", lambda c: c.modules.pop("classifier"), "classifier module"),
        ("label_matching", lambda c: setattr(c, "label_priors", None), "label priors; none"),
        ("label_matching", lambda c: setattr(c, "label_priors", {"x": [1]}), "no expert of"),
    ],
)
def test_classifier_selectors_say_what_the_pool_lacks(method, change, message):
    ctx = battery.FakeContext()
    change(ctx)
    with pytest.raises(selectors.SelectorUnavailable, match=message):
        selectors.get(method).score(ctx)
