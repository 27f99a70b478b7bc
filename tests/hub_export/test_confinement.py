"""Issue 24: nothing outside a collection, a work directory or a module folder is read, written or
deleted because of a symbolic link in it; one handle syntax for local modules; a handle-list line
that names no module is refused before anything is hashed.

One tiny saved module (r14_micro, with metadata giving its output size, so nothing is loaded to
publish it) is copied into every collection here; each test builds what it needs around it.
"""

import hashlib
import json
import os
import shutil

import pytest

from bit_experts.presets import create_model
from hub_export import (
    added_modules,
    collection,
    handles,
    identity,
    publish,
    validate,
)
from hub_export.collection import CollectionError, ModuleError
from hub_export.module import METADATA_FILE, HubModule, save_module


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    model = create_model("r14_micro", 0)
    path = tmp_path_factory.mktemp("module") / "m"
    metadata = {
        "name": "m",
        "kind": "full",
        "role": "feature_vector",
        "output_dim": model.feature_dim,
        "feature_dim": model.feature_dim,
        "resolution": 32,
    }
    save_module(HubModule(model, "features"), str(path), metadata)
    return path


@pytest.fixture
def copy(module, tmp_path):
    """A private copy of the module (tests add links to it)."""
    shutil.copytree(module, tmp_path / "copy")
    return tmp_path / "copy"


@pytest.fixture
def published(module, tmp_path):
    """A collection listing the module as `m/1`, and a folder outside it."""
    c = tmp_path / "c"
    publish.publish((), str(c), modules=[str(module)], validate_modules=False, log=_quiet)
    outside = tmp_path / "outside"
    outside.mkdir()
    return c, outside


def _manifest(c):
    return json.loads((c / "manifest.json").read_text())


def _one_line(error):
    text = str(error)
    assert "\n" not in text
    return text


# --- deleting -----------------------------------------------------------------------------------


# --- writing ------------------------------------------------------------------------------------


def test_content_addressed_file_that_is_a_link_is_replaced_not_kept(tmp_path):
    data = b'["a", "b"]\n'
    outside = tmp_path / "outside.json"
    outside.write_bytes(data)
    c = tmp_path / "c"
    c.mkdir()
    name = f"label_names-{hashlib.sha256(data).hexdigest()[:8]}.json"
    os.symlink(outside, c / name)
    ref = collection.write_content_addressed(str(c), "label_names", ".json", data)
    assert ref["file"] == name
    assert not os.path.islink(c / name) and (c / name).read_bytes() == data
    assert outside.read_bytes() == data


# --- reading ------------------------------------------------------------------------------------


def test_listed_module_reached_through_a_link_is_refused_by_resolve_pool(published):
    c, outside = published
    shutil.move(c / "m", outside / "m")
    os.symlink(outside / "m", c / "m")
    for verify in (True, False):
        with pytest.raises(ModuleError) as info:
            collection.resolve_pool(c, verify_checksums=verify, check_signatures=False)
        assert "'m/1'" in _one_line(info.value) and "symbolic link" in str(info.value)


@pytest.mark.parametrize("where", ["manifest", "module", "handle_list"])
def test_a_link_inside_a_module_folder_is_refused_whatever_the_checks(published, copy, where):
    """A linked file is never read, a linked folder never silently left out of the checksum."""
    c, outside = published
    (outside / "secret.txt").write_text("secret")
    target = {"manifest": c / "m" / "1", "module": copy, "handle_list": copy}[where]
    os.symlink(outside / "secret.txt", target / "assets" / "secret.txt")
    spec = c
    if where == "handle_list":
        spec = c.parent / "pool.txt"
        spec.write_text(f"{copy}\n")
    if where == "module":
        with pytest.raises(ModuleError) as info:
            handles.module_sha256(str(copy))
    else:
        with pytest.raises(ModuleError) as info:
            collection.resolve_pool(spec, verify_checksums=False, check_signatures=False)
    assert "assets/secret.txt is a symbolic link" in _one_line(info.value)
    os.remove(target / "assets" / "secret.txt")
    os.symlink(outside, target / "linked_folder")  # os.walk does not enter it: it was skipped
    with pytest.raises(ModuleError, match="linked_folder is a symbolic link"):
        handles.module_sha256(str(target))


