"""domain_prediction and label_matching: their formulas, their inputs and what they need."""

import math

import numpy as np
import pytest
import selector_battery as battery

from vtab_eval import selectors
from vtab_eval.selectors import classifiers

domain_prediction = selectors.get("domain_prediction").score_probabilities
label_matching = selectors.get("label_matching").score_probabilities


def _membership_probs(rng, n, member):
    """[n, 3] EPN probabilities for domains (root, a, b): the root holds every image, `member`
    says which of a and b the task's images belong to (None: neither)."""
    probs = rng.uniform(0.02, 0.1, size=(n, 3))
    probs[:, 0] = 1.0
    if member is not None:
        probs[:, member] = rng.uniform(0.6, 0.95, size=n)
    return probs


SHARES = {"root": 1.0, "a": 0.3, "b": 0.2}  # the domains' shares of the upstream images


def _logs(shares):
    """The log priors domain prediction takes: logs of the shares (an EPN without its own)."""
    return {name: float(np.log(share)) for name, share in shares.items()}


def test_domain_prediction_prefers_the_expert_the_epn_believes_in():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 4))
    logits[:, 2] += 3.0  # planted: the EPN thinks these images come from expert "c"
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = ["a", "b", "c", "d"]
    shares = {"d": 0.1, "c": 0.5, "b": 0.25, "a": 0.25}
    scores = domain_prediction(probs, names, _logs(shares))
    assert list(scores) == names  # column order, not the order of the shares
    # float64 on both sides, same formula: default rtol 1e-7 is ~1e9 float64 ulps.
    np.testing.assert_allclose(scores["b"], np.mean(np.log(probs[:, 1])) - np.log(0.25))
    # The log of the geometric mean, not of the arithmetic mean.
    assert scores["b"] < np.log(np.mean(probs[:, 1]) / 0.25)
    assert selectors.select_best(scores, method="domain_prediction").selected == "c"
    assert list(domain_prediction(probs, names, _logs({"c": 0.5, "a": 0.25}))) == ["a", "c"]


def test_domain_prediction_a_root_is_the_fallback_not_the_pick():
    """Issue 25: the root's p is 1 on every image, so the mean log p alone (every share 1) picks
    it on every task; divided by the shares, a task from one domain picks that domain and a task
    from none picks the root."""
    rng = np.random.default_rng(4)
    names = list(SHARES)
    for member, expected in ((1, "a"), (2, "b"), (None, "root")):
        probs = _membership_probs(rng, 40, member)
        raw = domain_prediction(probs, names, dict.fromkeys(names, 0.0))
        assert selectors.select_best(raw).selected == "root"
        scores = domain_prediction(probs, names, _logs(SHARES))
        assert selectors.select_best(scores).selected == expected
        assert scores["root"] == 0.0  # log(1 / 1): the fallback's score is fixed
        # Same float64 formula: rtol 1e-12 is ~1e4 float64 ulps.
        np.testing.assert_allclose(scores["a"], raw["a"] - np.log(0.3), rtol=1e-12)


def test_domain_prediction_against_the_epns_own_prior():
    """An EPN trained briefly under-predicts every non-root domain on every image: against the
    shares the root wins every task; against the EPN's mean log p on upstream images, the domain
    the task's images raise above that average wins."""
    rng = np.random.default_rng(5)
    names = ["root", "a", "b"]
    upstream = {"root": -1e-3, "a": -3.0, "b": -3.0}  # p(a), p(b) ~ 0.05 upstream, shares 0.3, 0.2
    probs = np.column_stack(
        [np.full(40, 0.999), np.exp(rng.normal(-2.0, 0.1, 40)), np.exp(rng.normal(-3.0, 0.1, 40))]
    )
    by_shares = domain_prediction(probs, names, _logs(SHARES))
    assert selectors.select_best(by_shares).selected == "root"
    by_prior = domain_prediction(probs, names, upstream)
    assert selectors.select_best(by_prior).selected == "a"
    # Same float64 formula: rtol 1e-12 is ~1e4 float64 ulps.
    np.testing.assert_allclose(by_prior["a"], np.mean(np.log(probs[:, 1])) + 3.0, rtol=1e-12)


def test_the_epns_prior_is_floored_as_the_task_side_is():
    from bit_experts.training import epn

    assert epn.LOG_PROB_FLOOR == classifiers.LOG_PROB_FLOOR


