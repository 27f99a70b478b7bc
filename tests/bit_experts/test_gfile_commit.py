"""Work directories and the feature cache on a `tf.io.gfile` filesystem without atomic rename.

Everything here runs on TensorFlow's in-memory `ram://` filesystem with every rename forbidden
(`os.replace`, `os.rename`, `tf.io.gfile.rename` raise), as on an object store, where a rename is a
copy. Each unit is committed by the file written last (docs/workdir.md); the failure-injection
tests stop a writer between its data and its commit and check that a rerun redoes that piece and
nothing else.
"""

import os
import uuid

import gfile_double
import numpy as np
import pytest
import tensorflow as tf
from gfile_double import Killed

from bit_experts import atomic_files
from bit_experts.training import checkpointing, outputs
from vtab_eval import feature_cache
from vtab_eval.feature_cache import FeatureCache

no_rename, ram_root = gfile_double.no_rename, gfile_double.ram_root  # fixtures


# --- atomic_files -------------------------------------------------------------------------------


def test_url_detection():
    for url in ("gs://bucket/x", "ram://a", "s3://b/c", "hdfs://h/p"):
        assert atomic_files.is_url(url)
    for path in ("/tmp/x", "relative/x", "C:\\x", "a:b", "file:///tmp/x", "FILE://localhost/x"):
        assert not atomic_files.is_url(path)


def test_single_files_and_markers_on_ram_without_rename(ram_root, no_rename):
    path = atomic_files.write_json(f"{ram_root}/sub/manifest.json", {"a": 1})
    assert path == f"{ram_root}/sub/manifest.json"
    assert atomic_files.read_bytes(path) == b'{\n  "a": 1\n}\n'
    atomic_files.write_text(path, "{}\n")  # an overwrite replaces the object
    assert atomic_files.read_bytes(path) == b"{}\n"
    assert atomic_files.listdir(ram_root) == ["sub"]
    assert atomic_files.isdir(f"{ram_root}/sub") and atomic_files.isfile(path)
    assert not atomic_files.is_committed(f"{ram_root}/sub")
    atomic_files.write_marker(f"{ram_root}/sub", {"step": 3})
    assert atomic_files.is_committed(f"{ram_root}/sub")
    atomic_files.remove_unit(f"{ram_root}/sub")
    assert not atomic_files.exists(f"{ram_root}/sub")


def test_failed_write_to_a_url_leaves_the_old_file(ram_root, no_rename):
    path = atomic_files.write_bytes(f"{ram_root}/x.bin", b"old")

    def killed(f):
        f.write(b"new, half")
        raise Killed

    with pytest.raises(Killed):
        atomic_files.write_atomic(path, killed)
    assert atomic_files.read_bytes(path) == b"old"


# --- feature cache ------------------------------------------------------------------------------

META = {"handle": "experts/a", "task": "t", "split": "train", "resolution": 8}


def _features(key):
    seed = int.from_bytes(key.encode("utf-8")[-4:], "big")
    rng = np.random.default_rng(seed)
    return rng.normal(size=(5, 3)).astype(np.float32), rng.integers(0, 3, size=5)


def _fill(cache, keys):
    """What vtab_eval.embed does per key: use a committed entry, else compute and store it."""
    computed = []
    for key in keys:
        if cache.get(key) is None:
            computed.append(key)
            cache.put(key, *_features(key), META)
    return computed


def test_feature_cache_round_trip_on_ram_without_rename(ram_root, no_rename):
    cache = FeatureCache(f"{ram_root}/cache")
    keys = [FeatureCache.key(f"module{i}", "fp", "train", 8) for i in range(3)]
    assert _fill(cache, keys) == keys
    assert _fill(cache, keys) == []  # every entry committed: nothing recomputed
    for key in keys:
        features, labels = cache.get(key)
        np.testing.assert_array_equal(features, _features(key)[0])
        np.testing.assert_array_equal(labels, _features(key)[1])
        assert cache.metadata(key)["shape"] == [5, 3]
    assert sorted(tf.io.gfile.listdir(f"{ram_root}/cache")) == sorted(
        [f"{k}.npz" for k in keys] + [f"{k}.json" for k in keys]
    )


