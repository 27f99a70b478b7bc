"""A Keras BiT model as a TF Hub reusable SavedModel (image feature vector or classifier).

`keras.Model.export()` writes only a `serve` endpoint, which `hub.KerasLayer` refuses, so the module is a
plain trackable object with its own `__call__(images, training=False)` traced for both `training`
values, plus the `variables`, `trainable_variables` and `regularization_losses` attributes of the
reusable SavedModel format, and a `serving_default` signature.

Tracing is what exporting costs, so the model's forward pass is traced once per save: every entry
point (`__call__` for both `training` values, `serving_default`) calls one shared inner tf.function
(for a BiT model `training` changes nothing: no batch norm, no dropout; another model gets a second
inner trace for `training=True`). The entry points are traced only inside `tf.saved_model.save`
(`HubModule._trackable_children`): TensorFlow keys its trace cache on the save context, so traces
made before the save would be made again there.

Metadata travels inside the module: `save_module` attaches the metadata JSON as a SavedModel asset
(`assets/bit_experts_metadata.json`) and a `get_metadata()` tf.function that reads it, so
`hub.load(path).get_metadata()` returns the JSON string (a scalar tf.string) wherever the module was
copied. A copy also lies beside `saved_model.pb` (`METADATA_FILE`, the sidecar). `read_metadata` reads
the sidecar, else the asset, without loading the module.

A SavedModel that embeds another of our modules (a fine-tuned classifier tracking the loaded
feature extractor) exports that module's metadata asset too, and TensorFlow renames colliding asset
files (`bit_experts_metadata.json_1`), so the module's own asset is not found by its name: it is the
one the root object's `metadata_asset` attribute refers to in `saved_model.pb`'s object graph
(`metadata_asset_path`).
"""

import functools
import os
import shutil

import tensorflow as tf

from bit_experts import atomic_files

# The metadata files, read and written without TensorFlow (also this module's names).
from hub_export.metadata import (  # noqa: F401
    METADATA_ASSET,
    METADATA_ATTRIBUTE,
    METADATA_FILE,
    metadata_asset_path,
    metadata_bytes,
    read_metadata,
    write_metadata,
)

IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
OUTPUTS = ("features", "logits")


def _tf_variable(variable):
    # Keras 3 (TensorFlow backend) keeps the real tf.Variable behind `.value`.
    return getattr(variable, "value", variable)


# tf.Module's `variables` is a read-only property; the Hub format needs plain attributes.
_Trackable = tf.__internal__.tracking.AutoTrackable


class _Untracked:
    """Holds the Keras model out of sight of SavedModel tracking: only the module's own functions
    and variable lists are saved, not the model's Keras endpoints (whose default `serving_default`
    cannot be traced for a model holding several experts). `functions` holds inner tf.functions
    that the saved entry points call: saved as their dependencies, not as attributes."""

    __slots__ = ("model", "functions")

    def __init__(self, model):
        self.model = model
        self.functions = {}


def training_invariant(model):
    """True when `model(images, training=...)` computes the same for both `training` values, so one
    trace serves both: a `BiTResNetV2` that keeps its own `call` (GroupNorm and weight
    standardisation, no batch norm or dropout; Kolesnikov et al., 2020)."""
    from bit_experts.resnet_v2 import BiTResNetV2

    return isinstance(model, BiTResNetV2) and type(model).call is BiTResNetV2.call


