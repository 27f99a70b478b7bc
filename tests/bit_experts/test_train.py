"""Upstream training in-process: config schema, schedules, checkpoints, the whole job, bad inputs."""

import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from training_toys import GROUPS, toy_config, toy_source

from bit_experts import atomic_files, config_schema, data, determinism, presets
from bit_experts.training import checkpointing, config, job, loop, schedules, work_directory

# --- config ------------------------------------------------------------------------------------


def test_config_typo_names_the_key_and_a_close_match():
    with pytest.raises(ValueError, match=r"unknown config key 'baseline.stesp'.*'steps'"):
        config.resolve_config({"experts": {"top_k": 2}, "baseline": {"stesp": 3}})
    with pytest.raises(ValueError, match=r"'batch_sise'.*'batch_size'"):
        config.resolve_config({"experts": {"top_k": 2}, "batch_sise": 3})


def test_config_needs_exactly_one_domain_rule():
    with pytest.raises(ValueError, match="exactly one of experts.top_k or experts.min_images"):
        config.resolve_config({})
    with pytest.raises(ValueError, match="exactly one"):
        config.resolve_config({"experts": {"top_k": 2, "min_images": 5}})
    resolved = config.resolve_config({"experts": {"min_images": 5}})
    assert resolved["baseline"]["steps"] == config.DEFAULTS["baseline"]["steps"]


def test_config_overrides_and_named_configs():
    loaded = config.load_config("world_local:quick")
    changed = config_schema.apply_overrides(
        loaded, ["baseline.steps=9", "upstream.source=folder:/x"]
    )
    resolved = config.resolve_config(changed)
    assert resolved["baseline"]["steps"] == 9 and resolved["upstream"]["source"] == "folder:/x"
    assert loaded["baseline"]["steps"] != 9  # A copy was changed.
    with pytest.raises(ValueError, match="unknown world_local variant"):
        config.load_config("world_local:huge")
    with pytest.raises(ValueError, match="unknown config 'nope'"):
        config.load_config("nope")
    with pytest.raises(ValueError, match="unknown model preset"):
        config.resolve_config({"experts": {"top_k": 1}, "model": {"preset": "r99"}})
    # Roots are expert domains by default, as in the paper.
    assert config.resolve_config({"experts": {"top_k": 1}})["experts"]["include_roots"] is True


def test_every_shipped_config_resolves():
    for name in (
        "world_local",
        "world_local:quick",
        "world_local:control",
        "imagenet21k",
        "imagenet21k:bit_m",
        "imagenet21k:local",
    ):
        resolved = config.resolve_config(config.load_config(name))
        assert set(resolved) == set(config.DEFAULTS)


# --- schedules ---------------------------------------------------------------------------------


