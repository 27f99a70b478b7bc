"""Reading and writing BiT checkpoints (the public BiT-S / BiT-M `.npz` files).

Keras 3 forbids `/` in layer names, so the BiT key of every variable is spelled out here, explicitly, from
the model's structure. Loading is strict: any missing, unexpected or mis-shaped key is an error, and all
of them are listed in one message.
"""

import os
import re

import numpy as np

from bit_experts import atomic_files, lazy_api

# Keras: imported when a model is built, so a bad .npz is named before (import_bit_checkpoint).
resnet_v2 = lazy_api.module("bit_experts.resnet_v2")

PREFIX = "resnet/"
_UNIT_KEY = re.compile(r"^resnet/block(\d+)/unit(\d+)/")


class CheckpointError(ValueError):
    """A BiT checkpoint that does not match what the model expects."""


def _norm_keys(prefix, norm):
    return {f"{prefix}/gamma": norm.gamma, f"{prefix}/beta": norm.beta}


def variable_map(model):
    """Maps every BiT checkpoint key to the model variable it fills (adapters are not BiT's)."""
    mapping = {f"{PREFIX}root_block/standardized_conv2d/kernel": model.root_conv.kernel}
    for b, units in enumerate(model.blocks):
        for u, unit in enumerate(units):
            key = f"{PREFIX}block{b + 1}/unit{u + 1:02d}"
            for part, norm, conv in (
                ("a", unit.norm_a, unit.conv_a),
                ("b", unit.norm_b, unit.conv_b),
                ("c", unit.norm_c, unit.conv_c),
            ):
                mapping.update(_norm_keys(f"{key}/{part}/group_norm", norm))
                mapping[f"{key}/{part}/standardized_conv2d/kernel"] = conv.kernel
            if unit.projection is not None:
                mapping[f"{key}/a/proj/standardized_conv2d/kernel"] = unit.projection.kernel
    mapping.update(_norm_keys(f"{PREFIX}group_norm", model.final_norm))
    if model.head is not None:
        # BiT's head is a 1x1 conv on the pooled features; ours is the equivalent Dense layer.
        mapping[f"{PREFIX}head/conv2d/kernel"] = model.head.kernel
        mapping[f"{PREFIX}head/conv2d/bias"] = model.head.bias
    return mapping


def read_npz(path):
    """Loads a `.npz` checkpoint into a dict, with a clear error for a missing or unreadable file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BiT checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as error:  # zipfile / pickle / format errors all mean "not a readable npz".
        raise CheckpointError(
            f"BiT checkpoint {path!r} is not a readable .npz file ({type(error).__name__}: {error})"
        ) from error


def infer_architecture(weights):
    """Infers `block_units`, `width_factor` and `num_classes` from checkpoint keys and shapes."""
    root_key = f"{PREFIX}root_block/standardized_conv2d/kernel"
    if root_key not in weights:
        raise CheckpointError(
            f"not a BiT ResNet-v2 checkpoint: key {root_key!r} is missing "
            f"(found {len(weights)} keys, e.g. {sorted(weights)[:3]})"
        )
    root_filters = np.shape(weights[root_key])[-1]
    units = {}
    for key in weights:
        match = _UNIT_KEY.match(key)
        if match:
            block, unit = int(match.group(1)), int(match.group(2))
            units[block] = max(units.get(block, 0), unit)
    if sorted(units) != list(range(1, resnet_v2.NUM_BLOCKS + 1)):
        raise CheckpointError(
            f"expected blocks 1..{resnet_v2.NUM_BLOCKS} in the checkpoint, found {sorted(units)}"
        )
    head = weights.get(f"{PREFIX}head/conv2d/kernel")
    return {
        "block_units": tuple(units[b] for b in range(1, resnet_v2.NUM_BLOCKS + 1)),
        "width_factor": root_filters / 64 if root_filters % 64 else root_filters // 64,
        "num_classes": 0 if head is None else int(np.shape(head)[-1]),
    }


def _to_model_shape(key, value, variable_shape):
    if key.endswith("head/conv2d/kernel") and np.ndim(value) == 4:
        value = np.reshape(value, np.shape(value)[2:])  # [1, 1, C, K] -> [C, K]
    return value


def assign_from_checkpoint(model, weights, ignore_head=False):
    """Copies `weights` (BiT key -> array) into `model`, strictly.

    With `ignore_head`, head keys in the checkpoint are skipped (to put a new head on a pre-trained
    backbone). Raises `CheckpointError` listing every missing, unexpected and mis-shaped key.
    """

    def is_head(key):
        return key.startswith(f"{PREFIX}head/")

    mapping = variable_map(model)
    provided = set(weights)
    if ignore_head:
        mapping = {k: v for k, v in mapping.items() if not is_head(k)}
        provided = {k for k in provided if not is_head(k)}
    missing = sorted(set(mapping) - provided)
    unexpected = sorted(provided - set(mapping))
    mismatched = []
    for key in sorted(provided & set(mapping)):
        value = _to_model_shape(key, weights[key], mapping[key].shape)
        if tuple(np.shape(value)) != tuple(mapping[key].shape):
            mismatched.append(
                f"{key}: checkpoint {np.shape(weights[key])}, model {mapping[key].shape}"
            )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if mismatched:
        problems.append(f"mis-shaped keys ({len(mismatched)}): {mismatched}")
    if problems:
        raise CheckpointError("checkpoint does not match the model:\n  " + "\n  ".join(problems))
    for key in provided:
        value = _to_model_shape(key, weights[key], mapping[key].shape)
        mapping[key].assign(np.asarray(value, dtype=np.float32))


def load_bit_checkpoint(path, num_classes=None, num_experts=0, groups=32):
    """Builds a `BiTResNetV2` whose architecture is inferred from the `.npz` at `path` (or from its
    weights, as `read_npz` returns them), and fills it.

    `num_classes=None` keeps the checkpoint's head (if any); 0 drops it; any other value puts a new
    zero-initialised head of that size on the pre-trained backbone.
    """
    weights = path if isinstance(path, dict) else read_npz(path)
    arch = infer_architecture(weights)
    keep_head = num_classes is None or num_classes == arch["num_classes"]
    model = resnet_v2.BiTResNetV2(
        block_units=arch["block_units"],
        width_factor=arch["width_factor"],
        num_classes=arch["num_classes"] if num_classes is None else num_classes,
        num_experts=num_experts,
        groups=groups,
    )
    assign_from_checkpoint(model, weights, ignore_head=not keep_head or model.head is None)
    return model


def checkpoint_weights(model):
    """The model's BiT-format weights (BiT key -> float32 array, head kernel as a 1x1 conv)."""
    out = {}
    for key, variable in variable_map(model).items():
        value = np.asarray(variable.numpy(), dtype=np.float32)
        if key.endswith("head/conv2d/kernel"):
            value = value[None, None]
        out[key] = value
    return out


def save_bit_checkpoint(model, path):
    """Writes the model's BiT weights as a `.npz` that `load_bit_checkpoint` and BiT's code read."""
    weights = checkpoint_weights(model)
    return atomic_files.write_atomic(path, lambda f: np.savez(f, **weights))
