"""The Keras 3 archive beside each module: same function as the SavedModel, on the TF and JAX backends."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tolerances import model_atol, network_atol

from bit_experts import expert_archive
from bit_experts.expert_archive import load_expert
from bit_experts.presets import create_model
from hub_export import expert_modules, keras_artifact
from hub_export.module import read_metadata, save_module

LABELS = ["animal", "plant", "cat"]
EXPERTS = [{"name": "cat", "expert_id": 0, "slice": "cat"}, {"name": "plant", "expert_id": 1}]
SIZE = 16  # small and fast: the r14_micro network maps it to a 1x1 final feature map.


def _images(n=4, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """A work directory with one 2-expert adapter model, exported as `hub_export.publish` does:
    `{name: module folder}` for the standalone expert `adapters_plant` and the packed `adapters`."""
    root = tmp_path_factory.mktemp("keras_artifact")
    work = root / "work"
    folder = work / "models" / "adapters"
    folder.mkdir(parents=True)
    (work / "label_names.json").write_text(json.dumps(LABELS))
    domains = [{"name": n, "label_prior": [1 / 3] * 3} for n in ("cat", "plant")]
    (work / "expert_domains.json").write_text(json.dumps(domains))
    model = create_model("r14_micro", len(LABELS), num_experts=2)
    rng = np.random.default_rng(3)
    for w in model.weights:  # adapters' last convs and the head start at zero: perturb everything
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    model.save(folder / "model.keras")
    info = {"name": "adapters", "kind": "adapter", "preset": "r14_micro", "resolution": SIZE}
    info.update(upstream_dataset="test", num_classes=len(LABELS), experts=EXPERTS)
    (folder / "info.json").write_text(json.dumps(info))
    planned, _ = expert_modules.plan_workdir(work)
    out = {}
    for p in planned:
        if p.name in ("adapters_plant", "adapters"):
            module, metadata = p.make()
            module_dir = root / "modules" / p.name
            save_module(module, module_dir, metadata)
            keras_artifact.write_keras_artifact(module, module_dir, metadata)  # as publish does
            out[p.name] = module_dir
    return out, model


def test_archive_computes_the_saved_models_features(modules):
    import tensorflow_hub as hub

    dirs, source = modules
    module_dir = dirs["adapters_plant"]
    expert = load_expert(module_dir)
    assert expert.num_experts == 1 and expert.head is None
    assert expert.metadata == read_metadata(module_dir)  # the module's metadata, on the object
    saved = hub.load(str(module_dir))
    for size in (SIZE, 24):
        x = _images(size=size)
        want = saved(tf.constant(x)).numpy()
        # SavedModel graph against Keras eager: the same float32 maths summed in other orders;
        # network bound of tests/tolerances.py. A wrong expert or lost weight moves O(1).
        atol = model_atol(expert, x, want)
        np.testing.assert_allclose(np.asarray(expert(x)), want, rtol=0, atol=atol)
        other = source.features(x, expert_ids=0).numpy()  # the packed model's other expert
        assert np.abs(other - want).max() > 100 * atol


def test_packed_archive_gives_each_expert_by_name(modules):
    import tensorflow_hub as hub

    dirs, _ = modules
    packed = hub.load(str(dirs["adapters"]))
    x = _images()
    for name, module in (("cat", "adapters_cat"), ("plant", "adapters_plant")):
        expert = load_expert(dirs["adapters"], expert=name)
        want = packed.experts[name](tf.constant(x)).numpy()
        atol = model_atol(expert, x, want)  # as above
        np.testing.assert_allclose(np.asarray(expert(x)), want, rtol=0, atol=atol)
        assert expert.num_experts == 1
        assert expert.metadata["name"] == module and expert.metadata["expert"] == name
        assert expert.metadata["role"] == "feature_vector" and "experts" not in expert.metadata
    plant = load_expert(dirs["adapters_plant"])
    picked = load_expert(dirs["adapters"], expert="plant")
    assert all(np.array_equal(a, b) for a, b in zip(plant.get_weights(), picked.get_weights()))
    whole = load_expert(dirs["adapters"])
    assert whole.num_experts == 2 and whole.metadata["role"] == "packed"
    with pytest.raises(ValueError, match=r"no expert 'dog'.*\['cat', 'plant'\]"):
        load_expert(dirs["adapters"], expert="dog")


def test_new_version_rewrites_the_archive_metadata_only(modules, tmp_path):
    dirs, _ = modules
    module_dir = tmp_path / "m"
    os.makedirs(module_dir / "keras")
    path = keras_artifact.keras_archive_path(module_dir)
    with open(keras_artifact.keras_archive_path(dirs["adapters_plant"]), "rb") as f:
        pathlib.Path(path).write_bytes(f.read())
    before = load_expert(path)
    metadata = dict(before.metadata, version=7)
    assert keras_artifact.update_keras_metadata(module_dir, metadata) == path
    after = load_expert(module_dir)
    assert after.metadata == metadata
    assert all(np.array_equal(a, b) for a, b in zip(before.get_weights(), after.get_weights()))
    assert keras_artifact.update_keras_metadata(tmp_path / "none", metadata) is None


def test_write_refuses_what_is_not_a_saved_module(modules, tmp_path):
    dirs, source = modules
    metadata = read_metadata(dirs["adapters"])
    with pytest.raises(ValueError, match="needs a HubModule or PackedAdapterModule, got BiTRes"):
        keras_artifact.write_keras_artifact(source, dirs["adapters"], metadata)

    class Held:
        _model = source

    with pytest.raises(ValueError, match="no saved_model.pb"):
        keras_artifact.write_keras_artifact(Held(), tmp_path, metadata)
    assert not os.listdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="is no module folder .no saved_model.pb."):
        load_expert(tmp_path)  # no module folder at all
    shutil.copytree(dirs["adapters_plant"], tmp_path / "m", ignore=shutil.ignore_patterns("keras"))
    with pytest.raises(FileNotFoundError, match="has no Keras archive"):
        load_expert(tmp_path / "m")  # a module without its archive


def _run_backend(backend, module_dir, images, tmp):
    (tmp / backend).mkdir()  # each process saves its models into its own folder
    out = tmp / backend / "results.npz"
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    if backend == "jax":
        # LLVM -O0 for XLA's CPU code: compiles about twice as fast (the test compiles ~80 small
        # programs, mostly weight initialisers) and keeps IEEE float semantics (no fast-math).
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    script = pathlib.Path(__file__).with_name("keras_backend_run.py")
    return out, subprocess.Popen(
        [sys.executable, str(script), str(module_dir), str(images), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_fine_tunes_saves_and_reloads_on_tensorflow_and_jax(modules, tmp_path):
    """Done-when of issue 14: a published expert loads, trains with `fit`, saves and reloads under
    both backends, with the same features. The script imports `bit_experts.load_expert` from the
    package root (which pytest's `pythonpath = tests` shadows in this process)."""
    pytest.importorskip("jax")
    import tensorflow_hub as hub

    dirs, _ = modules
    x = _images()
    np.save(tmp_path / "images.npy", x)
    runs = {
        b: _run_backend(b, dirs["adapters_plant"], tmp_path / "images.npy", tmp_path)
        for b in ("tensorflow", "jax")
    }
    results = {}
    for backend, (out, process) in runs.items():
        log, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"{backend}:\n{log[-3000:]}"
        results[backend] = np.load(out)
    saved = hub.load(str(dirs["adapters_plant"]))(tf.constant(x)).numpy()
    expert = load_expert(dirs["adapters_plant"])
    kernels = [w.shape for w in expert.weights if w.path.endswith("kernel")]
    # XLA (JAX) and oneDNN (TensorFlow) evaluate the same float32 maths in other summation orders:
    # two evaluations of a network of 50 reductions of at most 576 terms (tests/tolerances.py):
    # 2 * 50 * sqrt(576) * 2**-24 = 1.4e-4 x max|features| (features here reach ~3.5, so ~5e-4;
    # measured: 1.4e-5). A wrong expert, lost weight or a step of fine-tuning moves them O(1).
    atol = network_atol(kernels, x.shape, saved)
    for backend, r in results.items():
        assert str(r["backend"]) == backend
        np.testing.assert_allclose(r["features"], saved, rtol=0, atol=atol, err_msg=backend)
        assert np.all(np.isfinite(r["loss"])), backend
        assert r["moved"].all(), f"{backend}: fit left some expert weights unchanged"
        assert r["model_reload_exact"] and r["expert_reload_exact"] and r["metadata_kept"], backend
        # Fine-tuning moved the features far beyond rounding.
        assert np.abs(r["finetuned_features"] - r["features"]).max() > 100 * atol, backend
    np.testing.assert_allclose(
        results["jax"]["features"], results["tensorflow"]["features"], rtol=0, atol=atol
    )


def test_archive_path_is_inside_the_module_folder():
    assert keras_artifact.keras_archive_path("M") == os.path.join("M", "keras", "expert.keras")
    assert expert_archive.ARCHIVE_PATH == os.path.join("keras", "expert.keras")
