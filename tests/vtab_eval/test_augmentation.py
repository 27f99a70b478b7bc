"""Per-task augmentation policies: declared next to each label function, applied to every sweep."""

import numpy as np
import pytest
import tensorflow as tf

from vtab_eval import finetune, sweeps, tasks
from vtab_eval.tasks import Augmentation

# The BiT colab: no random crops for counting, no flips where the label is an orientation. Each
# entry follows from the task's label function (vtab_eval/tasks/structured.py, natural.py).
NO_FLIP = {
    "svhn",
    "dsprites_location",
    "dsprites_orientation",
    "smallnorb_azimuth",
    "smallnorb_elevation",
}
NO_CROP = {"clevr_count", "clevr_distance", "dmlab", "kitti_distance", "dsprites_location"}


@pytest.mark.parametrize("name", tasks.list_tasks("all"))
def test_every_task_declares_its_policy(name):
    task = tasks.get_task(name)
    policy = task.augmentation
    assert isinstance(policy, Augmentation)
    assert (policy.flip, policy.crop) == (name not in NO_FLIP, name not in NO_CROP)
    assert bool(policy.reason) == (name in NO_FLIP | NO_CROP)
    # list_tasks --format=json prints Task.to_json (tests/vtab_eval/test_tasks.py checks that).
    assert task.to_json()["augmentation"] == {
        "flip": policy.flip,
        "crop": policy.crop,
        "reason": policy.reason,
    }


def test_folder_tasks_allow_both(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "train" / label).mkdir(parents=True)
        tf.io.write_file(
            str(tmp_path / "train" / label / "0.png"),
            tf.io.encode_png(np.zeros((4, 4, 3), "uint8")),
        )
    task = tasks.get_task(f"folder:{tmp_path}")
    assert (task.augmentation.flip, task.augmentation.crop) == (True, True)


@pytest.mark.parametrize("preset", sweeps.PRESETS)
def test_every_preset_honours_every_task_policy(preset):
    raw = sweeps.get_sweep(preset, dataset_size=1000, image_size=(300, 300), num_settings=3)
    for name in tasks.list_tasks("all"):
        task = tasks.get_task(name)
        adapted = sweeps.for_task(raw, task)
        assert len(adapted) == len(raw)
        for before, after in zip(raw, adapted, strict=True):
            assert after["flip"] == (before["flip"] and task.augmentation.flip)
            expected_resize = before["resize"] if task.augmentation.crop else None
            assert after["resize"] == expected_resize
            # Nothing else changes, and applying the policy twice changes nothing more.
            same = {k: v for k, v in after.items() if k not in ("flip", "resize")}
            assert same == {k: v for k, v in before.items() if k not in ("flip", "resize")}
            assert sweeps.for_task(after, task) == after


def test_hyperrule_is_adapted_to_counting_and_orientation_tasks():
    (setting,) = sweeps.get_sweep("bit_hyperrule", dataset_size=1000, image_size=(320, 480))
    assert (setting["flip"], setting["resize"], setting["resolution"]) == (True, 512, 480)
    count = sweeps.for_task(setting, tasks.get_task("clevr_count"))
    assert (count["flip"], count["resize"], count["resolution"]) == (True, None, 480)
    azimuth = sweeps.for_task(setting, tasks.get_task("smallnorb_azimuth"))
    assert (azimuth["flip"], azimuth["resize"]) == (False, 512)
    assert sweeps.for_task(setting, tasks.get_task("cifar100")) == setting


def test_policy_needs_a_reason_and_bools():
    with pytest.raises(ValueError, match="reason"):
        Augmentation(flip=False)
    with pytest.raises(ValueError, match="flip must be a bool"):
        Augmentation(flip=0, reason="x")


def _stream(setting, images):
    labels = np.arange(len(images)) % 2
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    batches = finetune._prepare_train(ds, setting, 2, seed=3)
    return next(iter(batches))["image"].numpy()


def test_training_pipeline_neither_flips_nor_crops_when_the_task_forbids_it():
    # Left half bright, right half dark: any flip or crop shows in the output.
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.1, (8, 12, 12, 3)).astype(np.float32)
    images[:, :, :6] += 0.8
    images = np.round(images * 255) / 255  # Exactly representable as the uint8 cache stores it.
    setting = sweeps.make_setting(
        0.01, 2, 8, resolution=8, resize=10, flip=True, warmup_steps=0, name="augmenting"
    )
    expected = tf.image.resize(images, [8, 8]).numpy()
    augmented = _stream(setting, images)
    # The augmenting setting crops and flips: no output equals its plain resize.
    assert not any(np.allclose(a, e, atol=1e-5) for a in augmented for e in expected)
    policy = sweeps.for_task(setting, tasks.get_task("dsprites_location"))
    plain = _stream(policy, images)
    # Shuffled, so match each output to a plain resize; the tolerance covers float32 resizing
    # of values in [0, 1] (a few ulp), far below the 0.8 left/right contrast a flip would show.
    for image in plain:
        assert any(np.allclose(image, e, atol=1e-5) for e in expected)
        assert image[:, :4].mean() > image[:, 4:].mean() + 0.5
