"""Sweep presets and BiT-HyperRule as pure functions."""

import math

import numpy as np
import pytest
import tensorflow as tf

from vtab_eval import sweeps


@pytest.mark.parametrize(
    "size, expected",
    [
        (1, (100, (200, 300, 400), 500)),
        (19_999, (100, (200, 300, 400), 500)),
        (20_000, (500, (3000, 6000, 9000), 10_000)),
        (499_999, (500, (3000, 6000, 9000), 10_000)),
        (500_000, (500, (6000, 12_000, 18_000), 20_000)),
    ],
)
def test_hyperrule_schedule_by_dataset_size(size, expected):
    assert sweeps.hyperrule_schedule(size) == expected


def test_hyperrule_resolution_and_mixup():
    assert sweeps.hyperrule_resolution(32) == (160, 128)
    assert sweeps.hyperrule_resolution((95, 96)) == (160, 128)
    # google-research/big_transfer bit_hyperrule.py: area < 96*96 -> (160, 128), else (512, 480).
    assert sweeps.hyperrule_resolution((96, 96)) == (512, 480)
    assert sweeps.hyperrule_resolution((48, 192)) == (512, 480)  # Area, not side, decides.
    assert sweeps.hyperrule_mixup(19_999) == 0.0
    assert sweeps.hyperrule_mixup(20_000) == 0.1


def test_bit_hyperrule_setting_for_vtab1k():
    (setting,) = sweeps.get_sweep("bit_hyperrule", dataset_size=1000, image_size=(500, 375))
    assert setting["learning_rate"] == 0.003 and setting["batch_size"] == 512
    assert setting["steps"] == 500 and setting["warmup_steps"] == 100
    assert (setting["resize"], setting["resolution"]) == (512, 480)
    assert setting["mixup_alpha"] == 0.0 and setting["flip"]
    # Warm-up, then 10x drops at steps 200, 300, 400.
    lrs = [sweeps.learning_rate_at(setting, s) for s in (0, 99, 100, 199, 200, 300, 400, 499)]
    # Schedule values in float64 (Python floats): approx's rel 1e-6 only absorbs rounding.
    assert lrs[0] == pytest.approx(0.003 / 100) and lrs[1] == pytest.approx(0.003)
    assert lrs[2:] == pytest.approx([0.003, 0.003, 3e-4, 3e-5, 3e-6, 3e-6])


def _closed_form(setting, step):
    """Fine-tuning's schedule as `sweeps` wrote it before it moved to bit_experts (issue 22)."""
    base, steps, warmup = setting["learning_rate"], setting["steps"], setting["warmup_steps"]
    if step < warmup:
        return base * (step + 1) / warmup
    if setting["schedule"] == "constant":
        return base
    if setting["schedule"] == "cosine":
        progress = (step - warmup) / max(1, steps - warmup)
        return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    passed = sum(step >= point * steps for point in setting["decay_points"])
    return base * setting["decay_factor"] ** passed


def test_every_preset_keeps_its_learning_rates_bit_for_bit():
    """The shared schedule (bit_experts.training.schedules) gives every preset's settings the very
    floats they had, at every step (and past the end)."""
    sweep = [s for name in ("vtab_lightweight", "local", "quick") for s in sweeps.get_sweep(name)]
    sweep += sweeps.get_sweep("random_search", num_settings=36)
    for size in (1000, 50_000, 600_000):
        sweep += sweeps.get_sweep("bit_hyperrule", dataset_size=size)
    sweep += sweeps.from_values([0.05], [10, 333], 8, 32, decay_points=(0.1, 0.5), decay_factor=0.3)
    sweep += sweeps.from_values([0.1], [50], 8, 32, warmup_steps=5, schedule="constant")
    assert {s["schedule"] for s in sweep} == set(sweeps.SCHEDULES)
    for setting in sweep:
        for step in range(setting["steps"] + 2):
            assert sweeps.learning_rate_at(setting, step) == _closed_form(setting, step), setting


def test_vtab_lightweight_is_two_rates_by_two_schedules():
    sweep = sweeps.get_sweep("vtab_lightweight")
    assert {(s["learning_rate"], s["steps"]) for s in sweep} == {
        (0.1, 2500),
        (0.1, 10_000),
        (0.01, 2500),
        (0.01, 10_000),
    }
    assert all(s["batch_size"] == 512 and s["resolution"] == 224 for s in sweep)
    assert all(s["momentum"] == 0.9 and not s["flip"] for s in sweep)
    assert len({s["name"] for s in sweep}) == 4


def test_random_search_is_seeded_and_in_range():
    a = sweeps.get_sweep("random_search", num_settings=36, seed=3)
    assert len(a) == 36 and a == sweeps.get_sweep("random_search", num_settings=36, seed=3)
    assert a != sweeps.get_sweep("random_search", num_settings=36, seed=4)
    assert all(1e-3 <= s["learning_rate"] <= 0.1 for s in a)
    assert len({s["name"] for s in a}) == 36


