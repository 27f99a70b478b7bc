"""Transferability proxies on cached features: LogME, leave-one-out ridge and NCM, and GBC.

Every proxy reads one expert's features of a task's images, float [N, d] (N images, d feature
dimensions), and the task's integer labels [N], exactly as the feature cache holds them, so none
needs a forward pass beyond the ones the `knn` selector already makes. All arithmetic is float64
(the features are small: 1000 x 2048 x 8 bytes = 16 MB). Labels are class ids; classes absent from
the images are ignored (C below counts the classes present). Every function raises ValueError, with
one line naming the problem, for features that are not a finite 2-D numeric array with at least 2
rows and 1 column, or labels that are not N integer ids covering at least 2 classes.

| proxy | returns | source |
|---|---|---|
| `logme` | mean over classes of the maximised log evidence / N (nats per image) | You et al., ICML 2021 |
| `linear_loo` | per-row correctness of an exact leave-one-out ridge classifier | Allen 1974 (PRESS); Rifkin & Lippert 2007 |
| `ncm` | per-row correctness of leave-one-out nearest class mean | Mensink et al., TPAMI 2013 |
| `gbc` | Gaussian Bhattacharyya coefficient, <= 0 | Pandy et al., CVPR 2022 |

docs/selection.md explains each in full, with the choices where the papers leave one open.
"""

import dataclasses

import numpy as np
import scipy.linalg

# LogME's fixed-point iteration stops when t = alpha / beta changes by at most this, relatively,
# for every class. The iteration converges linearly, often in 40 to 150 steps to this tolerance
# (the reference implementation stops at 1e-3, after at most 11 steps); a step costs O(r C) once
# the eigendecomposition is done, so even the cap costs milliseconds.
LOGME_TOLERANCE = 1e-10
LOGME_MAX_ITERATIONS = 1000
# Ridge penalties linear_loo chooses from, as multiples of the mean non-zero eigenvalue of the
# centred Gram matrix (i.e. of the features' scale): 10^-6 ... 10^3 in half decades.
RIDGE_GRID = tuple(10.0 ** (k / 2) for k in range(-12, 7))
# GBC: principal components kept, and the floor on a per-dimension class variance (both as in
# the authors' implementation, google-research/stable_transfer).
GBC_PCA_DIM = 64
GBC_MIN_VARIANCE = 1e-4


def as_task_arrays(features, labels):
    """Checks one expert's features and the task's labels.

    Returns:
      (features float64 [N, d], classes int64 [N] in [0, C), C).

    Raises:
      ValueError: see the module docstring.
    """
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"features must be a numeric [N, d] array; got {type(features)}") from err
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D [N, d] array; got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"features need at least 2 rows and 1 column; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinite values")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must be a 1-D array with one label per feature row ({x.shape[0]}); "
            f"got shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids; got dtype {y.dtype}")
    present, classes = np.unique(y, return_inverse=True)
    if present.size < 2:
        raise ValueError(f"labels must contain at least 2 classes; all {y.size} are {present[0]}")
    return x, classes.astype(np.int64), int(present.size)


def _one_hot(classes, num_classes):
    return np.eye(num_classes, dtype=np.float64)[classes]


def _gram_eigen(x):
    """Non-zero spectrum of x: (s [r] eigenvalues of x x^T, u [N, r] orthonormal, r = rank).

    Uses the smaller Gram matrix (x x^T or x^T x) and numpy's symmetric eigensolver. Eigenvalues
    at most s_max * max(N, d) * eps count as zero (numpy.linalg.matrix_rank's rule).
    """
    n, d = x.shape
    if n <= d:
        s, u = np.linalg.eigh(x @ x.T)
    else:
        s, v = np.linalg.eigh(x.T @ x)
    keep = s > max(s.max(), 0.0) * max(n, d) * np.finfo(np.float64).eps
    s = s[keep]
    u = u[:, keep] if n <= d else (x @ v[:, keep]) / np.sqrt(s)
    return s, u


# ---------------------------------------------------------------------------------------------
# LogME


@dataclasses.dataclass(frozen=True)
class LogMEResult:
    """LogME of one expert on one task.

    Attributes:
      score: mean over classes of `evidence`, in nats per image; higher is better.
      evidence: [C] maximised log evidence of each class's one-hot target, divided by N.
      alpha: [C] prior precision of the weights at the maximum.
      beta: [C] noise precision at the maximum.
      iterations: fixed-point steps taken.
    """

    score: float
    evidence: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    iterations: int


