"""`bit_experts.bootstrap.bca_interval`: scipy's BCa interval, percentiles where BCa is undefined."""

import numpy as np
import pytest
from scipy import stats

from bit_experts.bootstrap import bca_interval


def _scipy(samples, statistic, **kwargs):
    return stats.bootstrap(
        samples, statistic, vectorized=True, method="BCa", rng=np.random.default_rng(3), **kwargs
    )


def test_equals_scipy_bca_with_the_same_seed_batch_and_pairing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    got = bca_interval((x,), np.mean, confidence_level=0.9, n_resamples=999, seed=3, batch=100)
    want = _scipy((x,), np.mean, confidence_level=0.9, n_resamples=999, batch=100)
    assert got == tuple(float(v) for v in want.confidence_interval)
    assert got[0] < x.mean() < got[1]

    def difference(a, b, axis=-1):
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    a, b = rng.random(60) < 0.7, rng.random(60) < 0.4
    got = bca_interval(
        (a, b), difference, confidence_level=0.95, n_resamples=999, seed=3, paired=True
    )
    want = _scipy((a, b), difference, paired=True, confidence_level=0.95, n_resamples=999)
    assert got == tuple(float(v) for v in want.confidence_interval)


def _below_every_resample(x, axis=-1):
    # The mean, less 100 on the observed (1-D) sample only: no resample falls below the observed
    # value, so BCa's bias correction is norm.ppf(0) = -inf and scipy's ends are NaN.
    return np.mean(x, axis=axis) - 100.0 * (np.ndim(x) == 1)


def test_percentile_interval_where_bca_is_undefined():
    x = np.arange(1.0, 31.0)
    kwargs = dict(confidence_level=0.9, n_resamples=999)
    with pytest.warns(stats.DegenerateDataWarning):
        scipy_result = _scipy((x,), _below_every_resample, **kwargs)
    assert np.isnan(scipy_result.confidence_interval).all()
    low, high = bca_interval((x,), _below_every_resample, seed=3, **kwargs)
    expected = np.percentile(scipy_result.bootstrap_distribution, [5, 95])
    assert (low, high) == tuple(float(v) for v in expected)
    assert 1.0 <= low < x.mean() < high <= 30.0


@pytest.mark.parametrize("level", [0.0, 1.0, 95])
def test_bad_confidence_level_is_one_line(level):
    with pytest.raises(ValueError, match=r"confidence_level must be in \(0, 1\); got"):
        bca_interval((np.arange(5.0),), np.mean, confidence_level=level, n_resamples=99, seed=0)
