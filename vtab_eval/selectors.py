"""Expert selectors: score every expert for a new task, then pick one deterministically.

Each `*_scores` function maps expert handle -> score. `select_best` turns scores into a
`SelectionResult`: the best finite score wins, and ties go to the expert that comes first in the
scores dict, i.e. in collection order. docs/selection.md describes every score.
"""

import dataclasses
import math

import numpy as np

from vtab_eval import confidence, knn, proxies

# Probabilities are clipped to at least this before taking logs (domain prediction).
LOG_PROB_FLOOR = 1e-12
# Added to every upstream label's prior before renormalising (label matching), so an expert
# whose prior is 0 on a label the task shows gets a large but finite divergence.
PRIOR_EPSILON = 1e-6

# Selectors that score the experts' cached features (all higher-is-better), and among them those
# whose score is a mean of per-image hits, which gives it bootstrap intervals.
FEATURE_METHODS = ("knn", "logme", "linear_loo", "ncm", "gbc")
ROW_METHODS = ("knn", "linear_loo", "ncm")
FALLBACK_POLICIES = ("none", "baseline")
DEFAULT_FALLBACK_CONFIDENCE = 0.9


@dataclasses.dataclass(frozen=True)
class SelectionResult:
    """The outcome of one selection.

    Attributes:
      method: selector name, e.g. "knn".
      scores: expert handle -> score, in collection order.
      selected: handle of the chosen expert.
      higher_is_better: whether larger scores are better for this method.
      tie_broken: True when several experts shared the best score.
      tie_note: human-readable account of the tie-break; "" when there was no tie.
    """

    method: str
    scores: dict
    selected: str
    higher_is_better: bool
    tie_broken: bool
    tie_note: str


def select_best(
    scores: dict[str, float], higher_is_better: bool = True, method: str = "knn"
) -> SelectionResult:
    """Picks the expert with the best score.

    Non-finite scores (NaN, +-inf) never win. Ties (exactly equal best scores) go to the expert
    that comes first in `scores`' iteration order, which callers keep in collection order.

    Raises:
      ValueError: if `scores` is empty or no score is finite.
    """
    if not scores:
        raise ValueError(f"no experts to select from: scores for method {method!r} are empty")
    values = {}
    for handle, value in scores.items():
        try:
            values[handle] = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"score for expert {handle!r} is not a number: {value!r}") from err
    finite = {handle: value for handle, value in values.items() if math.isfinite(value)}
    if not finite:
        raise ValueError(f"no expert has a finite {method!r} score: {values}")
    best_value = max(finite.values()) if higher_is_better else min(finite.values())
    tied = [handle for handle, value in finite.items() if value == best_value]
    note = ""
    if len(tied) > 1:
        note = (
            f"{len(tied)} experts tied at {best_value:.6g}; picked the first in collection order: "
            + ", ".join(tied)
        )
    return SelectionResult(
        method=method,
        scores=values,
        selected=tied[0],
        higher_is_better=higher_is_better,
        tie_broken=len(tied) > 1,
        tie_note=note,
    )


