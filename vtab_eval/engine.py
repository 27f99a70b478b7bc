"""One call per evaluation: `evaluate(config)` ranks every task for every selector (rankings kept
in OUT/rankings/ by content identity), runs the fine-tunes through `runner.run_tracks` and writes
OUT/results/ as each (task, selector) finishes; `rank(config)`, `dry_run(config)`."""

import os

from bit_experts import determinism, lazy_api
from hub_export import collection
from vtab_eval import checks, files, identity, plan, protocol, results, selectors
from vtab_eval.tasks import get_task

# TensorFlow and tensorflow_hub: imported when the first feature or fine-tune is computed, so
# that every check above runs first.
module_contract = lazy_api.module("vtab_eval.module_contract")
ranking = lazy_api.module("vtab_eval.ranking")
runner = lazy_api.module("vtab_eval.runner")

# Options that change a kept ranking besides those its key names; each is part of the identity
# only away from its default, so rankings kept before keep their ids (the seed: where it draws the
# intervals).
_KEYED = "split precision fallback fallback_confidence confidence_level n_resamples".split()


def cached_ranking(job, method, pool, seed, context):
    """The ranking of `method` on `job`'s task: OUT/rankings/<task slug>/<method>-<identity>.json
    when it holds one of the same identity, else computed (`ranking.rank`) and kept there."""
    options, selector = ranking.options_of(context["config"], seed), selectors.get(method)
    if not selector.rows:  # the fallback needs per-image hits: the others rank without it
        options["fallback"] = "none"
    key = {
        "modules": [{"module": identity.module_identity(e)} for e in pool],
        "task": job.task_id,
        "method": method,
        "seed": options["seed"] if method == "random" else None,
        "resolution": options["resolution"],
        "include_baseline": options["include_baseline"],
    }
    keyed = _KEYED + (["seed"] if selector.rows else [])
    changed = {k: options[k] for k in keyed if options[k] != ranking.DEFAULTS[k]}
    if changed:
        key["options"] = changed
    if selector.revision is not None:
        key["revision"] = selector.revision
    ranking_id = identity.content_hash(key, 16)
    slug = files.task_slug(job.task.name)
    path = os.path.join(context["output_dir"], "rankings", slug, f"{method}-{ranking_id}.json")
    found = files.read_json(path, "ranking")
    if found is not None and found.get("identity") == ranking_id and "forward_passes" in found:
        return found  # (kept before forward passes were counted: ranked again, from the cache)
    found = ranking.rank(pool, job.task, method, options, **context["rank_kwargs"])
    found["identity"] = ranking_id
    files.write_json(path, found)
    return found


def probe_track(job, policy, pool, context):
    """The track of a probe policy (`selectors.policies`): its proxy's ranking (kept as any
    selector's), its finalists among the fine-tunable candidates and their probe specs."""
    config, ranking = context["config"], None
    baseline = selectors.find_baseline(pool)
    if baseline is not None and not module_contract.finetunable(baseline)[0]:
        baseline = None
    if policy.proxy is None:
        found = [e for e in selectors.candidates(pool) if module_contract.finetunable(e)[0]]
        scores, higher = {plan.entry_handle(e): 0.0 for e in found}, True
    else:
        seed = protocol.selection_seed(config["seed"], policy.proxy, 0)
        ranking = cached_ranking(job, policy.proxy, pool, seed, context)
        ok = [e for e in ranking["experts"] if e["status"] == "ok" and e["finetunable"]]
        scores, higher = {e["handle"]: e["score"] for e in ok}, ranking["higher_is_better"]
    handle = None if baseline is None else baseline.handle
    by_handle = {plan.entry_handle(e): e for e in pool}
    finalists = [by_handle[h] for h in policy.finalists(scores, handle, higher)]
    if not finalists:
        raise selectors.SelectorUnavailable(f"{policy.name}: no fine-tunable finalist")
    names = ", ".join(plan.entry_name(e) for e in finalists)
    context["log"](f"{job.task.name} / {policy.name}: probing {names}")
    return plan.probe_track(config, job, policy.name, finalists, ranking)


def select(job, method, pool, context):
    """The tracks of one selector on one job; `selectors.SelectorUnavailable` if it cannot run."""
    config = context["config"]
    if method == results.HINDSIGHT:
        return plan.hindsight_tracks(job, pool, config)
    if selectors.get(method).kind == "probe":
        return [probe_track(job, selectors.get(method), pool, context)]
    by_handle = {plan.entry_handle(e): e for e in pool}
    entries, first = [], None
    for i in range(config["protocol"]["num_selections"]):
        seed = protocol.selection_seed(config["seed"], method, i)
        found = cached_ranking(job, method, pool, seed, context)
        first = first or found
        chosen = found["selected"]
        score = next(e["score"] for e in found["experts"] if e["handle"] == chosen)
        extra = {"selected_name": found["selected_name"], "seed": seed, "score": score}
        entries.append((by_handle.get(chosen, chosen), extra))
    context["log"](f"{job.task.name} / {method}: selected {first['selected_name']}")
    return [plan.make_track(config, job, method, entries, ranking=first)]


