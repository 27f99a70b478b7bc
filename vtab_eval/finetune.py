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

Modules whose `__call__(training=True)` updates batch-norm statistics are not supported under
multi-replica strategies (BiT uses group norm and has none).
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

from vtab_eval import sweeps

# Training splits up to this many images are kept in memory (as uint8, at their own size).
CACHE_LIMIT = 20_000


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
# graph (seconds); a kept module has it already. Its weights are reset before every reuse.
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


def build_classifier(handle, num_classes, strategy=None, probe_resolution=32):
    """Loads `handle` and adds a zero-initialised head with `num_classes` outputs.

    Args:
      handle: local path or TF Hub handle of an image feature-vector module.
      num_classes: size of the new head.
      strategy: a tf.distribute strategy (default: the current one).
      probe_resolution: side of the blank image used to find the feature size.

    Raises:
      ValueError: the module fails to load or does not return `[N, d]` features.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
    strategy = strategy or tf.distribute.get_strategy()
    module = _reuse_loaded(handle, strategy)
    with strategy.scope():
        try:
            module = module or _remember_loaded(handle, strategy, hub.load(handle))
        except Exception as err:  # noqa: BLE001 - any load failure is reported by handle
            raise ValueError(f"module {handle!r} failed to load: {err}") from err
        if not getattr(module, "trainable_variables", None):
            raise ValueError(
                f"module {handle!r} has no trainable_variables; fine-tuning needs a reusable "
                "SavedModel (TF Hub TF2 format)"
            )
    # Called outside the scope: under MirroredStrategy a restored function run in the scope's
    # cross-replica context fails on its replica-context assertion.
    probe = module(tf.zeros([1, probe_resolution, probe_resolution, 3]), training=False)
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
    """Cached, shuffled, repeated, augmented batches of {"image", "label" (one-hot)}."""
    resolution = setting["resolution"]
    resize = setting.get("resize") or resolution

    def to_uint8(example):
        # Task images come from uint8 files, so this is lossless and keeps the cache 4x smaller.
        image = tf.cast(tf.round(example["image"] * 255.0), tf.uint8)
        return {"image": image, "label": example["label"]}

    def augment(example):
        image = tf.image.resize(tf.cast(example["image"], tf.float32) / 255.0, [resize, resize])
        if resize > resolution:
            image = tf.image.random_crop(image, [resolution, resolution, 3], seed=seed)
        if setting.get("flip"):
            image = tf.image.random_flip_left_right(image, seed=seed)
        return {"image": image, "label": tf.one_hot(example["label"], num_classes)}

    ds = dataset.map(to_uint8, num_parallel_calls=tf.data.AUTOTUNE)
    size = int(ds.cardinality())
    if 0 < size <= CACHE_LIMIT:  # VTAB-1k splits; full datasets are re-read each epoch.
        ds = ds.cache()
    ds = ds.shuffle(2048, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(setting["batch_size"], drop_remainder=True)
    alpha = float(setting.get("mixup_alpha", 0.0))
    if alpha > 0:

        def mixup(batch):
            # Beta(a, a) from two gammas; each image is mixed with the batch reversed.
            g1 = tf.random.gamma([], alpha, seed=seed)
            g2 = tf.random.gamma([], alpha, seed=seed + 1)
            lam = g1 / (g1 + g2)
            mix = lambda x: lam * x + (1.0 - lam) * tf.reverse(x, [0])
            return {"image": mix(batch["image"]), "label": mix(batch["label"])}

        ds = ds.map(mixup)
    return ds.prefetch(tf.data.AUTOTUNE)


def train(classifier, dataset, setting, num_classes, strategy=None, seed=0, log=None):
    """Fine-tunes `classifier` in place on `dataset` ({"image", "label"}) with one sweep setting.

    Args:
      classifier: from `build_classifier` under the same strategy.
      dataset: un-batched examples of the training split.
      setting: a dict from `vtab_eval.sweeps`.
      num_classes: number of classes (labels are one-hot encoded).
      strategy: the strategy the classifier was built under (default: the current one).
      seed: seeds shuffling, augmentation and mixup.
      log: optional callable(str) for a progress line every ~10% of the steps.

    Returns:
      {"final_loss": mean loss of the last 10% of steps, "steps": int, "seconds": float}.

    Raises:
      FloatingPointError: the loss became non-finite.
    """
    sweeps.validate_setting(setting)
    strategy = strategy or tf.distribute.get_strategy()
    tf.random.set_seed(seed)
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
    steps = setting["steps"]
    tail = max(1, steps // 10)
    recent = []
    start = time.time()
    for step in range(steps):
        lr = tf.constant(sweeps.learning_rate_at(setting, step), tf.float32)
        loss = float(train_step(iterator, lr))
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"fine-tuning {classifier.handle!r} diverged at step {step} (loss {loss}) with "
                f"setting {setting['name']!r}"
            )
        if step >= steps - tail:
            recent.append(loss)
        if log and (step + 1) % max(1, steps // 10) == 0:
            rate = (step + 1) * global_batch / max(1e-9, time.time() - start)
            log(f"  step {step + 1}/{steps} loss {loss:.4f} lr {float(lr):.4g} ({rate:.0f} img/s)")
    return {
        "final_loss": float(np.mean(recent)),
        "steps": steps,
        "seconds": round(time.time() - start, 3),
    }


def predict(classifier, dataset, resolution, batch_size=64):
    """(predicted labels int64 [N], true labels int64 [N]) for un-batched examples."""

    @tf.function
    def step(images):
        return tf.argmax(classifier.logits(images, training=False), axis=-1)

    def resize(example):
        image = tf.image.resize(example["image"], [resolution, resolution])
        return image, example["label"]

    preds, labels = [], []
    for images, batch_labels in dataset.map(resize).batch(batch_size):
        preds.append(step(images).numpy())
        labels.append(batch_labels.numpy())
    if not preds:
        raise ValueError(f"evaluation split for {classifier.handle!r} is empty")
    return np.concatenate(preds).astype(np.int64), np.concatenate(labels).astype(np.int64)


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
):
    """Builds a classifier on `handle`, trains it on `train_split` and scores it on `eval_split`.

    Returns:
      A dict with "score" (the task's metric on `eval_split`), "accuracy",
      "mean_per_class_accuracy", "num_examples", "final_loss", "steps", "seconds", "seed",
      "setting" (its name), "train_split" and "eval_split".
    """
    strategy = strategy or tf.distribute.get_strategy()
    classifier = build_classifier(handle, task.num_classes, strategy)
    train_ds = task.load(train_split, data_dir=data_dir)
    stats = train(classifier, train_ds, setting, task.num_classes, strategy, seed=seed, log=log)
    predictions, labels = predict(
        classifier, task.load(eval_split, data_dir=data_dir), setting["resolution"]
    )
    result = scores(predictions, labels, task.num_classes)
    result.update(stats)
    result.update(
        score=result[task.metric],
        seed=int(seed),
        setting=setting["name"],
        train_split=train_split,
        eval_split=eval_split,
    )
    return result
