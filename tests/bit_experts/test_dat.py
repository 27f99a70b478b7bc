"""Domain Adaptive Transfer (bit_experts.training.dat): weights, the weighted stream, a tiny run."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from bit_experts import data
from bit_experts.training import dat, job, outputs, schedules

NAMES = ["a", "b", "c", "d"]
EDGES = [("root", n) for n in NAMES]


def _source(labels, size=8):
    labels = np.asarray(labels, np.int64)
    images = np.zeros((len(labels), size, size, 3), np.uint8)
    images[..., 0] = (labels * 60)[:, None, None]  # The label is readable from the red channel.
    return data.array_source("toy", images, labels, NAMES, EDGES)


# --- weights on hand-computable cases -----------------------------------------------------------


def test_source_distribution_splits_each_image_over_its_labels():
    # Images: {a}, {a}, {b}, {a, c}: mass a = 1 + 1 + 0.5, b = 1, c = 0.5, d = 0; over 4 images.
    p_s = dat.source_label_distribution([[0], [0], [1], [0, 2]], 4)
    np.testing.assert_allclose(p_s, [2.5 / 4, 1 / 4, 0.5 / 4, 0.0], rtol=1e-15)


def test_target_distribution_normalises_each_image_then_averages():
    # Row 1 sums to 1 already; row 2's sigmoids (0.5, 0.5, 0, 1) sum to 2 -> (.25, .25, 0, .5).
    p_t = dat.target_label_distribution([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 1.0]])
    np.testing.assert_allclose(p_t, [0.625, 0.125, 0.0, 0.25], rtol=1e-15)


def test_weights_are_target_over_source_label_probability():
    # Single-label upstream: 4 x a, 2 x b, 1 x c, 1 x d -> P_s = (.5, .25, .125, .125).
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    p_t = np.array([0.1, 0.2, 0.3, 0.4])
    w = dat.importance_weights(p_t, labels, 4)
    # P_t / P_s = (0.2, 0.8, 2.4, 3.2); their mean over the 8 images is exactly 1 already.
    np.testing.assert_allclose(w, [0.2] * 4 + [0.8] * 2 + [2.4, 3.2], rtol=1e-12)
    assert math.isclose(w.mean(), 1.0, rel_tol=1e-12)


def test_multi_label_weight_is_the_mean_ratio_of_its_labels_and_weights_average_one():
    labels = [[0], [0], [1], [0, 2]]  # P_s = (.625, .25, .125, 0) as above.
    p_t = np.array([0.25, 0.25, 0.5, 0.0])
    w = dat.importance_weights(p_t, labels, 4)
    ratio = np.array([0.4, 1.0, 4.0])
    expected = np.array([ratio[0], ratio[0], ratio[1], (ratio[0] + ratio[2]) / 2])
    np.testing.assert_allclose(w, expected, rtol=1e-12)  # Sum is 4 = N without rescaling.


def test_target_mass_on_labels_no_image_carries_is_dropped_and_weights_rescaled():
    w = dat.importance_weights([0.5, 0.0, 0.0, 0.5], [0, 0, 1], 4)  # No image of label d.
    np.testing.assert_allclose(w, [1.5, 1.5, 0.0], rtol=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: dat.importance_weights([0.5, 0.5], [0, 1], 4), r"must be \[4\]"),
        (lambda: dat.importance_weights([0, 0, 0, 1.0], [0, 1], 4), "no mass"),
        (lambda: dat.source_label_distribution([[0], [7]], 4), r"label ids \[7\]"),
        (lambda: dat.target_label_distribution([[0.0, 0.0]]), "all-zero"),
        (lambda: dat.target_label_distribution([0.5, 0.5]), r"\[M >= 1, L\]"),
        (lambda: dat.draw_examples([1.0, -1.0], 5, 0), "finite values >= 0"),
    ],
)
def test_bad_input_is_one_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the weighted training stream ----------------------------------------------------------------


def test_training_stream_follows_the_weights():
    """The pipeline DAT fine-tunes B on shows labels in proportion to their summed weights."""
    labels = np.repeat(np.arange(4), 25)  # 100 images, 25 per label.
    source = _source(labels)
    # Label weights 3 : 1 : 0 : 0 -> draw probabilities 0.75, 0.25, 0, 0.
    w = np.select([labels == 0, labels == 1], [3.0, 1.0], 0.0)
    n = 4000
    weighted = dat.weighted_source(source, w, n, seed=1)
    assert weighted.num_images == n
    ds = data.training_dataset(
        weighted, batch_size=100, image_size=8, seed=0, crop_min_area=1.0, flip=False
    )
    targets = np.concatenate([t.numpy() for _, t in ds.take(n // 100)])
    counts = targets.sum(axis=0)
    assert counts.sum() == n and counts[2] == counts[3] == 0
    # Binomial(n, 0.75): the share of label a lies within 5 standard deviations of 0.75.
    assert abs(counts[0] / n - 0.75) < 5 * math.sqrt(0.75 * 0.25 / n)
    # Unweighted, the same stream would show each label a quarter of the time: the weighting
    # really changes what the loss is taken over.
    assert counts[0] / n > 0.25 + 10 * math.sqrt(0.25 * 0.75 / n)


def test_weighted_stream_pairs_each_image_with_its_own_label():
    labels = np.array([0, 1, 2, 3, 1])
    source = _source(labels)
    weighted = dat.weighted_source(source, np.ones(5), 50, seed=0)
    for ex in weighted.stream().as_numpy_iterator():
        assert ex["image"][0, 0, 0] == ex["labels"][0] * 60
    assert list(weighted.image_labels[:5]) == [
        ex["labels"][0] for ex in weighted.stream().take(5).as_numpy_iterator()
    ]


def test_weighted_source_refuses_weights_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"weights must be \[3\]"):
        dat.weighted_source(_source([0, 1, 2]), np.ones(4), 10, seed=0)


# --- DAT: B fine-tuned on the re-weighted upstream data ----------------------------------------


def _config():
    return {
        "experts": {"top_k": 1, "include_roots": False},
        "model": {"preset": "r14_micro", "image_size": 8},
        "batch_size": 8,
        "baseline": {"steps": 4, "warmup_steps": 1, "base_lr": 0.5},
        # DAT's schedule: the full experts' fine-tune, shorter and at another rate than B's.
        "full": {"steps": 3, "warmup_steps": 1, "base_lr": 0.2},
        "checkpoint_every": 100,
        "log_every": 1,
    }


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A trained B (4 steps) on 24 toy images, and DAT's weights for a task of labels a and b."""
    root = tmp_path_factory.mktemp("dat")
    source = _source(np.repeat(np.arange(4), 6))
    job.run_job(_config(), str(root / "b"), stages=["baseline"], source=source, print_fn=str)
    b = outputs.load_model(str(root / "b"), "baseline")
    target_images = _source(np.array([0, 0, 1, 1, 1])).stream().batch(5).get_single_element()
    probs = dat.predict_label_probabilities(b, target_images["image"].numpy(), image_size=8)
    assert probs.shape == (5, 4) and np.all((probs > 0) & (probs < 1))
    weights = dat.importance_weights(
        dat.target_label_distribution(probs), source.image_labels, source.num_labels
    )
    assert weights.shape == (24,) and math.isclose(weights.mean(), 1.0, rel_tol=1e-12)
    return str(root / "b"), b, source, weights