def test_domain_prediction_reads_the_prior_from_the_epn_metadata():
    ctx = battery.FakeContext()
    outputs = ctx.modules["epn"].metadata["outputs"]
    prior = [-0.5 - i for i in range(len(outputs))]
    ctx.modules["epn"].metadata["upstream_log_p"] = prior
    scores = selectors.get("domain_prediction").score(ctx).scores
    expected = domain_prediction(ctx.outputs["epn"], outputs, dict(zip(outputs, prior)))
    assert scores == {h: expected[h] for h in scores} and scores
    ctx.modules["epn"].metadata["upstream_log_p"] = prior[:-1]
    with pytest.raises(ValueError, match="'upstream_log_p' is not one per output"):
        selectors.get("domain_prediction").score(ctx)


def test_domain_prediction_clips_zero_probabilities():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    scores = domain_prediction(probs, ["x", "y"], _logs({"x": 1, "y": 0.5}))
    assert math.isfinite(scores["y"])
    # float64 on both sides: approx's rel 1e-6 is ample; without the floor it is -inf.
    expected = 0.5 * (np.log(classifiers.LOG_PROB_FLOOR) + np.log(0.5)) - np.log(0.5)
    assert scores["y"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "probs, names, shares, message",
    [
        (np.full((3, 2), 0.5), ["a", "b", "c"], {"a": 0}, "2 expert columns but 3"),
        (np.full((3, 2), 0.5), ["a", "a"], {"a": 0}, "unique"),
        (np.full(3, 0.5), ["a", "b", "c"], {"a": 0}, "2-D"),
        (np.array([[1.5, -0.5]]), ["a", "b"], {"a": 0}, r"\[0, 1\]"),
        (np.full((3, 2), 0.5), ["a", "b"], {"c": -0.5}, r"\['c'\], which have no EPN column"),
        (np.full((3, 2), 0.5), ["a", "b"], {"a": -np.inf}, "finite and <= 0"),
        (np.full((3, 2), 0.5), ["a", "b"], {"b": 0.5}, "finite and <= 0"),
    ],
)
def test_domain_prediction_rejects_bad_input(probs, names, shares, message):
    with pytest.raises(ValueError, match=message):
        domain_prediction(probs, names, shares)


def test_domain_prediction_reads_the_epn_columns_by_alias():
    ctx = battery.FakeContext()
    ctx.modules["epn"].metadata["outputs"] = ["weak", "planted", "other"]  # columns renamed
    scores = selectors.get("domain_prediction").score(ctx).scores
    assert list(scores) == ["planted", "weak"]  # "noise" has no column: not scored
    shares = {"weak": 0.8, "planted": 0.2}  # the fake experts' image counts over 100
    expected = domain_prediction(ctx.outputs["epn"], ["weak", "planted", "other"], _logs(shares))
    assert scores == {"planted": expected["planted"], "weak": expected["weak"]}
    assert ctx.record["num_images"] == len(ctx.labels)


def _task(upstream):
    mean = np.asarray(upstream).mean(axis=0)
    return mean / mean.sum()


def test_label_matching_prefers_the_domain_of_the_predicted_labels():
    rng = np.random.default_rng(2)
    # Upstream labels 0-5, one image each per 1/6 of upstream; the task's images look like
    # labels 0-2 (sigmoid outputs, rows do not sum to 1), with the classifier's usual leak.
    upstream = rng.uniform(0.0, 0.05, size=(40, 6))
    upstream[:, :3] += rng.uniform(0.5, 0.9, size=(40, 3))
    priors = {
        "root": np.ones(6),
        "matching": np.array([1, 1, 1, 0, 0, 0.0]),
        "half": np.array([0, 0, 1, 1, 0, 0.0]),
        "other": np.array([0, 0, 0, 1, 1, 1.0]),
    }
    shares = {"root": 1.0, "matching": 0.5, "half": 1 / 3, "other": 0.5}
    scores = label_matching(upstream, priors, shares)
    assert list(scores) == list(priors)
    task = _task(upstream)
    # Hierarchy nodes: the log of the task's mass on the node's labels over its share. float64,
    # same sums in another order: rel 1e-12 is ~1e4 ulps.
    assert scores["matching"] == pytest.approx(np.log(task[:3].sum() / 0.5), rel=1e-12)
    assert scores["half"] == pytest.approx(np.log(task[2:4].sum() * 3), rel=1e-12)
    assert scores["root"] == pytest.approx(0.0, abs=1e-12)  # the fallback: log(1)
    assert scores["matching"] > scores["half"] > scores["root"] > scores["other"]
    assert selectors.select_best(scores, method="label_matching").selected == "matching"


def _kl(task, prior, epsilon=1e-6):
    """The score before issue 25: KL(task || prior smoothed by epsilon per label)."""
    expert = np.asarray(prior, float) / np.sum(prior) + epsilon
    expert /= expert.sum()
    return float(np.sum(task * (np.log(task) - np.log(expert))))


