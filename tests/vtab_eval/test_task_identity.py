"""Task identity and bad input: fingerprints, undecodable images, splits too small (issue 13)."""

import os
import shutil
import subprocess
import sys

import pytest
import vtab_eval_toys as toys

from vtab_eval import tasks
from vtab_eval.tasks import folder

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


def test_folder_fingerprint_follows_content_not_path(tmp_path):
    data = toys.make_colour_folder(str(tmp_path / "a"), per_class=4)
    task = tasks.get_task(f"folder:{data}")
    first = task.fingerprint()
    assert task.fingerprint() is first  # cached on the instance
    assert tasks.get_task(f"folder:{data}").fingerprint() == first
    assert tasks.make_folder_task(data, seed=1).fingerprint() != first
    assert tasks.make_folder_task(data, test_fraction=0.5).fingerprint() != first
    # A copy that keeps file times has the same content identity under another name.
    moved = shutil.copytree(data, str(tmp_path / "b"), copy_function=shutil.copy2)
    assert tasks.get_task(f"folder:{moved}").fingerprint() == first
    # One more image in a class folder: a new fingerprint.
    toys.make_colour_folder(str(tmp_path / "extra"), per_class=1)
    shutil.copy2(
        tmp_path / "extra" / "train" / "class0" / "000.png",
        os.path.join(data, "train", "class0", "new.png"),
    )
    assert tasks.get_task(f"folder:{data}").fingerprint() != first
    # Same size, new modification time: treated as new content.
    path = os.path.join(data, "train", "class1", "000.png")
    before = tasks.get_task(f"folder:{data}").fingerprint()
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert tasks.get_task(f"folder:{data}").fingerprint() != before


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


_PROBE = """
import functools
import numpy as np

THRESHOLDS = (0.25, 0.5)
UNUSED = 1


def _helper(x):
    return x * 2


def label_fn(x):
    scaled = np.asarray(x)
    return sum(t < _helper(scaled) for t in THRESHOLDS)


def unrelated():
    return UNUSED
"""


def _probe_identity(tmp_path, source):
    """callable_identity of `label_fn` in a fresh module (named inside vtab_eval) with `source`."""
    import importlib.util

    from vtab_eval.tasks import base

    path = tmp_path / f"probe_{abs(hash(source))}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("vtab_eval._probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return base.callable_identity(module.label_fn)


def test_callable_identity_follows_the_code_it_reads_not_the_whole_file(tmp_path):
    reference = _probe_identity(tmp_path, _PROBE)
    assert reference == _probe_identity(tmp_path, _PROBE + "\n")  # stable for the same code
    unchanged = {
        "an unrelated function": _PROBE.replace("return UNUSED", "return UNUSED + 1"),
        "an unrelated constant": _PROBE.replace("UNUSED = 1", "UNUSED = 2"),
        "a new function": _PROBE + "\n\ndef added():\n    return 3\n",
    }
    for what, source in unchanged.items():
        assert _probe_identity(tmp_path, source) == reference, what
    changed = {
        "the function's body": _PROBE.replace("sum(t <", "sum(t <="),
        "a constant it reads": _PROBE.replace("(0.25, 0.5)", "(0.25, 0.75)"),
        "a helper it calls": _PROBE.replace("x * 2", "x * 3"),
        "a module it uses": _PROBE.replace("import numpy as np", "import math as np"),
    }
    for what, source in changed.items():
        assert _probe_identity(tmp_path, source) != reference, what


def test_callable_identity_of_partial_covers_bound_arguments():
    import functools

    from vtab_eval.tasks import base

    one = base.callable_identity(functools.partial(round, ndigits=1))
    two = base.callable_identity(functools.partial(round, ndigits=2))
    assert one != two and one["partial"] == two["partial"]
    with pytest.raises(ValueError, match="cannot fingerprint a bound argument of type object"):
        base.callable_identity(functools.partial(round, object()))
