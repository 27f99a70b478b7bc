"""Ranks a pool of expert modules on a task with one selector and returns the result as a dict.

Selectors (`METHODS`): `knn` (leave-one-out 1-NN accuracy of each expert's features; the paper's
default), `random` (seeded), `domain_prediction` (the EPN's geometric-mean probability of each
expert's domain), `label_matching` (KL divergence between the upstream labels the baseline's
classifier predicts on the task and each expert's label prior) and `baseline` (no selection: the
upstream baseline `B`, the "no expert" reference), and the proxies on cached features `logme`,
`linear_loo`, `ncm` and `gbc` (docs/selection.md). Features and classifier outputs go through the
feature cache (`vtab_eval.embed`). The result dict is documented in docs/evaluation.md.

Proxies with per-image correctness (`knn`, `linear_loo`, `ncm`) also give every expert a bootstrap
interval, the paired bootstrap probabilities that the top pick beats the runner-up and that the
best expert beats B, and allow the `baseline` fallback policy (`selectors.baseline_fallback`).

Each module sees images at its own recommended resolution (`embed.module_resolution`: metadata
"resolution", else `embed.DEFAULT_RESOLUTION` = 224) unless a resolution is forced, so the order of
a pool never changes a score. Experts that can be embedded but not fine-tuned
(`module_contract.finetunable`) are ranked and marked, but never selected.
"""

import numpy as np

from vtab_eval import confidence, embed, module_contract, selectors

METHODS = (
    "knn",
    "random",
    "domain_prediction",
    "label_matching",
    "baseline",
    "logme",
    "linear_loo",
    "ncm",
    "gbc",
)
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


_OPTION_KEYS = (
    "split",
    "resolution",
    "batch_size",
    "seed",
    "include_baseline",
    "cache_only",
    "fallback",
    "fallback_confidence",
    "confidence_level",
    "n_resamples",
    "precision",
)


def rank(pool, task, method="knn", options=None, **kwargs):
    """Temporary face: `options` (the config's selection section) or the old keywords."""
    if options is not None:
        kwargs = {**{k: options[k] for k in _OPTION_KEYS}, **kwargs}
    return _rank(pool, task, method, **kwargs)