def test_cosine_and_resolution_override():
    sweep = sweeps.get_sweep("local", resolution=16)
    assert all(s["resolution"] == 16 and s["resize"] is None for s in sweep)
    setting = sweep[0]
    assert sweeps.learning_rate_at(setting, setting["steps"] - 1) < 0.01 * setting["learning_rate"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="learning_rate"):
        sweeps.make_setting(0, 10, 8)
    with pytest.raises(ValueError, match="warmup_steps"):
        sweeps.make_setting(0.1, 10, 8, warmup_steps=10)
    with pytest.raises(ValueError, match="resize"):
        sweeps.make_setting(0.1, 10, 8, resolution=32, resize=16)
    grid = sweeps.from_values([0.1, 0.01], [5, 10], 8, 32)
    assert [(s["learning_rate"], s["steps"]) for s in grid] == [
        (0.1, 5),
        (0.1, 10),
        (0.01, 5),
        (0.01, 10),
    ]


def _sized_images(sizes):
    images = [np.zeros((h, w, 3), np.float32) for h, w in sizes]
    return tf.data.Dataset.from_generator(
        lambda: ({"image": im, "label": 0} for im in images),
        output_signature={
            "image": tf.TensorSpec([None, None, 3], tf.float32),
            "label": tf.TensorSpec([], tf.int64),
        },
    )


def test_image_statistics_use_the_median_area_of_the_whole_split():
    # The first image is small; most are large: the first image alone would pick 160 -> 128.
    sizes = [(32, 32), (200, 50), (120, 120), (100, 100), (90, 300)]
    lines = []
    stats = sweeps.image_statistics(
        _sized_images(sizes), what="toy/train800val200", log=lines.append
    )
    areas = sorted(h * w for h, w in sizes)  # 1024, 10000, 10000, 14400, 27000
    assert stats == {
        "num_images": 5,
        "median_area": float(areas[2]),
        "image_side": 100,
        "min_side": 32,
        "max_side": 300,
    }
    assert lines == [
        "toy/train800val200: 5 images of 32..300 px; median area 10000 px^2 -> image size 100 px"
    ]
    assert sweeps.hyperrule_resolution(stats["image_side"]) == (512, 480)
    assert sweeps.hyperrule_resolution(sizes[0]) == (160, 128)


def test_image_side_is_on_the_right_side_of_the_hyperrule_threshold():
    # Median area 9215 (just below 96*96): the side rounds down, so the rule stays "small".
    below = sweeps.image_statistics(_sized_images([(95, 97)] * 2 + [(5, 5)]))
    assert below["median_area"] == 9215 and below["image_side"] == 95
    assert sweeps.hyperrule_resolution(below["image_side"]) == (160, 128)
    at = sweeps.image_statistics(_sized_images([(96, 96)]))
    assert sweeps.hyperrule_resolution(at["image_side"]) == (512, 480)
    with pytest.raises(ValueError, match="empty/split has no images"):
        sweeps.image_statistics(_sized_images([]), what="empty/split")


def test_a_flags_sweep_batch_fits_the_image_side_and_the_training_split():
    # BiT's 512 at 224 px; halved while over 512 images of 224 px or over the training split.
    assert sweeps.fitting_batch(224) == sweeps.fitting_batch(224, 800) == 512
    assert sweeps.fitting_batch(32, 192) == 128 and sweeps.fitting_batch(32, 128) == 128
    assert sweeps.fitting_batch(480) == 64 and sweeps.fitting_batch(225) == 256
    assert sweeps.fitting_batch(32, 1) == 1 and sweeps.fitting_batch(2048, 10**6) == 4


def test_a_flags_sweep_takes_the_modules_side_and_a_batch_that_fits(tmp_path):
    import vtab_eval_toys as toys

    from vtab_eval import checks, config

    # 3 classes x 80 images: 192 pool images (train800 and train800val200), 48 test.
    task = "folder:" + toys.make_colour_folder(str(tmp_path / "data"), per_class=80)
    pool = [
        toys.Entry(n, n, kind, "feature_vector", {"resolution": side})
        for n, kind, side in (("b", "baseline", 24), ("e", "full", 32), ("x", "full", None))
    ]
    flags_sweep = {"learning_rates": [0.01], "steps": [100]}
    (job,) = checks.make_jobs(config.make(tasks=[task], finetune=flags_sweep), pool=pool[:2])
    assert [(s["resolution"], s["batch_size"]) for s in job.sweep] == [(32, 128)]
    # A module without a recommended side counts as BiT's 224 (as ranking sees it).
    (job,) = checks.make_jobs(config.make(tasks=[task], finetune=flags_sweep), pool=pool)
    assert [(s["resolution"], s["batch_size"]) for s in job.sweep] == [(224, 128)]
    given = dict(flags_sweep, resolution=16, batch_size=8)
    (job,) = checks.make_jobs(config.make(tasks=[task], finetune=given), pool=pool)
    assert [(s["resolution"], s["batch_size"]) for s in job.sweep] == [(16, 8)]
    # A registered VTAB-1k task trains on 800 images at the modules' side; no pool: 224.
    (job,) = checks.make_jobs(config.make(tasks=["dtd"], finetune=flags_sweep))
    assert [(s["resolution"], s["batch_size"]) for s in job.sweep] == [(224, 512)]
    with pytest.raises(ValueError, match=r"finetune.batch_size must be an int >= 0, got -1"):
        config.make(finetune={"batch_size": -1})
