"""What a fine-tune leaves behind (issue 15 section 2): TensorBoard scalars, predictions, a model.

One fine-tune of the colour toy module writes all three; each test reads one of them back and
checks it against the returned result or the split itself.
"""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import vtab_eval_toys as toys
from tensorflow.core.util import event_pb2

from hub_export import module as hub_module
from vtab_eval import finetune, finetune_outputs, sweeps, tasks

SETTING = sweeps.make_setting(0.3, 12, 8, resolution=toys.SIZE, warmup_steps=2, flip=True)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    task = tasks.get_task("folder:" + toys.make_colour_folder(str(root / "data"), per_class=12))
    handle = toys.save_toy_module(str(root / "colour"), "colour")
    paths = {
        "summary_dir": str(root / "out" / "tb"),
        "predictions_path": str(root / "out" / "predictions.npz"),
        "save_model_dir": str(root / "out" / "model"),
    }
    result = finetune.finetune_and_evaluate(
        handle, task, "train800", "test", SETTING, seed=2, **paths
    )
    return task, handle, result, paths


def _scalars(summary_dir):
    """{tag: [(step, value)]} of the single event file in `summary_dir`."""
    files = glob.glob(os.path.join(summary_dir, "events.out.tfevents.*"))
    assert len(files) == 1, files
    found = {}
    for record in tf.data.TFRecordDataset(files[0]):
        event = event_pb2.Event.FromString(record.numpy())
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "scalars"
            found.setdefault(value.tag, []).append(
                (event.step, float(tf.make_ndarray(value.tensor)))
            )
    return found


def test_tensorboard_scalars_per_step_and_final_scores(done):
    task, _, result, paths = done
    scalars = _scalars(paths["summary_dir"])
    steps = SETTING["steps"]
    assert set(scalars) == {
        "loss",
        "learning_rate",
        "test/accuracy",
        "test/score",
        "test/mean_per_class_accuracy",
    }
    assert [s for s, _ in scalars["loss"]] == list(range(1, steps + 1))
    assert [s for s, _ in scalars["learning_rate"]] == list(range(1, steps + 1))
    expected_lr = [np.float32(sweeps.learning_rate_at(SETTING, i)) for i in range(steps)]
    assert [v for _, v in scalars["learning_rate"]] == expected_lr
    # The logged losses are the float32 losses `final_loss` averages (its last 10%, >= 1 step).
    tail = max(1, steps // 10)
    assert np.mean([v for _, v in scalars["loss"][-tail:]]) == result["final_loss"]
    for key in ("accuracy", "score", "mean_per_class_accuracy"):
        assert scalars[f"test/{key}"] == [(steps, float(np.float32(result[key])))]


def test_a_second_attempt_replaces_the_event_files(tmp_path):
    stale = tmp_path / "events.out.tfevents.1.old"
    stale.write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("kept")
    finetune_outputs.open_summary_writer(str(tmp_path)).close()
    assert not stale.exists() and (tmp_path / "notes.txt").exists()


def test_predictions_file_agrees_with_the_result(done):
    task, handle, result, paths = done
    with np.load(paths["predictions_path"]) as saved:
        logits, predictions, labels = saved["logits"], saved["predictions"], saved["labels"]
        assert list(saved["classes"]) == list(task.class_names)
        assert str(saved["task"]) == task.name and str(saved["eval_split"]) == "test"
        assert str(saved["handle"]) == handle
    assert logits.dtype == np.float32 and logits.shape == (result["num_examples"], 3)
    np.testing.assert_array_equal(predictions, np.argmax(logits, axis=-1))
    split_labels = np.concatenate([b["label"].numpy() for b in task.load("test").batch(64)])
    np.testing.assert_array_equal(labels, split_labels)
    assert np.mean(predictions == labels) == result["accuracy"]
    assert not [n for n in os.listdir(os.path.dirname(paths["predictions_path"])) if ".tmp" in n]


def _logit_error_bound(model, num_pixels):
    """Worst-case float32 rounding of the colour toy's logits for images in [0, 1].

    logits_j = sum_k f_k W_kj + b_j with f_k = sum_c mean_p(x_pc) w_ck: a chain of sums of at
    most n = num_pixels + 3 + d + 1 terms, each summation off by at most n * eps * (sum of the
    terms' magnitudes). With |mean_p x| <= 1 that sum is at most A_j = sum_k (sum_c |w_ck|)
    |W_kj| + |b_j|. Two computations that round differently are within 2 * n * eps * A_j.
    """
    w = np.abs(model.module.variables[0].numpy())
    kernel, bias = np.abs(model.kernel.numpy()), np.abs(model.bias.numpy())
    n = num_pixels + w.shape[0] + kernel.shape[0] + 1
    return 2 * n * np.finfo(np.float32).eps * (w.sum(axis=0) @ kernel + bias)


def test_saved_model_classifies_like_the_fine_tuned_classifier(done):
    import tensorflow_hub as hub

    task, handle, result, paths = done
    model = hub.load(paths["save_model_dir"])
    images = np.concatenate([b["image"].numpy() for b in task.load("test").batch(64)])
    with np.load(paths["predictions_path"]) as saved:
        in_process = saved["logits"]  # The fine-tuned classifier's own logits on these images.
    bound = _logit_error_bound(model, toys.SIZE * toys.SIZE)
    exported = model(tf.constant(images)).numpy()
    assert exported.shape == in_process.shape
    assert np.all(np.abs(exported - in_process) <= bound), (exported - in_process, bound)
    served = model.signatures["serving_default"](images=tf.constant(images))["logits"].numpy()
    assert np.all(np.abs(served - in_process) <= bound)
    # Another image size is resized to the fine-tuning resolution inside the model.
    big = tf.image.resize(images, [2 * toys.SIZE, 2 * toys.SIZE])
    resized = model(tf.image.resize(big, [toys.SIZE, toys.SIZE])).numpy()
    np.testing.assert_array_equal(model(big).numpy(), resized)
    # A reusable module: fine-tunable again.
    assert len(model.trainable_variables) == 3 and len(model.variables) == 3
    metadata = hub_module.read_metadata(paths["save_model_dir"])
    assert metadata["task"] == task.name and metadata["classes"] == list(task.class_names)
    assert metadata["source_module"] == handle
    used = sweeps.for_task(SETTING, task)  # The setting as run, with the task's augmentation.
    assert metadata["setting"] == json.loads(json.dumps(used))
    assert metadata["resolution"] == toys.SIZE and metadata["seeds"] == result["seeds"]
    assert metadata["scores"]["accuracy"] == result["accuracy"]
    parent = os.path.dirname(paths["save_model_dir"])
    assert sorted(os.listdir(parent)) == ["model", "predictions.npz", "tb"]  # no temporary dirs


def test_output_paths_are_checked_before_training(done, tmp_path):
    task, handle, _, _ = done
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(ValueError, match="predictions_path .* is a folder"):
        finetune.finetune_and_evaluate(
            handle,
            task,
            "train800",
            "test",
            SETTING,
            summary_dir=str(tmp_path / "tb"),
            predictions_path=str(tmp_path / "a_folder"),
        )
    assert not (tmp_path / "tb").exists()  # nothing written
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="save_model_dir .* is a file"):
        finetune.finetune_and_evaluate(
            handle, task, "train800", "test", SETTING, save_model_dir=str(tmp_path / "a_file")
        )
