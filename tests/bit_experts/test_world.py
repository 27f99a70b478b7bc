"""Tests for the offline world: the generated upstream glyph dataset and the downstream folders."""

import collections
import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from bit_experts import world
from bit_experts.world import fonts, inventory, render

SIZE = 16  # Small images keep the suite fast; nothing below depends on the size.
PER_CLASS = 3


@pytest.fixture(scope="module")
def upstream():
    return world.generate_upstream(seed=0, images_per_class=PER_CLASS, image_size=SIZE)


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("downstream"))
    dirs = world.write_downstream_tasks(out, seed=0, image_size=SIZE, test_images=40)
    return out, dirs


def _children(edges):
    children = collections.defaultdict(list)
    for parent, child in edges:
        children[parent].append(child)
    return children


def _leaves_below(node, children):
    if node not in children:
        return {node}
    return set().union(*(_leaves_below(c, children) for c in children[node]))


def test_same_seed_gives_same_bytes_and_other_seed_differs(upstream):
    again = world.generate_upstream(seed=0, images_per_class=PER_CLASS, image_size=SIZE)
    other = world.generate_upstream(seed=1, images_per_class=PER_CLASS, image_size=SIZE)
    assert upstream.images.tobytes() == again.images.tobytes()
    np.testing.assert_array_equal(upstream.labels, again.labels)
    np.testing.assert_array_equal(upstream.font_ids, again.font_ids)
    assert upstream.hierarchy_edges == again.hierarchy_edges
    assert upstream.images.tobytes() != other.images.tobytes()
    assert not np.array_equal(upstream.labels, other.labels)


def test_images_and_labels_are_well_formed(upstream):
    n = len(upstream.label_names) * PER_CLASS
    assert upstream.images.shape == (n, SIZE, SIZE, 3) and upstream.images.dtype == np.uint8
    assert upstream.labels.dtype == np.int64 and upstream.labels.shape == (n,)
    assert set(np.bincount(upstream.labels).tolist()) == {PER_CLASS}
    assert len(set(upstream.label_names)) == len(upstream.label_names) == len(upstream.label_chars)
    assert upstream.font_ids.min() >= 0 and upstream.font_ids.max() < len(upstream.fonts)
    # Each image's font really has its character.
    for label, font_id in zip(upstream.labels[:200], upstream.font_ids[:200], strict=True):
        assert fonts.has_glyph(upstream.fonts[font_id], upstream.label_chars[label])


def test_hierarchy_is_a_deep_dag_with_many_sizeable_domains(upstream):
    edges = upstream.hierarchy_edges
    assert len(set(edges)) == len(edges)
    children = _children(edges)
    nodes = {n for edge in edges for n in edge}
    parents = collections.Counter(child for _, child in edges)
    assert [n for n in nodes if parents[n] == 0] == [upstream.root]

    # Kahn's algorithm visits every node exactly when there is no cycle; longest path = depth.
    indegree, depth = dict(parents), {upstream.root: 0}
    frontier, visited = [upstream.root], 0
    while frontier:
        node = frontier.pop()
        visited += 1
        for child in children.get(node, []):
            depth[child] = max(depth.get(child, 0), depth[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                frontier.append(child)
    assert visited == len(nodes)
    assert max(depth.values()) >= 3
    assert any(count > 1 for count in parents.values())  # Cross-cutting parents: not a tree.

    leaves = {n for n in nodes if n not in children}
    assert leaves == set(upstream.label_names)
    images_per_leaf = dict(
        zip(upstream.label_names, np.bincount(upstream.labels).tolist(), strict=True)
    )
    domain_sizes = {
        node: sum(images_per_leaf[leaf] for leaf in _leaves_below(node, children))
        for node in children
        if node != upstream.root
    }
    assert sum(size >= 10 * PER_CLASS for size in domain_sizes.values()) >= 8
    # Domains overlap: a capital letter is in its script's slice and in "capital_letters".
    latin, capitals = (_leaves_below(n, children) for n in ("latin", "capital_letters"))
    assert latin & capitals and latin - capitals and capitals - latin


def test_no_inventory_glyph_is_missing_or_the_notdef_box():
    for glyph in inventory.glyphs():
        assert glyph.fonts and set(glyph.fonts) <= set(fonts.UPSTREAM_FONTS)
        for name in glyph.fonts:
            assert fonts.has_glyph(name, glyph.char)
            mask = fonts.glyph_mask(name, glyph.char, SIZE)
            assert mask.mean() > 0.02, (glyph.name, name)
            assert np.abs(mask - fonts.notdef_mask(name, SIZE)).mean() > 0.05, (glyph.name, name)
    with pytest.raises(ValueError, match="no glyph"):
        fonts.glyph_mask("DejaVuSans.ttf", "\ue000", SIZE)


def test_every_rendered_glyph_is_visible():
    # Same poses and colours drawn with and without the glyph: the glyph must change the image.
    classes = inventory.glyphs()
    sampler = render.GlyphSampler([g.char for g in classes], [g.fonts for g in classes], SIZE)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(classes)), 2)
    poses = render.sample_poses(rng, sampler.mask_ids(rng, labels), SIZE)
    scenery = render.sample_scenery(rng, len(labels))
    blank = dataclasses.replace(poses, mask_ids=np.full_like(poses.mask_ids, -1))
    drawn = render.render(sampler.bank, poses, scenery, SIZE, [9]).astype(np.float32)
    empty = render.render(sampler.bank, blank, scenery, SIZE, [9]).astype(np.float32)
    change = np.abs(drawn - empty).mean(axis=-1)
    assert change.reshape(len(labels), -1).max(axis=1).min() > 40
    assert (change > 20).mean(axis=(1, 2)).min() > 0.02


