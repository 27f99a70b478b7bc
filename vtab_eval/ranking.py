"""Ranks a pool of expert modules on a task with one selector, picked by name, into a dict
(docs/evaluation.md, "Ranking JSON"): the selector's scores through a `selectors.context.Context`,
the best fine-tunable expert, then intervals, win probabilities and the fallback (`confidence`).
"""

from hub_export import collection
from vtab_eval import confidence, embed, feature_cache, module_contract, selectors
from vtab_eval.selectors.context import Context

# The options of a ranking (the evaluation config's "selection" section) and their defaults.
DEFAULTS = {
    "split": "train800val200",  # the task images a selector looks at (the paper's)
    "resolution": None,  # image side every module sees; None or 0: each module its own
    "batch_size": 64,  # images per module call
    "precision": "float32",  # the experts' forward pass for "feature" selectors (embed.PRECISIONS)
    "seed": 0,  # of `random` and of the bootstrap intervals
    "include_baseline": True,  # rank the baseline B with the experts
    "cache_only": False,  # never compute features; missing ones are left out
    "fallback": "none",  # "baseline": pick B unless the best expert surely beats it
    "fallback_confidence": confidence.DEFAULT_FALLBACK_CONFIDENCE,  # in [0, 1]
    "confidence_level": confidence.DEFAULT_LEVEL,  # of the per-expert intervals, in (0, 1)
    "n_resamples": confidence.DEFAULT_RESAMPLES,  # bootstrap resamples per interval
}


def options_of(config, seed):
    """The ranking options (`DEFAULTS` keys) of an evaluation config, with the selection's seed."""
    selection = config["selection"]
    options = {k: selection[k] for k in DEFAULTS if k in selection}
    return dict(options, seed=int(seed), resolution=selection["resolution"] or None)


def methods():
    """The selector names `rank` accepts: every registered one but the kinds the run plans
    (`selectors.PLANNED`: hindsight and the probe policies)."""
    return tuple(n for n in selectors.names() if selectors.get(n).kind not in selectors.PLANNED)


