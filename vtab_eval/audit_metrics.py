"""The selection audit's metrics: regret against hindsight, hit rate, rank agreement, intervals.

Pure functions of an *accuracy table* `{candidate: [accuracy per seed]}` (fractions in [0, 1]; every
candidate fine-tuned with the same seeds, in the same order). The hindsight best is the candidate
with the highest mean accuracy over seeds; a policy's *pick* is one candidate.

- `regret`: hindsight best mean minus the pick's mean, in points (percentage points). With noisy
  fine-tunes the best of many candidates is partly the luckiest (winner's curse), so this is biased
  upwards; `split_half_regret` chooses hindsight on half of the seeds and scores it and the pick on
  the other half, averaged over every such split, which removes that bias (it can be negative).
- `random_regret`: the exact expected regret (and split-half regret) of a uniform pick.
- `agnostic_picks`: the dataset-agnostic pick of every task of a bank, leave one task out.
- `weighted_tau`: weighted Kendall tau (`scipy.stats.weightedtau`) of proxy scores and accuracies.
- `mean_interval`: a mean over tasks with a seeded bootstrap interval (`scipy.stats.bootstrap`).

The audit (`vtab_eval.audit`, issue 11) and docs/selection.md ("Audit") use them.
"""

import itertools
import math

import numpy as np
from scipy import stats

from bit_experts import bootstrap

POINTS = 100.0  # accuracy fractions -> percentage points
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
# Two means closer than this (fractions) are a tie. Accuracies are ratios of image counts, so means
# that are equal in exact arithmetic can differ by a few float64 ulps (~1e-16) when the seeds'
# counts are summed in another order, while one test image moves a mean by at least
# 1 / (seeds x test images), above 3e-7 for up to a million test images.
TIE_TOLERANCE = 1e-9


def check_table(acc):
    """The accuracy table as {candidate: float64 [n]}; ValueError naming the problem.

    Every candidate needs the same number n >= 1 of finite accuracies (one per seed).
    """
    if not isinstance(acc, dict) or not acc:
        raise ValueError(f"the accuracy table must be a non-empty dict; got {acc!r}")
    table = {}
    for name, values in acc.items():
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError(
                f"accuracies of {name!r} must be a non-empty list of finite numbers; got {values!r}"
            )
        table[name] = array
    sizes = {v.size for v in table.values()}
    if len(sizes) != 1:
        raise ValueError(f"every candidate needs one accuracy per seed; got counts {sorted(sizes)}")
    return table


def _pick(table, pick):
    if pick not in table:
        raise ValueError(f"pick {pick!r} is not a candidate; expected one of {list(table)}")
    return table[pick]


def means(acc):
    """{candidate: mean accuracy over seeds}."""
    return {c: float(np.mean(v)) for c, v in check_table(acc).items()}


def _tied_top(values):
    """The keys of `values` within TIE_TOLERANCE of its maximum, in order."""
    top = max(values.values())
    return [c for c, v in values.items() if v >= top - TIE_TOLERANCE]


def hindsight_best(acc):
    """The candidates with the highest mean accuracy (several on a tie: within TIE_TOLERANCE), in
    table order."""
    return _tied_top(means(acc))


def regret(acc, pick):
    """Points between the hindsight best's mean accuracy and the pick's (>= 0; 0 for a tie)."""
    table = check_table(acc)
    best = max(float(np.mean(v)) for v in table.values())
    gap = best - float(np.mean(_pick(table, pick)))
    return 0.0 if gap <= TIE_TOLERANCE else POINTS * gap


def hit(acc, pick):
    """Whether the pick is a hindsight best (ties count as hits)."""
    check_table(acc)
    return pick in hindsight_best(acc)