@pytest.mark.parametrize("where", ["local", "ram"])
def test_feature_cache_rerun_after_a_kill_between_data_and_commit_redoes_only_that_entry(
    where, tmp_path, ram_root, monkeypatch, request
):
    if where == "ram":
        request.getfixturevalue("no_rename")
    root = f"{ram_root}/cache" if where == "ram" else str(tmp_path / "local-cache")
    cache = FeatureCache(root)
    keys = [FeatureCache.key(f"module{i}", "fp", "train", 8) for i in range(3)]
    victim = keys[1]
    real_write = atomic_files.write_atomic  # what FeatureCache.put writes each file with

    def killed_before_commit(path, write, *args, **kwargs):
        if path.endswith(f"{victim}.json"):
            raise Killed  # the .npz is written, its sidecar (the commit) is not
        return real_write(path, write, *args, **kwargs)

    monkeypatch.setattr(atomic_files, "write_atomic", killed_before_commit)
    with pytest.raises(Killed):
        _fill(cache, keys)
    assert atomic_files.exists(os.path.join(root, f"{victim}.npz"))
    monkeypatch.setattr(atomic_files, "write_atomic", real_write)
    assert cache.get(victim) is None  # data without its commit is not trusted
    assert _fill(cache, keys) == [victim, keys[2]]  # keys[2] was never reached
    assert _fill(cache, keys) == []
    if where == "local":
        import shutil

        shutil.rmtree(tmp_path / "local-cache")  # ram_root checks the working folder is empty


def test_feature_cache_entry_whose_data_disagrees_with_its_commit_is_recomputed(
    ram_root, no_rename
):
    cache = FeatureCache(f"{ram_root}/cache")
    key = FeatureCache.key("m", "fp", "train", 8)
    cache.put(key, *_features(key), META)
    # another writer's (or a torn) .npz of another shape under the committed sidecar
    atomic_files.write_atomic(
        f"{ram_root}/cache/{key}.npz",
        lambda f: np.savez(f, features=np.zeros((2, 3), np.float32), labels=np.zeros(2, np.int64)),
    )
    with pytest.warns(feature_cache.CorruptCacheEntryWarning, match="sidecar says"):
        assert cache.get(key) is None


# --- training outputs ---------------------------------------------------------------------------


def _tiny_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


INFO = {k: None for k in outputs.INFO_KEYS}


def test_model_folder_on_ram_is_committed_by_info_json(ram_root, no_rename, monkeypatch):
    workdir = f"{ram_root}/workdir"
    model = _tiny_model(0)
    real_write_json = outputs.write_json

    def killed(path, data):
        raise Killed

    monkeypatch.setattr(outputs, "write_json", killed)
    with pytest.raises(Killed):
        outputs.save_model(workdir, model, dict(INFO, name="baseline"))
    assert atomic_files.isfile(f"{workdir}/models/baseline/{outputs.MODEL_FILE}")
    assert not outputs.model_exists(workdir, "baseline")  # the model file alone is not a model
    with pytest.raises(FileNotFoundError):
        outputs.load_model(workdir, "baseline")
    monkeypatch.setattr(outputs, "write_json", real_write_json)
    outputs.save_model(workdir, model, dict(INFO, name="baseline"))
    assert outputs.model_exists(workdir, "baseline")
    loaded = outputs.load_model(workdir, "baseline")
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = _tiny_model(1)
    outputs.save_model(workdir, other, dict(INFO, name="baseline"))  # complete: kept
    np.testing.assert_array_equal(
        outputs.load_model(workdir, "baseline").get_weights()[0], model.get_weights()[0]
    )


# --- checkpoints --------------------------------------------------------------------------------


