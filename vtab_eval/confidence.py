"""How sure a selection is: bootstrap intervals of accuracy-type scores and paired win chances.

A proxy with per-row hits (`knn`, `linear_loo`, `ncm`) scores the mean of N zeros and ones, so
resampling the task's images says how much it would move on another draw (Efron & Tibshirani 1993):
`accuracy_interval` is a seeded BCa interval of one expert's score, `paired_win_probability` the
exact paired bootstrap probability that one expert beats another, and `annotate` adds both, and
the `baseline` fallback, to a ranking dict (docs/selection.md, "Confidence").
"""

import dataclasses

import numpy as np
from scipy import stats

from bit_experts import bootstrap
from vtab_eval.selectors import base as selectors

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 9999
DEFAULT_FALLBACK_CONFIDENCE = 0.9  # of the baseline fallback
_BATCH = 1000  # resamples held in memory at once (each N floats)


def as_correctness(correct, name="correct") -> np.ndarray:
    """bool [N] from a 1-D array of booleans or 0/1 values; ValueError otherwise."""
    array = np.asarray(correct)
    if array.ndim != 1 or array.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 hits/misses; got {array.shape}")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number) or not np.all((array == 0) | (array == 1)):
            raise ValueError(f"{name} must hold booleans or 0/1 values")
        array = array.astype(bool)
    return array


def accuracy_interval(
    correct, *, confidence_level=DEFAULT_LEVEL, n_resamples=DEFAULT_RESAMPLES, seed=0
) -> tuple[float, float]:
    """(low, high) bootstrap interval of the mean of `correct`, fractions in [0, 1].

    scipy.stats.bootstrap's BCa (bias-corrected and accelerated) interval of bool or 0/1 [N] hits,
    at two-sided `confidence_level` in (0, 1), from `n_resamples` resamples drawn by
    numpy.random.default_rng(seed): the same on every machine. All hits (or all misses): that value
    at both ends. ValueError: malformed `correct`, or `confidence_level` outside (0, 1).
    """
    hits = as_correctness(correct).astype(np.float64)
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1); got {confidence_level!r}")
    if np.all(hits == hits[0]):
        return float(hits[0]), float(hits[0])
    return bootstrap.bca_interval(
        (hits,),
        np.mean,
        confidence_level=confidence_level,
        n_resamples=n_resamples,
        seed=seed,
        batch=_BATCH,
    )


@dataclasses.dataclass(frozen=True)
class WinProbability:
    """Paired bootstrap outcome of expert a against expert b: the probabilities that a's resampled
    score is strictly higher (`p_better`), equal (`p_tie`) or lower (`p_worse`); they sum to 1."""

    p_better: float
    p_tie: float
    p_worse: float