def test_upstream_file_reached_through_a_link_is_refused(published):
    c, outside = published
    manifest = _manifest(c)
    manifest["upstream"] = {
        "label_names": collection.write_content_addressed(
            str(c), "label_names", ".json", b'["a", "b"]\n'
        )
    }
    collection.write_manifest(str(c), manifest)
    assert collection.label_names(c) == ["a", "b"]
    name = manifest["upstream"]["label_names"]["file"]
    shutil.move(c / name, outside / name)
    os.symlink(outside / name, c / name)
    with pytest.raises(CollectionError) as info:
        collection.label_names(c)
    assert name in _one_line(info.value) and "symbolic link" in str(info.value)


def test_module_identity_of_a_folder_never_reads_through_a_link(copy, tmp_path):
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({identity.FINGERPRINT_FIELD: "f" * 64}))
    os.remove(copy / METADATA_FILE)
    os.symlink(foreign, copy / METADATA_FILE)
    with pytest.raises(ModuleError, match=f"{METADATA_FILE} is a symbolic link"):
        identity.module_identity(str(copy))


def test_validation_refuses_a_module_folder_with_a_link(copy, tmp_path):
    (tmp_path / "other").mkdir()
    os.symlink(tmp_path / "other", copy / "variables_extra")
    with pytest.raises(ModuleError, match="variables_extra is a symbolic link"):
        validate.validate_module(str(copy), "feature_vector")


# --- copying ------------------------------------------------------------------------------------


# --- handles ------------------------------------------------------------------------------------


def test_file_url_handle_is_the_plain_path_everywhere(module, tmp_path):
    """Issue 24, case 4: a file:// handle was embedded, then not fine-tunable ("no saved_model.pb
    in file:///..."), so the expert that scored best was never selected."""
    from vtab_eval import module_contract

    pools = {}
    for kind, line in (("plain", str(module)), ("url", f"file://{module}")):
        (tmp_path / f"{kind}.txt").write_text(line + "\n")
        (pools[kind],) = collection.resolve_pool(tmp_path / f"{kind}.txt")
    url, plain = pools["url"], pools["plain"]
    assert url.handle == url.path == plain.path == str(module)
    assert url.sha256 == plain.sha256 == handles.module_sha256(str(module))
    assert url.name == plain.name == "m"
    assert module_contract.finetunable(url) == (True, "")
    assert identity.module_identity(url) == identity.module_identity(plain)
    assert added_modules.plan_module(f"file://{module}").copy_from == str(module)
    (tmp_path / "relative.txt").write_text("file://relative/m\n")
    with pytest.raises(CollectionError, match=r"relative.txt:1: .*file://relative/m.*absolute"):
        collection.resolve_pool(tmp_path / "relative.txt")


def test_handle_list_line_naming_no_module_is_refused_before_hashing(tmp_path, monkeypatch):
    """Issue 24: `/etc` in a handle list was hashed file by file, then failed without naming it."""
    folder = tmp_path / "etc"
    (folder / "sub").mkdir(parents=True)
    (folder / "passwd").write_text("root:x:0:0")
    (folder / "sub" / "hosts").write_text("127.0.0.1")
    hashed = []
    monkeypatch.setattr(handles, "module_sha256", lambda d: hashed.append(d) or "0" * 64)
    spec = tmp_path / "pool.txt"
    spec.write_text(f"# experts\n{folder}\n")
    with pytest.raises(CollectionError) as info:
        collection.resolve_pool(spec, verify_checksums=True, check_signatures=False)
    text = _one_line(info.value)
    assert f"{spec}:2" in text and str(folder) in text and "saved_model.pb" in text
    assert hashed == []


# --- planning -----------------------------------------------------------------------------------


def _fake_workdir(root):
    """A work directory with one baseline model, enough to plan (models load only when exported)."""
    (root / "models" / "baseline").mkdir(parents=True)
    (root / "label_names.json").write_text(json.dumps(["a", "b"]))
    (root / "expert_domains.json").write_text("[]")
    info = {
        "name": "baseline",
        "kind": "baseline",
        "preset": "r14_micro",
        "resolution": 32,
        "upstream_dataset": "t",
        "num_classes": 2,
    }
    (root / "models" / "baseline" / "info.json").write_text(json.dumps(info))
    (root / "models" / "baseline" / "model.keras").write_bytes(b"weights")
    return root
