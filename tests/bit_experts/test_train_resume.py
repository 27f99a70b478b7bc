"""Resume equals no kill, for every stage: every weight of every saved model, frozen ones included.

Each stage of a job (and DAT's fine-tuned B) is killed at its last unit's step 2 (before that unit's
first checkpoint, so it restarts from its initialisation), at step 3 (after it: it resumes from step
2) and while its model is being saved; the rerun must end with the same weights, bit for bit, as a
run that was never killed (issue 24: resumed adapter experts sat on a randomly initialised backbone,
since their checkpoints held only the trainable variables). A kill is a `Killed` raised from the
progress line or from inside `model.save`, in a fresh `Job` each time: nothing survives in memory
that a real restart would lose. The battery is marked slow (`pytest -m slow`); the default run
keeps the truncated-checkpoint test here, `test_train.py`'s resume of every variable of a unit and
`test_train_processes.py`'s SIGKILLed adapter job.
"""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from gfile_double import Killed
from training_toys import toy_config, toy_source

from bit_experts.resnet_v2 import BiTResNetV2
from bit_experts.training import dat, job, loop, outputs

STEPS = 4
# stage -> does a unit, model or checkpoint folder of this name belong to it?
STAGES = {
    "baseline": lambda name: name == "baseline",
    "full": lambda name: name.startswith("expert_"),
    "adapter": lambda name: name.startswith("adapter"),
    "epn": lambda name: name == "epn",
}


def _config():
    cfg = toy_config(**dict.fromkeys(STAGES, STEPS))
    cfg["experts"]["top_k"] = 2  # two units in the full and adapter stages
    cfg["checkpoint_every"] = 2
    return cfg


def _dat_weights(source):
    return np.linspace(0.2, 3.0, source.num_images)


def _run(workdir, stage, print_fn=str):
    """One process's worth of training: a fresh Job for `stage` ('dat': DAT's fine-tuned B, from
    the B in `workdir`/upstream into `workdir`/dat)."""
    source = toy_source()
    if stage == "dat":
        upstream, root = os.path.join(workdir, "upstream"), os.path.join(workdir, "dat")
        return dat.finetune(upstream, root, source, _dat_weights(source), print_fn=print_fn).results
    return job.run_job(_config(), workdir, stages=[stage], source=source, print_fn=print_fn)


def _outputs(workdir, stage):
    """The work directory `stage` wrote its models into (DAT's: its one keyed run)."""
    if stage != "dat":
        return workdir
    (run,) = (workdir / "dat").glob("dat-*")
    return run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Work directories trained without a kill: the whole job, and DAT's B."""
    root = tmp_path_factory.mktemp("uninterrupted")
    units = job.run_job(_config(), str(root / "job"), source=toy_source(), print_fn=str)
    _start_from(root, root / "dat", "dat")
    _run(str(root / "dat"), "dat")
    return root, [u.name for u in units]


def _start_from(reference, workdir, stage):
    """`workdir` as the uninterrupted job left it before `stage`: its earlier stages' outputs (for
    DAT: B and its config, in `workdir`/upstream)."""
    if stage == "dat":
        upstream = workdir / "upstream"
        shutil.copytree(reference / "job" / "models" / "baseline", upstream / "models" / "baseline")
        shutil.copy(reference / "job" / "config.json", upstream / "config.json")
        return
    earlier = list(STAGES)[: list(STAGES).index(stage)]
    shutil.copytree(reference / "job", workdir, ignore=shutil.ignore_patterns("logs"))
    for folder in ("models", "checkpoints"):
        for name in os.listdir(workdir / folder):
            owner = next(s for s, match in STAGES.items() if match(name))
            if owner not in earlier:
                shutil.rmtree(workdir / folder / name)


def _killed_at(line):
    def print_fn(text):
        if text.startswith(line):
            raise Killed(text)

    return print_fn