def test_learning_rate_rule():
    assert schedules.scaled_learning_rate(0.03, 512) == pytest.approx(0.06)
    lrs = [schedules.learning_rate_at(s, 1.0, 100, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # Decays monotonically.
    assert lrs[-1] < 0.01
    for decay in schedules.DECAYS:
        keras_schedule = schedules.WarmupDecay(0.4, 50, 5, decay)
        for step in (0, 3, 5, 20, 49):
            assert float(keras_schedule(step)) == pytest.approx(
                schedules.learning_rate_at(step, 0.4, 50, 5, decay), rel=1e-5, abs=1e-7
            )
    with pytest.raises(ValueError, match="warmup_steps"):
        schedules.learning_rate_at(0, 1.0, 10, 11)


# --- checkpoints -------------------------------------------------------------------------------


def test_atomic_checkpointer_keeps_newest_and_ignores_partial_writes(tmp_path):
    step = tf.Variable(0)
    weights = tf.Variable(np.zeros(3, np.float32))
    ckpt = tf.train.Checkpoint(step=step, weights=weights)
    saver = checkpointing.AtomicCheckpointer(str(tmp_path), ckpt, keep=2)
    for s in (1, 2, 3):
        weights.assign(np.full(3, s, np.float32))
        saver.save(s)
    assert saver.steps() == [2, 3]
    # A save killed midway leaves only a .tmp- folder: it is never taken for a checkpoint.
    (tmp_path / ".tmp-dead").mkdir()
    (tmp_path / ".tmp-dead" / "ckpt.index").write_text("garbage")
    weights.assign(np.zeros(3, np.float32))
    fresh = checkpointing.AtomicCheckpointer(str(tmp_path), ckpt, keep=2)
    assert not (tmp_path / ".tmp-dead").exists()
    assert fresh.restore_latest() == 3
    np.testing.assert_array_equal(weights.numpy(), [3, 3, 3])


def test_a_resumed_unit_gets_back_every_variable_of_its_model_frozen_ones_included(tmp_path):
    # An adapter expert trains with B's backbone and head frozen; a resumed process builds its
    # model anew, so the checkpoint must hold the frozen variables too (issue 24).
    def adapter_model(seed):
        keras.utils.set_random_seed(seed)
        model = presets.create_model("r14_micro", num_classes=3, num_experts=2)
        model.train_adapters_only()
        return model

    images = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    batches = lambda ctx, start: tf.data.Dataset.from_tensors((images, targets)).repeat()  # noqa: E731
    plan = loop.UnitPlan("unit", steps=2, batch_size=4, peak_lr=0.1, warmup_steps=0, expert_id=1)
    strategy = tf.distribute.get_strategy()
    trained = adapter_model(0)
    assert len(trained.non_trainable_weights) > len(trained.trainable_weights) > 0
    loop.train_unit(plan, trained, batches, strategy, str(tmp_path), print_fn=str)
    resumed = adapter_model(1)  # another process: other initial values
    assert not np.array_equal(resumed.get_weights()[0], trained.get_weights()[0])
    result = loop.train_unit(plan, resumed, batches, strategy, str(tmp_path), print_fn=str)
    assert result.resumed_from == 2
    for a, b in zip(resumed.weights, trained.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


# --- the whole job -----------------------------------------------------------------------------


def _weights(layers):
    return [w for layer in layers for w in layer.get_weights()]


def test_job_trains_baseline_full_adapter_experts_and_epn(tmp_path):
    workdir = str(tmp_path / "work")
    lines = []
    results = job.run_job(toy_config(), workdir, source=toy_source(), print_fn=lines.append)
    assert [r.name for r in results] == [
        "baseline",
        "expert_blue",
        "expert_red",
        "expert_green",
        "adapter_blue",
        "adapter_red",
        "adapter_green",
        "epn",
    ]
    assert all(r.steps == 2 for r in results)
    assert any("step 2/2 loss" in line and "img/s" in line for line in lines)
    names = sorted(os.listdir(os.path.join(workdir, "models")))
    assert names == sorted(["adapters", "baseline", "epn", *(f"expert_{g}" for g in GROUPS)])
    with open(os.path.join(workdir, "label_names.json")) as f:
        assert json.load(f) == [leaf for leaves in GROUPS.values() for leaf in leaves]

    def load(name):
        with open(os.path.join(workdir, "models", name, "info.json")) as f:
            info = json.load(f)
        return keras.models.load_model(os.path.join(workdir, "models", name, "model.keras")), info

    baseline, info = load("baseline")
    assert info["kind"] == "baseline" and info["num_classes"] == 9 and info["image_count"] == 54
    expert, info = load("expert_blue")
    assert (info["kind"], info["slice"], info["image_count"], info["steps"]) == (
        "full",
        "blue",
        24,
        2,
    )
    assert any(
        not np.array_equal(a, b) for a, b in zip(expert.get_weights(), baseline.get_weights())
    )

    adapters, info = load("adapters")
    assert [e["slice"] for e in info["experts"]] == ["blue", "red", "green"]
    # Backbone and head are bit-identical to the baseline's; every expert's adapters moved.
    for a, b in zip(
        _weights(adapters.backbone_layers() + [adapters.head]),
        _weights(baseline.backbone_layers() + [baseline.head]),
    ):
        np.testing.assert_array_equal(a, b)
    fresh = presets.create_model("r14_micro", num_classes=9, num_experts=3)
    for e in range(3):
        moved = [
            not np.array_equal(w[e], f[e])
            for w, f in zip(_weights(adapters.adapters), _weights(fresh.adapters))
        ]
        assert any(moved), f"expert {e}'s adapters were not trained"

    epn, info = load("epn")
    assert info["num_classes"] == 3 and info["experts"] == ["blue", "red", "green"]
    assert epn.head.units == 3

    # Everything is done: a re-run trains nothing.
    assert job.run_job(toy_config(), workdir, source=toy_source(), print_fn=lines.append) == []


def test_adapter_expert_touches_only_its_own_rows(tmp_path):
    workdir = str(tmp_path / "work")
    job.run_job(toy_config(), workdir, stages=["baseline"], source=toy_source(), print_fn=print)
    prepared = job.prepare_job(toy_config(), workdir, source=toy_source(), print_fn=print)
    model = prepared._create("one", num_classes=9, num_experts=3)
    model.train_adapters_only()
    before = [w.copy() for w in _weights(model.adapters)]
    plan = prepared._plan("adapter", "one", expert_id=1)
    domain = prepared.upstream.domains[1]
    prepared._train(plan, model, prepared._dataset_fn(plan, indices=domain.image_indices), "one")
    after = _weights(model.adapters)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[2], b[2])
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(after, before))


def _hierarchy_file(tmp_path, name, edges):
    path = tmp_path / name
    path.write_text(json.dumps({"edges": edges}))
    return str(path)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"baseline": {"stpes": 3}}, "unknown config key 'baseline.stpes'"),
        ({"hierarchy": {"source": "CYCLE"}}, "cycle"),
        ({"hierarchy": {"source": "MISSING"}}, "r0"),
        ({"experts": {"top_k": None, "min_images": 1000}}, "min_images=1000"),
    ],
)
def test_bad_inputs_stop_before_training(tmp_path, change, error):
    edges = [["root", "red"], ["red", "r0"], ["r0", "root"]]
    files = {
        "CYCLE": "json:" + _hierarchy_file(tmp_path, "cycle.json", edges),
        "MISSING": "json:"
        + _hierarchy_file(tmp_path, "missing.json", [["root", "red"], ["red", "zz"]]),
    }
    cfg = toy_config()
    for section, values in change.items():
        values = {k: files.get(v, v) for k, v in values.items()}
        cfg[section] = {**cfg.get(section, {}), **values}
    workdir = tmp_path / "work"
    with pytest.raises(ValueError, match=error):
        job.run_job(cfg, str(workdir), source=toy_source(), print_fn=print)
    assert not (workdir / "models").exists() and not (workdir / "checkpoints").exists()


