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
import math
import os
from collections.abc import Callable, Mapping

import numpy as np

from bit_experts.training import outputs

DOMAINS_FILE = "expert_domains.json"
LABELS_FILE = "label_names.json"
HELDOUT_SEED_OFFSET = 1_000_003  # Held-out world seed = training world seed + this.


def check_workdir(workdir: str) -> None:
    """Raises one line when `workdir` is not an existing directory.

    Raises:
      FileNotFoundError: `workdir` does not exist.
      NotADirectoryError: `workdir` is a file.
    """
    if not os.path.exists(workdir):
        raise FileNotFoundError(f"{workdir!r} does not exist: expected an upstream work directory")
    if not os.path.isdir(workdir):
        raise NotADirectoryError(
            f"{workdir!r} is a file, not a directory: expected an upstream work directory"
        )


def _read_json(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is missing: not a finished upstream work directory")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path!r} is not valid JSON: {err}") from None


def _require(mapping, key: str, path: str, where: str = ""):
    """mapping[key], or a ValueError naming the file and the dotted key it lacks."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(
            f"{path!r} has no key {where + key!r}: expected the config.json of a "
            "bit_experts.train job"
        )
    return mapping[key]


class NotAWorldJobError(ValueError):
    """The work directory's job was trained on another upstream source than the offline world.

    Attributes: `workdir`, `source` (its config's upstream.source).
    """

    def __init__(self, workdir: str, source):
        self.workdir, self.source = workdir, source
        super().__init__(
            f"{workdir!r} was trained on upstream.source={source!r}, not the offline world "
            '("world"): pass held-out images to slice_accuracy_table instead'
        )


def world_upstream_config(workdir: str) -> dict:
    """The `upstream` section of a world job's config.json, with the keys that
    `heldout_world_images` needs (source, world_seed, world_image_size, world_scripts).

    Raises:
      FileNotFoundError / NotADirectoryError: `check_workdir`, or config.json missing.
      ValueError: config.json is not valid JSON or lacks one of those keys (the message names the
        file and the key).
      NotAWorldJobError: upstream.source is not "world".
    """
    check_workdir(workdir)
    path = os.path.join(workdir, "config.json")
    up = _require(_read_json(path), "upstream", path)
    source = _require(up, "source", path, "upstream.")
    if source != "world":
        raise NotAWorldJobError(workdir, source)
    for key in ("world_seed", "world_image_size", "world_scripts"):
        _require(up, key, path, "upstream.")
    return up


def slice_labels(workdir: str) -> dict[str, np.ndarray]:
    """Domain name -> sorted int64 upstream label ids of its slice (label_prior > 0)."""
    from bit_experts import expert_domains

    check_workdir(workdir)
    path = os.path.join(workdir, DOMAINS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is missing: not a finished upstream work directory")
    return {
        d.name: np.flatnonzero(d.label_prior > 0).astype(np.int64)
        for d in expert_domains.load_domains(path)
    }


def _experts(workdir: str) -> list[tuple[str, str, str, int | None]]:
    """(row name, slice, model folder, adapter expert id or None) of every finished expert.

    Raises:
      ValueError: there is none, or an info.json lacks a key the row needs.
    """
    rows = []
    parent = outputs.models_dir(workdir)
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        if not outputs.model_exists(workdir, name):
            continue
        path = os.path.join(parent, name, outputs.INFO_FILE)
        info = _read_json(path)
        kind = info.get("kind") if isinstance(info, dict) else None
        try:
            if kind == "full":
                rows.append((name, info["slice"], name, None))
            elif kind == "adapter":
                rows.extend(
                    (e["name"], e["slice"], name, int(e["expert_id"])) for e in info["experts"]
                )
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{path!r} is not a valid info.json of a {kind} model: {err!r}"
            ) from None
    if not rows:
        raise ValueError(f"no full or adapter experts in {parent!r}: nothing to compare with B")
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
    from bit_experts import bootstrap

    a, b = np.asarray(correct_a, np.float64), np.asarray(correct_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must cover the same rows: {a.shape}, {b.shape}")
    if len(a) < 2:
        return float("nan"), float("nan")
    if np.all(a - b == a[0] - b[0]):
        return float(a[0] - b[0]), float(a[0] - b[0])

    def difference(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    return bootstrap.bca_interval(
        (a, b),
        difference,
        confidence_level=confidence_level,
        n_resamples=9999,
        seed=seed,
        paired=True,
    )


def _finished_parts(workdir: str):
    """(B's resolution, `slice_labels`, `_experts`) after checking every expert's slice exists;
    reads only JSON files, so a broken work directory fails before any image or model."""
    path = os.path.join(outputs.models_dir(workdir), "baseline", outputs.INFO_FILE)
    resolution = _require(_read_json(path), "resolution", path)
    slices = slice_labels(workdir)
    experts = _experts(workdir)
    for name, slice_name, _, _ in experts:
        if slice_name not in slices:
            raise ValueError(f"expert {name!r} names slice {slice_name!r}, not in {DOMAINS_FILE}")
    return int(resolution), slices, experts


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
      FileNotFoundError: workdir does not exist, or lacks expert_domains.json, label_names.json
        or models/baseline.
      NotADirectoryError: workdir is a file.
      ValueError: images or labels of the wrong shape, labels outside the label vocabulary, a
        JSON file that does not parse, or no full or adapter expert in models/.
    """
    images, labels = np.asarray(images), np.asarray(labels, np.int64)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(
            f"images must be [N, H, W, 3] with one label each, got {images.shape} and "
            f"{labels.shape}"
        )
    check_workdir(workdir)
    num_labels = len(_read_json(os.path.join(workdir, LABELS_FILE)))
    if len(labels) and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"labels must be in [0, {num_labels}) (label_names.json), got outside")
    resolution, slices, experts = _finished_parts(workdir)

    cache: dict[str, object] = {}

    def model(name):
        if name not in cache:
            cache[name] = load_model(workdir, name)
        return cache[name]

    baseline_logits = _logits_fn(model("baseline"), resolution, batch_size, None)(images)
    table = {}
    for name, slice_name, folder, expert_id in experts:
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
    checks the label vocabulary equals the job's label_names.json. Returns (images, labels):
    uint8 [N, S, S, 3] and int64 [N], N = images_per_class * classes.

    Raises:
      FileNotFoundError / NotADirectoryError / ValueError: see `world_upstream_config`; also
        label_names.json missing or not valid JSON, or labels that differ from the regenerated
        world's.
      NotAWorldJobError (a ValueError): the job was not trained on the offline world.
    """
    from bit_experts import world

    up = world_upstream_config(workdir)
    names = _read_json(os.path.join(workdir, LABELS_FILE))
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
    if held.label_names != names:
        raise ValueError(f"the regenerated world's labels differ from {workdir!r}/{LABELS_FILE}")
    return held.images, held.labels


def expert_quality(
    workdir: str, images_per_class: int = 10, seed: int | None = None, batch_size: int = 256
) -> dict[str, dict]:
    """`slice_accuracy_table` on `heldout_world_images` of a world job (see both for the
    returned table and the errors). Every JSON file the evaluation needs is read and checked
    before any image is rendered or model loaded."""
    world_upstream_config(workdir)
    _finished_parts(workdir)
    images, labels = heldout_world_images(workdir, images_per_class, seed)
    return slice_accuracy_table(workdir, images, labels, batch_size=batch_size)


def json_ready(table: Mapping[str, Mapping]) -> dict[str, dict]:
    """A copy of a `slice_accuracy_table` result for strict JSON: non-finite floats (NaN for a
    slice without held-out images) become None (JSON null); row order and key order kept."""
    return {
        name: {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()
        }
        for name, row in table.items()
    }


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def format_table(table: Mapping[str, Mapping]) -> str:
    """The table as markdown: expert, slice, n, expert and B accuracy (%), difference (points)
    with its paired 95% interval where the table has one, and "better than B": "yes" when the
    interval lies above 0 (`delta_low` > 0, so an interval starting at exactly 0 is "no"), "n/a"
    when the row has no interval (n < 2, or a table without `delta_low`). None (JSON null) reads
    as NaN."""
    lines = [
        "| expert | slice | n | expert | B | expert - B [95% CI] | better than B |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        interval, better = "", "n/a"
        low, high = _number(row.get("delta_low")), _number(row.get("delta_high"))
        if np.isfinite(low) and np.isfinite(high):
            interval = f" [{100 * low:+.1f}, {100 * high:+.1f}]"
            better = "yes" if low > 0 else "no"
        lines.append(
            f"| {name} | {row['slice']} | {row['n']} | {100 * _number(row['expert_acc']):.1f} | "
            f"{100 * _number(row['baseline_acc']):.1f} | {100 * _number(row['delta']):+.1f}"
            f"{interval} | {better} |"
        )
    return "\n".join(lines)
