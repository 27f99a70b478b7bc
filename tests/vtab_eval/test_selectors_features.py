"""The selectors on cached features (knn, logme, linear_loo, ncm, gbc) against their algorithms."""

import numpy as np
import pytest
import selector_battery as battery

from vtab_eval import knn, proxies, selectors

ALGORITHMS = {
    "knn": knn.loo_1nn_correct,
    "logme": proxies.logme_score,
    "linear_loo": proxies.linear_loo_correct,
    "ncm": proxies.ncm_loo_correct,
    "gbc": proxies.gbc_score,
}


def test_every_built_in_feature_selector_is_listed_here():
    assert set(ALGORITHMS) <= set(selectors.names("feature"))


@pytest.mark.parametrize("method", sorted(ALGORITHMS))
def test_feature_selector_applies_its_algorithm_to_each_expert(method):
    ctx = battery.FakeContext()
    features, labels = ctx.features()
    selector = selectors.get(method)
    found = selector.score(ctx)
    assert list(found.scores) == list(battery.EXPERTS)
    for handle, array in features.items():
        expected = ALGORITHMS[method](array, labels)
        if selector.rows:
            np.testing.assert_array_equal(found.correct[handle], expected)
        else:
            assert found.scores[handle] == expected
    assert found.scores["planted"] > found.scores["weak"] > found.scores["noise"]
    direct = selector.score_features(features, labels)
    assert direct.scores == found.scores


def test_knn_scores_are_the_leave_one_out_accuracy():
    ctx = battery.FakeContext(seed=3)
    features, labels = ctx.features()
    scores = selectors.get("knn").score_features(features, labels).scores
    for handle, value in scores.items():
        assert value == knn.loo_1nn_accuracy(features[handle], labels)


def test_feature_selectors_name_the_expert_with_bad_features_or_sizes():
    labels = [0, 1, 0, 1]
    bad = {"ok": np.eye(4), "broken": np.full((4, 2), np.nan)}
    with pytest.raises(ValueError, match="expert 'broken'.*NaN"):
        selectors.get("ncm").score_features(bad, labels)
    with pytest.raises(ValueError, match=r"expert 'a': .*one label per feature row \(3\)"):
        selectors.get("logme").score_features({"a": np.ones((3, 2))}, labels)
    with pytest.raises(ValueError, match=r"expert 'a': .*one label per feature row \(5\)"):
        selectors.get("knn").score_features({"a": np.zeros((5, 3), np.float32)}, labels)
    with pytest.raises(ValueError, match="at least 2 classes"):
        selectors.get("gbc").score_features({"a": np.eye(4)}, [1, 1, 1, 1])
