"""The VTAB-1k fine-tuning protocol's rules: splits, seeds, the best setting, the task aggregate.

For each *selection* i an expert is chosen. When the sweep has more than one setting, every setting
is fine-tuned on `train800` and scored on `val200` (*tuning*), and the best is kept (first in sweep
order on ties, `best_setting`); then each *retrain* j fine-tunes that setting on `train800val200`
and scores on `test`. Every (selection, retrain) pair is one outcome: the paper's VTAB-1k tables use
10 selections x 3 retrains = 30 and report their median, its table 3 their mean (`SUITE_AGGREGATES`,
Puigcerver et al., ICLR 2021). With search "once" (table 3: one random search, then 30 retrains)
only selection 0 tunes and every selection retrains its best setting. The "full" scheme (train ->
val, trainval -> test) serves table 3. Seeds derive from one base seed (`tuning_seed`,
`retrain_seed`). `vtab_eval.plan` turns these rules into fine-tune specs.

Intervals are percentile bootstraps (`scipy.stats.bootstrap`, fixed seed): not scipy's default BCa,
whose jackknife acceleration is undefined for the median of few, often tied outcomes.
"""

import hashlib
import warnings

import numpy as np
from scipy import stats

SPLIT_SCHEMES = {
    "vtab1k": ("train800", "val200", "train800val200", "test"),
    "full": ("train", "val", "trainval", "test"),
}
SEARCHES = ("per_selection", "once")
AGGREGATES = ("median", "mean")
SUITE_AGGREGATES = {"vtab1k": "median", "table3": "mean", "folder": "median"}
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
_BOOTSTRAP_BATCH = 500  # Resamples held in memory at once.
AGGREGATE_FNS = {"median": np.median, "mean": np.mean}
GROUP_ORDER = ("natural", "specialized", "structured")
OTHER_GROUP = "other"  # Tasks without a VTAB group (image folders).
ALL_GROUP = "all"  # Every task of a method, in group_summary.


def default_scheme(task):
    """ "full" for table 3 tasks (the paper fine-tunes on all their data), "vtab1k" otherwise."""
    return "full" if task.suite == "table3" else "vtab1k"


def default_search(task):
    """ "once" for table 3 tasks (one random search), "per_selection" otherwise (VTAB-1k)."""
    return "once" if task.suite == "table3" else "per_selection"


def check_sweep(sweep):
    """Raises ValueError if the sweep is empty or its setting names repeat."""
    if not sweep:
        raise ValueError("the sweep is empty; give at least one setting")
    names = [s["name"] for s in sweep]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep setting names must be unique, got {names}")


def best_setting(sweep, val_scores):
    """The name of the setting with the best validation score; the first in sweep order on ties.

    Args:
      sweep: list of settings.
      val_scores: setting name -> validation score (higher is better) for every setting.
    """
    names = [s["name"] for s in sweep]
    if len(names) == 1:
        return names[0]
    missing = [n for n in names if n not in val_scores]
    if missing:
        raise ValueError(f"no validation score for settings {missing}")
    return max(names, key=lambda n: (val_scores[n], -names.index(n)))


def derive_seed(base_seed, *path):
    """A 31-bit seed derived from `base_seed` and a path such as ("retrain", selection, j).

    numpy's `SeedSequence` mixes the parts, so neighbouring base seeds give unrelated streams.
    """
    words = [int(base_seed)] + [
        int(p) if isinstance(p, int) else int(hashlib.sha256(str(p).encode()).hexdigest()[:8], 16)
        for p in path
    ]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def selection_seed(base_seed, method, index):
    """The seed of selection `index`: derived per selection for `random`, the base seed else."""
    if method == "random":
        return derive_seed(base_seed, "select", index)
    return int(base_seed)


def tuning_seed(base_seed, selection, setting_index):
    """The seed of tuning fine-tune (selection, setting index), derived from the base seed."""
    return derive_seed(base_seed, "tune", selection, setting_index)


def retrain_seed(base_seed, selection, retrain):
    """The seed of retrain j of selection i, derived from the base seed."""
    return derive_seed(base_seed, "retrain", selection, retrain)


def suite_aggregate(suite, override=None):
    """The aggregate ("median" or "mean") of a task's outcomes for a task of `suite`.

    Args:
      suite: a task's `suite` ("vtab1k", "table3", "folder").
      override: a user's choice; only folder tasks may choose (VTAB-1k and table 3 follow the
        paper). None or "auto" keeps the suite's default.

    Raises:
      ValueError: unknown suite or aggregate, or an override that contradicts a paper suite.
    """
    if suite not in SUITE_AGGREGATES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {sorted(SUITE_AGGREGATES)}")
    default = SUITE_AGGREGATES[suite]
    if override in (None, "auto"):
        return default
    if override not in AGGREGATES:
        raise ValueError(f"unknown aggregate {override!r}; expected one of {AGGREGATES}")
    if suite != "folder" and override != default:
        raise ValueError(
            f"the {suite} suite reports the {default} of its outcomes, as the paper does; "
            f"only folder tasks can choose the {override}"
        )
    return override


