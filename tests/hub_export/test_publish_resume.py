"""Publishing resumes and never loses a module: SIGKILL, a full disk, and a concurrent publisher.

The work directory here has two small models (a full expert with a label prior, and an EPN), so each
test exports few modules; docs/hub_modules.md describes the protocol under test.
"""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from bit_experts.presets import create_model
from hub_export import collection, identity, publish
from hub_export.collection_lock import LOCK_FILE

LABELS = ["entity", "animal", "plant", "cat"]
DOMAINS = ["animal", "plant"]
ROOT = pathlib.Path(__file__).resolve().parents[2]
QUIET = {"validate_modules": False, "log": lambda *_: None}


def _save(workdir, name, model, info):
    rng = np.random.default_rng(len(name))
    for w in model.weights:  # non-zero everywhere (heads start at zero)
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
    root = tmp_path_factory.mktemp("resume") / "work"
    root.mkdir()
    (root / "label_names.json").write_text(json.dumps(LABELS))
    domains = [
        {"name": d, "label_prior": [0.1, 0.2, 0.3, 0.4][i:] + [0.1, 0.2, 0.3, 0.4][:i]}
        for i, d in enumerate(DOMAINS)
    ]
    (root / "expert_domains.json").write_text(json.dumps(domains))
    expert = create_model("r14_micro", len(LABELS))
    _save(root, "expert_animal", expert, {"kind": "full", "slice": "animal"})
    epn = create_model("r14_micro", len(DOMAINS))
    _save(root, "epn", epn, {"kind": "epn", "experts": DOMAINS})
    return root


def _leftovers(c):
    return sorted(f for f in os.listdir(c) if f.startswith("."))


def _listed(c):
    manifest = json.loads((c / "manifest.json").read_text())
    return {(e["name"], e["version"]): e["sha256"] for e in manifest["modules"]}


