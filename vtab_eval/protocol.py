"""The VTAB-1k fine-tuning protocol's rules: splits, seeds, the best setting, the task aggregate.

Per selection, a sweep's best setting on val200 (first on ties) is retrained on train800val200 and
tested, once per retrain; the paper reports the median of 10 x 3 such outcomes, table 3 their mean
(Puigcerver et al., ICLR 2021). Intervals are percentile bootstraps with a fixed seed (BCa's
jackknife is undefined for the median of few, tied outcomes).
"""

import hashlib
import warnings

import numpy as np

SPLIT_SCHEMES = {
    "vtab1k": ("train800", "val200", "train800val200", "test"),
    "full": ("train", "val", "trainval", "test"),
}
AGGREGATE_FNS = {"median": np.median, "mean": np.mean}
SUITE_AGGREGATES = {"vtab1k": "median", "table3": "mean", "folder": "median"}
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
GROUP_ORDER = ("natural", "specialized", "structured")
OTHER_GROUP = "other"  # Tasks without a VTAB group (image folders).
ALL_GROUP = "all"  # Every task of a method, in group_summary.


def default_protocol(task):
    """(scheme, search) of a task: ("full", "once") for table 3 tasks (the paper fine-tunes on all
    their data after one random search), ("vtab1k", "per_selection") otherwise."""
    return ("full", "once") if task.suite == "table3" else ("vtab1k", "per_selection")


def default_sweep(task):
    """The sweep preset `--sweep=auto` gives a task: "random_search" for table 3 tasks (the search
    their protocol tunes with, as `default_protocol`), "local" (the CPU preset, the default before
    "auto") for VTAB-1k and folder tasks."""
    return "random_search" if task.suite == "table3" else "local"


def best_setting(sweep, val_scores):
    """The name of the setting with the best validation score (setting name -> score, higher is
    better); the first in sweep order on ties. A single setting needs no score."""
    names = [s["name"] for s in sweep]
    if len(names) == 1:
        return names[0]
    return max(names, key=lambda n: (val_scores[n], -names.index(n)))


def derive_seed(base_seed, *path):
    """A 31-bit seed from `base_seed` and a path such as ("retrain", selection, j), mixed by
    numpy's `SeedSequence` so that neighbouring base seeds give unrelated streams."""
    words = [int(base_seed)] + [
        int(p) if isinstance(p, int) else int(hashlib.sha256(str(p).encode()).hexdigest()[:8], 16)
        for p in path
    ]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def selection_seed(base_seed, method, index):
    """The seed of selection `index`: derived per selection for `random`, the base seed else."""
    return derive_seed(base_seed, "select", index) if method == "random" else int(base_seed)


def tuning_seed(base_seed, selection, setting_index):
    """The seed of the tuning fine-tune of (selection, setting index)."""
    return derive_seed(base_seed, "tune", selection, setting_index)


def retrain_seed(base_seed, selection, retrain):
    """The seed of retrain j of selection i."""
    return derive_seed(base_seed, "retrain", selection, retrain)


def probe_seed(base_seed, selection):
    """The seed of selection i's probe fine-tunes (every finalist's: their modules differ)."""
    return derive_seed(base_seed, "probe", selection)


def suite_aggregate(suite, override=None):
    """The aggregate ("median" or "mean") of a task of `suite`; folder tasks may `override` it
    (None or "auto": the suite's). Raises ValueError when a paper suite is given the other one."""
    default = SUITE_AGGREGATES[suite]
    if override in (None, "auto"):
        return default
    if suite != "folder" and override != default:
        raise ValueError(
            f"the {suite} suite reports the {default} of its outcomes, as the paper does; "
            f"only folder tasks can choose the {override}"
        )
    return override


