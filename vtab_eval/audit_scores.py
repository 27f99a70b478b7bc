"""Scores of the selection audit from its accuracy tables and proxy picks alone: per task every
policy's pick, regret, hit and loss against B, each proxy's weighted tau; over tasks, means with
bootstrap intervals, proxy timing and the seed spread. `rescore` redoes them for a finished audit.
"""

import copy
import functools

from vtab_eval import audit_metrics as metrics

AUDIT_FORMAT = 1
ALWAYS_BASELINE = "baseline"
AGNOSTIC = "agnostic"
RANDOM = "random"
FALLBACK_SUFFIX = "+fallback"


def policy_names(proxies, row_proxies):
    """Every policy the audit scores, in report order (`row_proxies`: those with a fallback)."""
    fallbacks = [p + FALLBACK_SUFFIX for p in proxies if p in row_proxies]
    return [*proxies, *fallbacks, ALWAYS_BASELINE, AGNOSTIC, RANDOM]


def task_policies(acc, proxies, baseline, agnostic_pick):
    """Per policy of one task (`proxies`: its proxy entries): the pick, regret, hit, loss vs B."""
    mean = metrics.means(acc)
    base_sd = metrics.sample_sd([metrics.POINTS * a for a in acc[baseline]])

    def scored(pick, **extra):
        loss = metrics.POINTS * (mean[baseline] - mean[pick])
        return {
            "pick": pick,
            "regret": metrics.regret(acc, pick),
            "split_half_regret": metrics.split_half_regret(acc, pick),
            "hit": 1.0 if metrics.hit(acc, pick) else 0.0,
            "loss_vs_baseline": loss,
            "worse_than_baseline_sd": None if base_sd is None else bool(loss > base_sd),
            **extra,
        }

    policies = {proxy: scored(entry["pick"]) for proxy, entry in proxies.items()}
    for proxy, entry in proxies.items():
        if (fb := entry["fallback"]) is not None:
            policies[proxy + FALLBACK_SUFFIX] = scored(fb["pick"], fired=fb["fired"])
    policies[ALWAYS_BASELINE] = scored(baseline)
    if agnostic_pick is not None:
        policies[AGNOSTIC] = scored(agnostic_pick)
    full, half = metrics.random_regret(acc)
    policies[RANDOM] = {
        "pick": None,
        "regret": full,
        "split_half_regret": half,
        "hit": len(metrics.hindsight_best(acc)) / len(acc),
        "loss_vs_baseline": metrics.POINTS * (mean[baseline] - sum(mean.values()) / len(mean)),
        "worse_than_baseline_sd": None,
    }
    return policies


def _score_policies(tasks, tables, baseline):
    """Sets every task's "policies" from its accuracy table and its proxies' picks."""
    agnostic = metrics.agnostic_picks(tables)
    for name, task in tasks.items():
        task["policies"] = task_policies(tables[name], task["proxies"], baseline, agnostic[name])


def score_tasks(jobs, ranked, finetuned, candidates, baseline):
    """Stage 3 per task of `jobs`: accuracy table, every proxy's weighted tau (added to its entry
    in `ranked`, {task: `rank_task` result}) and every policy's scores, from `finetuned`
    ({task: {candidate: [(score, spec key) per seed]}}), `candidates` (names) and B's name."""
    tables = {t: {c: [s for s, _ in v] for c, v in by.items()} for t, by in finetuned.items()}
    tasks = {}
    for job in jobs:
        name = job.task.name
        acc = tables[name]
        mean = metrics.means(acc)
        for entry in ranked[name]["proxies"].values():
            entry["tau"] = metrics.weighted_tau(entry["scores"], acc, entry["higher_is_better"])
        tasks[name] = {
            "group": job.task.group,
            "metric": job.task.metric,
            "accuracy": {
                c: {
                    "seeds": acc[c],
                    "mean": mean[c],
                    "sd": metrics.sample_sd([metrics.POINTS * a for a in acc[c]]),
                    "spec_keys": [k for _, k in finetuned[name][c]],
                }
                for c in candidates
            },
            "hindsight_best": metrics.hindsight_best(acc),
            "forward": ranked[name]["forward"],
            "proxies": ranked[name]["proxies"],
        }
    _score_policies(tasks, tables, baseline)
    return tasks


def rescore(audit):
    """A new audit dict: `audit` (of `audit.json`, left unmodified) with the hindsight best, every
    policy and the aggregate scored again by today's `audit_metrics` from its stored accuracies
    per seed and proxy picks; ValueError if it is not an audit of this format."""
    if not isinstance(audit, dict) or audit.get("format") != AUDIT_FORMAT:
        raise ValueError(f"not an audit.json of format {AUDIT_FORMAT!r}")
    out = copy.deepcopy(audit)
    tasks = out["tasks"]
    tables = {
        t: {c: v["accuracy"][c]["seeds"] for c in out["candidates"]} for t, v in tasks.items()
    }
    for name, task in tasks.items():
        task["hindsight_best"] = metrics.hindsight_best(tables[name])
    _score_policies(tasks, tables, out["baseline"])
    n_resamples = out["bootstrap"]["n_resamples"]
    out["aggregate"] = aggregate(
        tasks, out["policies"], out["proxies"], out["reference"], n_resamples
    )
    return out


def aggregate(tasks, policies, proxies, reference, n_resamples):
    """Per policy, over tasks: means with bootstrap intervals, counts and group means."""
    interval = functools.partial(metrics.mean_interval, n_resamples=n_resamples)
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
        taus = [tasks[t]["proxies"][policy]["tau"] for t in rows] if policy in proxies else None
        item["weighted_tau"] = None if taus is None else interval(taus)
        groups = {}
        for t, r in rows.items():
            groups.setdefault(tasks[t]["group"] or "other", []).append(r["regret"])
        item["groups"] = {g: {"mean": sum(v) / len(v), "n": len(v)} for g, v in groups.items()}
        out[policy] = item
    return out


def timing(tasks, proxies, reference, n_resamples):
    """Proxy seconds on cached features per task (mean, interval, ratio to the reference's total)
    and the shared forward passes."""
    seconds = {p: [v["proxies"][p]["seconds"] for v in tasks.values()] for p in proxies}
    total = sum(seconds[reference])
    forward = [v["forward"] for v in tasks.values()]
    return {
        "proxies": {
            p: {
                "seconds": metrics.mean_interval(seconds[p], n_resamples=n_resamples),
                "ratio_to_reference": sum(seconds[p]) / total if total else None,
            }
            for p in proxies
        },
        "forward": {k: sum(f[k] for f in forward) for k in ("seconds", "computed", "cached")},
        "reference": reference,
    }


def seed_spread(tasks, candidates):
    """Per candidate: its fine-tunes' seed-to-seed sd (points) per task, pooled, min and max."""
    out = {}
    for name in candidates:
        sds = {t: v["accuracy"][name]["sd"] for t, v in tasks.items()}
        known = [s for s in sds.values() if s is not None]
        out[name] = {
            "pooled_sd": metrics.pooled_sd(known),
            "min_sd": min(known) if known else None,
            "max_sd": max(known) if known else None,
            "tasks": sds,
        }
    return out
