"""The selection audit's report, drawn from the audit dict (docs/selection.md, "Audit"): audit.md
and, per task, a plot of proxy score against accuracy. Accuracies and regrets are in points.
"""

import os

import numpy as np

from bit_experts.training import slice_eval
from vtab_eval import files, plan, plots

PANEL_COLUMNS = 3


def _num(value, digits=1, signed=False):
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(item, digits=1, signed=False, scale=1.0):
    """`mean [low, high]` of a `audit_metrics.mean_interval` dict (scaled), `mean (n = 1)` for
    one value, or `–`."""
    if not item or item.get("mean") is None:
        return "–"
    text = _num(scale * item["mean"], digits, signed)
    if item.get("ci_low") is not None:
        text += f" [{_num(scale * item['ci_low'], digits, signed)}, "
        text += f"{_num(scale * item['ci_high'], digits, signed)}]"
    elif item.get("n") == 1:
        text += " (n = 1)"
    return text


def _count(item):
    return "–" if not item else f"{item['count']}/{item['of']}"


def _aggregate_table(audit):
    ref = audit["reference"]
    lines = [
        f"| policy | regret | split-half regret | top-1 hits (%) | weighted τ | regret − {ref} | "
        "loss vs B | max loss vs B | worse than B by > B's sd | fallback fired |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for policy in audit["policies"]:
        item = audit["aggregate"].get(policy)
        if item is None:
            continue
        lines.append(
            f"| {policy} | {_interval(item['regret'])} | {_interval(item['split_half_regret'])} | "
            f"{_interval(item['hit_rate'], 0, scale=100.0)} | "
            f"{_interval(item['weighted_tau'], 2)} | "
            f"{_interval(item['regret_minus_reference'], 1, True)} | "
            f"{_interval(item['loss_vs_baseline'], 1, True)} | "
            f"{_num(item['max_loss_vs_baseline'], 1, True)} | "
            f"{_count(item['worse_than_baseline_sd'])} | {_count(item['fallback_fired'])} |"
        )
    return lines


def _cost_order(audit):
    """The policies with a cost, cheapest first (ties: report order)."""
    found = [p for p in audit["policies"] if (audit["aggregate"].get(p) or {}).get("cost")]
    return sorted(found, key=lambda p: audit["aggregate"][p]["cost"]["fine_tunes"])


def _cost_table(audit):
    ref = audit["reference"]
    lines = [
        f"| policy | regret | regret − {ref} | regret − baseline | regret − agnostic | forward "
        "passes | fine-tuning steps | cost (fine-tunes) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for policy in _cost_order(audit):
        item = audit["aggregate"][policy]
        paired = [item["regret_minus_reference"], *item["regret_minus"].values()]
        cost = item["cost"]
        lines.append(
            f"| {policy} | {_interval(item['regret'])} | "
            + " | ".join(_interval(p, 1, True) for p in paired)
            + f" | {cost['forward_passes']:,.0f} | {cost['finetune_steps']:,.0f} | "
            f"{cost['fine_tunes']:.2f} |"
        )
    seconds = audit["timing"].get("fine_tune_seconds") or {}
    full, probe = seconds.get("full") or {}, seconds.get("probe") or {}
    lines += [
        "",
        "Cost per task of choosing, besides the pick's own fine-tune: forward passes (images x "
        "modules embedded to rank, cached or not) and the steps of the fine-tunes the choice "
        "needs (probes on the tuning splits; hindsight: every candidate's); cost in units of one "
        "fine-tune at the task's first sweep setting, a training image counted as "
        f"{plan.TRAIN_PASSES} forward passes. `agnostic` spends nothing on the task (it reads the "
        "other tasks' hindsight). Cheapest first: read it as a curve from no selection to "
        "hindsight.",
    ]
    if probe.get("mean") is not None and full.get("mean"):
        lines += [
            "",
            f"Measured: a probe took {_interval(probe)} s, a full fine-tune {_interval(full)} s "
            f"(setup and evaluation included), so by time a probe costs "
            f"{probe['mean'] / full['mean']:.2f} of a fine-tune.",
        ]
    return lines + ["", "![regret against cost](plots/regret_cost.png)"]


def _group_table(audit):
    groups = sorted({g for item in audit["aggregate"].values() for g in item["groups"]})
    lines = ["| policy | " + " | ".join(groups) + " | all |", "|---|" + "---|" * (len(groups) + 1)]
    for policy in audit["policies"]:
        item = audit["aggregate"].get(policy)
        if item is None:
            continue
        found = [item["groups"].get(g) for g in groups]
        cells = ["–" if not f else f"{f['mean']:.1f} (n = {f['n']})" for f in found]
        cells.append(_num(item["regret"]["mean"]))
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return lines


def _timing_table(audit):
    timing = audit["timing"]
    lines = [
        f"| proxy | ms per task on cached features | × {timing['reference']} (total time) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {p} | {_interval(i['seconds'], 2, scale=1e3)} | {_num(i['ratio_to_reference'], 2)} |"
        for p, i in timing["proxies"].items()
    ]
    forward = timing["forward"]
    lines += [
        "",
        f"Shared forward passes (one per candidate and task, feeding every proxy): "
        f"{forward['seconds']:.1f} s in all, {forward['computed']} computed and "
        f"{forward['cached']} read from the feature cache (a cached pass costs only the read).",
    ]
    return lines


def _spread_table(audit):
    lines = ["| candidate | pooled sd | smallest | largest |", "|---|---|---|---|"]
    return lines + [
        f"| {n} | {_num(i['pooled_sd'], 2)} | {_num(i['min_sd'], 2)} | {_num(i['max_sd'], 2)} |"
        for n, i in audit["seed_sd"].items()
    ]


def _task_section(audit, task_name, task):
    proxies, probes = audit["proxies"], task.get("probes")
    best = ", ".join(task["hindsight_best"])
    lines = [
        f"### {task_name} ({task['group'] or 'no group'})",
        "",
        f"Hindsight best: {best}. Accuracy in % (mean ± sd over "
        f"{len(audit['seeds'])} seeds); proxy scores as each proxy reports them"
        + (
            "; probe: validation accuracy of the probe fine-tune (%, mean over seeds)."
            if probes
            else "."
        ),
        "",
        "| candidate | accuracy | " + " | ".join(proxies) + " |" + (" probe |" if probes else ""),
        "|---|---|" + "---|" * (len(proxies) + bool(probes)),
    ]
    for name, acc in task["accuracy"].items():
        cells = []
        for p in proxies:
            score = task["proxies"][p]["scores"].get(name)
            mark = " ◀" if task["proxies"][p]["pick"] == name else ""
            cells.append(("–" if score is None else f"{score + 0.0:.4g}") + mark)  # no "-0"
        if probes:
            cells.append(f"{100 * np.mean(probes['scores'][name]):.1f}")
        sd = "" if acc["sd"] is None else f" ± {acc['sd']:.1f}"
        star = " **★**" if name in task["hindsight_best"] else ""
        lines.append(f"| {name}{star} | {100 * acc['mean']:.1f}{sd} | " + " | ".join(cells) + " |")
    taus = ", ".join(f"{p} {_num(task['proxies'][p]['tau'], 2)}" for p in proxies)
    lines += [
        "",
        f"Weighted τ: {taus}.",
        "",
        "| policy | pick | regret | split-half regret | loss vs B | fallback |",
        "|---|---|---|---|---|---|",
    ]
    for policy in audit["policies"]:
        row = task["policies"].get(policy)
        if row is None:
            continue
        fired = "" if "fired" not in row else ("fired" if row["fired"] else "kept")
        pick = row["pick"]
        pick = pick if isinstance(pick, str | None) else " / ".join(pick) + " (per seed)"
        lines.append(
            f"| {policy} | {pick or '(uniform)'} | {_num(row['regret'])} | "
            f"{_num(row['split_half_regret'], 1, True)} | {_num(row['loss_vs_baseline'], 1, True)} "
            f"| {fired} |"
        )
    lines += ["", f"![{task_name}](plots/{files.task_slug(task_name)}.png)", ""]
    return lines


def markdown(audit):
    """audit.md: setup, aggregate, groups, time, seed spread, expert quality, per task."""
    n_tasks, seeds = len(audit["tasks"]), audit["seeds"]
    boot = audit["bootstrap"]
    overlap = "Intervals that overlap do not separate two policies. "
    lines = [
        "# Selection audit",
        "",
        *([f"Command: `{audit['command']}`.", ""] if audit.get("command") else []),
        f"Collection `{audit['collection']}`: {len(audit['candidates'])} candidates "
        f"(B = `{audit['baseline']}` and the experts), {n_tasks} tasks, seeds "
        f"{', '.join(map(str, seeds))} (n = {len(seeds)} fine-tunes per candidate and task)"
        + (", **quick mode** (a smoke run: the numbers mean nothing)" if audit["quick"] else "")
        + f". Fallback confidence {audit['fallback_confidence']}. Wall time "
        f"{audit['wall_seconds'] / 60:.1f} min.",
        "",
        "Regret: the hindsight best's mean test accuracy over seeds minus the pick's, in points. "
        "Split-half regret: hindsight chosen on half of the seeds and both scored on the other "
        "half (every split averaged; no winner's curse, so it can be negative). `random` is the "
        "exact expectation over a uniform pick; `agnostic` picks the candidate with the best mean "
        "accuracy on the other tasks; `baseline` always picks B; `+fallback` picks B unless the "
        "proxy's best expert beats B with paired bootstrap probability ≥ the confidence. "
        f"Aggregates are means over tasks with {int(100 * boot['level'])}% bootstrap intervals "
        f"over tasks ({boot['method'].split(',')[0]}, {boot['n_resamples']} resamples, seed "
        f"{boot['seed']}); `regret − {audit['reference']}` is paired per task. "
        + ("With one task there are no intervals. " if n_tasks < 2 else overlap),
        "",
    ]
    sections = {
        "Aggregate over tasks": _aggregate_table(audit),
        **({"Regret against cost": _cost_table(audit)} if _cost_order(audit) else {}),
        "Mean regret by group (points)": _group_table(audit),
        "Proxy time": _timing_table(audit),
        "Seed-to-seed sd of fine-tuned accuracy (points)": _spread_table(audit),
    }
    if audit.get("expert_quality"):
        quality = "Expert quality: accuracy on the expert's own upstream slice (held-out images)"
        sections[quality] = [slice_eval.format_table(audit["expert_quality"])]
    for title, body in sections.items():
        lines += [f"## {title}", "", *body, ""]
    lines += ["## Per task", ""]
    for name, task in audit["tasks"].items():
        lines += _task_section(audit, name, task)
    return "\n".join(lines).rstrip() + "\n"


def plot_task(audit, task_name, path):
    """One panel per proxy: each candidate's proxy score (with its interval, when the proxy has
    one) against its mean fine-tuned accuracy (with the seed sd); B, the hindsight best and the
    proxy's pick are marked."""
    plt = plots.pyplot()
    task = audit["tasks"][task_name]
    proxies = audit["proxies"]
    columns = min(PANEL_COLUMNS, len(proxies))
    rows = -(-len(proxies) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(proxies) :]:
        ax.set_visible(False)
    for ax, proxy in zip(axes.flat, proxies):
        entry = task["proxies"][proxy]
        for name, acc in task["accuracy"].items():
            score = entry["scores"].get(name)
            if score is None:
                continue
            ci = entry["ci"].get(name)
            xerr = None if ci is None else [[score - ci[0]], [ci[1] - score]]
            is_b, best = name == audit["baseline"], name in task["hindsight_best"]
            colour = "tab:red" if name == entry["pick"] else ("black" if is_b else "tab:blue")
            style = dict(color=colour, ecolor=colour, elinewidth=0.8, capsize=2)
            style.update(fmt="s" if is_b else ("*" if best else "o"), markersize=9 if best else 6)
            y = 100 * acc["mean"]
            ax.errorbar(score, y, xerr=xerr, yerr=acc["sd"], **style)
            ax.annotate(name, (score, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        base = task["accuracy"].get(audit["baseline"])
        if base is not None:
            ax.axhline(100 * base["mean"], color="grey", linestyle=":", linewidth=0.8)
        tau = entry.get("tau")
        ax.set_title(f"{proxy} (weighted τ {'–' if tau is None else f'{tau:.2f}'})", fontsize=9)
        ax.set_xlabel(f"{proxy} score", fontsize=8)
        ax.set_ylabel("fine-tuned accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{task_name}: proxy score vs test accuracy (mean ± sd over "
        f"{len(audit['seeds'])} seeds)\nred: the proxy's pick; square and dotted line: B; "
        "star: hindsight best",
        fontsize=9,
    )
    fig.tight_layout()
    plots.save_png(fig, path)
    return path


def plot_cost(audit, path):
    """Each policy's mean regret with its interval over tasks against its mean cost in
    fine-tunes (symmetric log scale: 0 is no cost); policies at the same point share a label."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    points = {}
    for policy in _cost_order(audit):
        item = audit["aggregate"][policy]
        points.setdefault((item["cost"]["fine_tunes"], item["regret"]["mean"]), []).append(policy)
    for (x, y), names in points.items():
        regret = audit["aggregate"][names[0]]["regret"]
        low, high = regret["ci_low"], regret["ci_high"]
        yerr = None if low is None else [[y - low], [high - y]]
        ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=3, markersize=5)
        label = ", ".join(names)
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("cost per task (fine-tunes)", fontsize=8)
    ax.set_ylabel("mean regret (points)", fontsize=8)
    ax.set_title(
        f"Regret against cost over {len(audit['tasks'])} tasks (95% intervals)", fontsize=9
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plots.save_png(fig, path)
    return path


def write_plots(audit, plots_dir):
    """plots_dir/<task slug>.png for every task and plots_dir/regret_cost.png (when policies have
    a cost); returns the paths."""
    paths = [
        plot_task(audit, name, os.path.join(plots_dir, f"{files.task_slug(name)}.png"))
        for name in audit["tasks"]
    ]
    if _cost_order(audit):
        paths.append(plot_cost(audit, os.path.join(plots_dir, "regret_cost.png")))
    return paths
