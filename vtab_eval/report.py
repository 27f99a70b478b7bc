"""The report of an evaluation run from its result files alone (never the memo or a model):
OUT/report.md, OUT/summary.json and OUT/plots/. Only the commands import this module; the
markdown's layout (the paper's tables, then per task) is in docs/evaluation.md ("Report").
"""

import os

from bit_experts import atomic_files
from vtab_eval import files, plan, plots, protocol


def write(output_dir, with_plots=True):
    """Rewrites OUT/report.md, OUT/summary.json (method -> {"groups": `group_summary`, "tasks":
    task -> summary}) and, `with_plots`, OUT/plots/ from OUT/results; returns the results."""
    results = load_results(output_dir)
    summaries = {method: protocol.group_summary(by_task) for method, by_task in results.items()}
    text = markdown_report(results, summaries=summaries)
    files.write_text(os.path.join(output_dir, "report.md"), text)
    tasks = {m: {t: r.get("summary") for t, r in by_task.items()} for m, by_task in results.items()}
    summary = {m: {"groups": summaries[m], "tasks": tasks[m]} for m in results}
    files.write_json(os.path.join(output_dir, "summary.json"), summary)
    if with_plots:
        plots.write_plots(output_dir, results, summaries)
    return results


def _pct(value):
    return "—" if value is None else f"{100 * value:.1f}"


def _interval_cell(value, low, high, n=None):
    """A table cell: "62.0 [59.0, 64.0] n = 30", or "62.0 (n = 1)" without an interval."""
    if value is None:
        return "—"
    if low is None or high is None:
        return f"{_pct(value)} (n = {n})" if n is not None else _pct(value)
    cell = f"{_pct(value)} [{_pct(low)}, {_pct(high)}]"
    return cell + (f" n = {n}" if n is not None else "")


def _group_cell(group, results):
    """A group's cell: its mean with its interval, or "(n = 1)" when each of its tasks (names in
    `group["tasks"]`, results in `results`) has one outcome; "—" for no group."""
    if not group:
        return "—"
    ns = {(protocol.task_summary(results.get(t) or {}) or {}).get("n") for t in group["tasks"]}
    n = 1 if ns == {1} else None
    return _interval_cell(group["mean"], group["ci_low"], group["ci_high"], n)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def markdown_report(all_results, title="Transfer results", summaries=None):
    """The markdown report of `all_results` (method -> task name -> result) under `title`;
    `summaries`: method -> `protocol.group_summary`, computed where not given."""
    methods = list(all_results)
    summaries = plots.with_summaries(all_results, summaries)
    task_names, groups = plots.ordered_tasks(all_results)
    present = [g for g in (*protocol.GROUP_ORDER, protocol.OTHER_GROUP) if g in groups.values()]
    rows = []
    for method in methods:
        cells = [method]
        for group in [*present, protocol.ALL_GROUP]:
            cells.append(_group_cell(summaries[method].get(group), all_results[method]))
        kinds = summaries[method].get(protocol.ALL_GROUP, {}).get("aggregates") or []
        rows.append([*cells, ", ".join(kinds) or "—"])
    header = ["Method"] + [g.capitalize() for g in present] + ["Mean", "Per-task aggregate"]
    lines = [f"# {title}", "", *_table(header, rows)]
    lines += [
        "",
        "Accuracy (%; mean per-class accuracy where the task's metric says so): mean over each",
        "group's tasks of the per-task aggregate of the outcomes (median for VTAB-1k, as in the",
        "paper's tables 1 and 2; mean for table 3), with a "
        f"{100 * protocol.CONFIDENCE_LEVEL:g}% bootstrap interval: each task's outcomes resampled",
        f"independently, {protocol.BOOTSTRAP_RESAMPLES} resamples, seed {protocol.BOOTSTRAP_SEED} "
        "(percentile method). One outcome has no interval: `n = 1` stands in its place, and a gap",
        "between two such cells may be seed-to-seed noise.",
        "",
    ]

    rows, picks = [], []
    for name in task_names:
        kinds, cells, picked = [], [], [name]
        for method in methods:
            result = all_results[method].get(name) or {}
            names = [
                s.get("selection", {}).get("selected_name") or s["handle"]
                for s in result.get("selections", [])
                if s.get("handle")
            ]
            picked.append(", ".join(dict.fromkeys(names)) or "—")
            s = protocol.task_summary(result)
            if not s:
                cells.append("—")
                continue
            kinds.append(s["kind"])
            cell = _interval_cell(s["value"], s["ci_low"], s["ci_high"], s["n"])
            cells.append(cell + ("" if result.get("complete", True) else " (incomplete)"))
        rows.append([name, groups[name], ", ".join(dict.fromkeys(kinds)) or "—", *cells])
        picks.append(picked)
    lines += ["## Per task (aggregate [95% CI], number of outcomes)", ""]
    lines += _table(["Task", "Group", "Aggregate", *methods], rows)
    lines += _random_search_note(all_results, task_names)
    lines += ["", "## Selected expert", "", *_table(["Task", *methods], picks)]
    lines += _confidence_section(all_results, task_names)
    lines += _cost_section(all_results)
    knn_tables = _knn_scores(all_results)
    if knn_tables:
        experts = dict.fromkeys(e for scores in knn_tables.values() for e in scores)
        rows = []
        for expert in experts:
            cells = [expert]
            for scores in knn_tables.values():
                score, chosen = scores.get(expert, (None, False))
                cells.append(f"**{_pct(score)}**" if chosen else _pct(score))
            rows.append(cells)
        lines += ["", "## kNN score of every expert (leave-one-out 1-NN accuracy, %)", ""]
        lines += _table(["Expert", *knn_tables], rows)
        lines += ["", "Bold: the expert kNN selected. Left-out modules show —.", ""]
    return "\n".join(lines) + "\n"


