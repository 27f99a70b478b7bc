"""Tasks read from TensorFlow Datasets, never downloading: data must be prepared beforehand."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import tensorflow as tf
import tensorflow_datasets as tfds

from vtab_eval.tasks import base


def _plain_label(features: dict) -> dict:
    return {"image": features["image"], "label": features["label"]}


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class TfdsTask(base.Task):
    """A task backed by a TFDS dataset.

    Attributes:
      decode: which TFDS features to decode (a tfds.decode.PartialDecoding spec); skipping
        unused ones (segmentation masks, question text) keeps reading fast.
      preprocess: maps the decoded features to {"image": uint8, "label": integer}; this is
        where the structured tasks derive their labels. Editing it means bumping `version`
        (tests/vtab_eval/test_task_registry.py catches a forgotten bump).
    """

    tfds_name: str
    decode: Mapping = dataclasses.field(default_factory=lambda: {"image": True, "label": True})
    preprocess: Callable[[dict], dict] = _plain_label

    def _load_examples(self, split, data_dir, shuffle_files):
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
        """The common identity plus the task's name, the TFDS builder "name[/config]:version" as
        registered (a wildcard version stays a wildcard: the data directory is not part of a
        task's identity) and the decoded features. The label code counts through `version`."""
        return {
            **super()._identity(),
            "name": self.name,
            "tfds_name": self.tfds_name,
            "decode": _plain(self.decode),
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


def _plain(value):
    """A decode spec (nested mappings of bools) as plain JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