def _run_killed_while_saving(workdir, stage, monkeypatch):
    """Runs `stage` until a model is being saved: kills it there. Returns the lines it printed."""
    real_save = BiTResNetV2.save

    def killed_while_saving(model, path, *args, **kwargs):
        real_save(model, path, *args, **kwargs)
        with open(path, "r+b") as f:  # what the kill leaves: half a file, no info.json
            f.truncate(os.path.getsize(path) // 2)
        raise Killed(path)

    lines = []
    with monkeypatch.context() as patch:
        patch.setattr(BiTResNetV2, "save", killed_while_saving)
        with pytest.raises(Killed):
            _run(str(workdir), stage, lines.append)
    return lines


def _assert_same_weights(got_workdir, want_workdir, name):
    got = outputs.load_model(str(got_workdir), name).weights
    want = outputs.load_model(str(want_workdir), name).weights
    assert [w.path for w in got] == [w.path for w in want]
    differ = [a.path for a, b in zip(got, want) if not np.array_equal(a.numpy(), b.numpy())]
    assert not differ, (
        f"{name}: {len(differ)} of {len(got)} weights differ from the uninterrupted run's "
        f"(first: {differ[:3]})"
    )


@pytest.mark.slow  # about 2 minutes of CPU in all
@pytest.mark.parametrize("stage", [*STAGES, "dat"])
def test_a_stage_killed_anywhere_resumes_to_the_uninterrupted_weights(
    stage, uninterrupted, tmp_path, monkeypatch
):
    reference, units = uninterrupted
    workdir = tmp_path / "work"
    _start_from(reference, workdir, stage)
    match = STAGES["baseline" if stage == "dat" else stage]
    last = [u for u in units if match(u)][-1]
    saved = "adapters" if stage == "adapter" else last  # the model whose save is killed

    for line in (f"[{last}] step 2/{STEPS}", f"[{last}] step 3/{STEPS}"):
        with pytest.raises(Killed, match=line.replace("[", r"\[")):
            _run(str(workdir), stage, _killed_at(line))
    lines = _run_killed_while_saving(workdir, stage, monkeypatch)
    assert f"[{last}] resuming at step 2/{STEPS}" in lines
    assert not outputs.model_exists(str(_outputs(workdir, stage)), saved)

    _run(str(workdir), stage)
    want = _outputs(reference / ("dat" if stage == "dat" else "job"), stage)
    names = [n for n in sorted(os.listdir(want / "models")) if match(n)]
    assert saved in names
    for name in names:
        _assert_same_weights(_outputs(workdir, stage), want, name)
    if stage == "adapter":  # the issue's symptom: the experts' backbone and head are B's
        adapters = outputs.load_model(str(workdir), "adapters")
        baseline = outputs.load_model(str(workdir), "baseline")
        for a, b in zip(
            [*adapters.backbone_layers(), adapters.head],
            [*baseline.backbone_layers(), baseline.head],
        ):
            for x, y in zip(a.get_weights(), b.get_weights()):
                np.testing.assert_array_equal(x, y)


def _checkpoint(workdir, step):
    return workdir / "checkpoints" / "baseline" / f"step_{step:09d}"


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch):
    reference = tmp_path / "uninterrupted"
    _run(str(reference / "job"), "baseline")
    workdir = tmp_path / "work"
    _run_killed_while_saving(workdir, "baseline", monkeypatch)  # committed: steps 2 and 4
    (data,) = (_checkpoint(workdir, 4)).glob("ckpt.data-*")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 3)
    lines = []
    _run(str(workdir), "baseline", lines.append)
    fallback = [line for line in lines if "cannot be read" in line]
    assert fallback == [
        f"[baseline] checkpoint {_checkpoint(workdir, 4)} cannot be read (IndexError: Read less "
        "bytes than requested): removed it; falling back to step 2"
    ]
    assert f"[baseline] resuming at step 2/{STEPS}" in lines
    assert (_checkpoint(workdir, 4) / "ckpt.index").exists()  # written again
    _assert_same_weights(workdir, reference / "job", "baseline")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["baseline", "adapter"])
def test_checkpoints_of_older_versions_are_used_only_when_they_hold_every_variable(
    stage, uninterrupted, tmp_path, monkeypatch
):
    # What versions before issue 24 wrote: the model's attributes and the optimizer, which holds the
    # trainable variables. B's are all trainable, so its checkpoints still resume; an adapter
    # expert's lack the frozen backbone: each is reported, and the expert trains again from its
    # start (reading one set the optimizer: it must start clean all the same).
    reference, _ = uninterrupted
    workdir = tmp_path / "work"
    _start_from(reference, workdir, stage)
    with monkeypatch.context() as patch:
        patch.setattr(
            loop, "model_state", lambda model, **others: tf.train.Checkpoint(model=model, **others)
        )
        _run_killed_while_saving(workdir, stage, monkeypatch)
    lines = []
    _run(str(workdir), stage, lines.append)
    fallback = [line for line in lines if "cannot be read" in line]
    if stage == "baseline":
        assert fallback == []
    else:
        lacks = (
            "(it lacks some of the model's variables: older versions saved only the trainable ones)"
        )
        assert [line.split(" checkpoint ")[0] for line in fallback] == [
            "[adapter_blue]",
            "[adapter_blue]",
            "[adapter_red]",
            "[adapter_red]",
        ]
        assert all(lacks in line for line in fallback)
        assert fallback[1].endswith("removed it; starting from step 0")
    name = "adapters" if stage == "adapter" else stage
    _assert_same_weights(workdir, reference / "job", name)