def test_checkpoints_on_ram_commit_by_marker_and_a_rerun_redoes_only_the_killed_step(
    ram_root, no_rename, monkeypatch
):
    directory = f"{ram_root}/workdir/checkpoints"
    variable = tf.Variable(0.0)
    saver = checkpointing.AtomicCheckpointer(directory, tf.train.Checkpoint(v=variable), keep=2)
    for step in (1, 2, 3):
        variable.assign(float(step))
        saver.save(step)
    assert saver.steps() == [2, 3]  # the oldest dropped
    real_marker = atomic_files.write_marker

    def killed(*args, **kwargs):
        raise Killed

    variable.assign(4.0)
    monkeypatch.setattr(atomic_files, "write_marker", killed)
    with pytest.raises(Killed):
        saver.save(4)
    monkeypatch.setattr(atomic_files, "write_marker", real_marker)
    assert tf.io.gfile.exists(saver.path(4))  # written, not committed
    resumed = checkpointing.AtomicCheckpointer(directory, tf.train.Checkpoint(v=variable), keep=2)
    assert resumed.steps() == [2, 3]
    assert resumed.restore_latest() == 3 and float(variable.numpy()) == 3.0
    variable.assign(4.0)
    resumed.save(4)  # the uncommitted folder of step 4 is rewritten
    assert resumed.steps() == [3, 4]
    variable.assign(0.0)
    assert resumed.restore_latest() == 4 and float(variable.numpy()) == 4.0


# --- URL detection: file://, scheme roots, unknown schemes (review of issue 13, section 4) -------


def test_file_urls_are_local_paths_and_keep_the_rename_protocol(tmp_path, monkeypatch):
    """Before, `file://` went through GFile, which truncates in place: a write killed half-way left
    a torn file, and a local checkpoint (no marker) was invisible through file://."""
    url = f"file://{tmp_path}/x.json"
    assert not atomic_files.is_url(url)
    assert atomic_files.abspath(url) == f"{tmp_path}/x.json"
    assert atomic_files.abspath(f"file://localhost{tmp_path}") == str(tmp_path)
    atomic_files.write_bytes(url, b"old")

    def killed(f):
        f.write(b"new, half")
        raise Killed

    with pytest.raises(Killed):
        atomic_files.write_atomic(url, killed)
    assert (tmp_path / "x.json").read_bytes() == b"old"
    variable = tf.Variable(1.0)
    checkpointing.AtomicCheckpointer(str(tmp_path / "ckpt"), tf.train.Checkpoint(v=variable)).save(
        1
    )
    through_url = checkpointing.AtomicCheckpointer(
        f"file://{tmp_path}/ckpt", tf.train.Checkpoint(v=variable)
    )
    assert through_url.steps() == [1]
    with pytest.raises(
        ValueError, match="'file://rel/x': a file:// URL must name an absolute path"
    ):
        atomic_files.write_bytes("file://rel/x", b"")


def test_a_write_at_a_scheme_root_leaves_no_local_folder(tmp_path, monkeypatch):
    """Before, `os.path.dirname("ram://x.json")` (`ram:`) was made with gfile.makedirs: locally."""
    monkeypatch.chdir(tmp_path)
    path = f"ram://root-file-{uuid.uuid4().hex}.json"
    try:
        atomic_files.write_json(path, {"a": 1})
        atomic_files.upload_file(atomic_files.write_bytes(str(tmp_path / "src"), b"x"), path)
        atomic_files.makedirs("ram://")
        assert atomic_files.read_bytes(path) == b"x"
    finally:
        tf.io.gfile.remove(path)
    assert os.listdir(tmp_path) == ["src"]


@pytest.mark.parametrize("url", ["mylocal://x/y.json", "GS://bucket/y.json"])
def test_a_scheme_without_a_filesystem_is_one_line_naming_the_path(url, tmp_path, monkeypatch):
    """Before: a multi-line tf.errors.UnimplementedError, after making `./mylocal:` locally."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as caught:
        atomic_files.write_json(url, {})
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{url!r}: no tf.io.gfile filesystem")
    if url.startswith("GS"):
        assert "case-sensitive: gs://" in message
    for helper in (atomic_files.abspath, atomic_files.exists, atomic_files.makedirs):
        with pytest.raises(ValueError, match="no tf.io.gfile filesystem"):
            helper(url)
    assert os.listdir(tmp_path) == []
