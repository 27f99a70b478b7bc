"""The task bank: 12+ VTAB-1k tasks with groups, near/structured/far kinds and recorded knobs."""

import collections
import json
import os

import numpy as np
import pytest

from bit_experts import world
from bit_experts.world import downstream, fonts, glyph_tasks, inventory, render

SIZE = 16
TEST = 40  # At least one test image per class of every bank task (at most 38).


@pytest.fixture(scope="module")
def bank():
    return {
        name: world.build_task(name, seed=0, image_size=SIZE, test_images=TEST)
        for name in world.BANK
    }


def _leaves_below(node, edges):
    children = collections.defaultdict(list)
    for parent, child in edges:
        children[parent].append(child)
    stack, leaves = [node], set()
    while stack:
        n = stack.pop()
        if n in children:
            stack.extend(children[n])
        else:
            leaves.add(n)
    return leaves


def test_demo_tasks_keep_their_streams_and_have_no_knobs():
    # Their pixels depend only on (stream, seed) and the unchanged builders.
    assert world.DEMO_TASKS == ("digits", "greek_lower_heldout_fonts", "glyph_count", "textures")
    assert [downstream._STREAMS[t] for t in world.DEMO_TASKS] == [1, 2, 3, 4]
    assert len(set(downstream._STREAMS.values())) == len(downstream._STREAMS)
    assert not set(world.DEMO_TASKS) & set(world.KNOBS)


def test_bank_tasks_are_vtab_1k_with_groups(bank):
    assert len(world.BANK) >= 12 and len(set(world.BANK)) == len(world.BANK)
    for name, task in bank.items():
        assert task.name == name and task.group in ("natural", "specialized", "structured")
        assert task.train_images.shape == (1000, SIZE, SIZE, 3)
        assert task.train_images.dtype == task.test_images.dtype == np.uint8
        counts = np.bincount(task.train_labels, minlength=len(task.class_names))
        assert counts.max() - counts.min() <= 1 and counts.min() >= 10, name
        assert set(np.unique(task.test_labels)) == set(range(len(task.class_names))), name
        assert task.class_names == sorted(task.class_names)
        assert len(task.test_labels) == (797 if name == "digits_noisy" else TEST)
        assert task.train_images.std() > 5, name  # Not blank.


def test_bank_has_near_structured_and_far_tasks(bank):
    up = world.generate_upstream(seed=0, images_per_class=1, image_size=SIZE)
    nodes = {n for edge in up.hierarchy_edges for n in edge}
    near = {n: t.near_expert for n, t in bank.items() if t.near_expert}
    assert len(set(near.values())) >= 4 and set(near.values()) <= nodes - {up.root}
    upstream_chars = set(up.label_chars)
    for name, node in near.items():
        if "nuskhuri" not in name:  # Upstream classes of the node in unseen fonts.
            assert set(bank[name].class_names) <= _leaves_below(node, up.hierarchy_edges)
            classes = glyph_tasks.heldout_font_classes(node, glyph_tasks.CM_TEXT_FONTS)
            assert all(not set(c.fonts) & set(fonts.UPSTREAM_FONTS) for c in classes)
        else:  # Characters upstream never shows.
            chars = {c.char for c in glyph_tasks.heldout_char_classes(glyph_tasks.NUSKHURI)}
            assert chars and not chars & upstream_chars
            assert {inventory.node_name(c) for c in chars} == set(bank[name].class_names)
    structured = [n for n, t in bank.items() if t.group == "structured"]
    assert {"glyph_count", "glyph_position", "glyph_orientation"} <= set(structured)
    far = [n for n, t in bank.items() if t.near_expert is None and t.group != "structured"]
    assert len(far) >= 3 and {"digits_noisy", "textures_noisy"} <= set(far)


def test_bank_tasks_are_deterministic_and_seed_dependent():
    for name in ("glyph_orientation", "photo_patches"):
        a, b, c = (
            world.build_task(name, seed=s, image_size=SIZE, test_images=12) for s in (3, 3, 4)
        )
        assert a.train_images.tobytes() == b.train_images.tobytes()
        assert a.train_images.tobytes() != c.train_images.tobytes()


def test_orientation_classes_turn_counter_clockwise():
    # Class "090" draws with render angle -90 degrees: the glyph must match np.rot90 (a
    # counter-clockwise quarter turn) of its upright mask, not the clockwise one.
    size = 32
    letter = glyph_tasks.asymmetric_letters()[0]
    sampler = render.GlyphSampler([letter.char], [("DejaVuSans.ttf",)], size)
    mask = fonts.glyph_mask("DejaVuSans.ttf", letter.char, size)
    poses = render.Poses(
        *(np.array([[v]]) for v in (0, 1.0, -np.deg2rad(90.0), size / 2, size / 2))
    )
    drawn = sampler.bank.coverage(poses, size)[0]
    ccw = np.abs(drawn - np.rot90(mask, 1)).mean()
    cw = np.abs(drawn - np.rot90(mask, -1)).mean()
    assert ccw < 0.5 * cw
    assert (
        "090" in world.build_task("glyph_orientation", image_size=SIZE, test_images=10).class_names
    )


def test_task_json_records_group_and_knobs_and_other_knobs_are_refused(tmp_path, monkeypatch):
    out = str(tmp_path)
    (task_dir,) = world.write_downstream_tasks(
        out, image_size=SIZE, tasks=["textures_noisy"], test_images=10
    )
    meta = json.load(open(os.path.join(task_dir, "task.json"), encoding="utf-8"))
    assert meta["group"] == "natural" and meta["near_expert"] is None
    assert meta["knobs"] == json.loads(json.dumps(world.KNOBS["textures_noisy"]))
    index = json.load(open(os.path.join(out, "tasks.json"), encoding="utf-8"))["tasks"]
    assert [(t["name"], t["group"]) for t in index] == [("textures_noisy", "natural")]
    harder = {**world.KNOBS["textures_noisy"], "noise": 0.3}
    monkeypatch.setitem(downstream.KNOBS, "textures_noisy", harder)
    with pytest.raises(ValueError, match="another out_dir"):
        world.write_downstream_tasks(out, image_size=SIZE, tasks=["textures_noisy"], test_images=10)
