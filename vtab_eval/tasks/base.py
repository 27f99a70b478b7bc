"""The task contract: a named classification problem with fixed splits and one image format.

Every task, whatever its source (a TFDS dataset or an image folder), yields examples
``{"image": float32 [H, W, 3] in [0, 1], "label": int64}`` so that selection and
fine-tuning never need to know where the data came from.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import types
from collections.abc import Iterable, Mapping

import tensorflow as tf

from vtab_eval.tasks.augmentation import FLIP_AND_CROP, Augmentation

GROUPS = ("natural", "specialized", "structured")
METRICS = ("accuracy", "mean_per_class_accuracy")
# The VTAB-1k protocol: tune on train800 -> val200, then train on train800val200 -> test.
VTAB_SPLITS = ("train800", "val200", "train800val200", "test")
# Full-data splits (VTAB defines them too); Table-3 style fine-tuning trains on "trainval".
FULL_SPLITS = ("train", "val", "trainval")
SPLIT_NAMES = VTAB_SPLITS + FULL_SPLITS
# Bumped whenever what `Task.fingerprint` covers changes, so old fingerprints never match new ones.
FINGERPRINT_VERSION = 2


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Task:
    """A transfer task: what it is called, how many classes, which splits, how it is scored.

    Attributes:
      name: registry name, e.g. "cifar100" or "folder:/data/flowers".
      num_classes: labels are in [0, num_classes).
      group: VTAB group ("natural", "specialized", "structured"), or None for folder tasks.
      splits: maps every name in SPLIT_NAMES to a TFDS split string (TFDS tasks) or to a
        description of the images it holds (folder tasks).
      metric: "accuracy" or "mean_per_class_accuracy".
      suite: which list the task belongs to ("vtab1k", "table3" or "folder").
      tfds_name: TFDS "name[/config]:version" passed to tfds.load, or None.
      augmentation: which random flips/crops keep the labels true (vtab_eval/tasks/augmentation.py).
    """

    name: str
    num_classes: int
    group: str | None
    splits: Mapping[str, str]
    metric: str = "accuracy"
    suite: str
    tfds_name: str | None = None
    augmentation: Augmentation = FLIP_AND_CROP

    def __post_init__(self):
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(
                f"Task {self.name!r}: group must be one of {GROUPS}, got {self.group!r}"
            )
        if self.metric not in METRICS:
            raise ValueError(
                f"Task {self.name!r}: metric must be one of {METRICS}, got {self.metric!r}"
            )
        if self.num_classes < 2:
            raise ValueError(
                f"Task {self.name!r}: needs at least 2 classes, got {self.num_classes}"
            )
        missing = [s for s in SPLIT_NAMES if s not in self.splits]
        if missing:
            raise ValueError(f"Task {self.name!r}: splits lack {missing}")
        # Read-only view so a shared registry entry cannot be altered by a caller.
        object.__setattr__(self, "splits", types.MappingProxyType(dict(self.splits)))

    def split_string(self, split: str) -> str:
        """Returns the split definition for one of SPLIT_NAMES; ValueError otherwise."""
        if split not in self.splits:
            raise ValueError(
                f"Task {self.name!r} has no split {split!r}; expected one of {list(self.splits)}"
            )
        return self.splits[split]

    def load(
        self,
        split: str,
        data_dir: str | None = None,
        image_size: int | None = None,
        shuffle_files: bool = False,
    ) -> tf.data.Dataset:
        """Loads one split as a dataset of {"image": float32 [H, W, 3] in [0, 1], "label": int64}.

        Args:
          split: one of SPLIT_NAMES, e.g. "train800" or "test".
          data_dir: TFDS data directory (None: the TFDS default); ignored by folder tasks.
          image_size: if given, every image is resized (bilinear) to image_size x image_size.
          shuffle_files: passed to TFDS (file order only); ignored by folder tasks.
        """
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
        self.split_string(split)  # Validates the name before any I/O.
        raw = self._load_examples(split, data_dir, shuffle_files)

        def convert(example):
            return to_model_input(example["image"], example["label"], image_size)

        return raw.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def _load_examples(
        self, split: str, data_dir: str | None, shuffle_files: bool
    ) -> tf.data.Dataset:
        """Yields {"image": uint8 [H, W, 1 or 3], "label": integer} for a split in SPLIT_NAMES.

        Subclasses implement it.
        """
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Hex SHA-256 of everything that determines the task's examples (docs/tasks.md).

        Stable across processes and machines; computed once per instance (no I/O: folder tasks
        record their files' sizes and modification times when they are built). Caches, results
        paths and resume checks key a task on this, never on its name or path.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            identity = {"fingerprint_version": FINGERPRINT_VERSION, **self._identity()}
            text = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
            cached = hashlib.sha256(text.encode("utf-8")).hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def _identity(self) -> dict:
        """The JSON-serialisable content `fingerprint` hashes; subclasses extend it."""
        return {
            "type": type(self).__name__,
            "num_classes": self.num_classes,
            "metric": self.metric,
            "splits": dict(self.splits),
            "image_format": callable_identity(to_model_input),
        }

    def split_size(self, split: str) -> int | None:
        """Number of examples of `split` if known without reading data (folder tasks), else None."""
        self.split_string(split)
        return None

    def validate_splits(self, splits: Iterable[str], min_images: int = 1) -> None:
        """Checks, before any training, that every split in `splits` exists and holds enough images.

        Call it with the splits a protocol will use, e.g. `protocol.SPLIT_SCHEMES["vtab1k"]`.
        Sizes are only checked where they are known without reading data (folder tasks).

        Raises:
          ValueError: one line naming the task (the folder, for folder tasks), the split and its
            size, for an unknown split or one with fewer than `min_images` images.
        """
        if isinstance(splits, str):
            splits = (splits,)
        for split in splits:
            size = self.split_size(split)
            if size is not None and size < min_images:
                raise ValueError(self._too_small_message(split, size, min_images))

    def _too_small_message(self, split: str, size: int, min_images: int) -> str:
        return (
            f"Task {self.name!r} is too small for split {split!r}: it holds {size} images "
            f"({self.splits[split]}); at least {min_images} needed"
        )

    def to_json(self) -> dict:
        """The public description printed by `python -m vtab_eval.list_tasks` (see docs/tasks.md)."""
        return {
            "name": self.name,
            "tfds_name": self.tfds_name,
            "num_classes": self.num_classes,
            "group": self.group,
            "metric": self.metric,
            "suite": self.suite,
            "splits": dict(self.splits),
            "augmentation": self.augmentation.to_json(),
        }


def to_model_input(image: tf.Tensor, label: tf.Tensor, image_size: int | None = None) -> dict:
    """Turns a uint8 image (grey or RGB) and an integer label into the common example format."""
    image = tf.cast(image, tf.float32) / 255.0
    if image.shape[-1] == 1:
        # Grey datasets (dSprites, smallNORB) are tiled to 3 channels, as VTAB does.
        image = tf.tile(image, [1, 1, 3])
    if image_size is not None:
        image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    return {"image": image, "label": tf.cast(label, tf.int64)}


def callable_identity(fn) -> dict:
    """A JSON description of a label or decode function that changes whenever its code may.

    The qualified name, the arguments bound by `functools.partial`, and `code_sha256`: the SHA-256
    of the function's own source, followed for every global name it reads (in its body and in
    nested functions, sorted) by what that name holds: plain constants by value (so a bin
    threshold beside the function counts), functions and classes of this project (`vtab_eval`,
    `bit_experts`) by the same digest, recursively, and modules and third-party callables by
    their qualified name. Edits elsewhere in the same file do not count; the interpreter, the
    library versions and the data directory do not count either.

    Raises:
      ValueError: a bound argument that is not a number, string, bool, None, list or callable.
    """
    if isinstance(fn, functools.partial):
        return {
            "partial": callable_identity(fn.func),
            "args": [_value_identity(a) for a in fn.args],
            "keywords": {k: _value_identity(v) for k, v in sorted(fn.keywords.items())},
        }
    digest = hashlib.sha256()
    for part in _code_parts(fn, set()):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return {"function": _qualified_name(fn), "code_sha256": digest.hexdigest()}


_OWN_PACKAGES = ("vtab_eval", "bit_experts")
_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _is_own(obj) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in _OWN_PACKAGES


def _plain_repr(value):
    """repr of a constant built from plain values, or None when `value` is not one."""
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, (tuple, list, frozenset, set)):
        items = [_plain_repr(v) for v in value]
        if None in items:
            return None
        if isinstance(value, (set, frozenset)):
            items.sort()
        return f"{type(value).__name__}({', '.join(items)})"
    if isinstance(value, Mapping):
        items = [(_plain_repr(k), _plain_repr(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in items):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(items)) + "}"
    return None


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _code_parts(obj, seen: set[int]):
    """Yields the strings `callable_identity` hashes for `obj` (see there); `seen` stops cycles."""
    if id(obj) in seen:
        yield f"seen {_qualified_name(obj)}"
        return
    seen.add(id(obj))
    yield f"def {_qualified_name(obj)}"
    try:
        yield inspect.getsource(obj)
    except (OSError, TypeError):
        # Built-ins and interactively defined functions: the byte code, or the name, must do.
        code = getattr(obj, "__code__", None)
        yield code.co_code.hex() if code is not None else ""
    if isinstance(obj, type):
        return  # A class's source covers its methods; names they read are not followed.
    code = getattr(obj, "__code__", None)
    namespace = getattr(obj, "__globals__", {})
    for name in sorted(_global_names(code)) if code is not None else ():
        if name not in namespace:
            continue  # A builtin, or an attribute name (`tf.cast` puts "cast" in co_names).
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            yield f"{name} = module {value.__name__}"
        elif (plain := _plain_repr(value)) is not None:
            yield f"{name} = {plain}"
        elif isinstance(value, functools.partial):
            yield f"{name} = " + json.dumps(callable_identity(value), sort_keys=True)
        elif isinstance(value, (types.FunctionType, type)) and _is_own(value):
            yield f"{name} ="
            yield from _code_parts(value, seen)
        else:
            yield f"{name} = {_qualified_name(value)}"


def _value_identity(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_value_identity(v) for v in value]
    if callable(value):
        return callable_identity(value)
    raise ValueError(f"cannot fingerprint a bound argument of type {type(value).__name__}")
