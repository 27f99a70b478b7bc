"""Embeds a task split with every module of a pool, through the on-disk feature cache.

Each module's features of (module identity, task fingerprint, split, resolution, precision) are
computed once into a `feature_cache.FeatureCache`, so reruns, killed runs, larger pools and other
shards compute only what is new. A module that fails to load or gives features that are not
finite [N, d] is left out, by handle, without stopping the others. Each module sees images at its
own recommended side unless one is forced, so the order of a pool never changes its features.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from hub_export import collection
from vtab_eval import feature_cache
from vtab_eval import identity as identity_lib

# Image side for modules whose metadata recommends none (third-party modules; BiT's own side).
DEFAULT_RESOLUTION = 224
# The embedding forward pass (`load_module`): the module as saved, its Keras archive under a
# mixed-precision policy, or its Keras archive with the kernels weight-standardised once.
STANDARDIZED = "float32_standardized"
PRECISIONS = ("float32", "bfloat16", "float16", STANDARDIZED)


class BadModuleError(ValueError):
    """A module that cannot be used to embed images; the message names its handle."""


class TaskDataError(ValueError):
    """The task's images could not be read; the message names the task and split."""


@dataclasses.dataclass
class EmbedResult:
    """Features of one task split under each module of a pool: `features`, handle -> float32
    [N, d] of the modules that worked, in pool order; `labels`, int64 [N] (None if none worked);
    `failures`, handle -> why it was left out; `computed` and `cached`, the handles whose features
    this call computed or read from the cache; `resolutions`, handle -> the image side it saw."""

    features: dict
    labels: np.ndarray | None
    failures: dict
    computed: list
    cached: list
    resolutions: dict = dataclasses.field(default_factory=dict)


def module_resolution(entry, default=DEFAULT_RESOLUTION):
    """The image side `entry`'s metadata recommends ("resolution"), else `default` (handles)."""
    metadata = {} if isinstance(entry, str) else (getattr(entry, "metadata", None) or {})
    value = metadata.get("resolution")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        return int(default)
    return int(value)


def check_positive_int(name, value):
    """`value` as an int if it is a positive integer, else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_precision(precision):
    """`precision` if it is one of PRECISIONS, else ValueError quoting it."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}")
    return precision


def load_module(handle, precision="float32"):
    """The module at `handle` as a callable on float images `[N, H, W, 3]` in [0, 1].

    float32: the SavedModel (`collection.load_module`: `tf.saved_model.load` of the folder the
    handle resolves to; no `tensorflow_hub` but for a TF Hub URL). bfloat16 / float16: the module's Keras archive
    (`<module>/keras/expert.keras`) under Keras' `mixed_<precision>` policy (Micikevicius et al.,
    ICLR 2018; float32 weights and GroupNorm statistics, float32 `[N, d]` outputs; speed:
    benchmarks/RESULTS.md, "Ranking E experts vs the bare forward pass"). float32_standardized:
    the archive's `standardized_copy()`, kernels weight-standardised once at load (Qiao et al.,
    2019): the same function up to float32 rounding, for inference only.

    Raises:
      BadModuleError: naming the handle: the module fails to load, or has no Keras archive for a
        precision other than float32.
      ValueError: an unknown precision.
    """
    check_precision(precision)
    try:
        if precision == "float32":
            return collection.load_module(handle)
        from bit_experts.resnet_v2 import BiTResNetV2
        from hub_export import keras_artifact

        source = keras_artifact.load_expert(handle)
        if precision == STANDARDIZED:
            model = source.standardized_copy()
        else:
            model = BiTResNetV2.from_config({**source.get_config(), "dtype": f"mixed_{precision}"})
            model.set_weights(source.get_weights())
        forward = lambda images: tf.cast(model(images), tf.float32)
        return tf.function(forward, reduce_retracing=True, autograph=False)  # a trace per shape
    except Exception as err:  # noqa: BLE001 - any failure to load is reported by handle
        at = "" if precision == "float32" else f" in {precision} (from its Keras archive)"
        raise BadModuleError(
            f"module {handle!r} failed to load{at}: {type(err).__name__}: {err}"
        ) from None


def call_module(module, images):
    """Runs a loaded module on float images in [0, 1]: `__call__`, else its serving signature."""
    if callable(module):
        return module(images)
    signatures = getattr(module, "signatures", {})
    if "serving_default" in signatures:
        outputs = signatures["serving_default"](images)
        return next(iter(outputs.values()))
    raise BadModuleError("module is neither callable nor has a serving_default signature")