def ranking_confidence(ranking, top=3):
    """How sure a ranking dict's pick is, as text: {"candidates": its `top` scored experts best
    first, and B where ranked lower, each "name score [low, high]" (the interval only where the
    selector has per-image hits) with the selected one marked; "chances": each pairwise
    probability that an expert beats another; "fallback": what the baseline fallback did}, each
    "" when there is none (docs/selection.md, "Confidence")."""
    rows = plots.ranking_rows(ranking)
    shown = rows[:top] + [r for r in rows[top:] if r["baseline"]]
    cells = []
    for r in shown:
        interval = "" if r["ci_low"] is None else f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        cells.append(f"{r['name']} {r['score']:.3f}{interval}" + " (selected)" * r["selected"])
    chances = []
    for p in ranking.get("pairwise") or []:
        who = "the runner-up" if p["pair"] == "top_vs_runner_up" else "B"
        tie = f" (tie {p['p_tie']:.3f})" if p["p_tie"] >= 5e-4 else ""
        chances.append(f"P({p['a_name']} beats {p['b_name']}, {who}) = {p['p_better']:.3f}{tie}")
    fallback, names = ranking.get("fallback"), {e["handle"]: e["name"] for e in ranking["experts"]}
    said = ""
    if fallback:
        fired = "fired" if fallback["fired"] else "did not fire"
        said = f"fallback to B {fired} (needs P >= {fallback['confidence']:g})"
        said += f": B replaces {names[fallback['proxy_selected']]}" * fallback["fired"]
    return {"candidates": "; ".join(cells), "chances": "; ".join(chances), "fallback": said}


def confidence_lines(ranking):
    """`ranking_confidence` as the console lines `python -m vtab_eval.rank` prints."""
    said = ranking_confidence(ranking)
    level = (ranking.get("confidence") or {}).get("level")
    how = f"[{100 * level:g}% interval]" if level else "(no interval: no per-image hits)"
    lines = [f"top candidates, score {how}: {said['candidates']}"]
    return lines + [said[k] for k in ("chances", "fallback") if said[k]]


