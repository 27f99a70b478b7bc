"""Checks a saved module before it is listed in a collection.

`validate_module` checks the folder holds no symbolic link (`handles.module_folder`), loads the
module with `tf.saved_model.load` (no `tensorflow_hub`), runs a batch at two resolutions through every entry point of its role,
checks the output shape and finiteness, and takes two SGD steps through it to check that
fine-tuning reaches (and changes) its weights; a module with `get_metadata()` must return the
metadata of its sidecar file. Any failure is a ModuleError naming the module.
"""

import json
import os

import numpy as np

from bit_experts import lazy_api
from hub_export.handles import ModuleError, check_signature, module_folder

tf = lazy_api.module("tensorflow")  # imported on first use: commands check flags first

BATCH = 2
# The image side of a module whose metadata recommends none (BiT's; as vtab_eval.embed).
DEFAULT_RESOLUTION = 224
_STEPS, _LEARNING_RATE = 2, 0.1


def default_resolutions(resolution):
    """The two image sizes a module is checked at: its recommended one and about half of it."""
    resolution = int(resolution)
    return (resolution, max(16, resolution // 2))


def _entry_points(module, role):
    """[(label, fn(images, training))] to check; the packed module has one per expert."""
    if role == "packed":
        return [
            (f"experts[{name!r}]", lambda x, training, f=fn: f(x, training=training))
            for name, fn in module.experts.items()
        ]
    return [("__call__", lambda x, training: module(x, training=training))]


def validate_module(module_dir, role, output_dim=None, resolutions=(32, 48), name=None):
    """Loads and exercises the module in `module_dir`; returns a small report dict.

    Args:
      module_dir: the module's local directory.
      role: "feature_vector", "classifier", "epn" or "packed".
      output_dim: the expected size of the last output axis (None: any, but the same everywhere).
      resolutions: two (or more) image sizes to run.
      name: how errors name the module (defaults to the directory).
    """
    label = name or module_dir
    module_folder(module_dir, label)  # saved_model.pb and no symbolic link: nothing followed
    check_signature(module_dir, role, label)
    try:
        module = tf.saved_model.load(module_dir)
    except Exception as error:  # a corrupt module fails in many ways inside TF.
        raise ModuleError(
            f"module {label!r}: tf.saved_model.load failed: {type(error).__name__}: {error}"
        ) from None
    _check_metadata(module, module_dir, label)
    rng = np.random.default_rng(0)
    entry_points = _entry_points(module, role)
    if not entry_points:
        raise ModuleError(f"module {label!r}: a packed module without experts")
    dims = set()
    for size in resolutions:
        images = tf.constant(rng.uniform(0, 1, (BATCH, size, size, 3)).astype("float32"))
        for entry, fn in entry_points:
            try:
                out = fn(images, False).numpy()
            except Exception as error:
                raise ModuleError(
                    f"module {label!r}: {entry} failed on [{BATCH}, {size}, {size}, 3] images: "
                    f"{type(error).__name__}: {str(error)[:500]}"
                ) from None
            if out.ndim != 2 or out.shape[0] != BATCH:
                raise ModuleError(
                    f"module {label!r}: {entry} returned shape {out.shape} at {size} px, "
                    f"expected [{BATCH}, dim]"
                )
            if output_dim is not None and out.shape[1] != output_dim:
                raise ModuleError(
                    f"module {label!r}: {entry} returned {out.shape[1]} outputs, "
                    f"its metadata says {output_dim}"
                )
            if not np.all(np.isfinite(out)):
                raise ModuleError(f"module {label!r}: {entry} returned non-finite values")
            dims.add(out.shape[1])
    if len(dims) != 1:
        raise ModuleError(f"module {label!r}: output size varies with resolution: {sorted(dims)}")
    loss, changed, total = _fine_tune_check(module, entry_points[0][1], resolutions[0], label)
    return {
        "resolutions": [int(r) for r in resolutions],
        "output_dim": int(dims.pop()),
        "fine_tune_loss": float(loss),
        "fine_tune_changed_variables": f"{changed}/{total}",
    }


def _check_metadata(module, module_dir, label):
    """The metadata inside the SavedModel (`get_metadata()`) equals the sidecar file's."""
    from hub_export.metadata import METADATA_FILE

    if not hasattr(module, "get_metadata"):
        return  # third-party, or exported before metadata travelled with the module
    try:
        inside = json.loads(module.get_metadata().numpy().decode("utf-8"))
    except Exception as error:  # a missing asset or bad JSON fail in several ways
        raise ModuleError(
            f"module {label!r}: get_metadata() failed: {type(error).__name__}: {error}"
        ) from None
    sidecar = os.path.join(module_dir, METADATA_FILE)
    if os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8") as f:
            if json.load(f) != inside:
                raise ModuleError(f"module {label!r}: get_metadata() differs from {METADATA_FILE}")


def _fine_tune_check(module, fn, size, label):
    """Two SGD steps of a regression to random targets; most trainable variables must change."""
    variables = list(module.trainable_variables)
    if not variables:
        raise ModuleError(f"module {label!r}: no trainable_variables, so it cannot be fine-tuned")
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(0, 1, (BATCH, size, size, 3)).astype("float32"))
    before = [v.numpy().copy() for v in variables]
    target = None
    for _ in range(_STEPS):
        with tf.GradientTape() as tape:
            out = fn(images, True)
            if target is None:
                target = tf.constant(rng.normal(size=out.shape).astype("float32"))
            loss = tf.reduce_mean(tf.square(out - target))
        grads = tape.gradient(loss, variables)
        if not np.isfinite(loss.numpy()):
            raise ModuleError(f"module {label!r}: fine-tuning loss is not finite")
        for v, g in zip(variables, grads):
            if g is not None:
                v.assign_sub(_LEARNING_RATE * tf.convert_to_tensor(g))
    changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, variables))
    if changed * 2 <= len(variables):
        raise ModuleError(
            f"module {label!r}: fine-tuning through it changed only {changed} of "
            f"{len(variables)} trainable variables"
        )
    return loss.numpy(), changed, len(variables)
