"""Plots of an evaluation run from its result files (matplotlib, Agg backend), written
atomically: each ranking's scores, and every method's fine-tuning outcomes."""

import math
import os

import numpy as np

from bit_experts import atomic_files
from vtab_eval import files, protocol


def write_plots(output_dir, results, summaries):
    """OUT/plots/outcomes.png, and OUT/plots/<task slug>__<method>.png of every ranking that has
    none yet (`results`: method -> task -> result; `summaries`: method -> `group_summary`)."""
    folder = os.path.join(output_dir, "plots")
    if any(protocol.task_summary(r) for by_task in results.values() for r in by_task.values()):
        plot_outcomes(results, os.path.join(folder, "outcomes.png"), summaries=summaries)
    for method, by_task in results.items():
        for task_name, result in by_task.items():
            ranking = result.get("ranking")
            path = os.path.join(folder, f"{files.task_slug(task_name)}__{method}.png")
            # A ranking is drawn under the method that made it (not a probe policy's proxy's).
            skip = method == "baseline" or not ranking or ranking.get("method") != method
            skip = skip or atomic_files.exists(path)
            if not skip and ranking_rows(ranking):  # Without a scored expert: nothing to draw.
                plot_scores(ranking, path)


def with_summaries(all_results, summaries=None):
    """method -> `group_summary`: `summaries` (when given) completed for every method."""
    given = summaries or {}
    missing = {m: protocol.group_summary(r) for m, r in all_results.items() if m not in given}
    return {**given, **missing}


def ordered_tasks(all_results):
    """(task names in group order, task name -> group)."""
    tasks = {}
    for results in all_results.values():
        for name, result in results.items():
            tasks.setdefault(name, result.get("group") or protocol.OTHER_GROUP)
    groups = list(protocol.GROUP_ORDER) + [protocol.OTHER_GROUP]
    return sorted(tasks, key=lambda t: groups.index(tasks[t]) if tasks[t] in groups else 99), tasks


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _zoomed_limits(lows, highs, floor=-math.inf, ceiling=math.inf):
    """Limits around [min(lows), max(highs)], 8% margins (>= 0.005 wide), in [floor, ceiling]."""
    low, high = float(min(lows)), float(max(highs))
    margin = max(0.08 * (high - low), 0.0025)
    return max(low - margin, floor), min(high + margin, ceiling)


def save_png(fig, path):
    try:
        save = lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
        return atomic_files.write_atomic(path, save)
    finally:
        pyplot().close(fig)


def ranking_rows(ranking):
    """The rows `plot_scores` draws, best first (the selected one first among equal scores):
    per scored expert {"name", "score", "ci_low", "ci_high" (None without an interval),
    "selected", "baseline" (kind "baseline"), "tie" (the selected one's score, not selected)}."""
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


_SELECTED_LABEL = dict(
    xytext=(6, 0), textcoords="offset points", va="center", fontsize=8, color="tab:orange"
)


def plot_scores(ranking, path):
    """Dot plot (PNG) of a ranking's scores, a row per scored expert (`ranking_rows`) with its
    interval, on an axis zoomed to them: the selected expert orange and labelled, the baseline a
    grey square, ties with the selected one hollow diamonds. ValueError without a scored expert."""
    plt = pyplot()
    experts = ranking_rows(ranking)
    if not experts:
        raise ValueError(f"ranking for task {ranking.get('task')!r} has no scored experts to plot")
    higher = ranking.get("higher_is_better", True)
    lows = [e["score"] if e["ci_low"] is None else e["ci_low"] for e in experts]
    highs = [e["score"] if e["ci_high"] is None else e["ci_high"] for e in experts]

    rows = len(experts)
    height = 1.7 + 0.28 * rows  # Inches: title, axis label and legend, plus one line per row.
    fig, ax = plt.subplots(figsize=(6.4, height))
    y = np.arange(rows)[::-1]  # Best at the top.
    legend = {}
    for row, e, low, high in zip(y, experts, lows, highs, strict=True):
        is_baseline, tie = e["baseline"], e["tie"]
        colour = "tab:orange" if e["selected"] else ("0.45" if is_baseline else "tab:blue")
        ax.axhline(row, color="0.92", linewidth=0.8, zorder=0)
        if e["ci_low"] is not None:
            ax.plot([low, high], [row, row], color=colour, linewidth=2, alpha=0.6, zorder=1)
            legend.setdefault("interval", ax.plot([], [], color="0.5", linewidth=2)[0])
        marker = "s" if is_baseline else ("D" if tie else "o")
        face = "white" if tie else colour
        handle = ax.scatter(
            [e["score"]], [row], s=42, marker=marker, facecolor=face, edgecolor=colour, zorder=2
        )
        if e["selected"]:
            legend["selected"] = handle
            ax.annotate("selected", (max(high, e["score"]), row), **_SELECTED_LABEL)
        if is_baseline:
            legend.setdefault("baseline B", handle)
        if tie:
            legend.setdefault("tie with selected", handle)
    bounds = (0.0, 1.0) if all(0 <= v <= 1 for v in lows + highs) else ()
    left, right = _zoomed_limits(lows, highs, *bounds)
    # Room on the right for the "selected" label.
    ax.set_xlim(left, right + 0.18 * (right - left))
    ax.set_ylim(-0.7, rows - 0.3)
    ax.set_yticks(y, [e["name"] for e in experts], fontsize=8)
    direction = "higher" if higher else "lower"
    ax.set_xlabel(f"{ranking['method']} score ({direction} is better; axis zoomed)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    title = f"{ranking['task']}: {ranking['method']} ranking of {rows} modules"
    ax.set_title(title, fontsize=10, pad=8)
    legend_height = 0.0
    if legend:
        handles, labels = list(legend.values()), list(legend)
        fig.legend(handles, labels, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
        legend_height = 0.35 / height  # One line of legend at the bottom of the figure.
    fig.tight_layout(rect=(0, legend_height, 1, 1))
    return save_png(fig, path)


def plot_outcomes(all_results, path, summaries=None, columns=3):
    """Fine-tuning outcomes (PNG), a panel per task: each method's outcomes as grey dots, its
    aggregate as a black marker with its interval; the first panel, each method's mean over tasks
    (`summaries`: method -> `group_summary`). ValueError when no method has a summarised task."""
    plt = pyplot()
    from matplotlib import ticker

    methods = list(all_results)
    summaries = with_summaries(all_results, summaries)
    summarised = {t for m in methods for t, r in all_results[m].items() if protocol.task_summary(r)}
    task_names = [t for t in ordered_tasks(all_results)[0] if t in summarised]
    if not task_names:
        raise ValueError("no method has a summarised task: nothing to plot")

    panels = [("Mean over tasks", None)] + [(t, t) for t in task_names]
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
                g = summaries[method].get(protocol.ALL_GROUP)
                if not g:
                    continue
                value, low, high, outcomes = g["mean"], g["ci_low"], g["ci_high"], []
                kinds.update(g["aggregates"])
            else:
                s = protocol.task_summary(all_results[method].get(task) or {})
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
    title = "Fine-tuning outcomes per method: dots = outcomes, bar = 95% bootstrap interval"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
