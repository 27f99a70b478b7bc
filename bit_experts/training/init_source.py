"""Where the baseline B starts from (`init_from`): a BiT checkpoint, a module or another job's model.

The paper's ImageNet-21k experts grow from BiT-M (Puigcerver et al., ICLR 2021), the BiT ResNet
pre-trained on ImageNet-21k, about 14M images of 21k classes (Kolesnikov et al., ECCV 2020, "Big
Transfer (BiT)"); its public weights are the `BiT-M-<arch>.npz` files of google-research/big_transfer.
A source is one of:
- a BiT checkpoint `.npz` (the public BiT-S / BiT-M files), read strictly by `bit_experts.checkpoint`:
  any missing, unexpected or mis-shaped key is an error listing all of them;
- an exported module folder (`hub_export`: `saved_model.pb` + `bit_experts_metadata.json`), whose
  `variables` are the Keras model's weights in order;
- a finished model of a work directory, `WORKDIR/models/<name>/` (or its `model.keras`).

`load(source, model)` copies the backbone; B's label head is then the job's own (zero kernel, bias at
the label prior), trained by the baseline stage. `load(source, model, head=True)` copies the
source's head too (config `init_head`, implied by `baseline.steps=0`, where B is the source as it
is): the source must have a head with one output per upstream label, in the upstream label order
(a checkpoint carries no label names, so the order is the caller's to get right). A module's head
cannot be taken. The source must have the architecture of `model.preset`.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from bit_experts import atomic_files, checkpoint

KINDS = ("bit_npz", "module", "keras_model")
MODULE_METADATA = "bit_experts_metadata.json"  # hub_export.module.METADATA_FILE


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(spec: str) -> dict:
    """What `spec` names, to record as `init_from` in every info.json.

    Returns `{"kind": one of KINDS, "path": absolute path, "sha256": of the weights file (the .npz,
    model.keras, or variables.data of a module)}`. Raises FileNotFoundError or ValueError (one line
    naming `init_from` and what was expected).
    """
    atomic_files.require_local(spec, "init_from", "copy the weights to a local disk first")
    path = os.path.abspath(os.path.expanduser(atomic_files.normalize(spec)))
    if not os.path.exists(path):
        raise FileNotFoundError(f"init_from {spec!r} does not exist")
    if os.path.isfile(path) and path.endswith(".npz"):
        return {"kind": "bit_npz", "path": path, "sha256": _sha256(path)}
    if os.path.isfile(path) and path.endswith(".keras"):
        return {"kind": "keras_model", "path": path, "sha256": _sha256(path)}
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model.keras")):
            keras_file = os.path.join(path, "model.keras")
            return {"kind": "keras_model", "path": keras_file, "sha256": _sha256(keras_file)}
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            data = os.path.join(path, "variables", "variables.data-00000-of-00001")
            digest = (
                _sha256(data)
                if os.path.isfile(data)
                else _sha256(os.path.join(path, "saved_model.pb"))
            )
            return {"kind": "module", "path": path, "sha256": digest}
    raise ValueError(
        f"init_from {spec!r} is not a BiT .npz checkpoint, an exported module folder "
        "(saved_model.pb) or a models/<name>/ folder (model.keras)"
    )


def _module_preset(path: str) -> str | None:
    meta = os.path.join(path, MODULE_METADATA)
    if not os.path.isfile(meta):
        return None
    with open(meta, encoding="utf-8") as f:
        return json.load(f).get("preset")


def _no_head(path, why):
    return ValueError(
        f"init_from {path!r} {why}; init_head=true and baseline.steps=0 take B's label head from "
        "it: give a BiT .npz with a head or a WORKDIR/models/<name>/ folder"
    )


def _check_head(path, outputs, model):
    if outputs == 0:
        raise _no_head(path, "has no label head")
    if outputs != model.num_classes:
        raise _no_head(
            path, f"has a head of {outputs} outputs, the upstream data {model.num_classes} labels"
        )


def load(source: dict, model, head: bool = False) -> None:
    """Copies the backbone of `source` (from `describe`) into `model` (a BiTResNetV2), strictly,
    and with `head` its label head too (which must have `model.num_classes` outputs).

    Adapters are left alone, and the head too without `head`. Raises ValueError (CheckpointError
    for a .npz) naming what does not match.
    """
    kind, path = source["kind"], source["path"]
    targets = [w for layer in model.backbone_layers() for w in layer.weights]
    if kind == "bit_npz":
        weights = checkpoint.read_npz(path)
        if head:
            kernel = weights.get(f"{checkpoint.PREFIX}head/conv2d/kernel")
            _check_head(path, 0 if kernel is None else int(np.shape(kernel)[-1]), model)
        try:
            checkpoint.assign_from_checkpoint(model, weights, ignore_head=not head)
        except checkpoint.CheckpointError as e:
            raise checkpoint.CheckpointError(
                f"init_from {path!r} does not fit model preset {model.name!r}: {e}"
            ) from None
        return
    if kind == "keras_model":
        import keras

        src = keras.models.load_model(path)
        values = [np.asarray(w) for layer in src.backbone_layers() for w in layer.get_weights()]
        if head:
            _check_head(path, 0 if src.head is None else src.num_classes, model)
            targets += model.head.weights
            values += [np.asarray(w) for w in src.head.get_weights()]
    elif kind == "module":
        import tensorflow as tf

        if head:
            raise _no_head(path, "is an exported module, whose head cannot be taken")
        preset = _module_preset(path)
        if preset is not None and preset != model.name:
            raise ValueError(
                f"init_from {path!r} is a {preset!r} module, the model is {model.name!r}"
            )
        loaded = tf.saved_model.load(path)
        # A module's `variables` are its Keras model's weights in order: the backbone first.
        values = [np.asarray(v.numpy()) for v in loaded.variables][: len(targets)]
    else:
        raise ValueError(f"unknown init_from kind {kind!r}; expected one of {KINDS}")
    shapes = [tuple(np.shape(v)) for v in values]
    expected = [tuple(w.shape) for w in targets]
    if shapes != expected:
        raise ValueError(
            f"init_from {path!r} does not fit model preset {model.name!r}: weight shapes "
            f"differ ({len(shapes)} vs {len(expected)} arrays)"
        )
    for w, v in zip(targets, values):
        w.assign(v.astype(np.float32))
