"""Issue 26: Kaggle Models (layout, `kaggle:` handles through kagglehub's cache), experts by name,
and loading, ranking and fine-tuning without `tensorflow_hub`.

One collection of three tiny imported BiT checkpoints (`expert_a` versions 1 and 2, `expert_b`) is
laid out for Kaggle, and its versions are put into a kagglehub cache with kagglehub's own cache API
(`get_cached_path`, `mark_as_complete`): what `kagglehub.model_download` leaves after a download.
`KAGGLE_API_ENVIRONMENT=TEST` points kagglehub at localhost, so nothing reaches Kaggle.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import vtab_eval_toys as toys
from reference_bit import random_bit_checkpoint

from bit_experts import load_expert
from hub_export import collection, handles, import_bit_checkpoint, kaggle_models
from hub_export.handles import CollectionError, ModuleError

kagglehub = pytest.importorskip("kagglehub")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OWNER, MODEL = "tester", "tiny-experts"
SIZE = 16


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(collection, kaggle layout, [(kaggle handle, folder)], kagglehub cache folder)."""
    root = tmp_path_factory.mktemp("kaggle")
    c = root / "collection"
    for seed, name in ((0, "expert_a"), (1, "expert_b"), (2, "expert_a")):
        checkpoint = root / f"c{seed}.npz"
        np.savez(checkpoint, **random_bit_checkpoint((1, 1, 1, 1), 0.125, groups=4, seed=seed))
        import_bit_checkpoint.publish_checkpoint(
            str(checkpoint), str(c), groups=4, resolution=SIZE, name=name,
            validate_modules=False, log=lambda *_: None, license="Apache 2.0",
        )  # fmt: skip
    written = kaggle_models.write_layout(c, root / "kaggle", OWNER, MODEL, log=lambda *_: None)
    return c, root / "kaggle", written, root / "kagglehub_cache"


@pytest.fixture(scope="module")
def cache(published):
    """kagglehub's cache holding every laid-out version, as `model_download` leaves it; the
    environment points kagglehub at it (and at localhost) while the module's tests run."""
    from kagglehub import cache as kh_cache
    from kagglehub.handle import parse_model_handle

    _, _, written, folder = published
    before = {k: os.environ.get(k) for k in ("KAGGLEHUB_CACHE", "KAGGLE_API_ENVIRONMENT")}
    os.environ.update(KAGGLEHUB_CACHE=str(folder), KAGGLE_API_ENVIRONMENT="TEST")
    for handle, version_dir in written:
        h = parse_model_handle(handle.removeprefix("kaggle:"))
        shutil.copytree(version_dir, kh_cache.get_cached_path(h))
        kh_cache.Cache().mark_as_complete(h)
    yield folder
    for k, v in before.items():
        os.environ.pop(k) if v is None else os.environ.update({k: v})


