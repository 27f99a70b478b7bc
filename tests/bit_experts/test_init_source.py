"""B taken from a BiT checkpoint (`init_from`, `init_head`, `baseline.steps=0`; issue 25 item 3).

`python -m bit_experts.train --init_from=<BiT .npz> --set baseline.steps=0` makes B the checkpoint as
it is, head included, and the published B computes the checkpoint's features and logits. Tested on
a generated BiT checkpoint of the r14_micro architecture (tests/reference_bit.py), nothing
downloaded.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from reference_bit import bit_features, random_bit_checkpoint
from tolerances import network_atol
from training_toys import toy_config, toy_source

from bit_experts import checkpoint
from bit_experts.training import job, outputs

MICRO = {"block_units": (1, 1, 1, 1), "width_factor": 0.125, "groups": 4}  # presets.r14_micro
WORLD_LOCAL_QUICK_LABELS = 470  # world_local:quick's upstream labels (every script's characters)


def _npz(path, num_classes, seed=11):
    weights = random_bit_checkpoint(
        MICRO["block_units"], MICRO["width_factor"], num_classes, MICRO["groups"], seed
    )
    np.savez(path, **weights)
    return weights


def _cli(argv):
    """`bit_experts.train.main` in-process: None when it ran through, else its exit message."""
    from absl import flags

    from bit_experts import train

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", *argv])
    try:
        train.main(["train"])
    except SystemExit as exit_:
        return str(exit_.code)
    return None


def _reference_logits(weights, images):
    features = bit_features(weights, images, groups=MICRO["groups"])
    kernel = weights["resnet/head/conv2d/kernel"][0, 0].astype(np.float64)
    return features, features @ kernel + weights["resnet/head/conv2d/bias"]


def test_zero_baseline_steps_publish_the_checkpoint_itself(tmp_path):
    import tensorflow_hub as hub

    from hub_export import publish

    weights = _npz(tmp_path / "BiT-M-toy.npz", WORLD_LOCAL_QUICK_LABELS)
    workdir = tmp_path / "work"
    argv = ["--config=world_local:quick", f"--workdir={workdir}", "--stages=baseline"]
    assert (
        _cli([*argv, f"--init_from={tmp_path / 'BiT-M-toy.npz'}", "--set=baseline.steps=0"]) is None
    )

    # B's weights are the checkpoint's, bit for bit, head included (no new head, no step taken).
    b = outputs.load_model(str(workdir), "baseline")
    saved = checkpoint.checkpoint_weights(b)
    assert sorted(saved) == sorted(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)
    info = json.loads((workdir / "models" / "baseline" / "info.json").read_text())
    assert info["steps"] == 0 and info["init_from"]["kind"] == "bit_npz"
    assert info["num_classes"] == WORLD_LOCAL_QUICK_LABELS
    assert not (workdir / "checkpoints" / "baseline").exists()  # nothing was trained

    # The published B computes the checkpoint's features and logits.
    collection = tmp_path / "collection"
    publish.publish(
        [str(workdir)], str(collection), only=["baseline", "baseline_classifier"], log=str
    )
    images = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype("float32")
    want_features, want_logits = _reference_logits(weights, images)
    kernels = [w.shape for k, w in weights.items() if k.endswith("kernel")]
    for name, want in (("baseline", want_features), ("baseline_classifier", want_logits)):
        module = hub.load(str(collection / name / "1"))
        got = module(tf.constant(images)).numpy()
        # Float64 reference: the float32 bound of the network (tests/tolerances.py); a dropped or
        # re-created head moves logits by O(1) (a new head predicts the prior, -ln(470), for all).
        atol = network_atol(kernels, images.shape, want)
        assert atol < 1e-3 * np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=name)


def test_init_head_keeps_the_checkpoints_head_under_training(tmp_path):
    # init_head with steps > 0: B starts from the checkpoint's head (DAT starts from B this way).
    weights = _npz(tmp_path / "b.npz", 9, seed=4)
    cfg = {**toy_config(baseline=1), "init_from": str(tmp_path / "b.npz"), "init_head": True}
    cfg["baseline"] = {**cfg["baseline"], "base_lr": 1e-9, "warmup_steps": 0, "momentum": 0.0}
    job.run_job(cfg, str(tmp_path / "w"), stages=["baseline"], source=toy_source(), print_fn=str)
    saved = checkpoint.checkpoint_weights(outputs.load_model(str(tmp_path / "w"), "baseline"))
    head = weights["resnet/head/conv2d/kernel"]
    # One step at lr 3.5e-11 (1e-9 x 8 / 256) moves no weight by 1e-6; a new head would be zeros.
    np.testing.assert_allclose(saved["resnet/head/conv2d/kernel"], head, rtol=0, atol=1e-6)
    assert np.abs(head).max() > 0.1


@pytest.mark.parametrize(
    "classes, overrides, message",
    [
        (9, {"baseline.steps": 0, "init_from": None}, "baseline.steps=0 takes B as init_from is"),
        (9, {"init_head": True, "init_from": None}, "init_head=true copies init_from's label head"),
        (0, {"baseline.steps": 0}, "has no label head"),
        (5, {"baseline.steps": 0}, "has a head of 5 outputs, the upstream data 9 labels"),
        (5, {"init_head": True}, "has a head of 5 outputs"),
    ],
)
def test_a_b_that_cannot_be_the_checkpoint_is_one_line_before_anything_is_written(
    tmp_path, classes, overrides, message
):
    _npz(tmp_path / "b.npz", classes)
    cfg = {**toy_config(), "init_from": str(tmp_path / "b.npz")}
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        (cfg.setdefault(section, {}) if section else cfg)[leaf] = value
    workdir = tmp_path / "work"
    with pytest.raises(ValueError, match=message) as error:
        job.prepare_job(cfg, str(workdir), source=toy_source(), print_fn=str)
    assert "\n" not in str(error.value)
    assert not workdir.exists()


def test_a_modules_head_is_not_taken(tmp_path):
    from bit_experts import presets
    from hub_export.module import HubModule, save_module

    model = presets.create_model("r14_micro", 9)
    model(tf.zeros([1, 16, 16, 3]))
    save_module(HubModule(model, "features"), str(tmp_path / "m"), {"name": "m", "resolution": 16})
    cfg = {**toy_config(), "init_from": str(tmp_path / "m"), "init_head": True}
    with pytest.raises(ValueError, match="is an exported module, whose head cannot be taken"):
        job.prepare_job(cfg, str(tmp_path / "work"), source=toy_source(), print_fn=str)
    assert not (tmp_path / "work").exists()


def test_a_workdir_of_a_version_without_init_head_still_resumes(tmp_path):
    # config.json written before `init_head` existed lacks the key; its default (false) is what
    # that version did, so the work directory is not "trained with a different config".
    workdir = tmp_path / "w"
    job.run_job(toy_config(), str(workdir), stages=["baseline"], source=toy_source(), print_fn=str)
    path = workdir / "config.json"
    old = json.loads(path.read_text())
    del old["init_head"]
    path.write_text(json.dumps(old))
    lines = []
    job.run_job(
        toy_config(), str(workdir), stages=["baseline"], source=toy_source(), print_fn=lines.append
    )
    assert not any("differ" in line for line in lines)
    # A real difference is still refused.
    with pytest.raises(ValueError, match=r"keys \['init_from', 'init_head'\] differ"):
        cfg = {**toy_config(), "init_from": str(workdir / "models" / "baseline"), "init_head": True}
        job.prepare_job(cfg, str(workdir), source=toy_source(), print_fn=str)
    assert os.path.isfile(path)
