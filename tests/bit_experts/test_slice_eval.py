"""Expert quality: each expert's accuracy on its own upstream slice next to B's (toy models)."""

import json
import os
import subprocess
import sys

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
    row = f"| expert_low | low | 12 | 100.0 | 66.7 | +33.3 [{low:+.1f}, {high:+.1f}] | yes |"
    assert row in slice_eval.format_table(table)
    # An interval that is the point value 0 is not above 0.
    assert "| adapter_high | high | 12 | 100.0 | 100.0 | +0.0 [+0.0, +0.0] | no |" in (
        slice_eval.format_table(table)
    )


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
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished upstream work directory"):
        slice_eval.slice_accuracy_table(str(tmp_path / "empty"), images, labels)
    _write(os.path.join(workdir, "config.json"), {"upstream": {"source": "folder:/x"}})
    with pytest.raises(slice_eval.NotAWorldJobError, match="not the offline world"):
        slice_eval.heldout_world_images(workdir)


WORLD_UPSTREAM = {
    "source": "world",
    "world_seed": 0,
    "world_image_size": 8,
    "world_scripts": ["numerals"],
}


def _world_job(work):
    _write(os.path.join(work, "config.json"), {"upstream": WORLD_UPSTREAM})
    return work


def test_table_without_images_of_a_slice_is_nan_in_python_and_null_in_json(workdir):
    images, labels = _images()
    low = labels < 3
    table = slice_eval.slice_accuracy_table(
        workdir, images[low], labels[low], load_model=lambda w, name: MODELS[name]
    )
    high = table["adapter_high"]
    assert high["n"] == 0 and np.isnan(high["expert_acc"]) and np.isnan(high["delta_low"])
    ready = slice_eval.json_ready(table)
    text = json.dumps(ready, allow_nan=False)  # strict JSON: would raise on a NaN
    assert list(json.loads(text)) == ["adapter_low", "adapter_high", "expert_low"]  # models/ order
    assert json.loads(text)["adapter_high"]["expert_acc"] is None
    assert ready["expert_low"] == table["expert_low"] and list(ready["expert_low"]) == list(
        table["expert_low"]
    )
    # No interval: neither "yes" nor "no"; a table read back from JSON (null) prints the same.
    for t in (table, json.loads(text)):
        assert "| adapter_high | high | 0 | nan | nan | +nan | n/a |" in slice_eval.format_table(t)


def test_format_table_says_better_only_when_the_interval_lies_above_zero():
    row = {"slice": "s", "n": 10, "kind": "full", "expert_acc": 0.9, "baseline_acc": 0.8}
    table = {
        "touches_0": {**row, "delta": 0.029, "delta_low": 0.0, "delta_high": 0.058},
        "above_0": {**row, "delta": 0.029, "delta_low": 1e-4, "delta_high": 0.058},
        "below_0": {**row, "delta": -0.02, "delta_low": -0.05, "delta_high": -0.01},
        "no_interval": {**row, "delta": 0.1},
    }
    lines = slice_eval.format_table(table).splitlines()
    assert lines[0].endswith("| expert - B [95% CI] | better than B |")
    assert [line.rsplit("|", 2)[1].strip() for line in lines[2:]] == ["no", "yes", "no", "n/a"]
    assert "| +2.9 [+0.0, +5.8] | no |" in lines[2]


def test_broken_work_directories_fail_in_one_line_before_any_image(workdir, tmp_path, monkeypatch):
    from bit_experts import world

    def no_rendering(**kwargs):
        raise AssertionError("rendered held-out images for a broken work directory")

    monkeypatch.setattr(world, "generate_upstream", no_rendering)
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=f"^'{missing}' does not exist"):
        slice_eval.expert_quality(missing)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="'.*file' is a file, not a directory"):
        slice_eval.expert_quality(str(tmp_path / "file"))
    config = os.path.join(workdir, "config.json")
    with pytest.raises(FileNotFoundError, match=f"'{config}' is missing"):
        slice_eval.expert_quality(workdir)
    _write(config, {})
    with pytest.raises(ValueError, match=f"'{config}' has no key 'upstream'"):
        slice_eval.expert_quality(workdir)
    _write(config, {"upstream": {"source": "world"}})
    with pytest.raises(ValueError, match=f"'{config}' has no key 'upstream.world_seed'"):
        slice_eval.heldout_world_images(workdir)
    with open(config, "w", encoding="utf-8") as f:
        f.write('{\n  "upstream": \n')  # truncated
    with pytest.raises(ValueError, match=f"^'{config}' is not valid JSON: Expecting value"):
        slice_eval.expert_quality(workdir)
    _world_job(workdir)
    for name in ("expert_low", "adapters"):  # only models/baseline is left
        os.remove(os.path.join(workdir, "models", name, "info.json"))
    models = os.path.join(workdir, "models")
    with pytest.raises(ValueError, match=f"^no full or adapter experts in '{models}'"):
        slice_eval.expert_quality(workdir)
    images, labels = _images()
    with pytest.raises(ValueError, match="no full or adapter experts"):
        slice_eval.slice_accuracy_table(workdir, images, labels, load_model=MODELS.get)


def _cli(*args):
    """`python -m bit_experts.expert_quality` -> (return code, stdout, last line of stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "bit_experts.expert_quality", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.returncode, done.stdout, lines[-1] if lines else ""


def test_cli_bad_inputs_are_one_line_and_write_nothing(workdir, tmp_path):
    # Three real command lines (each imports TensorFlow: seconds); the other bad work
    # directories give the library's messages above through the same one-line handler.
    prog = "bit_experts.expert_quality: error: "
    code, stdout, line = _cli(f"--workdir={os.path.join(workdir, 'label_names.json')}")
    assert (code, stdout) == (1, "") and line == (
        f"{prog}'{os.path.join(workdir, 'label_names.json')}' is a file, not a directory: "
        "expected an upstream work directory"
    )
    _write(os.path.join(workdir, "config.json"), {"upstream": {"source": "folder:/x"}})
    code, _, line = _cli(f"--workdir={workdir}")
    assert code == 1 and line == (
        f"{prog}--workdir='{workdir}' was trained on upstream.source='folder:/x' (config.json); "
        'this command supports only jobs trained on the offline world (upstream.source = "world")'
    )
    # An existing directory as --output_json is refused before the evaluation (the toy models
    # could not even be loaded), and nothing is written.
    _world_job(workdir)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, line = _cli(f"--workdir={workdir}", f"--output_json={out}")
    assert (code, stdout) == (1, "") and line == (
        f"{prog}--output_json='{out}' is a directory; expected a file path"
    )
    assert list(out.iterdir()) == []