def embed_dataset(module, dataset, handle, batch_size=64):
    """(features float32 [N, d], labels int64 [N]) of un-batched {"image", "label"} examples.

    Raises:
      BadModuleError: the module fails, or its output is not `[batch, d]` or holds NaN/inf.
      TaskDataError: the images cannot be read.
    """
    features, labels = [], []
    try:  # module failures are BadModuleErrors below: an OpError here is the data's
        for batch in dataset.batch(batch_size).prefetch(2):
            images = batch["image"]
            try:
                output = call_module(module, images)
            except BadModuleError as err:
                raise BadModuleError(f"module {handle!r}: {err}") from None
            except Exception as err:  # noqa: BLE001
                raise BadModuleError(
                    f"module {handle!r} failed on a batch of shape {images.shape}: "
                    f"{type(err).__name__}: {err}"
                ) from None
            output = np.asarray(output)
            if output.ndim != 2 or output.shape[0] != images.shape[0]:
                raise BadModuleError(
                    f"module {handle!r} returned shape {output.shape} for {images.shape[0]} "
                    "images; expected rank 2 [N, d] (an image feature-vector module)"
                )
            if not np.all(np.isfinite(output)):
                raise BadModuleError(f"module {handle!r} returned non-finite (NaN or inf) features")
            features.append(output.astype(np.float32))
            labels.append(batch["label"].numpy())
    except tf.errors.OpError as err:
        message = " ".join(err.message.split())
        raise TaskDataError(
            f"reading the task's images failed (did a file change since the task was built?): "
            f"{message[:500]}"
        ) from None
    if not features:
        raise ValueError(f"the task split given to module {handle!r} holds no images")
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def embed_pool(
    pool,
    task,
    split="train800val200",
    resolution=None,
    *,
    cache_dir=None,
    data_dir=None,
    batch_size=64,
    cache_only=False,
    precision="float32",
    log=None,
):
    """An EmbedResult: the features of `task`'s `split` under every module of `pool`.

    Args:
      pool: ModuleEntry objects (hub_export.collection) or handle strings, in pool order.
      task: a `vtab_eval.tasks.Task`; data_dir: the TFDS data directory.
      resolution: image side for every module; None: each module's `module_resolution(entry)`.
      cache_dir: feature cache directory (None: no cache); cache_only: never compute (a module
        missing from the cache is a failure).
      batch_size: images per module call; log: optional callable(str) for progress lines.
      precision: one of PRECISIONS (`load_module`), part of the cache key; a module that cannot
        run at it is a failure, never silently computed in float32.
    Split, resolution, batch_size and precision come checked (the config, `ranking.check_options`).

    Raises:
      ValueError: cache_only without a cache_dir; TaskDataError: task images that cannot be read.
    """
    cache = feature_cache.FeatureCache(cache_dir) if cache_dir else None
    if cache_only and cache is None:
        raise ValueError("cache_only needs a cache_dir")
    log = log or (lambda message: None)
    datasets = {}  # side -> the split, decoded and resized once
    result = EmbedResult(features={}, labels=None, failures={}, computed=[], cached=[])
    expected = task.split_size(split)
    for index, entry in enumerate(pool):
        handle = entry if isinstance(entry, str) else entry.handle
        side = result.resolutions[handle] = resolution or module_resolution(entry)
        prefix = f"[{index + 1}/{len(pool)}] {handle} at {side}px"
        prefix += "" if precision == "float32" else f" in {precision}"
        try:
            if cache is not None:
                sidecar = {
                    "handle": handle,
                    "module_identity": identity_lib.module_identity(entry),
                    "task": task.name,
                    "task_fingerprint": task.fingerprint(),
                    "split": split,
                    "resolution": side,
                    "precision": precision,
                }
                identity, fingerprint = sidecar["module_identity"], sidecar["task_fingerprint"]
                key = cache.key(
                    identity, fingerprint, split, side, task_name=task.name, precision=precision
                )
                hit = _cache_hit(cache, key, sidecar, expected)
                if hit is not None:
                    _add(result, handle, *hit, source="cached")
                    log(f"{prefix}: cached {hit[0].shape}")
                    continue
            if cache_only:
                raise BadModuleError(f"module {handle!r} has no cached features (cache_only)")
            start = time.time()
            module = load_module(handle, precision)
            if side not in datasets:
                # Kept for the other experts: decoding per expert cost ~15% of a small module's
                # embedding time (benchmarks/selection.py).
                datasets[side] = task.load(split, data_dir=data_dir, image_size=side).cache()
            try:
                features, labels = embed_dataset(module, datasets[side], handle, batch_size)
            except TaskDataError as err:
                raise TaskDataError(f"task {task.name!r}, split {split!r}: {err}") from None
            if cache is not None:
                cache.put(key, features, labels, sidecar)
            _add(result, handle, features, labels, source="computed")
            log(f"{prefix}: computed {features.shape} in {time.time() - start:.1f}s")
        except BadModuleError as err:
            result.failures[handle] = str(err)
            log(f"{prefix}: LEFT OUT: {err}")
    return result


def _cache_hit(cache, key, want, expected_rows):
    """The cached (features, labels) under `key` if its sidecar has `want`'s module identity, task
    fingerprint and precision (absent: float32, as written before precision existed) and, where
    known, as many rows as the split; else None (recompute)."""
    hit = cache.get(key)
    if hit is None:
        return None
    found = {"precision": "float32", **(cache.metadata(key) or {})}
    if any(found.get(k) != want[k] for k in ("module_identity", "task_fingerprint", "precision")):
        return None
    return hit if expected_rows is None or hit[0].shape[0] == expected_rows else None


def _add(result, handle, features, labels, source):
    if result.labels is None:
        result.labels = labels
    elif not np.array_equal(result.labels, labels):
        raise BadModuleError(
            f"features of module {handle!r} ({source}) are for different labels than the other "
            "modules' (the task data changed?); delete its cache entry to recompute"
        )
    result.features[handle] = features
    (result.computed if source == "computed" else result.cached).append(handle)
