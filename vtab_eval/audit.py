r"""The selection audit: every proxy and selection policy scored by regret against hindsight.

    python -m vtab_eval.audit --collection=C --tasks=T1,T2,... --output_dir=OUT \
        [--bank_dir=DIR] [--memo_dir=M] [--seeds=0,1,2] [--sweep=demo] [--upstream_dir=U]

For a collection and a bank of tasks (issue 11, section 3):

1. *Rank*: per task, one forward pass per candidate (every expert and the baseline B) fills the
   feature cache; every proxy (`selectors.FEATURE_METHODS`) then scores the cached features, timed
   on them alone, and `ranking.rank` gives each proxy's pick, with `fallback="baseline"` for the
   proxies with per-image hits.
2. *Hindsight*: every candidate is fine-tuned with every seed under the protocol `vtab_eval.run`
   uses (its `hindsight` selector with `--seed=s`), through the same executor and content-keyed
   memo: with `--memo_dir` pointing at a run's or the demo's `finetunes/`, their fine-tunes are
   reused, and a killed audit resumes without redoing any.
3. *Score*: per task and policy (each proxy's top-1, each proxy with the fallback, always B, the
   dataset-agnostic pick, random), regret, split-half regret, top-1 hit, weighted Kendall tau, the
   fallback's firing and the loss against B (`vtab_eval.audit_metrics`); aggregates over tasks with
   bootstrap intervals.

Writes OUT/audit.json, OUT/audit.md and OUT/plots/<task>.png (`vtab_eval.audit_report`). Layout
and how to read it: docs/selection.md, "Audit".
"""

import dataclasses
import os
import sys
import time

from absl import app, flags

from bit_experts import atomic_files, cli
from vtab_eval import audit_metrics as metrics

AUDIT_FORMAT = 1
MIN_SEEDS = 3  # the study's minimum; --quick allows fewer
DEFAULT_SEEDS = (0, 1, 2)
QUICK_SEEDS = (0, 1)
DEFAULT_PROXIES = ("knn", "logme", "linear_loo", "ncm", "gbc")  # = selectors.FEATURE_METHODS
ALWAYS_BASELINE = "baseline"
AGNOSTIC = "agnostic"
RANDOM = "random"
FALLBACK_SUFFIX = "+fallback"
DEMO_SWEEP = "demo"  # the offline demo's sweep (vtab_eval.offline_demo.demo_sweep)
QUICK_RESAMPLES = 999
PROXY_REPEATS = 2  # proxy time = the fastest of this many runs (the first may trace TF code)

FLAGS = flags.FLAGS


def policy_names(proxies):
    """Every policy the audit scores, in report order."""
    from vtab_eval import selectors

    return [
        *proxies,
        *(p + FALLBACK_SUFFIX for p in proxies if p in selectors.ROW_METHODS),
        ALWAYS_BASELINE,
        AGNOSTIC,
        RANDOM,
    ]


def bank_task_names(bank_dir, names=None, log=print):
    """Writes the offline world's task bank (`bit_experts.world.BANK`, seed 0, the demo's image
    size) into `bank_dir` (complete tasks are kept) and returns their `folder:` task names."""
    from bit_experts import world
    from vtab_eval import offline_demo

    atomic_files.require_local(
        bank_dir, "--bank_dir", "folder: tasks read local folders; write the bank to a local disk"
    )
    names = list(names or world.BANK)
    log(f"task bank: {len(names)} tasks in {bank_dir}")
    paths = world.write_downstream_tasks(
        bank_dir, seed=0, image_size=offline_demo.IMAGE_SIZE, tasks=names
    )
    return [f"folder:{os.path.abspath(p)}" for p in paths]


