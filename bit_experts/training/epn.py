"""The expert-prediction network (EPN, paper section 5): predicts an image's expert domain(s).

Slices overlap (an image is in every domain on its path to the root), so the EPN is a multi-label
classifier: one sigmoid per expert, target 1 for each domain the image belongs to (all zeros for an
image in no domain). It is a BiT ResNet-v2 with a head over the experts, by default initialised from
the baseline's backbone (`epn.init='baseline'`) and trained on all upstream images.
"""

from __future__ import annotations

from collections.abc import Sequence

from bit_experts import presets
from bit_experts.data import membership_targets
from bit_experts.expert_domains import ExpertDomain


def epn_targets(domains: Sequence[ExpertDomain], num_images: int):
    """`(pattern_ids, patterns)` for `training_dataset(expert_targets=...)`; see membership_targets."""
    return membership_targets([d.image_indices for d in domains], num_images)


def build_epn(preset: str, num_experts: int, dtype=None):
    """A BiT model of `preset` with a zero-initialised head of `num_experts` outputs."""
    if num_experts < 1:
        raise ValueError(f"the EPN needs at least one expert, got {num_experts}")
    return presets.create_model(preset, num_classes=num_experts, dtype=dtype)


PRIOR_IMAGES = 2048  # upstream images the EPN's own prior is measured on
LOG_PROB_FLOOR = 1e-12  # probabilities are floored here before the log (as domain prediction does)


def upstream_log_p(model, source, image_size: int, batch_size: int = 128) -> list[float]:
    """The EPN's own prior: [E] floats, its mean log-probability of each domain over the first
    `PRIOR_IMAGES` upstream images of `source` (index order; the world and TFDS sources store
    their images shuffled), each probability floored at `LOG_PROB_FLOOR`.

    Domain prediction divides a task's evidence by this (vtab_eval.selectors.classifiers): an EPN
    that under-predicts a domain on every image (a short or poorly calibrated training) does so
    on the task's images too, and only the difference says where the task comes from.
    """
    import numpy as np
    import tensorflow as tf

    from bit_experts.data import preprocess

    resize = lambda ex: preprocess.eval_preprocess(ex["image"], image_size)
    images = source.stream().take(PRIOR_IMAGES).map(resize).batch(batch_size)
    total, count = 0.0, 0
    for batch in images:
        log_p = tf.math.log_sigmoid(tf.cast(model(batch, training=False), tf.float32)).numpy()
        total = total + np.maximum(log_p, np.log(LOG_PROB_FLOOR)).astype(np.float64).sum(axis=0)
        count += len(log_p)
    if not count:
        raise ValueError("the upstream source has no images to measure the EPN's prior on")
    return [float(v) for v in total / count]
