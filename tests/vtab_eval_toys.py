"""Tiny stand-ins for the vtab_eval tests: colour-coded image folders and toy TF Hub modules.

The toy modules are plain `tf.Module`s saved as reusable SavedModels (a `__call__(images,
training=False)` and the three variable/loss attributes), so they save in well under a second.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from PIL import Image

SIZE = 16


def make_colour_folder(root, per_class=20, num_classes=3, size=SIZE, seed=0, with_test=False):
    """An image folder whose class is the dominant colour channel (easy for colour features)."""
    rng = np.random.default_rng(seed)
    splits = ["train"] + (["test"] if with_test else [])
    for split in splits:
        for c in range(num_classes):
            folder = os.path.join(root, split, f"class{c}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                image = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
                image[..., c % 3] += 140 + 20 * (c // 3)
                Image.fromarray(image).save(os.path.join(folder, f"{i:03d}.png"))
    return root


@dataclasses.dataclass
class Entry:  # The fields of hub_export.collection.ModuleEntry that ranking reads.
    handle: str
    name: str
    kind: str
    role: str
    metadata: dict
    sha256: str = None


_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32)


class _Toy(tf.__internal__.tracking.AutoTrackable):
    # Not tf.Module: its `variables` is a read-only property, and the Hub format needs attributes.
    def __init__(self, kind, dim=8, values=None, side=None):
        super().__init__()
        self.kind = kind
        self.values = None if values is None else tf.constant(values, tf.float32)
        self.side = side
        if kind == "sized":
            init = np.eye(3, 4, dtype=np.float32) + 0.1 * side
        else:
            # Fixed, distinct columns so that colour features stay separable after projection.
            init = np.random.default_rng(1).normal(size=(3, dim)).astype(np.float32)
        self.w = tf.Variable(init, name="w")
        self.variables = [self.w]
        self.trainable_variables = [self.w]
        self.regularization_losses = []
        self.__call__ = tf.function(self._call)
        for training in (False, True):
            self.__call__.get_concrete_function(_SPEC, training)

    def _call(self, images, training=False):
        n = tf.shape(images)[0]
        colour = tf.reduce_mean(images, axis=[1, 2])
        if self.kind == "colour":
            return tf.matmul(colour, self.w)
        if self.kind == "noise":
            # Independent of the image: leave-one-out 1-NN is at chance level.
            return tf.random.stateless_uniform([n, 8], seed=[3, 4]) + 0.0 * tf.matmul(
                colour, self.w
            )
        if self.kind == "nan":
            return tf.matmul(colour, self.w) * float("nan")
        if self.kind == "const":
            # The same output row for every image (a classifier with fixed logits).
            return tf.tile(self.values[None], [n, 1]) + 0.0 * tf.reduce_sum(colour)
        if self.kind == "rank1":
            return tf.reduce_sum(tf.matmul(colour, self.w), axis=1)
        if self.kind == "dropout":
            # Colour features with seeded dropout (a stateful random op) when training=True.
            features = tf.matmul(colour, self.w)
            return tf.nn.dropout(features, rate=0.3, seed=5) if training else features
        if self.kind == "sized":
            # Like a fixed-input network: fails on any image side other than `side`.
            tf.debugging.assert_equal(tf.shape(images)[1], self.side, "wrong image side")
            return tf.matmul(colour, self.w)
        raise ValueError(self.kind)


def save_toy_module(path, kind, metadata=None, values=None, side=None):
    """Saves a toy module to `path` and returns the path.

    kind: "colour" (informative features), "noise" (uninformative), "nan" (non-finite), "rank1"
    (wrong rank), "const" (returns the row `values` for every image), "dropout" (colour features
    with seeded dropout in training mode) or "sized" (4 features; only accepts `side` x `side`
    images).
    """
    import json

    module = _Toy(kind, values=values, side=side)
    tf.saved_model.save(module, path)
    if metadata is not None:
        from hub_export.module import METADATA_FILE

        with open(os.path.join(path, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(metadata, f)
    return path


def write_handle_list(path, handles):
    """A text-file collection: one module handle per line."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(handles) + "\n")
    return path


def save_toy_pool(root):
    """A baseline and two experts (noise, colour) under `root`; returns the `root/pool.txt` list."""
    modules = [
        save_toy_module(os.path.join(root, "b"), "noise", {"name": "baseline", "kind": "baseline"}),
        save_toy_module(
            os.path.join(root, "noise"), "noise", {"name": "expert_noise", "kind": "full"}
        ),
        save_toy_module(
            os.path.join(root, "colour"), "colour", {"name": "expert_colour", "kind": "full"}
        ),
    ]
    return write_handle_list(os.path.join(root, "pool.txt"), modules)