def _absolute(flag, path):
    """`atomic_files.abspath(path)` (a URL as it is), or ValueError naming `flag`."""
    try:
        return atomic_files.abspath(path)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def check_arguments(seeds, proxies, quick, fallback_confidence, reference):
    """Problems (one line each) with the audit's own arguments."""
    from vtab_eval import selectors

    problems = []
    seeds = list(seeds)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        problems.append(f"--seeds={seeds}: expected non-negative integers")
    elif len(set(seeds)) != len(seeds):
        problems.append(f"--seeds={seeds}: a seed is repeated; expected distinct seeds")
    elif not seeds or (len(seeds) < MIN_SEEDS and not quick):
        problems.append(
            f"--seeds={seeds}: the audit needs at least {MIN_SEEDS} seeds (fewer only with --quick)"
        )
    unknown = [p for p in proxies if p not in selectors.FEATURE_METHODS]
    if unknown or not proxies:
        problems.append(
            f"--proxies={list(proxies)}: expected some of {list(selectors.FEATURE_METHODS)}"
        )
    elif reference not in proxies:
        problems.append(f"--reference={reference!r}: expected one of --proxies {list(proxies)}")
    if isinstance(fallback_confidence, bool) or not 0 <= float(fallback_confidence) <= 1:
        problems.append(
            f"--fallback_confidence={fallback_confidence!r}: expected a value in [0, 1]"
        )
    return problems


def _pool_problems(pool):
    from vtab_eval import ranking

    found = ranking.candidates(pool, include_baseline=True)
    names = [ranking.entry_info(e)["name"] for e in found]
    problems = []
    if ranking.find_baseline(pool) is None:
        problems.append("--collection: it has no baseline B (kind 'baseline'); the audit needs B")
    if len(found) < 2:
        problems.append(f"--collection: {len(found)} candidate(s); the audit needs B and experts")
    if len(set(names)) != len(names):
        problems.append(f"--collection: candidate names repeat ({names}); expected unique names")
    return problems


def _timed_scores(method, features, labels):
    from vtab_eval import selectors

    best = None
    for _ in range(PROXY_REPEATS):
        start = time.perf_counter()
        selectors.feature_scores(method, features, labels)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best


def rank_task(
    job, pool, proxies, *, resolution, cache_dir, data_dir, fallback_confidence, n_resamples, log
):
    """Stage 1 for one task: the shared forward pass, each proxy's time, scores and picks."""
    from vtab_eval import embed, ranking, selectors

    candidates = ranking.candidates(pool, include_baseline=True)
    names = {ranking.entry_info(e)["handle"]: ranking.entry_info(e)["name"] for e in candidates}
    start = time.perf_counter()
    embedded = embed.embed_pool(
        candidates,
        job.task,
        ranking.DEFAULT_SPLIT,
        resolution,
        cache_dir=cache_dir,
        data_dir=data_dir,
    )
    forward = {
        "seconds": time.perf_counter() - start,
        "computed": len(embedded.computed),
        "cached": len(embedded.cached),
    }
    if not embedded.features:
        raise ValueError(f"task {job.task.name}: no candidate could be embedded")
    labels = selectors.validate_task_labels(embedded.labels, job.task.num_classes)
    out = {}
    for proxy in proxies:
        seconds = _timed_scores(proxy, embedded.features, labels)
        found = ranking.rank(
            pool,
            job.task,
            proxy,
            resolution=resolution,
            cache_dir=cache_dir,
            data_dir=data_dir,
            include_baseline=True,
            cache_only=True,
            fallback="baseline" if proxy in selectors.ROW_METHODS else "none",
            fallback_confidence=fallback_confidence,
            n_resamples=n_resamples,
        )
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