def test_a_workdir_refuses_a_different_config_once_something_was_trained(tmp_path):
    workdir = str(tmp_path / "work")
    domains = os.path.join(workdir, "expert_domains.json")

    class Killed(BaseException):
        pass

    def killed_at_step_1(line):
        if line.startswith("[baseline] step 1/2"):
            raise Killed

    # A first attempt that fails before its first checkpoint (say, out of memory at the first
    # step) has written config.json and the domains: its corrected rerun is not refused.
    cfg = {**toy_config(), "checkpoint_every": 2, "experts": {"top_k": 1, "include_roots": False}}
    with pytest.raises(Killed):
        job.run_job(cfg, workdir, source=toy_source(), print_fn=killed_at_step_1)
    assert json.loads(open(domains).read())[0]["name"] == "blue"  # the largest group
    lines = []
    job.run_job(
        toy_config(), workdir, stages=["baseline"], source=toy_source(), print_fn=lines.append
    )
    assert lines[0] == (
        f"{workdir}: nothing was trained with its earlier config (keys ['experts'] differ); "
        "starting over with this one"
    )
    assert len(json.loads(open(domains).read())) == 3  # chosen again with the new top_k
    # Once something was trained, only the runtime settings may change.
    job.prepare_job({**toy_config(), "log_every": 5}, workdir, source=toy_source(), print_fn=print)
    with pytest.raises(ValueError, match=r"different config \(keys \['batch_size'\]"):
        job.prepare_job({**toy_config(), "batch_size": 4}, workdir, source=toy_source())


