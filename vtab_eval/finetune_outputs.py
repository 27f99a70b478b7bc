"""What a fine-tune writes besides its classifier: TensorBoard scalars, predictions, metadata.

The contract is docs/evaluation.md, "Fine-tune outputs". Each file is written atomically or, for
event files, replaced as a whole.
"""

import io
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from bit_experts import atomic_files

# The scalar plugin's metadata, so that core TF's `tf.summary.write` logs without TensorBoard.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


def check_output_paths(summary_dir, predictions_path, save_model_dir):
    """ValueError (one line) for an output path that cannot be written, before any training."""
    for name, path, want_dir in (
        ("summary_dir", summary_dir, True),
        ("predictions_path", predictions_path, False),
        ("save_model_dir", save_model_dir, True),
    ):
        if path is None:
            continue
        path = atomic_files.check_url(path)  # file:// -> local; an unknown scheme: ValueError
        if want_dir and atomic_files.isfile(path):
            raise ValueError(f"{name} {path!r} is a file; expected a folder (or a new path)")
        if not want_dir and atomic_files.isdir(path):
            raise ValueError(f"{name} {path!r} is a folder; expected a file path")
        if atomic_files.is_url(path):
            if name == "save_model_dir":  # the SavedModel export renames a folder into place
                raise ValueError(
                    f"save_model_dir {path!r} is a URL; saving fine-tuned models needs a local "
                    "folder (docs/workdir.md)"
                )
            continue  # whether a URL can be written shows at the first write
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{name} {path!r} cannot be created: {parent!r} is not writable")


def open_summary_writer(summary_dir):
    """A `tf.summary` writer for `summary_dir` (None: None), whose event files of an earlier
    (killed) attempt, which would show as a second curve, are removed first."""
    if summary_dir is None:
        return None
    atomic_files.makedirs(summary_dir)
    for name in atomic_files.listdir(summary_dir):
        if name.startswith("events.out.tfevents."):
            atomic_files.remove(os.path.join(summary_dir, name))
    return tf.summary.create_file_writer(summary_dir)


def write_scalars(writer, step, scalars):
    """Writes `scalars` ({tag: number}) as float32 TensorBoard scalars at `step` (None: nothing)."""
    if writer is None:
        return
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)


def _class_names(task):
    classes = getattr(task, "class_names", None)
    return None if classes is None else list(classes)


def write_predictions(path, task, handle, eval_split, setting, logits, labels):
    """The evaluation split's `predictions` (argmax), `labels`, `logits`, `task`, `handle`,
    `eval_split`, `setting` (its name) and, for folder tasks, `classes`, as an .npz."""
    arrays = {
        "predictions": np.argmax(logits, axis=-1).astype(np.int64),
        "labels": labels.astype(np.int64),
        "logits": logits.astype(np.float32),
        "classes": _class_names(task),
        "task": task.name,
        "handle": str(handle),
        "eval_split": eval_split,
        "setting": setting["name"],
    }
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items() if v is not None})
    return atomic_files.write_bytes(path, buffer.getvalue())


def classifier_metadata(task, handle, setting, result):
    """The metadata saved beside a fine-tuned classifier; `result` is `finetune_and_evaluate`'s."""
    return {
        "kind": "classifier",
        "task": task.name,
        "task_fingerprint": task.fingerprint(),
        "num_classes": task.num_classes,
        "classes": _class_names(task),
        "source_module": str(handle),
        "setting": dict(setting),
        "seeds": result["seeds"],
        "train_split": result["train_split"],
        "eval_split": result["eval_split"],
        "scores": {k: result[k] for k in ("score", "accuracy", "mean_per_class_accuracy")},
        "metric": task.metric,
        "resolution": int(setting["resolution"]),
        "input": "float32 [B, H, W, 3] RGB in [0, 1], any size; resized to resolution",
        "output": "logits float32 [B, num_classes]",
    }
