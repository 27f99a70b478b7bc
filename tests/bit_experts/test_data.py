"""Upstream sources, BiT preprocessing and slice filtering in tf.data."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from bit_experts import data
from bit_experts.data import pipeline, sources


def _identity_source(n=40, size=12):
    """Image i has label i and a constant colour i, so every target says which image it came from."""
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], size * size * 3)
    return data.array_source(
        "ids", images.reshape(n, size, size, 3), np.arange(n), [f"c{i}" for i in range(n)]
    )


def _ids_of(batches, steps):
    seen = []
    for _, targets in batches.take(steps):
        assert targets.numpy().sum(axis=1).tolist() == [1.0] * len(targets)
        seen += np.argmax(targets.numpy(), axis=1).tolist()
    return seen


def test_train_preprocess_is_a_seeded_crop_in_unit_range():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (40, 30, 3)), tf.uint8)
    a = data.train_preprocess(image, 24, tf.constant([1, 2], tf.int64))
    b = data.train_preprocess(image, 24, tf.constant([1, 2], tf.int64))
    c = data.train_preprocess(image, 24, tf.constant([1, 3], tf.int64))
    assert a.shape == (24, 24, 3) and a.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 1.0
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    evaluated = data.eval_preprocess(image, 16)
    assert evaluated.shape == (16, 16, 3)
    assert float(tf.reduce_max(evaluated)) <= 1.0


def test_inception_crop_stays_within_area_range():
    image = tf.zeros([100, 100, 3], tf.uint8)
    areas = []
    for s in range(30):
        crop = data.inception_crop(image, tf.constant([s, 0], tf.int64))
        areas.append(int(crop.shape[0]) * int(crop.shape[1]) / 10_000)
    assert min(areas) >= 0.04 and max(areas) <= 1.0
    assert len(set(areas)) > 5  # Really random.


def test_slice_filter_yields_only_slice_images_and_all_of_them():
    source = _identity_source()
    indices = np.array([3, 7, 8, 20, 39])
    ds = data.training_dataset(source, batch_size=5, image_size=8, seed=0, indices=indices)
    seen = _ids_of(ds, 6)
    assert set(seen) == set(indices.tolist())
    # Each pass over the repeated slice shows every image once.
    assert sorted(seen[:5]) == indices.tolist()


def test_training_dataset_is_deterministic_per_seed():
    source = _identity_source()
    first = _ids_of(data.training_dataset(source, batch_size=8, image_size=8, seed=1), 3)
    again = _ids_of(data.training_dataset(source, batch_size=8, image_size=8, seed=1), 3)
    other = _ids_of(data.training_dataset(source, batch_size=8, image_size=8, seed=2), 3)
    assert first == again and first != other


def test_bad_slices_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        pipeline.slice_mask([], 10)
    with pytest.raises(ValueError, match="0..9"):
        pipeline.slice_mask([3, 10], 10)


def test_membership_targets_store_patterns_not_a_matrix():
    domains = [np.array([0, 1, 2, 3]), np.array([2, 3]), np.array([5])]
    ids, patterns = data.membership_targets(domains, 7)
    expected = np.zeros((7, 3), np.float32)
    for d, idx in enumerate(domains):
        expected[idx, d] = 1
    np.testing.assert_array_equal(patterns[ids], expected)
    assert len(patterns) == 4  # {0}, {0,1}, {2}, {} : distinct patterns only.


def test_expert_targets_reach_the_batches():
    source = _identity_source(n=10)
    domains = [np.arange(5), np.arange(3, 10)]
    targets = data.membership_targets(domains, 10)
    ds = data.training_dataset(
        source, batch_size=10, image_size=8, seed=0, expert_targets=targets
    ).take(1)
    images, got = next(iter(ds))
    # The image colour encodes its index (resizing a constant image keeps it constant).
    index = np.rint(images.numpy()[:, 0, 0, 0] * 255).astype(int)
    np.testing.assert_array_equal(got.numpy(), targets[1][targets[0][index]])


def test_folder_source(tmp_path):
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (10, 14), (c * 100, i, 0)).save(tmp_path / name / f"{i}.png")
    source = data.load_source(f"folder:{tmp_path}")
    assert source.label_names == ["cat", "dog"]
    np.testing.assert_array_equal(source.image_labels, [0, 0, 0, 1, 1, 1])
    images, targets = next(iter(data.training_dataset(source, batch_size=6, image_size=9, seed=0)))
    assert images.shape == (6, 9, 9, 3)
    assert sorted(np.argmax(targets.numpy(), 1).tolist()) == [0, 0, 0, 1, 1, 1]


def _png(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_records(path, labels):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, ids in enumerate(labels):
            feature = {
                sources.TFRECORD_IMAGE_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[_png((i, 0, 0))])
                ),
                sources.TFRECORD_LABELS_KEY: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=ids)
                ),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )


def test_tfrecord_source_reads_multi_label_examples(tmp_path):
    _write_records(tmp_path / "a.tfrecord", [[0, 2], [1]])
    _write_records(tmp_path / "b.tfrecord", [[2]])
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["x", "y", "z"]))
    source = data.load_source(f"tfrecord:{tmp_path}/*.tfrecord", label_names=str(names))
    assert source.num_images == 3 and source.label_names == ["x", "y", "z"]
    assert [list(x) for x in source.image_labels] == [[0, 2], [1], [2]]
    images, targets = next(iter(data.training_dataset(source, batch_size=3, image_size=8, seed=0)))
    assert images.shape == (3, 8, 8, 3)
    assert sorted(targets.numpy().sum(1).tolist()) == [1, 1, 2]


def test_tfrecord_unknown_label_id_is_reported(tmp_path):
    _write_records(tmp_path / "a.tfrecord", [[0], [5]])
    names = tmp_path / "names.txt"
    names.write_text("x\ny\n")
    source = data.load_source(f"tfrecord:{tmp_path}/a.tfrecord", label_names=str(names))
    with pytest.raises(ValueError, match="image 1 has unknown label id 5"):
        source.labelled_images()


def test_tfds_source_under_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        source = data.load_source("tfds:cifar100")
        assert source.num_labels == 100 and source.num_images == 12
        batch = next(iter(data.training_dataset(source, batch_size=4, image_size=16, seed=0)))
    assert batch[0].shape == (4, 16, 16, 3) and batch[1].shape == (4, 100)


@pytest.mark.parametrize(
    "spec, error",
    [
        ("imagenet", "unknown upstream source"),
        ("folder:/does/not/exist", "does not exist"),
        ("tfrecord:/does/not/*.rec", "no TFRecord files"),
    ],
)
def test_bad_source_specs(spec, error):
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        data.load_source(spec)
