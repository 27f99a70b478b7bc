"""Scores of the selection audit, from its stored accuracy tables and proxy picks alone.

Per task: every policy's pick, regret, split-half regret, hit, loss against B (`task_policies`),
each proxy's weighted tau (`score_tasks`); over tasks: means with bootstrap intervals (`aggregate`),
proxy timing (`timing`) and the seed-to-seed spread (`seed_spread`). `rescore` scores a finished
audit.json again with today's metrics, training and embedding nothing. docs/selection.md, "Audit".
"""

import copy

from vtab_eval import audit_metrics

AUDIT_FORMAT = 1
ALWAYS_BASELINE = "baseline"
AGNOSTIC = "agnostic"
RANDOM = "random"
FALLBACK_SUFFIX = "+fallback"


def policy_names(proxies, row_proxies):
    """Every policy the audit scores, in report order (`row_proxies`: those with a fallback)."""
    return [
        *proxies,
        *(p + FALLBACK_SUFFIX for p in proxies if p in row_proxies),
        ALWAYS_BASELINE,
        AGNOSTIC,
        RANDOM,
    ]


def task_policies(acc, ranked, baseline, agnostic_pick):
    """Per policy of one task: the pick and its regret, split-half regret, hit and loss vs B."""
    base_mean = audit_metrics.means(acc)[baseline]
    base_sd = audit_metrics.sample_sd([audit_metrics.POINTS * a for a in acc[baseline]])

    def scored(pick, **extra):
        loss = audit_metrics.POINTS * (base_mean - audit_metrics.means(acc)[pick])
        return {
            "pick": pick,
            "regret": audit_metrics.regret(acc, pick),
            "split_half_regret": audit_metrics.split_half_regret(acc, pick),
            "hit": 1.0 if audit_metrics.hit(acc, pick) else 0.0,
            "loss_vs_baseline": loss,
            "worse_than_baseline_sd": None if base_sd is None else bool(loss > base_sd),
            **extra,
        }

    policies = {}
    for proxy, entry in ranked["proxies"].items():
        policies[proxy] = scored(entry["pick"])
    for proxy, entry in ranked["proxies"].items():
        if entry["fallback"] is not None:
            fb = entry["fallback"]
            policies[proxy + FALLBACK_SUFFIX] = scored(fb["pick"], fired=fb["fired"])
    policies[ALWAYS_BASELINE] = scored(baseline)
    if agnostic_pick is not None:
        policies[AGNOSTIC] = scored(agnostic_pick)
    full, half = audit_metrics.random_regret(acc)
    mean = audit_metrics.means(acc)
    policies[RANDOM] = {
        "pick": None,
        "regret": full,
        "split_half_regret": half,
        "hit": len(audit_metrics.hindsight_best(acc)) / len(acc),
        "loss_vs_baseline": audit_metrics.POINTS * (base_mean - sum(mean.values()) / len(mean)),
        "worse_than_baseline_sd": None,
    }
    return policies


def score_tasks(jobs, ranked, finetuned, candidates, baseline):
    """Stage 3 per task: accuracy table, weighted tau of every proxy, and every policy's scores.

    Args:
      jobs: the audited `plan.Job`s.
      ranked: {task: `rank_task` result}; each proxy entry gets its "tau" here.
      finetuned: `finetune_hindsight`'s {task: {candidate: [(score, spec key) per seed]}}.
      candidates: candidate names in collection order; baseline: B's name.
    """
    tables = {t: {c: [s for s, _ in v] for c, v in by.items()} for t, by in finetuned.items()}
    agnostic = audit_metrics.agnostic_picks(tables)
    tasks = {}
    for job in jobs:
        name = job.task.name
        acc = tables[name]
        mean = audit_metrics.means(acc)
        for entry in ranked[name]["proxies"].values():
            entry["tau"] = audit_metrics.weighted_tau(
                entry["scores"], acc, entry["higher_is_better"]
            )
        tasks[name] = {
            "group": job.task.group,
            "metric": job.task.metric,
            "accuracy": {
                c: {
                    "seeds": acc[c],
                    "mean": mean[c],
                    "sd": audit_metrics.sample_sd([audit_metrics.POINTS * a for a in acc[c]]),
                    "spec_keys": [k for _, k in finetuned[name][c]],
                }
                for c in candidates
            },
            "hindsight_best": audit_metrics.hindsight_best(acc),
            "forward": ranked[name]["forward"],
            "proxies": ranked[name]["proxies"],
            "policies": task_policies(acc, ranked[name], baseline, agnostic[name]),
        }
    return tasks


