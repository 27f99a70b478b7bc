"""Reports of evaluation runs: per-task JSON, aggregates with intervals, markdown, plots.

The markdown report has, in order: the group table in the paper's format (one row per method;
Natural, Specialized, Structured and Mean accuracy in %, each the mean over the group's tasks of
the per-task aggregate, with a bootstrapped 95% interval), the per-task aggregates with their
95% bootstrap intervals and the aggregate each row uses, the expert each method selected per task,
and the kNN score of every expert per task. docs/evaluation.md has the exact layout.

Aggregates are a property of the suite (`SUITE_AGGREGATES`): the paper's VTAB-1k tables report
the median of the 30 outcomes of a task, its table 3 the mean (Puigcerver et al., ICLR 2021).
Intervals are percentile bootstraps from `scipy.stats.bootstrap` with a fixed seed
(`BOOTSTRAP_SEED`) and `BOOTSTRAP_RESAMPLES` resamples. The percentile method, not scipy's default
BCa, because BCa's jackknife acceleration is undefined for the median of few, often tied outcomes.
"""

import hashlib
import json
import math
import os
import re
import warnings

import numpy as np
from scipy import stats

from bit_experts import atomic_files

GROUP_ORDER = ("natural", "specialized", "structured")
OTHER_GROUP = "other"  # Tasks without a VTAB group (image folders).
ALL_GROUP = "all"  # Every task of a method, in group_summary.

AGGREGATES = ("median", "mean")
# The aggregate of a task's outcomes by suite: the paper's VTAB-1k tables use the median of 30
# outcomes, its table 3 the mean; folder tasks default to the median (`suite_aggregate` overrides).
SUITE_AGGREGATES = {"vtab1k": "median", "table3": "mean", "folder": "median"}
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
_BOOTSTRAP_BATCH = 500  # Resamples held in memory at once.


# Results and reports are written atomically (the shared helper, under the name callers use).
atomic_write_text = atomic_files.write_text


def write_json(path, obj):
    """Writes `obj` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """The JSON at `path` (local or a `tf.io.gfile` URL), or None if the file does not exist."""
    if not atomic_files.exists(path):
        return None
    return json.loads(atomic_files.read_bytes(path))


def task_slug(task_name):
    """An injective, file-name-safe form of a task name: `<readable>-<hash>`.

    The readable part replaces every run of characters other than letters, digits, `_`, `.`, `-`
    by `_` and keeps the last 48 characters (folder tasks contain long paths); the hash is the
    first 10 hex digits of the SHA-256 of the full name, so different names never share a slug.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", task_name).strip("_")[-48:].strip("_.-") or "task"
    digest = hashlib.sha256(task_name.encode("utf-8")).hexdigest()[:10]
    return f"{readable}-{digest}"


def suite_aggregate(suite, override=None):
    """The aggregate ("median" or "mean") of a task's outcomes for a task of `suite`.

    Args:
      suite: a task's `suite` ("vtab1k", "table3", "folder").
      override: a user's choice; only folder tasks may choose (VTAB-1k and table 3 follow the
        paper). None keeps the suite's default.

    Raises:
      ValueError: unknown suite or aggregate, or an override that contradicts a paper suite.
    """
    if suite not in SUITE_AGGREGATES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {sorted(SUITE_AGGREGATES)}")
    default = SUITE_AGGREGATES[suite]
    if override is None:
        return default
    if override not in AGGREGATES:
        raise ValueError(f"unknown aggregate {override!r}; expected one of {AGGREGATES}")
    if suite != "folder" and override != default:
        raise ValueError(
            f"the {suite} suite reports the {default} of its outcomes, as the paper does; "
            f"only folder tasks can choose the {override}"
        )
    return override


_AGGREGATE_FNS = {"median": np.median, "mean": np.mean}


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
    fn = _AGGREGATE_FNS[kind]
    value = float(fn(values))
    low = high = None
    if values.size > 1:
        low, high = _bootstrap(
            [values], [fn], [], 1, confidence_level, n_resamples, seed, constant=value
        )
    return {"value": value, "ci_low": low, "ci_high": high, "n": int(values.size), "kind": kind}


