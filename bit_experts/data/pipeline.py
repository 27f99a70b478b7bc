"""The upstream training pipeline: slice filtering, shuffling, BiT preprocessing, batching.

An expert's slice is selected inside `tf.data` by a boolean mask indexed by each example's `index`,
so no image array is ever copied per slice. Targets are multi-hot vectors: over the upstream labels
(baseline and experts) or over the expert domains an image belongs to (the EPN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from bit_experts.data.preprocess import train_preprocess
from bit_experts.data.sources import UpstreamSource


def slice_mask(indices: Sequence[int] | np.ndarray, num_images: int) -> np.ndarray:
    """bool [num_images], True at `indices`; ValueError if the slice is empty or out of range."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("the slice is empty: an expert needs at least one image")
    if indices.min() < 0 or indices.max() >= num_images:
        raise ValueError(
            f"slice image indices must lie in 0..{num_images - 1}, got "
            f"{int(indices.min())}..{int(indices.max())}"
        )
    mask = np.zeros(num_images, dtype=bool)
    mask[indices] = True
    return mask


def membership_targets(domain_indices: Sequence[np.ndarray], num_images: int):
    """Which domains each image belongs to, in compressed form.

    Returns `(pattern_ids, patterns)`: int32 `[num_images]` and float32 `[P, num_domains]`, so that
    image i's multi-hot target is `patterns[pattern_ids[i]]`. Only the P distinct membership patterns
    are stored (slices of a hierarchy overlap in few ways), not a full images x domains matrix.
    """
    if not domain_indices:
        raise ValueError("membership_targets needs at least one domain")
    bits = np.zeros((num_images, len(domain_indices)), dtype=bool)
    for d, indices in enumerate(domain_indices):
        bits[slice_mask(indices, num_images), d] = True
    patterns, pattern_ids = np.unique(bits, axis=0, return_inverse=True)
    return pattern_ids.reshape(-1).astype(np.int32), patterns.astype(np.float32)


def epoch_length(
    num_images: int,
    indices: Sequence[int] | np.ndarray | None = None,
    num_shards: int = 1,
    shard: int = 0,
) -> int:
    """Examples one input pipeline sees per epoch: the slice's images (all if None) in its shard."""
    mask = np.ones(num_images, bool) if indices is None else slice_mask(indices, num_images)
    return int(mask[shard::num_shards].sum())


def training_dataset(
    source: UpstreamSource,
    *,
    batch_size: int,
    image_size: int,
    seed: int,
    augment_seed: int | None = None,
    start_step: int = 0,
    indices: Sequence[int] | np.ndarray | None = None,
    expert_targets: tuple[np.ndarray, np.ndarray] | None = None,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = 10_000,
    crop_min_area: float = 0.05,
    flip: bool = True,
) -> tf.data.Dataset:
    """An endless, shuffled, augmented stream of `(images, targets)` batches.

    The stream is a pure function of `(seed, augment_seed)` and the data: epoch e is the data shuffled
    with a seed derived from `(seed, e)`, and example number n of the stream is augmented with the
    stateless key `(augment_seed, n)`. `start_step` resumes it: the stream that an uninterrupted
    run would read from step `start_step` on, bit for bit. Resuming skips whole epochs for free and
    reads (without decoding or augmenting) at most one epoch of the slice to find its place.

    Args:
      source: the upstream source.
      batch_size: the global batch size; with `input_context` each replica gets its share.
      image_size: model input resolution.
      seed: data order (shuffling) seed.
      augment_seed: augmentation seed (crops and flips); None: `seed`.
      start_step: training steps already taken (0: from the start).
      indices: the slice's image indices (an expert); None for every image.
      expert_targets: `membership_targets(...)` to train the EPN; None for upstream label targets.
      input_context: from `strategy.distribute_datasets_from_function`; shards by input pipeline.
      shuffle_buffer: shuffle buffer size in examples.
      crop_min_area: the inception crop's smallest area fraction (BiT: 0.05).
      flip: random horizontal flips (BiT: yes; mirrored glyphs are other glyphs, though).
    Raises:
      ValueError: a bad slice, `crop_min_area` outside (0, 1], `start_step` < 0, or an input
        pipeline whose shard holds none of the slice's examples.
    """
    if not 0 < crop_min_area <= 1:
        raise ValueError(f"crop_min_area must be in (0, 1], got {crop_min_area!r}")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step!r}")
    augment_seed = seed if augment_seed is None else augment_seed
    per_replica = batch_size
    per_step = batch_size  # Examples this input pipeline yields per training step.
    shards, shard = 1, 0
    ds = source.stream()
    if input_context is not None:
        per_replica = input_context.get_per_replica_batch_size(batch_size)
        shards, shard = input_context.num_input_pipelines, input_context.input_pipeline_id
        per_step = batch_size // shards
        if shards > 1:
            ds = ds.shard(shards, shard)
    if indices is not None:
        mask = tf.constant(slice_mask(indices, source.num_images))
        ds = ds.filter(lambda ex: tf.gather(mask, ex["index"]))
    length = epoch_length(source.num_images, indices, shards, shard)
    if length < 1:
        raise ValueError(f"input pipeline {shard} of {shards} has no examples of this slice")
    position = start_step * per_step  # Examples an uninterrupted run has read before start_step.
    first_epoch, offset = divmod(position, length)
    base = ds

    def epoch(e):
        epoch_seed = (tf.constant(seed, tf.int64) * 1_000_003 + e) % (2**31 - 1)
        return base.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(offset)

    encoded = base.element_spec["image"].dtype == tf.string
    num_labels = source.num_labels
    if expert_targets is not None:
        pattern_ids, patterns = (tf.constant(x) for x in expert_targets)

    def prepare(n, ex):
        image = ex["image"]
        if encoded:
            image = tf.io.decode_image(image, channels=3, expand_animations=False)
        seeds = tf.stack([tf.constant(augment_seed, tf.int64), n])
        image = train_preprocess(image, image_size, seeds, min_area=crop_min_area, flip=flip)
        if expert_targets is not None:
            target = tf.gather(patterns, tf.gather(pattern_ids, ex["index"]))
        else:
            hot = tf.reduce_sum(tf.one_hot(ex["labels"], num_labels), axis=0)
            target = tf.minimum(hot, 1.0)
        return image, target

    ds = ds.enumerate(start=position)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
