"""The selection audit: every proxy and policy scored by regret against hindsight (issue 11),
next to what it cost (issue 28).

`run(config)` returns the audit dict (docs/selection.md, "Audit") in three stages: `rank_task`
(one forward pass per candidate, each feature proxy timed on the cached features and ranked),
`finetune_hindsight` (as `vtab_eval.run`'s hindsight, through the same memo) with
`probe_candidates` (every candidate probed as the probe policies probe their finalists), and
`audit_scores`.
"""

import functools
import os
import time
import timeit

from bit_experts import atomic_files, determinism, lazy_api
from vtab_eval import audit_metrics, audit_scores, checks, files, plan, selectors

# TensorFlow: imported when the first feature, fine-tune or expert check runs, after the checks.
embed = lazy_api.module("vtab_eval.embed")
ranking = lazy_api.module("vtab_eval.ranking")
runner = lazy_api.module("vtab_eval.runner")
slice_eval = lazy_api.module("bit_experts.training.slice_eval")

MIN_SEEDS = 3  # the study's minimum; quick allows fewer
DEFAULT_SEEDS = [0, 1, 2]
QUICK_SEEDS = [0, 1]
QUICK_RESAMPLES = 999
PROXY_REPEATS = 2  # proxy time = the fastest of this many runs (the first may trace TF code)


def settings(config):
    """(seeds, proxies, n_resamples) of the audit section, with their defaults filled in."""
    audit = config["audit"]
    default_seeds = QUICK_SEEDS if audit["quick"] else DEFAULT_SEEDS
    seeds = default_seeds if audit["seeds"] is None else audit["seeds"]
    proxies = audit["proxies"] or selectors.names(kind="feature")
    n_resamples = QUICK_RESAMPLES if audit["quick"] else config["selection"]["n_resamples"]
    return list(seeds), list(proxies), n_resamples


def probe_policies(config):
    """The probe policies to audit: `--probe_policies`, else every registered one whose proxy is
    audited (or that has none)."""
    chosen = config["audit"]["probe_policies"]
    if chosen is not None:
        return list(chosen)
    _, proxies, _ = settings(config)
    found = [selectors.get(n) for n in selectors.names(kind="probe")]
    return [p.name for p in found if p.proxy is None or p.proxy in proxies]


def _probe_problems(config):
    chosen, problems = probe_policies(config), []
    known = selectors.names(kind="probe")
    _, proxies, _ = settings(config)
    if any(p not in known for p in chosen):
        return [f"--probe_policies={chosen}: expected some of {list(known)}"]
    for name in chosen:
        proxy = selectors.get(name).proxy
        if proxy is not None and proxy not in proxies:
            problems.append(f"--probe_policies: {name} needs its proxy {proxy!r} in --proxies")
    if len({selectors.get(n).fraction for n in chosen}) > 1:
        problems.append(f"--probe_policies={chosen}: they probe with other steps; audit apart")
    return problems


def check_arguments(config):
    """Problems (one line each) with the audit's own settings."""
    seeds, proxies, _ = settings(config)
    audit, problems = config["audit"], _probe_problems(config)
    if any(s < 0 for s in seeds):
        problems.append(f"--seeds={seeds}: expected non-negative integers")
    elif len(set(seeds)) != len(seeds):
        problems.append(f"--seeds={seeds}: a seed is repeated; expected distinct seeds")
    elif not seeds or (len(seeds) < MIN_SEEDS and not audit["quick"]):
        problems.append(
            f"--seeds={seeds}: the audit needs at least {MIN_SEEDS} seeds (fewer only with --quick)"
        )
    known = selectors.names(kind="feature")
    if any(p not in known for p in proxies):
        problems.append(f"--proxies={proxies}: expected some of {known}")
    elif audit["reference"] not in proxies:
        problems.append(f"--reference={audit['reference']!r}: expected one of --proxies {proxies}")
    upstream = audit["upstream_dir"]
    if upstream and atomic_files.is_url(upstream):
        problems.append(
            f"--upstream_dir={upstream}: is a URL; slice accuracy reads a local work directory: "
            "copy it to a local disk"
        )
    elif upstream and not os.path.isdir(upstream):
        problems.append(f"--upstream_dir={upstream}: not a folder; expected an upstream workdir")
    return problems