def _bootstrap(samples, fns, constants, count, confidence_level, n_resamples, seed, constant):
    """Percentile interval of (sum of fns[i](resampled samples[i]) + sum(constants)) / count.

    Each sample is resampled on its own (a stratified bootstrap: one stratum per task).
    """
    if all(np.all(s == s[0]) for s in samples):  # No spread: every resample gives `constant`.
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
                fns.append(_AGGREGATE_FNS[s["kind"]])
            else:
                constants.append(s["value"])
        mean = float(np.mean(values))
        low = high = None
        if samples:
            low, high = _bootstrap(
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


def _pct(value):
    return "—" if value is None else f"{100 * value:.1f}"


def _with_summaries(all_results, summaries=None):
    """method -> `group_summary`: `summaries` (when given) completed for every method."""
    summaries = dict(summaries or {})
    for method in all_results:
        if method not in summaries:
            summaries[method] = group_summary(all_results[method])
    return summaries


def _ordered_tasks(all_results):
    tasks = {}
    for results in all_results.values():
        for name, result in results.items():
            tasks.setdefault(name, result.get("group") or OTHER_GROUP)
    groups = list(GROUP_ORDER) + [OTHER_GROUP]
    return sorted(tasks, key=lambda t: groups.index(tasks[t]) if tasks[t] in groups else 99), tasks


def _interval_cell(value, low, high, n=None):
    """A table cell: "62.0 [59.0, 64.0] n=30", or "62.0 (n=1)" without an interval."""
    if value is None:
        return "—"
    if low is None or high is None:
        return f"{_pct(value)} (n={n})" if n is not None else _pct(value)
    cell = f"{_pct(value)} [{_pct(low)}, {_pct(high)}]"
    return cell + (f" n={n}" if n is not None else "")


def markdown_report(all_results, title="Transfer results", summaries=None):
    """The markdown report for several methods over the same tasks.

    Args:
      all_results: method -> task name -> task result dict (as written by `vtab_eval.run`).
      title: the first heading.
      summaries: method -> `group_summary(results)`, when the caller has them already (the run's
        summary writer); computed here otherwise.
    """
    methods = list(all_results)
    summaries = _with_summaries(all_results, summaries)
    task_names, groups = _ordered_tasks(all_results)
    present = [g for g in (*GROUP_ORDER, OTHER_GROUP) if g in groups.values()]
    lines = [f"# {title}", ""]
    header = ["Method"] + [g.capitalize() for g in present] + ["Mean", "Per-task aggregate"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        summary = summaries[method]
        cells = [method]
        for group in [*present, ALL_GROUP]:
            g = summary.get(group)
            cells.append(_interval_cell(g["mean"], g["ci_low"], g["ci_high"]) if g else "—")
        kinds = summary.get(ALL_GROUP, {}).get("aggregates") or []
        cells.append(", ".join(kinds) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    boot = next(iter(summaries.values()), {}).get("bootstrap") or group_summary({})["bootstrap"]
    lines += [
        "",
        "Accuracy (%; mean per-class accuracy where the task's metric says so): mean over each",
        "group's tasks of the per-task aggregate of the outcomes (median for VTAB-1k, as in the",
        "paper's tables 1 and 2; mean for table 3), with a "
        f"{100 * boot['confidence_level']:g}% bootstrap interval: each task's outcomes resampled",
        f"independently, {boot['n_resamples']} resamples, seed {boot['seed']} (percentile method).",
        "",
    ]

    lines += ["## Per task (aggregate [95% CI], number of outcomes)", ""]
    header = ["Task", "Group", "Aggregate"] + methods
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in task_names:
        cells = [name, groups[name]]
        kinds, method_cells = [], []
        for method in methods:
            result = all_results[method].get(name) or {}
            s = task_summary(result)
            if not s:
                method_cells.append("—")
                continue
            kinds.append(s["kind"])
            cell = _interval_cell(s["value"], s["ci_low"], s["ci_high"], s["n"])
            if not result.get("complete", True):
                cell += " (incomplete)"
            method_cells.append(cell)
        cells.append(", ".join(dict.fromkeys(kinds)) or "—")
        lines.append("| " + " | ".join(cells + method_cells) + " |")

    lines += ["", "## Selected expert", ""]
    lines += ["| " + " | ".join(["Task"] + methods) + " |", "|" + "---|" * (len(methods) + 1)]
    for name in task_names:
        cells = [name]
        for method in methods:
            result = all_results[method].get(name) or {}
            picked = [
                s.get("selection", {}).get("selected_name") or s.get("handle")
                for s in result.get("selections", [])
                if s.get("handle")
            ]
            unique = list(dict.fromkeys(picked))
            cells.append(", ".join(unique) if unique else "—")
        lines.append("| " + " | ".join(cells) + " |")

    knn_tables = _knn_scores(all_results)
    if knn_tables:
        experts = list(dict.fromkeys(e for scores in knn_tables.values() for e in scores))
        lines += ["", "## kNN score of every expert (leave-one-out 1-NN accuracy, %)", ""]
        columns = list(knn_tables)
        lines += ["| " + " | ".join(["Expert"] + columns) + " |", "|" + "---|" * (len(columns) + 1)]
        for expert in experts:
            cells = [expert]
            for task in columns:
                entry = knn_tables[task].get(expert)
                if entry is None:
                    cells.append("—")
                else:
                    score, chosen = entry
                    cells.append(("**" + _pct(score) + "**") if chosen else _pct(score))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Bold: the expert kNN selected. Left-out modules show —.", ""]
    return "\n".join(lines) + "\n"


def _knn_scores(all_results):
    """task -> expert name -> (score, selected) from the knn rankings."""
    tables = {}
    for result in (all_results.get("knn") or {}).values():
        ranking = result.get("ranking")
        if not ranking:
            continue
        tables[result["task"]] = {
            e["name"]: (e["score"], e["handle"] == ranking["selected"])
            for e in ranking["experts"]
            if e.get("score") is not None
        }
    return tables


def display_name(task_name):
    """A short name for titles: registry names as they are, `folder:PATH` as PATH's last part."""
    if task_name.startswith("folder:"):
        path = task_name[len("folder:") :].rstrip("/\\")
        return os.path.basename(path) or "folder"
    return task_name


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _zoomed_limits(lows, highs, floor=None, ceiling=None):
    """Axis limits around [min(lows), max(highs)] with 8% margins (and at least 0.005 wide)."""
    low, high = float(min(lows)), float(max(highs))
    margin = max(0.08 * (high - low), 0.0025)
    low, high = low - margin, high + margin
    if floor is not None:
        low = max(low, floor)
    if ceiling is not None:
        high = min(high, ceiling)
    return low, high


def _save_png(fig, path):
    plt = _pyplot()
    try:
        return atomic_files.write_atomic(
            path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
        )
    finally:
        plt.close(fig)


def ranking_rows(ranking):
    """The rows `plot_scores` draws, best first: one dict per scored expert.

    Keys: "name", "score", "ci_low", "ci_high" (None without an interval), "selected",
    "baseline" (kind "baseline") and "tie" (same score as the selected expert, not selected).
    Sorted by score in the method's direction (`higher_is_better`); among equal scores the
    selected expert comes first, then by name. Experts without a score are left out.
    """
    experts = [e for e in ranking["experts"] if e.get("score") is not None]
    higher = ranking.get("higher_is_better", True)
    selected = ranking.get("selected")
    experts.sort(
        key=lambda e: (-e["score"] if higher else e["score"], e["handle"] != selected, e["name"])
    )
    chosen = next((e for e in experts if e["handle"] == selected), None)
    rows = []
    for e in experts:
        has_ci = e.get("ci_low") is not None and e.get("ci_high") is not None
        rows.append(
            {
                "name": e["name"],
                "score": float(e["score"]),
                "ci_low": float(e["ci_low"]) if has_ci else None,
                "ci_high": float(e["ci_high"]) if has_ci else None,
                "selected": e is chosen,
                "baseline": e.get("kind") == "baseline",
                "tie": chosen is not None and e is not chosen and e["score"] == chosen["score"],
            }
        )
    return rows


def plot_scores(ranking, path):
    """Dot plot (PNG) of a ranking's per-expert scores, best first, on an axis zoomed to them.

    Each scored expert is a row (`ranking_rows`); a horizontal line shows its `ci_low`..`ci_high`
    interval when the ranking has one. The selected expert is orange and labelled, the baseline
    (kind "baseline") is a grey square, and experts whose score ties the selected one are hollow
    diamonds. The x axis spans the scores and intervals (not 0..1); the title uses the task's
    short display name. Raises ValueError when no expert has a score.
    """
    plt = _pyplot()
    experts = ranking_rows(ranking)
    if not experts:
        raise ValueError(f"ranking for task {ranking.get('task')!r} has no scored experts to plot")
    higher = ranking.get("higher_is_better", True)
    lows = [e["score"] if e["ci_low"] is None else e["ci_low"] for e in experts]
    highs = [e["score"] if e["ci_high"] is None else e["ci_high"] for e in experts]
    has_ci = [e["ci_low"] is not None for e in experts]

    rows = len(experts)
    height = 1.7 + 0.28 * rows  # Inches: title, axis label and legend, plus one line per row.
    fig, ax = plt.subplots(figsize=(6.4, height))
    y = np.arange(rows)[::-1]  # Best at the top.
    legend = {}
    for row, e, low, high, ok in zip(y, experts, lows, highs, has_ci, strict=True):
        is_selected, is_baseline, tie = e["selected"], e["baseline"], e["tie"]
        colour = "tab:orange" if is_selected else ("0.45" if is_baseline else "tab:blue")
        ax.axhline(row, color="0.92", linewidth=0.8, zorder=0)
        if ok:
            ax.plot([low, high], [row, row], color=colour, linewidth=2, alpha=0.6, zorder=1)
            legend.setdefault("interval", ax.plot([], [], color="0.5", linewidth=2)[0])
        marker = "s" if is_baseline else ("D" if tie else "o")
        face = "white" if tie else colour
        handle = ax.scatter(
            [e["score"]], [row], s=42, marker=marker, facecolor=face, edgecolor=colour, zorder=2
        )
        if is_selected:
            legend["selected"] = handle
            ax.annotate(
                "selected",
                (max(high, e["score"]), row),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color="tab:orange",
            )
        if is_baseline:
            legend.setdefault("baseline B", handle)
        if tie:
            legend.setdefault("tie with selected", handle)
    floor, ceiling = (0.0, 1.0) if all(0 <= v <= 1 for v in lows + highs) else (None, None)
    left, right = _zoomed_limits(lows, highs, floor, ceiling)
    # Room on the right for the "selected" label.
    ax.set_xlim(left, right + 0.18 * (right - left))
    ax.set_ylim(-0.7, rows - 0.3)
    ax.set_yticks(y, [e["name"] for e in experts], fontsize=8)
    direction = "higher" if higher else "lower"
    ax.set_xlabel(f"{ranking['method']} score ({direction} is better; axis zoomed)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(
        f"{display_name(ranking['task'])}: {ranking['method']} ranking of {rows} modules",
        fontsize=10,
        pad=8,
    )
    legend_height = 0.0
    if legend:
        fig.legend(
            list(legend.values()),
            list(legend),
            loc="lower center",
            ncol=len(legend),
            fontsize=8,
            frameon=False,
        )
        legend_height = 0.35 / height  # One line of legend at the bottom of the figure.
    fig.tight_layout(rect=(0, legend_height, 1, 1))
    return _save_png(fig, path)


def plot_outcomes(all_results, path, summaries=None, columns=3):
    """Fine-tuning outcomes per method (PNG): one panel per task plus one for the group means.

    In each task's panel a method is a row: its outcomes are small grey dots and its aggregate
    (median or mean, `task_summary`) a black marker with its bootstrap interval; the first panel
    shows each method's mean over all tasks with the `group_summary` interval. Every panel's axis
    is zoomed to its values; titles use short task names.

    Args:
      all_results: method -> task name -> task result dict.
      path: the PNG to write (atomically).
      summaries: method -> group_summary(results), if already computed.
      columns: panels per row.

    Raises ValueError when no method has a summarised task.
    """
    plt = _pyplot()
    from matplotlib import ticker

    methods = list(all_results)
    summaries = _with_summaries(all_results, summaries)
    task_names, _ = _ordered_tasks(all_results)
    task_names = [
        t for t in task_names if any(task_summary(all_results[m].get(t) or {}) for m in methods)
    ]
    if not task_names:
        raise ValueError("no method has a summarised task: nothing to plot")

    panels = [("Mean over tasks", None)] + [(display_name(t), t) for t in task_names]
    columns = max(1, min(columns, len(panels)))
    grid_rows = math.ceil(len(panels) / columns)
    height = 0.9 + 0.32 * len(methods)
    fig, axes = plt.subplots(
        grid_rows, columns, figsize=(3.6 * columns, height * grid_rows + 0.4), squeeze=False
    )
    y = np.arange(len(methods))[::-1]
    for ax, (title, task) in zip(axes.flat, panels, strict=False):
        lows, highs, kinds = [], [], set()
        for row, method in zip(y, methods, strict=True):
            if task is None:
                g = summaries[method].get(ALL_GROUP)
                if not g:
                    continue
                value, low, high, outcomes = g["mean"], g["ci_low"], g["ci_high"], []
                kinds.update(g["aggregates"])
            else:
                s = task_summary(all_results[method].get(task) or {})
                if not s:
                    continue
                value, low, high, outcomes = s["value"], s["ci_low"], s["ci_high"], s["outcomes"]
                kinds.add(s["kind"])
            if outcomes:
                # Fixed vertical jitter, so that equal outcomes stay visible as separate dots.
                jitter = np.random.default_rng(int(row)).uniform(-0.2, 0.2, len(outcomes))
                ax.scatter(outcomes, row + jitter, s=7, color="0.65", zorder=1)
            if low is not None and high is not None:
                ax.plot([low, high], [row, row], color="black", linewidth=1.6, zorder=2)
            ax.scatter([value], [row], s=30, color="black", zorder=3)
            lows += [low if low is not None else value, *outcomes]
            highs += [high if high is not None else value, *outcomes]
        if lows:
            ax.set_xlim(*_zoomed_limits(lows, highs))
        ax.set_ylim(-0.6, len(methods) - 0.4)
        ax.set_yticks(y, methods, fontsize=8)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
        ax.tick_params(axis="x", labelsize=7)
        label = "mean of per-task " + "/".join(sorted(kinds)) if task is None else "/".join(kinds)
        ax.set_title(f"{title} ({label})" if label else title, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Fine-tuning outcomes per method: dots = outcomes, bar = 95% bootstrap interval",
        fontsize=10,
    )
    fig.tight_layout()
    return _save_png(fig, path)


def load_results(output_dir):
    """method -> task name -> task result dict, from `output_dir/results/<task>/<method>.json`."""
    root = os.path.join(output_dir, "results")
    if not atomic_files.isdir(root):
        raise FileNotFoundError(f"{output_dir!r} has no results/ folder; is it a `run` output?")
    all_results = {}
    for task_dir in sorted(atomic_files.listdir(root)):
        folder = os.path.join(root, task_dir)
        if not atomic_files.isdir(folder):
            continue
        for file_name in sorted(atomic_files.listdir(folder)):
            if not file_name.endswith(".json") or file_name.startswith("."):
                continue
            result = read_json(os.path.join(folder, file_name))
            all_results.setdefault(result["method"], {})[result["task"]] = result
    return all_results


def compare(output_dirs, labels=None):
    """Side-by-side report of several `run` output folders (e.g. several selectors or pools).

    Each (folder, method) becomes one column/row named "label:method".
    """
    labels = labels or [os.path.basename(os.path.normpath(d)) for d in output_dirs]
    if len(labels) != len(output_dirs):
        raise ValueError("compare needs one label per output folder")
    merged = {}
    for label, directory in zip(labels, output_dirs):
        for method, results in load_results(directory).items():
            merged[f"{label}:{method}"] = results
    return markdown_report(merged, title="Comparison")
