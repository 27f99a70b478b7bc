"""Registry, split definitions and the list_tasks command."""

import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from vtab_eval import tasks

VTAB_GROUPS = {
    "natural": [
        "caltech101",
        "cifar100",
        "dtd",
        "oxford_flowers102",
        "oxford_iiit_pet",
        "svhn",
        "sun397",
    ],
    "specialized": ["patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"],
    "structured": [
        "clevr_count",
        "clevr_distance",
        "dmlab",
        "kitti_distance",
        "dsprites_location",
        "dsprites_orientation",
        "smallnorb_azimuth",
        "smallnorb_elevation",
    ],
}

# The VTAB-1k definitions as published outside this code (task_adaptation data classes and
# the big_vision/scenic VTAB configs): (TFDS dataset, classes, train800val200, test).
VTAB_1K = {
    "caltech101": ("caltech101", 102, "train[:800]+train[2754:2954]", "test"),
    "cifar100": ("cifar100", 100, "train[:800]+train[45000:45200]", "test"),
    "dtd": ("dtd", 47, "train[:800]+validation[:200]", "test"),
    "oxford_flowers102": ("oxford_flowers102", 102, "train[:800]+validation[:200]", "test"),
    "oxford_iiit_pet": ("oxford_iiit_pet", 37, "train[:800]+train[2944:3144]", "test"),
    "svhn": ("svhn_cropped", 10, "train[:800]+train[65931:66131]", "test"),
    "sun397": ("sun397/tfds", 397, "train[:800]+validation[:200]", "test"),
    "patch_camelyon": ("patch_camelyon", 2, "train[:800]+validation[:200]", "test"),
    "eurosat": ("eurosat/rgb", 10, "train[:800]+train[16200:16400]", "train[21600:]"),
    "resisc45": ("resisc45", 45, "train[:800]+train[18900:19100]", "train[25200:]"),
    "diabetic_retinopathy": (
        "diabetic_retinopathy_detection/btgraham-300",
        5,
        "train[:800]+validation[:200]",
        "test",
    ),
    "clevr_count": ("clevr", 8, "train[:800]+train[63000:63200]", "validation"),
    "clevr_distance": ("clevr", 6, "train[:800]+train[63000:63200]", "validation"),
    "dmlab": ("dmlab", 6, "train[:800]+validation[:200]", "test"),
    "kitti_distance": ("kitti", 4, "train[:800]+validation[:200]", "test"),
    "dsprites_location": ("dsprites", 16, "train[:800]+train[589824:590024]", "train[663552:]"),
    "dsprites_orientation": (
        "dsprites",
        16,
        "train[:800]+train[589824:590024]",
        "train[663552:]",
    ),
    "smallnorb_azimuth": ("smallnorb", 18, "train[:800]+test[:200]", "test[50%:]"),
    "smallnorb_elevation": ("smallnorb", 9, "train[:800]+test[:200]", "test[50%:]"),
}

