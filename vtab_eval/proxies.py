"""Transferability proxies on one expert's cached features: LogME, leave-one-out ridge and NCM, GBC.

Each reads float [N, d] features of a task's images and its integer labels [N], as the feature
cache holds them (no forward pass beyond the `knn` selector's), and computes in float64; C counts
the classes present. Features that are not a finite 2-D numeric array with at least 2 rows and 1
column, or labels that are not N integer ids of at least 2 classes, raise a one-line ValueError.
docs/selection.md explains each proxy and where it departs from its paper's code.
"""

import dataclasses
import itertools

import numpy as np
import scipy.linalg

# LogME stops when t = alpha / beta changes by at most this, relatively, for every class: often
# after 40 to 150 steps (the reference code: 1e-3, at most 11 steps); a step costs O(r C).
LOGME_TOLERANCE = 1e-10
LOGME_MAX_ITERATIONS = 1000
# Ridge penalties linear_loo tries, times the mean non-zero eigenvalue of the centred Gram matrix
# (the features' scale): 10^-6 ... 10^3 in half decades.
RIDGE_GRID = tuple(10.0 ** (k / 2) for k in range(-12, 7))
# GBC's principal components and floor on a class variance, as in google-research/stable_transfer.
GBC_PCA_DIM = 64
GBC_MIN_VARIANCE = 1e-4


def as_task_arrays(features, labels):
    """(features float64 [N, d], classes int64 [N] in [0, C), C), or ValueError (module doc)."""
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"features must be a numeric [N, d] array; got {type(features)}") from err
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"features must be 2-D with at least 2 rows and 1 column; got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinite values")
    y = np.asarray(labels)
    if y.shape != x.shape[:1] or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be integer class ids, one label per feature row ({x.shape[0]}); "
            f"got {y.dtype} of shape {y.shape}"
        )
    present, classes = np.unique(y, return_inverse=True)
    if present.size < 2:
        raise ValueError(f"labels must contain at least 2 classes; all {y.size} are {present[0]}")
    return x, classes.astype(np.int64), int(present.size)


def _gram_eigen(x):
    """Non-zero spectrum of x: (s [r] eigenvalues of x x^T, u [N, r] orthonormal, r = rank), from
    the smaller Gram matrix; eigenvalues <= s_max max(N, d) eps count as zero (matrix_rank's rule)."""
    n, d = x.shape
    if n <= d:
        s, u = np.linalg.eigh(x @ x.T)
    else:
        s, v = np.linalg.eigh(x.T @ x)
    keep = s > max(s.max(), 0.0) * max(n, d) * np.finfo(np.float64).eps
    s = s[keep]
    u = u[:, keep] if n <= d else (x @ v[:, keep]) / np.sqrt(s)
    return s, u


@dataclasses.dataclass(frozen=True)
class LogMEResult:
    """LogME of one expert on one task: `score`, the mean over classes of `evidence` (nats per
    image; higher is better); `evidence` [C], each class's maximised log evidence / N; `alpha` and
    `beta` [C], the weights' prior and the noise precision there; `iterations`, the steps taken."""

    score: float
    evidence: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    iterations: int


def logme(features, labels, *, tolerance=LOGME_TOLERANCE, max_iterations=LOGME_MAX_ITERATIONS):
    """LogME (You et al., ICML 2021): the maximised evidence of a Bayesian linear model.

    Per class, the one-hot target y [N] = F w + noise, w ~ N(0, I / alpha), noise ~ N(0, I / beta),
    F the raw features; L(alpha, beta) = log N(y; 0, I / beta + F F^T / alpha), the exact marginal
    likelihood for every N and d, is maximised by MacKay's fixed-point iteration from
    alpha = beta = 1 until t = alpha / beta changes by at most `tolerance` (relative), with one
    eigendecomposition for all classes and steps. Squared norms are floored at 1e-12 |y|^2 (over
    s_max for |m|^2), so an exact fit gives a large finite precision. docs/selection.md: the
    formulas and the two deliberate differences from thuml/LogME.

    Returns:
      LogMEResult; `score` is the paper's LogME, the mean over classes of L / N.

    Raises:
      ValueError: malformed features or labels (module doc), or features that are all zero.
    """
    x, classes, num_classes = as_task_arrays(features, labels)
    n = x.shape[0]
    s, u = _gram_eigen(x)
    if s.size == 0:
        raise ValueError("features are all zero; LogME needs at least one non-zero feature")
    targets = np.eye(num_classes)[classes]  # [N, C]
    projections = (u.T @ targets) ** 2  # [r, C]: squared coordinates of y in the column space
    energy = np.sum(targets**2, axis=0)  # [C] = |y|^2
    outside = np.maximum(energy - projections.sum(axis=0), 0.0)  # |y|^2 outside that space
    res_floor = 1e-12 * energy
    m_floor = res_floor / s.max()
    s_col = s[:, np.newaxis]

    def moments(t):
        gamma = np.sum(s_col / (s_col + t), axis=0)
        m2 = np.maximum(np.sum(s_col * projections / (s_col + t) ** 2, axis=0), m_floor)
        res2 = np.sum(projections * (t / (s_col + t)) ** 2, axis=0) + outside
        return gamma, m2, np.maximum(res2, res_floor)

    alpha = beta = np.ones(num_classes)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        t = alpha / beta
        gamma, m2, res2 = moments(t)
        alpha = gamma / m2
        beta = (n - gamma) / res2
        if np.all(np.abs(alpha / beta - t) <= tolerance * t):
            break
    t = alpha / beta
    _, m2, res2 = moments(t)
    log_evidence = (
        n / 2 * np.log(beta)
        - 0.5 * np.sum(np.log1p(s_col / t), axis=0)
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    )
    evidence = log_evidence / n
    return LogMEResult(float(np.mean(evidence)), evidence, alpha, beta, iterations)


