"""Every VTAB-1k task loads offline under tfds.testing.mock_data in the common format."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from vtab_eval import tasks


def _fake_as_dataset(num_examples, max_value=None):
    """A mock `_as_dataset`: random examples with every dynamic dimension set to 10.

    Fixed small shapes keep the test fast and give CLEVR scenes of 10 objects, a count VTAB
    can label (TFDS's default mock draws 5..49 objects).
    """

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kw):
        del split, read_config, shuffle_files, kw
        features = self.info.features
        if isinstance(decoders, tfds.decode.PartialDecoding):
            features = decoders.extract_features(features)
        generator = mocking.RandomFakeGenerator(
            features, num_examples, max_value=max_value, constant_dynamic_shape=True
        )
        signature = tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, t.dtype), features.get_tensor_info()
        )
        return tf.data.Dataset.from_generator(lambda: iter(generator), output_signature=signature)

    return as_dataset


def _check_examples(images, labels, task):
    assert images.dtype == np.float32 and images.shape[-1] == 3
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < task.num_classes


@pytest.mark.parametrize("name", tasks.list_tasks("vtab1k"))
def test_vtab1k_task_loads_train800_and_test(name):
    task = tasks.get_task(name)
    with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset(800)):
        batch = next(iter(task.load("train800", image_size=8).batch(1000)))
    images, labels = batch["image"].numpy(), batch["label"].numpy()
    assert images.shape == (800, 8, 8, 3)
    _check_examples(images, labels, task)

    with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset(3)):
        examples = list(task.load("test", data_dir="/unused").as_numpy_iterator())
    assert len(examples) == 3
    for example in examples:
        assert set(example) == {"image", "label"}
        _check_examples(example["image"][None], np.asarray([example["label"]]), task)


def test_dsprites_binary_pixels_become_full_range():
    task = tasks.get_task("dsprites_orientation")
    with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset(4, max_value=2)):
        images = next(iter(task.load("test").batch(4)))["image"].numpy()
    # dSprites pixels are 0/1: white must come out as 1.0, not 1/255.
    assert set(np.unique(images)) == {0.0, 1.0}


def test_tfds_default_mock_works_too():
    task = tasks.get_task("cifar100")
    with tfds.testing.mock_data(num_examples=5):
        batch = next(iter(task.load("val200", image_size=16).batch(5)))
    assert batch["image"].shape == (5, 16, 16, 3)
    _check_examples(batch["image"].numpy(), batch["label"].numpy(), task)