# --- seeds and determinism (issue 16) ------------------------------------------------------------


@pytest.fixture(autouse=True)
def restore_determinism():
    """Jobs switch op determinism on process-wide: put it back as it was for the tests that follow
    (other test files share this process)."""
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    yield
    if before:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def test_derived_seeds_are_fixed_distinct_and_validated(restore_determinism):
    seeds = determinism.derive_seeds(0)
    assert set(seeds) == set(determinism.SEED_NAMES)
    assert len(set(seeds.values())) == len(seeds)  # One independent seed per use.
    assert determinism.derive_seeds(0) == seeds and determinism.derive_seeds(1) != seeds
    # A fixed hash: the same numbers on every machine and NumPy version (sha256 of "0/data").
    assert seeds["data"] == int.from_bytes(
        __import__("hashlib").sha256(b"0/data").digest()[:8], "big"
    ) % (2**31 - 1)
    configured = determinism.configure(3, deterministic=True)
    assert configured == {"seed": 3, "deterministic": True, **determinism.derive_seeds(3)}
    assert determinism.is_enabled()
    assert determinism.configure(3, deterministic=False)["deterministic"] is False
    assert not determinism.is_enabled()
    for bad in (-1, 1.5, "0", True, 2**31):
        with pytest.raises(ValueError, match="seed must be an int"):
            determinism.configure(bad)


def test_two_runs_of_a_tiny_job_give_identical_fingerprints(tmp_path, restore_determinism):
    cfg = toy_config(baseline=3)
    runs = [
        job.run_job(cfg, str(tmp_path / f"w{i}"), stages=["baseline"], source=toy_source())
        for i in range(2)
    ]
    assert runs[0][0].fingerprint == runs[1][0].fingerprint
    info = json.loads((tmp_path / "w0" / "models" / "baseline" / "info.json").read_text())
    assert info["seeds"] == determinism.configure(0) and info["init_from"] is None
    other = job.run_job(
        {**cfg, "seed": 1}, str(tmp_path / "w2"), stages=["baseline"], source=toy_source()
    )
    assert other[0].fingerprint != runs[0][0].fingerprint  # The seed is really used.


def test_resumed_data_stream_equals_the_uninterrupted_one():
    source = toy_source()
    make = lambda start: data.training_dataset(  # noqa: E731
        source,
        batch_size=4,
        image_size=8,
        seed=5,
        augment_seed=6,
        start_step=start,
        indices=np.arange(10, 30),
        shuffle_buffer=7,
    )
    whole = [b[0].numpy() for b in make(0).take(12)]  # 48 examples: 2.4 epochs of the slice.
    for start in (1, 5, 9):  # Inside the first epoch, and two epochs on.
        resumed = [b[0].numpy() for b in make(start).take(12 - start)]
        for a, b in zip(whole[start:], resumed):
            np.testing.assert_array_equal(a, b)


# --- bad inputs: one line naming the key, before anything is written (issue 13 section 3) --------


