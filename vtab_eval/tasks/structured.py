"""The 8 structured VTAB-1k tasks and the label functions that define them.

Labels are derived from TFDS annotations exactly as in google-research/task_adaptation
(task_adaptation/data/{clevr,dmlab,kitti,dsprites,smallnorb}.py, cited per function).
A "binned" label is the index of the last threshold strictly below the value, which is what
VTAB's `reduce_max(where(thresholds - value < 0))` computes.
"""

from __future__ import annotations

import functools

from bit_experts import lazy_api
from vtab_eval.tasks import splits
from vtab_eval.tasks.base import Augmentation, registered

tf = lazy_api.module("tensorflow")  # imported on first use: commands check flags first

# clevr.py, closest_object_distance: bins of the smallest object depth (pixel_coords[:, 2]).
CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
# kitti.py, closest_vehicle_distance: bins of the smallest vehicle depth in metres;
# the 1000 m sentinel (no vehicle at all) falls in the last class.
KITTI_DISTANCE_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)
KITTI_NO_VEHICLE_DEPTH = 1000.0
# TFDS kitti object types 0, 1, 2 are Car, Van, Truck: the "vehicles".
KITTI_NUM_VEHICLE_TYPES = 3


# Augmentation policies, from each label function below. A mirror image keeps depth and counts.
SCENE_AUGMENTATION = Augmentation(
    crop=False, reason="label counts or measures objects anywhere in the scene; a crop can cut them"
)
# dSprites x position: a flip mirrors x and a crop (a translation) moves the shape.
POSITION_AUGMENTATION = Augmentation(
    flip=False, crop=False, reason="label is a position: flips mirror it and crops move it"
)
# Orientations and pose angles: a mirror image reverses the angle; a crop keeps it.
ORIENTATION_AUGMENTATION = Augmentation(
    flip=False, reason="label is an orientation or pose angle, which a mirror image changes"
)


def _bin(value, thresholds):
    """Index of the last threshold strictly below `value` (thresholds sorted ascending)."""
    below = tf.cast(tf.constant(thresholds, tf.float32) < tf.cast(value, tf.float32), tf.int64)
    return tf.reduce_sum(below) - 1


def clevr_count_label(features: dict) -> tf.Tensor:
    """clevr.py count_all: number of objects minus 3 (scenes hold 3..10 objects: 8 classes)."""
    return tf.cast(tf.size(features["objects"]["size"]) - 3, tf.int64)


def clevr_distance_label(features: dict) -> tf.Tensor:
    """clevr.py closest_object_distance: depth of the closest object in 6 bins."""
    depth = tf.reduce_min(features["objects"]["pixel_coords"][:, 2])
    return _bin(depth, CLEVR_DISTANCE_THRESHOLDS)


def kitti_distance_label(features: dict) -> tf.Tensor:
    """kitti.py closest_vehicle_distance: depth of the closest car/van/truck in 4 classes.

    Classes: <= 8 m, (8, 20] m, (20, 999] m, and no vehicle in the image.
    """
    objects = features["objects"]
    is_vehicle = objects["type"] < KITTI_NUM_VEHICLE_TYPES
    depths = tf.boolean_mask(tf.cast(objects["location"][:, 2], tf.float32), is_vehicle)
    depths = tf.concat([depths, [KITTI_NO_VEHICLE_DEPTH]], axis=0)
    return _bin(tf.reduce_min(depths), KITTI_DISTANCE_THRESHOLDS)


def dsprites_label(features: dict, attribute: str, num_values: int, num_classes: int = 16):
    """dsprites.py: groups `num_values` consecutive attribute values into `num_classes` bins."""
    values_per_class = float(num_values) / num_classes
    value = tf.cast(features[attribute], tf.float32)
    return tf.cast(tf.math.floordiv(value, values_per_class), tf.int64)


def _clevr_preprocess(label_fn, features):
    return {"image": features["image"], "label": label_fn(features)}


