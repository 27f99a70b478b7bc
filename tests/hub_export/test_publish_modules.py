"""Issue 14: metadata inside the module, any module joins a collection, pages for TF Hub and Keras 3.

One tiny imported BiT checkpoint (published with `import_bit_checkpoint.publish_checkpoint`, as
`--collection_dir` does) and one third-party-style module without metadata (`--module=DIR:...`)
keep the cost at two exports; the clash and rename rules are checked on plans, which export nothing.
"""

import json
import os
import shutil

import numpy as np
import pytest
from reference_bit import random_bit_checkpoint

from hub_export import added_modules, collection, identity, import_bit_checkpoint, publish
from hub_export.collection import CollectionError
from hub_export.module import METADATA_ASSET, METADATA_FILE, HubModule, read_metadata, save_module

UNITS, WIDTH, GROUPS = (1, 1, 1, 1), 0.125, 4
RESOLUTION = 40  # not BiT's 224: the collection must keep the module's own
LICENSE, CITATION = "Apache-2.0", "@misc{tiny, title={A tiny test checkpoint}}"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modules")
    np.savez(tmp / "BiT-Tiny.npz", **random_bit_checkpoint(UNITS, WIDTH, groups=GROUPS, seed=3))
    c = tmp / "collection"
    written = import_bit_checkpoint.publish_checkpoint(
        str(tmp / "BiT-Tiny.npz"),
        str(c),
        groups=GROUPS,
        resolution=RESOLUTION,
        license=LICENSE,
        citation=CITATION,
        log=lambda *_: None,
    )
    return tmp, c, written


def test_checkpoint_is_published_with_its_metadata_inside_the_savedmodel(published):
    import tensorflow_hub as hub

    _, c, written = published
    assert [(e["name"], e["version"], e["kind"]) for e in written] == [("bit-tiny", 1, "baseline")]
    module_dir = c / "bit-tiny" / "1"
    metadata = written[0]["metadata"]
    assert metadata["resolution"] == RESOLUTION and metadata["license"] == LICENSE
    assert metadata["version"] == 1 and metadata["citation"] == CITATION
    inside = json.loads(hub.load(str(module_dir)).get_metadata().numpy())
    assert inside == metadata == read_metadata(module_dir)
    assert written[0]["validation"]["output_dim"] == metadata["output_dim"] == 256
    # Listed, checksummed and fingerprinted like every module; the Keras archive is inside it.
    (entry,) = collection.resolve_pool(c)
    assert entry.metadata == metadata and entry.sha256 == written[0]["sha256"]
    assert identity.module_identity(entry) == metadata[identity.FINGERPRINT_FIELD]
    from bit_experts import expert_archive

    archive = os.path.join(module_dir, expert_archive.ARCHIVE_PATH)
    assert expert_archive.read_metadata(archive) == metadata


def test_metadata_is_read_from_the_savedmodel_when_the_sidecar_is_missing(published, tmp_path):
    from vtab_eval import embed

    _, c, written = published
    copy = tmp_path / "copy"
    shutil.copytree(c / "bit-tiny" / "1", copy)
    os.remove(copy / METADATA_FILE)
    assert read_metadata(copy) == written[0]["metadata"]
    (tmp_path / "pool.txt").write_text(f"{copy}\n")
    (entry,) = collection.resolve_pool(str(tmp_path / "pool.txt"))
    # vtab_eval reads it through the pool: the module is ranked at its own resolution.
    assert entry.name == "bit-tiny" and entry.kind == "baseline"
    assert embed.module_resolution(entry) == RESOLUTION
    (copy / METADATA_ASSET).write_text("{not json")
    with pytest.raises(ValueError, match="bit_experts_metadata.json: module metadata is not valid"):
        read_metadata(copy)


def test_module_page_usage_runs_from_a_copied_collection(published, tmp_path):
    _, c, _ = published
    page = (c / "bit-tiny" / "1" / "doc.md").read_text()
    # The module is named by its path in the collection, never by the publisher's own path.
    assert 'handle = "COLLECTION/bit-tiny/1"' in page and str(c) not in page
    assert "hub.KerasLayer(handle, trainable=True" in page
    assert "bit_experts.load_expert(handle)" in page and "hub.load(handle).get_metadata()" in page
    assert f"<!-- license: {LICENSE} -->" in page and CITATION in page
    # Imported, not trained here: the page says where it comes from, not the upstream dataset.
    assert "imported from the checkpoint `BiT-Tiny.npz`" in page
    assert "trained on the upstream dataset" not in page
    # Its snippets run as they are from a copy, COLLECTION being the copy's folder.
    copy = tmp_path / "moved"
    shutil.copytree(c, copy)
    snippets = [b.split("```", 1)[0] for b in page.split("```python\n")[1:]]
    for code in snippets:
        scope = {}
        exec(code.replace('"COLLECTION/', f'"{copy}/'), scope)  # noqa: S102 - our own page
        assert scope.get("features", scope.get("outputs")).shape == (8, 256)
    assert len(snippets) == 2
    readme = (c / "README.md").read_text()
    assert readme.startswith(f"# Collection bit-experts/{c.name}/1\n")
    assert LICENSE in readme and CITATION in readme