def _same_weights(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_layout_is_one_variation_per_module_with_the_kaggle_metadata(published):
    from kagglehub.handle import parse_model_handle
    from kagglesdk.models.types.model_enums import ModelFramework

    c, k, written, _ = published
    manifest = json.loads((c / "manifest.json").read_text())
    base = f"kaggle:{OWNER}/{MODEL}/tensorFlow2"
    assert [h for h, _ in written] == [
        f"{base}/expert_a/1",
        f"{base}/expert_b/1",
        f"{base}/expert_a/2",
    ]
    for (_, folder), e in zip(written, manifest["modules"]):
        assert folder == str(k / OWNER / MODEL / "tensorFlow2" / e["name"] / str(e["version"]))
        assert handles.module_sha256(folder) == e["sha256"]  # the module, byte for byte
    # kagglehub.model_upload takes the variation handle: its framework is Kaggle's TF2.
    variation = parse_model_handle(f"{OWNER}/{MODEL}/tensorFlow2/expert_a")
    assert variation.framework_enum() == ModelFramework.MODEL_FRAMEWORK_TENSOR_FLOW_2
    card = json.loads((k / OWNER / MODEL / "model-metadata.json").read_text())
    assert card["ownerSlug"] == OWNER and card["slug"] == MODEL and card["isPrivate"] is True
    assert card["description"].startswith("# Collection bit-experts/collection/")
    assert (
        f"https://www.kaggle.com/models/{OWNER}/{MODEL}/tensorFlow2/expert_b" in card["description"]
    )
    folder = k / OWNER / MODEL / "tensorFlow2" / "expert_a"
    instance = json.loads((folder / "model-instance-metadata.json").read_text())
    assert instance["instanceSlug"] == "expert_a" and instance["framework"] == "tensorFlow2"
    assert instance["licenseName"] == "Apache 2.0" and instance["fineTunable"] is True
    assert instance["usage"].startswith("# Module bit-experts/expert_a/2\n")  # the latest
    assert f'handle = "{base}/expert_a/2"' in instance["usage"]  # what load_expert(handle) loads
    assert (
        f'kagglehub.model_download("{OWNER}/{MODEL}/tensorFlow2/expert_a/2")' in instance["usage"]
    )


def test_layout_reruns_copy_only_what_changed_and_refuse_a_damaged_module(published, tmp_path):
    c, k, written, _ = published
    stamp = os.stat(os.path.join(written[0][1], "saved_model.pb")).st_mtime_ns
    assert kaggle_models.write_layout(c, k, OWNER, MODEL, log=lambda *_: None) == written
    assert os.stat(os.path.join(written[0][1], "saved_model.pb")).st_mtime_ns == stamp  # kept
    laid = tmp_path / "laid"
    shutil.copytree(k, laid)
    variation = laid / OWNER / MODEL / "tensorFlow2"
    (variation / "expert_b" / "1" / "doc.md").write_text("changed here")
    kept = os.stat(variation / "expert_a" / "1" / "saved_model.pb").st_mtime_ns
    kaggle_models.write_layout(c, laid, OWNER, MODEL, log=lambda *_: None)
    assert handles.module_sha256(variation / "expert_b" / "1") == handles.module_sha256(
        c / "expert_b" / "1"
    )  # copied again
    assert os.stat(variation / "expert_a" / "1" / "saved_model.pb").st_mtime_ns == kept
    copy = tmp_path / "c"
    shutil.copytree(c, copy)
    (copy / "expert_b" / "1" / "saved_model.pb").write_bytes(b"damaged")
    with pytest.raises(ModuleError, match=r"'expert_b/1': checksum mismatch") as error:
        kaggle_models.write_layout(copy, tmp_path / "k", OWNER, MODEL, log=lambda *_: None)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "k").exists()  # checked before anything is written
    with pytest.raises(ModuleError, match=r"'expert_b/1': checksum mismatch"):
        kaggle_models.write_layout(copy, k, OWNER, MODEL, log=lambda *_: None)  # k is complete
    outside = tmp_path / "outside"
    outside.mkdir()
    linked = tmp_path / "linked"
    shutil.copytree(k, linked)
    shutil.rmtree(linked / OWNER / MODEL / "tensorFlow2" / "expert_a")
    os.symlink(outside, linked / OWNER / MODEL / "tensorFlow2" / "expert_a")
    with pytest.raises(CollectionError, match=r"--kaggle_dir .*expert_a' is a symbolic link"):
        kaggle_models.write_layout(c, linked, OWNER, MODEL, log=lambda *_: None)
    assert list(outside.iterdir()) == []  # nothing written through the link
    with pytest.raises(CollectionError, match=r"--owner='Me Too': a Kaggle slug is needed"):
        kaggle_models.write_layout(c, tmp_path / "k2", "Me Too", MODEL)
    assert not (tmp_path / "k2").exists()