def _confidence_section(all_results, task_names):
    """The report's "How sure each pick is" lines: a row per ranking with two or more scored
    experts (the first selection's), or none."""
    rows = []
    for name in task_names:
        for method, by_task in all_results.items():
            ranking = (by_task.get(name) or {}).get("ranking")
            if ranking and len(plots.ranking_rows(ranking)) > 1:
                said = ranking_confidence(ranking)
                cells = [said["chances"] or "—", said["fallback"] or "—"]
                rows.append([name, method, said["candidates"], *cells])
    if not rows:
        return []
    header = "Task|Selector|Top candidates: score [interval]|Win probabilities|Fallback".split("|")
    return [
        "",
        "## How sure each pick is (the ranking of the first selection)",
        "",
        *_table(header, rows),
        "",
        "Intervals: bootstrap over the task's images, shown only for selectors with per-image",
        "hits (knn, linear_loo, ncm; docs/selection.md); P: the paired bootstrap probability that",
        "the first expert beats the second on the same resampled images. P near 0.5 is a coin toss.",
    ]


def _cost_section(all_results):
    """ "What each pick cost": per method, the mean over tasks of its results' `cost`."""
    rows = []
    for method, by_task in all_results.items():
        costs = [r["cost"] for r in by_task.values() if r.get("cost")]
        if costs:
            mean = {k: sum(c[k] for c in costs) / len(costs) for k in costs[0]}
            counts = [f"{mean[k]:,.0f}" for k in ("forward_passes", "finetune_steps")]
            rows.append([method, *counts, f"{mean['fine_tunes']:.2f}"])
    if not rows:
        return []
    header = ["Method", "Forward passes", "Fine-tuning steps", "Fine-tunes"]
    return [
        "",
        "## What each pick cost (mean per task, one selection)",
        "",
        *_table(header, rows),
        "",
        "Forward passes: images x modules embedded to rank (read from the cache or not). Steps:",
        "the fine-tunes the choice itself needs (probes; hindsight: every candidate's tuning and",
        "first retrain), not the pick's own. Fine-tunes: both in units of one fine-tune at the",
        f"task's first sweep setting, a training image counted as {plan.TRAIN_PASSES} forward "
        "passes.",
    ]


def _random_search_note(all_results, task_names):
    """Lines saying that the tasks fine-tuned with `--sweep=random_search` searched this package's
    own space (the result files' `sweep_preset`), or none."""
    searched = [
        name
        for name in task_names
        if any(
            (r.get(name) or {}).get("sweep_preset") == "random_search" for r in all_results.values()
        )
    ]
    if not searched:
        return []
    return [
        "",
        f"Random search ({', '.join(searched)}): the settings were drawn from this package's own",
        'search space (`vtab_eval.sweeps.random_search`; docs/evaluation.md, "Sweeps"), not the',
        "paper's, which gives only their number (36) for table 3. Each result file lists the settings",
        "(`sweep`).",
    ]


def _knn_scores(all_results):
    """task -> expert name -> (score, selected) from the knn rankings."""
    knn = (all_results.get("knn") or {}).values()
    rankings = {r["task"]: r["ranking"] for r in knn if r.get("ranking")}
    return {
        task: {
            e["name"]: (e["score"], e["handle"] == ranking["selected"])
            for e in ranking["experts"]
            if e.get("score") is not None
        }
        for task, ranking in rankings.items()
    }


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


def compare(output_dirs):
    """Side-by-side report of several `run` output folders: each (folder, method) is one row
    "label:method" (label: the folder's name)."""
    merged = {}
    for directory in output_dirs:
        label = os.path.basename(os.path.normpath(directory))
        for method, results in load_results(directory).items():
            merged[f"{label}:{method}"] = results
    return markdown_report(merged, title="Comparison")
