"""Fine-tunes a TF Hub image feature-vector module on a task with a new zero-initialised head.

The whole network is trained (every variable in the module's `trainable_variables`, adapters
included) together with a new linear head whose weights and bias start at zero, by SGD with
momentum and softmax cross-entropy, under a `tf.distribute` strategy:

* the module is loaded and the head and momentum slots are created inside `strategy.scope()`;
* each replica computes the gradient of its share of the global batch (loss summed and divided by
  the global batch size), `strategy.reduce(SUM)` adds them, and the update is applied in the
  cross-replica context, where assigning a mirrored variable updates every copy. This works the
  same for the default, one-device, mirrored, multi-worker and TPU strategies, and needs nothing
  from Keras.
* weight decay, when a setting asks for it, is L2 added to the gradient of every tuned variable.

Seeds (issue 16): one `seed` gives the data order, augmentation, mixup and TensorFlow's global seed
(`finetune_seeds`, by `bit_experts.determinism`'s fixed hash); augmentation and mixup use stateless
ops keyed by the example's position, so they do not depend on thread scheduling. With
`deterministic=True` (the default of `finetune_and_evaluate`) op determinism is on as well, and
the same call gives bitwise the same weights, loss and score on the same machine, whatever ran
before it in the process (a module kept for reuse is reset to its published weights).

Outputs of `finetune_and_evaluate` (docs/evaluation.md, "Fine-tune outputs"): TensorBoard scalars,
the evaluation split's predictions (.npz) and the fine-tuned classifier as a SavedModel that
`hub.load` reads; each is written atomically or, for event files, replaced as a whole.

Modules whose `__call__(training=True)` updates batch-norm statistics are not supported under
multi-replica strategies (BiT uses group norm and has none).
"""

import dataclasses
import io
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
from tensorflow.core.framework import summary_pb2

from bit_experts import atomic_files, determinism
from vtab_eval import module_contract, sweeps

# Training splits up to this many images are kept in memory (as uint8, at their own size).
CACHE_LIMIT = 20_000

IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")


def finetune_seeds(seed):
    """The seeds one fine-tune uses, all derived from `seed` by `bit_experts.determinism`.

    Returns:
      {"seed": seed, "data_order": the shuffle's seed, "augmentation": crop and flip,
      "mixup": the mixing weights, "global": TensorFlow's global seed (random ops inside the
      module, e.g. dropout)}, plain ints. The head needs no seed: it starts at zero.

    Raises:
      ValueError: `seed` is not an int in [0, 2**31 - 1].
    """
    if isinstance(seed, np.integer):
        seed = int(seed)
    derived = determinism.derive_seeds(seed)
    return {
        "seed": seed,
        "data_order": derived["data"],
        "augmentation": derived["augmentation"],
        "mixup": determinism.derive_seed(derived["augmentation"], "mixup"),
        "global": derived["init"],
    }


@dataclasses.dataclass
class Classifier:
    """A hub module with a linear head: `logits = module(images) @ kernel + bias`."""

    module: object
    kernel: tf.Variable
    bias: tf.Variable
    handle: str

    @property
    def trainable_variables(self):
        """Everything fine-tuning updates: the module's trainable variables and the head."""
        return list(self.module.trainable_variables) + [self.kernel, self.bias]

    def logits(self, images, training=False):
        """Class scores `[N, num_classes]` for float images in [0, 1]."""
        features = self.module(images, training=training)
        return tf.matmul(features, self.kernel) + self.bias


# Loaded modules kept for reuse within a process: (handle, strategy) -> (module, initial values).
# Reloading costs little, but the first gradient through a restored function builds its backward
# graph (seconds); a kept module has it already. Its weights are reset before every reuse, and
# each `train` traces a new step function, whose random ops (if the module has any) start afresh:
# a fine-tune's result does not depend on what ran before it (tests/vtab_eval/test_finetune_*).
_LOADED = {}
_MAX_LOADED = 32


def _reuse_loaded(handle, strategy):
    found = _LOADED.get((handle, id(strategy)))
    if found is None or found[2] is not strategy:
        return None
    module, initial, _ = found
    for variable, value in zip(module.variables, initial):
        variable.assign(value)
    return module