def evaluate(config, *, executor=None, log=print, on_task_done=None):
    """Stages 1-4 for every task and selector of a resolved config; returns method -> task ->
    result. `executor`: where fine-tunes run (default `runner.make_executor(config)`), closed here;
    `log`: callable(str); `on_task_done(output_dir)`: called when every result file exists and
    whenever a task's last final fine-tune is recorded; it must not train."""
    determinism.fix_threads(config["executor"]["threads_per_item"])  # before TF starts
    pool, jobs, _ = checks.prepare(config, log)
    determinism.configure(config["seed"], config["deterministic"])  # after the checks: imports TF
    out, _, cache_dir = files.output_paths(config)
    methods = config["selection"]["selectors"]
    executor = executor or runner.make_executor(config, log)
    label = "label_matching" in methods
    priors = ranking.load_label_priors(config["collection"]) if label else None
    kwargs = dict(cache_dir=cache_dir, data_dir=config["data_dir"], label_priors=priors, log=log)
    context = dict(config=config, output_dir=out, log=log, rank_kwargs=kwargs)
    options = ranking.options_of(config, config["seed"])
    items = [i for job in jobs for i in ranking.feature_items(pool, job.task, methods, options)]
    executor.embed(items, cache_dir, config["data_dir"])
    groups = {}
    for job in jobs:
        for method in methods:
            try:
                groups[(job.task.name, method)] = select(job, method, pool, context)
            except selectors.SelectorUnavailable as err:
                log(f"{job.task.name} / {method}: SKIPPED: {err}")
    settings = results.run_settings(config)
    found = {}

    def write_group(task_name, method):
        found.setdefault(method, {})[task_name] = results.write_result(
            groups[(task_name, method)], executor.memo, settings, pool, out, log
        )

    pending = {}  # (task, method) -> keys of its final fine-tunes not yet recorded

    def before_retrains():
        for group, tracks in groups.items():
            specs = [s for t in tracks for specs in t.retrains for s in specs]
            pending[group] = {s.key for s in specs if executor.memo.get(s) is None}
            write_group(*group)
        if any(pending.values()) and on_task_done:
            on_task_done(out)

    def on_result(spec, _):
        done = [group for group, keys in pending.items() if spec.key in keys]
        for group in done:
            pending[group].discard(spec.key)
            if not pending[group]:
                write_group(*group)
        task = spec.task.name
        if done and on_task_done and not any(k for (t, _), k in pending.items() if t == task):
            on_task_done(out)

    tracks = [t for group in groups.values() for t in group]
    try:
        runner.run_tracks(tracks, executor, before_retrains, on_result)
    finally:
        executor.close()
    for group, keys in pending.items():
        if keys:  # Not reported through on_result (not expected): written from the memo now.
            write_group(*group)
    return found


def dry_run(config, log=print, finetune_fn=None):
    """Checks `config` and logs its plan with a time estimate measured with `finetune_fn`
    (`checks.print_plan`); records nothing. Returns {"fine_tunes", "recorded", "seconds"}."""
    determinism.fix_threads(config["executor"]["threads_per_item"])  # before TF starts
    pool, jobs, sizes = checks.prepare(config, log)
    determinism.configure(config["seed"], config["deterministic"])  # after the checks: imports TF
    executor = runner.make_executor(config, log, progress=False, finetune_fn=finetune_fn)
    return checks.print_plan(jobs, sizes, pool, config, executor, log)


def rank(config, log=print):
    """What `python -m vtab_eval.rank` does: the ranking of `config`'s one task by its one method
    (or, with num_shards > 1, this shard's features into the cache), written to `output_json` and
    returned (docs/evaluation.md, "Ranking JSON" and "Shard report")."""
    determinism.fix_threads(config["executor"]["threads_per_item"])  # before TF starts
    selection = config["selection"]
    output_json = checks.output_file("--output_json", config["output_json"])
    cache_dir = config["cache_dir"] or os.path.join(os.path.dirname(output_json), "feature_cache")
    cache_dir = checks.cache_dir("--cache_dir", cache_dir, selection["cache_only"])
    if config["plot_png"]:
        checks.output_file("--plot_png", config["plot_png"])
    task = get_task(config["tasks"][0], skip_bad_images=config["skip_bad_images"])
    task.validate_splits([selection["split"]])
    # Signatures are not pre-checked: a module that fails to load is left out, not fatal.
    pool = collection.resolve_pool(
        config["collection"],
        verify_checksums=selection["verify_checksums"],
        check_signatures=False,
    )
    options = ranking.options_of(config, config["seed"])
    kwargs = dict(cache_dir=cache_dir, data_dir=config["data_dir"], log=log)
    method = selection["selectors"][0]
    if selection["num_shards"] > 1:
        log("--num_shards/--shard_index stay for this release; --executor=ray replaces them")
        shards = selection["num_shards"], selection["shard_index"]
        result = ranking.extract_shard(pool, task, *shards, options, **kwargs)
    else:
        if config["executor"]["name"] == "ray":
            from vtab_eval import ray_executor

            backend = ray_executor.RayBackend(**ray_executor.settings(config), log=log)
            try:
                items = ranking.feature_items(pool, task, [method], options)
                backend.embed(items, cache_dir, config["data_dir"])
            finally:
                backend.close()
        label = method == "label_matching"
        priors = ranking.load_label_priors(config["collection"]) if label else None
        result = ranking.rank(pool, task, method, options, label_priors=priors, **kwargs)
        result["collection"] = config["collection"]
    files.write_json(output_json, result)
    return result