def logme_score(features, labels) -> float:
    """LogME (see `logme`): mean over classes of the maximised log evidence / N; higher wins."""
    return logme(features, labels).score


@dataclasses.dataclass(frozen=True)
class RidgeLOO:
    """Exact leave-one-out ridge classification: `correct` bool [N], whether the model fitted
    without row i ranks its class first (ties: the lowest class); `predictions` float [N, C], those
    models' outputs; `l2`, the penalty used (squared feature units); `press`, the leave-one-out
    squared error over rows and classes of each penalty tried."""

    correct: np.ndarray
    predictions: np.ndarray
    l2: float
    press: np.ndarray


def ridge_loo(features, labels, l2=None) -> RidgeLOO:
    """Leave-one-out ridge regression onto one-hot targets, in closed form.

    Y ~ 1 b^T + F W, intercept b unpenalised, minimising |Y - 1 b^T - F W|^2 + l2 |W|^2. With the
    hat matrix H = 11^T / N + U diag(s / (s + l2)) U^T (F - mean(F) = U diag(sqrt(s)) V^T),
    leaving row i out predicts y_i - e_i / (1 - H_ii), e_i the full fit's residual (Allen's PRESS
    identity; Rifkin & Lippert 2007): no refitting. 1 - H_ii is summed without cancellation.

    Args:
      l2: ridge penalty (> 0). None: the `RIDGE_GRID` penalty (times the mean non-zero eigenvalue
        of the centred Gram matrix) of least leave-one-out squared error (PRESS), the first on
        ties: squared error, not accuracy, decides, as in scikit-learn's RidgeClassifierCV.

    Raises:
      ValueError: malformed features or labels, or `l2` not a positive finite number.
    """
    x, classes, num_classes = as_task_arrays(features, labels)
    n = x.shape[0]
    targets = np.eye(num_classes)[classes]
    centred = x - x.mean(axis=0)
    mean_target = targets.mean(axis=0)
    s, u = _gram_eigen(centred) if np.any(centred) else (np.zeros(0), np.zeros((n, 0)))
    if l2 is None:
        scale = float(s.mean()) if s.size else 1.0
        penalties = [scale * factor for factor in RIDGE_GRID]
    elif isinstance(l2, bool) or not np.isfinite(l2) or l2 <= 0:
        raise ValueError(f"l2 must be a positive finite number; got {l2!r}")
    else:
        penalties = [float(l2)]
    coordinates = u.T @ (targets - mean_target)  # [r, C]
    u2 = u**2
    outside = np.maximum(1.0 - 1.0 / n - u2.sum(axis=1), 0.0)  # leverage outside U's span
    best = None
    press = np.empty(len(penalties))
    for index, penalty in enumerate(penalties):
        fitted = mean_target + u @ (coordinates * (s / (s + penalty))[:, np.newaxis])
        one_minus_h = outside + u2 @ (penalty / (s + penalty))
        loo_residual = (targets - fitted) / one_minus_h[:, np.newaxis]
        press[index] = np.sum(loo_residual**2)
        if best is None or press[index] < press[best[0]]:
            best = (index, targets - loo_residual)
    index, predictions = best
    correct = np.argmax(predictions, axis=1) == classes
    return RidgeLOO(correct, predictions, float(penalties[index]), press)


def linear_loo_correct(features, labels) -> np.ndarray:
    """bool [N]: row i's class wins under the ridge classifier fitted without it (`ridge_loo`)."""
    return ridge_loo(features, labels).correct


