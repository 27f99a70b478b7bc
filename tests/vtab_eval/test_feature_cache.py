"""Feature cache: keys, atomic round trips, corrupted entries, sharding."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from vtab_eval import feature_cache
from vtab_eval.feature_cache import FeatureCache

METADATA = {
    "handle": "experts/animals",
    "module_checksum": "abc123",
    "task": "caltech101",
    "split": "train800val200",
    "resolution": 224,
}


def _entry(seed, n=6, d=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, 3, size=n)


def test_round_trip_with_sidecar(tmp_path):
    cache = FeatureCache(str(tmp_path / "cache"))
    key = cache.key("abc123", "caltech101", "train800val200", 224)
    assert cache.get(key) is None and not cache.contains(key)
    features, labels = _entry(0)
    cache.put(key, features, labels, METADATA)
    got_features, got_labels = cache.get(key)
    assert got_features.dtype == np.float32 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_features, features.astype(np.float32))
    np.testing.assert_array_equal(got_labels, labels)
    assert cache.contains(key)
    sidecar = cache.metadata(key)
    assert {k: sidecar[k] for k in METADATA} == METADATA
    assert sidecar["shape"] == [6, 4] and sidecar["key"] == key and sidecar["created"]
    with open(tmp_path / "cache" / f"{key}.json", encoding="utf-8") as handle:
        assert json.load(handle) == sidecar
    assert sorted(os.listdir(tmp_path / "cache")) == [f"{key}.json", f"{key}.npz"]


def test_keys_are_deterministic_distinct_and_file_safe():
    base = ("sha256-0f1e2d", "9f2c" * 16, "train800val200", 224)
    key = FeatureCache.key(*base, task_name="clevr(task='count_all')")
    assert key == FeatureCache.key(*base, task_name="clevr(task='count_all')")
    assert key.startswith("clevr-task-count_all__train800val200__224px__")
    # Without a task name the readable part is the fingerprint's start.
    assert FeatureCache.key(*base).startswith("9f2c9f2c9f2c__train800val200__224px__")
    variants = {
        FeatureCache.key("sha256-0f1e2e", *base[1:]),
        FeatureCache.key(base[0], "9f2c" * 16 + "0", *base[2:]),
        FeatureCache.key(*base[:2], "test", 224),
        FeatureCache.key(*base[:3], 128),
        FeatureCache.key(*base),
    }
    assert len(variants) == 5
    # Fingerprints that slug to the same text still get different keys.
    assert FeatureCache.key("c", "dsprites/loc", "test", 64) != FeatureCache.key(
        "c", "dsprites:loc", "test", 64
    )
    for value in variants | {key}:
        assert all(ch.isalnum() or ch in "_-" for ch in value)


def test_key_is_content_not_name():
    """Equal content under two names shares the digest; new content under one name does not."""
    fingerprint = "ab" * 32
    a = FeatureCache.key("m", fingerprint, "test", 32, task_name="folder:/data/a")
    b = FeatureCache.key("m", fingerprint, "test", 32, task_name="folder:/data/b")
    assert a.rsplit("__", 1)[1] == b.rsplit("__", 1)[1]
    changed = FeatureCache.key("m", "cd" * 32, "test", 32, task_name="folder:/data/a")
    assert changed != a


def test_rejects_keys_that_are_not_plain_names(tmp_path):
    cache = FeatureCache(str(tmp_path))
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="cache key"):
            cache.get(bad)


def test_put_rejects_metadata_that_is_not_json_before_writing(tmp_path):
    cache = FeatureCache(str(tmp_path / "c"))
    key = cache.key("c", "t", "s", 8)
    with pytest.raises(ValueError, match="JSON"):
        cache.put(key, np.zeros((3, 2)), np.zeros(3, int), {"when": object()})
    assert not (tmp_path / "c").exists() or os.listdir(tmp_path / "c") == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "npy", "missing_array"])
def test_corrupted_entry_warns_and_counts_as_missing(tmp_path, damage):
    cache = FeatureCache(str(tmp_path))
    key = cache.key("c", "t", "s", 8)
    features, labels = _entry(1, n=50, d=20)
    cache.put(key, features, labels, METADATA)
    path = tmp_path / f"{key}.npz"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy":
        with path.open("wb") as handle:
            np.save(handle, np.zeros(3))
    else:
        with path.open("wb") as handle:
            np.savez(handle, features=features.astype(np.float32))
    with pytest.warns(feature_cache.CorruptCacheEntryWarning, match=str(path)):
        assert cache.get(key) is None
    with pytest.warns(feature_cache.CorruptCacheEntryWarning):
        assert not cache.contains(key)
    cache.put(key, features, labels, METADATA)  # recomputed entry replaces the damaged one
    np.testing.assert_array_equal(cache.get(key)[1], labels)


def test_flipped_byte_is_caught_by_the_archive_checksum(tmp_path):
    cache = FeatureCache(str(tmp_path))
    key = cache.key("c", "t", "s", 8)
    cache.put(key, *_entry(2, n=40, d=10), METADATA)
    path = tmp_path / f"{key}.npz"
    data = bytearray(path.read_bytes())
    data[300] ^= 0xFF  # inside the stored features
    path.write_bytes(bytes(data))
    with pytest.warns(feature_cache.CorruptCacheEntryWarning, match=str(path)):
        assert cache.get(key) is None


def test_failed_write_leaves_no_entry_and_no_temporary_file(tmp_path, monkeypatch):
    cache = FeatureCache(str(tmp_path))
    key = cache.key("c", "t", "s", 8)

    def killed_midway(handle, **arrays):
        handle.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        cache.put(key, *_entry(3), METADATA)
    assert os.listdir(tmp_path) == []
    assert cache.get(key) is None


def test_concurrent_writers_of_one_key_leave_one_whole_entry(tmp_path):
    cache = FeatureCache(str(tmp_path))
    key = cache.key("c", "t", "s", 8)
    # Each writer's labels are all equal to its id, so a mixed-up entry would be detected.
    entries = {i: (np.full((200, 64), i, np.float32), np.full(200, i)) for i in range(6)}
    errors = []

    def writer(i):
        try:
            for _ in range(4):
                FeatureCache(str(tmp_path)).put(key, *entries[i], dict(METADATA, writer=i))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(i,)) for i in entries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    features, labels = cache.get(key)
    winner = int(labels[0])
    np.testing.assert_array_equal(labels, entries[winner][1])
    np.testing.assert_array_equal(features, entries[winner][0])
    assert sorted(os.listdir(tmp_path)) == [f"{key}.json", f"{key}.npz"]


def test_shards_cover_every_item_exactly_once():
    items = [f"expert_{i:03d}" for i in range(300)]
    for num_shards in (1, 2, 7):
        shards = [feature_cache.shard_assignment(items, num_shards, i) for i in range(num_shards)]
        merged = sorted(item for shard in shards for item in shard)
        assert merged == sorted(items)
        for shard in shards:
            assert shard == [item for item in items if item in set(shard)]  # original order
    sizes = [len(feature_cache.shard_assignment(items, 3, i)) for i in range(3)]
    assert min(sizes) > 60  # roughly balanced


def test_shards_are_stable_across_processes_and_collection_growth():
    items = [f"handle/{i}" for i in range(40)]
    here = feature_cache.shard_assignment(items, 4, 1)
    code = (
        "from vtab_eval import feature_cache\n"
        f"print(feature_cache.shard_assignment({items!r}, 4, 1))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == repr(here)
    grown = feature_cache.shard_assignment(items + [f"new/{i}" for i in range(20)], 4, 1)
    assert [item for item in grown if item in items] == here


@pytest.mark.parametrize(
    "num_shards, shard_index, message",
    [(0, 0, "num_shards"), (3, 3, "shard_index"), (3, -1, "shard_index")],
)
def test_shard_assignment_rejects_bad_arguments(num_shards, shard_index, message):
    with pytest.raises(ValueError, match=message):
        feature_cache.shard_assignment(["a"], num_shards, shard_index)