def aggregate(
    values,
    kind,
    *,
    confidence_level=CONFIDENCE_LEVEL,
    n_resamples=BOOTSTRAP_RESAMPLES,
    seed=BOOTSTRAP_SEED,
):
    """The median or mean of a task's outcomes with a bootstrapped confidence interval.

    Args:
      values: 1-D scores (e.g. 30 test accuracies in [0, 1]), finite.
      kind: "median" (VTAB-1k) or "mean" (table 3); see `suite_aggregate`.
      confidence_level: two-sided coverage in (0, 1).
      n_resamples: bootstrap resamples (scipy.stats.bootstrap, percentile method).
      seed: seed of numpy.random.default_rng for the resampling: the same inputs give the same
        interval on every machine.

    Returns:
      {"value", "ci_low", "ci_high", "n", "kind"}. With a single outcome there is no spread to
      resample: the interval is None (report it as n = 1). When every outcome is equal the interval
      is that value at both ends.

    Raises:
      ValueError: no values, non-finite values, a bad kind or confidence level.
    """
    if kind not in AGGREGATES:
        raise ValueError(f"unknown aggregate {kind!r}; expected one of {AGGREGATES}")
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"aggregate needs a non-empty 1-D list of outcomes, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"outcomes must be finite, got {values.tolist()}")
    fn = AGGREGATE_FNS[kind]
    value = float(fn(values))
    low = high = None
    if values.size > 1:
        low, high = bootstrap_interval(
            [values], [fn], [], 1, confidence_level, n_resamples, seed, constant=value
        )
    return {"value": value, "ci_low": low, "ci_high": high, "n": int(values.size), "kind": kind}


def summarize(outcomes, kind="median"):
    """`aggregate(outcomes, kind)` ({"value", "ci_low", "ci_high", "n", "kind"}), None without any."""
    return aggregate(outcomes, kind) if len(outcomes) else None


def bootstrap_interval(
    samples, fns, constants, count, confidence_level, n_resamples, seed, constant
):
    """Percentile interval of (sum of fns[i](resampled samples[i]) + sum(constants)) / count.

    Each sample is resampled on its own (a stratified bootstrap: one stratum per task). When no
    sample has spread, every resample gives `constant`: (constant, constant).
    """
    if all(np.all(s == s[0]) for s in samples):
        return constant, constant
    fixed = float(np.sum(constants))

    def statistic(*resampled, axis=-1):
        total = sum(fn(r, axis=axis) for fn, r in zip(fns, resampled, strict=True))
        return (total + fixed) / count

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            tuple(samples),
            statistic,
            n_resamples=int(n_resamples),
            batch=_BOOTSTRAP_BATCH,
            vectorized=True,
            paired=False,
            confidence_level=confidence_level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    low, high = (float(x) for x in result.confidence_interval)
    return low, high


def task_summary(result):
    """{"value", "ci_low", "ci_high", "n", "kind", "outcomes"} of one task result, or None.

    Reads the summary `aggregate` writes ("value", "kind") and the older median-only form of
    result files written before it ("median", "num_outcomes"); `outcomes` is the result's list of
    scores ([] when absent).
    """
    summary = result.get("summary")
    if not summary:
        return None
    if "value" in summary:
        out = {k: summary.get(k) for k in ("value", "ci_low", "ci_high", "n", "kind")}
    else:
        out = {
            "value": summary["median"],
            "ci_low": summary.get("ci_low"),
            "ci_high": summary.get("ci_high"),
            "n": summary.get("num_outcomes"),
            "kind": "median",
        }
    out["outcomes"] = [float(x) for x in result.get("outcomes") or []]
    return out


def group_summary(
    results,
    *,
    confidence_level=CONFIDENCE_LEVEL,
    n_resamples=BOOTSTRAP_RESAMPLES,
    seed=BOOTSTRAP_SEED,
):
    """Group means of one method's per-task aggregates with bootstrapped confidence intervals.

    As in the paper's tables 1 and 2: for each group (natural, specialized, structured, other for
    tasks without a VTAB group, and "all"), the mean over its tasks of each task's aggregate
    (median or mean of its outcomes). The interval resamples every task's outcomes on its own
    (with replacement, the task's own count), recomputes each task's aggregate and their mean,
    `n_resamples` times with a fixed seed (scipy.stats.bootstrap, percentile method). A task
    whose result lacks its outcomes, or has one, enters every resample with its fixed value; a
    group whose tasks all have one outcome has no interval (None).

    Args:
      results: task name -> task result dict (with "group", "summary" and "outcomes").
      confidence_level, n_resamples, seed: of the bootstrap.

    Returns:
      {group: {"mean", "ci_low", "ci_high", "num_tasks", "tasks", "aggregates"}} for every group
      with a summarised task, plus "all", plus "bootstrap": {"confidence_level", "n_resamples",
      "seed", "method", "resampled"}. Values are fractions (e.g. accuracy in [0, 1]).
    """
    by_group = {}
    for name, result in results.items():
        summary = task_summary(result)
        if summary is None:
            continue
        by_group.setdefault(result.get("group") or OTHER_GROUP, []).append((name, summary))
    order = [g for g in (*GROUP_ORDER, OTHER_GROUP) if g in by_group]
    out = {}
    for group in [*order, ALL_GROUP] if by_group else []:
        members = [m for g in order for m in by_group[g]] if group == ALL_GROUP else by_group[group]
        values = [s["value"] for _, s in members]
        samples, fns, constants = [], [], []
        for _, s in members:
            if len(s["outcomes"]) > 1:
                samples.append(np.asarray(s["outcomes"], dtype=np.float64))
                fns.append(AGGREGATE_FNS[s["kind"]])
            else:
                constants.append(s["value"])
        mean = float(np.mean(values))
        low = high = None
        if samples:
            low, high = bootstrap_interval(
                samples,
                fns,
                constants,
                len(members),
                confidence_level,
                n_resamples,
                seed,
                constant=mean,
            )
        out[group] = {
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "num_tasks": len(members),
            "tasks": [name for name, _ in members],
            "aggregates": sorted({s["kind"] for _, s in members}),
        }
    out["bootstrap"] = {
        "confidence_level": float(confidence_level),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "method": "percentile",
        "resampled": "each task's outcomes, independently (stratified by task)",
    }
    return out
