"""Domain Adaptive Transfer (DAT; Ngiam et al., 2018, "Domain Adaptive Transfer Learning with
Specialist Models"), the per-task baseline that expert selection is compared against.

As Puigcerver et al. (ICLR 2021) run it, DAT *fine-tunes* the upstream model B for every target task
on the upstream data re-weighted towards the task's label distribution:

1. `predict_label_probabilities`: B (the upstream baseline, with its head) predicts the upstream
   labels of the target's training images.
2. `target_label_distribution`: P_t(y), the average over the target images of B's predicted label
   distribution. B's head is multi-label (one sigmoid per label), so each image's sigmoids are
   first normalised to sum to 1: every target image contributes one unit of probability mass, as
   a softmax output would in the paper.
3. `importance_weights`: upstream example i with label set L_i gets
   `w_i = mean over y in L_i of P_t(y) / P_s(y)`, where `P_s(y)` counts each upstream image as one
   unit of mass split equally over its labels (`source_label_distribution`). For single-label data
   this is the paper's `P_t(y) / P_s(y)`; in general the weights average exactly 1 over the
   upstream images. Labels are B's head labels as they are: the hierarchy's inner nodes are used
   only to slice experts and play no part (in the offline world every image has one leaf label).
4. `weighted_source`: the re-weighted upstream data as an `UpstreamSource` whose stream is the
   upstream examples drawn i.i.d. with probability proportional to their weight (sampling with
   replacement), one draw per example the schedule consumes.
5. `finetune`: B's trained weights, head included, fine-tuned on that source with the schedule
   that fine-tunes B into a full expert (config `full`: its steps, learning rate, warm-up, decay,
   batch), through the training job's `baseline` stage (`init_from` = B, `init_head`), so it
   checkpoints and resumes like any unit. Ngiam et al. instead pre-trained their networks from
   random initialisation on the re-sampled data; the old `retrain` here did that with B's whole
   schedule.

Sampling rather than a weighted loss (as Ngiam et al.): the weights are very uneven (labels a task
never predicts get weights near 0, a few get 10-100x the mean), so a weighted loss would spend most
of every batch on examples that barely count and scale the gradient's size from batch to batch;
sampling keeps B's loss, batch size and learning-rate schedule exactly as they were and puts every
image pass on an example in proportion to its weight. Both have the same expected gradient.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from bit_experts.data import UpstreamSource


def _label_lists(image_labels) -> list[np.ndarray]:
    if isinstance(image_labels, np.ndarray) and image_labels.ndim == 1:
        return [np.array([y], np.int64) for y in image_labels]
    return [np.asarray(labels, np.int64).reshape(-1) for labels in image_labels]


def _check_labels(lists, num_labels):
    for i, labels in enumerate(lists):
        if labels.size == 0:
            raise ValueError(f"upstream image {i} has no label; DAT weights need at least one")
        if labels.min() < 0 or labels.max() >= num_labels:
            raise ValueError(
                f"upstream image {i} has label ids {labels.tolist()}; expected ids in "
                f"0..{num_labels - 1}"
            )


def source_label_distribution(image_labels, num_labels: int) -> np.ndarray:
    """P_s(y): float64 `[num_labels]`, each upstream image one unit of mass split over its labels.

    Args:
      image_labels: int `[N]` (one label per image) or a list of N int arrays (multi-label).
      num_labels: size of the label vocabulary.
    Raises:
      ValueError: no images, an image without labels, or a label id outside 0..num_labels-1.
    """
    lists = _label_lists(image_labels)
    if not lists:
        raise ValueError("source_label_distribution needs at least one upstream image")
    _check_labels(lists, num_labels)
    mass = np.zeros(num_labels, np.float64)
    for labels in lists:
        np.add.at(mass, labels, 1.0 / labels.size)
    return mass / len(lists)


def target_label_distribution(probabilities) -> np.ndarray:
    """P_t(y): float64 `[L]`, the mean over target images of each image's normalised predictions.

    Args:
      probabilities: `[M, L]` non-negative predicted label probabilities of M target images (B's
        sigmoids; each row is divided by its sum, so softmax rows pass through unchanged).
    Raises:
      ValueError: not a non-empty 2-D array, a negative or non-finite value, or a row summing to 0.
    """
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"probabilities must be [M >= 1, L], got shape {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0:
        raise ValueError("probabilities must be finite and non-negative")
    sums = p.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError(f"{int(np.sum(sums <= 0))} target images have all-zero predictions")
    return (p / sums).mean(axis=0)


def importance_weights(target_distribution, image_labels, num_labels: int) -> np.ndarray:
    """DAT's per-example weights: float64 `[N]`, mean exactly 1 over the upstream images.

    `w_i = mean_{y in L_i} P_t(y) / P_s(y)` (see the module docstring). Target mass on labels that
    no upstream image carries cannot be drawn; the weights are rescaled to mean 1 afterwards.

    Args:
      target_distribution: P_t, `[num_labels]` (`target_label_distribution`).
      image_labels: the upstream images' label ids, as for `source_label_distribution`.
      num_labels: size of the label vocabulary.
    Raises:
      ValueError: a target distribution of the wrong shape, negative, or with no mass on any
        upstream label; bad labels (see `source_label_distribution`).
    """
    p_t = np.asarray(target_distribution, np.float64)
    if p_t.shape != (num_labels,) or not np.all(np.isfinite(p_t)) or p_t.min() < 0:
        raise ValueError(
            f"target_distribution must be [{num_labels}] finite non-negative values, got shape "
            f"{p_t.shape}"
        )
    p_s = source_label_distribution(image_labels, num_labels)
    ratio = np.divide(p_t, p_s, out=np.zeros_like(p_t), where=p_s > 0)
    weights = np.array([ratio[labels].mean() for labels in _label_lists(image_labels)])
    if weights.sum() <= 0:
        raise ValueError("the target distribution puts no mass on any upstream label")
    return weights * (len(weights) / weights.sum())


def predict_label_probabilities(
    model, images: np.ndarray, image_size: int, batch_size: int = 256
) -> np.ndarray:
    """B's sigmoid label probabilities of target images: float32 `[M, num_labels]`.

    Args:
      model: the upstream baseline with its head (`outputs.load_model(workdir, "baseline")`).
      images: uint8 `[M, H, W, 3]` or float `[M, H, W, 3]` in [0, 1]; resized to `image_size`.
      image_size: B's training resolution in pixels.
      batch_size: images per forward pass.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"images must be [M >= 1, H, W, 3], got shape {images.shape}")
    if getattr(model, "head", None) is None:
        raise ValueError("DAT needs B with its upstream head (a model with num_classes > 0)")

    @tf.function(reduce_retracing=True)
    def forward(batch):
        batch = tf.image.convert_image_dtype(batch, tf.float32)
        batch = tf.image.resize(batch, [image_size, image_size])
        return tf.sigmoid(tf.cast(model(batch, training=False), tf.float32))

    return np.concatenate(
        [forward(images[i : i + batch_size]).numpy() for i in range(0, len(images), batch_size)]
    )


