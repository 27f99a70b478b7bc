"""How sure a selection is: bootstrap intervals of accuracy-type scores and paired win chances.

A proxy with per-row correctness (`knn`, `linear_loo`, `ncm`: one hit or miss per task image) has
a score that is a mean of N zeros and ones, so resampling the task's images says how much the
score would move on another draw of N images from the same task (Efron & Tibshirani 1993).

- `accuracy_interval`: a bootstrap confidence interval of one expert's score, computed by
  `scipy.stats.bootstrap` (BCa, seeded).
- `paired_win_probability`: the paired bootstrap probability that expert a scores higher than
  expert b when the same rows are resampled for both. The score difference on a resample only
  depends on how many rows of each kind it holds (a right and b wrong, a wrong and b right, the
  rest), and those counts are trinomial, so the probability is computed exactly from binomial
  distributions (`scipy.stats.binom`), i.e. as the limit of infinitely many resamples: it has no
  Monte Carlo error and needs no seed. (scipy.stats.bootstrap returns intervals, not this
  probability.)
- `annotate`: both, added to a ranking dict (`vtab_eval.ranking.rank`), and the `baseline`
  fallback: keep a pick only if it beats the baseline B with enough confidence.
"""

import dataclasses

import numpy as np
from scipy import stats

from bit_experts import bootstrap
from vtab_eval.selectors import base as selectors

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 9999
DEFAULT_FALLBACK_CONFIDENCE = 0.9  # of the baseline fallback
# Resamples scipy.stats.bootstrap holds in memory at once (each N floats).
_BATCH = 1000


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
    """Bootstrap confidence interval of the mean of per-row correctness.

    Args:
      correct: bool or 0/1 [N], one entry per task image.
      confidence_level: two-sided coverage, in (0, 1).
      n_resamples: bootstrap resamples.
      seed: seed of the resampling (numpy.random.default_rng); the same inputs and seed give the
        same interval on every machine.

    Returns:
      (low, high), fractions in [0, 1], from scipy.stats.bootstrap with the bias-corrected and
      accelerated (BCa) method. When every row is a hit (or every row a miss) each resample has
      the same mean, and the interval is that value at both ends.

    Raises:
      ValueError: malformed `correct`, or `confidence_level` outside (0, 1).
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
    """Paired bootstrap outcome of expert a against expert b (the three sum to 1).

    Attributes:
      p_better: probability that a's resampled score is strictly higher than b's.
      p_tie: probability that they are equal.
      p_worse: probability that a's is strictly lower.
    """

    p_better: float
    p_tie: float
    p_worse: float


def paired_win_probability(correct_a, correct_b) -> WinProbability:
    """Exact paired bootstrap probability that expert a's accuracy beats expert b's.

    Resampling N rows with replacement, jointly for both experts, the difference of the two
    accuracies is (K_plus - K_minus) / N, where K_plus counts resampled rows that a gets right
    and b wrong (probability p = n_plus / N per draw) and K_minus the reverse (q = n_minus / N).
    K_plus ~ Binomial(N, p) and, given K_plus = k, K_minus ~ Binomial(N - k, q / (1 - p)), so
    P(better) = sum_k P(K_plus = k) P(K_minus <= k - 1 | k), and P(tie) likewise with = k.

    Args:
      correct_a, correct_b: bool or 0/1 [N] per-row correctness on the same rows.

    Returns:
      WinProbability.

    Raises:
      ValueError: malformed inputs or different lengths.
    """
    a = as_correctness(correct_a, "correct_a")
    b = as_correctness(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(
            f"correct_a and correct_b must cover the same rows; got {a.size}, {b.size}"
        )
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
    """Adds to a ranking dict (docs/evaluation.md) what the per-image hits say about it.

    - per expert `ci_low`, `ci_high`: `accuracy_interval` of its hits; `confidence`: how.
    - `pairwise`: `paired_win_probability` of the top pick against the runner-up and, when B is
      ranked, of the best other candidate against B.
    - `fallback`, with options["fallback"] == "baseline": the best candidate other than B is kept
      when the probability that its hits beat B's (strictly better, ties count against) is at
      least options["fallback_confidence"]; otherwise B replaces `selected` and the policy has
      "fired". When the proxy itself picked B, B stays and it has not. Keys: "policy",
      "confidence", "baseline", "best_expert" (None if there is no other candidate),
      "p_better" (None when the proxy picked B or there is no other), "proxy_selected", "fired".
    Without hits (`correct` is None) the intervals and `confidence` are null and `pairwise` empty.

    Args:
      result: the ranking dict, with "experts" ("handle", "name") and "selected".
      selection: the `selectors.SelectionResult` among the fine-tunable experts.
      correct: handle -> bool [N] per-image hits of at least the scored experts, or None.
      baseline: B's handle, or None (the pool has none, or B is not ranked).
      options: `vtab_eval.ranking.DEFAULTS` keys (checked): confidence_level, n_resamples, seed,
        fallback, fallback_confidence.

    Raises:
      SelectorUnavailable: the fallback without B's score.
    """
    names = {info["handle"]: info["name"] for info in result["experts"]}
    level, resamples, seed = options["confidence_level"], options["n_resamples"], options["seed"]
    for info in result["experts"]:
        hits = None if correct is None else correct.get(info["handle"])
        low, high = None, None
        if hits is not None:
            low, high = accuracy_interval(
                hits, confidence_level=level, n_resamples=resamples, seed=seed
            )
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
        why = (
            "B was left out or cannot be fine-tuned"
            if baseline
            else "the pool has no baseline module"
        )
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
