"""Upstream training in-process: config schema, schedules, checkpoints, the whole job, bad inputs."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bit_experts import data, presets
from bit_experts.training import checkpointing, config, job, schedules

GROUPS = {"red": ["r0", "r1", "r2"], "green": ["g0", "g1"], "blue": ["b0", "b1", "b2", "b3"]}
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def _toy_source(per_class=6, size=16):
    """Three colour groups of leaf classes under one root; images are noisy colour patches."""
    rng = np.random.default_rng(0)
    names = [leaf for leaves in GROUPS.values() for leaf in leaves]
    edges = [("root", g) for g in GROUPS] + [(g, leaf) for g, ls in GROUPS.items() for leaf in ls]
    labels = np.repeat(np.arange(len(names)), per_class)
    group_of = {leaf: g for g, ls in GROUPS.items() for leaf in ls}
    base = np.array([COLOURS[group_of[names[i]]] for i in labels], np.float64)
    noise = rng.normal(0, 20, (len(labels), size, size, 3))
    images = np.clip(base[:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return data.array_source("toy", images, labels, names, edges)


def _toy_config(**stage_steps):
    cfg = {
        "experts": {"top_k": 3},
        "model": {"preset": "r14_micro", "image_size": 16},
        "batch_size": 8,
        "checkpoint_every": 1,
        "log_every": 1,
    }
    for stage in config.STAGES:
        cfg[stage] = {"steps": stage_steps.get(stage, 2), "warmup_steps": 1, "base_lr": 0.5}
    return cfg


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
    changed = config.apply_overrides(loaded, ["baseline.steps=9", "upstream.source=folder:/x"])
    resolved = config.resolve_config(changed)
    assert resolved["baseline"]["steps"] == 9 and resolved["upstream"]["source"] == "folder:/x"
    assert loaded["baseline"]["steps"] != 9  # A copy was changed.
    with pytest.raises(ValueError, match="unknown world_local variant"):
        config.load_config("world_local:huge")
    with pytest.raises(ValueError, match="unknown config 'nope'"):
        config.load_config("nope")
    with pytest.raises(ValueError, match="unknown model preset"):
        config.resolve_config({"experts": {"top_k": 1}, "model": {"preset": "r99"}})


def test_every_shipped_config_resolves():
    for name in (
        "world_local",
        "world_local:quick",
        "world_local:control",
        "imagenet21k",
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


# --- the whole job -----------------------------------------------------------------------------


def _weights(layers):
    return [w for layer in layers for w in layer.get_weights()]


def test_job_trains_baseline_full_adapter_experts_and_epn(tmp_path):
    workdir = str(tmp_path / "work")
    lines = []
    results = job.run_job(_toy_config(), workdir, source=_toy_source(), print_fn=lines.append)
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
    assert job.run_job(_toy_config(), workdir, source=_toy_source(), print_fn=lines.append) == []


def test_adapter_expert_touches_only_its_own_rows(tmp_path):
    workdir = str(tmp_path / "work")
    job.run_job(_toy_config(), workdir, stages=["baseline"], source=_toy_source(), print_fn=print)
    prepared = job.prepare_job(_toy_config(), workdir, source=_toy_source(), print_fn=print)
    model = prepared._create(num_classes=9, num_experts=3)
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
    cfg = _toy_config()
    for section, values in change.items():
        values = {k: files.get(v, v) for k, v in values.items()}
        cfg[section] = {**cfg.get(section, {}), **values}
    workdir = tmp_path / "work"
    with pytest.raises(ValueError, match=error):
        job.run_job(cfg, str(workdir), source=_toy_source(), print_fn=print)
    assert not (workdir / "models").exists() and not (workdir / "checkpoints").exists()


def test_a_workdir_refuses_a_different_config(tmp_path):
    workdir = str(tmp_path / "work")
    job.prepare_job(_toy_config(), workdir, source=_toy_source(), print_fn=print)
    job.prepare_job(
        {**_toy_config(), "log_every": 5}, workdir, source=_toy_source(), print_fn=print
    )
    with pytest.raises(ValueError, match=r"different config \(keys \['batch_size'\]"):
        job.prepare_job({**_toy_config(), "batch_size": 4}, workdir, source=_toy_source())