def logme(features, labels, *, tolerance=LOGME_TOLERANCE, max_iterations=LOGME_MAX_ITERATIONS):
    """LogME: the evidence of a Bayesian linear model on the features (You et al., ICML 2021).

    For each class c, the one-hot target y [N] is modelled as y = F w + noise with
    w ~ N(0, I / alpha) [d] and noise ~ N(0, I / beta) [N], F = the raw features [N, d] (no
    centring, as in the paper). The log evidence

      L(alpha, beta) = log N(y; 0, I / beta + F F^T / alpha)
        = N/2 log beta - 1/2 sum_i log(1 + s_i beta / alpha) - beta/2 |y - F m|^2
          - alpha/2 |m|^2 - N/2 log(2 pi),

    with s_i the non-zero eigenvalues of F F^T and m = beta (alpha I + beta F^T F)^-1 F^T y the
    posterior mean, is maximised over alpha, beta by the paper's fixed-point iteration (MacKay):
    gamma = sum_i s_i / (s_i + alpha / beta), alpha <- gamma / |m|^2, beta <- (N - gamma) /
    |y - F m|^2, starting at alpha = beta = 1, until t = alpha / beta changes by at most
    `tolerance` (relative). One eigendecomposition serves every class and step.

    Differences from the reference code (github.com/thuml/LogME, `LogME._fit_fixed_point`):
    it stops at a relative change of 1e-3 after at most 11 steps, which leaves L below its
    maximum; and for N < d it adds d/2 log alpha while summing log(alpha + beta s_i) over only
    N eigenvalues, i.e. it omits the (d - N)/2 log alpha of the zero eigenvalues. Here L is the
    exact Gaussian marginal likelihood for every N and d (it equals the reference whenever
    N >= d and F has full rank). Squared norms are floored at 1e-12 of |y|^2 (times 1/s_max for
    |m|^2) so that an exact fit or a target orthogonal to the features gives a large but finite
    precision instead of a division by zero.

    Args:
      features: [N, d] features of the task's images.
      labels: [N] integer class ids.
      tolerance, max_iterations: the fixed point's stopping rule.

    Returns:
      LogMEResult; `score` is the paper's LogME: the mean over classes of L / N.

    Raises:
      ValueError: malformed features or labels (module docstring).
    """
    x, classes, num_classes = as_task_arrays(features, labels)
    n = x.shape[0]
    s, u = _gram_eigen(x)
    if s.size == 0:
        raise ValueError("features are all zero; LogME needs at least one non-zero feature")
    targets = _one_hot(classes, num_classes)  # [N, C]
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

    alpha = np.ones(num_classes)
    beta = np.ones(num_classes)
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


# ---------------------------------------------------------------------------------------------
# Leave-one-out ridge classifier


@dataclasses.dataclass(frozen=True)
class RidgeLOO:
    """Exact leave-one-out ridge classification of one expert's features.

    Attributes:
      correct: bool [N]; row i is correct when the model fitted without row i ranks its class
        first (argmax over the C one-hot outputs; ties go to the lowest class).
      predictions: float [N, C] leave-one-out outputs: row i's, by the model fitted without it.
      l2: the ridge penalty used, in squared feature units.
      press: [len(penalties)] leave-one-out squared error summed over rows and classes, per
        penalty tried (one entry when `l2` was given).
    """

    correct: np.ndarray
    predictions: np.ndarray
    l2: float
    press: np.ndarray


def ridge_loo(features, labels, l2=None) -> RidgeLOO:
    """Leave-one-out ridge regression onto one-hot targets, in closed form.

    The model is Y ~ 1 b^T + F W with an unpenalised intercept b [C] and weights W [d, C],
    minimising |Y - 1 b^T - F W|^2 + l2 |W|^2. Its fitted values are H Y with the hat matrix
    H = 11^T / N + U diag(s / (s + l2)) U^T, where F - mean(F) = U diag(sqrt(s)) V^T. Because
    the fit is a penalised least squares, leaving row i out (and refitting) predicts
    y_i - e_i / (1 - H_ii) for it, e_i = y_i - (H Y)_i being the full fit's residual (Allen's
    PRESS identity, as used by Rifkin & Lippert 2007 and scikit-learn's RidgeCV): no refitting.
    1 - H_ii is computed as the leverage outside U's span plus sum_j U_ij^2 l2 / (s_j + l2), with
    no cancellation.

    Args:
      features: [N, d] features.
      labels: [N] integer class ids.
      l2: ridge penalty (> 0). None: the penalty of `RIDGE_GRID` (times the mean non-zero
        eigenvalue of the centred Gram matrix) with the smallest leave-one-out squared error
        (PRESS) on the one-hot targets, the first on ties; the squared error, not the accuracy,
        decides, as in scikit-learn's RidgeClassifierCV.

    Returns:
      RidgeLOO.

    Raises:
      ValueError: malformed features or labels, or `l2` not a positive finite number.
    """
    x, classes, num_classes = as_task_arrays(features, labels)
    n = x.shape[0]
    targets = _one_hot(classes, num_classes)
    centred = x - x.mean(axis=0)
    mean_target = targets.mean(axis=0)
    s, u = _gram_eigen(centred) if np.any(centred) else (np.zeros(0), np.zeros((n, 0)))
    if l2 is None:
        scale = float(s.mean()) if s.size else 1.0
        penalties = [scale * factor for factor in RIDGE_GRID]
    else:
        if isinstance(l2, bool) or not np.isfinite(l2) or l2 <= 0:
            raise ValueError(f"l2 must be a positive finite number; got {l2!r}")
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


