"""Domain Adaptive Transfer (bit_experts.training.dat): weights, the weighted stream, a tiny run."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from bit_experts import data
from bit_experts.training import dat, job, outputs

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
    """The pipeline B is re-trained on shows labels in proportion to their summed weights."""
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


# --- a tiny end-to-end run ------------------------------------------------------------------------


def _config(steps=4):
    return {
        "experts": {"top_k": 1, "include_roots": False},
        "model": {"preset": "r14_micro", "image_size": 8},
        "batch_size": 8,
        "baseline": {"steps": steps, "warmup_steps": 1, "base_lr": 0.5},
        "checkpoint_every": 100,
        "log_every": 100,
    }


def test_tiny_dat_run_end_to_end(tmp_path):
    """B -> B's predictions on target images -> weights -> re-trained B with the same schedule."""
    source = _source(np.repeat(np.arange(4), 6))
    cfg = _config()
    job.run_job(cfg, str(tmp_path / "b"), stages=["baseline"], source=source, print_fn=lambda m: m)
    b = outputs.load_model(str(tmp_path / "b"), "baseline")
    target_images = _source(np.array([0, 0, 1, 1, 1])).stream().batch(5).get_single_element()
    probs = dat.predict_label_probabilities(b, target_images["image"].numpy(), image_size=8)
    assert probs.shape == (5, 4) and np.all((probs > 0) & (probs < 1))
    weights = dat.importance_weights(
        dat.target_label_distribution(probs), source.image_labels, source.num_labels
    )
    assert weights.shape == (24,) and math.isclose(weights.mean(), 1.0, rel_tol=1e-12)
    lines = []
    model, results = dat.retrain(cfg, str(tmp_path / "dat"), source, weights, print_fn=lines.append)
    assert [r.steps for r in results] == [cfg["baseline"]["steps"]]
    assert outputs.model_exists(str(tmp_path / "dat"), "baseline")
    assert any("toy+dat: 32 images" in line for line in lines)  # 4 steps x batch 8 draws
    # Same initialisation and schedule, other data: other weights than B's.
    assert any(
        not np.array_equal(x, y) for x, y in zip(model.get_weights(), b.get_weights(), strict=True)
    )
    assert os.path.isfile(os.path.join(tmp_path, "dat", "config.json"))
    assert tf.reduce_all(tf.math.is_finite(model(tf.zeros([1, 8, 8, 3]))))
