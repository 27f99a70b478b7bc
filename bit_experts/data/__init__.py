"""Upstream input: sources (embedded world, TFDS, TFRecord, image folders), BiT preprocessing, and
the tf.data pipeline that filters expert slices by image index. See docs/training.md."""

from bit_experts.data.pipeline import membership_targets, training_dataset
from bit_experts.data.preprocess import eval_preprocess, inception_crop, train_preprocess
from bit_experts.data.sources import UpstreamSource, array_source, load_source

__all__ = [
    "UpstreamSource",
    "array_source",
    "eval_preprocess",
    "inception_crop",
    "load_source",
    "membership_targets",
    "train_preprocess",
    "training_dataset",
]