# ---------------------------------------------------------------------------------------------
# Leave-one-out nearest class mean


def ncm_loo_correct(features, labels) -> np.ndarray:
    """Leave-one-out nearest-class-mean classification (Mensink et al., TPAMI 2013).

    Row i is assigned to the class whose mean, over the other rows, is nearest in Euclidean
    distance: its own class's mean is taken without it, mu_c^-i = (n_c mu_c - x_i) / (n_c - 1),
    so its distance is (n_c / (n_c - 1)) |x_i - mu_c| exactly; the other classes' means are
    unchanged. A row alone in its class has no class mean left and counts as wrong. Ties go to
    the lowest class id.

    Args:
      features: [N, d] features.
      labels: [N] integer class ids.

    Returns:
      bool [N], True where the nearest leave-one-out class mean is the row's own class.

    Raises:
      ValueError: malformed features or labels.
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


# ---------------------------------------------------------------------------------------------
# GBC


def pca_scores(features, num_components) -> np.ndarray:
    """The features' coordinates [N, k] on their top k = min(num_components, N, d) principal axes.

    Centred, not whitened, as scikit-learn's PCA(k).fit_transform (up to each axis's sign).
    """
    x = np.asarray(features, dtype=np.float64)
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
    features,
    labels,
    *,
    pca_dim=GBC_PCA_DIM,
    gaussian="spherical",
    min_variance=GBC_MIN_VARIANCE,
) -> float:
    """Gaussian Bhattacharyya coefficient (Pandy et al., CVPR 2022): class overlap, <= 0.

    The features are reduced to their top `pca_dim` principal components (the authors' setting;
    None keeps them). Each class c is a Gaussian with the class mean mu_c and, per dimension,
    the class variance (population, ddof=0) floored at `min_variance`: `gaussian="diagonal"`
    keeps the k variances, `"spherical"` (the authors' default) uses their mean sigma_c for
    every dimension. For every ordered pair of distinct classes,

      D_B = 1/8 sum_j (mu_1j - mu_2j)^2 / S_j + 1/2 sum_j [log S_j - (log s_1j + log s_2j) / 2],
      S_j = (s_1j + s_2j) / 2,

    the Bhattacharyya distance of the two Gaussians (the paper's equation with diagonal
    covariances), and GBC = -sum over ordered pairs of exp(-D_B). 0 means well-separated
    classes; higher is better. For the spherical case the log-determinant term sums over all k
    dimensions, as the paper's equation says; the authors' code adds it once (it treats the
    spherical variance as a scalar), which we do not follow.

    Args:
      features: [N, d] features.
      labels: [N] integer class ids.
      pca_dim: principal components kept (positive integer), or None for no reduction.
      gaussian: "spherical" or "diagonal".
      min_variance: floor on each class variance, in squared feature units.

    Returns:
      GBC, a float in [-C (C - 1), 0].

    Raises:
      ValueError: malformed features or labels, or an unknown `gaussian` / bad `pca_dim`.
    """
    if gaussian not in ("spherical", "diagonal"):
        raise ValueError(f"gaussian must be 'spherical' or 'diagonal'; got {gaussian!r}")
    if pca_dim is not None and (
        isinstance(pca_dim, bool) or not isinstance(pca_dim, (int, np.integer)) or pca_dim < 1
    ):
        raise ValueError(f"pca_dim must be a positive integer or None; got {pca_dim!r}")
    x, classes, num_classes = as_task_arrays(features, labels)
    if pca_dim is not None:
        x = pca_scores(x, pca_dim)
    dim = x.shape[1]
    means = np.stack([x[classes == c].mean(axis=0) for c in range(num_classes)])
    variances = np.stack(
        [np.maximum(x[classes == c].var(axis=0), min_variance) for c in range(num_classes)]
    )
    if gaussian == "spherical":
        variances = np.repeat(variances.mean(axis=1, keepdims=True), dim, axis=1)
    log_var = np.log(variances)
    total = 0.0
    for a in range(num_classes):
        for b in range(num_classes):
            if a == b:
                continue
            average = (variances[a] + variances[b]) / 2
            distance = np.sum((means[a] - means[b]) ** 2 / average) / 8 + 0.5 * np.sum(
                np.log(average) - (log_var[a] + log_var[b]) / 2
            )
            total += np.exp(-distance)
    return float(-total)
