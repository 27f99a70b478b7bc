"""Tasks read from an image folder: `folder:PATH` with PATH/train/<class>/*.png|jpg, named by the
folder's name (PATH's last part; `disambiguated` when another task has it).

Classes are the sub-folders of train/, sorted by name (label i is the i-th name). The train/
images are put in a seeded order (numpy's RandomState, whose stream is frozen); test is PATH/test/
if there is one, else the last `test_fraction` of that order, and the VTAB splits take positions
in the rest, the pool (`_pool_splits`). Every image is read, hashed and decoded once when the task
is built, so a bad file is named in one line then, not deep inside tf.data later. The layout,
splits and fingerprint are documented in docs/tasks.md.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import stat
import warnings
from collections.abc import Mapping

import numpy as np

from bit_experts import atomic_files, lazy_api
from vtab_eval.tasks import base

tf = lazy_api.module("tensorflow")  # imported on first use: commands check flags first

PREFIX = "folder:"
# The version of the rules below (layout, labels, seeded splits); bumped when they change examples.
FOLDER_VERSION = "1.0.0"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_LAYOUT = (
    "expected PATH/train/<class_name>/<image>.png|.jpg|.jpeg (at least 2 class folders), "
    "optionally PATH/test/<class_name>/... with the same class names"
)

# Files read at once when a folder is checked (TF's decoders and hashlib release the GIL).
_CHECK_THREADS = 8
# Files already read in this process: (path, size, mtime_ns) -> (SHA-256, problem or None).
_CHECKED: dict[tuple[str, int, int], tuple[str, str | None]] = {}


class BadImageWarning(UserWarning):
    """Files of an image folder that cannot be decoded were left out (skip_bad_images=True)."""


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class FolderTask(base.Task):
    """An image-folder task (`make_folder_task`'s arguments are kept as fields).

    Attributes:
      root: the absolute folder. class_names: label i is class_names[i].
      files: split name -> (absolute image paths, labels).
      content_sha256: SHA-256 of every image file's path relative to root and SHA-256 of its
        bytes, sorted by path: what the fingerprint covers of the data.
      skipped_images: (path relative to root, reason) of the files left out as undecodable.
    """

    version: str = FOLDER_VERSION
    root: str
    class_names: tuple[str, ...]
    files: Mapping[str, tuple[tuple[str, ...], tuple[int, ...]]]
    seed: int = 0
    test_fraction: float = 0.2
    skip_bad_images: bool = False
    content_sha256: str
    skipped_images: tuple[tuple[str, str], ...] = ()

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

    def split_size(self, split: str) -> int:
        """Number of images of `split` (known without reading them)."""
        self.split_string(split)
        return len(self.files[split][0])

    def validate_splits(self, splits, min_images=1):
        """`Task.validate_splits`, with the folder, the split's size and the folder's sizes."""
        for split in splits:
            size = self.split_size(split)
            if size < min_images:
                raise ValueError(
                    f"Image folder {self.root!r} is too small for split {split!r}: it holds "
                    f"{size} images ({self.splits[split]}), at least {min_images} needed; the "
                    f"folder has {len(self.files['trainval'][0])} pool and "
                    f"{len(self.files['test'][0])} test images (VTAB-1k's train800 and val200 "
                    "need 1000 pool images)"
                )

    def _identity(self) -> dict:
        """Content, not location (root and name are left out): a copied folder keeps it."""
        return {
            **super()._identity(),
            "class_names": list(self.class_names),
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "skip_bad_images": self.skip_bad_images,
            "content_sha256": self.content_sha256,
            "skipped_images": [path for path, _ in self.skipped_images],
        }

    def to_json(self) -> dict:
        """The common description plus root, class names, skipped images and the fingerprint."""
        return {
            **super().to_json(),
            "root": self.root,
            "class_names": list(self.class_names),
            "skipped_images": [{"path": p, "reason": r} for p, r in self.skipped_images],
            "fingerprint": self.fingerprint(),
        }


def disambiguated(task: FolderTask, digits: int = 8) -> FolderTask:
    """`task` named `<its folder's name>~<the first `digits` hex digits of its fingerprint>`, for a
    folder whose name another task has (`vtab_eval.tasks.distinct_names`)."""
    base = os.path.basename(task.root) or "folder"
    return dataclasses.replace(task, name=f"{base}~{task.fingerprint()[:digits]}")


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


def _hash_and_decode(path: str) -> tuple[str, str | None]:
    """(hex SHA-256 of the file, why loading's decoder cannot decode it or None), in one read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        return "", f"cannot be read ({err.strerror})"
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, "empty file"
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as err:  # its message without the function-node prefix and op suffix
        message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", err.message)
        message = re.sub(r"\s*\[Op:\w+\].*$", "", message, flags=re.S)
        return digest, " ".join(message.split()) or "unknown error"
    return digest, None


def _read_and_check(path: str) -> tuple[str, str | None]:
    """`_hash_and_decode(path)`, memoised per process by (path, size, mtime_ns)."""
    try:
        info = os.stat(path)
    except OSError as err:
        return "", f"cannot be read ({err.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "", "not a regular file"
    key = (path, info.st_size, info.st_mtime_ns)
    if key not in _CHECKED:
        _CHECKED[key] = _hash_and_decode(path)
    return _CHECKED[key]


def _check_images(root, found, skip_bad_images):
    """(`found` ({split: {class: paths}}) without undecodable files, content SHA-256, skipped
    (relative path, reason)); ValueError (one line) naming the first bad file unless
    skip_bad_images, or a class folder left with no decodable image; before anything is read, a
    ValueError (one line) for a symbolic link on the way to an image that leads outside root."""
    paths = [p for classes in found.values() for images in classes.values() for p in images]
    rel = {p: os.path.relpath(p, root).replace(os.sep, "/") for p in paths}
    for p in paths:
        atomic_files.confined(root, rel[p], "folder task image")
    with concurrent.futures.ThreadPoolExecutor(_CHECK_THREADS) as pool:
        checked = dict(zip(paths, pool.map(_read_and_check, paths)))
    listing = sorted((rel[p], digest) for p, (digest, _) in checked.items())
    content = hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()
    bad = {p: problem for p, (_, problem) in checked.items() if problem}
    if bad and not skip_bad_images:
        path, problem = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more undecodable files)" if len(bad) > 1 else ""
        raise ValueError(
            f"Image folder {root!r}: {path!r} cannot be decoded as an image: {problem}{more}; "
            "remove or replace it, or pass --skip_bad_images (skip_bad_images=True) to leave "
            "such files out"
        )
    if bad:
        shown = ", ".join(f"{rel[p]} ({problem})" for p, problem in list(bad.items())[:5])
        warnings.warn(
            f"Image folder {root!r}: left out {len(bad)} undecodable files: {shown}"
            + (" ..." if len(bad) > 5 else ""),
            BadImageWarning,
            stacklevel=3,
        )
    good = {split: {} for split in found}
    for split, classes in found.items():
        for name, images in classes.items():
            good[split][name] = [p for p in images if p not in bad]
            if not good[split][name]:
                raise ValueError(
                    f"Class folder {os.path.dirname(images[0])!r} holds no decodable images "
                    f"({len(images)} left out as undecodable); {_LAYOUT}"
                )
    return good, content, tuple(sorted((rel[p], problem) for p, problem in bad.items()))


def _pool_splits(pool, note):
    """The VTAB positions in the seeded pool: files and a description of every pool split."""
    size = len(pool[0])
    positions = {
        "train800": [(0, 800)],
        "val200": [(800, 1000)],
        "train800val200": [(0, 1000)],
        "train": [(0, 800), (1000, size)],
        "val": [(800, 1000)],
        "trainval": [(0, size)],
    }
    files, descriptions = {}, {}
    for split, ranges in positions.items():
        files[split] = tuple(tuple(x for a, b in ranges for x in part[a:b]) for part in pool)
        # train's [1000:size] is left out of its description when the pool has no more than 1000.
        descriptions[split] = f"{note}, " + "+".join(f"[{a}:{b}]" for a, b in ranges if a < b)
    descriptions["trainval"] = f"{note}, all {size}"
    return files, descriptions


def _declared_group(root: str) -> str | None:
    """The VTAB group in PATH/task.json ("group", as bit_experts.world writes it), or None."""
    path = atomic_files.confined(root, "task.json", "folder task file")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            group = json.load(f).get("group")
    except (OSError, ValueError, AttributeError):
        return None
    return group if group in base.GROUPS else None


def make_folder_task(
    path: str, seed: int = 0, test_fraction: float = 0.2, *, skip_bad_images: bool = False
) -> FolderTask:
    """The task of the folder `path` (the module docstring says how its splits are drawn).

    `seed` orders the train/ images; `test_fraction` of them is test when there is no test/.
    `skip_bad_images`: leave out files that cannot be decoded (empty, cut off, not an image) with a
    BadImageWarning naming them, before the order is drawn, instead of raising.

    Raises:
      FileNotFoundError: no such folder, or no train/ in it.
      ValueError: a bad layout, or an undecodable file (one line naming it) unless
        skip_bad_images.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    atomic_files.require_local(
        path, "folder task", "image folders are read from a local disk; copy the folder there"
    )
    root = os.path.abspath(os.path.expanduser(atomic_files.normalize(path)))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Image folder {root!r} does not exist; {_LAYOUT}")
    if not os.path.isdir(os.path.join(root, "train")):
        raise FileNotFoundError(f"Image folder {root!r} has no train/ folder; {_LAYOUT}")
    found = {
        split: _class_images(os.path.join(root, split))
        for split in ("train", "test")
        if os.path.isdir(os.path.join(root, split))
    }
    found, content_sha256, skipped = _check_images(root, found, skip_bad_images)
    train, test = found["train"], found.get("test")
    if len(train) < 2:
        raise ValueError(
            f"Image folder {root!r} has {len(train)} class folder(s) in train/; {_LAYOUT}"
        )
    class_names = tuple(train)
    label_of = {name: i for i, name in enumerate(class_names)}
    paths = [p for name in class_names for p in train[name]]
    labels = [label_of[name] for name in class_names for _ in train[name]]
    order = np.random.RandomState(seed).permutation(len(paths))
    paths = tuple(paths[i] for i in order)
    labels = tuple(labels[i] for i in order)

    ordered = f"train/ images in seeded order (seed {seed})"
    if test is not None:
        unknown = sorted(set(test) - set(class_names))
        if unknown:
            raise ValueError(
                f"Image folder {root!r}: test/ has classes {unknown} that train/ lacks; {_LAYOUT}"
            )
        test_files = (
            tuple(p for name in test for p in test[name]),
            tuple(label_of[name] for name in test for _ in test[name]),
        )
        pool, pool_note = (paths, labels), ordered
        test_note = f"test/ images ({len(test_files[0])}), sorted by class then file name"
    else:
        num_test = max(1, round(len(paths) * test_fraction))
        if num_test >= len(paths):
            raise ValueError(
                f"Image folder {root!r} has only {len(paths)} images in train/ and no test/ "
                f"folder: too few to hold out a test split; {_LAYOUT}"
            )
        cut = len(paths) - num_test
        test_files = (paths[cut:], labels[cut:])
        pool, pool_note = (paths[:cut], labels[:cut]), f"{ordered} before the test part"
        test_note = f"{ordered}, last {num_test} ({test_fraction:.0%}; there is no test/ folder)"

    files, descriptions = _pool_splits(pool, pool_note)
    files["test"], descriptions["test"] = test_files, test_note
    return FolderTask(
        name=os.path.basename(root) or "folder",
        num_classes=len(class_names),
        group=_declared_group(root),
        suite="folder",
        splits=descriptions,
        root=root,
        class_names=class_names,
        files=files,
        seed=int(seed),
        test_fraction=float(test_fraction),
        skip_bad_images=bool(skip_bad_images),
        content_sha256=content_sha256,
        skipped_images=skipped,
    )
