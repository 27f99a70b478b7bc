"""Expert quality: each expert's accuracy on its own upstream slice next to B's (toy models)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bit_experts import expert_domains
from bit_experts.training import slice_eval

NUM_LABELS = 6
SLICES = {"low": [0, 1, 2], "high": [3, 4, 5]}
PER_LABEL = 4


class _Head:
    units = NUM_LABELS


class _ToyModel:
    """Reads the label from the image (pixel value = label / 10) and answers by a rule.

    rule(labels, expert_ids) -> the label id each image gets the largest logit for; the true
    label always gets the second largest, so restricting to a slice can only help.
    """

    head = _Head()

    def __init__(self, rule):
        self.rule = rule

    def __call__(self, images, expert_ids=None, training=False):
        labels = tf.cast(tf.round(images[:, 0, 0, 0] * 10), tf.int32)
        top = tf.py_function(lambda lab: self.rule(lab.numpy(), expert_ids), [labels], tf.int32)
        return tf.one_hot(top, NUM_LABELS) * 2.0 + tf.one_hot(labels, NUM_LABELS)


def _baseline_rule(labels, expert_ids):
    # Mistakes label 0 for 1 (inside "low") and label 3 for 0 (outside "high").
    return np.where(labels == 0, 1, np.where(labels == 3, 0, labels)).astype(np.int32)


def _oracle(labels, expert_ids):
    return labels.astype(np.int32)


def _adapter_rule(labels, expert_ids):
    # Expert 1 ("high") is right everywhere; expert 0 always says label 2.
    return (labels if int(expert_ids) == 1 else np.full_like(labels, 2)).astype(np.int32)


MODELS = {
    "baseline": _ToyModel(_baseline_rule),
    "expert_low": _ToyModel(_oracle),
    "adapters": _ToyModel(_adapter_rule),
}


def _write(path, payload):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f)


@pytest.fixture
def workdir(tmp_path):
    work = str(tmp_path)
    _write(os.path.join(work, "label_names.json"), [f"l{i}" for i in range(NUM_LABELS)])
    domains = []
    for name, labels in SLICES.items():
        prior = np.zeros(NUM_LABELS, np.float32)
        prior[labels] = 1 / len(labels)
        domains.append(expert_domains.ExpertDomain(name, 3, ["root"], np.arange(3), prior))
    expert_domains.save_domains(domains, os.path.join(work, "expert_domains.json"))
    infos = {
        "baseline": {"kind": "baseline", "resolution": 4},
        "expert_low": {"kind": "full", "slice": "low"},
        "adapters": {
            "kind": "adapter",
            "experts": [
                {"name": "adapter_low", "expert_id": 0, "slice": "low"},
                {"name": "adapter_high", "expert_id": 1, "slice": "high"},
            ],
        },
    }
    for name, info in infos.items():
        os.makedirs(os.path.join(work, "models", name))
        _write(os.path.join(work, "models", name, "info.json"), {"name": name, **info})
    os.makedirs(os.path.join(work, "models", ".tmp-expert_high-x"))  # Unfinished: ignored.
    return work


def _images():
    labels = np.repeat(np.arange(NUM_LABELS), PER_LABEL)
    images = np.repeat((labels * 25.5).round().astype(np.uint8), 4 * 4 * 3)
    return images.reshape(-1, 4, 4, 3), labels


def test_table_compares_each_expert_with_baseline_on_its_slice(workdir):
    images, labels = _images()
    table = slice_eval.slice_accuracy_table(
        workdir, images, labels, batch_size=5, load_model=lambda w, name: MODELS[name]
    )
    assert list(table) == ["adapter_low", "adapter_high", "expert_low"]
    n = 3 * PER_LABEL
    assert all(row["n"] == n and row["num_labels"] == 3 for row in table.values())
    # B: on "low" label 0 -> 1 is wrong (2 of 3 labels right); on "high" label 3 -> 0 is outside
    # the slice, so the restricted head falls back to the true label: all right.
    assert table["expert_low"] == {
        "slice": "low",
        "kind": "full",
        "n": n,
        "num_labels": 3,
        "expert_acc": 1.0,
        "baseline_acc": pytest.approx(2 / 3),
        "delta": pytest.approx(1 / 3),
        "delta_low": table["expert_low"]["delta_low"],
        "delta_high": table["expert_low"]["delta_high"],
    }
    # 4 of the 12 paired rows differ by +1: the interval holds the difference and excludes 0.
    assert 0 < table["expert_low"]["delta_low"] < 1 / 3 < table["expert_low"]["delta_high"] <= 1
    # Every "high" row is right for both: no spread, the interval is the point value.
    assert table["adapter_high"]["delta_low"] == table["adapter_high"]["delta_high"] == 0
    assert table["adapter_high"]["expert_acc"] == 1.0 and table["adapter_high"]["baseline_acc"] == 1
    # Expert 0 answers label 2 for everything: right on a third of "low" (its own id was used).
    assert table["adapter_low"]["expert_acc"] == pytest.approx(1 / 3)
    assert table["adapter_low"]["kind"] == "adapter"
    low, high = (100 * table["expert_low"][k] for k in ("delta_low", "delta_high"))
    row = f"| expert_low | low | 12 | 100.0 | 66.7 | +33.3 [{low:+.1f}, {high:+.1f}] |"
    assert row in slice_eval.format_table(table)


def test_paired_delta_interval_matches_the_normal_approximation():
    # Large N: the bootstrap interval of a mean difference approaches d +- 1.96 sd / sqrt(N). Its
    # endpoints carry Monte Carlo error (9999 resamples: about 0.03 standard errors) and O(1/N)
    # skew, so they must agree with the normal interval to within 0.15 standard errors.
    rng = np.random.default_rng(3)
    n = 4000
    a, b = rng.random(n) < 0.8, rng.random(n) < 0.7
    diff = a.astype(float) - b.astype(float)
    se = diff.std(ddof=1) / np.sqrt(n)
    low, high = slice_eval.paired_delta_interval(a, b)
    assert abs(low - (diff.mean() - 1.96 * se)) < 0.15 * se
    assert abs(high - (diff.mean() + 1.96 * se)) < 0.15 * se
    # Pairing matters: b = a with a few rows flipped has a far narrower interval than unpaired.
    c = a.copy()
    c[:40] = ~c[:40]
    low, high = slice_eval.paired_delta_interval(a, c)
    assert high - low < 0.25 * (2 * 1.96 * se)
    with pytest.raises(ValueError, match="same rows"):
        slice_eval.paired_delta_interval(a, b[:-1])


def test_restricted_accuracy_matches_a_loop():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 7))
    allowed = np.array([1, 4, 6])
    labels = rng.choice(allowed, 50)
    hits = 0
    for row, label in zip(logits, labels):
        best = max(allowed, key=lambda a: row[a])
        hits += best == label
    assert slice_eval.restricted_accuracy(logits, labels, allowed) == hits / 50
    assert np.isnan(slice_eval.restricted_accuracy(logits[:0], labels[:0], allowed))


def test_bad_inputs_raise_one_clear_error(workdir, tmp_path):
    images, labels = _images()
    with pytest.raises(ValueError, match="images must be"):
        slice_eval.slice_accuracy_table(workdir, images[..., 0], labels)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 6\)"):
        slice_eval.slice_accuracy_table(workdir, images, labels + 1)
    with pytest.raises(FileNotFoundError, match="not a finished upstream work directory"):
        slice_eval.slice_accuracy_table(str(tmp_path / "nothing"), images, labels)
    _write(os.path.join(workdir, "config.json"), {"upstream": {"source": "folder:/x"}})
    with pytest.raises(ValueError, match="not the offline world"):
        slice_eval.heldout_world_images(workdir)
