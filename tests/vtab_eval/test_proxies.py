"""Proxies on cached features against brute-force and published reference computations.

Tolerances are float64 rounding bounds: a computation with condition number k over n terms of size
m errs by about k * n * eps * m (eps = 2^-52); each bound below has a further factor of 100 for the
tails and stays orders of magnitude below what a wrong formula changes (>= 1e-3 of the value).
"""

import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.decomposition import PCA

from vtab_eval import proxies

EPS = np.finfo(np.float64).eps


def _informative(rng, n, d, num_classes=3, signal=1.5, decay=None):
    """Features with a class-dependent offset plus unit noise, and balanced labels.

    With `decay`, dimension j is scaled by exp(-j / decay), a decaying spectrum like real features.
    """
    labels = rng.permutation(np.arange(n) % num_classes)
    centres = rng.normal(size=(num_classes, d)) * signal
    x = centres[labels] + rng.normal(size=(n, d))
    return (x if decay is None else x * np.exp(-np.arange(d) / decay)), labels


# ---------------------------------------------------------------------------------------------
# LogME


def _brute_force_evidence(x, y, alpha, beta):
    """log N(y; 0, I / beta + x x^T / alpha), the marginal likelihood, by scipy's dense logpdf."""
    n = x.shape[0]
    covariance = np.eye(n) / beta + x @ x.T / alpha
    return stats.multivariate_normal(np.zeros(n), covariance).logpdf(y)


def _reference_evidence(x, y, alpha, beta):
    """The evidence as thuml/LogME's `_fit_fixed_point` evaluates it (its published equations).

    d/2 log alpha + N/2 log beta - 1/2 sum_{k = min(N, d) singular values} log(alpha + beta s_k^2)
    - beta/2 |y - x m|^2 - alpha/2 |m|^2 - N/2 log(2 pi).
    """
    n, d = x.shape
    sigma = np.linalg.svd(x, compute_uv=False) ** 2
    a = alpha * np.eye(d) + beta * x.T @ x
    m = beta * np.linalg.solve(a, x.T @ y)
    return (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * sigma))
        - beta / 2 * np.sum((y - x @ m) ** 2)
        - alpha / 2 * (m @ m)
        - n / 2 * np.log(2 * np.pi)
    )


@pytest.mark.parametrize("n, d", [(60, 8), (16, 40)])
def test_logme_is_the_maximised_evidence_of_the_bayesian_linear_model(n, d):
    # A decaying spectrum puts the maximum inside (0, inf)^2 for N < d too: with a flat one the
    # targets are fitted exactly and the evidence grows without bound in beta.
    x, labels = _informative(np.random.default_rng(0), n, d, decay=8)
    result = proxies.logme(x, labels)
    assert result.iterations < proxies.LOGME_MAX_ITERATIONS  # converged
    assert result.score == pytest.approx(np.mean(result.evidence), abs=0)
    for c in range(3):
        y = (labels == c).astype(np.float64)
        alpha, beta = result.alpha[c], result.beta[c]
        # Covariance condition number k; the logpdf's terms are O(N) in size.
        k = 1 + beta * np.linalg.eigvalsh(x @ x.T).max() / alpha
        tol = 100 * k * n * EPS
        brute = _brute_force_evidence(x, y, alpha, beta)
        assert result.evidence[c] * n == pytest.approx(brute, abs=tol)
        # Stationarity (MacKay): alpha |m|^2 = gamma and beta |y - x m|^2 = N - gamma, with m and
        # gamma = d - alpha tr(A^-1) computed directly from A = alpha I + beta x^T x.
        a = alpha * np.eye(d) + beta * x.T @ x
        m = beta * np.linalg.solve(a, x.T @ y)
        gamma = d - alpha * np.trace(np.linalg.inv(a))
        assert alpha * (m @ m) == pytest.approx(gamma, rel=1e-8)
        assert beta * np.sum((y - x @ m) ** 2) == pytest.approx(n - gamma, rel=1e-8)
        # A maximum: moving either precision by 5% lowers the brute-force evidence.
        for da, db in [(1.05, 1), (1 / 1.05, 1), (1, 1.05), (1, 1 / 1.05)]:
            assert _brute_force_evidence(x, y, alpha * da, beta * db) < brute - tol
        # The published reference equations agree when N >= d; for N < d they add the
        # (d - N)/2 log alpha of the zero eigenvalues, which the exact evidence does not have.
        reference = _reference_evidence(x, y, alpha, beta)
        offset = 0.0 if n >= d else (d - n) / 2 * np.log(alpha)
        assert reference - offset == pytest.approx(brute, abs=tol)


