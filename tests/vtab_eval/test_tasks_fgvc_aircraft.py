"""FGVC Aircraft read from the official archive's layout (issue 25), on generated files only.

The layout: DATA_DIR/fgvc-aircraft-2013b/data/ with images/<id>.jpg (each with a 20-px banner at
its bottom), variants.txt (one variant a line, label = line index) and
images_variant_{train,val,test}.txt ("<id> <variant>" a line, here sorted by variant as the
archive's are).
"""

import dataclasses
import io
import os

import numpy as np
import pytest
from PIL import Image

from vtab_eval import checks, plan, sweeps, tasks
from vtab_eval.tasks import fgvc_aircraft, splits

# 100 variants, some with spaces and slashes as in the archive ("Boeing 737-700", "F/A-18").
VARIANTS = [f"Maker {i:03d}/Model {i}-{i % 7}00" for i in range(100)]
# Images per split for the first classes (the rest have none: a split file need not name all).
PER_CLASS = {"train": 4, "val": 3, "test": 2}
NUM_LABELLED = 5
HEIGHT, WIDTH = 48, 40  # 28 rows of picture above the 20-px banner


def _jpeg(label: int) -> bytes:
    picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    picture[:, :, 0] = 10 + label  # the label shows in the red channel
    picture[-fgvc_aircraft.BANNER_HEIGHT :] = 255  # the white copyright banner
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=100)
    return buffer.getvalue()


def make_archive(data_dir):
    """The archive's layout under data_dir; returns {split: [(image id, label)]} in file order."""
    root = os.path.join(data_dir, "fgvc-aircraft-2013b", "data")
    os.makedirs(os.path.join(root, "images"))
    with open(os.path.join(root, "variants.txt"), "w") as f:
        f.write("".join(v + "\n" for v in VARIANTS))
    listed, next_id = {}, 1000000
    for split, count in PER_CLASS.items():
        listed[split] = []
        for label in range(NUM_LABELLED):
            for _ in range(count):
                image_id, next_id = f"{next_id:07d}", next_id + 1
                with open(os.path.join(root, "images", image_id + ".jpg"), "wb") as f:
                    f.write(_jpeg(label))
                listed[split].append((image_id, label))
        with open(os.path.join(root, fgvc_aircraft.SOURCES[split]), "w") as f:
            f.write("".join(f"{i} {VARIANTS[label]}\n" for i, label in listed[split]))
    return listed


def _ids(paths):
    return [os.path.basename(p)[: -len(".jpg")] for p in paths]


def test_registered_as_the_sixth_table3_task_at_the_variant_level():
    assert len(tasks.list_tasks("table3")) == 6
    task = tasks.get_task("fgvc_aircraft")
    assert (task.suite, task.group, task.num_classes, task.metric) == (
        "table3",
        "natural",
        100,
        "accuracy",
    )
    assert task.tfds_name is None and task.to_json()["archive"] == "fgvc-aircraft-2013b/data"
    # Table 3 trains on the official trainval (train + val) and tests on the official test.
    assert (task.splits["trainval"], task.splits["test"]) == ("train+val", "test")
    assert (task.splits["train"], task.splits["val"]) == ("train", "val")


def test_loads_every_split_with_variant_labels_and_without_the_banner(tmp_path):
    listed = make_archive(str(tmp_path))
    task = tasks.get_task("fgvc_aircraft")
    sizes = {"train": 20, "val": 15, "test": 10, "trainval": 35, "train800": 20, "val200": 15}
    for split, size in sizes.items():
        paths, labels = task.examples(split, str(tmp_path))
        assert len(paths) == size
        expected = {i: label for source in listed.values() for i, label in source}
        assert labels == [expected[i] for i in _ids(paths)]
    ds = task.load("val", data_dir=str(tmp_path))
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 15
    for example in examples:
        image = example["image"]
        # The banner's 20 rows are cut; the picture rows keep their colour (JPEG: within 3/255).
        assert image.shape == (HEIGHT - fgvc_aircraft.BANNER_HEIGHT, WIDTH, 3)
        assert image.max() < 0.5
        assert abs(image[..., 0].mean() * 255 - (10 + example["label"])) < 3