def finetune_hindsight(jobs, pool, seeds, base_config, executor):
    """Stage 2: every candidate fine-tuned with every seed, as `vtab_eval.run`'s hindsight with
    `--seed=s` does; returns {task: {candidate: [(score, spec key) per seed]}}."""
    from vtab_eval import stages

    plans = []
    for job in jobs:
        for seed in seeds:
            config = dataclasses.replace(base_config, seed=int(seed))
            tracks = stages.select(job, stages.HINDSIGHT, pool, {"config": config})
            for track in tracks:
                stages.plan_tuning(track, config)
            plans.append((job, config, tracks))
    later = set()
    for _, config, tracks in plans:
        for track in tracks:
            later |= stages.retrain_placeholders(track, config)
    tuning = [s for _, _, tracks in plans for t in tracks for specs in t.tuning for s in specs]
    executor.run(tuning, later=len(later))
    for _, config, tracks in plans:
        for track in tracks:
            stages.plan_retrains(track, config, executor.memo)
    executor.run(
        [s for _, _, tracks in plans for t in tracks for specs in t.retrains for s in specs]
    )
    found = {}
    for job, _, tracks in plans:
        by_candidate = found.setdefault(job.task.name, {})
        for track in tracks:
            spec = track.retrains[0][0]
            by_candidate.setdefault(track.candidate, []).append(
                (float(executor.memo.get(spec)["score"]), spec.key)
            )
    return found