@dataclasses.dataclass(frozen=True, eq=False)
class _Images:
    """A source held in memory: uint8 images of one shape, labels as (flat ids, row splits), and
    the SHA-256 of all of it (images, labels, label names): its content identity."""

    images: np.ndarray
    flat: np.ndarray
    splits: np.ndarray
    sha256: str


def _materialise(source: UpstreamSource) -> _Images:
    images, flat, splits = [], [], [0]
    for ex in source.stream().as_numpy_iterator():
        image = ex["image"]
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(
                f"weighted_source needs a source of decoded uint8 [H, W, 3] images in memory "
                f"(the world, data.array_source); {source.name!r} streams {type(image).__name__}"
            )
        images.append(image)
        labels = np.asarray(ex["labels"], np.int64).reshape(-1)
        flat.extend(labels.tolist())
        splits.append(len(flat))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"source {source.name!r} has images of several shapes {sorted(shapes)}")
    images, flat, splits = np.stack(images), np.asarray(flat, np.int64), np.asarray(splits)
    digest = hashlib.sha256(json.dumps(source.label_names).encode("utf-8"))
    for array in (images, flat, splits.astype(np.int64)):
        digest.update(repr(array.shape).encode("ascii") + np.ascontiguousarray(array).tobytes())
    return _Images(images, flat, splits.astype(np.int64), digest.hexdigest())


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, np.float64).tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class WeightedDraw:
    """Which upstream example each position of a DAT stream shows: int64 `[num_examples]`."""

    order: np.ndarray

    def counts(self, num_images: int) -> np.ndarray:
        """How often each upstream image is drawn: int64 `[num_images]`."""
        return np.bincount(self.order, minlength=num_images)