@pytest.mark.parametrize(
    "override, message",
    [
        ("baseline.base_lr=abc", "baseline.base_lr must be a number > 0, got 'abc'"),
        ("model.image_size=0", "model.image_size must be an int >= 1, got 0"),
        ("batch_size=-4", "batch_size must be an int >= 1, got -4"),
        ("seed=-1", r"seed must be an int in \[0, 2\*\*31 - 1\], got -1"),
        ("deterministic=maybe", "deterministic must be true or false, got 'maybe'"),
        ("upstream.crop_min_area=2", r"upstream.crop_min_area must be a number in \(0, 1\]"),
        ("upstream.flip=1", "upstream.flip must be true or false, got 1"),
        ("full.momentum=x", r"full.momentum must be a number in \[0, 1\), got 'x'"),
        ("epn.decay=steps", "epn.decay must be 'cosine', 'linear' or 'constant'"),
        ("experts.top_k=0", "experts.top_k must be None or an int >= 1, got 0"),
        ("upstream.world_scripts=latin", "upstream.world_scripts must be None or a non-empty list"),
        ("init_from=3", "init_from must be None or a non-empty string, got 3"),
        (
            "model.image_size=100000",
            r"model.image_size=100000 is above max_image_size=1024 \(one float32 image of that "
            r"size takes 114441 MiB, a batch of 8: 894.1 GiB, before any activation\); set "
            "max_image_size higher if your memory holds it",
        ),
        ("upstream.world_image_size=4096", "upstream.world_image_size=4096 is above max_image"),
        ("max_image_size=0", "max_image_size must be an int >= 1, got 0"),
    ],
)
def test_bad_config_values_name_the_key_before_the_workdir_exists(tmp_path, override, message):
    cfg = config_schema.apply_overrides(toy_config(), [override])
    workdir = tmp_path / "work"
    with pytest.raises(ValueError, match=message) as error:
        job.prepare_job(cfg, str(workdir), source=toy_source())
    assert "\n" not in str(error.value)
    assert not workdir.exists()  # So the corrected rerun is not refused as "a different config".
    job.prepare_job(toy_config(), str(workdir), source=toy_source(), print_fn=lambda _: None)


def test_every_config_key_has_a_type_rule():
    def leaves(tree, path=""):
        return {
            p
            for k, v in tree.items()
            for p in (leaves(v, f"{path}{k}.") if isinstance(v, dict) else {path + k})
        }

    rules = _rule_tree(config.SCHEMA)
    assert leaves(config.DEFAULTS) == leaves(rules)


def _rule_tree(schema):
    return {k: _rule_tree(v) if isinstance(v, dict) else None for k, v in schema.items()}


def test_workdir_that_is_a_file_is_refused_in_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="--workdir .* is a file; expected a directory"):
        job.prepare_job(toy_config(), str(a_file), source=toy_source())
    with pytest.raises(ValueError, match="lies under the file"):
        job.prepare_job(toy_config(), str(a_file / "sub"), source=toy_source())


def test_a_workdir_holding_a_link_out_of_it_is_refused_before_anything_is_written(tmp_path):
    workdir, outside = tmp_path / "work", tmp_path / "elsewhere"
    workdir.mkdir()
    outside.mkdir()
    (workdir / "models").symlink_to(outside)
    with pytest.raises(
        ValueError, match=r"^--workdir .*: 'models' is a symbolic link to .*elsewhere"
    ):
        job.prepare_job(toy_config(), str(workdir), source=toy_source())
    assert os.listdir(outside) == [] and os.listdir(workdir) == ["models"]


def test_a_full_disk_during_training_is_one_error(tmp_path, monkeypatch):
    import errno

    def full(self, step):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.AtomicCheckpointer, "save", full)
    workdir = str(tmp_path / "work")
    with pytest.raises(job.DiskFullError, match="is full .*rerun the same command") as error:
        job.run_job(toy_config(), workdir, stages=["baseline"], source=toy_source())
    assert workdir in error.value.strerror and "\n" not in error.value.strerror
    # TensorFlow's own I/O reports a full disk as an OpError; it gets the same line.
    tf_error = tf.errors.ResourceExhaustedError(None, None, "write: No space left on device")
    monkeypatch.setattr(
        checkpointing.AtomicCheckpointer, "save", lambda self, step: (_ for _ in ()).throw(tf_error)
    )
    with pytest.raises(job.DiskFullError):
        job.run_job(toy_config(), workdir, stages=["baseline"], source=toy_source())