def task_policies(acc, ranked, baseline, agnostic_pick):
    """Per policy of one task: the pick and its regret, split-half regret, hit and loss vs B."""
    base_mean = metrics.means(acc)[baseline]
    base_sd = metrics.sample_sd([metrics.POINTS * a for a in acc[baseline]])

    def scored(pick, **extra):
        loss = metrics.POINTS * (base_mean - metrics.means(acc)[pick])
        return {
            "pick": pick,
            "regret": metrics.regret(acc, pick),
            "split_half_regret": metrics.split_half_regret(acc, pick),
            "hit": 1.0 if metrics.hit(acc, pick) else 0.0,
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
    full, half = metrics.random_regret(acc)
    mean = metrics.means(acc)
    policies[RANDOM] = {
        "pick": None,
        "regret": full,
        "split_half_regret": half,
        "hit": len(metrics.hindsight_best(acc)) / len(acc),
        "loss_vs_baseline": metrics.POINTS * (base_mean - sum(mean.values()) / len(mean)),
        "worse_than_baseline_sd": None,
    }
    return policies


def score_tasks(jobs, ranked, finetuned, candidates, baseline):
    """Stage 3 per task: accuracy table, weighted tau of every proxy, and every policy's scores.

    Args:
      jobs: the audited `stages.Job`s.
      ranked: {task: `rank_task` result}; each proxy entry gets its "tau" here.
      finetuned: `finetune_hindsight`'s {task: {candidate: [(score, spec key) per seed]}}.
      candidates: candidate names in collection order; baseline: B's name.
    """
    tables = {t: {c: [s for s, _ in v] for c, v in by.items()} for t, by in finetuned.items()}
    agnostic = metrics.agnostic_picks(tables)
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
    import copy

    if not isinstance(audit, dict) or audit.get("format") != AUDIT_FORMAT:
        raise ValueError(f"not an audit.json of format {AUDIT_FORMAT!r}")
    out = copy.deepcopy(audit)
    tasks = out["tasks"]
    tables = {
        t: {c: v["accuracy"][c]["seeds"] for c in out["candidates"]} for t, v in tasks.items()
    }
    agnostic = metrics.agnostic_picks(tables)
    for name, task in tasks.items():
        acc = tables[name]
        task["hindsight_best"] = metrics.hindsight_best(acc)
        task["policies"] = task_policies(
            acc, {"proxies": task["proxies"]}, out["baseline"], agnostic[name]
        )
    n_resamples = out["bootstrap"]["n_resamples"]
    out["aggregate"] = aggregate(
        tasks, out["policies"], out["proxies"], out["reference"], n_resamples
    )
    return out


def rescore_command(output_dir):
    """`python -m vtab_eval.audit --rescore --output_dir=OUT`: `rescore` OUT/audit.json and write
    audit.json, audit.md and plots/ again (nothing is trained or embedded). Returns the audit.

    Raises:
      FileNotFoundError: OUT/audit.json is missing. ValueError: it is not an audit.
    """
    import json

    from vtab_eval import audit_report, report

    path = os.path.join(output_dir, "audit.json")
    if not atomic_files.exists(path):
        raise FileNotFoundError(f"{path!r} is missing: --rescore needs a finished audit")
    try:
        stored = json.loads(atomic_files.read_bytes(path).decode("utf-8"))
    except ValueError as error:
        raise ValueError(f"{path!r} is not valid JSON: {error}") from None
    audit = rescore(stored)
    audit_report.write_plots(audit, os.path.join(output_dir, "plots"))
    report.write_json(path, audit)
    report.atomic_write_text(os.path.join(output_dir, "audit.md"), audit_report.markdown(audit))
    return audit


def aggregate(tasks, policies, proxies, reference, n_resamples):
    """Per policy, over tasks: means with bootstrap intervals, counts and group means."""

    def interval(values):
        return metrics.mean_interval(values, n_resamples=n_resamples)

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
            "seconds": metrics.mean_interval(
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
            "pooled_sd": metrics.pooled_sd(known),
            "min_sd": min(known) if known else None,
            "max_sd": max(known) if known else None,
            "tasks": sds,
        }
    return out


def prepare(
    collection_spec,
    task_names,
    *,
    paths,
    seeds,
    proxies,
    quick,
    fallback_confidence,
    reference,
    upstream_dir,
    data_dir,
    job_options,
    numbers,
):
    """Checks every input before any work and returns (pool, jobs).

    `paths`: flag -> folder the audit writes; `job_options`: `vtab_eval.run.make_jobs`'s sweep
    arguments; `numbers`: count-like flags for `preflight.check_numbers`.

    Raises:
      ValueError: one line per problem found (`preflight.raise_problems`).
    """
    from hub_export import collection
    from vtab_eval import preflight
    from vtab_eval import run as run_lib

    problems = check_arguments(seeds, proxies, quick, fallback_confidence, reference)
    problems += preflight.check_numbers(**numbers)
    for flag, path in paths.items():
        problems += preflight.check_output_dir(path, flag)
    if upstream_dir and atomic_files.is_url(upstream_dir):
        problems.append(
            f"--upstream_dir={upstream_dir}: is a URL; slice accuracy reads a local work "
            "directory: copy it to a local disk"
        )
    elif upstream_dir and not os.path.isdir(upstream_dir):
        problems.append(
            f"--upstream_dir={upstream_dir}: not a folder; expected an upstream workdir"
        )
    preflight.raise_problems(problems)
    try:
        pool = collection.resolve_pool(collection_spec, check_signatures=False)
        jobs = run_lib.make_jobs(task_names, data_dir=data_dir, **job_options)
    except (ValueError, FileNotFoundError) as err:
        preflight.raise_problems([str(err)])
        raise
    _, found = preflight.check_jobs(jobs, data_dir)
    preflight.raise_problems(found + preflight.check_pool(pool) + _pool_problems(pool))
    return pool, jobs


def audit_command(
    collection_spec,
    task_names,
    output_dir,
    *,
    seeds=None,
    proxies=DEFAULT_PROXIES,
    fallback_confidence=None,
    reference="knn",
    quick=False,
    sweep=None,
    sweep_settings=None,
    learning_rates=None,
    steps=None,
    batch_size=512,
    resolution=0,
    selection_resolution=0,
    scheme="auto",
    search="auto",
    memo_dir=None,
    cache_dir=None,
    data_dir=None,
    strategy="default",
    deterministic=True,
    upstream_dir=None,
    n_resamples=None,
    command=None,
    log=print,
    progress=True,
    finetune_fn=None,
):
    """Runs (or resumes) the audit and writes OUT/audit.json, OUT/audit.md and OUT/plots/.

    Args:
      collection_spec: collection dir, manifest or handle list; it must hold B and experts.
      task_names: task names, `folder:PATH` or suites (as `vtab_eval.run`).
      output_dir: where the audit writes (and, by default, its memo and feature cache).
      seeds: base seeds; each is one `vtab_eval.run --seed` hindsight run. At least 3 (default
        0, 1, 2); `quick` allows 1 or 2 (default 0, 1).
      proxies: feature proxies to audit (`selectors.FEATURE_METHODS`); `reference` (one of them,
        default knn) is what the "regret - reference" column is paired against.
      fallback_confidence: the fallback policy's confidence (default 0.9), in [0, 1].
      quick: tiny mode for tests and smoke runs: fewer seeds allowed, the `quick` sweep preset by
        default (the demo's quick sweep for `sweep="demo"`), 999 bootstrap resamples.
      sweep, sweep_settings, learning_rates, steps, batch_size, resolution, scheme, search,
        data_dir, strategy, deterministic, finetune_fn: as `vtab_eval.run.run_command`; `sweep`
        also takes "demo" (the offline demo's sweep); default "local" ("quick" in quick mode).
      selection_resolution: image side for the proxies; 0: as `vtab_eval.run` (module metadata).
      memo_dir: the fine-tune memo (default OUT/finetunes); point it at a run's or the demo's
        `finetunes/` to reuse their fine-tunes. cache_dir: feature cache (default
        OUT/feature_cache).
      upstream_dir: an upstream work directory of the offline world: adds each expert's accuracy
        on its own upstream slice next to B's (`bit_experts.training.slice_eval`).
      n_resamples: bootstrap resamples for every interval (default 9999; 999 in quick mode).
      command: the command line to record in the report.
      log, progress: progress lines and the fine-tune progress bar.

    Returns:
      The audit dict written to audit.json (docs/selection.md, "Audit"), with "trained" (the
      fine-tunes this call ran, not read from the memo) added.

    Raises:
      ValueError: every problem with the input, one line each, before anything is run.
    """
    from bit_experts.training import strategies
    from vtab_eval import audit_report, ranking, report, selectors, stages
    from vtab_eval import executor as executor_lib

    started = time.time()
    output_dir = _absolute("--output_dir", output_dir)
    memo_dir = _absolute("--memo_dir", memo_dir or os.path.join(output_dir, "finetunes"))
    cache_dir = _absolute("--cache_dir", cache_dir or os.path.join(output_dir, "feature_cache"))
    seeds = list(seeds if seeds is not None else (QUICK_SEEDS if quick else DEFAULT_SEEDS))
    proxies = list(proxies)
    if fallback_confidence is None:
        fallback_confidence = selectors.DEFAULT_FALLBACK_CONFIDENCE
    n_resamples = n_resamples or (QUICK_RESAMPLES if quick else metrics.BOOTSTRAP_RESAMPLES)
    sweep = sweep or ("quick" if quick else "local")
    if sweep == DEMO_SWEEP and not sweep_settings:
        from vtab_eval import offline_demo

        sweep_settings = offline_demo.demo_sweep(quick)
    pool, jobs = prepare(
        collection_spec,
        task_names,
        paths={"--output_dir": output_dir, "--memo_dir": memo_dir, "--cache_dir": cache_dir},
        seeds=seeds,
        proxies=proxies,
        quick=quick,
        fallback_confidence=fallback_confidence,
        reference=reference,
        upstream_dir=upstream_dir,
        data_dir=data_dir,
        job_options=dict(
            sweep=sweep,
            sweep_settings=sweep_settings,
            scheme=scheme,
            search=search,
            resolution=resolution,
            learning_rates=learning_rates,
            steps=steps,
            batch_size=batch_size,
        ),
        numbers=dict(
            batch_size=batch_size, resolution=resolution, selection_resolution=selection_resolution
        ),
    )

    candidates = [
        ranking.entry_info(e)["name"] for e in ranking.candidates(pool, include_baseline=True)
    ]
    baseline = ranking.entry_info(ranking.find_baseline(pool))["name"]
    sel_resolution = selection_resolution or None  # None: each module at its own resolution
    quality = None
    if upstream_dir:
        from bit_experts.training import slice_eval

        log(f"expert quality: held-out upstream slices of {upstream_dir}")
        try:
            quality = slice_eval.expert_quality(upstream_dir)
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise ValueError(f"--upstream_dir={upstream_dir}: {err}") from None

    ranked = {}
    for job in jobs:
        ranked[job.task.name] = rank_task(
            job,
            pool,
            proxies,
            resolution=sel_resolution,
            cache_dir=cache_dir,
            data_dir=data_dir,
            fallback_confidence=fallback_confidence,
            n_resamples=n_resamples,
            log=log,
        )

    executor = executor_lib.Executor(
        memo_dir,
        output_dir=output_dir,
        finetune_fn=finetune_fn,
        data_dir=data_dir,
        strategy=strategies.make_strategy(strategy, ""),
        log=log,
        progress=progress,
    )
    base_config = stages.Config(
        num_selections=1,
        num_retrains=1,
        seed=seeds[0],
        deterministic=deterministic,
        include_baseline=True,
        selection_resolution=sel_resolution,
        collection=str(collection_spec),
    )
    try:
        finetuned = finetune_hindsight(jobs, pool, seeds, base_config, executor)
    finally:
        executor.close()

    tasks = score_tasks(jobs, ranked, finetuned, candidates, baseline)
    policies = policy_names(proxies)
    audit = {
        "format": AUDIT_FORMAT,
        "command": command,
        "collection": str(collection_spec),
        "memo_dir": memo_dir,
        "candidates": candidates,
        "baseline": baseline,
        "seeds": seeds,
        "quick": bool(quick),
        "proxies": proxies,
        "policies": policies,
        "reference": reference,
        "fallback_confidence": float(fallback_confidence),
        "selection_resolution": sel_resolution,
        "sweeps": {job.task.name: job.sweep for job in jobs},
        "bootstrap": {
            "level": metrics.CONFIDENCE_LEVEL,
            "n_resamples": int(n_resamples),
            "seed": metrics.BOOTSTRAP_SEED,
            "method": "BCa (percentile where undefined), over tasks",
        },
        "tasks": tasks,
        "aggregate": aggregate(tasks, policies, proxies, reference, n_resamples),
        "timing": timing(tasks, proxies, reference, n_resamples),
        "seed_sd": seed_spread(tasks, candidates),
        "expert_quality": quality,
        "wall_seconds": round(time.time() - started, 1),
    }
    audit_report.write_plots(audit, os.path.join(output_dir, "plots"))
    report.write_json(os.path.join(output_dir, "audit.json"), audit)
    report.atomic_write_text(os.path.join(output_dir, "audit.md"), audit_report.markdown(audit))
    return dict(audit, trained=len(executor.ran))


def define_flags():
    """The command's flags (defined only when run as a program, as `vtab_eval.run` does)."""
    flags.DEFINE_string("collection", None, "Collection dir, manifest.json or handle list.")
    flags.DEFINE_list("tasks", [], "Task names, folder:PATH, or a suite (as vtab_eval.run).")
    flags.DEFINE_string(
        "bank_dir", None, "Write the offline world's task bank here and audit it too."
    )
    flags.DEFINE_string("output_dir", None, "audit.md, audit.json and plots/ go here.")
    flags.DEFINE_list("seeds", None, "Base seeds (>= 3; default 0,1,2; --quick: 0,1).")
    flags.DEFINE_list("proxies", list(DEFAULT_PROXIES), "Feature proxies to audit.")
    flags.DEFINE_string("reference", "knn", "The proxy other policies' regret is paired against.")
    flags.DEFINE_float("fallback_confidence", 0.9, "Confidence of the fallback policy.")
    flags.DEFINE_bool("quick", False, "Tiny mode: 1-2 seeds allowed, quick sweep (smoke tests).")
    flags.DEFINE_string(
        "sweep", None, "Sweep preset (as vtab_eval.run) or 'demo'; default local (quick: quick)."
    )
    flags.DEFINE_list("learning_rates", None, "Sweep given by flags (with --steps).")
    flags.DEFINE_list("steps", None, "Sweep given by flags (with --learning_rates).")
    flags.DEFINE_integer("batch_size", 512, "Batch size of a sweep given by flags.")
    flags.DEFINE_integer("resolution", 0, "Fine-tuning image side; 0: the sweep's.")
    flags.DEFINE_integer("selection_resolution", 0, "Proxy image side; 0: module metadata.")
    flags.DEFINE_string("memo_dir", None, "Fine-tune memo; default OUT/finetunes.")
    flags.DEFINE_string("cache_dir", None, "Feature cache; default OUT/feature_cache.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory.")
    flags.DEFINE_enum(
        "strategy", "default", ["default", "one_device", "mirrored"], "tf.distribute strategy."
    )
    flags.DEFINE_bool("deterministic", True, "TF op determinism (--nodeterministic: off).")
    flags.DEFINE_string(
        "upstream_dir", None, "Upstream work dir: add each expert's accuracy on its own slice."
    )
    flags.DEFINE_bool(
        "rescore",
        False,
        "Only score OUT/audit.json again from its stored results (after a metrics change) and "
        "rewrite audit.json, audit.md and plots/; needs only --output_dir.",
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.rescore:
        if not FLAGS.output_dir:
            raise app.UsageError("--rescore needs --output_dir")
        with cli.one_line_errors("vtab_eval.audit"):
            rescore_command(FLAGS.output_dir)
            path = os.path.join(FLAGS.output_dir, "audit.md")
            print(atomic_files.read_bytes(path).decode("utf-8"))
        return
    if not FLAGS.output_dir or not FLAGS.collection:
        raise app.UsageError("--collection and --output_dir are required")
    if not FLAGS.tasks and not FLAGS.bank_dir:
        raise app.UsageError("give --tasks, --bank_dir or both")
    from bit_experts import determinism

    with cli.one_line_errors(
        "vtab_eval.audit", (ValueError, FileNotFoundError, FloatingPointError)
    ):
        seeds = None
        if FLAGS.seeds:
            try:
                seeds = [int(s) for s in FLAGS.seeds]
            except ValueError:
                raise ValueError(f"--seeds={FLAGS.seeds}: expected integers") from None
        tasks = list(FLAGS.tasks)
        if FLAGS.bank_dir:
            tasks += bank_task_names(FLAGS.bank_dir)
        determinism.configure((seeds or [0])[0], FLAGS.deterministic)
        audit_command(
            FLAGS.collection,
            tasks,
            FLAGS.output_dir,
            seeds=seeds,
            proxies=FLAGS.proxies,
            reference=FLAGS.reference,
            fallback_confidence=FLAGS.fallback_confidence,
            quick=FLAGS.quick,
            sweep=FLAGS.sweep,
            learning_rates=FLAGS.learning_rates,
            steps=FLAGS.steps,
            batch_size=FLAGS.batch_size,
            resolution=FLAGS.resolution,
            selection_resolution=FLAGS.selection_resolution,
            memo_dir=FLAGS.memo_dir,
            cache_dir=FLAGS.cache_dir,
            data_dir=FLAGS.data_dir,
            strategy=FLAGS.strategy,
            deterministic=FLAGS.deterministic,
            upstream_dir=FLAGS.upstream_dir,
            command="python -m vtab_eval.audit " + " ".join(sys.argv[1:]),
        )
        print(atomic_files.read_bytes(os.path.join(FLAGS.output_dir, "audit.md")).decode("utf-8"))


if __name__ == "__main__":
    define_flags()
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