def _pool_problems(pool):
    found = selectors.candidates(pool, include_baseline=True)
    names = [plan.entry_name(e) for e in found]
    problems = []
    if selectors.find_baseline(pool) is None:
        problems.append("--collection: it has no baseline B (kind 'baseline'); the audit needs B")
    if len(found) < 2:
        problems.append(f"--collection: {len(found)} candidate(s); the audit needs B and experts")
    if len(set(names)) != len(names):
        problems.append(f"--collection: candidate names repeat ({names}); expected unique names")
    return problems


def rank_task(job, pool, proxies, options, cache_dir, data_dir, log):
    """Stage 1 for one task: the shared forward pass, each proxy's time (the fastest of
    PROXY_REPEATS), scores and picks; `options`: the ranking options every proxy shares."""
    candidates = selectors.candidates(pool, include_baseline=True)
    names = {plan.entry_handle(e): plan.entry_name(e) for e in candidates}
    start = time.perf_counter()
    where = dict(cache_dir=cache_dir, data_dir=data_dir)
    embedded = embed.embed_pool(
        candidates, job.task, options["split"], options["resolution"], **where
    )
    forward = {
        "seconds": time.perf_counter() - start,
        "computed": len(embedded.computed),
        "cached": len(embedded.cached),
    }
    if not embedded.features:
        raise ValueError(f"task {job.task.name}: no candidate could be embedded")
    labels = selectors.validate_task_labels(embedded.labels, job.task.num_classes)
    forward["passes"] = int(labels.size) * len(embedded.features)  # images x modules
    out = {}
    for proxy in proxies:
        selector = selectors.get(proxy)
        run_once = functools.partial(selector.score_features, embedded.features, labels)
        seconds = min(timeit.repeat(run_once, number=1, repeat=PROXY_REPEATS))
        policy = "baseline" if selector.rows else "none"
        found = ranking.rank(pool, job.task, proxy, dict(options, fallback=policy), **where)
        fallback = found.get("fallback")
        own = fallback["proxy_selected"] if fallback else found["selected"]
        entry = {
            "seconds": seconds,
            "scores": {e["name"]: e["score"] for e in found["experts"]},
            "ci": {
                e["name"]: [e["ci_low"], e["ci_high"]]
                for e in found["experts"]
                if e.get("ci_low") is not None
            },
            "higher_is_better": found["higher_is_better"],
            "pick": names[own],
            "pairwise": found.get("pairwise", []),
            "left_out": found.get("left_out", []),
            "fallback": None,
        }
        if fallback:
            entry["fallback"] = {
                "pick": names[found["selected"]],
                "fired": bool(fallback["fired"]),
                "p_better": fallback["p_better"],
                "best_expert": names.get(fallback["best_expert"]),
                "confidence": fallback["confidence"],
            }
        out[proxy] = entry
        log(f"{job.task.name} / {proxy}: picks {entry['pick']} ({seconds * 1e3:.1f} ms)")
    return {"forward": forward, "proxies": out}


def finetune_hindsight(jobs, pool, seeds, config, executor):
    """Stage 2: every candidate fine-tuned with every seed, as `vtab_eval.run`'s hindsight with
    `--seed=s` (one selection, one retrain); returns {task: {"cost": `plan.pick_cost` of the first
    seed's, candidate: [(score, spec key, seconds) per seed]}}."""
    one = dict(config, protocol={"num_selections": 1, "num_retrains": 1})
    plans = [
        (j, plan.hindsight_tracks(j, pool, dict(one, seed=int(s)))) for j in jobs for s in seeds
    ]
    runner.run_tracks([t for _, tracks in plans for t in tracks], executor)
    found = {}
    for job, tracks in plans:
        by_candidate = found.setdefault(job.task.name, {"cost": plan.pick_cost(tracks)})
        for track in tracks:
            spec = track.retrains[0][0]
            result = executor.memo.get(spec)
            row = (float(result["score"]), spec.key, result["seconds"])
            by_candidate.setdefault(track.candidate, []).append(row)
    return found