def test_splits_are_slices_of_the_seeded_order_of_each_split_file(tmp_path):
    listed = make_archive(str(tmp_path))
    task = tasks.get_task("fgvc_aircraft")
    seeded = {
        split: [listed[split][i][0] for i in np.random.RandomState(0).permutation(len(ids))]
        for split, ids in listed.items()
    }
    ids = {split: _ids(task.examples(split, str(tmp_path))[0]) for split in task.splits}
    assert ids["train"] == seeded["train"] and ids["val"] == seeded["val"]
    assert ids["trainval"] == seeded["train"] + seeded["val"]
    assert ids["train800val200"] == ids["train800"] + ids["val200"]
    assert not set(ids["trainval"]) & set(ids["test"])
    # A slice takes the first images of the seeded order, so the file's class order is broken.
    small = dataclasses.replace(
        task, splits=splits.vtab_splits("train", "val", "val[:4]", "test", "train+val")
    )
    paths, labels = small.examples("val200", str(tmp_path))
    assert _ids(paths) == seeded["val"][:4] and len(set(labels)) > 1


def test_a_missing_archive_says_in_one_line_what_to_download_and_where(tmp_path, monkeypatch):
    task = tasks.get_task("fgvc_aircraft")
    with pytest.raises(FileNotFoundError) as info:
        task.load("trainval", data_dir=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert "fgvc-aircraft-2013b.tar.gz" in message and fgvc_aircraft.HOMEPAGE in message
    assert f"extract it into {tmp_path} " in message
    assert os.path.join(str(tmp_path), "fgvc-aircraft-2013b", "data", "variants.txt") in message
    # No data_dir: TFDS's default data directory, named as such.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match=r"tfds \(TFDS's default data directory\)"):
        task.load("test")
    # The check before training reports it per split, in the same line.
    job = plan.Job(task, "full", "once", sweeps.quick())
    _, problems = checks.check_jobs([job], data_dir=str(tmp_path))
    assert problems and problems[0].startswith(
        "task fgvc_aircraft: split trainval cannot be read: "
    )
    assert "fgvc-aircraft-2013b.tar.gz" in problems[0]


def test_a_missing_image_and_bad_lines_are_named(tmp_path):
    listed = make_archive(str(tmp_path))
    root = tmp_path / "fgvc-aircraft-2013b" / "data"
    task = tasks.get_task("fgvc_aircraft")
    first = listed["test"][0][0]
    os.remove(root / "images" / f"{first}.jpg")
    with pytest.raises(FileNotFoundError, match=rf"images/{first}\.jpg is missing"):
        task.examples("test", str(tmp_path))
    (root / fgvc_aircraft.SOURCES["val"]).write_text("1000000 Boeing 747-400\n")
    with pytest.raises(ValueError, match=r"images_variant_val\.txt, line 1: '1000000 Boeing"):
        task.examples("val", str(tmp_path))
    (root / "variants.txt").write_text("".join(v + "\n" for v in VARIANTS[:99]))
    with pytest.raises(ValueError, match=r"99 distinct variants in 99 lines; .* has 100"):
        task.examples("train", str(tmp_path))


def test_fingerprint_is_the_definitions_not_the_data_directorys():
    task = tasks.get_task("fgvc_aircraft")
    assert task.fingerprint() != dataclasses.replace(task, seed=1).fingerprint()
    assert task.fingerprint() != dataclasses.replace(task, version="1.0.1").fingerprint()
    fingerprints = {tasks.get_task(n).fingerprint() for n in tasks.list_tasks()}
    assert len(fingerprints) == len(tasks.list_tasks())
