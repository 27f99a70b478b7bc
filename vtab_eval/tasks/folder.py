"""Tasks read from an image folder: `folder:PATH` with PATH/train/<class>/*.png|jpg.

Classes are the sub-folders of train/, sorted by name (label i is the i-th name). The
training images are put in a seeded order (numpy's RandomState, whose stream is frozen),
so the splits never change between runs or machines:

* with PATH/test/<class>/...: test is that folder and the pool is every train/ image;
* without it: the last `test_fraction` of the seeded order is test, the rest the pool.

As for VTAB, train800 is pool[:800], val200 pool[800:1000], train800val200 pool[:1000];
the full-data splits are trainval (the pool), val (= val200) and train (the pool minus val).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from vtab_eval.tasks import base

PREFIX = "folder:"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_LAYOUT = (
    "expected PATH/train/<class_name>/<image>.png|.jpg|.jpeg (at least 2 class folders), "
    "optionally PATH/test/<class_name>/... with the same class names"
)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class FolderTask(base.Task):
    """An image-folder task; `files` maps each split name to (paths, labels)."""

    root: str
    class_names: tuple[str, ...]
    files: Mapping[str, tuple[tuple[str, ...], tuple[int, ...]]]

    def _load_examples(self, split, data_dir, shuffle_files):
        del data_dir, shuffle_files  # Only meaningful for TFDS.
        paths, labels = self.files[split]
        if not paths:
            raise ValueError(
                f"Split {split!r} of task {self.name!r} is empty: it is "
                f"{self.splits[split]}. Add training images or use another split."
            )
        ds = tf.data.Dataset.from_tensor_slices(
            {"path": list(paths), "label": np.asarray(labels, np.int64)}
        )
        return ds.map(_read_image, num_parallel_calls=tf.data.AUTOTUNE)

    def to_json(self) -> dict:
        """The common description plus the folder and its class names (label order)."""
        return {**super().to_json(), "root": self.root, "class_names": list(self.class_names)}


def _read_image(example):
    # channels=3 turns grey and RGBA files into RGB; uint8 output whatever the bit depth.
    image = tf.io.decode_image(
        tf.io.read_file(example["path"]), channels=3, expand_animations=False
    )
    image.set_shape([None, None, 3])
    return {"image": image, "label": example["label"]}


def _class_images(split_dir: str) -> dict[str, list[str]]:
    """Maps each class folder of split_dir to its sorted image paths."""
    classes = {}
    for name in sorted(os.listdir(split_dir)):
        class_dir = os.path.join(split_dir, name)
        if name.startswith(".") or not os.path.isdir(class_dir):
            continue
        images = sorted(
            os.path.join(class_dir, f)
            for f in os.listdir(class_dir)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not images:
            raise ValueError(f"Class folder {class_dir!r} holds no images; {_LAYOUT}")
        classes[name] = images
    return classes


def _pool_splits(pool, note):
    """The VTAB positions in the seeded pool: files and a description of every pool split."""

    def take(start, stop=None):
        return pool[0][start:stop], pool[1][start:stop]

    size = len(pool[0])
    rest = take(1000)
    files = {
        "train800": take(0, 800),
        "val200": take(800, 1000),
        "train800val200": take(0, 1000),
        "train": (take(0, 800)[0] + rest[0], take(0, 800)[1] + rest[1]),
        "val": take(800, 1000),
        "trainval": pool,
    }
    descriptions = {
        "train800": f"{note}, [0:800]",
        "val200": f"{note}, [800:1000]",
        "train800val200": f"{note}, [0:1000]",
        "train": f"{note}, [0:800]" + (f"+[1000:{size}]" if size > 1000 else ""),
        "val": f"{note}, [800:1000]",
        "trainval": f"{note}, all {size}",
    }
    return files, descriptions


def make_folder_task(path: str, seed: int = 0, test_fraction: float = 0.2) -> FolderTask:
    """Builds the task for an image folder (see the module docstring for the layout and splits).

    Args:
      path: the folder holding train/ and optionally test/.
      seed: seed of the order of the training images.
      test_fraction: share of the training images held out as test when there is no test/.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Image folder {root!r} does not exist; {_LAYOUT}")
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise FileNotFoundError(f"Image folder {root!r} has no train/ folder; {_LAYOUT}")
    train = _class_images(train_dir)
    if len(train) < 2:
        raise ValueError(
            f"Image folder {root!r} has {len(train)} class folder(s) in train/; {_LAYOUT}"
        )
    class_names = tuple(train)
    label_of = {name: i for i, name in enumerate(class_names)}
    paths = [p for name in class_names for p in train[name]]
    labels = [label_of[name] for name in class_names for _ in train[name]]
    order = np.random.RandomState(seed).permutation(len(paths))
    paths = [paths[i] for i in order]
    labels = [labels[i] for i in order]

    test_dir = os.path.join(root, "test")
    if os.path.isdir(test_dir):
        test = _class_images(test_dir)
        unknown = sorted(set(test) - set(class_names))
        if unknown:
            raise ValueError(
                f"Image folder {root!r}: test/ has classes {unknown} that train/ lacks; {_LAYOUT}"
            )
        test_files = (
            tuple(p for name in test for p in test[name]),
            tuple(label_of[name] for name in test for _ in test[name]),
        )
        pool = (tuple(paths), tuple(labels))
        test_note = f"test/ images ({len(test_files[0])}), sorted by class then file name"
        pool_note = f"train/ images in seeded order (seed {seed})"
    else:
        num_test = max(1, round(len(paths) * test_fraction))
        if num_test >= len(paths):
            raise ValueError(
                f"Image folder {root!r} has only {len(paths)} images in train/ and no test/ "
                f"folder: too few to hold out a test split; {_LAYOUT}"
            )
        cut = len(paths) - num_test
        test_files = (tuple(paths[cut:]), tuple(labels[cut:]))
        pool = (tuple(paths[:cut]), tuple(labels[:cut]))
        test_note = (
            f"train/ images in seeded order (seed {seed}), last {num_test} "
            f"({test_fraction:.0%}; there is no test/ folder)"
        )
        pool_note = f"train/ images in seeded order (seed {seed}) before the test part"

    files, descriptions = _pool_splits(pool, pool_note)
    files["test"], descriptions["test"] = test_files, test_note
    return FolderTask(
        name=PREFIX + path,
        num_classes=len(class_names),
        group=None,
        suite="folder",
        splits=descriptions,
        root=root,
        class_names=class_names,
        files=files,
    )
