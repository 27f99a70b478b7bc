"""Reports of evaluation runs: per-task JSON, a markdown summary, per-expert score plots.

The markdown report has, in order: the group table in the paper's format (one row per method;
Natural, Specialized, Structured and Mean accuracy in %, each the mean over the group's tasks of
the per-task median outcome), the per-task medians with 95% bootstrap intervals, the expert each
method selected per task, and the kNN score of every expert per task. docs/evaluation.md has the
exact layout.
"""

import json
import os
import re

import numpy as np

from bit_experts import atomic_files

GROUP_ORDER = ("natural", "specialized", "structured")
OTHER_GROUP = "other"  # Tasks without a VTAB group (image folders).


# Results and reports are written atomically (the shared helper, under the name callers use).
atomic_write_text = atomic_files.write_text


def write_json(path, obj):
    """Writes `obj` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """The JSON at `path`, or None if the file does not exist."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def task_slug(task_name):
    """A file-name-safe form of a task name (folder tasks contain slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task_name).strip("_") or "task"


def _pct(value):
    return "—" if value is None else f"{100 * value:.1f}"


def group_means(results):
    """{group: mean of per-task medians} plus "mean" over all tasks, for one method.

    Args:
      results: task name -> task result dict (with "group" and "summary").
    """
    by_group = {}
    for result in results.values():
        summary = result.get("summary")
        if not summary:
            continue
        group = result.get("group") or OTHER_GROUP
        by_group.setdefault(group, []).append(summary["median"])
    means = {g: float(np.mean(v)) for g, v in by_group.items()}
    everything = [m for v in by_group.values() for m in v]
    means["mean"] = float(np.mean(everything)) if everything else None
    return means


def _ordered_tasks(all_results):
    tasks = {}
    for results in all_results.values():
        for name, result in results.items():
            tasks.setdefault(name, result.get("group") or OTHER_GROUP)
    groups = list(GROUP_ORDER) + [OTHER_GROUP]
    return sorted(tasks, key=lambda t: groups.index(tasks[t]) if tasks[t] in groups else 99), tasks


def markdown_report(all_results, title="Transfer results"):
    """The markdown report for several methods over the same tasks.

    Args:
      all_results: method -> task name -> task result dict (as written by `vtab_eval.run`).
    """
    methods = list(all_results)
    task_names, groups = _ordered_tasks(all_results)
    present = [g for g in (*GROUP_ORDER, OTHER_GROUP) if g in groups.values()]
    lines = [f"# {title}", ""]
    header = ["Method"] + [g.capitalize() for g in present] + ["Mean"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        means = group_means(all_results[method])
        cells = [method] + [_pct(means.get(g)) for g in present] + [_pct(means["mean"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Accuracy (%; mean per-class accuracy where the task's metric says so): mean over",
        "each group's tasks of the per-task median outcome.",
        "",
    ]

    lines += ["## Per task (median [95% CI], outcomes)", ""]
    header = ["Task", "Group"] + methods
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in task_names:
        cells = [name, groups[name]]
        for method in methods:
            result = all_results[method].get(name) or {}
            s = result.get("summary")
            if not s:
                cells.append("—")
                continue
            cell = f"{_pct(s['median'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}] n={s['num_outcomes']}"
            if not result.get("complete", True):
                cell += " (incomplete)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")

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


def plot_scores(ranking, path):
    """Bar plot (PNG) of a ranking's per-expert scores with the selected expert marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experts = [e for e in ranking["experts"] if e.get("score") is not None]
    if not experts:
        raise ValueError(f"ranking for task {ranking.get('task')!r} has no scored experts to plot")
    names = [e["name"] for e in experts]
    values = [e["score"] for e in experts]
    colours = ["tab:orange" if e["handle"] == ranking["selected"] else "tab:blue" for e in experts]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 2), 3.5))
    bars = ax.bar(range(len(names)), values, color=colours)
    chosen = next(i for i, e in enumerate(experts) if e["handle"] == ranking["selected"])
    ax.annotate(
        "selected",
        (chosen, values[chosen]),
        ha="center",
        va="bottom",
        xytext=(0, 3),
        textcoords="offset points",
    )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    direction = "higher" if ranking.get("higher_is_better", True) else "lower"
    ax.set_ylabel(f"{ranking['method']} score ({direction} is better)")
    ax.set_title(f"{ranking['task']}: {ranking['method']}", fontsize=9)
    del bars
    fig.tight_layout()
    try:
        return atomic_files.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def load_results(output_dir):
    """method -> task name -> task result dict, from `output_dir/results/<task>/<method>.json`."""
    root = os.path.join(output_dir, "results")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{output_dir!r} has no results/ folder; is it a `run` output?")
    all_results = {}
    for task_dir in sorted(os.listdir(root)):
        folder = os.path.join(root, task_dir)
        if not os.path.isdir(folder):
            continue
        for file_name in sorted(os.listdir(folder)):
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