def aggregate(values, kind):
    """The median or mean (`kind`) of a task's outcomes with a 95% bootstrap interval.

    `values`: 1-D finite scores (e.g. 30 test accuracies). Returns {"value", "ci_low", "ci_high",
    "n", "kind"}, the same on every machine (fixed seed); one value has no interval (None).
    Raises ValueError: an unknown kind, no values or non-finite ones.
    """
    if kind not in AGGREGATE_FNS:
        raise ValueError(f"unknown aggregate {kind!r}; expected one of {tuple(AGGREGATE_FNS)}")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(
            f"aggregate needs a non-empty 1-D list of finite outcomes, got {values.tolist()}"
        )
    fn = AGGREGATE_FNS[kind]
    value = float(fn(values))
    low = high = None
    if values.size > 1:
        low, high = bootstrap_interval([values], [fn], [], 1, constant=value)
    return {"value": value, "ci_low": low, "ci_high": high, "n": int(values.size), "kind": kind}


def bootstrap_interval(samples, fns, constants, count, constant):
    """Percentile interval of (sum of fns[i](resampled samples[i]) + sum(constants)) / count,
    each sample resampled on its own (stratified); (constant, constant) when none has spread."""
    from scipy import stats  # here: importing it costs a command's start-up half a second

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
            n_resamples=BOOTSTRAP_RESAMPLES,
            batch=500,  # Resamples held in memory at once.
            vectorized=True,
            paired=False,
            confidence_level=CONFIDENCE_LEVEL,
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        )
    low, high = (float(x) for x in result.confidence_interval)
    return low, high


def task_summary(result):
    """{"value", "ci_low", "ci_high", "n", "kind", "outcomes"} of one task result, or None; also
    from the median-only summary of older result files ("median", "num_outcomes")."""
    summary = result.get("summary")
    if not summary:
        return None
    old = "value" not in summary
    return {
        "value": summary["median" if old else "value"],
        "ci_low": summary.get("ci_low"),
        "ci_high": summary.get("ci_high"),
        "n": summary.get("num_outcomes" if old else "n"),
        "kind": "median" if old else summary.get("kind"),
        "outcomes": [float(x) for x in result.get("outcomes") or []],
    }


def group_summary(results):
    """Group means of one method's per-task aggregates (task name -> result) with intervals.

    As in the paper's tables 1 and 2: per group (natural, specialized, structured, other, "all")
    {"mean", "ci_low", "ci_high", "num_tasks", "tasks", "aggregates"}, the mean of its tasks'
    aggregates; the interval resamples each task's outcomes on its own (a task with one outcome
    enters with its value; a group of only such tasks has none). Plus "bootstrap": its settings.
    """
    by_group = {}
    for name, result in results.items():
        summary = task_summary(result)
        if summary is not None:
            by_group.setdefault(result.get("group") or OTHER_GROUP, []).append((name, summary))
    order = [g for g in (*GROUP_ORDER, OTHER_GROUP) if g in by_group]
    out = {}
    for group in [*order, ALL_GROUP] if by_group else []:
        members = [m for g in order for m in by_group[g]] if group == ALL_GROUP else by_group[group]
        samples, fns, constants = [], [], []
        for _, s in members:
            if len(s["outcomes"]) > 1:
                samples.append(np.asarray(s["outcomes"], dtype=np.float64))
                fns.append(AGGREGATE_FNS[s["kind"]])
            else:
                constants.append(s["value"])
        mean = float(np.mean([s["value"] for _, s in members]))
        low = high = None
        if samples:
            low, high = bootstrap_interval(samples, fns, constants, len(members), constant=mean)
        out[group] = {
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "num_tasks": len(members),
            "tasks": [name for name, _ in members],
            "aggregates": sorted({s["kind"] for _, s in members}),
        }
    out["bootstrap"] = {
        "confidence_level": CONFIDENCE_LEVEL,
        "n_resamples": BOOTSTRAP_RESAMPLES,
        "seed": BOOTSTRAP_SEED,
        "method": "percentile",
        "resampled": "each task's outcomes, independently (stratified by task)",
    }
    return out