def seed_splits(n):
    """Every split of seed indices 0..n-1 into (choose, score), both non-empty and as equal as n
    allows (|choose| = n // 2 or (n + 1) // 2); [] for n < 2."""
    if n < 2:
        return []
    sizes = sorted({n // 2, (n + 1) // 2})
    splits = []
    for size in sizes:
        for choose in itertools.combinations(range(n), size):
            score = tuple(i for i in range(n) if i not in choose)
            splits.append((choose, score))
    return splits


def split_half_regret(acc, pick):
    """Regret with hindsight chosen on half of the seeds and scored on the other half, in points.

    For every split of `seed_splits(n)`: the hindsight best on the choosing seeds (the mean over
    its ties), minus the pick, both as mean accuracy on the scoring seeds. Returns the mean over
    splits, or None with fewer than 2 seeds. Unbiased by the winner's curse, so it can be < 0.
    """
    table = check_table(acc)
    chosen = _pick(table, pick)
    n = chosen.size
    splits = seed_splits(n)
    if not splits:
        return None
    total = 0.0
    for choose, score in splits:
        choose, score = list(choose), list(score)
        on_choose = {c: float(np.mean(v[choose])) for c, v in table.items()}
        best = _tied_top(on_choose)
        best_score = float(np.mean([np.mean(table[c][score]) for c in best]))
        total += best_score - float(np.mean(chosen[score]))
    return POINTS * total / len(splits)


def random_regret(acc):
    """Exact expected (regret, split-half regret) of a pick drawn uniformly from the candidates.

    The split-half value is None with fewer than 2 seeds.
    """
    table = check_table(acc)
    full = float(np.mean([regret(table, c) for c in table]))
    halves = [split_half_regret(table, c) for c in table]
    return full, (None if halves[0] is None else float(np.mean(halves)))


def agnostic_picks(tables):
    """The dataset-agnostic pick of every task, leaving the task itself out.

    Args:
      tables: {task: accuracy table}; every task must have the same candidates.

    Returns:
      {task: the candidate with the best mean, over the *other* tasks, of its mean accuracy (ties:
      first in the first task's candidate order)}, or {task: None} for a bank of one task.
    """
    if not tables:
        return {}
    means_by_task = {t: means(acc) for t, acc in tables.items()}
    order = list(next(iter(means_by_task.values())))
    for task, mean in means_by_task.items():
        if set(mean) != set(order):
            raise ValueError(
                f"task {task!r} has other candidates than the first task: {list(mean)}"
            )
    picks = {}
    for task in tables:
        others = [m for t, m in means_by_task.items() if t != task]
        if not others:
            picks[task] = None
            continue
        overall = {c: float(np.mean([m[c] for m in others])) for c in order}
        picks[task] = _tied_top(overall)[0]
    return picks


def weighted_tau(scores, acc, higher_is_better=True):
    """Weighted Kendall tau (`scipy.stats.weightedtau`, hyperbolic weights, rank=True) between the
    proxy's scores and the candidates' mean accuracies, over candidates with a finite score.

    Returns a float in [-1, 1], or None with fewer than 2 such candidates or when either side is
    constant (tau is undefined).
    """
    mean = means(acc)
    names = [c for c in mean if c in scores and scores[c] is not None and math.isfinite(scores[c])]
    if len(names) < 2:
        return None
    x = np.array([scores[c] for c in names], dtype=np.float64) * (1 if higher_is_better else -1)
    y = np.array([mean[c] for c in names], dtype=np.float64)
    if np.all(x == x[0]) or np.all(y == y[0]):
        return None
    tau = stats.weightedtau(x, y).statistic
    return float(tau) if math.isfinite(tau) else None


def mean_interval(
    values,
    *,
    confidence_level=CONFIDENCE_LEVEL,
    n_resamples=BOOTSTRAP_RESAMPLES,
    seed=BOOTSTRAP_SEED,
):
    """The mean of `values` (None entries dropped) with a bootstrap interval over them.

    `scipy.stats.bootstrap` (BCa, `numpy.random.default_rng(seed)`), falling back to the
    percentile interval where BCa is undefined. Returns {"mean", "ci_low", "ci_high", "n"}: all
    None for no values, the interval None for one value (nothing to resample), and the value
    itself when every value is equal.
    """
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    out = {"mean": None, "ci_low": None, "ci_high": None, "n": int(array.size)}
    if array.size == 0:
        return out
    out["mean"] = float(np.mean(array))
    if array.size == 1:
        return out
    if np.all(array == array[0]):
        out["ci_low"] = out["ci_high"] = float(array[0])
        return out
    out["ci_low"], out["ci_high"] = bootstrap.bca_interval(
        (array,), np.mean, confidence_level=confidence_level, n_resamples=n_resamples, seed=seed
    )
    return out


def sample_sd(values):
    """Sample standard deviation (ddof=1) in the values' unit; None for fewer than 2 values."""
    array = np.asarray(values, dtype=np.float64)
    return float(np.std(array, ddof=1)) if array.size >= 2 else None


def pooled_sd(sds):
    """Root mean square of per-task standard deviations (None entries dropped), or None."""
    array = np.asarray([s for s in sds if s is not None], dtype=np.float64)
    return float(np.sqrt(np.mean(array**2))) if array.size else None