class HubModule(_Trackable):
    """Wraps `model` (a `BiTResNetV2`) so that it saves as a TF Hub reusable SavedModel.

    Args:
      model: the Keras model.
      output: "features" (pre-logits, `[N, feature_dim]`) or "logits" (the model's head).
      expert_id: for a model with several adapter experts, the expert this module computes.
    """

    def __init__(self, model, output="features", expert_id=None):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output == "logits" and model.head is None:
            raise ValueError("output='logits' needs a model with a head (num_classes > 0)")
        self._held = _Untracked(model)
        self._output = output
        self._expert_id = expert_id
        self.variables = [_tf_variable(v) for v in model.weights]
        self.trainable_variables = [_tf_variable(v) for v in model.trainable_weights]
        self.regularization_losses = []  # BiT regularises through the optimiser's weight decay.
        # Features never depend on `training`; logits only for a model that is not BiT's.
        self._one_trace = output == "features" or training_invariant(model)
        # The forward pass branches on Python values only, so AutoGraph would convert every layer's
        # code for nothing: the graph is the same without it, and tracing takes about a fifth less.
        for training in (False,) if self._one_trace else (False, True):
            self._held.functions[training] = tf.function(
                functools.partial(self._forward, training=training),
                input_signature=[IMAGE_SPEC],
                autograph=False,
            )
        self.__call__ = tf.function(self._call, autograph=False)
        self.serving_default = tf.function(
            self._serve, input_signature=[IMAGE_SPEC], autograph=False
        )

    @property
    def _model(self):
        return self._held.model

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # Inside `tf.saved_model.save` (the only caller with save_type "savedmodel"), trace
        # `__call__` for both `training` values, so that they are listed for saving; traced here, in
        # the save context, they are not traced again (see the module doc).
        if save_type == "savedmodel":
            for training in (False, True):
                self.__call__.get_concrete_function(IMAGE_SPEC, training)
        return super()._trackable_children(save_type, **kwargs)

    def _forward(self, images, training=False):
        expert_ids = None if self._expert_id is None else tf.constant(self._expert_id, tf.int32)
        if self._output == "features":
            return self._model.features(images, expert_ids=expert_ids)
        return self._model(images, expert_ids=expert_ids, training=training)

    def _call(self, images, training=False):
        return self._held.functions[False if self._one_trace else bool(training)](images)

    def _serve(self, images):
        output = "feature_vector" if self._output == "features" else "logits"
        return {output: self._held.functions[False](images)}


def _replace_directory(tmp_dir, output_dir, overwrite):
    if os.path.exists(output_dir):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir!r} already exists (pass --overwrite, or overwrite=True in Python, to replace it)"
            )
        old = atomic_files.make_temp_dir(os.path.dirname(output_dir), prefix=".old-")
        os.replace(output_dir, os.path.join(old, "module"))
        os.replace(tmp_dir, output_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, output_dir)


def attach_metadata(module, asset_path):
    """Gives `module` a `get_metadata()` tf.function (no arguments, returns the scalar tf.string
    JSON) reading the file `asset_path`, saved as a SavedModel asset (copied to `assets/`)."""
    setattr(module, METADATA_ATTRIBUTE, tf.saved_model.Asset(asset_path))
    module.get_metadata = tf.function(
        lambda: tf.io.read_file(module.metadata_asset), input_signature=[]
    )


def save_module(module, output_dir, metadata=None, overwrite=False):
    """Saves `module` to `output_dir` atomically: a killed save never leaves a partial module there.

    `metadata` (a JSON-serialisable dict) is saved inside the SavedModel as the asset that its
    `get_metadata()` returns (`attach_metadata`), and beside `saved_model.pb` as `METADATA_FILE`.
    Raises ValueError for a URL `output_dir` (save locally, then publish it: docs/workdir.md).
    """
    atomic_files.require_local(
        output_dir, "output_dir", "save the module locally, then publish it (hub_export.publish)"
    )
    output_dir = atomic_files.abspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(
            f"{output_dir!r} already exists (pass --overwrite, or overwrite=True in Python, to replace it)"
        )
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = atomic_files.make_temp_dir(parent, prefix=f".{os.path.basename(output_dir)}.tmp-")
    try:
        saved = os.path.join(tmp_dir, "module")
        if metadata is not None:
            data = metadata_bytes(metadata)  # TypeError before anything is traced or saved.
            source = os.path.join(tmp_dir, METADATA_FILE)
            with open(source, "wb") as f:
                f.write(data)
            attach_metadata(module, source)
        tf.saved_model.save(module, saved, signatures={"serving_default": module.serving_default})
        if metadata is not None:
            with open(os.path.join(saved, METADATA_FILE), "wb") as f:
                f.write(data)
        _replace_directory(saved, output_dir, overwrite)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return output_dir
