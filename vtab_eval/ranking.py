"""Ranks a pool of expert modules on a task with one selector and returns the result as a dict.

Selectors (`METHODS`): `knn` (leave-one-out 1-NN accuracy of each expert's features; the paper's
default), `random` (seeded), `domain_prediction` (the EPN's geometric-mean probability of each
expert's domain), `label_matching` (KL divergence between the upstream labels the baseline's
classifier predicts on the task and each expert's label prior) and `baseline` (no selection: the
upstream baseline `B`, the "no expert" reference). Features and classifier outputs go through the
feature cache (`vtab_eval.embed`). The result dict is documented in docs/evaluation.md.
"""

import numpy as np

from vtab_eval import embed, selectors

METHODS = ("knn", "random", "domain_prediction", "label_matching", "baseline")
DEFAULT_SPLIT = "train800val200"


class SelectorUnavailable(ValueError):
    """The pool lacks what a selector needs (e.g. no EPN for domain_prediction)."""


def _field(entry, name, default=None):
    return default if isinstance(entry, str) else getattr(entry, name, default)


def entry_info(entry):
    """{"handle", "name", "kind"} of a ModuleEntry or a plain handle string."""
    if isinstance(entry, str):
        return {"handle": entry, "name": entry.rstrip("/").split("/")[-1], "kind": "third_party"}
    return {"handle": entry.handle, "name": entry.name, "kind": entry.kind}


def _role(entry):
    return _field(entry, "role", "feature_vector")


def candidates(pool, include_baseline=False):
    """The experts to rank: feature-vector modules, without the baseline unless asked."""
    return [
        e
        for e in pool
        if _role(e) == "feature_vector" and (include_baseline or _field(e, "kind") != "baseline")
    ]


def find_baseline(pool):
    """The baseline feature-vector module of a pool, or None."""
    for e in pool:
        if _role(e) == "feature_vector" and _field(e, "kind") == "baseline":
            return e
    return None


def _aliases(entry):
    """Names an EPN output or a label prior may use for this expert: module, expert, slice."""
    metadata = _field(entry, "metadata") or {}
    names = [_field(entry, "name"), metadata.get("expert"), metadata.get("slice")]
    return [n for n in names if n]


def _by_alias(experts, table):
    """handle -> table[alias] for each expert that one of its aliases names."""
    found = {}
    for e in experts:
        for alias in _aliases(e):
            if alias in table:
                found[e.handle] = table[alias]
                break
    return found


def _probabilities(logits, activation):
    if activation == "softmax":
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def _classifier_outputs(entry, task, split, resolution, embed_kwargs, what):
    """Probabilities [N, K] of a classifier module (baseline classifier or EPN) on the task."""
    result = embed.embed_pool([entry], task, split, resolution, **embed_kwargs)
    if entry.handle in result.failures:
        raise SelectorUnavailable(
            f"{what} {entry.handle!r} failed: {result.failures[entry.handle]}"
        )
    activation = (entry.metadata or {}).get("output_activation", "sigmoid")
    return _probabilities(result.features[entry.handle].astype(np.float64), activation)


def _find(pool, role):
    return next((e for e in pool if _role(e) == role), None)


