"""Expert archives saved to a `tf.io.gfile` URL without rename (docs/workdir.md, commit protocol).

Before, `save_expert` made its temporary folder beside the URL (a local folder named `ram:`) and
renamed the archive onto it with `os.replace`. Now it builds the archive on the local disk and
uploads it in one write: a save that fails leaves the old archive whole.
"""

import gfile_double
import keras
import numpy as np
import pytest
from gfile_double import Killed

from bit_experts import atomic_files, expert_archive
from bit_experts.presets import create_model

no_rename, ram_root = gfile_double.no_rename, gfile_double.ram_root  # fixtures


def _model(seed):
    model = create_model("r14_micro", num_experts=0)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    return model


def _metadata(model, name):
    return {
        "name": name,
        "kind": "full",
        "role": "feature_vector",
        "architecture": {"preset": "r14_micro"},
        "resolution": 16,
        "input_range": [0.0, 1.0],
        "feature_dim": model.feature_dim,
        "slice": "animal",
    }


def _weights_from(data, tmp_path):
    local = tmp_path / "copy.keras"
    local.write_bytes(data)
    return [np.asarray(w) for w in keras.models.load_model(local, compile=False).weights]


def test_save_expert_on_ram_is_one_write_and_a_failed_save_keeps_the_old_archive(
    ram_root, no_rename, monkeypatch, tmp_path
):
    path = f"{ram_root}/module/keras/expert.keras"
    first = _model(0)
    assert expert_archive.save_expert(first, path, _metadata(first, "a")) == path
    assert atomic_files.listdir(f"{ram_root}/module/keras") == ["expert.keras"]
    assert expert_archive.read_metadata(path) == _metadata(first, "a")
    saved = atomic_files.read_bytes(path)
    for a, b in zip(_weights_from(saved, tmp_path), first.weights, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))

    real_upload = atomic_files.upload_file

    def killed(*args, **kwargs):
        raise Killed

    second = _model(1)
    monkeypatch.setattr(atomic_files, "upload_file", killed)
    with pytest.raises(Killed):
        expert_archive.save_expert(second, path, _metadata(second, "b"))
    assert atomic_files.read_bytes(path) == saved  # untouched
    monkeypatch.setattr(atomic_files, "upload_file", real_upload)
    expert_archive.save_expert(second, path, _metadata(second, "b"))
    assert expert_archive.read_metadata(path)["name"] == "b"
    expert_archive.replace_metadata(path, _metadata(second, "c"))
    assert expert_archive.read_metadata(path)["name"] == "c"
    for a, b in zip(
        _weights_from(atomic_files.read_bytes(path), tmp_path), second.weights, strict=True
    ):
        np.testing.assert_array_equal(a, np.asarray(b))
