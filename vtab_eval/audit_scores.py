"""Scores of the selection audit from its accuracy tables, proxy picks and probes alone: per
task every policy's pick, regret, hit, loss against B and cost, each proxy's weighted tau; over
tasks, means with bootstrap intervals, timing and the seed spread. `rescore` redoes them for a
finished audit.
"""

import copy
import functools

import numpy as np

from vtab_eval import audit_metrics as metrics
from vtab_eval import plan, selectors

AUDIT_FORMAT = 1
ALWAYS_BASELINE = "baseline"
AGNOSTIC = "agnostic"
RANDOM = "random"
HINDSIGHT = "hindsight"
FALLBACK_SUFFIX = "+fallback"
PAIRED = (ALWAYS_BASELINE, AGNOSTIC)  # besides the reference, the policies regret is paired with


def policy_names(proxies, row_proxies, probe_policies=()):
    """Every policy the audit scores, in report order (`row_proxies`: those with a fallback)."""
    fallbacks = [p + FALLBACK_SUFFIX for p in proxies if p in row_proxies]
    return [*proxies, *fallbacks, *probe_policies, ALWAYS_BASELINE, AGNOSTIC, RANDOM, HINDSIGHT]


def probe_picks(policy, task, candidates, baseline):
    """(finalists, the pick of every seed) of probe policy `policy` (`selectors.policies`) on an
    audited task: finalists from its proxy's scores (ties in `candidates`' order), each seed's
    pick the best of their probes with that seed (`task["probes"]`, every candidate probed)."""
    selector, higher = selectors.get(policy), True
    scores = {c: 0.0 for c in candidates}
    if selector.proxy is not None:
        entry = task["proxies"][selector.proxy]
        scores = {c: entry["scores"][c] for c in candidates if entry["scores"].get(c) is not None}
        higher = entry["higher_is_better"]
    finalists = selector.finalists(scores, baseline, higher)
    probed = task["probes"]["scores"]
    seeds = range(len(probed[baseline]))
    picks = [selector.choose({f: probed[f][i] for f in finalists}).selected for i in seeds]
    return finalists, picks


def task_policies(acc, task, baseline, agnostic_pick, probe_policies=(), unit=None):
    """Per policy of one task (`acc`: its accuracy table in candidate order; `task`: its proxy
    entries, forward passes, probes and hindsight cost): the pick, regret, hit, loss vs B and
    (with `unit`, the sweep's first setting) cost."""
    mean = metrics.means(acc)
    base_sd = metrics.sample_sd([metrics.POINTS * a for a in acc[baseline]])
    passes = task["forward"].get("passes")  # None in audits made before it was counted

    def cost(forward=False, settings=()):
        if unit is None or passes is None:  # an audit made before costs: none at all
            return None
        return plan.cost(passes if forward else 0, settings, unit)

    def scored(pick, spent, **extra):
        loss = metrics.POINTS * (
            mean[baseline] - float(np.mean(metrics.pick_accuracies(acc, pick)))
        )
        return {
            "pick": pick,
            "regret": metrics.regret(acc, pick),
            "split_half_regret": metrics.split_half_regret(acc, pick),
            "hit": metrics.hit(acc, pick),
            "loss_vs_baseline": loss,
            "worse_than_baseline_sd": None if base_sd is None else bool(loss > base_sd),
            "cost": spent,
            **extra,
        }

    proxies = task["proxies"]
    policies = {proxy: scored(entry["pick"], cost(True)) for proxy, entry in proxies.items()}
    for proxy, entry in proxies.items():
        if (fb := entry["fallback"]) is not None:
            policies[proxy + FALLBACK_SUFFIX] = scored(fb["pick"], cost(True), fired=fb["fired"])
    for policy in probe_policies:
        finalists, picks = probe_picks(policy, task, list(acc), baseline)
        spent = [task["probes"]["setting"]] * len(finalists)
        spent = cost(selectors.get(policy).proxy is not None, spent)
        policies[policy] = scored(picks, spent, finalists=finalists)
    policies[ALWAYS_BASELINE] = scored(baseline, cost())
    if agnostic_pick is not None:
        policies[AGNOSTIC] = scored(agnostic_pick, cost())
    full, half = metrics.random_regret(acc)
    policies[RANDOM] = {
        "pick": None,
        "regret": full,
        "split_half_regret": half,
        "hit": len(metrics.hindsight_best(acc)) / len(acc),
        "loss_vs_baseline": metrics.POINTS * (mean[baseline] - sum(mean.values()) / len(mean)),
        "worse_than_baseline_sd": None,
        "cost": cost(),
    }
    policies[HINDSIGHT] = scored(metrics.hindsight_best(acc)[0], task.get("hindsight_cost"))
    return policies


