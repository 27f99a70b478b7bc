"""Embedding a task with a pool of modules, through the feature cache; bad modules left out."""

import dataclasses

import numpy as np
import pytest
import vtab_eval_toys as toys

from hub_export import handles
from vtab_eval import embed, identity, tasks


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    modules = {
        k: toys.save_toy_module(str(root / k), k) for k in ("colour", "noise", "nan", "rank1")
    }
    task = tasks.get_task("folder:" + toys.make_colour_folder(str(root / "data"), per_class=8))
    return root, modules, task


def test_bad_modules_are_left_out_by_handle(setup):
    root, modules, task = setup
    missing = str(root / "missing")
    pool = [modules["colour"], modules["nan"], missing, modules["rank1"], modules["noise"]]
    result = embed.embed_pool(pool, task, resolution=16, cache_dir=str(root / "cache_a"))
    assert list(result.features) == [modules["colour"], modules["noise"]]
    assert set(result.failures) == {modules["nan"], missing, modules["rank1"]}
    assert "non-finite" in result.failures[modules["nan"]]
    assert "rank 2" in result.failures[modules["rank1"]]
    assert "failed to load" in result.failures[missing] and missing in result.failures[missing]
    assert result.features[modules["colour"]].shape == (19, 8)
    assert result.labels.shape == (19,) and set(result.labels) <= {0, 1, 2}


def test_cache_computes_only_what_is_new(setup):
    root, modules, task = setup
    cache = str(root / "cache_b")
    first = embed.embed_pool([modules["colour"]], task, resolution=16, cache_dir=cache)
    assert first.computed == [modules["colour"]] and first.cached == []
    second = embed.embed_pool(
        [modules["colour"], modules["noise"]], task, resolution=16, cache_dir=cache
    )
    assert second.cached == [modules["colour"]] and second.computed == [modules["noise"]]
    np.testing.assert_array_equal(
        first.features[modules["colour"]], second.features[modules["colour"]]
    )
    # Another resolution is another cache entry.
    other = embed.embed_pool([modules["colour"]], task, resolution=8, cache_dir=cache)
    assert other.computed == [modules["colour"]]
    only = embed.embed_pool(
        [modules["colour"], modules["nan"]], task, resolution=16, cache_dir=cache, cache_only=True
    )
    assert (
        only.cached == [modules["colour"]] and "no cached features" in only.failures[modules["nan"]]
    )


def test_module_identity_of_a_plain_handle_is_its_file_checksum(setup):
    _, modules, _ = setup
    colour = identity.module_identity(modules["colour"])
    assert colour == handles.module_sha256(modules["colour"])
    assert colour != identity.module_identity(modules["noise"])


def test_a_module_republished_with_the_same_weights_keeps_its_features_and_fine_tunes(setup):
    """What caches and fine-tunes key a module on is its weights fingerprint (docs/selection.md,
    "Feature cache"; docs/evaluation.md, "Identity"), not its checksum, which another export of
    the same weights changes."""
    import shutil

    from hub_export import identity as hub_identity
    from vtab_eval import plan, sweeps

    root, modules, task = setup
    copy = str(root / "republished")
    shutil.copytree(modules["colour"], copy)
    (root / "republished" / "README.md").write_text("another page, another checksum\n")
    fingerprint = {hub_identity.FINGERPRINT_FIELD: "f" * 64}
    first, again = (
        toys.Entry(
            h, "colour", "full", "feature_vector", dict(fingerprint), handles.module_sha256(h)
        )
        for h in (modules["colour"], copy)
    )
    assert first.sha256 != again.sha256
    cache = str(root / "cache_republished")
    embed.embed_pool([first], task, resolution=16, cache_dir=cache)
    assert embed.embed_pool([again], task, resolution=16, cache_dir=cache).cached == [copy]
    job = plan.Job(task, "vtab1k", "per_selection", sweeps.quick())

    def key(entry):
        return plan.make_spec(entry, job, ("train800val200", "test"), job.sweep[0], 0).key

    assert key(first) == key(again)
    plain = [dataclasses.replace(e, metadata={}) for e in (first, again)]
    assert identity.module_identity(plain[0]) == first.sha256 and key(plain[0]) != key(plain[1])
