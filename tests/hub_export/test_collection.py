"""Reading pools of modules: collection dirs, manifests, handle lists; tampered and broken inputs."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from bit_experts.presets import create_model
from hub_export import collection, handles
from hub_export.collection import CollectionError, ModuleError
from hub_export.module import HubModule, save_module

NAMES = ["expert_a", "expert_b", "expert_c"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One saved module, copied into a three-module collection written with the collection helpers."""
    tmp = tmp_path_factory.mktemp("collection")
    module_dir = tmp / "module"
    save_module(HubModule(create_model("r14_micro"), "features"), str(module_dir), {"name": "m"})
    out = tmp / "c"
    manifest = collection.empty_manifest("c", "tester")
    for name in NAMES:
        target = out / name / "1"
        shutil.copytree(module_dir, target)
        metadata = {"name": name, "kind": "full", "role": "feature_vector", "version": 1}
        (target / "bit_experts_metadata.json").write_text(json.dumps(metadata))
        manifest["modules"].append(
            {
                "name": name,
                "version": 1,
                "path": f"{name}/1",
                "kind": "full",
                "role": "feature_vector",
                "sha256": handles.module_sha256(str(target)),
                "metadata": metadata,
            }
        )
    priors = {n: np.full(4, 0.25, np.float32) + i for i, n in enumerate(NAMES)}
    manifest["upstream"] = {
        "label_names": collection.write_content_addressed(
            str(out), "label_names", ".json", json.dumps(list("wxyz")).encode()
        ),
        "label_priors": collection.write_content_addressed(
            str(out), "label_priors", ".npz", collection.priors_bytes(priors)
        ),
    }
    collection.write_manifest(str(out), manifest)
    return module_dir, out


@pytest.fixture
def copy(built, tmp_path):
    _, out = built
    shutil.copytree(out, tmp_path / "c")
    return tmp_path / "c"


def _manifest(c):
    return json.loads((c / "manifest.json").read_text())


def test_collection_dir_and_manifest_give_the_same_pool(built):
    _, out = built
    by_dir = collection.resolve_pool(str(out))
    by_manifest = collection.resolve_pool(out / "manifest.json")
    assert by_dir == by_manifest
    assert [e.name for e in by_dir] == NAMES
    assert all(e.role == "feature_vector" and e.version == 1 for e in by_dir)
    assert by_dir[1].handle == str(out / "expert_b" / "1") and by_dir[1].metadata["kind"] == "full"
    assert collection.label_names(out) == list("wxyz")
    # 2.25 is exact in binary and round-trips through JSON; default rtol 1e-7 only absorbs a sum.
    np.testing.assert_allclose(collection.label_priors(out)["expert_c"], np.full(4, 2.25))


def test_checksum_covers_paths_and_contents(built, tmp_path):
    module_dir, _ = built
    shutil.copytree(module_dir, tmp_path / "m")
    original = handles.module_sha256(str(tmp_path / "m"))
    assert original == handles.module_sha256(str(module_dir))  # a copy keeps its checksum
    (tmp_path / "m" / "extra.txt").write_text("")
    with_extra = handles.module_sha256(str(tmp_path / "m"))
    os.rename(tmp_path / "m" / "extra.txt", tmp_path / "m" / "other.txt")
    assert len({original, with_extra, handles.module_sha256(str(tmp_path / "m"))}) == 3


