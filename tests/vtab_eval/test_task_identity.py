"""Task identity and bad input: fingerprints, undecodable images, splits too small (issues 13, 22)."""

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import vtab_eval_toys as toys
from PIL import Image

from vtab_eval import tasks
from vtab_eval.tasks import base, folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_registered_fingerprints_are_distinct_and_stable_across_processes():
    names = tasks.list_tasks()
    here = {name: tasks.get_task(name).fingerprint() for name in names}
    assert len(set(here.values())) == len(names)  # clevr_count vs clevr_distance differ by label
    assert all(len(f) == 64 and int(f, 16) >= 0 for f in here.values())
    code = "from vtab_eval import tasks; print(tasks.get_task('clevr_count').fingerprint())"
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONHASHSEED="123")
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert other.stdout.strip() == here["clevr_count"]


def test_fingerprint_covers_the_declared_versions_and_the_data_valued_definition(monkeypatch):
    task = tasks.get_task("clevr_count")
    first = task.fingerprint()
    assert task.fingerprint() is first  # cached on the instance
    changed = [
        dataclasses.replace(task, version="1.0.1"),
        dataclasses.replace(task, tfds_name="clevr:3.1.0"),
        dataclasses.replace(task, decode={"image": True, "objects": {"size": True}}),
        dataclasses.replace(task, metric="mean_per_class_accuracy"),
        dataclasses.replace(task, augmentation=tasks.get_task("cifar100").augmentation),
        dataclasses.replace(task, splits={**task.splits, "test": "test"}),
    ]
    assert len({t.fingerprint() for t in changed} | {first}) == len(changed) + 1
    # The label code counts only through the version (test_task_registry.py guards the bumps).
    assert dataclasses.replace(task, preprocess=lambda f: f).fingerprint() == first
    monkeypatch.setattr(base, "IMAGE_FORMAT_VERSION", base.IMAGE_FORMAT_VERSION + 1)
    assert dataclasses.replace(task).fingerprint() != first
    with pytest.raises(ValueError, match=r"version must be 'MAJOR.MINOR.PATCH', got '1.0'"):
        dataclasses.replace(task, version="1.0")


def _write_pixel(path, value):
    image = np.array(Image.open(path))
    image[0, 0, 0] = value
    Image.fromarray(image).save(path)


def test_folder_fingerprint_follows_content_not_path_or_times(tmp_path, monkeypatch):
    data = toys.make_colour_folder(str(tmp_path / "a"), per_class=4)
    task = tasks.get_task(f"folder:{data}")
    first = task.fingerprint()
    assert task.version == folder.FOLDER_VERSION and len(task.content_sha256) == 64
    reads = []
    monkeypatch.setattr(folder, "_hash_and_decode", lambda p: reads.append(p) or ("", None))
    assert tasks.get_task(f"folder:{data}").fingerprint() == first and not reads  # memoised
    monkeypatch.undo()
    assert tasks.make_folder_task(data, seed=1).fingerprint() != first
    assert tasks.make_folder_task(data, test_fraction=0.5).fingerprint() != first
    # A copy with new file times has the same content identity under another name.
    copied = shutil.copytree(data, str(tmp_path / "b"), copy_function=shutil.copy)
    assert (
        os.stat(f"{copied}/train/class0/000.png").st_mtime_ns
        != os.stat(f"{data}/train/class0/000.png").st_mtime_ns
    )
    assert tasks.get_task(f"folder:{copied}").fingerprint() == first
    path = os.path.join(copied, "train", "class1", "000.png")
    os.utime(path, ns=(0, 10**18))  # touched: same content, same identity
    assert tasks.get_task(f"folder:{copied}").fingerprint() == first
    # One pixel, one renamed file, one more file: a new fingerprint each.
    pixel = np.array(Image.open(path))[0, 0, 0]
    _write_pixel(path, pixel ^ 1)
    assert tasks.get_task(f"folder:{copied}").fingerprint() != first
    _write_pixel(path, pixel)
    assert tasks.get_task(f"folder:{copied}").fingerprint() == first
    os.rename(path, os.path.join(copied, "train", "class1", "100.png"))
    assert tasks.get_task(f"folder:{copied}").fingerprint() != first
    shutil.copy(f"{data}/train/class0/000.png", f"{data}/train/class0/new.png")
    assert tasks.get_task(f"folder:{data}").fingerprint() != first


def _cut(path):
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


BAD_FILES = {
    "empty": lambda path: open(path, "wb").close(),
    "cut_off": _cut,
    "not_an_image": lambda path: open(path, "w").write("plain text, not a PNG"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_undecodable_image_is_named_in_one_line_or_skipped(tmp_path, kind):
    data = toys.make_colour_folder(str(tmp_path / "d"), per_class=5, size=24)
    bad = os.path.join(data, "train", "class2", "003.png")
    BAD_FILES[kind](bad)
    with pytest.raises(ValueError) as info:
        tasks.get_task(f"folder:{data}")
    message = str(info.value)
    assert bad in message and "--skip_bad_images" in message and "\n" not in message
    with pytest.warns(folder.BadImageWarning, match="class2/003.png"):
        task = tasks.get_task(f"folder:{data}", skip_bad_images=True)
    every = task.files["trainval"][0] + task.files["test"][0]
    assert len(every) == 14 and bad not in every
    assert [p for p, _ in task.skipped_images] == ["train/class2/003.png"]
    assert task.to_json()["skipped_images"][0]["path"] == "train/class2/003.png"
    # Every kept file decodes: a whole pass over the data raises nothing.
    assert sum(1 for _ in task.load("trainval", image_size=8)) == len(task.files["trainval"][0])


def test_validate_splits_names_folder_split_and_sizes(tmp_path):
    data = toys.make_colour_folder(str(tmp_path / "small"), per_class=4)
    task = tasks.get_task(f"folder:{data}")
    task.validate_splits(["train800", "train800val200", "test"])  # non-empty: fine
    with pytest.raises(ValueError) as info:
        task.validate_splits(("train800", "val200", "train800val200", "test"))
    message = str(info.value)
    assert data in message and "'val200'" in message and "holds 0 images" in message
    assert "10 pool" in message and "\n" not in message
    with pytest.raises(ValueError, match="at least 900"):
        task.validate_splits(["train800"], min_images=900)
    with pytest.raises(ValueError, match="no split 'val300'"):
        task.validate_splits(["val300"])
    # Registered tasks: names only (sizes need the data).
    tasks.get_task("cifar100").validate_splits(["train800", "val200"])
