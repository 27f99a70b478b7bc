"""The 8 structured VTAB-1k tasks and the label functions that define them.

Labels are derived from TFDS annotations exactly as in google-research/task_adaptation
(task_adaptation/data/{clevr,dmlab,kitti,dsprites,smallnorb}.py, cited per function).
A "binned" label is the index of the last threshold strictly below the value, which is what
VTAB's `reduce_max(where(thresholds - value < 0))` computes.
"""

import functools

import tensorflow as tf

from vtab_eval.tasks import splits
from vtab_eval.tasks.base import Augmentation, TfdsTask

# clevr.py, closest_object_distance: bins of the smallest object depth (pixel_coords[:, 2]).
CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
# kitti.py, closest_vehicle_distance: bins of the smallest vehicle depth in metres;
# the 1000 m sentinel (no vehicle at all) falls in the last class.
KITTI_DISTANCE_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)
KITTI_NO_VEHICLE_DEPTH = 1000.0
# TFDS kitti object types 0, 1, 2 are Car, Van, Truck: the "vehicles".
KITTI_NUM_VEHICLE_TYPES = 3


# Augmentation policies, decided from each label function below (BiT colab: no random crops for
# counting, no flips where the label is an orientation).
# The label is a count or the nearest object over the whole scene: a crop can cut objects out.
# Depth and counts do not change in a mirror image.
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
_CLEVR_SPLITS = splits.val_from_train(70000 * 90 // 100, test="validation")
_CLEVR_DECODE = {"image": True, "objects": {"size": True, "pixel_coords": True}}

# dsprites.py: TFDS has only train (737280): 80% train, 10% val, 10% test.
_DSPRITES_SPLITS = splits.val_and_test_from_train(737280 * 80 // 100, 737280 * 10 // 100)

# smallnorb.py: TFDS test is halved: its first 50% is val, the rest is test.
_SMALLNORB_SPLITS = {
    "train800": "train[:800]",
    "val200": "test[:200]",
    "train800val200": "train[:800]+test[:200]",
    "test": "test[50%:]",
    "train": "train",
    "val": "test[:50%]",
    "trainval": "train+test[:50%]",
}


def _structured(
    name, tfds_name, num_classes, task_splits, decode, preprocess, augmentation, *, version
):
    return TfdsTask(
        name=name,
        version=version,
        tfds_name=tfds_name,
        num_classes=num_classes,
        group="structured",
        suite="vtab1k",
        splits=task_splits,
        decode=decode,
        preprocess=preprocess,
        augmentation=augmentation,
    )


TASKS = (
    _structured(
        "clevr_count",
        "clevr:3.*.*",
        8,
        _CLEVR_SPLITS,
        _CLEVR_DECODE,
        functools.partial(_clevr_preprocess, clevr_count_label),
        SCENE_AUGMENTATION,
        version="1.0.0",
    ),
    _structured(
        "clevr_distance",
        "clevr:3.*.*",
        6,
        _CLEVR_SPLITS,
        _CLEVR_DECODE,
        functools.partial(_clevr_preprocess, clevr_distance_label),
        SCENE_AUGMENTATION,
        version="1.0.0",
    ),
    # dmlab.py: official train/validation/test splits; the TFDS label is the task label.
    TfdsTask(
        name="dmlab",
        tfds_name="dmlab:2.0.1",
        num_classes=6,
        group="structured",
        suite="vtab1k",
        splits=splits.official_val(),
        augmentation=SCENE_AUGMENTATION,  # Label: distance and reward of the objects in view.
        version="1.0.0",
    ),
    # kitti.py: official train/validation/test splits of kitti:3.1.0.
    _structured(
        "kitti_distance",
        "kitti:3.1.0",
        4,
        splits.official_val(),
        {"image": True, "objects": {"type": True, "location": True}},
        _kitti_preprocess,
        SCENE_AUGMENTATION,
        version="1.0.0",
    ),
    # dSpr-Loc: label_x_position has 32 values -> 16 classes.
    _structured(
        "dsprites_location",
        "dsprites:2.*.*",
        16,
        _DSPRITES_SPLITS,
        {"image": True, "label_x_position": True},
        functools.partial(_dsprites_preprocess, "label_x_position", 32),
        POSITION_AUGMENTATION,
        version="1.0.0",
    ),
    # dSpr-Ori: label_orientation has 40 values -> 16 classes.
    _structured(
        "dsprites_orientation",
        "dsprites:2.*.*",
        16,
        _DSPRITES_SPLITS,
        {"image": True, "label_orientation": True},
        functools.partial(_dsprites_preprocess, "label_orientation", 40),
        ORIENTATION_AUGMENTATION,
        version="1.0.0",
    ),
    # sNORB-Azim: label_azimuth, 18 classes (the first camera's "image" only).
    _structured(
        "smallnorb_azimuth",
        "smallnorb:2.*.*",
        18,
        _SMALLNORB_SPLITS,
        {"image": True, "label_azimuth": True},
        functools.partial(_smallnorb_preprocess, "label_azimuth"),
        ORIENTATION_AUGMENTATION,
        version="1.0.0",
    ),
    # sNORB-Elev: label_elevation, 9 classes.
    _structured(
        "smallnorb_elevation",
        "smallnorb:2.*.*",
        9,
        _SMALLNORB_SPLITS,
        {"image": True, "label_elevation": True},
        functools.partial(_smallnorb_preprocess, "label_elevation"),
        ORIENTATION_AUGMENTATION,
        version="1.0.0",
    ),
)
