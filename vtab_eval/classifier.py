"""The classifier fine-tuning trains: a TF Hub module with a new zero-initialised linear head.

`build_classifier` loads and checks the module (`vtab_eval.module_contract`) and adds the head,
`predict_logits` evaluates it and `save_classifier` exports it as a TF Hub reusable SavedModel.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from hub_export import collection
from hub_export import module as hub_module
from vtab_eval import module_contract


@dataclasses.dataclass
class Classifier:
    """A hub module with a linear head: `logits = module(images) @ kernel + bias`."""

    module: object
    kernel: tf.Variable
    bias: tf.Variable
    handle: str

    @property
    def trainable_variables(self):
        """Everything fine-tuning updates: the module's trainable variables and the head."""
        return list(self.module.trainable_variables) + [self.kernel, self.bias]

    def logits(self, images, training=False):
        """Class scores `[N, num_classes]` for float images in [0, 1]."""
        features = self.module(images, training=training)
        return tf.matmul(features, self.kernel) + self.bias


# Modules kept for reuse within a process: (handle, id(strategy)) -> (module, its initial values,
# the strategy, kept so that its id is not reused). The first gradient through a restored function
# builds its backward graph (seconds); a kept module has it. Its weights are reset before reuse.
_LOADED = {}
_MAX_LOADED = 32


def _load(handle, strategy):
    """The module `handle` under `strategy`: the kept one reset to its published weights, or loaded
    and checked (`vtab_eval.module_contract`; ValueError, one line, if it fails)."""
    key = (handle, id(strategy))
    if key in _LOADED:
        module, initial, _ = _LOADED[key]
        for variable, value in zip(module.variables, initial):
            variable.assign(value)
        return module
    with strategy.scope():
        try:
            module = collection.load_module(handle)
        except Exception as err:  # noqa: BLE001 - any load failure is reported by handle
            raise ValueError(f"module {handle!r} failed to load: {_first_line(err)}") from err
    ok, reason = module_contract.finetunable(handle)
    if not ok:
        raise ValueError(
            f"module {handle!r} cannot be fine-tuned: {reason}; fine-tuning needs a reusable "
            "SavedModel (TF Hub TF2 format) with __call__(images, training=...), variables and "
            "trainable_variables"
        )
    if len(_LOADED) >= _MAX_LOADED:
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = (module, [v.numpy() for v in module.variables], strategy)
    return module


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def build_classifier(handle, num_classes, strategy=None, probe_resolution=32):
    """Loads `handle` (a local path or TF Hub handle of an image feature-vector module) under
    `strategy` (default: the current one) and adds a zero-initialised `num_classes`-way head.

    Raises:
      ValueError: one line naming `handle`: the module fails to load, is not fine-tunable
        (`vtab_eval.module_contract`), fails on a blank float32 `[1, probe_resolution,
        probe_resolution, 3]` image, or does not return `[N, d]` features.
    """
    strategy = strategy or tf.distribute.get_strategy()
    module = _load(handle, strategy)
    # Called outside the scope: under MirroredStrategy a restored function run in the scope's
    # cross-replica context fails on its replica-context assertion.
    try:
        probe = module(tf.zeros([1, probe_resolution, probe_resolution, 3]), training=False)
    except (TypeError, ValueError, tf.errors.OpError) as err:
        raise ValueError(
            f"module {handle!r} fails on a float32 [1, {probe_resolution}, {probe_resolution}, 3] "
            f"image with training=False: {_first_line(err)}"
        ) from err
    if probe.shape.rank != 2:
        raise ValueError(
            f"module {handle!r} returned shape {probe.shape} for one image; expected [1, d]"
        )
    dim = int(probe.shape[-1])
    with strategy.scope():
        kernel = tf.Variable(tf.zeros([dim, num_classes]), name="head/kernel")
        bias = tf.Variable(tf.zeros([num_classes]), name="head/bias")
    return Classifier(module=module, kernel=kernel, bias=bias, handle=handle)


def predict_logits(classifier, dataset, resolution, batch_size=64):
    """(logits float32 [N, num_classes], true labels int64 [N]) for un-batched examples.

    Images are resized (bilinear) to `resolution` x `resolution`, as in training.

    Raises:
      ValueError: `dataset` is empty.
    """

    @tf.function
    def step(images):
        return classifier.logits(images, training=False)

    def resize(example):
        image = tf.image.resize(example["image"], [resolution, resolution])
        return image, example["label"]

    logits, labels = [], []
    for images, batch_labels in dataset.map(resize).batch(batch_size):
        logits.append(step(images).numpy())
        labels.append(batch_labels.numpy())
    if not logits:
        raise ValueError(f"evaluation split for {classifier.handle!r} is empty")
    return np.concatenate(logits).astype(np.float32), np.concatenate(labels).astype(np.int64)


class ExportedClassifier(tf.__internal__.tracking.AutoTrackable):
    """A fine-tuned classifier as a TF Hub reusable SavedModel (what `save_model_dir` holds).

    `__call__(images, training=False)` and the `serving_default` signature take float32 images
    `[B, H, W, 3]`, RGB in [0, 1] (the fine-tuned module's input range), of any size, resize them
    (bilinear) to `resolution` x `resolution` as evaluation did, and return logits
    `[B, num_classes]` (`serving_default`: {"logits": ...}). `variables`, `trainable_variables`
    and `regularization_losses` make it fine-tunable again (`hub.KerasLayer(..., trainable=True)`).
    """

    def __init__(self, classifier, resolution):
        super().__init__()
        self.module = classifier.module
        self.kernel = classifier.kernel
        self.bias = classifier.bias
        self.resolution = int(resolution)
        self.variables = list(classifier.module.variables) + [classifier.kernel, classifier.bias]
        self.trainable_variables = classifier.trainable_variables
        self.regularization_losses = []
        self.__call__ = tf.function(self._call)
        for training in (False, True):
            self.__call__.get_concrete_function(hub_module.IMAGE_SPEC, training)
        self.serving_default = tf.function(self._serve, input_signature=[hub_module.IMAGE_SPEC])

    def _call(self, images, training=False):
        images = tf.image.resize(images, [self.resolution, self.resolution])
        return tf.matmul(self.module(images, training=training), self.kernel) + self.bias

    def _serve(self, images):
        return {"logits": self._call(images)}


def save_classifier(classifier, save_model_dir, resolution, metadata):
    """Writes `classifier` to `save_model_dir` as an `ExportedClassifier`, atomically.

    The SavedModel is written to a temporary folder beside `save_model_dir` and renamed into
    place (an existing one is replaced); `metadata` goes to `hub_export.module.METADATA_FILE`.
    Returns the absolute path.
    """
    exported = ExportedClassifier(classifier, resolution)
    return hub_module.save_module(exported, save_model_dir, metadata=metadata, overwrite=True)
