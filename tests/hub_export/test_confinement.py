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
    collection_lock,
    expert_modules,
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


@pytest.mark.parametrize("link", ["outside", "inside"])
def test_publish_that_writes_nothing_deletes_nothing_through_a_link(module, published, link):
    """Issue 24, case 2: clean_stale descended into a linked folder and removed the digit-named
    folders it found there: outside the collection, or (through a link inside it) a listed one."""
    c, outside = published
    (outside / "notes.txt").write_text("mine")
    for name in ("1", "2", ".old-x"):
        (outside / name).mkdir()
        (outside / name / "keep.txt").write_text("mine")
    os.symlink(outside if link == "outside" else "m", c / "linked")  # inside: linked/1 is m/1
    lines = []
    written = publish.publish(
        (), str(c), modules=[str(module)], validate_modules=False, log=lines.append
    )
    assert written == []
    assert sorted(os.listdir(outside)) == [".old-x", "1", "2", "notes.txt"]
    assert all((outside / n / "keep.txt").read_text() == "mine" for n in ("1", "2", ".old-x"))
    assert (c / "m" / "1" / "saved_model.pb").is_file()
    assert [e.name for e in collection.resolve_pool(c)] == ["m"]
    assert os.path.islink(c / "linked")  # left alone, and said so
    assert any("linked" in line and "symbolic link" in line for line in lines)


# --- writing ------------------------------------------------------------------------------------


def test_publish_never_writes_a_module_through_a_linked_module_folder(module, published):
    c, outside = published
    (outside / "notes.txt").write_text("mine")
    os.symlink(outside, c / "m2")
    before = (c / "manifest.json").read_bytes()
    with pytest.raises(CollectionError) as info:
        publish.publish(
            (), str(c), modules=[f"{module}:name=m2"], validate_modules=False, log=_quiet
        )
    assert "'m2/1'" in _one_line(info.value) and "symbolic link" in str(info.value)
    assert os.listdir(outside) == ["notes.txt"]
    assert (c / "manifest.json").read_bytes() == before
    assert not [f for f in os.listdir(c) if f.startswith(publish.STAGING_PREFIX)]


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


def test_listed_module_reached_through_a_link_is_refused_by_publish(module, published):
    c, outside = published
    shutil.move(c / "m", outside / "m")
    os.symlink(outside / "m", c / "m")
    with pytest.raises(CollectionError) as info:
        publish.publish((), str(c), modules=[str(module)], validate_modules=False, log=_quiet)
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


def test_manifest_reached_through_a_link_is_refused(module, published):
    c, outside = published
    shutil.move(c / "manifest.json", outside / "manifest.json")
    os.symlink(outside / "manifest.json", c / "manifest.json")
    for read in (
        collection.resolve_pool,
        collection.label_names,
        lambda c: publish.publish((), str(c), modules=[str(module)], log=_quiet),
    ):
        with pytest.raises(CollectionError) as info:
            read(c)
        assert "manifest.json" in _one_line(info.value) and "symbolic link" in str(info.value)


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


def test_lock_file_that_is_a_link_is_refused_at_once_and_not_read(tmp_path):
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "time": 0}))
    c = tmp_path / "c"
    c.mkdir()
    os.symlink(record, c / collection_lock.LOCK_FILE)
    with pytest.raises(collection_lock.CollectionLockError) as info:
        with collection_lock.CollectionLock(str(c), timeout=0.3, poll=0.05, log=_quiet):
            pass
    text = _one_line(info.value)
    assert "symbolic link" in text and collection_lock.LOCK_FILE in text
    assert f"pid {os.getpid()}" not in text  # the record it points at was not read
    assert os.path.islink(c / collection_lock.LOCK_FILE)  # nor removed: the user decides


def test_staging_owner_record_that_is_a_link_is_not_followed(published, tmp_path):
    c, outside = published
    live = outside / "OWNER"  # a record of a live publisher (this process), outside
    live.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    staging = c / (publish.STAGING_PREFIX + "x")
    staging.mkdir()
    os.symlink(live, staging / publish.OWNER_FILE)
    removed = publish.clean_stale(str(c), log=_quiet)
    assert removed == [staging.name] and not staging.exists()
    assert json.loads(live.read_text())["pid"] == os.getpid()


# --- copying ------------------------------------------------------------------------------------


def test_added_module_with_a_link_is_refused_before_anything_is_written(copy, tmp_path):
    """Issue 24, case 3: the link's target was copied into the collection as a regular file."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the collection")
    os.symlink(secret, copy / "assets" / "notes.txt")
    c = tmp_path / "c"
    with pytest.raises(CollectionError) as info:
        publish.publish((), str(c), modules=[str(copy)], validate_modules=False, log=_quiet)
    assert "assets/notes.txt is a symbolic link" in _one_line(info.value)
    assert str(copy) in str(info.value)
    assert not c.exists()


def test_copying_a_module_never_follows_a_link(copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the collection")
    os.symlink(secret, copy / "assets" / "notes.txt")
    publish._copy_module(str(copy), str(tmp_path / "staged"))
    copied = tmp_path / "staged" / "assets" / "notes.txt"
    assert os.path.islink(copied)  # copied as the link it is, which the checksum then refuses
    with pytest.raises(ModuleError, match="is a symbolic link"):
        handles.module_sha256(str(tmp_path / "staged"))


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


def test_only_never_drops_an_added_module_and_clashes_are_checked_after_it(module, tmp_path):
    """Issue 24, case 5: `--only` silently dropped every `--module`, and the clash check demanded a
    rename for a work-directory module that `--only` left out."""
    workdir = str(_fake_workdir(tmp_path / "w"))
    extra = f"{module}:name=extra"
    planned, _ = publish._plan([workdir], [extra], only=["baseline_classifier"])
    assert [(p.name, p.source) for p in planned] == [
        ("baseline_classifier", workdir),
        ("extra", extra),
    ]
    modules = [f"{module}:name=baseline", extra]  # the work directory plans `baseline` too
    planned, _ = publish._plan([workdir], modules, only=["baseline_classifier"])
    assert [(p.name, p.source) for p in planned] == [
        ("baseline_classifier", workdir),
        ("baseline", modules[0]),
        ("extra", modules[1]),
    ]
    with pytest.raises(CollectionError, match=r"two sources export a module named 'baseline'"):
        publish._plan([workdir], modules, only=["baseline"])  # both kept: a real clash
    with pytest.raises(CollectionError, match=r"--only names unknown modules \['nope'\]"):
        publish._plan([workdir], modules, only=["nope"])


@pytest.mark.parametrize(
    "entry",
    ["label_names.json", "expert_domains.json", "models/baseline", "models/baseline/model.keras"],
)
def test_work_directory_entries_reached_through_links_are_refused(tmp_path, entry):
    workdir = _fake_workdir(tmp_path / "w")
    outside = tmp_path / "outside" / os.path.basename(entry)
    outside.parent.mkdir()
    shutil.move(workdir / entry, outside)
    os.symlink(outside, workdir / entry)
    with pytest.raises(ValueError) as info:
        expert_modules.plan_workdir(str(workdir))
    text = _one_line(info.value)
    assert entry in text and "symbolic link" in text