@pytest.mark.parametrize(
    "damage",
    ["truncate_variables", "flip_byte_pb", "delete_file", "add_file"],
)
def test_tampered_module_is_named(copy, damage):
    target = copy / "expert_b" / "1"
    data_file = next((target / "variables").glob("variables.data*"))
    if damage == "truncate_variables":
        data_file.write_bytes(data_file.read_bytes()[:100])
    elif damage == "flip_byte_pb":
        raw = bytearray((target / "saved_model.pb").read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (target / "saved_model.pb").write_bytes(bytes(raw))
    elif damage == "delete_file":
        (target / "variables" / "variables.index").unlink()
    else:
        (target / "assets").mkdir(exist_ok=True)
        (target / "assets" / "x").write_text("x")
    with pytest.raises(ModuleError, match=r"module 'expert_b/1': checksum mismatch"):
        collection.resolve_pool(copy)
    pool = collection.resolve_pool(copy, verify_checksums=False, check_signatures=False)
    assert len(pool) == 3  # checks off: listed as is


def test_missing_module_and_wrong_signature_are_named(copy, tmp_path):
    shutil.rmtree(copy / "expert_c")
    with pytest.raises(ModuleError, match=r"module 'expert_c/1': listed in .* is missing"):
        collection.resolve_pool(copy)
    manifest = _manifest(copy)
    manifest["modules"] = manifest["modules"][:2]
    manifest["modules"][0]["role"] = "packed"  # the module has no per-expert functions
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModuleError, match=r"'expert_a/1': wrong signature .* \['experts', 'call_"):
        collection.resolve_pool(copy, verify_checksums=False)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("format"), "not a bit_experts.collection manifest"),
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m["modules"][1].pop("sha256"), r"module 'expert_b' is missing \['sha256'\]"),
        (lambda m: m["modules"][0].update(path="../../etc"), "leaves the collection"),
        (lambda m: m["modules"][2].update(role="magic"), "'expert_c' has role 'magic'"),
        (lambda m: m["modules"][2].update(sha256="0" * 64), "'expert_c/1': checksum mismatch"),
    ],
)
def test_tampered_manifest_is_a_clear_error(copy, edit, message):
    manifest = _manifest(copy)
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match=message):
        collection.resolve_pool(copy)


def test_truncated_manifest_and_tampered_upstream_files(copy):
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(CollectionError, match="not valid JSON"):
        collection.resolve_pool(copy)
    (copy / "manifest.json").write_text(text)
    priors_file = copy / _manifest(copy)["upstream"]["label_priors"]["file"]
    priors_file.write_bytes(priors_file.read_bytes()[:-10])
    with pytest.raises(CollectionError, match="checksum mismatch for label_priors-"):
        collection.label_priors(copy)
    assert collection.label_names(copy) == list("wxyz")


@pytest.mark.parametrize("key", ["label_names", "label_priors"])
@pytest.mark.parametrize("outside", ["../secret.json", "/etc/passwd", "a//b.json", "..\\x.json"])
def test_upstream_file_reference_is_confined_to_the_collection(copy, key, outside):
    secret = copy.parent / "secret.json"
    secret.write_text(json.dumps(list("wxyz")))
    manifest = _manifest(copy)
    manifest["upstream"][key]["file"] = outside
    (copy / "manifest.json").write_text(json.dumps(manifest))
    for read in (collection.label_names, collection.label_priors, collection.resolve_pool):
        with pytest.raises(CollectionError) as info:
            read(copy)
        message = str(info.value)
        assert f"upstream {key} file {outside!r} leaves the collection" in message
        assert "\n" not in message


def test_adapter_experts_are_found_by_their_current_and_legacy_names():
    def entry(name, expert):
        metadata = {"kind": "adapter", "packed_module": "adapters", "expert": expert}
        return collection.ModuleEntry(
            handle=name,
            name=name,
            kind="adapter",
            role="feature_vector",
            metadata=metadata,
            sha256=None,
            aliases=collection.name_aliases(name, metadata),
        )

    new = [entry("adapter_cat", "adapter_cat")]  # published now
    old = [entry("adapters_adapter_cat", "adapter_cat")]  # published before the rename
    for pool in (new, old):
        for name in ("adapter_cat", "adapters_adapter_cat"):
            assert collection.find(pool, "feature_vector", name) is pool[0]
        assert collection.find(pool, "feature_vector", "adapters_cat") is None
    assert new[0].aliases == ("adapters_adapter_cat",) and old[0].aliases == ("adapter_cat",)
    # An exact name wins over an alias.
    both = old + new
    assert collection.find(both, "feature_vector", "adapter_cat") is new[0]
    # Experts not named `adapter...` keep the `<model>_<expert>` name, which has no alias.
    assert collection.name_aliases("adapters_cat", {**old[0].metadata, "expert": "cat"}) == ()
    assert collection.name_aliases("expert_a", {"kind": "full"}) == ()


