"""Are the experts experts? Each expert's accuracy on its own upstream slice, next to B's.

"Scalable Transfer Learning with Expert Models" (Puigcerver et al., ICLR 2021) assumes an expert
fine-tuned on a slice of the upstream data beats the baseline B there; if it does not, no selector
can help downstream. This module measures that on held-out upstream images, from a work directory
(docs/workdir.md):

* every full expert (`models/expert_*`, kind "full") and every adapter expert of
  `models/adapters` carries B's upstream label head (fine-tuned with the expert);
* an image belongs to an expert's slice when its label is one of the slice's labels (those with
  non-zero `label_prior` in expert_domains.json: for the offline world's hierarchy slices, exactly
  the leaves below the domain's node);
* a model's slice accuracy is top-1 over the slice's images with the head's logits restricted to
  the slice's labels (the expert and B are asked the same |slice|-way question).

`expert_quality(workdir)` regenerates held-out upstream images for `bit_experts.world` jobs (same
classes and image size, another seed); `slice_accuracy_table` takes any held-out images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping

import numpy as np

from bit_experts.training import outputs

DOMAINS_FILE = "expert_domains.json"
LABELS_FILE = "label_names.json"
HELDOUT_SEED_OFFSET = 1_000_003  # Held-out world seed = training world seed + this.


def _read_json(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is missing: not a finished upstream work directory")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def slice_labels(workdir: str) -> dict[str, np.ndarray]:
    """Domain name -> sorted int64 upstream label ids of its slice (label_prior > 0)."""
    from bit_experts import expert_domains

    path = os.path.join(workdir, DOMAINS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is missing: not a finished upstream work directory")
    return {
        d.name: np.flatnonzero(d.label_prior > 0).astype(np.int64)
        for d in expert_domains.load_domains(path)
    }


def _experts(workdir: str) -> list[tuple[str, str, str, int | None]]:
    """(row name, slice, model folder, adapter expert id or None) of every finished expert."""
    rows = []
    parent = outputs.models_dir(workdir)
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        if not outputs.model_exists(workdir, name):
            continue
        info = _read_json(os.path.join(parent, name, outputs.INFO_FILE))
        if info.get("kind") == "full":
            rows.append((name, info["slice"], name, None))
        elif info.get("kind") == "adapter":
            rows.extend((e["name"], e["slice"], name, e["expert_id"]) for e in info["experts"])
    return rows


def _logits_fn(model, resolution: int, batch_size: int, expert_id: int | None):
    import tensorflow as tf

    from bit_experts.data import preprocess

    def forward(batch):
        # Eager: one tf.function per model would be traced again for every expert, and TF warns
        # about retracing once a few models have been evaluated; these models are small.
        images = preprocess.eval_preprocess(batch, resolution)
        if expert_id is None:
            return model(images, training=False)
        return model(images, expert_ids=expert_id, training=False)

    def logits(images: np.ndarray) -> np.ndarray:
        parts = [
            forward(tf.constant(images[i : i + batch_size])).numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, model.head.units), np.float32)

    return logits


def restricted_correct(logits: np.ndarray, labels: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """bool [N]: whether the top-1 of `logits` [N, L], with predictions limited to the `allowed`
    label ids (ties go to the lower id), is `labels` [N]."""
    allowed = np.asarray(allowed, np.int64)
    if not len(labels):
        return np.zeros(0, bool)
    predicted = allowed[np.argmax(logits[:, allowed], axis=1)]
    return predicted == labels


def restricted_accuracy(logits: np.ndarray, labels: np.ndarray, allowed: np.ndarray) -> float:
    """Mean of `restricted_correct` (a fraction in [0, 1]); NaN when N is 0."""
    correct = restricted_correct(logits, labels, allowed)
    return float(np.mean(correct)) if len(correct) else float("nan")


def paired_delta_interval(
    correct_a: np.ndarray, correct_b: np.ndarray, confidence_level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of mean(correct_a) - mean(correct_b) over the same rows, resampled
    jointly (`scipy.stats.bootstrap`, paired, BCa; percentiles where BCa is undefined).

    Args:
      correct_a, correct_b: bool [N] per-row correctness of two models on the same images.
      confidence_level: two-sided coverage in (0, 1).
      seed: seed of the resampling; the same inputs give the same interval on every machine.

    Returns:
      (low, high) as fractions; (NaN, NaN) when N < 2, the point value twice when every row has
      the same difference.
    """
    import warnings

    from scipy import stats

    a, b = np.asarray(correct_a, np.float64), np.asarray(correct_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must cover the same rows: {a.shape}, {b.shape}")
    if len(a) < 2:
        return float("nan"), float("nan")
    if np.all(a - b == a[0] - b[0]):
        return float(a[0] - b[0]), float(a[0] - b[0])

    def difference(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (a, b),
            difference,
            paired=True,
            vectorized=True,
            confidence_level=confidence_level,
            n_resamples=9999,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        tail = 50 * (1 - confidence_level)
        low, high = np.percentile(result.bootstrap_distribution, [tail, 100 - tail])
    return float(low), float(high)


def slice_accuracy_table(
    workdir: str,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 256,
    load_model: Callable[[str, str], object] = outputs.load_model,
) -> dict[str, dict]:
    """Each expert's and B's accuracy on the held-out images of the expert's slice.

    Args:
      workdir: an upstream work directory with models/baseline and experts (docs/workdir.md).
      images: uint8 [N, H, W, 3] held-out upstream images (resized to each model's resolution).
      labels: int64 [N] their upstream label ids (label_names.json order).
      batch_size: images per forward pass.
      load_model: (workdir, model name) -> Keras model; for tests.

    Returns:
      {expert name: {"slice", "kind" ("full" or "adapter"), "n" (held-out images in the slice),
      "num_labels" (labels in the slice), "expert_acc", "baseline_acc", "delta" (expert - B),
      "delta_low", "delta_high" (its paired bootstrap 95% interval: `paired_delta_interval`)}},
      accuracies as fractions in [0, 1] (NaN when n is 0), in models/ order. An expert is
      clearly better than B on its slice when `delta_low` > 0.

    Raises:
      FileNotFoundError: workdir lacks expert_domains.json, label_names.json or models/baseline.
      ValueError: images or labels of the wrong shape, or labels outside the label vocabulary.
    """
    images, labels = np.asarray(images), np.asarray(labels, np.int64)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(
            f"images must be [N, H, W, 3] with one label each, got {images.shape} and "
            f"{labels.shape}"
        )
    num_labels = len(_read_json(os.path.join(workdir, LABELS_FILE)))
    if len(labels) and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"labels must be in [0, {num_labels}) (label_names.json), got outside")
    slices = slice_labels(workdir)
    info = _read_json(os.path.join(outputs.models_dir(workdir), "baseline", outputs.INFO_FILE))
    resolution = int(info["resolution"])

    cache: dict[str, object] = {}

    def model(name):
        if name not in cache:
            cache[name] = load_model(workdir, name)
        return cache[name]

    baseline_logits = _logits_fn(model("baseline"), resolution, batch_size, None)(images)
    table = {}
    for name, slice_name, folder, expert_id in _experts(workdir):
        if slice_name not in slices:
            raise ValueError(f"expert {name!r} names slice {slice_name!r}, not in {DOMAINS_FILE}")
        allowed = slices[slice_name]
        rows = np.flatnonzero(np.isin(labels, allowed))
        logits = _logits_fn(model(folder), resolution, batch_size, expert_id)(images[rows])
        expert_correct = restricted_correct(logits, labels[rows], allowed)
        baseline_correct = restricted_correct(baseline_logits[rows], labels[rows], allowed)
        expert_acc = float(np.mean(expert_correct)) if len(rows) else float("nan")
        baseline_acc = float(np.mean(baseline_correct)) if len(rows) else float("nan")
        low, high = paired_delta_interval(expert_correct, baseline_correct)
        table[name] = {
            "slice": slice_name,
            "kind": "full" if expert_id is None else "adapter",
            "n": int(len(rows)),
            "num_labels": int(len(allowed)),
            "expert_acc": expert_acc,
            "baseline_acc": baseline_acc,
            "delta": expert_acc - baseline_acc,
            "delta_low": low,
            "delta_high": high,
        }
    return table


def heldout_world_images(
    workdir: str, images_per_class: int = 10, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out upstream images for a job trained on `bit_experts.world` (upstream.source "world").

    Renders the job's classes (same scripts and image size as its config.json) with `seed`
    (default: the job's world seed + HELDOUT_SEED_OFFSET, so no image repeats a training one), and
    checks the label vocabulary equals the job's label_names.json. Returns (images, labels).
    """
    from bit_experts import world

    config = _read_json(os.path.join(workdir, "config.json"))
    up = config["upstream"]
    if up["source"] != "world":
        raise ValueError(
            f"{workdir!r} was trained on {up['source']!r}, not the offline world: pass held-out "
            "images to slice_accuracy_table instead"
        )
    if seed is None:
        seed = int(up["world_seed"]) + HELDOUT_SEED_OFFSET
    if seed == up["world_seed"]:
        raise ValueError(f"seed {seed} is the training seed: the images would not be held out")
    held = world.generate_upstream(
        seed=seed,
        images_per_class=images_per_class,
        image_size=up["world_image_size"],
        scripts=up["world_scripts"],
    )
    names = _read_json(os.path.join(workdir, LABELS_FILE))
    if held.label_names != names:
        raise ValueError(f"the regenerated world's labels differ from {workdir!r}/{LABELS_FILE}")
    return held.images, held.labels


def expert_quality(
    workdir: str, images_per_class: int = 10, seed: int | None = None, batch_size: int = 256
) -> dict[str, dict]:
    """`slice_accuracy_table` on `heldout_world_images` of a world job (see both)."""
    images, labels = heldout_world_images(workdir, images_per_class, seed)
    return slice_accuracy_table(workdir, images, labels, batch_size=batch_size)


def format_table(table: Mapping[str, Mapping]) -> str:
    """The table as markdown: expert, slice, n, expert and B accuracy (%), difference (points)
    with its paired 95% interval where the table has one."""
    lines = [
        "| expert | slice | n | expert | B | expert - B [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        interval = ""
        if "delta_low" in row and np.isfinite(row["delta_low"]):
            interval = f" [{100 * row['delta_low']:+.1f}, {100 * row['delta_high']:+.1f}]"
        lines.append(
            f"| {name} | {row['slice']} | {row['n']} | {100 * row['expert_acc']:.1f} | "
            f"{100 * row['baseline_acc']:.1f} | {100 * row['delta']:+.1f}{interval} |"
        )
    return "\n".join(lines)