def _score_policies(tasks, tables, baseline, sweeps, probe_policies):
    """Sets every task's "policies" from its accuracy table, proxies' picks and probes."""
    agnostic = metrics.agnostic_picks(tables)
    for name, task in tasks.items():
        unit = sweeps[name][0] if name in sweeps else None
        task["policies"] = task_policies(
            tables[name], task, baseline, agnostic[name], probe_policies, unit
        )


def score_tasks(jobs, ranked, finetuned, candidates, baseline, probes=None, probe_policies=()):
    """Stage 3 per task of `jobs`: accuracy table, every proxy's weighted tau (added to its entry
    in `ranked`, {task: `rank_task` result}) and every policy's scores, from `finetuned`
    ({task: {"cost": hindsight's, candidate: [(score, spec key, seconds) per seed]}}),
    `candidates` (names), B's name and `probes` ({task: `probe_candidates`' entry})."""
    costs = {t: by.pop("cost", None) for t, by in finetuned.items()}
    tables = {t: {c: [r[0] for r in v] for c, v in by.items()} for t, by in finetuned.items()}
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
                    "spec_keys": [r[1] for r in finetuned[name][c]],
                    "seconds": [r[2] for r in finetuned[name][c]],
                }
                for c in candidates
            },
            "hindsight_best": metrics.hindsight_best(acc),
            "hindsight_cost": costs[name],
            "forward": ranked[name]["forward"],
            "proxies": ranked[name]["proxies"],
            "probes": (probes or {}).get(name),
        }
    sweeps = {job.task.name: job.sweep for job in jobs}
    _score_policies(tasks, tables, baseline, sweeps, probe_policies)
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
    probe_policies = out.setdefault("probe_policies", [])  # none before they existed
    out["policies"] += [] if HINDSIGHT in out["policies"] else [HINDSIGHT]
    _score_policies(tasks, tables, out["baseline"], out["sweeps"], probe_policies)
    n_resamples = out["bootstrap"]["n_resamples"]
    out["aggregate"] = aggregate(
        tasks, out["policies"], out["proxies"], out["reference"], n_resamples
    )
    return out


def _paired(tasks, rows, other, interval):
    """The interval of the per-task regret of `rows` ({task: policy row}) minus `other`'s."""
    found = {t: v["policies"].get(other) for t, v in tasks.items()}
    return interval([r["regret"] - found[t]["regret"] for t, r in rows.items() if found[t]])


def _mean_cost(rows):
    """The mean over tasks of every cost number of `rows`, or None if a task has none."""
    costs = [r.get("cost") for r in rows.values()]
    if not costs or None in costs:
        return None
    return {k: sum(c[k] for c in costs) / len(costs) for k in costs[0]}


def aggregate(tasks, policies, proxies, reference, n_resamples):
    """Per policy, over tasks: means with bootstrap intervals, paired differences of regret,
    counts, group means and the mean cost."""
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
            "regret_minus": {o: _paired(tasks, rows, o, interval) for o in PAIRED},
            "cost": _mean_cost(rows),
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
    """Proxy seconds on cached features per task (mean, interval, ratio to the reference's total),
    the shared forward passes and the seconds of a full fine-tune and of a probe."""
    seconds = {p: [v["proxies"][p]["seconds"] for v in tasks.values()] for p in proxies}
    total = sum(seconds[reference])
    forward = [v["forward"] for v in tasks.values()]
    full = [x for v in tasks.values() for a in v["accuracy"].values() for x in a["seconds"]]
    probes = [v["probes"]["seconds"] for v in tasks.values() if v.get("probes")]
    probes = [x for by in probes for seconds in by.values() for x in seconds]
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
        "fine_tune_seconds": {  # as recorded in the memo, setup and evaluation included
            "full": metrics.mean_interval(full, n_resamples=n_resamples),
            "probe": metrics.mean_interval(probes, n_resamples=n_resamples),
        },
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