def _rank(
    pool,
    task,
    method="knn",
    *,
    split=DEFAULT_SPLIT,
    resolution=None,
    cache_dir=None,
    data_dir=None,
    batch_size=64,
    seed=0,
    include_baseline=False,
    cache_only=False,
    label_priors=None,
    fallback="none",
    fallback_confidence=selectors.DEFAULT_FALLBACK_CONFIDENCE,
    confidence_level=confidence.DEFAULT_LEVEL,
    n_resamples=confidence.DEFAULT_RESAMPLES,
    precision="float32",
    log=None,
):
    """Scores every expert of `pool` on `task` with `method` and picks one.

    Args:
      pool: ModuleEntry objects (hub_export.collection.resolve_pool) or handle strings.
      task: a `vtab_eval.tasks.Task`.
      method: one of METHODS.
      split: the task images selection looks at (the paper: train800val200).
      resolution: image side every module sees; None or 0: each module its own
        (`embed.module_resolution`), recorded per expert in the result.
      cache_dir, data_dir, batch_size, cache_only: see `vtab_eval.embed.embed_pool`.
      seed: seed of the `random` selector and of the bootstrap intervals.
      include_baseline: rank the baseline `B` together with the experts.
      label_priors: expert name -> [L] prior (hub_export.collection.label_priors); needed by
        `label_matching`.
      fallback: "none", or "baseline": pick B unless the best expert beats it with paired
        bootstrap probability >= `fallback_confidence` (needs a method of
        `selectors.ROW_METHODS` and `include_baseline=True`).
      fallback_confidence: probability in [0, 1] the best expert must beat B with.
      confidence_level: coverage of the per-expert bootstrap intervals, in (0, 1).
      n_resamples: bootstrap resamples per interval.
      precision: arithmetic of the experts' forward pass for the feature methods
        (`embed.PRECISIONS`; all but float32 need each module's Keras archive, see
        `embed.load_module`). Classifier outputs (EPN, baseline classifier) stay float32.
      log: optional callable(str) for progress lines.

    Returns:
      The ranking dict (docs/evaluation.md, "Ranking JSON").

    Raises:
      ValueError: unknown method or precision; bad task labels (fewer than 2 images, one class, out of range);
        a fallback the method or the pool cannot support.
      SelectorUnavailable: the pool lacks the EPN / baseline classifier / priors the method needs,
        or every expert was left out, or B was left out under the fallback.
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; expected one of {METHODS}")
    _check_fallback(fallback, fallback_confidence, method, include_baseline)
    resolution = embed.check_positive_int("resolution", resolution) if resolution else None
    embed.check_positive_int("batch_size", batch_size)
    embed.check_precision(precision)
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
        "resolution": resolution,
        "precision": precision if method in selectors.FEATURE_METHODS else "float32",
        "num_images": None,
        "higher_is_better": method != "label_matching",
        "left_out": [],
    }
    scores = {}
    correct = None  # handle -> bool [N] per-image hits, for selectors.ROW_METHODS
    if method in selectors.FEATURE_METHODS:
        embedded = embed.embed_pool(
            experts, task, split, resolution, precision=precision, **embed_kwargs
        )
        result["left_out"] = [{"handle": h, "error": e} for h, e in embedded.failures.items()]
        result["cache"] = {"computed": embedded.computed, "cached": embedded.cached}
        if not embedded.features:
            raise SelectorUnavailable(
                f"every expert was left out on task {task.name!r}: "
                + "; ".join(embedded.failures.values())
            )
        labels = selectors.validate_task_labels(embedded.labels, task.num_classes)
        result["num_images"] = int(labels.size)
        scores, correct = selectors.feature_scores(method, embedded.features, labels)
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
    # Experts that cannot be fine-tuned keep their score but are never selected.
    contract = {entry_info(e)["handle"]: module_contract.finetunable(e) for e in experts}
    selectable = {h: v for h, v in ordered.items() if contract[h][0]}
    if not selectable:
        raise SelectorUnavailable(
            "no scored expert can be fine-tuned: "
            + "; ".join(f"{h}: {contract[h][1]}" for h in ordered)
        )
    selection = selectors.select_best(selectable, result["higher_is_better"], method)
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
        info["resolution"] = resolution or embed.module_resolution(e)
        info["finetunable"], reason = contract[info["handle"]]
        if reason:
            info["finetunable_reason"] = reason
        result["experts"].append(info)
    result.update(
        selected=selection.selected,
        selected_name=entry_info(
            next(e for e in experts if entry_info(e)["handle"] == selection.selected)
        )["name"],
        tie_broken=selection.tie_broken,
        tie_note=selection.tie_note,
    )
    _add_confidence(
        result,
        experts,
        selection,
        correct,
        find_baseline(pool) if fallback == "baseline" or include_baseline else None,
        fallback=fallback,
        fallback_confidence=fallback_confidence,
        confidence_level=confidence_level,
        n_resamples=n_resamples,
        seed=seed,
    )
    return result


def _check_fallback(fallback, fallback_confidence, method, include_baseline):
    """ValueError, naming the argument, for a fallback policy that cannot run."""
    if fallback not in selectors.FALLBACK_POLICIES:
        raise ValueError(
            f"unknown fallback {fallback!r}; expected one of {selectors.FALLBACK_POLICIES}"
        )
    if isinstance(fallback_confidence, bool) or not 0 <= float(fallback_confidence) <= 1:
        raise ValueError(f"fallback_confidence must be in [0, 1]; got {fallback_confidence!r}")
    if fallback == "baseline":
        if method not in selectors.ROW_METHODS:
            raise ValueError(
                f"fallback 'baseline' needs per-image correctness, which {method!r} lacks; "
                f"use one of {selectors.ROW_METHODS}"
            )
        if not include_baseline:
            raise ValueError(
                "fallback 'baseline' needs the baseline B ranked with the experts: "
                "pass include_baseline=True (--include_baseline)"
            )


def _add_confidence(
    result,
    experts,
    selection,
    correct,
    baseline,
    *,
    fallback,
    fallback_confidence,
    confidence_level,
    n_resamples,
    seed,
):
    """Adds bootstrap intervals, pairwise win probabilities and the fallback to `result`.

    Keys (docs/evaluation.md): per expert `ci_low`, `ci_high`; `confidence`, `pairwise`,
    `fallback`. Without per-image correctness the intervals are null and `pairwise` is empty.
    """
    names = {entry_info(e)["handle"]: entry_info(e)["name"] for e in experts}
    for info in result["experts"]:
        low = high = None
        if correct is not None and info["handle"] in correct:
            low, high = confidence.accuracy_interval(
                correct[info["handle"]],
                confidence_level=confidence_level,
                n_resamples=n_resamples,
                seed=seed,
            )
        info.update(ci_low=low, ci_high=high)
    result["confidence"] = None
    result["pairwise"] = []
    if correct is not None:
        result["confidence"] = {
            "level": float(confidence_level),
            "n_resamples": int(n_resamples),
            "interval": "bca",
            "seed": int(seed),
            "pairwise": "exact paired bootstrap",
        }
        top = selection.selected
        pairs = []
        others = {h: v for h, v in selection.scores.items() if h != top}
        try:
            runner_up = selectors.select_best(others, selection.higher_is_better).selected
            pairs.append(("top_vs_runner_up", top, runner_up))
        except ValueError:  # a single finite score: no runner-up
            pass
        b_handle = entry_info(baseline)["handle"] if baseline is not None else None
        if b_handle in selection.scores:
            experts_only = {h: v for h, v in selection.scores.items() if h != b_handle}
            try:
                best = selectors.select_best(experts_only, selection.higher_is_better).selected
                pairs.append(("best_expert_vs_baseline", best, b_handle))
            except ValueError:
                pass
        for kind, a, b in pairs:
            win = confidence.paired_win_probability(correct[a], correct[b])
            result["pairwise"].append(
                {
                    "pair": kind,
                    "a": a,
                    "a_name": names.get(a, a),
                    "b": b,
                    "b_name": names.get(b, b),
                    "p_better": win.p_better,
                    "p_tie": win.p_tie,
                    "p_worse": win.p_worse,
                }
            )
    result["fallback"] = None
    if fallback == "baseline":
        if baseline is None or entry_info(baseline)["handle"] not in selection.scores:
            raise SelectorUnavailable(
                "fallback 'baseline' needs the baseline B's score, but "
                + (
                    "the pool has no baseline module"
                    if baseline is None
                    else "B was left out or cannot be fine-tuned"
                )
            )
        b_handle = entry_info(baseline)["handle"]
        decision = selectors.baseline_fallback(selection, b_handle, correct, fallback_confidence)
        result["fallback"] = {
            "policy": "baseline",
            "confidence": float(fallback_confidence),
            "baseline": b_handle,
            "best_expert": decision.best_expert,
            "p_better": decision.p_better,
            "proxy_selected": selection.selected,
            "fired": decision.fired,
        }
        result["selected"] = decision.selected
        result["selected_name"] = names.get(decision.selected, decision.selected)


def extract_shard(pool, task, options, **kwargs):
    """Temporary face: `options` (the config's selection section)."""
    keys = ("split", "resolution", "batch_size", "include_baseline", "precision")
    return _extract_shard(
        pool,
        task,
        options["num_shards"],
        options["shard_index"],
        **{k: options[k] for k in keys},
        **kwargs,
    )


def _extract_shard(
    pool,
    task,
    num_shards,
    shard_index,
    *,
    split=DEFAULT_SPLIT,
    resolution=None,
    cache_dir,
    data_dir=None,
    batch_size=64,
    include_baseline=False,
    precision="float32",
    log=None,
):
    """Computes (into the cache) the features of this worker's shard of the experts, each at
    `resolution` (None or 0: its own, as `rank` does) in `precision` (`embed.PRECISIONS`).

    Returns:
      {"task", "split", "resolution" (the forced side or None), "precision", "resolutions" (handle -> side),
      "num_shards", "shard_index", "experts" (this shard's handles), "computed", "cached",
      "left_out"}.
    """
    from vtab_eval import feature_cache

    if not cache_dir:
        raise ValueError("sharded feature extraction needs a cache directory to write into")
    resolution = embed.check_positive_int("resolution", resolution) if resolution else None
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
        precision=precision,
        log=log,
    )
    return {
        "task": task.name,
        "split": split,
        "resolution": resolution,
        "precision": precision,
        "resolutions": embedded.resolutions,
        "num_shards": int(num_shards),
        "shard_index": int(shard_index),
        "experts": [entry_info(e)["handle"] for e in shard],
        "computed": embedded.computed,
        "cached": embedded.cached,
        "left_out": [{"handle": h, "error": e} for h, e in embedded.failures.items()],
    }


def default_resolution(pool, fallback=224):
    """The first module's recommended resolution (metadata "resolution"), else `fallback`.

    Depends on the order of the pool: rank with `resolution=None` instead, which embeds each
    module at its own (`embed.module_resolution`). Kept for callers not yet moved over.
    """
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