def rescore(audit):
    """A finished audit (the dict of `audit.json`) scored again from its own stored results.

    Recomputes, from each task's stored accuracies per seed and each proxy's stored pick and
    fallback, the hindsight best, every policy (with the dataset-agnostic picks) and the aggregate,
    with today's `audit_metrics`; trains and embeds nothing. For results recorded before a change
    of the metrics (for example the tie tolerance). Returns a new dict; `audit` is not modified.

    Raises:
      ValueError: `audit` is not an audit of this format.
    """
    if not isinstance(audit, dict) or audit.get("format") != AUDIT_FORMAT:
        raise ValueError(f"not an audit.json of format {AUDIT_FORMAT!r}")
    out = copy.deepcopy(audit)
    tasks = out["tasks"]
    tables = {
        t: {c: v["accuracy"][c]["seeds"] for c in out["candidates"]} for t, v in tasks.items()
    }
    agnostic = audit_metrics.agnostic_picks(tables)
    for name, task in tasks.items():
        acc = tables[name]
        task["hindsight_best"] = audit_metrics.hindsight_best(acc)
        task["policies"] = task_policies(
            acc, {"proxies": task["proxies"]}, out["baseline"], agnostic[name]
        )
    n_resamples = out["bootstrap"]["n_resamples"]
    out["aggregate"] = aggregate(
        tasks, out["policies"], out["proxies"], out["reference"], n_resamples
    )
    return out


def aggregate(tasks, policies, proxies, reference, n_resamples):
    """Per policy, over tasks: means with bootstrap intervals, counts and group means."""

    def interval(values):
        return audit_metrics.mean_interval(values, n_resamples=n_resamples)

    out = {}
    ref = {t: v["policies"][reference]["regret"] for t, v in tasks.items()}
    for policy in policies:
        rows = {t: v["policies"][policy] for t, v in tasks.items() if policy in v["policies"]}
        if not rows:
            continue
        item = {
            "regret": interval([r["regret"] for r in rows.values()]),
            "split_half_regret": interval([r["split_half_regret"] for r in rows.values()]),
            "hit_rate": interval([r["hit"] for r in rows.values()]),
            "regret_minus_reference": interval([r["regret"] - ref[t] for t, r in rows.items()]),
            "loss_vs_baseline": interval([r["loss_vs_baseline"] for r in rows.values()]),
            "max_loss_vs_baseline": max(r["loss_vs_baseline"] for r in rows.values()),
            "num_tasks": len(rows),
        }
        worse = [r["worse_than_baseline_sd"] for r in rows.values()]
        worse = [w for w in worse if w is not None]
        item["worse_than_baseline_sd"] = {"count": sum(worse), "of": len(worse)}
        fired = [r["fired"] for r in rows.values() if "fired" in r]
        item["fallback_fired"] = {"count": sum(fired), "of": len(fired)} if fired else None
        proxy = policy if policy in proxies else None
        taus = [tasks[t]["proxies"][proxy]["tau"] for t in rows] if proxy else []
        item["weighted_tau"] = interval(taus) if proxy else None
        groups = {}
        for t, r in rows.items():
            groups.setdefault(tasks[t]["group"] or "other", []).append(r["regret"])
        item["groups"] = {g: {"mean": sum(v) / len(v), "n": len(v)} for g, v in groups.items()}
        out[policy] = item
    return out


def timing(tasks, proxies, reference, n_resamples):
    """Proxy seconds on cached features per task (mean, interval, ratio to the reference's total)
    and the shared forward passes."""
    totals = {p: sum(v["proxies"][p]["seconds"] for v in tasks.values()) for p in proxies}
    out = {"proxies": {}, "forward": {}}
    for p in proxies:
        out["proxies"][p] = {
            "seconds": audit_metrics.mean_interval(
                [v["proxies"][p]["seconds"] for v in tasks.values()], n_resamples=n_resamples
            ),
            "ratio_to_reference": totals[p] / totals[reference] if totals[reference] else None,
        }
    forward = [v["forward"] for v in tasks.values()]
    out["forward"] = {
        "seconds": sum(f["seconds"] for f in forward),
        "computed": sum(f["computed"] for f in forward),
        "cached": sum(f["cached"] for f in forward),
    }
    out["reference"] = reference
    return out


def seed_spread(tasks, candidates):
    """Per candidate: its fine-tunes' seed-to-seed sd (points) per task, pooled, min and max."""
    out = {}
    for name in candidates:
        sds = {t: v["accuracy"][name]["sd"] for t, v in tasks.items()}
        known = [s for s in sds.values() if s is not None]
        out[name] = {
            "pooled_sd": audit_metrics.pooled_sd(known),
            "min_sd": min(known) if known else None,
            "max_sd": max(known) if known else None,
            "tasks": sds,
        }
    return out