def _cli(argv):
    """Runs `bit_experts.train.main` in-process; returns its exit message."""
    from absl import flags

    from bit_experts import train

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", *argv])
    with pytest.raises(SystemExit) as exit_:
        train.main(["train"])
    return str(exit_.value.code)


def test_cli_bad_inputs_are_one_line_and_leave_no_workdir(tmp_path, restore_determinism):
    workdir = tmp_path / "work"
    base = ["--config=world_local:quick", f"--workdir={workdir}"]
    line = _cli([*base, "--set", "baseline.base_lr=abc"])
    assert line == (
        "bit_experts.train: error: bad config: baseline.base_lr must be a number > 0, got 'abc'"
    )
    assert "model.image_size must be an int >= 1" in _cli([*base, "--set=model.image_size=0"])
    assert "seed must be an int" in _cli([*base, "--seed=-3"])
    assert "init_from" in _cli([*base, f"--init_from={tmp_path / 'nope.npz'}"])
    assert "image_size=100000 is above max_image_size=1024" in _cli(
        [*base, "--set=model.image_size=100000"]
    )
    assert not workdir.exists()
    (tmp_path / "file").write_text("")
    assert "is a file" in _cli(["--config=world_local:quick", f"--workdir={tmp_path / 'file'}"])


# --- init_from: B grown from a BiT checkpoint (issue 10 section 2) -------------------------------


def test_init_from_a_bit_npz_starts_b_from_its_backbone(tmp_path, restore_determinism):
    from reference_bit import random_bit_checkpoint

    from bit_experts import checkpoint

    # r14_micro's architecture, with BiT-M's 21k head replaced by 5 classes.
    weights = random_bit_checkpoint((1, 1, 1, 1), 0.125, num_classes=5, groups=4, seed=3)
    npz = tmp_path / "BiT-toy.npz"
    np.savez(npz, **weights)
    cfg = {**toy_config(baseline=1), "init_from": str(npz)}
    cfg["baseline"] = {**cfg["baseline"], "base_lr": 1e-9, "warmup_steps": 0}
    workdir = tmp_path / "work"
    job.run_job(cfg, str(workdir), stages=["baseline"], source=toy_source())
    model = keras.models.load_model(workdir / "models" / "baseline" / "model.keras")
    trained = checkpoint.checkpoint_weights(model)
    for key, value in weights.items():
        if "/head/" not in key:  # The backbone is the checkpoint's (one step at lr ~0 later).
            np.testing.assert_allclose(trained[key], value, atol=1e-6)
    assert model.num_classes == 9  # The head is re-created for the upstream labels.
    info = json.loads((workdir / "models" / "baseline" / "info.json").read_text())
    assert info["init_from"]["kind"] == "bit_npz" and info["init_from"]["path"] == str(npz)
    assert len(info["init_from"]["sha256"]) == 64
    # A checkpoint of another architecture is refused strictly, before anything is written.
    wide = random_bit_checkpoint((1, 1, 1, 1), 0.25, groups=4)
    np.savez(tmp_path / "wide.npz", **wide)
    other = tmp_path / "other"
    with pytest.raises(checkpoint.CheckpointError, match="does not fit model preset 'r14_micro'"):
        job.prepare_job({**cfg, "init_from": str(tmp_path / "wide.npz")}, str(other))
    assert not other.exists()


# --- the work directory: one job at a time, state files read back, free disk (issue 24) ---------