def test_dat_starts_from_b_and_runs_the_fine_tune_schedule(upstream, tmp_path):
    b_dir, b, source, weights = upstream
    lines = []
    run = dat.finetune(b_dir, str(tmp_path), source, weights, print_fn=lines.append)
    full = _config()["full"]
    # The fine-tune's schedule, not B's: full.steps updates at full.base_lr x 8 / 256, warmed up
    # over full.warmup_steps then cosine, on steps x batch = 24 weighted draws.
    assert [r.steps for r in run.results] == [full["steps"]]
    peak = schedules.scaled_learning_rate(full["base_lr"], 8)
    for step in range(full["steps"]):
        lr = schedules.learning_rate_at(step, peak, full["steps"], full["warmup_steps"])
        assert any(
            line.startswith(f"[baseline] step {step + 1}/{full['steps']} ")
            and f" lr {lr:.5f} " in line
            for line in lines
        ), (step, lr)
    tag = dat._sha256(weights)[:12]
    assert any(f"toy+dat:{tag}: 24 images" in line for line in lines)
    info = json.loads(open(os.path.join(run.workdir, "models", "baseline", "info.json")).read())
    assert info["steps"] == full["steps"] and info["upstream_dataset"] == f"toy+dat:{tag}"
    assert info["init_from"]["path"] == os.path.join(b_dir, "models", "baseline", "model.keras")
    assert tf.reduce_all(tf.math.is_finite(run.model(tf.zeros([1, 8, 8, 3]))))
    # It moved B (other data, a real learning rate) ...
    assert any(not np.array_equal(x, y) for x, y in zip(run.model.get_weights(), b.get_weights()))