def ncm_loo_correct(features, labels) -> np.ndarray:
    """bool [N]: row i's nearest class mean over the other rows (Euclidean) is its own class's.

    Leave-one-out nearest class mean (Mensink et al., TPAMI 2013): its own class's mean without it
    is at distance (n_c / (n_c - 1)) |x_i - mu_c|. A row alone in its class is wrong; ties go to
    the lowest class. ValueError: malformed features or labels.
    """
    x, classes, num_classes = as_task_arrays(features, labels)
    counts = np.bincount(classes, minlength=num_classes).astype(np.float64)
    means = np.zeros((num_classes, x.shape[1]))
    np.add.at(means, classes, x)
    means /= counts[:, np.newaxis]
    # Direct differences (no |a|^2 - 2ab + |b|^2 cancellation), one class at a time: O(N d) memory.
    distances = np.stack([np.sum((x - mean) ** 2, axis=1) for mean in means], axis=1)  # [N, C]
    rows = np.arange(x.shape[0])
    own = counts[classes]
    with np.errstate(divide="ignore", invalid="ignore"):  # singletons: replaced just below
        own_distance = distances[rows, classes] * (own / (own - 1)) ** 2
    distances[rows, classes] = np.where(own > 1, own_distance, np.inf)
    return np.argmin(distances, axis=1) == classes


def _pca_scores(x, num_components) -> np.ndarray:
    """Coordinates [N, k] of float64 `x` on its top k = min(num_components, N, d) principal axes:
    centred, not whitened, as scikit-learn's PCA(k).fit_transform (up to each axis's sign)."""
    centred = x - x.mean(axis=0)
    n, d = centred.shape
    k = min(int(num_components), n, d)
    gram = centred @ centred.T if n <= d else centred.T @ centred
    # Only the top k eigenpairs (LAPACK's syevr on an index range): half the time of all of them.
    s, vectors = scipy.linalg.eigh(gram, subset_by_index=[gram.shape[0] - k, gram.shape[0] - 1])
    s, vectors = s[::-1], vectors[:, ::-1]
    if n <= d:
        return vectors * np.sqrt(np.maximum(s, 0.0))
    return centred @ vectors


def gbc_score(
    features, labels, *, pca_dim=GBC_PCA_DIM, gaussian="spherical", min_variance=GBC_MIN_VARIANCE
) -> float:
    """Gaussian Bhattacharyya coefficient (Pandy et al., CVPR 2022), in [-C (C - 1), 0]; 0 is best.

    On the top `pca_dim` principal components (None: all features) each class is a Gaussian with
    its mean mu and per-dimension population variance s, floored at `min_variance` (squared feature
    units) and, for `gaussian="spherical"` (the authors' default; or "diagonal"), averaged over
    dimensions. GBC = -sum over ordered class pairs of exp(-D_B), with the Bhattacharyya distance
    D_B = 1/8 sum_j (mu_1j - mu_2j)^2 / S_j + 1/2 sum_j [log S_j - (log s_1j + log s_2j) / 2],
    S_j = (s_1j + s_2j) / 2, its log term summed over every dimension as in the paper's equation
    (the authors' code adds it once for spherical Gaussians).

    Raises:
      ValueError: malformed features or labels, an unknown `gaussian` or a bad `pca_dim`.
    """
    if gaussian not in ("spherical", "diagonal"):
        raise ValueError(f"gaussian must be 'spherical' or 'diagonal'; got {gaussian!r}")
    if pca_dim is not None and (
        isinstance(pca_dim, bool) or not isinstance(pca_dim, (int, np.integer)) or pca_dim < 1
    ):
        raise ValueError(f"pca_dim must be a positive integer or None; got {pca_dim!r}")
    x, classes, num_classes = as_task_arrays(features, labels)
    if pca_dim is not None:
        x = _pca_scores(x, pca_dim)
    means = np.stack([x[classes == c].mean(axis=0) for c in range(num_classes)])
    variances = np.stack(
        [np.maximum(x[classes == c].var(axis=0), min_variance) for c in range(num_classes)]
    )
    if gaussian == "spherical":
        variances = np.repeat(variances.mean(axis=1, keepdims=True), x.shape[1], axis=1)
    log_var = np.log(variances)
    total = 0.0
    for a, b in itertools.permutations(range(num_classes), 2):
        average = (variances[a] + variances[b]) / 2
        distance = np.sum((means[a] - means[b]) ** 2 / average) / 8 + 0.5 * np.sum(
            np.log(average) - (log_var[a] + log_var[b]) / 2
        )
        total += np.exp(-distance)
    return float(-total)