def paired_win_probability(correct_a, correct_b) -> WinProbability:
    """Exact paired bootstrap probability that expert a's accuracy beats expert b's.

    Resampling the N rows of bool or 0/1 [N] `correct_a`, `correct_b` jointly, the accuracies
    differ by (K_plus - K_minus) / N, K_plus counting rows a gets right and b wrong (probability
    p = n_plus / N per draw), K_minus the reverse (q = n_minus / N). K_plus ~ Binomial(N, p) and,
    given k, K_minus ~ Binomial(N - k, q / (1 - p)), so P(better) = sum_k P(K_plus = k)
    P(K_minus <= k - 1 | k), P(tie) likewise with = k: the limit of infinitely many resamples.
    ValueError: malformed inputs or different lengths.
    """
    a = as_correctness(correct_a, "correct_a")
    b = as_correctness(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have the same rows; got {a.size}, {b.size}")
    n = a.size
    n_plus = int(np.sum(a & ~b))
    n_minus = int(np.sum(~a & b))
    if n_plus == 0 and n_minus == 0:
        return WinProbability(0.0, 1.0, 0.0)
    if n_plus == n:
        return WinProbability(1.0, 0.0, 0.0)
    p = n_plus / n
    q = n_minus / (n - n_plus)
    k = np.arange(n + 1)
    weight = stats.binom.pmf(k, n, p)
    better = float(np.sum(weight * stats.binom.cdf(k - 1, n - k, q)))
    tie = float(np.sum(weight * stats.binom.pmf(k, n - k, q)))
    better, tie = min(max(better, 0.0), 1.0), min(max(tie, 0.0), 1.0)
    return WinProbability(better, tie, max(1.0 - better - tie, 0.0))


def _best_other(selection, other):
    """The best handle of `selection.scores` but `other`, or None when no other one is finite."""
    rest = {h: v for h, v in selection.scores.items() if h != other}
    try:
        return selectors.select_best(rest, selection.higher_is_better, selection.method).selected
    except ValueError:
        return None


def annotate(result, selection, correct, baseline, options):
    """Adds to a ranking dict what the per-image hits say (docs/selection.md, "Confidence" and
    "Fallback to the baseline"): per expert `ci_low`, `ci_high` (`accuracy_interval`), the run's
    `confidence`, `pairwise` (`paired_win_probability`) and, with options["fallback"] ==
    "baseline", `fallback` (B replaces `selected` when it fires). Without hits (`correct` None)
    intervals and `confidence` are null and `pairwise` empty.

    `selection`: the `selectors.SelectionResult` among the fine-tunable experts; `correct`: handle
    -> bool [N] hits of at least the scored experts, or None; `baseline`: B's handle, or None;
    `options`: checked `ranking.DEFAULTS` values. SelectorUnavailable: the fallback without B's score.
    """
    names = {info["handle"]: info["name"] for info in result["experts"]}
    level, resamples, seed = options["confidence_level"], options["n_resamples"], options["seed"]
    interval = dict(confidence_level=level, n_resamples=resamples, seed=seed)
    for info in result["experts"]:
        hits = None if correct is None else correct.get(info["handle"])
        low, high = (None, None) if hits is None else accuracy_interval(hits, **interval)
        info.update(ci_low=low, ci_high=high)
    result["confidence"], result["pairwise"], result["fallback"] = None, [], None
    if correct is not None:
        how = {"level": float(level), "n_resamples": int(resamples), "interval": "bca"}
        result["confidence"] = how | {"seed": int(seed), "pairwise": "exact paired bootstrap"}
        top = selection.selected
        pairs = [("top_vs_runner_up", top, _best_other(selection, top))]
        if baseline in selection.scores:
            pairs.append(("best_expert_vs_baseline", _best_other(selection, baseline), baseline))
        for pair, a, b in pairs:
            if a is not None and b is not None:
                win = paired_win_probability(correct[a], correct[b])
                names_ab = {"a": a, "a_name": names.get(a, a), "b": b, "b_name": names.get(b, b)}
                result["pairwise"].append({"pair": pair} | names_ab | dataclasses.asdict(win))
    if options["fallback"] != "baseline":
        return
    if baseline not in selection.scores:
        why = "the pool has no baseline module"
        if baseline:
            why = "B was left out or cannot be fine-tuned"
        raise selectors.SelectorUnavailable(
            f"fallback 'baseline' needs the baseline B's score, but {why}"
        )
    best, p_better, own = _best_other(selection, baseline), None, selection.selected
    fired = own != baseline and best is None
    if best is not None and own != baseline:
        p_better = paired_win_probability(correct[best], correct[baseline]).p_better
        fired = p_better < options["fallback_confidence"]
    policy = {"policy": "baseline", "confidence": float(options["fallback_confidence"])}
    result["fallback"] = policy | {"baseline": baseline, "best_expert": best, "p_better": p_better}
    result["fallback"].update(proxy_selected=own, fired=fired)
    if fired:
        result["selected"], result["selected_name"] = baseline, names.get(baseline, baseline)