def test_label_matching_a_root_is_the_fallback_not_the_pick():
    """Issue 25: KL(task || prior) charges every unit of predicted mass outside the expert's
    labels ~log(1/epsilon), so with the classifier's leak the root, whose labels are all, won;
    divided by the upstream distribution, the matching domain wins."""
    rng = np.random.default_rng(3)
    # 8 upstream labels, 2 images each; "low" holds labels 0-2, "high" 5-7, the root all.
    priors = {"root": np.full(8, 2.0), "low": np.r_[np.ones(3), np.zeros(5)]}
    priors["high"] = priors["low"][::-1]
    shares = {"root": 1.0, "low": 3 / 8, "high": 3 / 8}
    for looks_like, expected in ((slice(5, 7), "high"), (slice(3, 5), "root")):
        upstream = rng.uniform(0.0, 0.08, size=(50, 8))
        upstream[:, looks_like] += rng.uniform(0.3, 0.7, size=(50, 2))
        old = {h: _kl(_task(upstream), p) for h, p in priors.items()}
        assert selectors.select_best(old, higher_is_better=False).selected == "root"
        scores = label_matching(upstream, priors, shares)
        # Labels 3-4 are in no domain but the root's: no domain explains more than its share.
        assert selectors.select_best(scores).selected == expected


def test_label_matching_scores_a_random_control_like_the_root():
    """A control domain (appendix G) is a random share of every label: its prior is the
    upstream one, so it scores what the root scores whatever the task, as the root's labels
    estimate the upstream counts."""
    rng = np.random.default_rng(5)
    counts = rng.integers(10, 50, size=6).astype(float)
    priors = {"root": counts, "control": counts * 0.3, "node": np.r_[counts[:2], np.zeros(4)]}
    shares = {"root": 1.0, "control": 0.3, "node": counts[:2].sum() / counts.sum()}
    upstream = rng.uniform(0.0, 1.0, size=(20, 6))
    scores = label_matching(upstream, priors, shares)
    # Same float64 formula up to summation order: abs 1e-12 is ~1e4 ulps of values near 0.
    assert scores["control"] == pytest.approx(scores["root"], abs=1e-12)
    task = _task(upstream)
    assert scores["node"] == pytest.approx(np.log(task[:2].sum() / shares["node"]), rel=1e-12)


@pytest.mark.parametrize(
    "upstream, priors, shares, message",
    [
        (np.full((2, 3), 0.5), {"e": np.ones(4)}, {"e": 1}, "expected \\(3,\\)"),
        (np.full((2, 3), 0.5), {"e": np.array([1.0, -1.0, 1.0])}, {"e": 1}, "non-negative"),
        (np.full((2, 3), 0.5), {"e": np.zeros(3)}, {"e": 1}, "sums to 0"),
        (np.zeros((2, 3)), {"e": np.ones(3)}, {"e": 1}, "sums to 0"),
        (np.full((2, 3), 0.5), {}, {}, "empty"),
        (np.full((2, 3), 0.5), {"e": np.ones(3)}, {"f": 1}, "expected the experts"),
        (np.full((2, 3), 0.5), {"e": np.ones(3)}, {"e": 2.0}, r"share of 'e' must be in"),
    ],
)
def test_label_matching_rejects_bad_input(upstream, priors, shares, message):
    with pytest.raises(ValueError, match=message):
        label_matching(upstream, priors, shares)


@pytest.mark.parametrize(
    "method, change, message",
    [
        ("domain_prediction", lambda c: c.modules.pop("epn"), "needs the EPN module"),
        ("domain_prediction", lambda c: c.modules["epn"].metadata.clear(), "lacks 'outputs'"),
        ("label_matching", lambda c: c.modules.pop("classifier"), "classifier module"),
        ("label_matching", lambda c: setattr(c, "label_priors", None), "label priors; none"),
        ("label_matching", lambda c: setattr(c, "label_priors", {"x": [1]}), "no expert of"),
        ("domain_prediction", lambda c: c.counts.pop("weak"), r"'image_count'.*\['weak'\]"),
        ("label_matching", lambda c: c.counts.clear(), "without metadata 'image_count'"),
        (
            "domain_prediction",
            lambda c: c.modules["epn"].metadata.pop("image_count"),
            "EPN 'epn' metadata lacks 'image_count'",
        ),
        (
            "label_matching",
            lambda c: c.modules["classifier"].metadata.clear(),
            "classifier 'clf' metadata lacks 'image_count'",
        ),
    ],
)
def test_classifier_selectors_say_what_the_pool_lacks(method, change, message):
    ctx = battery.FakeContext()
    change(ctx)
    with pytest.raises(selectors.SelectorUnavailable, match=message):
        selectors.get(method).score(ctx)