def test_scripts_subset_keeps_their_classes_and_cross_links():
    up = world.generate_upstream(
        seed=0, images_per_class=1, image_size=SIZE, scripts=["latin", "greek"]
    )
    full = inventory.glyphs()
    assert up.label_names == [g.name for g in full if g.script in ("latin", "greek")]
    assert ("capital_letters", "greek_upper") in up.hierarchy_edges
    assert ("capital_letters", "cyrillic_upper") not in up.hierarchy_edges
    assert set(up.fonts) <= set(fonts.UPSTREAM_FONTS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"images_per_class": 0},
        {"image_size": 4},
        {"seed": -1},
        {"scripts": ["klingon"]},
        {"scripts": "latin"},
    ],
)
def test_bad_upstream_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        world.generate_upstream(**kwargs)


def test_downstream_folders_have_1000_balanced_train_pngs(tasks_dir):
    out, dirs = tasks_dir
    index = json.load(open(os.path.join(out, "tasks.json"), encoding="utf-8"))["tasks"]
    assert [t["name"] for t in index] == list(world.DEMO_TASKS)  # tasks=None: the demo's four.
    assert len(index) >= 4 and dirs == [os.path.join(out, t["path"]) for t in index]
    for meta in index:
        task_dir = os.path.join(out, meta["path"])
        for split, expected in (("train", 1000), ("test", meta["test_count"])):
            split_dir = os.path.join(task_dir, split)
            assert sorted(os.listdir(split_dir)) == sorted(meta["classes"])
            counts = [len(os.listdir(os.path.join(split_dir, c))) for c in meta["classes"]]
            assert sum(counts) == expected == meta[f"{split}_count"]
        assert max(counts) - min(counts) <= max(1, 0.2 * max(counts))  # Test split, roughly.
        train_counts = [
            len(os.listdir(os.path.join(task_dir, "train", c))) for c in meta["classes"]
        ]
        assert max(train_counts) - min(train_counts) <= 1
        assert meta["num_classes"] == len(meta["classes"]) >= 2
        assert meta["classes"] == sorted(meta["classes"])  # The folder loader's label order.
        assert meta["image_size"] == SIZE and meta["seed"] == 0
        assert meta["group"] in ("natural", "specialized", "structured") and meta["knobs"] == {}
        first = os.path.join(task_dir, "train", meta["classes"][0])
        with Image.open(os.path.join(first, sorted(os.listdir(first))[0])) as image:
            assert image.format == "PNG" and image.size == (SIZE, SIZE) and image.mode == "RGB"
    assert {t["name"]: t["test_count"] for t in index}["digits"] == 797
    assert not [n for n in os.listdir(out) if ".tmp-" in n]


def test_near_task_uses_held_out_fonts_of_one_upstream_domain(upstream, tasks_dir):
    out, _ = tasks_dir
    index = {t["name"]: t for t in json.load(open(os.path.join(out, "tasks.json")))["tasks"]}
    near = [t for t in index.values() if t["near_expert"] is not None]
    assert [t["name"] for t in near] == ["greek_lower_heldout_fonts"]
    domain = near[0]["near_expert"]
    children = _children(upstream.hierarchy_edges)
    assert domain in children and domain != upstream.root
    assert set(near[0]["classes"]) == _leaves_below(domain, children)
    assert not set(fonts.HELDOUT_FONTS) & set(upstream.fonts)
    assert not set(fonts.HELDOUT_FONTS) & set(fonts.UPSTREAM_FONTS)
    assert all(os.path.isfile(fonts.font_path(f)) for f in fonts.HELDOUT_FONTS)


def test_rerun_skips_complete_tasks_and_rejects_other_settings(tasks_dir):
    out, dirs = tasks_dir
    probe = os.path.join(dirs[1], "train")
    probe = os.path.join(probe, sorted(os.listdir(probe))[0])
    probe = os.path.join(probe, sorted(os.listdir(probe))[0])
    before = {p: os.stat(p) for p in (probe, os.path.join(dirs[1], "task.json"))}
    assert world.write_downstream_tasks(out, seed=0, image_size=SIZE, test_images=40) == dirs
    for path, stat in before.items():
        after = os.stat(path)
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    with pytest.raises(ValueError, match="another out_dir"):
        world.write_downstream_tasks(out, seed=1, image_size=SIZE, test_images=40)
    with pytest.raises(ValueError, match="tasks="):
        world.write_downstream_tasks(out, tasks=["imagenet"])


def test_build_task_is_deterministic_and_seed_dependent():
    a = world.build_task("textures", seed=3, image_size=SIZE, test_images=16)
    b = world.build_task("textures", seed=3, image_size=SIZE, test_images=16)
    c = world.build_task("textures", seed=4, image_size=SIZE, test_images=16)
    assert a.train_images.tobytes() == b.train_images.tobytes()
    assert a.train_images.tobytes() != c.train_images.tobytes()
    assert a.test_images.shape == (16, SIZE, SIZE, 3) and len(a.train_labels) == 1000
    with pytest.raises(ValueError, match="unknown downstream task"):
        world.build_task("nope")


def test_glyph_count_images_grow_with_the_count():
    # More glyphs cover more of the image: mean change from the median colour rises with the count.
    task = world.build_task("glyph_count", seed=0, image_size=32, test_images=12)
    images = task.train_images.astype(np.float32)
    spread = np.abs(images - np.median(images, axis=(1, 2), keepdims=True)).mean(axis=(1, 2, 3))
    per_class = [spread[task.train_labels == c].mean() for c in range(len(task.class_names))]
    assert per_class == sorted(per_class)


def test_describe_names_scripts_fonts_and_tasks():
    text = world.describe()
    for name in [*inventory.SCRIPTS, *fonts.HELDOUT_FONTS, *world.TASKS, "capital_letters"]:
        assert name in text