def test_rerun_skips_and_a_third_party_module_joins_under_a_new_collection_version(published):
    import tensorflow as tf

    tmp, c, _ = published
    again = import_bit_checkpoint.publish_checkpoint(
        str(tmp / "BiT-Tiny.npz"),
        str(c),
        groups=GROUPS,
        resolution=RESOLUTION,
        license=LICENSE,
        citation=CITATION,
        log=lambda *_: None,
    )
    assert again == []  # same checkpoint and options: already listed
    from bit_experts.presets import create_model

    third = tmp / "third_party" / "7"
    save_module(HubModule(create_model("r14_micro", 0), "features"), third)  # no metadata
    assert read_metadata(third) is None
    before = json.loads((c / "manifest.json").read_text())
    written = publish.publish(
        (), c, modules=[f"{third}:name=tp,resolution=24"], validate_modules=False, log=print
    )
    (entry,) = written
    assert (entry["name"], entry["kind"], entry["version"]) == ("tp", "third_party", 1)
    m = entry["metadata"]
    assert m["resolution"] == 24 and m["source"] == {"module": str(third)}
    assert m["output_dim"] == m["feature_dim"] == create_model("r14_micro", 0).feature_dim
    # Its SavedModel is copied unchanged; only the sidecar and the page are new.
    module_dir = c / "tp" / "1"
    assert not (module_dir / METADATA_ASSET).exists() and not (module_dir / "keras").exists()
    assert read_metadata(module_dir) == m
    page = (module_dir / "doc.md").read_text()
    assert "load_expert" not in page and "get_metadata" not in page
    assert "## Citation\n\nnot given by the publisher" in page
    assert "added as it is; the collection does not record its data" in page
    after = json.loads((c / "manifest.json").read_text())
    assert (before.get("version", 1), after["version"]) == (1, 2)
    assert (c / "README.md").read_text().startswith(f"# Collection bit-experts/{c.name}/2\n")
    assert [e.name for e in collection.resolve_pool(c)] == ["bit-tiny", "tp"]
    x = tf.random.uniform([2, 24, 24, 3], seed=1)
    import tensorflow_hub as hub

    np.testing.assert_array_equal(hub.load(str(module_dir))(x), hub.load(str(third))(x))


def test_name_clash_between_sources_is_resolved_by_rename(published):
    tmp, c, _ = published
    module = str(c / "bit-tiny" / "1")
    with pytest.raises(
        CollectionError, match=r"two sources export .*'bit-tiny'.*--rename=bit-tiny@2"
    ):
        publish._plan([], [module, module])
    with pytest.raises(CollectionError, match=r"2 sources plan 'bit-tiny'.*bit-tiny@K:copy"):
        publish._plan([], [module, module], renames=["bit-tiny:copy"])
    planned, names = publish._plan([], [module, module], renames=["bit-tiny@2:copy"])
    assert [p.name for p in planned] == ["bit-tiny", "copy"] and names is None
    assert planned[0].source_fingerprint != planned[1].source_fingerprint
    assert planned[1].make()[1]["name"] == "bit-tiny"  # renamed when staged (rename_metadata)
    assert publish.rename_metadata(planned[1].make()[1], planned[1].renames)["name"] == "copy"
    for bad, match in [
        ("nope:x", "no source plans a module named 'nope'"),
        ("bit-tiny@3:x", "only 2 source"),
        ("bit-tiny@2:Bad Name", "expected OLD:NEW"),
    ]:
        with pytest.raises(CollectionError, match=match):
            publish._plan([], [module, module], renames=[bad])


def test_rename_updates_the_names_a_packed_module_and_its_experts_hold():
    metadata = {
        "name": "adapters",
        "experts": [{"name": "cat", "module": "adapter_cat"}, {"name": "dog", "module": "x"}],
    }
    renamed = publish.rename_metadata(metadata, {"adapters": "ad2", "adapter_cat": "cat2"})
    assert renamed["name"] == "ad2"
    assert [e["module"] for e in renamed["experts"]] == ["cat2", "x"]
    expert = publish.rename_metadata(
        {"name": "adapter_cat", "packed_module": "adapters"}, {"adapters": "ad2"}
    )
    assert expert == {"name": "adapter_cat", "packed_module": "ad2"}