def test_a_second_job_in_one_workdir_is_refused_in_one_line_naming_the_holder(tmp_path):
    import subprocess
    import sys

    from bit_experts import locks

    workdir = tmp_path / "work"
    workdir.mkdir()
    lock_file = workdir / work_directory.LOCK_FILE
    holder = subprocess.Popen(  # another training, as far as the lock can tell
        [
            sys.executable,
            "-c",
            "import sys, time; from bit_experts import locks; "
            f"locks.DirectoryLock({str(workdir)!r}, {lock_file.name!r}, 'w', 0).__enter__(); "
            "print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        },
    )
    try:
        assert holder.stdout.readline() == "held\n"
        line = _cli(["--config=world_local:quick", f"--workdir={workdir}"])
    finally:
        holder.kill()
        holder.wait()
    assert "\n" not in line
    assert line.startswith(
        f"bit_experts.train: error: work directory {workdir} is being changed by pid {holder.pid} "
        f"on host {__import__('socket').gethostname()} since "
    )
    assert line.endswith(f"its lock is {lock_file}; remove that file only if that process is gone")
    assert sorted(os.listdir(workdir)) == [lock_file.name]  # nothing written
    # The holder is gone (killed): its lock is taken over, and given back when the job ends.
    lines = []
    job.run_job(
        toy_config(baseline=1),
        str(workdir),
        stages=["baseline"],
        source=toy_source(),
        print_fn=lines.append,
    )
    assert any(line.startswith("removed the stale lock of pid") for line in lines)
    assert not lock_file.exists()
    assert isinstance(locks.LockHeldError(), OSError)


def test_state_files_that_do_not_parse_are_named_with_what_to_do(tmp_path):
    workdir = tmp_path / "work"
    cfg = toy_config(baseline=1)
    job.run_job(cfg, str(workdir), stages=["baseline"], source=toy_source(), print_fn=str)

    def refused(match):
        with pytest.raises(ValueError, match=match) as error:
            job.prepare_job(cfg, str(workdir), source=toy_source(), print_fn=str)
        assert "\n" not in str(error.value)
        assert not (workdir / work_directory.LOCK_FILE).exists()  # given back

    def truncate(path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return data

    config_json = workdir / "config.json"
    whole = truncate(config_json)
    refused(
        rf"^{config_json} is not valid JSON \(.*\); it is the config this work directory was "
        "first trained with: if that was this config, delete the file and rerun"
    )
    config_json.write_bytes(whole)
    for name in ("expert_domains.json", "expert_domains.indices.npz"):
        whole = truncate(workdir / name)
        refused(
            rf"{workdir / name}.*; delete {workdir / 'expert_domains.json'} and "
            f"{workdir / 'expert_domains.indices.npz'} and rerun: the same config"
        )
        (workdir / name).write_bytes(whole)
    model = workdir / "models" / "baseline" / "model.keras"
    truncate(model)
    refused(
        rf"^{model} cannot be loaded \(.*\); delete {model.parent} and rerun the training "
        "command: it saves the model again from its last checkpoint"
    )
    # Doing what the line says works: B is saved again from its last checkpoint, not retrained.
    shutil.rmtree(model.parent)
    rerun = job.run_job(cfg, str(workdir), stages=["baseline"], source=toy_source(), print_fn=str)
    assert [(r.name, r.resumed_from) for r in rerun] == [("baseline", 1)]
    keras.models.load_model(model)


def test_free_disk_is_checked_before_training_with_the_estimate_it_used(tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    cfg = {**toy_config(baseline=2), "checkpoint_every": 1}
    with monkeypatch.context() as patch:
        patch.setattr(atomic_files, "free_bytes", lambda path: 1000)
        with pytest.raises(job.DiskFullError) as error:
            job.run_job(cfg, str(workdir), stages=["baseline"], source=toy_source(), print_fn=str)
    line = error.value.strerror
    assert line.startswith(f"the disk of work directory {str(workdir)!r} has 0.0 MiB free; ")
    assert "(1 units keeping 2 checkpoints of up to " in line and ", 1 models, less 0.0 MiB" in line
    assert line.endswith("free space, lower keep_checkpoints or use a --workdir on another disk")
    assert not (workdir / "checkpoints").exists()
    # The estimate bounds what the stage writes.
    estimate = float(re.search(r"may write (\S+) MiB", line).group(1)) * 2**20
    job.run_job(cfg, str(workdir), stages=["baseline"], source=toy_source(), print_fn=str)
    written = sum(
        f.stat().st_size
        for folder in ("checkpoints", "models")
        for f in (workdir / folder).rglob("*")
        if f.is_file()
    )
    assert 0.5 * estimate < written <= estimate
