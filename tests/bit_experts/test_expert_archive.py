"""The `.keras` expert archive: weights and metadata round-trip, packed experts by name, bad input."""

import json
import os
import zipfile

import numpy as np
import pytest
from tolerances import model_atol

from bit_experts import expert_archive
from bit_experts.expert_archive import load_expert, save_expert
from bit_experts.presets import create_model
from bit_experts.resnet_v2 import BiTResNetV2


def _model(num_experts=0, seed=0):
    model = create_model("r14_micro", num_experts=num_experts)
    rng = np.random.default_rng(seed)
    for w in model.weights:  # adapters' last convs start at zero: make every expert differ
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    return model


def _metadata(model, **extra):
    return {
        "name": "expert_animal",
        "kind": "full",
        "role": "feature_vector",
        "architecture": {"preset": "r14_micro", "block_units": [1, 1, 1, 1]},
        "resolution": 16,
        "input_range": [0.0, 1.0],
        "feature_dim": model.feature_dim,
        "slice": "animal",
        "source": {"workdir": "/w", "model": "expert_animal"},
        **extra,
    }


def _images(n=2, size=16):
    return np.random.default_rng(1).uniform(0, 1, (n, size, size, 3)).astype("float32")


def _same_weights(a, b):
    return len(a.weights) == len(b.weights) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.weights, b.weights)
    )


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = _model()
    metadata = _metadata(model)
    path = save_expert(model, tmp_path / "sub" / "expert.keras", metadata)
    assert path == str(tmp_path / "sub" / "expert.keras")
    loaded = load_expert(path)
    assert isinstance(loaded, BiTResNetV2) and _same_weights(model, loaded)
    assert type(loaded.metadata) is dict and loaded.metadata == metadata
    x = _images()
    want = np.asarray(model(x))
    atol = model_atol(model, x, want)  # same weights, same code; only summation order may differ
    np.testing.assert_allclose(np.asarray(loaded(x)), want, rtol=0, atol=atol)
    # A module folder is found through keras/expert.keras, as hub_export writes it.
    module_dir = tmp_path / "module"
    save_expert(model, module_dir / expert_archive.ARCHIVE_PATH, metadata)
    assert load_expert(module_dir).metadata == metadata
    assert sorted(os.listdir(module_dir / "keras")) == ["expert.keras"]  # no temporary left


def test_packed_archive_picks_an_expert_by_name(tmp_path):
    model = _model(num_experts=3, seed=2)
    experts = [
        {"name": n, "expert_id": i, "slice": f"s_{n}", "image_count": 10 + i, "module": f"a_{n}"}
        for i, n in enumerate(["cat", "dog", "tree"])
    ]
    metadata = _metadata(model, kind="adapter", role="packed", slice=None, experts=experts)
    path = save_expert(model, tmp_path / "packed.keras", metadata)
    x = _images()
    outputs = {}
    for i, name in enumerate(["cat", "dog", "tree"]):
        expert = load_expert(path, expert=name)
        assert expert.num_experts == 1 and expert.head is None
        assert expert.metadata["name"] == f"a_{name}" and expert.metadata["slice"] == f"s_{name}"
        assert expert.metadata["expert"] == name and expert.metadata["expert_id"] == i
        assert expert.metadata["role"] == "feature_vector" and "experts" not in expert.metadata
        assert expert.metadata["packed_module"] == "expert_animal"
        want = np.asarray(model.features(x, expert_ids=i))
        atol = model_atol(model, x, want)
        np.testing.assert_allclose(np.asarray(expert(x)), want, rtol=0, atol=atol)
        outputs[name] = want
    assert np.abs(outputs["cat"] - outputs["dog"]).max() > 100 * atol  # experts really differ
    whole = load_expert(path)
    assert whole.num_experts == 3 and _same_weights(model, whole)
    with pytest.raises(ValueError, match=r"no expert 'cow'.*\['cat', 'dog', 'tree'\]"):
        load_expert(path, expert="cow")
    single = save_expert(_model(), tmp_path / "single.keras", _metadata(_model()))
    with pytest.raises(ValueError, match="needs a packed adapter archive.*'feature_vector'"):
        load_expert(single, expert="cat")


def test_replace_metadata_keeps_the_model_bytes(tmp_path):
    model = _model()
    path = save_expert(model, tmp_path / "e.keras", _metadata(model))
    with zipfile.ZipFile(path) as z:
        before = {n: z.read(n) for n in z.namelist() if n != expert_archive.METADATA_MEMBER}
    new = _metadata(model, version=3)
    expert_archive.replace_metadata(path, new)
    with zipfile.ZipFile(path) as z:
        after = {n: z.read(n) for n in z.namelist() if n != expert_archive.METADATA_MEMBER}
        assert json.loads(z.read(expert_archive.METADATA_MEMBER)) == new
    assert before == after
    assert load_expert(path).metadata == new
    with pytest.raises(ValueError, match=r"missing \['resolution'\]"):
        expert_archive.replace_metadata(path, {k: v for k, v in new.items() if k != "resolution"})


def test_save_refuses_bad_input_and_writes_nothing(tmp_path):
    model = _model()
    good = _metadata(model)
    cases = [
        (lambda: save_expert(model, tmp_path / "e.h5", good), "must end in .keras"),
        (lambda: save_expert(object(), tmp_path / "e.keras", good), "needs a BiTResNetV2"),
        (
            lambda: save_expert(model, tmp_path / "e.keras", {"name": "x"}),
            r"missing \['kind', 'role'",
        ),
        (
            lambda: save_expert(model, tmp_path / "e.keras", dict(good, feature_dim=7)),
            "feature_dim 7 differs from the model's 256",
        ),
        (
            lambda: save_expert(model, tmp_path / "e.keras", dict(good, role="packed")),
            r"needs a model with adapter experts.*\(0\), got \[\]",
        ),
        (
            lambda: save_expert(
                _model(num_experts=2), tmp_path / "e.keras", dict(good, role="packed", experts=[])
            ),
            r"one uniquely named entry per expert \(2\), got \[\]",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError):  # not JSON: refused before anything is written
        save_expert(model, tmp_path / "e.keras", dict(good, extra=object()))
    assert os.listdir(tmp_path) == []


def test_load_names_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a .keras file nor a module folder"):
        load_expert(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"is no module folder \(no saved_model.pb\)"):
        load_expert(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"")  # a module, as far as paths go
    with pytest.raises(FileNotFoundError, match="has no Keras archive"):
        load_expert(tmp_path / "m")
    (tmp_path / "text.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="not a .keras archive"):
        load_expert(tmp_path / "text.keras")
    model = _model()
    model.save(tmp_path / "plain.keras")  # a Keras archive without our metadata
    with pytest.raises(ValueError, match="not an expert archive"):
        load_expert(tmp_path / "plain.keras")