@pytest.mark.parametrize(
    "spec, match",
    [
        ("/m:colour=red", "unknown option 'colour'"),
        ("/m:name=Bad", "lower-case"),
        ("/m:kind=expert", "kind 'expert' must be one of"),
        ("/m:resolution=0", "positive integer"),
        ("/m:resolution=-3", "positive integer"),
    ],
)
def test_bad_module_specs_are_refused_with_one_line(spec, match):
    with pytest.raises(CollectionError, match=match):
        added_modules.parse_spec(spec)


def test_module_spec_options_and_plain_handles():
    assert added_modules.parse_spec("/a/b:name=x,kind=full,resolution=64") == (
        "/a/b",
        {"name": "x", "kind": "full", "resolution": 64},
    )
    assert added_modules.parse_spec("/a/b") == ("/a/b", {})
    url = "https://tfhub.dev/google/bit/m-r50x1/1"
    assert added_modules.parse_spec(url) == (url, {})
    assert added_modules.parse_spec(f"{url}:name=bit") == (url, {"name": "bit"})


def test_missing_module_and_wrong_role_are_refused(published, tmp_path):
    _, c, _ = published
    with pytest.raises(CollectionError, match="does not exist"):
        publish._plan([], [str(tmp_path / "absent")])
    classifier = tmp_path / "classifier"
    shutil.copytree(c / "bit-tiny" / "1", classifier)
    (classifier / METADATA_FILE).write_text(json.dumps({"name": "c", "role": "classifier"}))
    with pytest.raises(CollectionError, match="a classifier module cannot be added on its own"):
        publish._plan([], [str(classifier)])


def test_command_line_takes_module_and_rename_flags_and_fails_in_one_line(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub_export.publish",
            f"--module={tmp_path}:colour=red",
            "--rename=a:b",
            "--license=MIT",
            f"--collection_dir={tmp_path / 'c'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"publish: error: --module={tmp_path}:colour=red: unknown option 'colour'; "
        "expected some of ('name', 'kind', 'resolution')"
    )
    assert not (tmp_path / "c").exists()  # nothing written before every source is read


def test_renumbered_module_gets_its_new_version_in_every_copy_of_its_metadata(published, tmp_path):
    """When another publisher took the version meanwhile, the staged module is renumbered: the
    sidecar, the asset `get_metadata()` reads, the Keras archive and the page must all follow."""
    from bit_experts import expert_archive
    from hub_export import handles

    _, c, written = published
    staged = tmp_path / "staging" / "bit-tiny"
    shutil.copytree(c / "bit-tiny" / "1", staged)
    entry = publish._renumber(str(staged), written[0], 5, "bit-experts")
    assert (entry["version"], entry["path"], entry["metadata"]["version"]) == (5, "bit-tiny/5", 5)
    assert read_metadata(staged) == entry["metadata"]
    assert json.loads((staged / METADATA_ASSET).read_text()) == entry["metadata"]
    archive = staged / expert_archive.ARCHIVE_PATH
    assert expert_archive.read_metadata(str(archive)) == entry["metadata"]
    page = (staged / "doc.md").read_text()
    assert page.startswith("# Module bit-experts/bit-tiny/5\n")
    assert 'handle = "COLLECTION/bit-tiny/5"' in page
    assert entry["sha256"] == handles.module_sha256(str(staged)) != written[0]["sha256"]


def test_a_second_baseline_is_listed_with_a_warning(published, tmp_path):
    from bit_experts.presets import create_model

    _, c, _ = published
    copy = tmp_path / "collection"
    shutil.copytree(c, copy)
    other = tmp_path / "other_b"
    save_module(HubModule(create_model("r14_micro", 0), "features"), other)
    lines = []
    (entry,) = publish.publish(
        (),
        copy,
        modules=[f"{other}:name=b2,kind=baseline,resolution=24"],
        validate_modules=False,
        log=lines.append,
    )
    assert entry["kind"] == "baseline"
    warned = [line for line in lines if line.startswith("warning:")]
    assert warned == [
        f"warning: {copy}: 2 baseline modules (bit-tiny, b2): the baseline selector, the "
        "fallback and B's fine-tunes use the first, bit-tiny; a pool should hold one"
    ]
    with pytest.warns(collection.BaselineWarning, match="2 baseline modules"):
        pool = collection.resolve_pool(copy)
    assert [e.name for e in pool if e.kind == "baseline"] == ["bit-tiny", "b2"]
