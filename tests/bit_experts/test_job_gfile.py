"""An upstream training job whose work directory is a `tf.io.gfile` URL without rename.

The work directory lives on TensorFlow's in-memory `ram://` filesystem and every rename raises, as
on an object store (docs/workdir.md, commit protocol). Before the job's own folder handling went
through `bit_experts.atomic_files`, it created a local folder literally named `ram:` (`os.makedirs`
on the URL), and `os.path.isdir` never found the URL's `models/`, so a rerun retrained the
finished baseline.
"""

import json

import gfile_double
import numpy as np
import pytest
from gfile_double import Killed

from bit_experts import atomic_files, data
from bit_experts.training import config, job, outputs

no_rename, ram_root = gfile_double.no_rename, gfile_double.ram_root  # fixtures
GROUPS = {"red": ["r0", "r1"], "green": ["g0", "g1"], "blue": ["b0", "b1", "b2"]}


def _toy_source(per_class=4, size=16):
    """Three colour groups of leaf classes (as tests/bit_experts/test_train.py, smaller)."""
    rng = np.random.default_rng(0)
    names = [leaf for leaves in GROUPS.values() for leaf in leaves]
    edges = [("root", g) for g in GROUPS] + [(g, leaf) for g, ls in GROUPS.items() for leaf in ls]
    labels = np.repeat(np.arange(len(names)), per_class)
    colour = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    group_of = {leaf: g for g, ls in GROUPS.items() for leaf in ls}
    base = np.array([colour[group_of[names[i]]] for i in labels], np.float64)
    noise = rng.normal(0, 20, (len(labels), size, size, 3))
    images = np.clip(base[:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return data.array_source("toy", images, labels, names, edges)


def _toy_config():
    cfg = {
        "experts": {"top_k": 2, "include_roots": False},  # the two largest colour groups
        "model": {"preset": "r14_micro", "image_size": 16},
        "batch_size": 4,
        "checkpoint_every": 1,
        "log_every": 1,
    }
    for stage in config.STAGES:
        cfg[stage] = {"steps": 2, "warmup_steps": 1, "base_lr": 0.5}
    return cfg


def test_job_on_ram_commits_models_by_info_json_and_a_rerun_redoes_only_the_killed_one(
    ram_root, no_rename, monkeypatch
):
    workdir = f"{ram_root}/work"
    stages = ["baseline", "full"]
    real_write_json = outputs.write_json

    def killed_at_the_commit(path, data):
        if path.endswith("expert_blue/info.json"):  # blue, the largest slice, is trained first
            raise Killed  # model.keras uploaded, info.json (the commit) not written
        return real_write_json(path, data)

    monkeypatch.setattr(outputs, "write_json", killed_at_the_commit)
    with pytest.raises(Killed):
        job.run_job(_toy_config(), workdir, stages=stages, source=_toy_source(), print_fn=str)
    monkeypatch.setattr(outputs, "write_json", real_write_json)
    models = f"{workdir}/models"
    assert sorted(atomic_files.listdir(models)) == ["baseline", "expert_blue"]
    assert atomic_files.isfile(f"{models}/expert_blue/{outputs.MODEL_FILE}")
    assert not outputs.model_exists(workdir, "expert_blue")
    for name in ("config.json", "label_names.json", "expert_domains.json"):
        assert atomic_files.isfile(f"{workdir}/{name}")

    rerun = job.run_job(_toy_config(), workdir, stages=stages, source=_toy_source(), print_fn=str)
    # The uncommitted model is saved again from its committed last checkpoint; the second expert
    # (green or red: tied in size) was never reached. The baseline is not retrained.
    assert [(r.name, r.resumed_from) for r in rerun[:1]] == [("expert_blue", 2)]
    assert len(rerun) == 2 and rerun[1].name in ("expert_green", "expert_red")
    assert rerun[1].resumed_from == 0
    assert all(outputs.model_exists(workdir, r.name) for r in rerun)
    info = json.loads(atomic_files.read_bytes(f"{models}/expert_blue/{outputs.INFO_FILE}"))
    assert (info["kind"], info["slice"], info["steps"]) == ("full", "blue", 2)
    assert job.run_job(_toy_config(), workdir, stages=stages, source=_toy_source()) == []

    with pytest.raises(ValueError, match="different config"):
        job.prepare_job({**_toy_config(), "seed": 1}, workdir, source=_toy_source())


def test_a_workdir_url_that_names_a_file_is_refused_in_one_line(ram_root):
    atomic_files.write_text(f"{ram_root}/file", "x")
    with pytest.raises(ValueError, match="is a file; expected a directory"):
        job.check_workdir(f"{ram_root}/file")
    job.check_workdir(f"{ram_root}/new/work")  # a new URL path is fine; nothing is created
    assert not atomic_files.exists(f"{ram_root}/new")