def test_command_line_lays_out_and_prints_the_upload_calls(published, tmp_path):
    c, _, _, _ = published
    out = tmp_path / "k"
    args = [f"--collection_dir={c}", f"--kaggle_dir={out}", f"--owner={OWNER}", f"--model={MODEL}"]
    proc = subprocess.run(
        [sys.executable, "-m", "hub_export.kaggle_models", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    variation = f"{OWNER}/{MODEL}/tensorFlow2/expert_a"
    assert f'kagglehub.model_upload("{variation}", "{out / variation / "2"}")' in proc.stdout
    assert proc.stdout.strip().endswith(f"laid out 3 module versions in {out}")
    proc = subprocess.run(
        [sys.executable, "-m", "hub_export.kaggle_models", *args[:-1], "--model=Bad Slug"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("kaggle_models: error: --model='Bad Slug'")
    )


def test_kaggle_handles_load_from_the_kagglehub_cache_offline(published, cache):
    import tensorflow_hub as hub

    c, _, _, _ = published
    base = f"{OWNER}/{MODEL}/tensorFlow2"
    want = load_expert(c / "expert_a" / "2")
    for handle in (
        f"kaggle:{base}/expert_a/2",
        f"https://www.kaggle.com/models/{base}/expert_a/2",
        f"https://www.kaggle.com/models/{OWNER}/{MODEL}/frameworks/tensorFlow2/variations/expert_a/versions/2",
    ):
        assert handles.resolve(handle) == str(cache / "models" / base / "expert_a" / "2")
        model = load_expert(handle)
        assert model.metadata == want.metadata and _same_weights(model, want)
    # The TF Hub way stays: hub.KerasLayer on the folder kagglehub gives.
    images = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    layer = hub.KerasLayer(kagglehub.model_download(f"{base}/expert_b/1"))
    saved = collection.load_module(f"kaggle:{base}/expert_b/1")
    np.testing.assert_array_equal(layer(images).numpy(), saved(images).numpy())


@pytest.mark.parametrize(
    "handle, message",
    [
        (f"kaggle:{OWNER}/{MODEL}/tensorFlow2/expert_a", r"names no version.*pin one: kaggle:"
         rf"{OWNER}/{MODEL}/tensorFlow2/expert_a/VERSION \(in the kagglehub cache: \[1, 2\]\)"),
        (f"kaggle:{OWNER}/{MODEL}/tensorFlow2/expert_a/3", r"not in the kagglehub cache"),
        (f"kaggle:{OWNER}/{MODEL}", r"not a Kaggle Models handle; expected kaggle:OWNER/MODEL/"),
    ],
)  # fmt: skip
def test_a_kaggle_handle_that_cannot_be_resolved_is_one_line(cache, handle, message):
    with pytest.raises(ModuleError, match=message) as error:
        load_expert(handle)
    assert "\n" not in str(error.value) and str(error.value).startswith(f"module {handle!r}")


def test_experts_by_name(published):
    c, _, _, _ = published
    latest, first = load_expert(f"{c}:expert_a"), load_expert(f"{c}:expert_a/1")
    assert latest.metadata["version"] == 2 and first.metadata["version"] == 1
    assert _same_weights(latest, load_expert(c / "expert_a" / "2"))
    assert not _same_weights(latest, first)
    entry = collection.named_module(str(c), "expert_b")
    assert entry.path == str(c / "expert_b" / "1") and entry.role == "feature_vector"
    pool = collection.resolve_pool(c)
    assert collection.find(pool, name="expert_b") is pool[1]  # no role needed
    assert collection.find(pool, name="nope") is None
    with pytest.raises(ValueError, match=r"role must be one of .*got 'expert_b'"):
        collection.find(pool, "expert_b")


@pytest.mark.parametrize(
    "suffix, message",
    [
        (":expert_c", r"no module named 'expert_c' in .*; it lists \['expert_a', 'expert_b'\]"),
        (":expert_a/7", r"lists versions \[1, 2\] of 'expert_a', not 7"),
        (
            "/expert_a",
            r"holds versions \[1, 2\] of a module, not a module: add the version \(.*/2\)",
        ),
    ],
)
def test_an_unknown_name_or_a_missing_version_is_one_line(published, suffix, message):
    c, _, _, _ = published
    with pytest.raises(ModuleError, match=message) as error:
        load_expert(f"{c}{suffix}")
    assert "\n" not in str(error.value)


def test_rank_and_fine_tune_kaggle_handles_without_tensorflow_hub(published, cache, tmp_path):
    """The issue's "done when": `vtab_eval.rank` ranks a pool given by a `kaggle:` handle and a
    collection name, then the Kaggle one is fine-tuned, validated and loaded with Keras, in a
    process where `import tensorflow_hub` fails."""
    c, _, written, _ = published
    handles_ranked = [written[2][0], f"{c}:expert_b"]  # kaggle:.../expert_a/2, a name
    pool = toys.write_handle_list(str(tmp_path / "pool.txt"), handles_ranked)
    data = toys.make_colour_folder(str(tmp_path / "data"), per_class=8)
    out = tmp_path / "ranking.json"
    script = textwrap.dedent(
        f"""
        import runpy, sys
        sys.modules["tensorflow_hub"] = None  # `import tensorflow_hub` raises ImportError
        sys.argv = ["vtab_eval.rank", "--collection={pool}", "--dataset=folder:{data}",
                    "--output_json={out}", "--resolution={SIZE}"]
        try:
            runpy.run_module("vtab_eval.rank", run_name="__main__")
        except SystemExit as end:
            assert not end.code, end.code
        from bit_experts import load_expert
        from hub_export import handles, validate
        from vtab_eval import finetune, sweeps, tasks
        handle = {written[2][0]!r}
        task = tasks.get_task("folder:{data}")
        setting = sweeps.make_setting(0.05, 3, 8, resolution={SIZE})
        result = finetune.finetune_and_evaluate(handle, task, "train800", "test", setting)
        print("FINETUNED", result["steps"], result["num_examples"])
        print("VALID", validate.validate_module(handles.resolve(handle), "feature_vector"))
        print("KERAS", load_expert(handle).metadata["version"])
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert sorted(e["handle"] for e in result["experts"]) == sorted(handles_ranked)
    assert all(e["status"] == "ok" and e["finetunable"] for e in result["experts"])
    assert result["selected"] in {e["handle"] for e in result["experts"]}
    assert re.search(r"^FINETUNED 3 [1-9]", proc.stdout, re.M) and "KERAS 2" in proc.stdout
    assert "VALID {" in proc.stdout