def _remember_loaded(handle, strategy, module):
    if len(_LOADED) >= _MAX_LOADED:
        _LOADED.pop(next(iter(_LOADED)))
    # The strategy itself is kept too, so that its id cannot be reused by another one.
    _LOADED[(handle, id(strategy))] = (module, [v.numpy() for v in module.variables], strategy)
    return module


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _check_finetunable(handle, module):
    """ValueError (one line) unless `module` has what fine-tuning uses (vtab_eval.module_contract)."""
    missing = [a for a in module_contract.REQUIRED_ATTRIBUTES if not hasattr(module, a)]
    if missing:
        reason = f"it lacks {', '.join(missing)}"
    elif not list(module.trainable_variables):
        reason = "its trainable_variables is empty: nothing to fine-tune"
    else:
        ok, reason = module_contract.finetunable(handle)
        if ok:
            return
    raise ValueError(
        f"module {handle!r} cannot be fine-tuned: {reason}; fine-tuning needs a reusable "
        "SavedModel (TF Hub TF2 format) with __call__(images, training=...), variables and "
        "trainable_variables"
    )


def build_classifier(handle, num_classes, strategy=None, probe_resolution=32):
    """Loads `handle` and adds a zero-initialised head with `num_classes` outputs.

    Args:
      handle: local path or TF Hub handle of an image feature-vector module.
      num_classes: size of the new head.
      strategy: a tf.distribute strategy (default: the current one).
      probe_resolution: side of the blank image used to find the feature size.

    Raises:
      ValueError: one line naming `handle`: the module fails to load, is not fine-tunable (no
        `__call__`, `variables` or non-empty `trainable_variables`, e.g. a signature-only or
        Keras `model.export()` SavedModel, or no traced `training=True` call), fails on a float32
        `[1, probe_resolution, probe_resolution, 3]` image, or does not return `[N, d]` features.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
    strategy = strategy or tf.distribute.get_strategy()
    module = _reuse_loaded(handle, strategy)
    if module is None:
        with strategy.scope():
            try:
                module = hub.load(handle)
            except Exception as err:  # noqa: BLE001 - any load failure is reported by handle
                raise ValueError(f"module {handle!r} failed to load: {_first_line(err)}") from err
        _check_finetunable(handle, module)
        _remember_loaded(handle, strategy, module)
    # Called outside the scope: under MirroredStrategy a restored function run in the scope's
    # cross-replica context fails on its replica-context assertion.
    try:
        probe = module(tf.zeros([1, probe_resolution, probe_resolution, 3]), training=False)
    except (TypeError, ValueError, tf.errors.OpError) as err:
        raise ValueError(
            f"module {handle!r} fails on a float32 [1, {probe_resolution}, {probe_resolution}, 3] "
            f"image with training=False: {_first_line(err)}"
        ) from err
    if probe.shape.rank != 2:
        raise ValueError(
            f"module {handle!r} returned shape {probe.shape} for one image; expected [1, d]"
        )
    dim = int(probe.shape[-1])
    with strategy.scope():
        kernel = tf.Variable(tf.zeros([dim, num_classes]), name="head/kernel")
        bias = tf.Variable(tf.zeros([num_classes]), name="head/bias")
    return Classifier(module=module, kernel=kernel, bias=bias, handle=handle)


def _prepare_train(dataset, setting, num_classes, seed):
    """Cached, shuffled, repeated, augmented batches of {"image", "label" (one-hot)}.

    Order and augmentation follow `finetune_seeds(seed)` alone: the shuffle is seeded, and every
    random draw of augmentation and mixup is a stateless op keyed by (its seed, the example's or
    batch's position in the stream), so parallel `map`s stay parallel and deterministic.
    """
    seeds = finetune_seeds(seed)
    resolution = setting["resolution"]
    resize = setting.get("resize") or resolution

    def to_uint8(example):
        # Task images come from uint8 files, so this is lossless and keeps the cache 4x smaller.
        image = tf.cast(tf.round(example["image"] * 255.0), tf.uint8)
        return {"image": image, "label": example["label"]}

    def augment(index, example):
        # One stateless seed per example and draw: (augmentation seed, position in the stream).
        crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([seeds["augmentation"], index]), 2)
        )
        image = tf.image.resize(tf.cast(example["image"], tf.float32) / 255.0, [resize, resize])
        if resize > resolution:
            image = tf.image.stateless_random_crop(
                image, [resolution, resolution, 3], seed=crop_seed
            )
        if setting.get("flip"):
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return {"image": image, "label": tf.one_hot(example["label"], num_classes)}

    ds = dataset.map(to_uint8, num_parallel_calls=tf.data.AUTOTUNE)
    size = int(ds.cardinality())
    if 0 < size <= CACHE_LIMIT:  # VTAB-1k splits; full datasets are re-read each epoch.
        ds = ds.cache()
    ds = ds.shuffle(2048, seed=seeds["data_order"], reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(setting["batch_size"], drop_remainder=True)
    alpha = float(setting.get("mixup_alpha", 0.0))
    if alpha > 0:

        def mixup(index, batch):
            # Beta(a, a) from two gammas; each image is mixed with the batch reversed.
            pair = tf.random.experimental.stateless_split(tf.stack([seeds["mixup"], index]), 2)
            g1 = tf.random.stateless_gamma([], seed=pair[0], alpha=alpha)
            g2 = tf.random.stateless_gamma([], seed=pair[1], alpha=alpha)
            lam = g1 / (g1 + g2)
            mix = lambda x: lam * x + (1.0 - lam) * tf.reverse(x, [0])
            return {"image": mix(batch["image"]), "label": mix(batch["label"])}

        ds = ds.enumerate().map(mixup)
    return ds.prefetch(tf.data.AUTOTUNE)


def _make_stepper(classifier, dataset, setting, num_classes, strategy, seed):
    """A function `step(index) -> (loss, learning_rate)` that applies one update of `train`."""
    strategy = strategy or tf.distribute.get_strategy()
    # Random ops inside the module (dropout, stochastic depth) follow `seed` too.
    tf.random.set_seed(finetune_seeds(seed)["global"])
    global_batch = setting["batch_size"]
    momentum = float(setting.get("momentum", 0.9))
    weight_decay = float(setting.get("weight_decay", 0.0))
    variables = classifier.trainable_variables
    with strategy.scope():
        slots = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
    data = strategy.experimental_distribute_dataset(
        _prepare_train(dataset, setting, num_classes, seed)
    )

    def replica_step(batch):
        with tf.GradientTape() as tape:
            logits = classifier.logits(batch["image"], training=True)
            losses = tf.nn.softmax_cross_entropy_with_logits(batch["label"], logits)
            loss = tf.reduce_sum(losses) / global_batch
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, [tf.convert_to_tensor(g) for g in grads]

    # A new function per fine-tune: its random ops (if any) start from their seeds again.
    @tf.function
    def train_step(iterator, lr):
        loss, grads = strategy.run(replica_step, args=(next(iterator),))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        for var, slot, grad in zip(variables, slots, grads):
            grad = strategy.reduce(tf.distribute.ReduceOp.SUM, grad, axis=None)
            if weight_decay:
                grad += weight_decay * var
            slot.assign(momentum * slot + grad)
            var.assign_sub(lr * slot)
        return loss

    iterator = iter(data)

    def step(index):
        lr = sweeps.learning_rate_at(setting, index)
        return float(train_step(iterator, tf.constant(lr, tf.float32))), float(lr)

    return step


def train(
    classifier,
    dataset,
    setting,
    num_classes,
    strategy=None,
    seed=0,
    log=None,
    summary_writer=None,
):
    """Fine-tunes `classifier` in place on `dataset` ({"image", "label"}) with one sweep setting.

    Args:
      classifier: from `build_classifier` under the same strategy.
      dataset: un-batched examples of the training split.
      setting: a dict from `vtab_eval.sweeps`.
      num_classes: number of classes (labels are one-hot encoded).
      strategy: the strategy the classifier was built under (default: the current one).
      seed: seeds shuffling, augmentation, mixup and TensorFlow's global seed (`finetune_seeds`).
      log: optional callable(str) for a progress line every ~10% of the steps.
      summary_writer: optional `tf.summary` writer; gets the scalars `loss` (the step's mean
        cross-entropy) and `learning_rate` at steps 1..steps (the number of updates done).

    Returns:
      {"final_loss": mean loss of the last 10% of steps, "steps": int, "seconds": float}.

    Raises:
      FloatingPointError: the loss became non-finite.
    """
    sweeps.validate_setting(setting)
    step_fn = _make_stepper(classifier, dataset, setting, num_classes, strategy, seed)
    steps = setting["steps"]
    tail = max(1, steps // 10)
    recent = []
    start = time.time()
    for step in range(steps):
        loss, lr = step_fn(step)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"fine-tuning {classifier.handle!r} diverged at step {step} (loss {loss}) with "
                f"setting {setting['name']!r}"
            )
        if summary_writer is not None:
            with summary_writer.as_default(step=step + 1):
                _scalar("loss", loss)
                _scalar("learning_rate", lr)
        if step >= steps - tail:
            recent.append(loss)
        if log and (step + 1) % max(1, steps // 10) == 0:
            rate = (step + 1) * setting["batch_size"] / max(1e-9, time.time() - start)
            log(f"  step {step + 1}/{steps} loss {loss:.4f} lr {lr:.4g} ({rate:.0f} img/s)")
    return {
        "final_loss": float(np.mean(recent)),
        "steps": steps,
        "seconds": round(time.time() - start, 3),
    }


def measure_step_seconds(
    handle, task, setting, *, data_dir=None, strategy=None, steps=2, split="train800"
):
    """Seconds per training step of `setting` on `task`, for a run's time estimate (`--dry_run`).

    Builds the classifier (a kept module is reused), runs one warm-up step (tracing, first reads
    of the data), then times `steps` more steps of the real batch size and resolution. It moves
    the kept module's weights, which the next `build_classifier` resets. Seeds: seed 0; op
    determinism is left as the process has it.

    Returns:
      Wall-clock seconds per step (float > 0), averaged over `steps`.

    Raises:
      ValueError: `steps` < 1, a bad setting, or a module `build_classifier` refuses.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    sweeps.validate_setting(setting)
    strategy = strategy or tf.distribute.get_strategy()
    classifier = build_classifier(handle, task.num_classes, strategy)
    step_fn = _make_stepper(
        classifier, task.load(split, data_dir=data_dir), setting, task.num_classes, strategy, 0
    )
    step_fn(0)  # Warm-up: traces the step and fills the input pipeline.
    start = time.perf_counter()
    for index in range(1, steps + 1):
        step_fn(index)  # float() of the loss waits for the step to finish.
    return max(time.perf_counter() - start, 1e-9) / steps


def predict_logits(classifier, dataset, resolution, batch_size=64):
    """(logits float32 [N, num_classes], true labels int64 [N]) for un-batched examples.

    Images are resized (bilinear) to `resolution` x `resolution`, as in training.

    Raises:
      ValueError: `dataset` is empty.
    """

    @tf.function
    def step(images):
        return classifier.logits(images, training=False)

    def resize(example):
        image = tf.image.resize(example["image"], [resolution, resolution])
        return image, example["label"]

    logits, labels = [], []
    for images, batch_labels in dataset.map(resize).batch(batch_size):
        logits.append(step(images).numpy())
        labels.append(batch_labels.numpy())
    if not logits:
        raise ValueError(f"evaluation split for {classifier.handle!r} is empty")
    return np.concatenate(logits).astype(np.float32), np.concatenate(labels).astype(np.int64)


def predict(classifier, dataset, resolution, batch_size=64):
    """(predicted labels int64 [N], true labels int64 [N]) for un-batched examples."""
    logits, labels = predict_logits(classifier, dataset, resolution, batch_size)
    return np.argmax(logits, axis=-1).astype(np.int64), labels


def scores(predictions, labels, num_classes):
    """{"accuracy", "mean_per_class_accuracy", "num_examples"} of integer predictions."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    correct = predictions == labels
    per_class = [correct[labels == c].mean() for c in range(num_classes) if np.any(labels == c)]
    return {
        "accuracy": float(correct.mean()),
        "mean_per_class_accuracy": float(np.mean(per_class)),
        "num_examples": int(labels.size),
    }


class ExportedClassifier(tf.__internal__.tracking.AutoTrackable):
    """A fine-tuned classifier as a TF Hub reusable SavedModel (what `save_model_dir` holds).

    `__call__(images, training=False)` and the `serving_default` signature take float32 images
    `[B, H, W, 3]`, RGB in [0, 1] (the fine-tuned module's input range), of any size, resize them
    (bilinear) to `resolution` x `resolution` as evaluation did, and return logits
    `[B, num_classes]` (`serving_default`: {"logits": ...}). `variables`, `trainable_variables`
    and `regularization_losses` make it fine-tunable again (`hub.KerasLayer(..., trainable=True)`).
    """

    def __init__(self, classifier, resolution):
        super().__init__()
        self.module = classifier.module
        self.kernel = classifier.kernel
        self.bias = classifier.bias
        self.resolution = int(resolution)
        self.variables = list(classifier.module.variables) + [classifier.kernel, classifier.bias]
        self.trainable_variables = classifier.trainable_variables
        self.regularization_losses = []
        self.__call__ = tf.function(self._call)
        for training in (False, True):
            self.__call__.get_concrete_function(IMAGE_SPEC, training)
        self.serving_default = tf.function(self._serve, input_signature=[IMAGE_SPEC])

    def _call(self, images, training=False):
        images = tf.image.resize(images, [self.resolution, self.resolution])
        return tf.matmul(self.module(images, training=training), self.kernel) + self.bias

    def _serve(self, images):
        return {"logits": self._call(images)}


def save_classifier(classifier, save_model_dir, resolution, metadata):
    """Writes `classifier` to `save_model_dir` as an `ExportedClassifier`, atomically.

    The SavedModel is written to a temporary folder beside `save_model_dir` and renamed into
    place (an existing one is replaced); `metadata` goes to `hub_export.module.METADATA_FILE`.
    Returns the absolute path.
    """
    from hub_export import module as hub_module

    exported = ExportedClassifier(classifier, resolution)
    return hub_module.save_module(exported, save_model_dir, metadata=metadata, overwrite=True)


def _write_predictions(path, logits, labels, predictions, **info):
    """The evaluation predictions as an .npz file, written atomically (see `finetune_and_evaluate`)."""
    arrays = {
        "predictions": predictions.astype(np.int64),
        "labels": labels.astype(np.int64),
        "logits": logits.astype(np.float32),
    }
    arrays.update({k: np.asarray(v) for k, v in info.items() if v is not None})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_files.write_bytes(path, buffer.getvalue())


def _check_output_paths(summary_dir, predictions_path, save_model_dir):
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


# TensorBoard's scalar plugin reads tensor summaries with this metadata (what its
# `tf.summary.scalar` writes); written with core TF's `tf.summary.write`, so that logging needs
# no TensorBoard install (viewing them does).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


def _scalar(name, value):
    """Writes one float32 scalar to the default `tf.summary` writer at its default step."""
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)


def _open_summary_writer(summary_dir):
    # The folder belongs to this fine-tune: event files of an earlier (killed) attempt would show
    # as a second curve, so they go.
    atomic_files.makedirs(summary_dir)
    for name in atomic_files.listdir(summary_dir):
        if name.startswith("events.out.tfevents."):
            atomic_files.remove(os.path.join(summary_dir, name))
    return tf.summary.create_file_writer(summary_dir)


def finetune_and_evaluate(
    handle,
    task,
    train_split,
    eval_split,
    setting,
    *,
    data_dir=None,
    strategy=None,
    seed=0,
    log=None,
    deterministic=True,
    summary_dir=None,
    predictions_path=None,
    save_model_dir=None,
):
    """Builds a classifier on `handle`, trains it on `train_split` and scores it on `eval_split`.

    Args:
      handle: the module to fine-tune (see `build_classifier`).
      task: a `vtab_eval.tasks.Task`.
      train_split, eval_split: split names of `task`.
      setting: a sweep setting (`vtab_eval.sweeps`).
      data_dir: TFDS data directory.
      strategy: tf.distribute strategy (default: the current one).
      seed: int in [0, 2**31 - 1]; every seed of the fine-tune derives from it (`finetune_seeds`).
      log: optional callable(str) for progress lines.
      deterministic: True: `bit_experts.determinism.configure(seed, True)` (op determinism on;
        Python, NumPy, Keras and TensorFlow seeded), so the call is bitwise repeatable on one
        machine. False: op determinism off (faster); data order and augmentation still follow
        `seed`, but kernels may add up in varying order.
      summary_dir: TensorBoard folder of this fine-tune: `loss` and `learning_rate` at every
        step 1..steps, then `<eval_split>/accuracy`, `<eval_split>/score` and
        `<eval_split>/mean_per_class_accuracy` at step `steps`. Earlier event files there are
        removed.
      predictions_path: .npz file (written atomically) with `predictions` int64 [N], `labels`
        int64 [N], `logits` float32 [N, num_classes] of `eval_split` in the split's order, and
        `classes` (class names, folder tasks), `task`, `handle`, `eval_split`, `setting`.
      save_model_dir: folder for the fine-tuned classifier as a SavedModel that `hub.load`
        reads (`ExportedClassifier`: float32 RGB images in [0, 1], any size, resized to
        `setting["resolution"]`, -> logits [B, num_classes]), with metadata (task, classes,
        setting, seeds, source module, scores) in `hub_export.module.METADATA_FILE`. Written
        to a temporary folder and renamed into place, so it must be a local path (ValueError
        for a URL). `summary_dir` and `predictions_path` may be `tf.io.gfile` URLs (`gs://...`).

    Returns:
      A dict with "score" (the task's metric on `eval_split`), "accuracy",
      "mean_per_class_accuracy", "num_examples", "final_loss", "steps", "seconds", "seed",
      "seeds" (`finetune_seeds(seed)` plus "deterministic"), "setting" (its name),
      "train_split" and "eval_split".

    Raises:
      ValueError: a bad seed, setting, output path or module (one line, before any training).
      FloatingPointError: the loss became non-finite.
    """
    strategy = strategy or tf.distribute.get_strategy()
    seeds = finetune_seeds(seed)
    sweeps.validate_setting(setting)
    setting = sweeps.for_task(setting, task)  # No flips or crops that corrupt the task's labels.
    _check_output_paths(summary_dir, predictions_path, save_model_dir)
    task.validate_splits([train_split, eval_split])  # Sizes known without reading (folders).
    classifier = build_classifier(handle, task.num_classes, strategy)
    # After every check, so that refused input leaves the process's settings as they were.
    determinism.configure(seeds["seed"], deterministic)
    seeds["deterministic"] = bool(deterministic)
    train_ds = task.load(train_split, data_dir=data_dir)
    writer = _open_summary_writer(summary_dir) if summary_dir is not None else None
    try:
        stats = train(
            classifier,
            train_ds,
            setting,
            task.num_classes,
            strategy,
            seed=seeds["seed"],
            log=log,
            summary_writer=writer,
        )
        logits, labels = predict_logits(
            classifier, task.load(eval_split, data_dir=data_dir), setting["resolution"]
        )
        predictions = np.argmax(logits, axis=-1).astype(np.int64)
        result = scores(predictions, labels, task.num_classes)
        result.update(stats)
        result.update(
            score=result[task.metric],
            seed=seeds["seed"],
            seeds=seeds,
            setting=setting["name"],
            train_split=train_split,
            eval_split=eval_split,
        )
        if writer is not None:
            with writer.as_default(step=stats["steps"]):
                for key in ("accuracy", "score", "mean_per_class_accuracy"):
                    _scalar(f"{eval_split}/{key}", result[key])
    finally:
        if writer is not None:
            writer.close()
    classes = getattr(task, "class_names", None)
    if predictions_path is not None:
        _write_predictions(
            predictions_path,
            logits,
            labels,
            predictions,
            classes=None if classes is None else list(classes),
            task=task.name,
            handle=str(handle),
            eval_split=eval_split,
            setting=setting["name"],
        )
    if save_model_dir is not None:
        metadata = {
            "kind": "classifier",
            "task": task.name,
            "task_fingerprint": task.fingerprint(),
            "num_classes": task.num_classes,
            "classes": None if classes is None else list(classes),
            "source_module": str(handle),
            "setting": dict(setting),
            "seeds": seeds,
            "train_split": train_split,
            "eval_split": eval_split,
            "scores": {k: result[k] for k in ("score", "accuracy", "mean_per_class_accuracy")},
            "metric": task.metric,
            "resolution": int(setting["resolution"]),
            "input": "float32 [B, H, W, 3] RGB in [0, 1], any size; resized to resolution",
            "output": "logits float32 [B, num_classes]",
        }
        save_classifier(classifier, save_model_dir, setting["resolution"], metadata)
    return result