def rank(
    pool,
    task,
    method="knn",
    *,
    split=DEFAULT_SPLIT,
    resolution=224,
    cache_dir=None,
    data_dir=None,
    batch_size=64,
    seed=0,
    include_baseline=False,
    cache_only=False,
    label_priors=None,
    log=None,
):
    """Scores every expert of `pool` on `task` with `method` and picks one.

    Args:
      pool: ModuleEntry objects (hub_export.collection.resolve_pool) or handle strings.
      task: a `vtab_eval.tasks.Task`.
      method: one of METHODS.
      split: the task images selection looks at (the paper: train800val200).
      resolution: image side the modules see.
      cache_dir, data_dir, batch_size, cache_only: see `vtab_eval.embed.embed_pool`.
      seed: seed of the `random` selector.
      include_baseline: rank the baseline `B` together with the experts.
      label_priors: expert name -> [L] prior (hub_export.collection.label_priors); needed by
        `label_matching`.
      log: optional callable(str) for progress lines.

    Returns:
      The ranking dict (docs/evaluation.md, "Ranking JSON").

    Raises:
      ValueError: unknown method; bad task labels (fewer than 2 images, one class, out of range).
      SelectorUnavailable: the pool lacks the EPN / baseline classifier / priors the method needs,
        or every expert was left out.
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; expected one of {METHODS}")
    embed_kwargs = dict(
        cache_dir=cache_dir,
        data_dir=data_dir,
        batch_size=batch_size,
        cache_only=cache_only,
        log=log,
    )
    experts = candidates(pool, include_baseline)
    if method == "baseline":
        baseline = find_baseline(pool)
        if baseline is None:
            raise SelectorUnavailable(
                "the pool has no baseline feature-vector module (kind 'baseline')"
            )
        experts = [baseline]
    if not experts:
        raise SelectorUnavailable("the pool has no expert feature-vector modules to rank")
    result = {
        "task": task.name,
        "method": method,
        "split": split,
        "resolution": int(resolution),
        "num_images": None,
        "higher_is_better": method != "label_matching",
        "left_out": [],
    }
    scores = {}
    if method == "knn":
        embedded = embed.embed_pool(experts, task, split, resolution, **embed_kwargs)
        result["left_out"] = [{"handle": h, "error": e} for h, e in embedded.failures.items()]
        result["cache"] = {"computed": embedded.computed, "cached": embedded.cached}
        if not embedded.features:
            raise SelectorUnavailable(
                f"every expert was left out on task {task.name!r}: "
                + "; ".join(embedded.failures.values())
            )
        labels = selectors.validate_task_labels(embedded.labels, task.num_classes)
        result["num_images"] = int(labels.size)
        scores = selectors.knn_scores(embedded.features, labels)
    elif method in ("random", "baseline"):
        handles = [e if isinstance(e, str) else e.handle for e in experts]
        scores = selectors.random_scores(handles, seed) if method == "random" else {handles[0]: 1.0}
        result["seed"] = int(seed)
    elif method == "domain_prediction":
        epn = _find(pool, "epn")
        if epn is None:
            raise SelectorUnavailable("domain_prediction needs the EPN module; the pool has none")
        outputs = (epn.metadata or {}).get("outputs")
        if not outputs:
            raise SelectorUnavailable(f"EPN {epn.handle!r} metadata lacks 'outputs' (expert names)")
        probs = _classifier_outputs(epn, task, split, resolution, embed_kwargs, "EPN")
        result["num_images"] = int(probs.shape[0])
        by_output = selectors.domain_prediction_scores(probs, outputs)
        scores = _by_alias(experts, by_output)
    else:  # label_matching
        classifier = _find(pool, "classifier")
        if classifier is None:
            raise SelectorUnavailable(
                "label_matching needs the baseline's classifier module; the pool has none"
            )
        if not label_priors:
            raise SelectorUnavailable("label_matching needs the experts' label priors; none given")
        probs = _classifier_outputs(
            classifier, task, split, resolution, embed_kwargs, "baseline classifier"
        )
        result["num_images"] = int(probs.shape[0])
        priors = _by_alias(experts, label_priors)
        if not priors:
            raise SelectorUnavailable("no expert of the pool has a label prior")
        scores = selectors.label_matching_scores(probs, priors)
    if not scores:
        raise SelectorUnavailable(f"{method} scored none of the experts")
    ordered = {e.handle if not isinstance(e, str) else e: None for e in experts}
    ordered = {h: scores[h] for h in ordered if h in scores}
    selection = selectors.select_best(ordered, result["higher_is_better"], method)
    left_out = {item["handle"] for item in result["left_out"]}
    result["experts"] = []
    for e in experts:
        info = entry_info(e)
        if info["handle"] in ordered:
            info.update(score=float(ordered[info["handle"]]), status="ok")
        elif info["handle"] in left_out:
            info.update(score=None, status="left_out")
        else:
            info.update(score=None, status="not_scored")
        result["experts"].append(info)
    result.update(
        selected=selection.selected,
        selected_name=entry_info(
            next(e for e in experts if entry_info(e)["handle"] == selection.selected)
        )["name"],
        tie_broken=selection.tie_broken,
        tie_note=selection.tie_note,
    )
    return result


def extract_shard(
    pool,
    task,
    num_shards,
    shard_index,
    *,
    split=DEFAULT_SPLIT,
    resolution=224,
    cache_dir,
    data_dir=None,
    batch_size=64,
    include_baseline=False,
    log=None,
):
    """Computes (into the cache) the features of this worker's shard of the experts.

    Returns:
      {"task", "split", "resolution", "num_shards", "shard_index", "experts" (this shard's
      handles), "computed", "cached", "left_out"}.
    """
    from vtab_eval import feature_cache

    if not cache_dir:
        raise ValueError("sharded feature extraction needs a cache directory to write into")
    experts = candidates(pool, include_baseline)
    handles = [entry_info(e)["handle"] for e in experts]
    mine = set(feature_cache.shard_assignment(handles, num_shards, shard_index))
    shard = [e for e in experts if entry_info(e)["handle"] in mine]
    embedded = embed.embed_pool(
        shard,
        task,
        split,
        resolution,
        cache_dir=cache_dir,
        data_dir=data_dir,
        batch_size=batch_size,
        log=log,
    )
    return {
        "task": task.name,
        "split": split,
        "resolution": int(resolution),
        "num_shards": int(num_shards),
        "shard_index": int(shard_index),
        "experts": [entry_info(e)["handle"] for e in shard],
        "computed": embedded.computed,
        "cached": embedded.cached,
        "left_out": [{"handle": h, "error": e} for h, e in embedded.failures.items()],
    }


def default_resolution(pool, fallback=224):
    """The resolution the pool's modules recommend (metadata "resolution"), else `fallback`."""
    for e in pool:
        value = (_field(e, "metadata") or {}).get("resolution")
        if value:
            return int(value)
    return fallback


def load_label_priors(collection_spec):
    """The experts' label priors travelling with a collection, or None (e.g. a handle list)."""
    from hub_export import collection

    try:
        return collection.label_priors(collection_spec) or None
    except (ValueError, OSError):
        return None
