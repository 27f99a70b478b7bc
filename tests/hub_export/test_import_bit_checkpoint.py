import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from reference_bit import bit_features, random_bit_checkpoint
from tolerances import network_atol

from hub_export import collection, import_bit_checkpoint
from hub_export.module import METADATA_FILE, read_metadata
from vtab_eval import selectors

UNITS, WIDTH, GROUPS = (1, 1, 1, 1), 0.125, 4
RES = 40  # r14_micro is not one of BiT's architectures: its resolution must be given


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("import")
    weights = random_bit_checkpoint(UNITS, WIDTH, num_classes=3, groups=GROUPS, seed=7)
    np.savez(tmp / "BiT-test.npz", **weights)
    out = tmp / "module"
    # Groups inferred: (1, 1, 1, 1) units at width 1/8 are r14_micro's, 4 groups.
    import_bit_checkpoint.import_checkpoint(str(tmp / "BiT-test.npz"), str(out), resolution=RES)
    return weights, out


def _images(size, n=2):
    return np.random.default_rng(size).uniform(0, 1, (n, size, size, 3)).astype("float32")


def test_hub_load_features_equal_reference_at_two_resolutions(imported):
    import tensorflow_hub as hub

    weights, out = imported
    module = hub.load(str(out))
    kernels = [w.shape for k, w in weights.items() if k.endswith("kernel") and "head" not in k]
    for size in (32, 47):
        expected = bit_features(weights, _images(size), groups=GROUPS)
        for training in (False, True):
            got = module(tf.constant(_images(size)), training=training).numpy()
            # Float64 reference: float32 bound of the network (tests/tolerances.py) in place of
            # rtol=atol=1e-4 of the largest feature; a mis-mapped weight changes features by O(1).
            atol = network_atol(kernels, (2, size, size, 3), expected)
            np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
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
    assert metadata["architecture"]["groups"] == GROUPS  # inferred, not given
    assert metadata["feature_dim"] == 256 and metadata["input_range"] == [0.0, 1.0]


def test_generic_checkpoint_is_a_baseline_at_its_resolution(imported, tmp_path):
    _, out = imported
    metadata = read_metadata(out)
    # A public BiT checkpoint is the generic model B, not an expert of some slice.
    assert (metadata["kind"], metadata["slice"], metadata["role"]) == (
        "baseline",
        None,
        "feature_vector",
    )
    assert metadata["resolution"] == RES
    # A pool that lists it treats it as the baseline: the `baseline` selector finds it, and it is
    # ranked with the experts only when the baseline is included.
    handles = tmp_path / "pool.txt"
    handles.write_text(f"{out}\n")
    pool = collection.resolve_pool(str(handles), verify_checksums=False)
    assert [e.kind for e in pool] == ["baseline"]
    assert selectors.find_baseline(pool) is pool[0]
    assert selectors.candidates(pool, include_baseline=True) == pool
    assert selectors.candidates(pool, include_baseline=False) == []
    for bad in (0, -5, 224.0, True):
        with pytest.raises(ValueError, match="resolution must be a positive integer"):
            import_bit_checkpoint.import_checkpoint(
                "unused.npz", str(tmp_path / "x"), resolution=bad
            )
    assert not (tmp_path / "x").exists()


def test_what_a_checkpoint_does_not_store_comes_from_its_architecture_or_is_asked_for():
    settings = import_bit_checkpoint.checkpoint_settings
    # BiT's architectures: 32 groups and BiT's 224 px; given values win.
    for units, width in (((3, 4, 6, 3), 1), ((3, 8, 36, 3), 4)):
        arch = {"block_units": units, "width_factor": width}
        assert settings(arch) == (32, 224) == (32, import_bit_checkpoint.BIT_RESOLUTION)
        assert settings(arch, groups=16, resolution=480) == (16, 480)
    # A small preset: its own groups, but no known resolution.
    micro = {"block_units": UNITS, "width_factor": WIDTH}
    assert settings(micro, resolution=32) == (GROUPS, 32)
    with pytest.raises(ValueError, match=r"^--resolution: the checkpoint's architecture \(r14"):
        settings(micro)
    # Groups that cannot divide the channels, or an architecture no preset has: --groups.
    with pytest.raises(ValueError, match=r"^--groups=32: must divide the 8 channels"):
        settings(micro, groups=32, resolution=32)
    odd = {"block_units": (1, 2, 1, 1), "width_factor": WIDTH}
    with pytest.raises(ValueError, match=r"^--groups: a checkpoint does not store its GroupNorm"):
        settings(odd, resolution=32)
    assert settings(odd, groups=8, resolution=32) == (8, 32)


def test_a_second_baseline_in_a_pool_is_warned_about(imported, tmp_path):
    _, out = imported
    shutil.copytree(out, tmp_path / "again")
    (tmp_path / "again" / METADATA_FILE).write_text(
        json.dumps(dict(read_metadata(out), name="bit-again"))
    )
    handles = tmp_path / "pool.txt"
    handles.write_text(f"{out}\n{tmp_path / 'again'}\n")
    with pytest.warns(
        collection.BaselineWarning, match=r"2 baseline modules \(BiT-test, bit-again\)"
    ):
        pool = collection.resolve_pool(str(handles), verify_checksums=False)
    assert selectors.find_baseline(pool) is pool[0]


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
    ]
    # No resolution given, none known for this architecture: one line naming the flag.
    unknown = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert (
        unknown.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "import_bit_checkpoint: error: --resolution: the checkpoint's architecture (r14_micro)"
        )
    )
    assert not (tmp_path / "m").exists()
    cmd.append("--resolution=96")  # the groups are inferred: r14_micro's 4
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "m" / "saved_model.pb").is_file()
    assert read_metadata(tmp_path / "m")["resolution"] == 96  # The flag overrides BiT's 224.
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
