"""Image-folder tasks: layout, class order, seeded splits and clear errors."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from vtab_eval import tasks

# Each class gets its own colour so a loaded image tells which class folder it came from.
COLOURS = {"b_red": (255, 0, 0), "a_green": (0, 255, 0), "c_blue": (0, 0, 255)}


def _write_images(split_dir, counts, mode="RGB", ext=".png"):
    for name, count in counts.items():
        os.makedirs(os.path.join(split_dir, name), exist_ok=True)
        for i in range(count):
            image = Image.new("RGB", (5 + i % 3, 4), COLOURS[name]).convert(mode)
            image.save(os.path.join(split_dir, name, f"{i:04d}{ext}"))


def _load_all(task, split, image_size=4):
    examples = list(task.load(split, image_size=image_size).as_numpy_iterator())
    return np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])


def test_folder_with_test_dir(tmp_path):
    _write_images(tmp_path / "train", {"b_red": 3, "a_green": 2, "c_blue": 2})
    _write_images(tmp_path / "test", {"b_red": 1, "c_blue": 2}, ext=".jpg")
    task = tasks.get_task(f"folder:{tmp_path}")
    assert task.class_names == ("a_green", "b_red", "c_blue")  # sorted: label = index
    assert task.num_classes == 3 and task.tfds_name is None and task.group is None
    assert set(tasks.SPLIT_NAMES) == set(task.splits)

    images, labels = _load_all(task, "train800")
    assert images.shape == (7, 4, 4, 3) and sorted(labels) == [0, 0, 1, 1, 1, 2, 2]
    # The colour of each image matches its label's class.
    channel_of_label = {0: 1, 1: 0, 2: 2}  # a_green, b_red, c_blue
    dominant = images.mean(axis=(1, 2)).argmax(axis=1)
    assert dominant.tolist() == [channel_of_label[label] for label in labels]
    test = list(task.load("test").as_numpy_iterator())  # native sizes: 5, 6 and 7 wide
    assert sorted(e["label"] for e in test) == [1, 2, 2]
    assert [e["image"].shape for e in test] == [(4, 5, 3), (4, 5, 3), (4, 6, 3)]
    for e in test:
        assert e["image"].dtype == np.float32 and 0.0 <= e["image"].min() <= e["image"].max() <= 1
        assert e["image"].mean(axis=(0, 1)).argmax() == channel_of_label[e["label"]]


def test_folder_without_test_dir_is_a_seeded_split(tmp_path):
    _write_images(tmp_path / "train", {"b_red": 6, "a_green": 4}, mode="L")  # grey PNGs
    task = tasks.get_task(f"folder:{tmp_path}")
    train = task.files["trainval"][0]
    test = task.files["test"][0]
    assert len(test) == 2 and len(train) == 8 and not set(train) & set(test)
    assert task.files["train800"][0] == train  # fewer than 800: all of the pool
    assert "no test/ folder" in task.splits["test"]
    # Same folder, same order; another seed, another order.
    assert tasks.get_task(f"folder:{tmp_path}").files == task.files
    other = tasks.make_folder_task(str(tmp_path), seed=1)
    assert other.files["trainval"][0] + other.files["test"][0] != train + test
    images, labels = _load_all(task, "test")
    assert images.shape == (2, 4, 4, 3)  # grey tiled to 3 channels
    # Tiled copies of one channel: bit-identical, any tolerance is moot (default rtol 1e-7).
    np.testing.assert_allclose(images[..., 0], images[..., 2])
    with pytest.raises(ValueError, match="Split 'val200' .* is empty"):
        task.load("val200")


def test_folder_splits_follow_vtab_positions(tmp_path):
    _write_images(tmp_path / "train", {"b_red": 520, "a_green": 510})
    os.makedirs(tmp_path / "test" / "a_green")
    _write_images(tmp_path / "test", {"a_green": 1})
    files = tasks.get_task(f"folder:{tmp_path}").files
    pool = files["trainval"][0]
    assert files["train800"][0] == pool[:800] and files["val200"][0] == pool[800:1000]
    assert files["train800val200"][0] == pool[:1000]
    assert files["train"][0] == pool[:800] + pool[1000:] and files["val"] == files["val200"]
    labels = np.array(files["trainval"][1])
    assert 300 < labels[:800].sum() < 500  # shuffled, not sorted by class


@pytest.mark.parametrize(
    "layout, error, pattern",
    [
        ({}, FileNotFoundError, "has no train/ folder"),
        ({"train/a_green": 1}, ValueError, "1 class folder"),
        ({"train/a_green": 1, "train/b_red": 0}, ValueError, "holds no images"),
        ({"train/a_green": 1, "train/b_red": 1, "test/c_blue": 1}, ValueError, "c_blue"),
    ],
)
def test_bad_folders_raise_clear_errors(tmp_path, layout, error, pattern):
    for folder, count in layout.items():
        split, name = folder.split("/")
        os.makedirs(tmp_path / split / name)
        _write_images(tmp_path / split, {name: count})
    with pytest.raises(error, match=pattern) as info:
        tasks.get_task(f"folder:{tmp_path}")
    assert str(tmp_path) in str(info.value) and "train/<class_name>" in str(info.value)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere' does not exist"):
        tasks.get_task(f"folder:{tmp_path / 'nowhere'}")


def test_folder_task_takes_its_group_from_task_json(tmp_path):
    _write_images(tmp_path / "train", {"b_red": 2, "a_green": 2})
    assert tasks.make_folder_task(str(tmp_path)).group is None
    (tmp_path / "task.json").write_text('{"name": "x", "group": "structured"}')
    assert tasks.make_folder_task(str(tmp_path)).group == "structured"
    (tmp_path / "task.json").write_text('{"group": "other"}')  # Not a VTAB group: none.
    assert tasks.make_folder_task(str(tmp_path)).group is None


@pytest.mark.parametrize("link", ["image", "class_folder", "split_folder", "task_json"])
def test_a_link_leading_outside_the_folder_is_refused_before_anything_is_read(tmp_path, link):
    outside, root = tmp_path / "outside", tmp_path / "task"
    _write_images(outside / "train", {"b_red": 2, "a_green": 2})
    (outside / "task.json").write_text('{"group": "natural"}')
    _write_images(root / "train", {"b_red": 2, "a_green": 2})
    target = {
        "image": ("train/a_green/0000.png", "train/a_green/0000.png"),
        "class_folder": ("train/a_green", "train/a_green"),
        "split_folder": ("train", "train"),
        "task_json": ("task.json", "task.json"),
    }[link]
    inside = root / target[0]
    if inside.is_dir():
        shutil.rmtree(inside)
    elif inside.exists():
        inside.unlink()
    inside.symlink_to(outside / target[1])
    with pytest.raises(ValueError, match=r"leaves .*through the symbolic link") as err:
        tasks.make_folder_task(str(root))
    assert len(str(err.value).splitlines()) == 1 and str(outside) in str(err.value)


def test_a_link_to_elsewhere_inside_the_folder_is_read_like_its_target(tmp_path):
    _write_images(tmp_path / "train", {"b_red": 2, "a_green": 2})
    shared = tmp_path / "shared.png"
    os.replace(tmp_path / "train" / "a_green" / "0001.png", shared)
    (tmp_path / "train" / "a_green" / "0001.png").symlink_to(shared)
    task = tasks.make_folder_task(str(tmp_path))
    every = [p for paths, _ in task.files.values() for p in paths]
    assert str(tmp_path / "train" / "a_green" / "0001.png") in every
    images, labels = _load_all(task, "trainval")
    assert images.shape[0] == len(task.files["trainval"][0])


def test_a_folder_task_is_named_by_its_folder_and_names_never_collide(tmp_path):
    for where, counts in (("a/pets", {"b_red": 3, "a_green": 2}), ("b/pets", {"b_red": 2})):
        _write_images(tmp_path / where / "train", {**counts, "c_blue": 2})
    _write_images(tmp_path / "dtd" / "train", {"b_red": 2, "c_blue": 2})
    a, b = (tasks.get_task(f"folder:{tmp_path / w}") for w in ("a/pets", "b/pets"))
    assert (a.name, b.name) == ("pets", "pets") and a.root == str(tmp_path / "a" / "pets")
    # A copy elsewhere keeps its name and fingerprint; a relative path gives the same task.
    shutil.copytree(tmp_path / "a" / "pets", tmp_path / "copy" / "pets")
    copy = tasks.get_task(f"folder:{tmp_path / 'copy' / 'pets'}")
    assert (copy.name, copy.fingerprint()) == (a.name, a.fingerprint())
    relative = tasks.get_task("folder:" + os.path.relpath(tmp_path / "a" / "pets"))
    assert (relative.name, relative.fingerprint()) == (a.name, a.fingerprint())
    # Two tasks of one name: each folder task gets 8 hex digits of its fingerprint; one task
    # given twice (or a copy of it) is one task.
    found = tasks.distinct_names([a, tasks.get_task("dtd"), b, copy])
    assert [t.name for t in found] == [
        f"pets~{a.fingerprint()[:8]}",
        "dtd",
        f"pets~{b.fingerprint()[:8]}",
    ]
    assert [t.fingerprint() for t in found] == [
        a.fingerprint(),
        found[1].fingerprint(),
        b.fingerprint(),
    ]
    # A folder named like a registered task never takes that name, even alone.
    named_dtd = tasks.get_task(f"folder:{tmp_path / 'dtd'}")
    assert named_dtd.name.startswith("dtd~") and len(named_dtd.name) == len("dtd~") + 8
    assert tasks.distinct_names([named_dtd, tasks.get_task("dtd")])[0] is named_dtd