def _kitti_preprocess(features):
    return {"image": features["image"], "label": kitti_distance_label(features)}


def _dsprites_preprocess(attribute, num_values, features):
    # dSprites pixels are 0/1; VTAB scales them to 0/255 like every other dataset.
    image = features["image"] * tf.constant(255, features["image"].dtype)
    return {"image": image, "label": dsprites_label(features, attribute, num_values)}


def _smallnorb_preprocess(attribute, features):
    return {"image": features["image"], "label": features[attribute]}


# clevr.py: TFDS train (70000) split 90/10; TFDS "validation" is the test split.
_CLEVR_SPLITS = splits.val_from_train(63000, test="validation")
_CLEVR_DECODE = {"image": True, "objects": {"size": True, "pixel_coords": True}}
# dsprites.py: TFDS has only train (737280): 80% train, 10% val, 10% test.
_DSPRITES_SPLITS = splits.val_and_test_from_train(589824, 73728)
# smallnorb.py: TFDS test is halved: its first 50% is val, the rest is test.
_SMALLNORB_SPLITS = splits.vtab_splits(
    "train", "test[:50%]", "test[:200]", "test[50%:]", "train+test[:50%]"
)
_structured = functools.partial(registered, "structured", "vtab1k")


def _clevr(name, num_classes, label_fn, *, version):
    preprocess = functools.partial(_clevr_preprocess, label_fn)
    return _structured(
        name,
        "clevr:3.*.*",
        num_classes,
        _CLEVR_SPLITS,
        decode=_CLEVR_DECODE,
        preprocess=preprocess,
        augmentation=SCENE_AUGMENTATION,
        version=version,
    )


def _dsprites(name, attribute, num_values, augmentation, *, version):
    """`attribute`'s `num_values` values in 16 classes."""
    return _structured(
        name,
        "dsprites:2.*.*",
        16,
        _DSPRITES_SPLITS,
        decode={"image": True, attribute: True},
        preprocess=functools.partial(_dsprites_preprocess, attribute, num_values),
        augmentation=augmentation,
        version=version,
    )


def _smallnorb(name, attribute, num_classes, *, version):
    """`attribute` of the first camera's "image"."""
    return _structured(
        name,
        "smallnorb:2.*.*",
        num_classes,
        _SMALLNORB_SPLITS,
        decode={"image": True, attribute: True},
        preprocess=functools.partial(_smallnorb_preprocess, attribute),
        augmentation=ORIENTATION_AUGMENTATION,
        version=version,
    )


TASKS = (
    _clevr("clevr_count", 8, clevr_count_label, version="1.0.0"),
    _clevr("clevr_distance", 6, clevr_distance_label, version="1.0.0"),
    # dmlab.py: official train/validation/test splits; the TFDS label is the task label, the
    # distance and reward of the objects in view.
    _structured(
        "dmlab",
        "dmlab:2.0.1",
        6,
        splits.official_val(),
        augmentation=SCENE_AUGMENTATION,
        version="1.0.0",
    ),
    # kitti.py: official train/validation/test splits of kitti:3.1.0.
    _structured(
        "kitti_distance",
        "kitti:3.1.0",
        4,
        splits.official_val(),
        decode={"image": True, "objects": {"type": True, "location": True}},
        preprocess=_kitti_preprocess,
        augmentation=SCENE_AUGMENTATION,
        version="1.0.0",
    ),
    _dsprites("dsprites_location", "label_x_position", 32, POSITION_AUGMENTATION, version="1.0.0"),
    _dsprites(
        "dsprites_orientation", "label_orientation", 40, ORIENTATION_AUGMENTATION, version="1.0.0"
    ),
    _smallnorb("smallnorb_azimuth", "label_azimuth", 18, version="1.0.0"),
    _smallnorb("smallnorb_elevation", "label_elevation", 9, version="1.0.0"),
)