def probe_candidates(jobs, pool, seeds, config, executor, policy):
    """Stage 2, probes: every candidate probed with every seed as `vtab_eval.run
    --selectors=<policy> --seed=s` probes its finalists (`plan.probe_specs`, selection 0), so any
    finalists' probes are known; returns {task: {"setting", "scores" (validation), "seconds",
    "spec_keys"}}, each {candidate: [one per seed]}."""
    found = selectors.candidates(pool, include_baseline=True)
    policy, deterministic = selectors.get(policy), config["deterministic"]
    plans = [
        (job, plan.probe_specs(policy, job, found, int(s), 0, deterministic))
        for job in jobs
        for s in seeds
    ]
    executor.run([spec for _, specs in plans for spec in specs])
    out = {}
    for job, specs in plans:
        entry = out.setdefault(job.task.name, {"setting": specs[0].setting})
        for spec in specs:
            result = executor.memo.get(spec)
            values = {
                "scores": result["score"],
                "seconds": result["seconds"],
                "spec_keys": spec.key,
            }
            for key, value in values.items():
                entry.setdefault(key, {}).setdefault(spec.name, []).append(value)
    return out


def run(config, *, executor=None, log=print, command=None):
    """Runs (or resumes) the audit of `config`; returns the audit dict and "trained" (the number
    of fine-tunes this call ran).

    Raises:
      ValueError: every problem with the input, one line each, before anything is run.
    """
    started = time.time()
    determinism.fix_threads(config["executor"]["threads_per_item"])  # before TF starts
    seeds, proxies, n_resamples = settings(config)
    problems, probing = check_arguments(config), probe_policies(config)
    pool, jobs, _ = checks.prepare(config, log, extra_problems=problems, probe=bool(probing))
    determinism.configure((seeds or [0])[0], config["deterministic"])  # after the checks
    checks.raise_problems(_pool_problems(pool))
    _, memo_dir, cache_dir = files.output_paths(config)
    candidates = [plan.entry_name(e) for e in selectors.candidates(pool, include_baseline=True)]
    baseline = plan.entry_name(selectors.find_baseline(pool))
    selection = config["selection"]
    quality = None
    if config["audit"]["upstream_dir"]:
        upstream = config["audit"]["upstream_dir"]
        log(f"expert quality: held-out upstream slices of {upstream}")
        try:
            quality = slice_eval.expert_quality(upstream)
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise ValueError(f"--upstream_dir={upstream}: {err}") from None
    options = ranking.options_of(config, seed=0)
    options.update(include_baseline=True, cache_only=True, n_resamples=n_resamples)
    ranked = {
        job.task.name: rank_task(job, pool, proxies, options, cache_dir, config["data_dir"], log)
        for job in jobs
    }
    executor, probes = executor or runner.make_executor(config, log), None
    try:
        finetuned = finetune_hindsight(jobs, pool, seeds, config, executor)
        if probing:
            probes = probe_candidates(jobs, pool, seeds, config, executor, probing[0])
    finally:
        executor.close()
    tasks = audit_scores.score_tasks(jobs, ranked, finetuned, candidates, baseline, probes, probing)
    rows = [p for p in proxies if selectors.get(p).rows]
    policies = audit_scores.policy_names(proxies, rows, probing)
    reference = config["audit"]["reference"]
    audit = {
        "format": audit_scores.AUDIT_FORMAT,
        "command": command,
        "collection": str(config["collection"]),
        "memo_dir": memo_dir,
        "candidates": candidates,
        "baseline": baseline,
        "seeds": seeds,
        "quick": bool(config["audit"]["quick"]),
        "proxies": proxies,
        "probe_policies": probing,
        "policies": policies,
        "reference": reference,
        "fallback_confidence": float(selection["fallback_confidence"]),
        "selection_resolution": selection["resolution"] or None,
        "sweeps": {job.task.name: job.sweep for job in jobs},
        "bootstrap": {
            "level": audit_metrics.CONFIDENCE_LEVEL,
            "n_resamples": int(n_resamples),
            "seed": audit_metrics.BOOTSTRAP_SEED,
            "method": "BCa (percentile where undefined), over tasks",
        },
        "tasks": tasks,
        "aggregate": audit_scores.aggregate(tasks, policies, proxies, reference, n_resamples),
        "timing": audit_scores.timing(tasks, proxies, reference, n_resamples),
        "seed_sd": audit_scores.seed_spread(tasks, candidates),
        "expert_quality": quality,
        "wall_seconds": round(time.time() - started, 1),
    }
    return dict(audit, trained=len(executor.ran))
