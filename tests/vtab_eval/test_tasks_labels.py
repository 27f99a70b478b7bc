"""Structured-task labels on hand-made TFDS feature dicts, against the VTAB definitions."""

import numpy as np
import pytest
import tensorflow as tf

from vtab_eval import tasks
from vtab_eval.tasks import structured

IMAGE = tf.zeros([4, 4, 3], tf.uint8)


def _vtab_bin(value, thresholds):
    """VTAB's own formula: reduce_max(where(thresholds - value < 0))."""
    return int(np.max(np.where(np.asarray(thresholds) - value < 0)))


def _label(task_name, features):
    return int(tasks.get_task(task_name).preprocess(features)["label"])


def _clevr(depths):
    depths = np.asarray(depths, np.float32)
    coords = np.stack([np.zeros_like(depths), np.zeros_like(depths), depths], axis=1)
    return {
        "image": IMAGE,
        "objects": {
            "pixel_coords": tf.constant(coords),
            "size": tf.zeros([len(depths)], tf.int64),
        },
    }


@pytest.mark.parametrize("num_objects", [3, 4, 7, 10])
def test_clevr_count_is_objects_minus_three(num_objects):
    assert _label("clevr_count", _clevr(np.full(num_objects, 9.0))) == num_objects - 3


@pytest.mark.parametrize(
    "depths", [[12.0, 8.7, 9.2], [8.0, 11.0], [8.01], [9.5, 30.0], [10.0], [10.2], [99.0], [0.5]]
)
def test_clevr_distance_bins_the_closest_object(depths):
    expected = _vtab_bin(min(depths), structured.CLEVR_DISTANCE_THRESHOLDS)
    assert _label("clevr_distance", _clevr(depths)) == expected
    assert 0 <= expected < 6


def _kitti(types, depths):
    location = np.zeros([len(types), 3], np.float32)
    location[:, 2] = depths
    return {
        "image": IMAGE,
        "objects": {
            "type": tf.constant(types, tf.int64),
            "location": tf.constant(location),
        },
    }


@pytest.mark.parametrize(
    "types, depths, expected",
    [
        ([0], [5.0], 0),  # car at 5 m
        ([1, 3], [8.0, 2.0], 0),  # van at exactly 8 m; the pedestrian closer is ignored
        ([2], [8.5], 1),  # truck
        ([0, 1], [30.0, 19.9], 1),  # the closest vehicle decides
        ([0], [20.5], 2),
        ([0], [998.0], 2),
        ([3, 4, 5, 6, 7], [1.0, 2.0, 3.0, 4.0, 5.0], 3),  # no car/van/truck
        ([], [], 3),  # no object at all
    ],
)
def test_kitti_distance_bins_the_closest_vehicle(types, depths, expected):
    assert _label("kitti_distance", _kitti(types, depths)) == expected
    vehicle_depths = [d for t, d in zip(types, depths) if t < 3] + [1000.0]
    assert expected == _vtab_bin(min(vehicle_depths), structured.KITTI_DISTANCE_THRESHOLDS)


@pytest.mark.parametrize(
    "task_name, attribute, num_values",
    [
        ("dsprites_location", "label_x_position", 32),
        ("dsprites_orientation", "label_orientation", 40),
    ],
)
def test_dsprites_groups_values_into_16_classes(task_name, attribute, num_values):
    labels = [
        _label(task_name, {"image": tf.zeros([4, 4, 1], tf.uint8), attribute: tf.constant(v)})
        for v in range(num_values)
    ]
    # VTAB: floor(value / (num_values / 16)).
    assert labels == [int(np.floor(v / (num_values / 16))) for v in range(num_values)]
    assert sorted(set(labels)) == list(range(16))


@pytest.mark.parametrize(
    "task_name, attribute, num_classes",
    [("smallnorb_azimuth", "label_azimuth", 18), ("smallnorb_elevation", "label_elevation", 9)],
)
def test_smallnorb_predicts_its_attribute(task_name, attribute, num_classes):
    features = {
        "image": tf.zeros([4, 4, 1], tf.uint8),
        "label_azimuth": tf.constant(17, tf.int64),
        "label_elevation": tf.constant(5, tf.int64),
    }
    assert _label(task_name, features) == int(features[attribute])
    assert tasks.get_task(task_name).num_classes == num_classes


def test_grey_images_are_tiled_and_resized():
    grey = tf.constant(np.arange(6, dtype=np.uint8).reshape(2, 3, 1) * 51)
    out = tasks.to_model_input(grey, tf.constant(3, tf.int32))
    assert out["image"].shape == (2, 3, 3) and out["label"].dtype == tf.int64
    for c in range(3):
        # One correctly rounded float32 division (<= 2**-24 = 6e-8 relative) against float64: under
        # the default rtol 1e-7; a wrong scale (/ 256, or no division) is off by >= 4e-3.
        np.testing.assert_allclose(out["image"][..., c], grey[..., 0].numpy() / 255.0)
    resized = tasks.to_model_input(grey, tf.constant(0), image_size=5)["image"]
    assert resized.shape == (5, 5, 3)
    assert float(tf.reduce_min(resized)) >= 0.0 and float(tf.reduce_max(resized)) <= 1.0
