"""The selection audit's metrics (docs/selection.md, "Audit"), pure functions of an *accuracy
table* `{candidate: [accuracy per seed]}`: fractions in [0, 1], every candidate fine-tuned with
the same seeds in the same order. The hindsight best has the highest mean over seeds; regrets
are in points (percentage points). A pick is a candidate, or a list of one per seed (a policy
whose choice depends on the seed): then seed i scores its own pick's accuracy on seed i.
"""

import itertools
import math

import numpy as np

from bit_experts import bootstrap
from vtab_eval.protocol import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE_LEVEL

POINTS = 100.0  # accuracy fractions -> percentage points
# Two means closer than this (fractions) are a tie: equal image counts summed in another order
# differ by float64 ulps (~1e-16), one test image by 1 / (seeds x test images) > 3e-7 (up to 1e6).
TIE_TOLERANCE = 1e-9


def check_table(acc):
    """The accuracy table as {candidate: float64 [n]}: the same n >= 1 finite accuracies for every
    candidate, or ValueError naming the problem."""
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


def means(acc):
    """{candidate: mean accuracy over seeds}."""
    return {c: float(np.mean(v)) for c, v in check_table(acc).items()}


def _tied_top(values):
    """The keys of `values` within TIE_TOLERANCE of its maximum, in order."""
    top = max(values.values())
    return [c for c, v in values.items() if v >= top - TIE_TOLERANCE]


def hindsight_best(acc):
    """The candidates with the highest mean accuracy (ties within TIE_TOLERANCE), in table order."""
    return _tied_top(means(acc))


def _picks(table, pick):
    """The pick as one candidate per seed; ValueError for a non-candidate or a wrong count."""
    n = next(iter(table.values())).size
    picks = [pick] * n if isinstance(pick, str) else list(pick)
    for p in picks:
        if p not in table:
            raise ValueError(f"pick {p!r} is not a candidate; expected one of {list(table)}")
    if len(picks) != n:
        raise ValueError(f"a pick per seed needs {n} picks; got {len(picks)}: {picks}")
    return picks


def pick_accuracies(acc, pick):
    """float64 [n]: per seed the accuracy of that seed's pick."""
    table = check_table(acc)
    return np.array([table[p][i] for i, p in enumerate(_picks(table, pick))])


def regret(acc, pick):
    """Points between the hindsight best's mean accuracy and the pick's (>= 0; 0 for a tie);
    biased upwards by the winner's curse with noisy fine-tunes, unlike `split_half_regret`."""
    table = check_table(acc)
    gap = max(means(table).values()) - float(np.mean(pick_accuracies(table, pick)))
    return 0.0 if gap <= TIE_TOLERANCE else POINTS * gap


def hit(acc, pick):
    """The fraction of seeds whose pick is a hindsight best (ties count as hits): 1.0 or 0.0 for
    one candidate."""
    table = check_table(acc)
    best = hindsight_best(table)
    return float(np.mean([p in best for p in _picks(table, pick)]))


def seed_splits(n):
    """Every split of seed indices 0..n-1 into (choose, score), both non-empty and as equal as n
    allows (|choose| = n // 2 or (n + 1) // 2); [] for n < 2."""
    if n < 2:
        return []
    return [
        (choose, tuple(i for i in range(n) if i not in choose))
        for size in sorted({n // 2, (n + 1) // 2})
        for choose in itertools.combinations(range(n), size)
    ]


def split_half_regret(acc, pick):
    """Regret with hindsight chosen on half of the seeds and scored on the other half, in points:
    over `seed_splits(n)`, the mean of the choosing seeds' best (the mean over its ties) minus the
    pick, both scored on the scoring seeds. None with fewer than 2 seeds; it can be < 0."""
    table = check_table(acc)
    chosen = pick_accuracies(table, pick)
    splits = seed_splits(chosen.size)
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
    """Exact expected (regret, split-half regret or None) of a uniformly drawn pick."""
    table = check_table(acc)
    full = float(np.mean([regret(table, c) for c in table]))
    halves = [split_half_regret(table, c) for c in table]
    return full, (None if halves[0] is None else float(np.mean(halves)))


def agnostic_picks(tables):
    """{task: the candidate with the best mean, over the *other* tasks, of its mean accuracy}
    (ties: the first task's candidate order; None for a bank of one task), from {task: accuracy
    table}; every task must have the same candidates."""
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
    """Weighted Kendall tau in [-1, 1] (`scipy.stats.weightedtau`, hyperbolic weights) between a
    proxy's finite scores and the candidates' mean accuracies; None where it is undefined (fewer
    than 2 such candidates, or either side constant)."""
    mean = means(acc)
    names = [c for c in mean if c in scores and scores[c] is not None and math.isfinite(scores[c])]
    if len(names) < 2:
        return None
    x = np.array([scores[c] for c in names], dtype=np.float64) * (1 if higher_is_better else -1)
    y = np.array([mean[c] for c in names], dtype=np.float64)
    if np.all(x == x[0]) or np.all(y == y[0]):
        return None
    from scipy import stats  # here: importing it costs a command's start-up half a second

    tau = stats.weightedtau(x, y).statistic
    return float(tau) if math.isfinite(tau) else None


def mean_interval(values, *, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """{"mean", "ci_low", "ci_high", "n"} of `values` (None entries dropped), the interval by
    `bootstrap.bca_interval` (BCa, seeded; percentile where BCa is undefined, CONFIDENCE_LEVEL):
    all None for no values, the interval None for one value, the value itself if all are equal."""
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
        (array,), np.mean, confidence_level=CONFIDENCE_LEVEL, n_resamples=n_resamples, seed=seed
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
