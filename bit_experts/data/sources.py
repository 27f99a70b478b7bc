"""Upstream data sources: the embedded world, a prepared TFDS dataset, TFRecord files, image folders.

Every source gives the label vocabulary, every image's label ids (read once, before training, to
choose the expert domains) and a `tf.data` stream of `{"index", "image", "labels"}` in a fixed
order: `index` is the image's position in that order, the key that expert slices are filtered on.
`image` is uint8 `[H, W, 3]` or encoded bytes (decoded later by the pipeline); `labels` is int64 `[k]`.
Nothing is downloaded: TFDS datasets must already be prepared under `data_dir`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from bit_experts.expert_domains import LabelledImages

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# TFRecord feature keys (documented in docs/training.md).
TFRECORD_IMAGE_KEY = "image/encoded"
TFRECORD_LABELS_KEY = "image/labels"


@dataclasses.dataclass(frozen=True, eq=False)
class UpstreamSource:
    """An upstream dataset as the trainer sees it.

    Attributes:
      name: what it is, e.g. `world`, `tfds:imagenet21k`, recorded in info.json.
      label_names: label id -> hierarchy node name.
      image_labels: each image's label ids: an int64 `[N]` array (single-label) or a list of arrays.
      stream: a function returning the `{"index", "image", "labels"}` dataset, always in index order.
      hierarchy_edges: (parent, child) pairs when the source carries its own hierarchy, else None.
    """

    name: str
    label_names: list[str]
    image_labels: np.ndarray | list
    stream: Callable[[], tf.data.Dataset]
    hierarchy_edges: list[tuple[str, str]] | None = None

    @property
    def num_images(self) -> int:
        return len(self.image_labels)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def labelled_images(self) -> LabelledImages:
        """The labels as `expert_domains.LabelledImages` (validates every label id)."""
        return LabelledImages(self.label_names, self.image_labels)


def load_source(
    source: str,
    *,
    data_dir: str | None = None,
    split: str = "train",
    image_key: str = "image",
    label_key: str = "label",
    label_names: str | None = None,
    world_seed: int = 0,
    world_images_per_class: int = 20,
    world_image_size: int = 32,
    world_scripts: Sequence[str] | None = None,
) -> UpstreamSource:
    """Opens an upstream source named by a spec string.

    Specs: `world` (the embedded glyph world, rendered in memory), `tfds:NAME` (a prepared TFDS
    dataset under `data_dir`; `split`, `image_key`, `label_key` pick the data), `tfrecord:GLOB`
    (files with `image/encoded` bytes and `image/labels` int64 ids; `label_names` is a JSON list or a
    text file with one name per line), `folder:PATH` (PATH/<class>/<image>, one label per image).
    """
    kind, _, arg = source.partition(":")
    if kind == "world" and not arg:
        return _world_source(world_seed, world_images_per_class, world_image_size, world_scripts)
    if kind == "tfds" and arg:
        return _tfds_source(arg, data_dir, split, image_key, label_key)
    if kind == "tfrecord" and arg:
        return _tfrecord_source(arg, label_names)
    if kind == "folder" and arg:
        return _folder_source(arg)
    raise ValueError(
        f"unknown upstream source {source!r}; expected 'world', 'tfds:NAME', 'tfrecord:GLOB' or "
        "'folder:PATH'"
    )


def array_source(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    hierarchy_edges: Sequence[tuple[str, str]] | None = None,
) -> UpstreamSource:
    """A single-label source over in-memory arrays: uint8 images `[N, H, W, 3]`, int labels `[N]`."""
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be [N={len(images)}] ints, got shape {labels.shape}")

    def stream():
        return tf.data.Dataset.from_tensor_slices(
            {"index": np.arange(len(labels), dtype=np.int64), "image": images, "labels": labels}
        ).map(lambda ex: {**ex, "labels": tf.reshape(ex["labels"], [-1])})

    edges = None if hierarchy_edges is None else list(hierarchy_edges)
    return UpstreamSource(name, list(label_names), labels, stream, edges)


def _world_source(seed, images_per_class, image_size, scripts=None) -> UpstreamSource:
    from bit_experts import world  # Imported here: rendering fonts is only needed for this source.

    up = world.generate_upstream(
        seed=seed,
        images_per_class=images_per_class,
        image_size=image_size,
        scripts=None if scripts is None else list(scripts),
    )
    return array_source("world", up.images, up.labels, up.label_names, up.hierarchy_edges)


def _tfds_source(name, data_dir, split, image_key, label_key) -> UpstreamSource:
    import tensorflow_datasets as tfds  # Lazy: heavy, and only this source needs it.

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # TFDS raises several types for unknown or unprepared datasets.
        raise ValueError(f"TFDS dataset {name!r} could not be opened: {e}") from None
    features = builder.info.features
    for key in (image_key, label_key):
        if key not in features:
            raise ValueError(
                f"TFDS dataset {name!r} has no feature {key!r} (features: {sorted(features.keys())})"
            )
    label_feature = features[label_key]
    names = getattr(label_feature, "names", None) or getattr(
        getattr(label_feature, "feature", None), "names", None
    )
    if not names:
        raise ValueError(
            f"TFDS feature {name}/{label_key} is not a ClassLabel (or a sequence of them)"
        )

    def read(decoders):
        try:
            return builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
        except (AssertionError, FileNotFoundError) as e:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} split {split!r} is not prepared under "
                f"{data_dir or 'the default data_dir'} (this code never downloads): {e}"
            ) from None

    scan = read(tfds.decode.PartialDecoding({label_key: True}))
    image_labels = [
        np.asarray(ex[label_key], np.int64).reshape(-1) for ex in scan.as_numpy_iterator()
    ]
    if not image_labels:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} has no examples")

    def stream():
        ds = read({image_key: tfds.decode.SkipDecoding()}).enumerate()
        return ds.map(
            lambda i, ex: {
                "index": i,
                "image": ex[image_key],
                "labels": tf.reshape(tf.cast(ex[label_key], tf.int64), [-1]),
            }
        )

    return UpstreamSource(f"tfds:{name}", list(names), _compact(image_labels), stream)


def read_label_names(path: str) -> list[str]:
    """Label names from a JSON list or a text file with one name per line."""
    if not path:
        raise ValueError("a tfrecord source needs data.label_names: a JSON list or a text file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label names file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: expected a JSON list of label names")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def _tfrecord_source(pattern, label_names_path) -> UpstreamSource:
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern!r}")
    names = read_label_names(label_names_path)
    labels_spec = {TFRECORD_LABELS_KEY: tf.io.VarLenFeature(tf.int64)}
    full_spec = {**labels_spec, TFRECORD_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}

    def parse(record, spec):
        ex = tf.io.parse_single_example(record, spec)
        ex[TFRECORD_LABELS_KEY] = tf.sparse.to_dense(ex[TFRECORD_LABELS_KEY])
        return ex

    records = lambda: tf.data.TFRecordDataset(files)  # Sequential, so the order is fixed.
    try:
        image_labels = [
            ex[TFRECORD_LABELS_KEY]
            for ex in records().map(lambda r: parse(r, labels_spec)).as_numpy_iterator()
        ]
    except tf.errors.OpError as e:
        raise ValueError(f"TFRecord files {pattern!r} could not be read: {e.message}") from None
    if not image_labels:
        raise ValueError(f"TFRecord files {pattern!r} hold no examples")

    def stream():
        ds = records().map(lambda r: parse(r, full_spec)).enumerate()
        return ds.map(
            lambda i, ex: {
                "index": i,
                "image": ex[TFRECORD_IMAGE_KEY],
                "labels": ex[TFRECORD_LABELS_KEY],
            }
        )

    return UpstreamSource(f"tfrecord:{pattern}", names, _compact(image_labels), stream)


def _folder_source(root) -> UpstreamSource:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            f for f in os.listdir(os.path.join(root, name)) if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths += [os.path.join(root, name, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise ValueError(f"image folder {root!r} has no <class>/<image> files {IMAGE_EXTENSIONS}")
    labels = np.asarray(labels, np.int64)

    def stream():
        ds = tf.data.Dataset.from_tensor_slices(
            {"index": np.arange(len(paths), dtype=np.int64), "path": paths, "labels": labels}
        )
        return ds.map(
            lambda ex: {
                "index": ex["index"],
                "image": tf.io.read_file(ex["path"]),
                "labels": tf.reshape(ex["labels"], [-1]),
            }
        )

    return UpstreamSource(f"folder:{root}", classes, labels, stream)


def _compact(image_labels: Sequence[np.ndarray]) -> np.ndarray | list:
    """A 1-D array when every image has exactly one label (the cheap form), else the list."""
    if all(len(x) == 1 for x in image_labels):
        return np.concatenate(image_labels).astype(np.int64)
    return list(image_labels)