def validate_task_labels(labels, num_classes: int | None = None) -> np.ndarray:
    """Checks a task's training labels and returns them as an int64 vector.

    Raises:
      ValueError: for anything but a 1-D vector of integer class ids with at least 2 images and
        at least 2 distinct classes, all in [0, num_classes) when `num_classes` is given.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"task labels must be a 1-D vector; got shape {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"task labels must cover at least 2 images; got {array.shape[0]}")
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"task labels must be integer class ids; got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError("task labels must be integer class ids; got non-integer values")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise ValueError(f"task labels must be non-negative; got minimum {array.min()}")
    if num_classes is not None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2; got {num_classes}")
        if array.max() >= num_classes:
            raise ValueError(
                f"task labels must be in [0, {num_classes}); got maximum {array.max()}"
            )
    distinct = np.unique(array)
    if distinct.size < 2:
        raise ValueError(
            f"task labels must contain at least 2 classes; all {array.size} are {distinct[0]}"
        )
    return array


def _check_rows(handle, features, labels: np.ndarray) -> None:
    """ValueError naming the expert unless `features` has one row per label."""
    num_rows = int(np.shape(features)[0]) if np.ndim(features) >= 1 else 0
    if num_rows != labels.shape[0]:
        raise ValueError(
            f"expert {handle!r} has features for {num_rows} images but there are "
            f"{labels.shape[0]} labels"
        )


def _per_expert(features_by_expert: dict, labels, function) -> dict:
    """handle -> function(features, labels), checking every expert has one row per label."""
    labels = validate_task_labels(labels)
    results = {}
    for handle, features in features_by_expert.items():
        _check_rows(handle, features, labels)
        try:
            results[handle] = function(features, labels)
        except ValueError as err:
            raise ValueError(f"expert {handle!r}: {err}") from err
    return results


def row_correctness(method: str, features_by_expert: dict, labels) -> dict[str, np.ndarray]:
    """Per-image hits of a row proxy (`ROW_METHODS`) for each expert.

    Args:
      method: "knn" (leave-one-out 1-NN, `knn.loo_1nn_correct`), "linear_loo" (exact
        leave-one-out ridge classifier, `proxies.ridge_loo`) or "ncm" (leave-one-out nearest
        class mean, `proxies.ncm_loo_correct`).
      features_by_expert: handle -> float [N, d] features of the task's images.
      labels: the task's integer labels [N].

    Returns:
      handle -> bool [N], in the order given; the expert's score is its mean.

    Raises:
      ValueError: unknown method, bad labels, mismatched sizes or malformed features.
    """
    functions = {
        "knn": knn.loo_1nn_correct,
        "linear_loo": proxies.linear_loo_correct,
        "ncm": proxies.ncm_loo_correct,
    }
    if method not in functions:
        raise ValueError(f"{method!r} has no per-row correctness; expected one of {ROW_METHODS}")
    return _per_expert(features_by_expert, labels, functions[method])


def linear_loo_scores(features_by_expert: dict, labels) -> dict[str, float]:
    """Exact leave-one-out accuracy of a ridge classifier on one-hot targets (`proxies.ridge_loo`).

    Same arguments as `knn_scores`; handle -> accuracy in [0, 1]; higher is better.
    """
    correct = row_correctness("linear_loo", features_by_expert, labels)
    return {handle: float(np.mean(hits)) for handle, hits in correct.items()}


def ncm_scores(features_by_expert: dict, labels) -> dict[str, float]:
    """Leave-one-out nearest-class-mean accuracy (`proxies.ncm_loo_correct`).

    Same arguments as `knn_scores`; handle -> accuracy in [0, 1]; higher is better.
    """
    correct = row_correctness("ncm", features_by_expert, labels)
    return {handle: float(np.mean(hits)) for handle, hits in correct.items()}


def logme_scores(features_by_expert: dict, labels) -> dict[str, float]:
    """LogME (You et al., ICML 2021; `proxies.logme`) of each expert's features.

    Same arguments as `knn_scores`; handle -> mean over classes of the maximised log evidence
    divided by N (nats per image); higher is better.
    """
    return _per_expert(features_by_expert, labels, proxies.logme_score)


def gbc_scores(features_by_expert: dict, labels) -> dict[str, float]:
    """Gaussian Bhattacharyya coefficient (Pandy et al., CVPR 2022; `proxies.gbc_score`).

    Same arguments as `knn_scores`; handle -> GBC in [-C(C-1), 0] on the top 64 principal
    components with spherical class Gaussians; higher is better.
    """
    return _per_expert(features_by_expert, labels, proxies.gbc_score)


def feature_scores(method: str, features_by_expert: dict, labels):
    """Scores of a feature proxy (`FEATURE_METHODS`), with per-image hits where it has them.

    Returns:
      (scores: handle -> float, correct: handle -> bool [N] for `ROW_METHODS`, else None).

    Raises:
      ValueError: unknown method, bad labels, mismatched sizes or malformed features.
    """
    if method in ROW_METHODS:
        correct = row_correctness(method, features_by_expert, labels)
        return {h: float(np.mean(hits)) for h, hits in correct.items()}, correct
    if method == "logme":
        return logme_scores(features_by_expert, labels), None
    if method == "gbc":
        return gbc_scores(features_by_expert, labels), None
    raise ValueError(f"unknown feature proxy {method!r}; expected one of {FEATURE_METHODS}")


@dataclasses.dataclass(frozen=True)
class FallbackDecision:
    """The outcome of the `baseline` fallback policy.

    Attributes:
      selected: the handle finally picked (the baseline when the policy fired).
      fired: True when the proxy's pick was replaced by the baseline.
      best_expert: the best-scoring candidate other than the baseline, or None if there is none.
      p_better: paired bootstrap probability that `best_expert` beats the baseline (None when
        the proxy already picked the baseline or there is no other candidate).
    """

    selected: str
    fired: bool
    best_expert: str | None
    p_better: float | None


def baseline_fallback(
    selection: SelectionResult,
    baseline: str,
    correct: dict,
    fallback_confidence: float = DEFAULT_FALLBACK_CONFIDENCE,
) -> FallbackDecision:
    """Keeps the proxy's pick only if it beats the baseline B with enough confidence.

    The best candidate other than B (by `selection.scores`) is kept when the paired bootstrap
    probability that its per-image correctness beats B's (`confidence.paired_win_probability`,
    strictly better, ties count against) is at least `fallback_confidence`; otherwise B is
    picked and the policy has fired. When the proxy itself picked B, B stays and it has not.

    Args:
      selection: the proxy's selection; its scores must include `baseline`.
      baseline: handle of B.
      correct: handle -> bool [N] per-image correctness for at least B and the best expert.
      fallback_confidence: required probability, in [0, 1].

    Raises:
      ValueError: `baseline` not among the scores, missing correctness, or a bad confidence.
    """
    if not 0 <= fallback_confidence <= 1:
        raise ValueError(f"fallback_confidence must be in [0, 1]; got {fallback_confidence!r}")
    if baseline not in selection.scores:
        raise ValueError(
            f"the baseline {baseline!r} was not ranked, so it cannot be fallen back on"
        )
    others = {h: v for h, v in selection.scores.items() if h != baseline}
    finite = {h: v for h, v in others.items() if math.isfinite(v)}
    if not finite:
        return FallbackDecision(baseline, selection.selected != baseline, None, None)
    best = select_best(finite, selection.higher_is_better, selection.method).selected
    if selection.selected == baseline:
        return FallbackDecision(baseline, False, best, None)
    for handle in (best, baseline):
        if handle not in correct:
            raise ValueError(f"no per-image correctness for {handle!r}; the fallback needs it")
    p_better = confidence.paired_win_probability(correct[best], correct[baseline]).p_better
    fired = p_better < fallback_confidence
    return FallbackDecision(baseline if fired else selection.selected, fired, best, p_better)


def knn_scores(features_by_expert: dict, labels, chunk_size: int = 1024) -> dict[str, float]:
    """Leave-one-out 1-NN accuracy of the task's labels in each expert's feature space.

    Args:
      features_by_expert: handle -> float [N, d] features of the task's images (d may differ
        between experts), in collection order.
      labels: the task's integer labels [N].
      chunk_size: passed to `knn.loo_1nn_accuracy`.

    Returns:
      handle -> accuracy in [0, 1]; higher is better.
    """
    labels = validate_task_labels(labels)
    scores = {}
    for handle, features in features_by_expert.items():
        _check_rows(handle, features, labels)
        scores[handle] = knn.loo_1nn_accuracy(features, labels, chunk_size=chunk_size)
    return scores


def _as_probabilities(array, name: str, ndim: int) -> np.ndarray:
    """float64 array of the given rank with finite values in [0, 1], or ValueError."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array; got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
        raise ValueError(f"{name} must hold finite probabilities in [0, 1]")
    return array