def _run_killed(script, timeout=600):
    """Runs `script` in a fresh interpreter, which SIGKILLs itself at the point under test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def test_publish_killed_while_listing_resumes_after_a_full_disk_without_republishing(
    workdir, tmp_path, monkeypatch
):
    c = tmp_path / "c"
    # Killed by SIGKILL inside the atomic manifest write that would list the second module: the
    # temporary manifest is written, the module folder is in place, the lock and staging are held.
    _run_killed(
        "import os, signal\n"
        "from hub_export import collection, publish\n"
        "real_write, real_replace = collection.write_manifest, os.replace\n"
        "def replace(src, dst):\n"
        "    if dst.endswith('manifest.json'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real_replace(src, dst)\n"
        "def write_manifest(collection_dir, manifest):\n"
        "    if len(manifest['modules']) == 2:\n"
        "        os.replace = replace\n"
        "    return real_write(collection_dir, manifest)\n"
        "collection.write_manifest = write_manifest\n"
        f"publish.publish([{str(workdir)!r}], {str(c)!r}, validate_modules=False,\n"
        "                only=['expert_animal', 'epn'], log=print)\n"
    )
    first = _listed(c)
    assert list(first) == [("expert_animal", 1)]
    left = _leftovers(c)
    assert LOCK_FILE in left and any(f.startswith(".staging-") for f in left)
    assert any(f.startswith(".manifest.json.") and f.endswith(".tmp") for f in left)
    assert (c / "epn" / "1" / "saved_model.pb").exists()  # moved into place, never listed

    # The rerun meets a full disk while listing: one error, nothing half-listed.
    real_write = collection.write_manifest

    def full_disk(collection_dir, manifest):
        if any(e["name"] == "epn" for e in manifest["modules"]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(c / "manifest.json"))
        return real_write(collection_dir, manifest)

    monkeypatch.setattr(collection, "write_manifest", full_disk)
    with pytest.raises(OSError) as info:
        publish.publish([str(workdir)], str(c), only=["expert_animal", "epn"], **QUIET)
    line = publish.error_line(info.value, str(c))
    assert "no space left" in line and "\n" not in line
    assert _listed(c) == first and [e.name for e in collection.resolve_pool(c)] == ["expert_animal"]
    assert LOCK_FILE not in _leftovers(c)  # released by the failed publisher

    # With space again, the rerun lists the missing module only, and cleans every leftover.
    monkeypatch.setattr(collection, "write_manifest", real_write)
    messages = []
    written = publish.publish(
        [str(workdir)], str(c), only=["expert_animal", "epn"], validate_modules=False,
        log=messages.append,
    )  # fmt: skip
    assert [(w["name"], w["version"]) for w in written] == [("epn", 1)]
    assert any("expert_animal: already listed as expert_animal/1" in m for m in messages)
    listed = _listed(c)
    assert listed[("expert_animal", 1)] == first[("expert_animal", 1)]  # not republished
    assert sorted(listed) == [("epn", 1), ("expert_animal", 1)]
    assert _leftovers(c) == []
    assert sorted(os.listdir(c / "epn")) == ["1"]
    pool = collection.resolve_pool(c)  # verifies every checksum
    assert sorted(collection.label_priors(c)) == ["expert_animal"]
    np.testing.assert_allclose(collection.label_priors(c)["expert_animal"], [0.1, 0.2, 0.3, 0.4])
    assert publish.publish([str(workdir)], str(c), **QUIET) == []  # a finished publish: no-op
    assert _listed(c) == listed and len(pool) == 2


def test_demo_publish_stage_killed_while_exporting_resumes(workdir, tmp_path, monkeypatch):
    from hub_export import validate
    from vtab_eval import offline_demo

    # The demo validates every module; validation itself is tested in test_validate.py.
    checked = []
    monkeypatch.setattr(
        validate, "validate_module", lambda path, role, **_: checked.append(role) or {"ok": 1}
    )

    c = tmp_path / "collection"
    # Killed by SIGKILL right after the second module is saved into staging: the first is listed,
    # so the manifest exists, which the stage used to take for "done".
    _run_killed(
        "import os, signal\n"
        "from hub_export import module, validate\n"
        "from vtab_eval import offline_demo\n"
        "validate.validate_module = lambda path, role, **_: {'ok': 1}\n"
        "real, saved = module.save_module, []\n"
        "def save_module(*args, **kwargs):\n"
        "    real(*args, **kwargs)\n"
        "    saved.append(1)\n"
        "    if len(saved) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "module.save_module = save_module  # publish calls hub_export.module.save_module\n"
        f"offline_demo.run_publish({str(workdir)!r}, {str(c)!r}, print)\n"
    )
    first = _listed(c)
    assert list(first) == [("expert_animal", 1)]
    written = offline_demo.run_publish(str(workdir), str(c), lambda *_: None)
    assert [w["path"] for w in written] == ["epn/1"]  # the listed module is not republished
    assert checked == ["epn"]  # validated before listing
    assert _listed(c)[("expert_animal", 1)] == first[("expert_animal", 1)]
    listed = _listed(c)
    assert offline_demo.run_publish(str(workdir), str(c), lambda *_: None) == []
    assert _listed(c) == listed and _leftovers(c) == []
    assert [e.name for e in collection.resolve_pool(c)] == ["expert_animal", "epn"]


def test_concurrent_publisher_is_merged_and_its_files_kept(workdir, tmp_path, monkeypatch):
    """Publisher B runs start to finish while A exports: A read the collection before B listed
    anything, and must neither drop B's module nor delete B's label priors."""
    c = tmp_path / "c"
    real_stage = publish._stage_module
    nested = []

    def stage_then_let_b_publish(planned, *args):
        entry = real_stage(planned, *args)
        if planned.name == "epn" and not nested:
            nested.append(publish.publish([str(workdir)], str(c), only=["expert_animal"], **QUIET))
        return entry

    monkeypatch.setattr(publish, "_stage_module", stage_then_let_b_publish)
    written = publish.publish([str(workdir)], str(c), only=["epn"], **QUIET)
    assert [w["path"] for w in written] == ["epn/1"]
    assert [w["path"] for w in nested[0]] == ["expert_animal/1"]
    pool = collection.resolve_pool(c)
    assert sorted(e.name for e in pool) == ["epn", "expert_animal"]
    manifest = json.loads((c / "manifest.json").read_text())
    for ref in manifest["upstream"].values():
        assert (c / ref["file"]).is_file()
    assert sorted(collection.label_priors(c)) == ["expert_animal"]
    upstream = sorted(f for f in os.listdir(c) if f.startswith(("label_names-", "label_priors-")))
    assert upstream == sorted(ref["file"] for ref in manifest["upstream"].values())
    assert _leftovers(c) == []


def test_identity_is_the_weights_fingerprint_and_follows_the_weights(workdir, tmp_path):
    from hub_export.expert_modules import backbone_copy, load_model
    from hub_export.module import HubModule

    model = load_model(str(workdir / "models" / "expert_animal"))
    settings = {"role": "feature_vector", "output": "features"}
    first = identity.weights_fingerprint(HubModule(backbone_copy(model), "features"), settings)
    copy = backbone_copy(model)  # a second model in this process: Keras may rename its variables
    assert identity.weights_fingerprint(HubModule(copy, "features"), settings) == first
    assert identity.weights_fingerprint(HubModule(copy, "features"), {"role": "x"}) != first
    copy.weights[-1].assign(copy.weights[-1].numpy() + 1e-3)
    assert identity.weights_fingerprint(HubModule(copy, "features"), settings) != first

    # module_identity: the fingerprint from any form of the entry; the checksum without one.
    entry = {"metadata": {identity.FINGERPRINT_FIELD: "f" * 64}, "sha256": "a" * 64}
    assert identity.module_identity(entry) == "f" * 64
    assert identity.module_identity({"metadata": {}, "sha256": "a" * 64}) == "a" * 64
    plain = tmp_path / "third_party"
    plain.mkdir()
    (plain / "saved_model.pb").write_bytes(b"x")
    assert identity.module_identity(str(plain)) == collection.handles.module_sha256(str(plain))
