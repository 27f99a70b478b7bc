"""Publishing into a collection on a `tf.io.gfile` filesystem that has no rename (docs/hub_modules.md,
"Commit protocol").

The collection lives on TensorFlow's in-memory `ram://` filesystem and every rename of a path there
raises. Modules are staged on the local disk, uploaded file by file, and committed by the manifest,
written after them. A publish stopped in the middle of an upload, and one stopped between the upload
and the manifest write, are rerun: the rerun lists what is missing, replaces the orphan folders, and
republishes nothing already listed.
"""

import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf
from gfile_double import Killed

from bit_experts import atomic_files
from bit_experts.presets import create_model
from hub_export import collection, handles, publish

LABELS = ["entity", "animal", "plant", "cat"]
DOMAINS = ["animal", "plant"]
QUIET = {"validate_modules": False, "log": lambda *_: None}


def _save(workdir, name, model, info):
    rng = np.random.default_rng(len(name))
    for w in model.weights:
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    folder = workdir / "models" / name
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    base = {"name": name, "preset": "r14_micro", "resolution": 32, "upstream_dataset": "w"}
    (folder / "info.json").write_text(
        json.dumps({**base, "num_classes": model.num_classes, **info})
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gfile") / "work"
    root.mkdir()
    (root / "label_names.json").write_text(json.dumps(LABELS))
    domains = [
        {"name": d, "label_prior": [0.1, 0.2, 0.3, 0.4][i:] + [0.1, 0.2, 0.3, 0.4][:i]}
        for i, d in enumerate(DOMAINS)
    ]
    (root / "expert_domains.json").write_text(json.dumps(domains))
    _save(
        root,
        "expert_animal",
        create_model("r14_micro", len(LABELS)),
        {"kind": "full", "slice": "animal"},
    )
    _save(root, "epn", create_model("r14_micro", len(DOMAINS)), {"kind": "epn", "experts": DOMAINS})
    return root


@pytest.fixture
def no_url_rename(monkeypatch):
    """Renames on the URL filesystem raise (local staging keeps its own renames)."""
    real_replace, real_rename = os.replace, os.rename

    def guarded(real):
        def call(src, dst, *args, **kwargs):
            if "://" in os.fspath(src) or "://" in os.fspath(dst) or "ram:" in os.fspath(dst):
                raise AssertionError(f"rename on the collection's filesystem: {src} -> {dst}")
            return real(src, dst, *args, **kwargs)

        return call

    def forbidden(*args, **kwargs):
        raise AssertionError(f"tf.io.gfile.rename called: {args}")

    monkeypatch.setattr(os, "replace", guarded(real_replace))
    monkeypatch.setattr(os, "rename", guarded(real_rename))
    monkeypatch.setattr(tf.io.gfile, "rename", forbidden)


def _listed(c):
    manifest = json.loads(atomic_files.read_bytes(f"{c}/manifest.json"))
    return {(e["name"], e["version"]): e["sha256"] for e in manifest["modules"]}


def _killed_on_call(monkeypatch, owner, name, number):
    """Makes `owner.name` raise Killed on its `number`-th call (1-based)."""
    real = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return real


def test_publish_to_ram_without_rename_resumes_after_kills_in_upload_and_before_listing(
    workdir, tmp_path, monkeypatch, no_url_rename
):
    monkeypatch.chdir(tmp_path)  # a `ram:` folder written here by mistake is caught below
    c = f"ram://publish-{uuid.uuid4().hex}/c"
    staging_before = {n for n in os.listdir("/tmp") if "staging" in n}

    # 1. Killed in the middle of the second module's upload (its third file).
    planned = [p.name for p in publish._plan([str(workdir)])[0]]
    assert len(planned) >= 2
    uploads = []
    real_upload = atomic_files.upload_file

    def upload(local, path):
        uploads.append(path)
        if f"/{planned[1]}/" in path and sum(f"/{planned[1]}/" in u for u in uploads) == 3:
            raise Killed
        return real_upload(local, path)

    monkeypatch.setattr(atomic_files, "upload_file", upload)
    with pytest.raises(Killed):
        publish.publish([str(workdir)], c, **QUIET)
    monkeypatch.setattr(atomic_files, "upload_file", real_upload)
    first = _listed(c)
    assert list(first) == [(planned[0], 1)]  # listed only once complete
    assert tf.io.gfile.exists(f"{c}/{planned[1]}/1")  # a partial, unlisted folder

    # 2. Killed after the next module's upload, in the manifest write that would list it.
    real_write = _killed_on_call(monkeypatch, collection, "write_manifest", 1)
    with pytest.raises(Killed):
        publish.publish([str(workdir)], c, **QUIET)
    monkeypatch.setattr(collection, "write_manifest", real_write)
    assert _listed(c) == first
    uploaded = atomic_files.walk_files(f"{c}/{planned[1]}/1")
    assert "saved_model.pb" in uploaded  # whole, but not committed

    # 3. The rerun lists the rest, republishing nothing already listed.
    written = publish.publish([str(workdir)], c, **QUIET)
    assert [e["name"] for e in written] == planned[1:]
    listed = _listed(c)
    assert set(listed) == {(name, 1) for name in planned}
    assert listed[(planned[0], 1)] == first[(planned[0], 1)]
    for (name, version), sha in listed.items():
        assert handles.module_sha256(f"{c}/{name}/{version}") == sha
    pool = collection.resolve_pool(c)  # checksums and signatures read through tf.io.gfile
    assert [e.name for e in pool] == list(planned)
    assert all(e.path.startswith(c + "/") for e in pool)
    priors = collection.label_priors(c)
    assert set(priors) <= set(planned) and priors
    assert collection.label_names(c) == LABELS
    assert publish.publish([str(workdir)], c, **QUIET) == []  # 4. nothing left to do
    assert sorted(atomic_files.listdir(c)) == sorted(
        ["manifest.json", "README.md"]
        + list(planned)
        + [
            os.path.basename(ref["file"])
            for ref in json.loads(atomic_files.read_bytes(f"{c}/manifest.json"))[
                "upstream"
            ].values()
        ]
    )
    assert {n for n in os.listdir("/tmp") if "staging" in n} == staging_before  # local staging gone
    assert os.listdir(tmp_path) == []
    tf.io.gfile.rmtree(c.rsplit("/", 1)[0])


# --- local-only outputs refuse a URL in one line (issue 13, section 4 review) ----------------------


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """An empty local working folder, checked empty afterwards (a local `ram:` folder fails)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert os.listdir(tmp_path) == [], "a URL was written to the local disk"


def test_save_module_and_import_checkpoint_refuse_a_url_output_dir(empty_cwd):
    """Before, both wrote a local folder `./ram:/...` (or `./gs:/...`) and exited 0."""
    from hub_export import import_bit_checkpoint, module

    url = f"ram://save-module-{uuid.uuid4().hex}/m"
    with pytest.raises(ValueError, match=r"^output_dir='ram://.*' is a URL; .*then publish it"):
        module.save_module(None, url)
    with pytest.raises(ValueError, match=r"^--output_dir='gs://b/m' is a URL; .*--collection_dir"):
        import_bit_checkpoint.import_checkpoint("missing.npz", "gs://b/m")  # before any loading
    assert not tf.io.gfile.exists(url)


def test_publish_from_a_url_workdir_is_one_clear_line(empty_cwd):
    """Before: 'work directory <cwd>/ram:/w does not exist' (a local path made of the URL)."""
    from hub_export import expert_modules

    with pytest.raises(ValueError) as caught:
        expert_modules.plan_workdir("ram://w")
    message = str(caught.value)
    assert (
        message.startswith("--workdir='ram://w' is a URL") and "copy it to a local disk" in message
    )
    assert "\n" not in message