# TFDS split sizes of the pinned versions (TFDS catalog), to check the split invariants.
SPLIT_SIZES = {
    "caltech101": {"train": 3060, "test": 6084},
    "cifar100": {"train": 50000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
    "dtd": {"train": 1880, "validation": 1880, "test": 1880},
    "oxford_flowers102": {"train": 1020, "validation": 1020, "test": 6149},
    "oxford_iiit_pet": {"train": 3680, "test": 3669},
    "svhn_cropped": {"train": 73257, "test": 26032},
    "sun397/tfds": {"train": 76128, "validation": 10875, "test": 21750},
    "patch_camelyon": {"train": 262144, "validation": 32768, "test": 32768},
    "eurosat/rgb": {"train": 27000},
    "resisc45": {"train": 31500},
    "diabetic_retinopathy_detection/btgraham-300": {
        "train": 35126,
        "validation": 10906,
        "test": 42670,
    },
    "clevr": {"train": 70000, "validation": 15000, "test": 15000},
    "dmlab": {"train": 65550, "validation": 22628, "test": 22735},
    "kitti": {"train": 6347, "validation": 423, "test": 711},
    "dsprites": {"train": 737280},
    "smallnorb": {"train": 24300, "test": 24300},
    "food101": {"train": 75750, "validation": 25250},
    "cars196": {"train": 8144, "test": 8041},
    "caltech_birds2011": {"train": 5994, "test": 5794},
    # Not TFDS: the official split files of fgvc-aircraft-2013b (3334/3333/3333 images).
    "fgvc_aircraft": {"train": 3334, "val": 3333, "test": 3333},
}


def _dataset(task):
    """The TFDS dataset name, or the task's name for a task read from disk (FGVC Aircraft)."""
    return task.tfds_name.split(":")[0] if task.tfds_name else task.name


def _resolve(spec, sizes):
    """A TFDS split spec as (split, start, stop) ranges, percent bounds rounded to closest."""
    ranges = []
    for part in spec.split("+"):
        match = re.fullmatch(r"(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?", part)
        assert match, part
        name, lo, lo_pct, hi, hi_pct = match.groups()
        n = sizes[name]

        def bound(value, pct, default, n=n):
            if not value:
                return default
            value = int(value)
            return round(value * n / 100) if pct else value

        ranges.append((name, bound(lo, lo_pct, 0), min(bound(hi, hi_pct, n), n)))
    return ranges


def _size(ranges):
    return sum(stop - start for _, start, stop in ranges)


def _overlap(a, b):
    return sum(
        max(0, min(s1, s2) - max(b1, b2)) for n1, b1, s1 in a for n2, b2, s2 in b if n1 == n2
    )


def test_vtab1k_has_the_19_tasks_in_their_groups():
    names = tasks.list_tasks("vtab1k")
    assert names == [n for group in VTAB_GROUPS.values() for n in group]
    for group, group_names in VTAB_GROUPS.items():
        assert all(tasks.get_task(n).group == group for n in group_names)


@pytest.mark.parametrize("name", list(VTAB_1K))
def test_vtab1k_definitions_match_vtab(name):
    dataset, num_classes, train800val200, test = VTAB_1K[name]
    task = tasks.get_task(name)
    assert _dataset(task) == dataset
    assert task.num_classes == num_classes
    assert task.splits["train800val200"] == train800val200
    assert task.splits["test"] == test
    assert task.splits["train800"] + "+" + task.splits["val200"] == train800val200
    assert task.metric == "accuracy"


@pytest.mark.parametrize("name", tasks.list_tasks("all"))
def test_splits_keep_the_vtab_invariants(name):
    task = tasks.get_task(name)
    sizes = SPLIT_SIZES[_dataset(task)]
    s = {key: _resolve(spec, sizes) for key, spec in task.splits.items()}
    for spec in task.splits.values():
        tfds.core.ReadInstruction.from_spec(spec)  # Raises on a malformed spec.
    assert (_size(s["train800"]), _size(s["val200"]), _size(s["train800val200"])) == (
        800,
        200,
        1000,
    )
    assert _overlap(s["train"], s["train800"]) == 800
    assert _overlap(s["val"], s["val200"]) == 200
    assert _overlap(s["train"], s["val"]) == 0
    assert _size(s["trainval"]) == _size(s["train"]) + _size(s["val"])
    assert _overlap(s["trainval"], s["train"] + s["val"]) == _size(s["trainval"])
    assert _overlap(s["trainval"], s["test"]) == 0
    assert _size(s["test"]) > 0


def test_table3_suite_scores_pets_per_class():
    names = tasks.list_tasks("table3")
    assert {"cifar10", "food101", "cars196", "caltech_birds2011", "fgvc_aircraft"} <= set(names)
    assert len(names) == 6
    metrics = {n: tasks.get_task(n).metric for n in names}
    pets = [n for n in names if _dataset(tasks.get_task(n)) == "oxford_iiit_pet"]
    assert len(pets) == 1 and metrics[pets[0]] == "mean_per_class_accuracy"
    assert all(m == "accuracy" for n, m in metrics.items() if n not in pets)
    assert all(tasks.get_task(n).group == "natural" for n in names)
    assert tasks.list_tasks("all") == tasks.list_tasks("vtab1k") + names


def test_unknown_names_raise_clear_errors():
    with pytest.raises(ValueError, match="known tasks: caltech101, cifar100"):
        tasks.get_task("cifar1000")
    with pytest.raises(ValueError, match="Unknown suite"):
        tasks.list_tasks("vtab2k")
    with pytest.raises(ValueError, match="expected one of"):
        tasks.get_task("cifar100").split_string("train1000")
    with pytest.raises(ValueError, match="image_size"):
        tasks.get_task("cifar100").load("test", image_size=0)
    with pytest.raises(ValueError, match="folder:PATH"):
        tasks.get_task("folder:")


def test_missing_dataset_names_dataset_data_dir_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        tasks.get_task("kitti_distance").load("train800", data_dir=str(tmp_path))
    message = str(info.value)
    assert "kitti:3.1.0" in message and str(tmp_path) in message
    assert f"tfds build kitti:3.1.0 --data_dir={tmp_path}" in message


def _run_list_tasks(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "vtab_eval.list_tasks", *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_list_tasks_json():
    result = _run_list_tasks("--format=json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    vtab = [t for t in listed if t["suite"] == "vtab1k"]
    assert [t["name"] for t in vtab] == tasks.list_tasks("vtab1k")
    groups = [t["group"] for t in vtab]
    counts = (groups.count("natural"), groups.count("specialized"), groups.count("structured"))
    assert counts == (7, 4, 8)
    for entry in listed:
        assert set(tasks.VTAB_SPLITS) <= set(entry["splits"])
        assert all(isinstance(v, str) for v in entry["splits"].values())
        assert isinstance(entry["num_classes"], int) and entry["num_classes"] >= 2
        assert entry == tasks.get_task(entry["name"]).to_json()


def test_list_tasks_lists_the_six_table3_tasks():
    result = _run_list_tasks("--suite=table3")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == tasks.list_tasks("table3") and len(names) == 6
    assert "fgvc_aircraft" in names


def test_list_tasks_rejects_unknown_task():
    result = _run_list_tasks("--task=no_such_task")
    assert result.returncode != 0
    assert "Unknown task 'no_such_task'" in result.stderr


def _doc_table_rows(header_start):
    """Rows (as cell lists) of the docs/tasks.md table whose header starts with header_start."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "tasks.md")
    lines = open(path, encoding="utf-8").read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().replace("\\*", "*") for cell in line.strip("|").split("|")])
    return rows


def test_docs_tables_match_the_registry():
    vtab = _doc_table_rows("| name | group | TFDS |")
    assert [row[0] for row in vtab] == tasks.list_tasks("vtab1k")
    for name, group, tfds_name, classes, val200, test in vtab:
        task = tasks.get_task(name)
        assert (group, tfds_name, int(classes)) == (task.group, task.tfds_name, task.num_classes)
        assert (val200, test) == (task.splits["val200"], task.splits["test"])
    table3 = _doc_table_rows("| name | TFDS | classes | metric |")
    assert [row[0] for row in table3] == tasks.list_tasks("table3")
    for name, tfds_name, classes, metric, val, test in table3:
        task = tasks.get_task(name)
        tfds_name = None if tfds_name == "—" else tfds_name  # read from disk, not TFDS
        assert (tfds_name, int(classes), metric) == (task.tfds_name, task.num_classes, task.metric)
        assert (val, test) == (task.splits["val"], task.splits["test"])
