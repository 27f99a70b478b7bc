"""Publishing a training work directory (built here per docs/workdir.md) as a collection."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tolerances import model_atol

from bit_experts import locks
from bit_experts.presets import create_model
from hub_export import collection, collection_lock, identity, publish
from hub_export.module import read_metadata

LABELS = ["entity", "animal", "plant", "cat", "dog", "tree"]
DOMAINS = ["animal", "plant", "cat"]
RESOLUTION = 32


def _perturb(model, seed, scale=0.05):
    """Random non-zero weights everywhere (heads and adapters start at zero)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(w.numpy() + rng.normal(0, scale, w.shape).astype("float32"))
    return model


def _save_model(workdir, name, model, info):
    folder = workdir / "models" / name
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    base = {
        "name": name,
        "preset": "r14_micro",
        "resolution": RESOLUTION,
        "upstream_dataset": "test_world",
        "num_classes": model.num_classes,
        "steps": 3,
        "slice": None,
        "image_count": 120,
    }
    (folder / "info.json").write_text(json.dumps({**base, **info}))


def make_workdir(root):
    """A work directory with a baseline, one full expert, two adapter experts and an EPN."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "label_names.json").write_text(json.dumps(LABELS))
    rng = np.random.default_rng(0)
    domains = []
    for i, name in enumerate(DOMAINS):
        prior = rng.uniform(0.1, 1, len(LABELS))
        domains.append(
            {
                "name": name,
                "image_count": 40 + i,
                "parents": ["entity"],
                "control_of": None,
                "label_prior": (prior / prior.sum()).tolist(),
                "image_indices": {"file": "expert_domains.indices.npz", "key": f"d{i}"},
            }
        )
    (root / "expert_domains.json").write_text(json.dumps(domains))
    _save_model(
        root, "baseline", _perturb(create_model("r14_micro", len(LABELS)), 1), {"kind": "baseline"}
    )
    _save_model(
        root,
        "expert_animal",
        _perturb(create_model("r14_micro", len(LABELS)), 2),
        {"kind": "full", "slice": "animal", "image_count": 40},
    )
    experts = [
        {"name": "plant", "expert_id": 1, "slice": "plant", "image_count": 41},
        {"name": "cat", "expert_id": 0, "slice": "cat", "image_count": 42},
    ]
    _save_model(
        root,
        "adapters",
        _perturb(create_model("r14_micro", len(LABELS), num_experts=2), 3),
        {"kind": "adapter", "experts": experts},
    )
    _save_model(
        root,
        "epn",
        _perturb(create_model("r14_micro", len(DOMAINS)), 4),
        {"kind": "epn", "experts": DOMAINS},
    )
    return root


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    # Validation is covered by test_validate.py and test_command_line; skipping it here halves the
    # fixture's time.
    tmp = tmp_path_factory.mktemp("publish")
    workdir = make_workdir(tmp / "work")
    out = tmp / "collection"
    written = publish.publish([str(workdir)], str(out), validate_modules=False, log=lambda *_: None)
    return workdir, out, written


def _images(size, n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype("float32")


def _keras(workdir, name):
    import keras

    return keras.models.load_model(workdir / "models" / name / "model.keras", compile=False)


EXPECTED = {  # in collection order: baseline, full experts, adapter models, EPN
    "baseline": "feature_vector",
    "baseline_classifier": "classifier",
    "expert_animal": "feature_vector",
    "adapters_cat": "feature_vector",
    "adapters_plant": "feature_vector",
    "adapters": "packed",
    "epn": "epn",
}


def test_collection_layout_manifest_and_pages(published):
    _, out, written = published
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["name"], e["role"]) for e in manifest["modules"]] == list(EXPECTED.items())
    for e in manifest["modules"]:
        assert e["version"] == 1 and e["path"] == f"{e['name']}/1"
        assert (out / e["name"] / "1" / "saved_model.pb").is_file()
        assert read_metadata(out / e["path"]) == e["metadata"]
        assert e["validation"] is None  # skipped in this fixture
        doc = (out / e["doc"]).read_text()
        assert doc.startswith(f"# Module bit-experts/{e['name']}/1\n")
        assert "hub.KerasLayer(" in doc or e["role"] == "packed"
    meta = {e["name"]: e["metadata"] for e in manifest["modules"]}
    assert meta["expert_animal"]["kind"] == "full" and meta["expert_animal"]["slice"] == "animal"
    assert meta["adapters_cat"]["kind"] == "adapter" and meta["adapters_cat"]["expert_id"] == 0
    assert meta["adapters_plant"]["image_count"] == 41
    assert meta["baseline"]["feature_dim"] == 256 and meta["baseline"]["input_range"] == [0.0, 1.0]
    assert meta["baseline_classifier"]["output_dim"] == len(LABELS)
    assert meta["epn"]["outputs"] == DOMAINS
    assert [m["name"] for m in meta["adapters"]["experts"]] == ["cat", "plant"]
    page = (out / "README.md").read_text()
    assert page.startswith("# Collection bit-experts/collection/1")
    assert all(f"bit-experts/{name}/1" in page for name in EXPECTED)
    assert [w["name"] for w in written] == [e["name"] for e in manifest["modules"]]


def test_features_equal_the_keras_models(published):
    import tensorflow_hub as hub

    workdir, out, _ = published
    cases = [  # module, Keras model, expert id, output
        ("baseline", "baseline", None, "features"),
        ("baseline_classifier", "baseline", None, "logits"),
        ("expert_animal", "expert_animal", None, "features"),
        ("adapters_cat", "adapters", 0, "features"),
        ("adapters_plant", "adapters", 1, "features"),
        ("epn", "epn", None, "logits"),
    ]
    models = {
        name: _keras(workdir, name) for name in ("baseline", "expert_animal", "adapters", "epn")
    }
    for module_name, model_name, expert, output in cases:
        module = hub.load(str(out / module_name / "1"))
        model = models[model_name]
        for size in (RESOLUTION, 40):
            x = _images(size)
            expected = (model.features(x, expert) if output == "features" else model(x)).numpy()
            got = module(tf.constant(x)).numpy()
            # SavedModel graph against Keras eager: oneDNN may add in another order. Float32
            # bound of the network (tests/tolerances.py) in place of a fixed rtol=atol=1e-5;
            # a wrong expert, head or lost weight changes outputs by O(1).
            atol = model_atol(model, x, expected)
            np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=module_name)
    packed = hub.load(str(out / "adapters" / "1"))
    x = _images(RESOLUTION)
    for expert_id, name in enumerate(["cat", "plant"]):
        expected = models["adapters"].features(x, expert_ids=expert_id).numpy()
        atol = model_atol(models["adapters"], x, expected)  # as above; was a fixed 1e-5
        np.testing.assert_allclose(packed.experts[name](x).numpy(), expected, rtol=0, atol=atol)
        got = packed.call_expert(x, expert_id, training=True).numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    gap = np.abs(packed.experts["cat"](x).numpy() - packed.experts["plant"](x).numpy())
    assert gap.max() > 100 * atol  # the two experts differ far beyond the bound
    assert [n.decode() for n in packed.get_expert_names().numpy()] == ["cat", "plant"]
    served = packed.signatures["serving_default"](images=tf.constant(x), expert_id=tf.constant(1))
    np.testing.assert_allclose(served["feature_vector"].numpy(), expected, rtol=0, atol=atol)


def test_standalone_adapter_module_holds_only_its_expert(published):
    import tensorflow_hub as hub

    _, out, _ = published
    single = hub.load(str(out / "adapters_plant" / "1"))
    packed = hub.load(str(out / "adapters" / "1"))
    adapter_shapes = [v.shape for v in single.variables if "adapter" in v.name]
    assert adapter_shapes and all(s[0] == 1 for s in adapter_shapes)
    assert all(v.shape[0] == 2 for v in packed.variables if "adapter" in v.name)
    # No head in a feature vector: every variable is used, so fine-tuning reaches all of them.
    assert len(single.trainable_variables) == len(single.variables)
    assert not any("head" in v.name for v in single.variables)


def test_fine_tunes_through_hub_keras_layer_in_tf_keras(published):
    import tensorflow_hub as hub
    import tf_keras

    _, out, _ = published
    layer = hub.KerasLayer(str(out / "adapters_cat" / "1"), trainable=True)
    model = tf_keras.Sequential([layer, tf_keras.layers.Dense(2)])
    model.build((None, RESOLUTION, RESOLUTION, 3))
    model.compile(
        tf_keras.optimizers.SGD(0.05),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [w.numpy().copy() for w in layer.trainable_weights]
    history = model.fit(_images(RESOLUTION, 4), np.array([0, 1, 0, 1]), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
    assert sum(changed) > len(changed) // 2
    adapters = [c for c, w in zip(changed, layer.trainable_weights) if "adapter" in w.name]
    assert adapters and all(adapters)


def test_fine_tunes_through_tfsm_layer_in_keras3(published):
    import keras

    _, out, _ = published
    layer = keras.layers.TFSMLayer(str(out / "expert_animal" / "1"), call_endpoint="__call__")
    inputs = keras.Input((RESOLUTION, RESOLUTION, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in layer.trainable_weights]
    assert before
    history = model.fit(_images(RESOLUTION, 4), np.array([0, 1, 0, 1]), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
    assert sum(changed) > len(changed) // 2


def test_pool_priors_and_label_names(published):
    workdir, out, _ = published
    pool = collection.resolve_pool(str(out))
    assert [e.name for e in pool] == list(EXPECTED)
    assert [e.name for e in collection.feature_extractors(pool)] == [
        "baseline",
        "expert_animal",
        "adapters_cat",
        "adapters_plant",
    ]
    assert collection.find(pool, role="classifier", name="baseline_classifier").kind == "baseline"
    assert collection.find(pool, role="epn").name == "epn"
    assert collection.find(pool, role="classifier", name="nope") is None
    assert all(e.sha256 == collection.handles.module_sha256(e.path) for e in pool)
    assert collection.label_names(out) == LABELS
    domains = {
        d["name"]: d["label_prior"]
        for d in json.loads((workdir / "expert_domains.json").read_text())
    }
    priors = collection.label_priors(out / "manifest.json")
    assert sorted(priors) == ["adapters_cat", "adapters_plant", "expert_animal"]
    # Priors are counts / total, at most one float32 rounding (6e-8 relative) away: rtol 1e-6 is
    # 16x that; another expert's prior differs in whole entries.
    np.testing.assert_allclose(priors["adapters_plant"], domains["plant"], rtol=1e-6)
    np.testing.assert_allclose(priors["expert_animal"], domains["animal"], rtol=1e-6)


def test_versions_refusal_overwrite_and_additions(published, tmp_path):
    import shutil

    workdir, out, _ = published
    target = tmp_path / "c"
    shutil.copytree(out, target)
    quiet = dict(validate_modules=False, log=lambda *_: None)
    # The same source is skipped, at its version or the next; another source at a listed version
    # is refused before anything is written.
    assert publish.publish([str(workdir)], str(target), version=1, only=["epn"], **quiet) == []
    assert publish.publish([str(workdir)], str(target), only=["epn"], **quiet) == []
    manifest = json.loads((target / "manifest.json").read_text())
    next(e for e in manifest["modules"] if e["name"] == "epn")["source_fingerprint"] = "elsewhere"
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileExistsError, match="'epn' version 1 is already"):
        publish.publish([str(workdir)], str(target), version=1, only=["epn"])
    old_sha = {e.name: e.sha256 for e in collection.resolve_pool(target)}
    old_identity = {e.name: identity.module_identity(e) for e in collection.resolve_pool(target)}
    written = publish.publish([str(workdir)], str(target), only=["epn"], **quiet)
    assert [(w["name"], w["version"]) for w in written] == [("epn", 2)]
    pool = collection.resolve_pool(target)
    assert collection.find(pool, "epn").version == 2 and len(pool) == len(EXPECTED)
    assert len(collection.resolve_pool(target, all_versions=True)) == len(EXPECTED) + 1
    (target / "baseline" / "1" / "stale_file").write_text("x")  # replaced by overwrite
    publish.publish(
        [str(workdir)], str(target), version=1, overwrite=True, only=["baseline"], **quiet
    )
    pool = collection.resolve_pool(target)  # verifies every checksum
    assert not (target / "baseline" / "1" / "stale_file").exists()
    baseline = collection.find(pool, "feature_vector", "baseline")
    assert baseline.version == 1 and baseline.sha256 != old_sha["baseline"]
    # The same weights exported again: new SavedModel bytes, the same identity for caches.
    assert identity.module_identity(baseline) == old_identity["baseline"]
    assert identity.module_identity(baseline.path) == baseline.metadata["weights_fingerprint"]
    epn = collection.find(pool, "epn")
    assert identity.module_identity(epn) == old_identity["epn"] and epn.sha256 != old_sha["epn"]
    assert (
        collection.find(pool, "feature_vector", "expert_animal").sha256 == old_sha["expert_animal"]
    )
    assert collection.label_priors(target).keys() == {
        "adapters_cat",
        "adapters_plant",
        "expert_animal",
    }
    assert not [f for f in os.listdir(target) if f.startswith(".")]  # no staging left behind


def test_killed_or_failed_publish_lists_only_complete_modules(published, tmp_path, monkeypatch):
    from hub_export import validate

    workdir, _, _ = published
    calls = []

    def fail_on_epn(module_dir, role, **kwargs):
        calls.append(role)
        if role == "epn":
            raise KeyboardInterrupt  # as if the process were killed mid-publish
        return {"resolutions": [], "output_dim": kwargs["output_dim"]}

    monkeypatch.setattr(validate, "validate_module", fail_on_epn)
    out = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        publish.publish([str(workdir)], str(out), only=["baseline", "epn"], log=lambda *_: None)
    assert calls == ["feature_vector", "epn"]  # every module is validated before it is listed
    pool = collection.resolve_pool(out)
    assert [e.name for e in pool] == ["baseline"]
    assert not (out / "epn").exists()
    assert not [f for f in os.listdir(out) if f.startswith(".")]


def test_publish_rejects_bad_work_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        publish.publish([str(tmp_path / "missing")], str(tmp_path / "c"))
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "label_names.json").write_text(json.dumps(LABELS))
    (workdir / "expert_domains.json").write_text("[]")
    folder = workdir / "models" / "expert_x"
    folder.mkdir(parents=True)
    (folder / "model.keras").write_text("not a model")
    (folder / "info.json").write_text(json.dumps({"name": "expert_x", "kind": "full"}))
    with pytest.raises(ValueError, match=r"info.json is missing \['preset'"):
        publish.publish([str(workdir)], str(tmp_path / "c"))
    info = {
        "name": "expert_x",
        "kind": "full",
        "preset": "r14_micro",
        "resolution": 32,
        "upstream_dataset": "w",
        "num_classes": 6,
        "slice": "nowhere",
    }
    (folder / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="slice 'nowhere', which is not in expert_domains.json"):
        publish.publish([str(workdir)], str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()  # nothing written before the plan is complete


def test_a_truncated_model_archive_is_named_as_such(published, tmp_path):
    from hub_export import expert_modules

    workdir, _, _ = published
    folder = tmp_path / "m"
    folder.mkdir()
    whole = (workdir / "models" / "baseline" / "model.keras").read_bytes()
    (folder / "model.keras").write_bytes(whole[:1000])  # cut off: no zip central directory
    with pytest.raises(ValueError, match=r"not a Keras archive .* 1000 bytes, truncated"):
        expert_modules.load_model(str(folder))


def test_command_line(published, tmp_path):
    workdir, _, _ = published
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "hub_export.publish", f"--workdir={workdir}"]
    cmd += [f"--collection_dir={out}", "--only=epn"]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "epn/1" in ok.stdout and [e.name for e in collection.resolve_pool(out)] == ["epn"]
    validation = json.loads((out / "manifest.json").read_text())["modules"][0]["validation"]
    assert validation["resolutions"] == [RESOLUTION, 16] and validation["output_dim"] == 3
    listed = (out / "manifest.json").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "wrote 0 modules" in again.stdout and "already listed" in again.stdout
    assert (out / "manifest.json").read_text() == listed  # a finished publish writes nothing
    manifest = json.loads(listed)
    manifest["modules"][0]["source_fingerprint"] = "another source"
    (out / "manifest.json").write_text(json.dumps(manifest))
    refused = subprocess.run(cmd + ["--version=1"], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "already in" in refused.stderr
    assert "Traceback" not in refused.stderr
    error = [line for line in refused.stderr.splitlines() if line.startswith("publish: error:")]
    assert len(error) == 1 and "already in" in error[0]


def test_rerun_removes_what_killed_publishers_left_and_keeps_the_live(published, tmp_path):
    import shutil
    import socket

    workdir, out, _ = published
    c = tmp_path / "c"
    shutil.copytree(out, c)
    before = (c / "manifest.json").read_text()
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_time": locks.process_start_time(os.getpid()),
    }
    leftovers = {  # path -> owner record (None: no OWNER file), or a file's bytes
        ".staging-dead": {**me, "pid": _dead_pid()},
        ".staging-noowner": None,
        ".manifest.json.k2j3.tmp": b"{",
        "label_priors-00000000.npz": b"old",
    }
    kept = {".staging-live": me, ".staging-elsewhere": {**me, "host": "other-host.example"}}
    for name, value in {**leftovers, **kept}.items():
        if isinstance(value, bytes):
            (c / name).write_bytes(value)
        else:
            (c / name).mkdir()
            if value is not None:
                (c / name / publish.OWNER_FILE).write_text(json.dumps(value))
    shutil.copytree(c / "epn" / "1", c / "epn" / "2")  # moved into place, never listed
    (c / "baseline" / ".old-x1y2").mkdir()  # an interrupted replacement
    (c / collection_lock.LOCK_FILE).write_text(json.dumps({**me, "pid": _dead_pid(), "token": "t"}))
    messages = []
    assert (
        publish.publish([str(workdir)], str(c), validate_modules=False, log=messages.append) == []
    )
    assert (c / "manifest.json").read_text() == before  # every module listed: nothing republished
    hidden = sorted(f for f in os.listdir(c) if f.startswith("."))
    assert hidden == sorted(kept)
    assert not (c / "epn" / "2").exists() and not (c / "label_priors-00000000.npz").exists()
    assert os.listdir(c / "baseline") == ["1"]
    assert any("removed epn/2" in m for m in messages)
    assert len(collection.resolve_pool(c, all_versions=True)) == len(EXPECTED)


def _dead_pid():
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_mixed_precision_needs_float32_layers_as_the_pages_say(published):
    import tensorflow_hub as hub
    import tf_keras

    _, out, _ = published
    module = str(out / "expert_animal" / "1")
    assert 'dtype="float32"' in (out / "expert_animal" / "1" / "doc.md").read_text()
    x, y = _images(RESOLUTION, 4), np.array([0, 1, 0, 1])
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        # Keras casts the images to float16, for which the module has no traced function.
        with pytest.raises(ValueError, match="concrete function"):
            hub.KerasLayer(module, trainable=True)(tf.constant(x))
        layer = hub.KerasLayer(module, trainable=True, dtype="float32")
        model = tf_keras.Sequential([layer, tf_keras.layers.Dense(2)])
        model.build((None, RESOLUTION, RESOLUTION, 3))
        assert model.layers[1].compute_dtype == "float16"  # the rest stays mixed
        model.compile(
            tf_keras.optimizers.SGD(0.05),
            tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        before = [w.numpy().copy() for w in layer.trainable_weights]
        history = model.fit(x, y, epochs=2, verbose=0)
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
    assert sum(changed) > len(changed) // 2


def test_adapter_module_names_and_source_fingerprints(tmp_path):
    from hub_export import expert_modules

    workdir = tmp_path / "w"
    (workdir / "models" / "adapters").mkdir(parents=True)
    (workdir / "label_names.json").write_text(json.dumps(LABELS))
    domains = [{"name": d, "label_prior": [1 / len(LABELS)] * len(LABELS)} for d in DOMAINS]
    (workdir / "expert_domains.json").write_text(json.dumps(domains))
    experts = [  # as the training job names them, and a plain name
        {"name": "adapter_cat", "expert_id": 0, "slice": "cat"},
        {"name": "plant", "expert_id": 1, "slice": "plant"},
    ]
    info = {
        "name": "adapters",
        "kind": "adapter",
        "preset": "r14_micro",
        "resolution": 32,
        "upstream_dataset": "w",
        "num_classes": len(LABELS),
        "experts": experts,
    }
    (workdir / "models" / "adapters" / "info.json").write_text(json.dumps(info))
    model_file = workdir / "models" / "adapters" / "model.keras"
    model_file.write_bytes(b"weights v1")  # planning reads the bytes, loading waits for make()
    planned, _ = expert_modules.plan_workdir(workdir)
    assert [p.name for p in planned] == ["adapter_cat", "adapters_plant", "adapters"]
    fingerprints = [p.source_fingerprint for p in planned]
    assert len(set(fingerprints)) == 3 and all(len(f) == 64 for f in fingerprints)
    again, _ = expert_modules.plan_workdir(workdir)
    assert [p.source_fingerprint for p in again] == fingerprints
    model_file.write_bytes(b"weights v2")
    changed, _ = expert_modules.plan_workdir(workdir)
    assert all(a.source_fingerprint != b for a, b in zip(changed, fingerprints))
