"""The downstream task bank written to a `tf.io.gfile` URL without rename (docs/workdir.md).

Before, `_write_task_folder` wrote into a temporary folder made with `tempfile.mkdtemp` beside the
task (a local folder named `ram:`) and renamed it with `os.replace`. On a URL a task folder is now
written in place and committed by its task.json, written last; a folder without one is rewritten.
"""

import json

import gfile_double
import numpy as np
import pytest
from gfile_double import Killed
from PIL import Image

from bit_experts import atomic_files
from bit_experts.world import downstream

no_rename, ram_root = gfile_double.no_rename, gfile_double.ram_root  # fixtures
TASKS = ["glyph_count", "textures_noisy"]
KW = {"image_size": 16, "test_images": 10}


def _png(path):
    return np.asarray(Image.open(atomic_files.open_file(path, "rb")))


def test_task_bank_on_ram_commits_each_task_by_task_json(ram_root, no_rename, monkeypatch):
    out = f"{ram_root}/tasks"
    real_write_json = downstream._write_json

    def killed_at_the_commit(path, payload):
        if path == f"{out}/textures_noisy/{downstream.TASK_FILE}":
            raise Killed  # every PNG of the second task written, its task.json not
        return real_write_json(path, payload)

    monkeypatch.setattr(downstream, "_write_json", killed_at_the_commit)
    with pytest.raises(Killed):
        downstream.write_downstream_tasks(out, tasks=TASKS, **KW)
    monkeypatch.setattr(downstream, "_write_json", real_write_json)
    assert atomic_files.isdir(f"{out}/textures_noisy/train")
    assert not atomic_files.exists(f"{out}/{downstream.INDEX_FILE}")
    with pytest.raises(FileNotFoundError, match="not a complete downstream task"):
        downstream.read_task_metadata(f"{out}/textures_noisy")
    # A stale file in the uncommitted folder: the rerun must rewrite the folder, not add to it.
    atomic_files.write_text(f"{out}/textures_noisy/train/stale.txt", "x")

    written = []
    real_write_atomic = atomic_files.write_atomic

    def spy(path, *args, **kwargs):
        written.append(path)
        return real_write_atomic(path, *args, **kwargs)

    monkeypatch.setattr(atomic_files, "write_atomic", spy)
    dirs = downstream.write_downstream_tasks(out, tasks=TASKS, **KW)
    assert dirs == [f"{out}/{name}" for name in TASKS]
    assert not any(p.startswith(f"{out}/glyph_count/") for p in written)  # committed: kept
    assert f"{out}/textures_noisy/{downstream.TASK_FILE}" == written[-2]  # then tasks.json
    assert not atomic_files.exists(f"{out}/textures_noisy/train/stale.txt")

    index = json.loads(atomic_files.read_bytes(f"{out}/{downstream.INDEX_FILE}"))["tasks"]
    assert [t["name"] for t in index] == TASKS
    task = downstream.build_task("textures_noisy", 0, 16, 10)
    meta = downstream.read_task_metadata(f"{out}/textures_noisy")
    assert (meta["train_count"], meta["test_count"]) == (len(task.train_labels), 10)
    label = int(task.test_labels[3])
    png = _png(f"{out}/textures_noisy/test/{task.class_names[label]}/00003.png")
    np.testing.assert_array_equal(png, task.test_images[3])  # PNG is lossless
    files = atomic_files.walk_files(f"{out}/textures_noisy")
    assert len(files) == len(task.train_labels) + 10 + 1  # every image and task.json, no more


def test_a_committed_task_on_ram_with_other_settings_is_refused(ram_root, no_rename):
    out = f"{ram_root}/tasks"
    downstream.write_downstream_tasks(out, tasks=["glyph_count"], **KW)
    with pytest.raises(ValueError, match="another out_dir"):
        downstream.write_downstream_tasks(out, tasks=["glyph_count"], seed=1, **KW)
