"""The report of an evaluation run, from its result files alone: markdown, summary.json, plots.

`write(output_dir)` reads OUT/results/ (never the memo, never a model) and writes OUT/report.md,
OUT/summary.json and, with `plots`, OUT/plots/ (`vtab_eval.plots`). Commands call it; nothing below
the commands imports this module.

The markdown report has, in order: the group table in the paper's format (one row per method;
Natural, Specialized, Structured and Mean accuracy in %, each the mean over the group's tasks of
the per-task aggregate, with a bootstrapped 95% interval), the per-task aggregates with their
intervals and the aggregate each row uses, the expert each method selected per task, and the kNN
score of every expert per task. docs/evaluation.md has the exact layout. Aggregates are the suite's
(`vtab_eval.protocol.SUITE_AGGREGATES`): the median of a VTAB-1k task's outcomes, the mean for
table 3 (Puigcerver et al., ICLR 2021); intervals are `protocol.bootstrap_interval`'s.
"""

import os

from bit_experts import atomic_files
from vtab_eval import files, plots, protocol


def write(output_dir, with_plots=True):
    """Rewrites OUT/report.md and OUT/summary.json from OUT/results; returns the results.

    summary.json: method -> {"groups": `group_summary` (group means with bootstrap intervals),
    "tasks": task -> its summary ({"value", "ci_low", "ci_high", "n", "kind"}, or null before any
    outcome)}. With `with_plots`: OUT/plots/outcomes.png and each missing ranking plot
    OUT/plots/<task slug>__<method>.png (`vtab_eval.plots`).
    """
    results = load_results(output_dir)
    summaries = {method: protocol.group_summary(by_task) for method, by_task in results.items()}
    files.write_text(
        os.path.join(output_dir, "report.md"), markdown_report(results, summaries=summaries)
    )
    summary = {
        method: {
            "groups": summaries[method],
            "tasks": {name: r.get("summary") for name, r in by_task.items()},
        }
        for method, by_task in results.items()
    }
    files.write_json(os.path.join(output_dir, "summary.json"), summary)
    if with_plots:
        plots.write_plots(output_dir, results, summaries)
    return results


def _pct(value):
    return "—" if value is None else f"{100 * value:.1f}"


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
    summaries = plots.with_summaries(all_results, summaries)
    task_names, groups = plots.ordered_tasks(all_results)
    present = [g for g in (*protocol.GROUP_ORDER, protocol.OTHER_GROUP) if g in groups.values()]
    lines = [f"# {title}", ""]
    header = ["Method"] + [g.capitalize() for g in present] + ["Mean", "Per-task aggregate"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        summary = summaries[method]
        cells = [method]
        for group in [*present, protocol.ALL_GROUP]:
            g = summary.get(group)
            cells.append(_interval_cell(g["mean"], g["ci_low"], g["ci_high"]) if g else "—")
        kinds = summary.get(protocol.ALL_GROUP, {}).get("aggregates") or []
        cells.append(", ".join(kinds) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    boot = (
        next(iter(summaries.values()), {}).get("bootstrap")
        or protocol.group_summary({})["bootstrap"]
    )
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
            s = protocol.task_summary(result)
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
            result = files.read_json(os.path.join(folder, file_name), "result file")
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