def test_handle_list_mixes_collection_modules_and_third_party(built, tmp_path, monkeypatch):
    module_dir, out = built
    third = tmp_path / "third_party" / "bit_m-r50x1" / "1"
    shutil.copytree(module_dir, third)
    # A module without our metadata: neither the sidecar nor the copy inside the SavedModel.
    (third / "bit_experts_metadata.json").unlink()
    (third / "assets" / "bit_experts_metadata.json").unlink()
    remote = "https://tfhub.dev/google/bit/m-r50x1/7"
    cache = tmp_path / "hub_cache"
    cached = cache / hashlib.sha1(remote.encode()).hexdigest()  # where tensorflow_hub caches it
    shutil.copytree(third, cached)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    lines = [
        "# experts to rank",
        str(out / "expert_b" / "1"),
        "",
        "third_party/bit_m-r50x1/1   # relative to this file",
        remote,
    ]
    (tmp_path / "pool.txt").write_text("\n".join(lines) + "\n")
    pool = collection.resolve_pool(tmp_path / "pool.txt")
    assert [e.name for e in pool] == ["expert_b", "bit_m-r50x1", "google/bit/m-r50x1"]
    assert [e.kind for e in pool] == ["full", "third_party", "third_party"]
    assert pool[1].handle == str(third) and pool[1].metadata == {}
    assert pool[2].handle == remote and os.path.samefile(pool[2].path, cache / os.listdir(cache)[0])
    assert pool[1].sha256 == pool[2].sha256 != pool[0].sha256  # same files, same checksum
    assert collection.feature_extractors(pool) == pool
    assert collection.resolve_pool(tmp_path / "pool.txt", verify_checksums=False)[0].sha256 is None


def test_handle_list_errors_name_the_handle(built, tmp_path, monkeypatch):
    module_dir, out = built
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("TFHUB_DOWNLOAD_PROGRESS", "0")
    cases = {
        "missing.txt": (str(tmp_path / "nope"), r"module '.*nope'.*does not exist"),
        "dup.txt": (f"{out / 'expert_a' / '1'}\n{out / 'expert_a' / '1'}", "already used"),
        "empty.txt": ("# nothing\n\n", "no module handles"),
        "tf1.txt": (str(tmp_path / "tf1"), "TF1 Hub format"),
        "notmodule.txt": (str(tmp_path), "has no saved_model.pb"),
        "afile.txt": (str(tmp_path / "tf1" / "tfhub_module.pb"), "is a file, not a module folder"),
    }
    (tmp_path / "tf1").mkdir()
    (tmp_path / "tf1" / "tfhub_module.pb").write_bytes(b"")
    for file, (text, message) in cases.items():
        (tmp_path / file).write_text(text)
        with pytest.raises(CollectionError, match=message):
            collection.resolve_pool(tmp_path / file)
    with pytest.raises(CollectionError, match="does not exist"):
        collection.resolve_pool(tmp_path / "no_such_file.txt")
    with pytest.raises(CollectionError, match="has no manifest.json"):
        collection.resolve_pool(tmp_path / "tf1")


def test_unreachable_remote_handle_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(
        "tensorflow_hub.resolve", lambda h: (_ for _ in ()).throw(OSError("network unreachable"))
    )
    (tmp_path / "p.txt").write_text("https://tfhub.dev/google/bit/m-r50x3/1\n")
    with pytest.raises(ModuleError, match=r"m-r50x3/1'.*network unreachable"):
        collection.resolve_pool(tmp_path / "p.txt")