def domain_prediction_scores(epn_probs, expert_names: list[str]) -> dict[str, float]:
    """Scores experts by the expert prediction network's (EPN) belief that the task is theirs.

    Args:
      epn_probs: [N, E] probabilities the EPN assigns to each of E experts for each task image.
      expert_names: the E handles, in the EPN's column order.

    Returns:
      handle -> mean over images of log(max(p, LOG_PROB_FLOOR)), i.e. the log of the geometric
      mean probability; higher is better.
    """
    probs = _as_probabilities(epn_probs, "epn_probs", ndim=2)
    names = list(expert_names)
    if len(set(names)) != len(names):
        raise ValueError(f"expert_names must be unique; got {names}")
    if probs.shape[1] != len(names):
        raise ValueError(
            f"epn_probs has {probs.shape[1]} expert columns but {len(names)} expert names were given"
        )
    mean_log = np.mean(np.log(np.maximum(probs, LOG_PROB_FLOOR)), axis=0)
    return {name: float(value) for name, value in zip(names, mean_log)}


def _normalise(distribution: np.ndarray, name: str) -> np.ndarray:
    total = distribution.sum()
    if total <= 0:
        raise ValueError(f"{name} sums to 0; it must put mass on at least one label")
    return distribution / total


def label_matching_scores(upstream_probs, expert_priors: dict) -> dict[str, float]:
    """Scores experts by how well their upstream label prior matches the task's predicted labels.

    Args:
      upstream_probs: [N, L] upstream-label probabilities the baseline's classifier predicts on
        the task's images (multi-label sigmoid outputs: rows need not sum to 1).
      expert_priors: handle -> [L] non-negative weights of each upstream label in the expert's
        training slice (counts or frequencies), in collection order.

    Returns:
      handle -> KL(task || expert) in nats, where task = mean of the rows of `upstream_probs`
      normalised to sum to 1, and expert = (prior / sum(prior) + PRIOR_EPSILON) renormalised.
      Labels the task never predicts contribute 0. Smaller is better.
    """
    probs = _as_probabilities(upstream_probs, "upstream_probs", ndim=2)
    task = _normalise(probs.mean(axis=0), "the mean of upstream_probs")
    if not expert_priors:
        raise ValueError("expert_priors is empty")
    support = task > 0
    scores = {}
    for handle, prior in expert_priors.items():
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != task.shape:
            raise ValueError(
                f"label prior of expert {handle!r} has shape {prior.shape}; "
                f"expected ({task.shape[0]},) to match upstream_probs"
            )
        if not np.all(np.isfinite(prior)) or prior.min() < 0:
            raise ValueError(f"label prior of expert {handle!r} must be finite and non-negative")
        expert = _normalise(
            _normalise(prior, f"label prior of expert {handle!r}") + PRIOR_EPSILON, "smoothed prior"
        )
        kl = np.sum(task[support] * (np.log(task[support]) - np.log(expert[support])))
        scores[handle] = float(kl)
    return scores


def random_scores(expert_names: list[str], seed: int) -> dict[str, float]:
    """Uniform [0, 1) scores from a seeded generator: the random-selection baseline.

    The same names and seed always give the same scores; higher wins.
    """
    names = list(expert_names)
    if not names:
        raise ValueError("expert_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"expert_names must be unique; got {names}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    values = np.random.default_rng(int(seed)).random(len(names))
    return {name: float(value) for name, value in zip(names, values)}


# --- Temporary registry face for the new engine (replaced by the selectors package). ---
def names(kind=None):
    """Registered selector names (kind "feature": the feature proxies)."""
    if kind == "feature":
        return list(FEATURE_METHODS)
    from vtab_eval import ranking

    return [*ranking.METHODS, "hindsight"]


def get(name):
    import types

    return types.SimpleNamespace(name=name, rows=name in ROW_METHODS)
