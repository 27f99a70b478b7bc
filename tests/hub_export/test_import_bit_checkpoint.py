import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from reference_bit import bit_features, random_bit_checkpoint

from hub_export import import_bit_checkpoint
from hub_export.module import read_metadata

UNITS, WIDTH, GROUPS = (1, 1, 1, 1), 0.125, 4


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("import")
    weights = random_bit_checkpoint(UNITS, WIDTH, num_classes=3, groups=GROUPS, seed=7)
    np.savez(tmp / "BiT-test.npz", **weights)
    out = tmp / "module"
    import_bit_checkpoint.import_checkpoint(str(tmp / "BiT-test.npz"), str(out), groups=GROUPS)
    return weights, out


def _images(size, n=2):
    return np.random.default_rng(size).uniform(0, 1, (n, size, size, 3)).astype("float32")


def test_hub_load_features_equal_reference_at_two_resolutions(imported):
    import tensorflow_hub as hub

    weights, out = imported
    module = hub.load(str(out))
    for size in (32, 47):
        expected = bit_features(weights, _images(size), groups=GROUPS)
        for training in (False, True):
            got = module(tf.constant(_images(size)), training=training).numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    serving = module.signatures["serving_default"](images=tf.constant(_images(32)))
    assert serving["feature_vector"].shape == (2, 256)


def test_module_has_reusable_savedmodel_attributes_and_metadata(imported):
    import tensorflow_hub as hub

    _, out = imported
    module = hub.load(str(out))
    assert len(module.variables) == len(module.trainable_variables) > 0
    assert list(module.regularization_losses) == []
    metadata = read_metadata(out)
    assert metadata["architecture"]["block_units"] == list(UNITS)
    assert metadata["feature_dim"] == 256 and metadata["input_range"] == [0.0, 1.0]


def test_fine_tunes_in_tf_keras_through_hub_keras_layer(imported):
    import tensorflow_hub as hub
    import tf_keras

    _, out = imported
    layer = hub.KerasLayer(str(out), trainable=True)
    model = tf_keras.Sequential([layer, tf_keras.layers.Dense(2)])
    model.build((None, 32, 32, 3))
    model.compile(
        tf_keras.optimizers.SGD(0.05),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [w.numpy().copy() for w in layer.trainable_weights]
    history = model.fit(_images(32, 4), np.array([0, 1, 0, 1]), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
    assert sum(changed) > len(changed) // 2


def test_command_line_contract(tmp_path):
    weights = random_bit_checkpoint(UNITS, WIDTH, groups=GROUPS)
    np.savez(tmp_path / "c.npz", **weights)
    cmd = [
        sys.executable,
        "-m",
        "hub_export.import_bit_checkpoint",
        f"--checkpoint={tmp_path / 'c.npz'}",
        f"--output_dir={tmp_path / 'm'}",
        f"--groups={GROUPS}",
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "m" / "saved_model.pb").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub_export.import_bit_checkpoint",
            f"--checkpoint={tmp_path / 'missing.npz'}",
            f"--output_dir={tmp_path / 'x'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()