def check_options(options=None, selector=None):
    """DEFAULTS updated with `options` (a resolution of 0 becomes None), or ValueError for an
    unknown key or value, or the fallback "baseline" without B or (for `selector`) per-image hits.
    """
    merged = {**DEFAULTS, **(options or {})}
    unknown = sorted(set(merged) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown selection options {unknown}; expected some of {list(DEFAULTS)}")
    fallback, value = merged["fallback"], merged["fallback_confidence"]
    if fallback not in ("none", "baseline"):
        raise ValueError(f"unknown fallback {fallback!r}; expected one of ('none', 'baseline')")
    if isinstance(value, bool) or not 0 <= float(value) <= 1:
        raise ValueError(f"fallback_confidence must be in [0, 1]; got {value!r}")
    if fallback == "baseline" and selector is not None and not selector.rows:
        raise ValueError(
            f"fallback 'baseline' needs per-image correctness, which {selector.name!r} lacks; "
            f"use one of {selectors.names(rows=True)}"
        )
    if fallback == "baseline" and not merged["include_baseline"]:
        raise ValueError(
            "fallback 'baseline' needs the baseline B ranked with the experts: "
            "pass include_baseline=True (--include_baseline)"
        )
    if merged["resolution"]:
        merged["resolution"] = embed.check_positive_int("resolution", merged["resolution"])
    merged["resolution"] = merged["resolution"] or None
    embed.check_positive_int("batch_size", merged["batch_size"])
    embed.check_precision(merged["precision"])
    return merged


def rank(
    pool, task, method="knn", options=None, *, cache_dir, data_dir=None, label_priors=None, log=None
):
    """The ranking dict of `pool` (ModuleEntry objects or handle strings) on `task` by the
    selector `method`, with `options` (DEFAULTS keys), the feature cache `cache_dir` (None: none),
    TFDS `data_dir`, `label_priors` (expert name -> [L] prior) and an optional `log(str)`. Each
    module sees its own resolution unless one is forced, so a pool's order never changes a score.

    Raises:
      ValueError: an unknown method or bad options (before any work), or bad task labels.
      SelectorUnavailable: the pool lacks what the method or the fallback needs (EPN, classifier,
        priors, B), or every expert was left out, or none can be fine-tuned.
    """
    selector = selectors.get(method)
    if selector.kind in selectors.PLANNED:
        raise ValueError(f"{method!r} ranks nothing: it fine-tunes candidates (vtab_eval.run)")
    options = check_options(options, selector)
    experts = selector.candidates(pool, options["include_baseline"])
    if not experts:
        raise selectors.SelectorUnavailable("the pool has no expert feature-vector modules to rank")
    where = dict(cache_dir=cache_dir, data_dir=data_dir, log=log)
    ctx = Context(pool, task, experts, options, label_priors, **where)
    precision = options["precision"] if selector.kind == "feature" else "float32"
    result = {"task": task.name, "method": method, "split": options["split"]}
    result.update(resolution=options["resolution"], precision=precision, num_images=None)
    result.update(higher_is_better=selector.higher_is_better, left_out=[], forward_passes=0)
    found = selector.score(ctx)
    if (found.correct is not None) != selector.rows:
        raise ValueError(f"selector {method!r}: per-image hits given iff rows={selector.rows}")
    result.update(ctx.record)
    if selector.kind == "none":
        result["seed"] = int(options["seed"])
    scores = {h: found.scores[h] for h in ctx.handles() if h in found.scores}
    if not scores:
        raise selectors.SelectorUnavailable(f"{method} scored none of the experts")
    result["experts"] = _describe(experts, scores, result["left_out"], options["resolution"])
    ok = [i["handle"] for i in result["experts"] if i["finetunable"] and i["status"] == "ok"]
    selectable = {h: scores[h] for h in ok}
    if not selectable:
        reasons = {i["handle"]: i.get("finetunable_reason", "") for i in result["experts"]}
        raise selectors.SelectorUnavailable(
            "no scored expert can be fine-tuned: " + "; ".join(f"{h}: {reasons[h]}" for h in scores)
        )
    selection = selectors.select_best(selectable, selector.higher_is_better, method)
    name = next(i["name"] for i in result["experts"] if i["handle"] == selection.selected)
    result.update(selected=selection.selected, selected_name=name)
    result.update(tie_broken=selection.tie_broken, tie_note=selection.tie_note)
    # B is ranked when include_baseline is set, which the fallback needs (check_options).
    baseline = selectors.find_baseline(pool) if options["include_baseline"] else None
    baseline = None if baseline is None else baseline.handle
    confidence.annotate(result, selection, found.correct, baseline, options)
    return result


def feature_items(pool, task, methods, options):
    """[(entry, task, checked options)] of every module whose features one of `methods` reads on
    `task` at its options (once per module; none for selectors that read no features, none with
    cache_only): what an executor may embed ahead of ranking."""
    items, seen = [], set()
    for method in methods:
        selector = selectors.get(method)
        if selector.kind == "probe" and selector.proxy is not None:  # its proxy's features
            selector = selectors.get(selector.proxy)
        if selector.kind != "feature":
            continue
        checked = check_options(options, selector)
        if checked["cache_only"]:
            return []
        for entry in selector.candidates(pool, checked["include_baseline"]):
            if selectors.entry_info(entry)["handle"] not in seen:
                seen.add(selectors.entry_info(entry)["handle"])
                items.append((entry, task, checked))
    return items


def _describe(experts, scores, left_out, resolution):
    """The ranking's "experts" list: entry_info, score, status, resolution and fine-tunability."""
    left_out = {item["handle"] for item in left_out}
    described = []
    for e in experts:
        info = selectors.entry_info(e)
        h = info["handle"]
        status = "ok" if h in scores else "left_out" if h in left_out else "not_scored"
        info.update(score=float(scores[h]) if h in scores else None, status=status)
        info["resolution"] = resolution or embed.module_resolution(e)
        info["finetunable"], reason = module_contract.finetunable(e)
        if reason:
            info["finetunable_reason"] = reason
        described.append(info)
    return described


def extract_shard(
    pool, task, num_shards, shard_index, options=None, *, cache_dir, data_dir=None, log=None
):
    """Computes into `cache_dir` the features of this worker's shard of the candidates as `rank`
    would (cache_only ignored); returns the shard report (docs/evaluation.md). ValueError: bad
    options or shard numbers (`feature_cache.shard_assignment`)."""
    options = check_options(options)
    experts = selectors.candidates(pool, options["include_baseline"])
    handles = [selectors.entry_info(e)["handle"] for e in experts]
    mine = set(feature_cache.shard_assignment(handles, num_shards, shard_index))
    shard = [e for e, h in zip(experts, handles) if h in mine]
    ctx = Context(pool, task, shard, options, cache_dir=cache_dir, data_dir=data_dir, log=log)
    embedded = ctx.embed(shard, options["precision"], cache_only=False)
    return {
        "task": task.name,
        "split": options["split"],
        "resolution": options["resolution"],
        "precision": options["precision"],
        "resolutions": embedded.resolutions,
        "num_shards": int(num_shards),
        "shard_index": int(shard_index),
        "experts": ctx.handles(),
        "computed": embedded.computed,
        "cached": embedded.cached,
        "left_out": [{"handle": h, "error": e} for h, e in embedded.failures.items()],
    }


def load_label_priors(collection_spec):
    """The experts' label priors travelling with a collection, or None (e.g. a handle list)."""
    try:
        return collection.label_priors(collection_spec) or None
    except (ValueError, OSError):
        return None