def test_dat_starts_from_bs_trained_weights_head_included(upstream, tmp_path):
    # One update at a learning rate of ~3e-11 leaves every weight where it started: at B's. A
    # re-training from B's initialisation would start from a zero head kernel (the job's init).
    b_dir, b, source, weights = upstream
    tiny = {"steps": 1, "warmup_steps": 0, "base_lr": 1e-9, "momentum": 0.0, "weight_decay": 0.0}
    run = dat.finetune(b_dir, str(tmp_path), source, weights, schedule=tiny, print_fn=str)
    for x, y, w in zip(run.model.get_weights(), b.get_weights(), b.weights, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, err_msg=w.path)
    assert np.abs(b.head.kernel.numpy()).max() > 1e-3  # B's trained head is far from zero


def test_dat_runs_are_keyed_on_their_inputs(upstream, tmp_path):
    b_dir, _, source, weights = upstream
    short = {"steps": 2, "warmup_steps": 1}
    first = dat.finetune(b_dir, str(tmp_path), source, weights, schedule=short, print_fn=str)
    saved = json.loads(open(os.path.join(first.workdir, dat.IDENTITY_FILE)).read())
    assert saved == json.loads(json.dumps(first.identity))
    assert saved["weights_sha256"] == dat._sha256(weights)
    assert saved["config"]["baseline"]["steps"] == 2 and saved["config"]["init_head"] is True
    # The same inputs: the same run, taken as it is (nothing trained again).
    lines = []
    again = dat.finetune(
        b_dir, str(tmp_path), source, weights, schedule=short, print_fn=lines.append
    )
    assert again.workdir == first.workdir and not any("step" in line for line in lines)
    # Other weights, or another schedule: another run, beside the first.
    other_weights = dat.finetune(
        b_dir, str(tmp_path), source, weights[::-1].copy(), schedule=short, print_fn=str
    )
    other_schedule = dat.finetune(
        b_dir, str(tmp_path), source, weights, schedule={**short, "base_lr": 0.1}, print_fn=str
    )
    runs = {first.workdir, other_weights.workdir, other_schedule.workdir}
    assert len(runs) == 3 and sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(r) for r in runs
    )


@pytest.mark.parametrize(
    "schedule, weights, message",
    [
        ({"stesp": 3}, None, r"unknown config key 'dat.stesp'; did you mean 'steps'"),
        ({"steps": 0}, None, r"dat.steps must be an int >= 1, got 0"),
        ({"warmup_steps": 9}, None, r"dat.warmup_steps must be in \[0, dat.steps=3\], got 9"),
        (None, np.ones(5), r"weights must be \[24\] \(one per upstream image\)"),
        (None, np.full(24, np.nan), "finite values >= 0"),
    ],
)
def test_bad_dat_inputs_are_one_line_before_anything_is_written(
    upstream, tmp_path, schedule, weights, message
):
    b_dir, _, source, good = upstream
    with pytest.raises(ValueError, match=message) as error:
        dat.finetune(
            b_dir,
            str(tmp_path / "d"),
            source,
            good if weights is None else weights,
            schedule=schedule,
            print_fn=str,
        )
    assert "\n" not in str(error.value) and not (tmp_path / "d").exists()
    with pytest.raises(ValueError, match="DAT needs B: .* has no finished models/baseline"):
        dat.finetune(str(tmp_path), str(tmp_path / "d"), source, good, print_fn=str)
