"""The task contract: a named classification problem with fixed splits and one image format.

Every task, from TFDS or an image folder, yields {"image": float32 [H, W, 3] in [0, 1], "label":
int64}, so selection and fine-tuning never need to know where the data came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
from collections.abc import Callable, Iterable, Mapping

from bit_experts import lazy_api

tf = lazy_api.module("tensorflow")  # imported on first use: commands check flags first


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Whether random flips and crops keep a task's labels true (`sweeps.for_task` applies it).

    BiT's recipe (Kolesnikov et al., 2020) flips and crops "for all tasks except those where such
    actions destroy label semantics": no crops for counting, no flips for orientations. `reason`
    says in one line why something is forbidden (required then).
    """

    flip: bool = True
    crop: bool = True
    reason: str = ""

    def __post_init__(self):
        for key in ("flip", "crop"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"Augmentation.{key} must be a bool, got {getattr(self, key)!r}")
        if not (self.flip and self.crop) and not self.reason:
            raise ValueError("an Augmentation that forbids flips or crops must give its reason")

    def to_json(self) -> dict:
        """{"flip", "crop", "reason"}: the policy as `list_tasks --format=json` prints it."""
        return dataclasses.asdict(self)


GROUPS = ("natural", "specialized", "structured")
# The VTAB-1k protocol: tune on train800 -> val200, then train on train800val200 -> test.
VTAB_SPLITS = ("train800", "val200", "train800val200", "test")
# Full-data splits (VTAB defines them too); Table-3 style fine-tuning trains on "trainval".
FULL_SPLITS = ("train", "val", "trainval")
SPLIT_NAMES = VTAB_SPLITS + FULL_SPLITS
# Bumped whenever what `Task.fingerprint` covers changes, so old fingerprints never match new ones.
FINGERPRINT_VERSION = 3
# Bumped by hand whenever `to_model_input` or the image decoding of folder tasks
# (`folder._read_image`) changes the pixels they produce; part of every task's fingerprint, and
# recorded with a hash of their source by tests/vtab_eval/test_task_registry.py.
IMAGE_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Task:
    """A transfer task: what it is called, how many classes, which splits, how it is scored.

    Attributes:
      name: registry name, e.g. "cifar100" or "folder:/data/flowers".
      version: "MAJOR.MINOR.PATCH" of the definition, bumped by hand whenever it changes
        (docs/tasks.md, "Task identity").
      num_classes: labels are in [0, num_classes).
      group: one of GROUPS, or None (folder tasks without one).
      splits: every name in SPLIT_NAMES -> a TFDS split string, or a description (folders).
      metric: "accuracy" or "mean_per_class_accuracy". suite: "vtab1k", "table3" or "folder".
      tfds_name: TFDS "name[/config]:version" passed to tfds.load, or None.
      augmentation: which random flips/crops keep the labels true.
    """

    name: str
    version: str
    num_classes: int
    group: str | None
    splits: Mapping[str, str]
    metric: str = "accuracy"
    suite: str
    tfds_name: str | None = None
    augmentation: Augmentation = Augmentation()

    def __post_init__(self):
        if not re.fullmatch(r"\d+\.\d+\.\d+", self.version):
            raise ValueError(
                f"Task {self.name!r}: version must be 'MAJOR.MINOR.PATCH', got {self.version!r}"
            )
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
        """One split (of SPLIT_NAMES) as {"image": float32 [H, W, 3] in [0, 1], "label": int64}.

        `image_size`: resize (bilinear) to image_size x image_size. `data_dir` (None: TFDS's
        default) and `shuffle_files` (file order only) are TFDS's; folder tasks ignore them.
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
        """{"image": uint8 [H, W, 1 or 3], "label": integer} of a split (subclasses implement it)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Hex SHA-256 of what determines the task's examples (docs/tasks.md, "Task identity"):
        the declared versions, the data-valued definition and, for folders, their content."""
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
            "version": self.version,
            "image_format": IMAGE_FORMAT_VERSION,
            "num_classes": self.num_classes,
            "metric": self.metric,
            "splits": dict(self.splits),
            "augmentation": self.augmentation.to_json(),
        }

    def split_size(self, split: str) -> int | None:
        """Number of examples of `split` if known without reading data (folder tasks), else None."""
        self.split_string(split)
        return None

    def validate_splits(self, splits: Iterable[str], min_images: int = 1) -> None:
        """Checks, before any training, that each of `splits` exists (folder tasks: and holds at
        least `min_images` images); ValueError, one line, naming the task and the split."""
        for split in splits:
            self.split_string(split)

    def to_json(self) -> dict:
        """The public description printed by `python -m vtab_eval.list_tasks` (see docs/tasks.md)."""
        return {
            "name": self.name,
            "version": self.version,
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


def _plain_label(features: dict) -> dict:
    return {"image": features["image"], "label": features["label"]}


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class TfdsTask(Task):
    """A task backed by a TFDS dataset.

    Attributes:
      decode: which TFDS features to decode (a tfds.decode.PartialDecoding spec).
      preprocess: decoded features -> {"image": uint8, "label": integer}, where structured tasks
        derive their labels. Editing it means bumping `version` (test_task_registry.py checks).
    """

    tfds_name: str
    decode: Mapping = dataclasses.field(default_factory=lambda: {"image": True, "label": True})
    preprocess: Callable[[dict], dict] = _plain_label

    def _load_examples(self, split, data_dir, shuffle_files):
        import tensorflow_datasets as tfds

        try:
            ds = tfds.load(
                self.tfds_name,
                split=self.splits[split],
                data_dir=data_dir,
                download=False,
                shuffle_files=shuffle_files,
                decoders=tfds.decode.PartialDecoding(dict(self.decode)),
            )
        except AssertionError as e:
            # TFDS signals "not prepared" and "version not available" with AssertionError.
            raise FileNotFoundError(self._not_prepared_message(data_dir, e)) from None
        return ds.map(self.preprocess, num_parallel_calls=tf.data.AUTOTUNE)

    def _identity(self) -> dict:
        """The common identity plus the name, the TFDS name as registered (not the data directory)
        and the decoded features; the label code counts through `version`."""
        return {
            **super()._identity(),
            "name": self.name,
            "tfds_name": self.tfds_name,
            "decode": dict(self.decode),
        }

    def _not_prepared_message(self, data_dir, error) -> str:
        name, _, version = self.tfds_name.partition(":")
        # `tfds build` takes name/config[:version]; a wildcard version means "the default one".
        build_name = self.tfds_name if "*" not in version else name
        where = data_dir or "the TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR)"
        dir_flag = f" --data_dir={data_dir}" if data_dir else ""
        return (
            f"Task {self.name!r} needs TFDS dataset {self.tfds_name!r}, which is not prepared in "
            f"data_dir={where}. Nothing is downloaded at run time: prepare it first with "
            f"`tfds build {build_name}{dir_flag}` (datasets with manual downloads, such as "
            f"resisc45 and diabetic_retinopathy_detection, also need --manual_dir). "
            f"TFDS said: {error}"
        )


def registered(group, suite, name, tfds_name, num_classes, splits, *, version, **options):
    """A registered TFDS task; `options`: metric, augmentation, decode, preprocess."""
    return TfdsTask(
        name=name,
        version=version,
        tfds_name=tfds_name,
        num_classes=num_classes,
        group=group,
        suite=suite,
        splits=splits,
        **options,
    )