def draw_examples(weights, num_examples: int, seed: int) -> WeightedDraw:
    """`num_examples` upstream indices drawn i.i.d. with probability `weights / sum(weights)`.

    Raises:
      ValueError: weights not a non-empty 1-D finite non-negative array with a positive sum, or
        `num_examples` < 1.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
        raise ValueError("weights must be a non-empty 1-D array of finite values >= 0, sum > 0")
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples!r}")
    rng = np.random.default_rng([int(seed), 0xDA7])
    return WeightedDraw(rng.choice(w.size, size=int(num_examples), p=w / w.sum()))


def weighted_source(
    source: UpstreamSource, weights: Sequence[float] | np.ndarray, num_examples: int, seed: int
) -> UpstreamSource:
    """The upstream data re-weighted by `weights`, as a source of `num_examples` drawn examples.

    Example n of the new source's stream is upstream example `draw_examples(...).order[n]`, with
    `index` n; `image_labels` follow the same order, and the hierarchy is the source's. Its name is
    `<source>+dat:<first 12 hex of the weights' SHA-256>`. Give `num_examples = steps x batch_size`
    and the training pipeline reads every draw once, in a shuffled order: i.i.d. weighted sampling
    with replacement over the whole schedule. The images are held in memory once (not per draw);
    only sources of decoded, equally sized uint8 images are supported (the offline world).
    """
    return _weighted(source, _materialise(source), weights, num_examples, seed)


def _weighted(source, held: _Images, weights, num_examples, seed) -> UpstreamSource:
    weights = np.asarray(weights, np.float64)
    if weights.shape != (source.num_images,):
        raise ValueError(
            f"weights must be [{source.num_images}] (one per upstream image), got {weights.shape}"
        )
    order = draw_examples(weights, num_examples, seed).order
    lists = _label_lists(source.image_labels)
    single = isinstance(source.image_labels, np.ndarray) and source.image_labels.ndim == 1
    drawn_labels = source.image_labels[order] if single else [lists[i] for i in order]

    def stream():
        images_t, flat_t, splits_t = (tf.constant(a) for a in (held.images, held.flat, held.splits))

        def example(n, i):
            labels = flat_t[splits_t[i] : splits_t[i + 1]]
            return {"index": n, "image": tf.gather(images_t, i), "labels": labels}

        return tf.data.Dataset.from_tensor_slices(order).enumerate().map(example)

    name = f"{source.name}+dat:{_sha256(weights)[:12]}"
    return UpstreamSource(name, source.label_names, drawn_labels, stream, source.hierarchy_edges)


@dataclasses.dataclass(frozen=True, eq=False)
class DatRun:
    """A finished DAT fine-tune: the model, what its unit reported, where it lies, its identity."""

    model: object
    results: list
    workdir: str
    identity: dict


IDENTITY_FILE = "dat.json"


def schedule_of(config: dict, schedule: dict | None = None) -> dict:
    """DAT's schedule: B's config's `full` stage (the fine-tune that makes a full expert from B),
    with the keys of `schedule` replaced; ValueError naming `dat.<key>` when one is bad."""
    from bit_experts import config_schema
    from bit_experts.training import config as training_config

    merged = config_schema.merge(config["full"], schedule or {}, "dat")
    config_schema.check_schema(merged, training_config.SCHEMA["full"], "dat.")
    config_schema.require(
        merged["warmup_steps"] <= merged["steps"],
        f"dat.warmup_steps must be in [0, dat.steps={merged['steps']}], "
        f"got {merged['warmup_steps']!r}",
    )
    return merged


def finetune(
    upstream: str,
    workdir: str,
    source: UpstreamSource,
    weights: Sequence[float] | np.ndarray,
    *,
    schedule: dict | None = None,
    print_fn: Callable[[str], None] = print,
) -> DatRun:
    """Fine-tunes B (`upstream`'s models/baseline) on `source` re-weighted by `weights`.

    B's config (`upstream`/config.json) gives the model, data pipeline and seeds; the schedule is
    `schedule_of(config, schedule)`; the draws are `weighted_source(source, weights, steps x batch,
    seed=config['seed'])`. The job runs in `workdir/dat-<16 hex>`, named by the SHA-256 of
    everything that determines its result (B's weights file, the resolved config with the
    schedule, the source's content and the weights: `identity`, also written there as dat.json),
    so a rerun with the same inputs resumes or reuses that run (the training job's checkpoints)
    and other inputs never meet its files. The model is saved as `baseline` there
    (docs/workdir.md), with `init_from` naming B's file and its SHA-256.

    Returns:
      a `DatRun`. Raises ValueError (one line) for a missing B, bad weights or a bad schedule.
    """
    from bit_experts import atomic_files
    from bit_experts.training import config as training_config
    from bit_experts.training import init_source, job, outputs, work_directory

    if not outputs.model_exists(upstream, job.BASELINE):
        raise ValueError(f"DAT needs B: {upstream!r} has no finished models/{job.BASELINE}")
    b_config = training_config.resolve_config(
        atomic_files.read_json(os.path.join(upstream, work_directory.CONFIG_FILE))
    )
    plan = schedule_of(b_config, schedule)
    b_path = os.path.join(outputs.models_dir(upstream), job.BASELINE)
    # The job chooses expert domains even when it trains B only: the root alone, which has images
    # whatever the draws leave out (the domains play no part in B).
    experts = {"top_k": 1, "min_images": None, "include_roots": True, "control": False}
    config = training_config.resolve_config(
        {
            **b_config,
            "init_from": b_path,
            "init_head": True,
            "baseline": plan,
            "experts": {**b_config["experts"], **experts},
        }
    )
    held = _materialise(source)
    weights = np.asarray(weights, np.float64)
    identity = {
        "format": "bit_experts.dat/1",
        "baseline_sha256": init_source.describe(b_path)["sha256"],
        "config": {
            k: v for k, v in config.items() if k not in (*work_directory.RUNTIME_KEYS, "init_from")
        },
        "source": {"name": source.name, "sha256": held.sha256, "num_images": source.num_images},
        "weights_sha256": _sha256(weights),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
    run_dir = os.path.join(workdir, f"dat-{key[:16]}")
    batch = plan["batch_size"] or config["batch_size"]
    dat_source = _weighted(source, held, weights, plan["steps"] * batch, seed=config["seed"])
    prepared = job.prepare_job(config, run_dir, print_fn=print_fn, source=dat_source)
    if not atomic_files.exists(os.path.join(run_dir, IDENTITY_FILE)):
        atomic_files.write_json(os.path.join(run_dir, IDENTITY_FILE), identity)
    results = prepared.run(["baseline"])
    return DatRun(prepared.baseline(), results, run_dir, identity)