def test_logme_prefers_informative_features_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    x, labels = _informative(rng, 90, 12, signal=2.0)
    noise = rng.normal(size=x.shape)
    assert proxies.logme_score(x, labels) > proxies.logme_score(noise, labels) + 0.05
    with pytest.raises(ValueError, match="all zero"):
        proxies.logme_score(np.zeros((5, 3)), [0, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        proxies.logme_score(np.full((4, 2), np.nan), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        proxies.logme_score(x, np.zeros(90, dtype=int))


# ---------------------------------------------------------------------------------------------
# Leave-one-out ridge


def _brute_force_ridge_loo(x, labels, l2):
    """Refits the ridge classifier (unpenalised intercept) without each row; [N, C] outputs."""
    targets = np.eye(labels.max() + 1)[labels]
    out = np.empty(targets.shape)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        xm, ym = x[keep].mean(axis=0), targets[keep].mean(axis=0)
        xc = x[keep] - xm
        w = np.linalg.solve(xc.T @ xc + l2 * np.eye(x.shape[1]), xc.T @ (targets[keep] - ym))
        out[i] = ym + (x[i] - xm) @ w
    return out


def _ridge_tol(x, l2):
    """Rounding bound on a leave-one-out output: condition number of the ridge system times d."""
    xc = x - x.mean(axis=0)
    k = (np.linalg.eigvalsh(xc.T @ xc).max() + l2) / l2
    return 100 * k * x.shape[1] * EPS


@pytest.mark.parametrize("n, d", [(40, 6), (20, 50)])
def test_linear_loo_equals_refitting_without_each_row(n, d):
    x, labels = _informative(np.random.default_rng(d), n, d, signal=0.1)
    scale = np.trace((x - x.mean(0)) @ (x - x.mean(0)).T) / min(n - 1, d)
    l2 = 0.1 * scale
    result = proxies.ridge_loo(x, labels, l2=l2)
    brute = _brute_force_ridge_loo(x, labels, l2)
    tol = _ridge_tol(x, l2)
    np.testing.assert_allclose(result.predictions, brute, rtol=0, atol=tol)
    top2 = np.sort(brute, axis=1)[:, -2:]
    assert np.all(top2[:, 1] - top2[:, 0] > 10 * tol)  # no near-tie could flip a row
    np.testing.assert_array_equal(result.correct, np.argmax(brute, axis=1) == labels)
    assert 0 < result.correct.mean() < 1 and result.l2 == l2


def test_linear_loo_picks_the_penalty_with_least_press():
    x, labels = _informative(np.random.default_rng(3), 30, 5, signal=0.5)
    result = proxies.ridge_loo(x, labels)
    xc = x - x.mean(axis=0)
    s = np.linalg.eigvalsh(xc.T @ xc)
    scale = s[s > s.max() * 30 * EPS].mean()
    targets = np.eye(3)[labels]
    press = [
        np.sum((targets - _brute_force_ridge_loo(x, labels, scale * f)) ** 2)
        for f in proxies.RIDGE_GRID
    ]
    np.testing.assert_allclose(result.press, press, rtol=1e-8)
    assert result.l2 == pytest.approx(scale * proxies.RIDGE_GRID[int(np.argmin(press))], rel=1e-12)
    assert proxies.linear_loo_correct(x, labels).tolist() == result.correct.tolist()
    with pytest.raises(ValueError, match="l2 must be"):
        proxies.ridge_loo(x, labels, l2=0.0)


# ---------------------------------------------------------------------------------------------
# Leave-one-out nearest class mean


def _brute_force_ncm(x, labels):
    correct = np.zeros(len(x), dtype=bool)
    classes = np.unique(labels)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        best, best_class = np.inf, None
        for c in classes:  # ascending: a tie keeps the lower class
            members = x[keep & (labels == c)]
            if len(members) == 0:
                continue
            distance = np.sum((x[i] - members.mean(axis=0)) ** 2)
            if distance < best:
                best, best_class = distance, c
        correct[i] = best_class == labels[i]
    return correct


def test_ncm_equals_recomputing_the_means_without_each_row():
    rng = np.random.default_rng(5)
    x, labels = _informative(rng, 45, 7, num_classes=4, signal=0.6)
    labels[0] = 9  # a class with a single image: it can never be right
    expected = _brute_force_ncm(x, labels)
    got = proxies.ncm_loo_correct(x, labels)
    np.testing.assert_array_equal(got, expected)
    assert not got[0] and 0.2 < got.mean() < 1


# ---------------------------------------------------------------------------------------------
# GBC


def _integrated_bc(mean_a, var_a, mean_b, var_b):
    """Bhattacharyya coefficient, the integral of sqrt(p q), by quadrature.

    p and q have diagonal covariances, so sqrt(p q) is a product over dimensions and its integral
    the product of one-dimensional integrals (scipy.integrate.quad over mean +- 12 sd).
    """

    def root_product(u, ma, va, mb, vb):
        density = lambda m, v: np.exp(-((u - m) ** 2) / (2 * v)) / np.sqrt(2 * np.pi * v)
        return np.sqrt(density(ma, va) * density(mb, vb))

    total = 1.0
    for ma, va, mb, vb in zip(mean_a, var_a, mean_b, var_b):
        sd = np.sqrt(max(va, vb))
        value, _ = integrate.quad(
            root_product,
            min(ma, mb) - 12 * sd,
            max(ma, mb) + 12 * sd,
            args=(ma, va, mb, vb),
            epsabs=1e-13,
            epsrel=1e-12,
        )
        total *= value
    return total


@pytest.mark.parametrize("gaussian", ["diagonal", "spherical"])
def test_gbc_is_minus_the_integrated_overlap_of_class_gaussians(gaussian):
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(3), 10)
    x = rng.normal(size=(30, 2)) * [1.0, 0.5] + np.array([[0, 0], [1.5, 0.5], [0.5, 1.5]])[labels]
    means = [x[labels == c].mean(axis=0) for c in range(3)]
    variances = [x[labels == c].var(axis=0) for c in range(3)]  # population variance
    if gaussian == "spherical":
        variances = [np.full(2, v.mean()) for v in variances]
    expected = -sum(
        _integrated_bc(means[a], variances[a], means[b], variances[b])
        for a in range(3)
        for b in range(3)
        if a != b
    )
    got = proxies.gbc_score(x, labels, pca_dim=None, gaussian=gaussian)
    assert got == pytest.approx(expected, abs=1e-9)  # quadrature error: 1e-12 per integral
    assert -6 < got < -0.1


@pytest.mark.parametrize("n, d", [(50, 20), (15, 40)])
def test_gbc_reduces_features_with_pca_first(n, d):
    x, labels = _informative(np.random.default_rng(n), n, d, signal=0.4)
    reduced = PCA(3, svd_solver="full").fit_transform(x)
    for gaussian in ("diagonal", "spherical"):
        got = proxies.gbc_score(x, labels, pca_dim=3, gaussian=gaussian)
        direct = proxies.gbc_score(reduced, labels, pca_dim=None, gaussian=gaussian)
        assert got == pytest.approx(direct, rel=1e-9)
    # Without the reduction the score differs: the test above can fail.
    assert proxies.gbc_score(x, labels, pca_dim=None) != pytest.approx(
        proxies.gbc_score(x, labels, pca_dim=3), rel=1e-3
    )
    with pytest.raises(ValueError, match="gaussian must be"):
        proxies.gbc_score(x, labels, gaussian="full")
    with pytest.raises(ValueError, match="pca_dim must be"):
        proxies.gbc_score(x, labels, pca_dim=0)


def test_every_proxy_rejects_mismatched_labels():
    x = np.ones((4, 3))
    for proxy in (
        proxies.logme_score,
        proxies.linear_loo_correct,
        proxies.ncm_loo_correct,
        proxies.gbc_score,
    ):
        with pytest.raises(ValueError, match="one label per feature row"):
            proxy(x, [0, 1, 0])
        with pytest.raises(ValueError, match="integer class ids"):
            proxy(x, [0.0, 1.0, 0.0, 1.0])
