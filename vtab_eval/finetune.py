"""Fine-tunes a TF Hub image feature-vector module on a task: the training loop and its evaluation.

The whole module and a new zero-initialised head (`vtab_eval.classifier`) are trained by SGD with
momentum on softmax cross-entropy under any `tf.distribute` strategy (replicas' gradients summed,
the update applied in the cross-replica context), bitwise repeatable from one `seed` on one
machine. docs/evaluation.md, "Fine-tune outputs", is the contract. Modules that update batch-norm
statistics in training are not supported on several replicas (BiT has none).
"""

import time

import numpy as np
import tensorflow as tf

from bit_experts import determinism
from vtab_eval import finetune_outputs as outputs
from vtab_eval import sweeps
from vtab_eval.classifier import build_classifier, predict_logits, save_classifier

# Training splits up to this many images are kept in memory (as uint8, at their own size).
CACHE_LIMIT = 20_000


def finetune_seeds(seed):
    """{"seed", "data_order", "augmentation", "mixup", "global"} (plain ints) derived from `seed`.

    `global` is TensorFlow's global seed (random ops inside the module, e.g. dropout); the head
    needs none. ValueError unless `seed` is an int in [0, 2**31 - 1] (`bit_experts.determinism`).
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


def _prepare_train(dataset, setting, num_classes, seed):
    """Cached, shuffled, repeated, augmented batches of {"image", "label" (one-hot)}.

    Every random draw is a stateless op keyed by (its seed, the example's or batch's position in
    the stream), so parallel `map`s stay deterministic.
    """
    seeds = finetune_seeds(seed)
    resolution = setting["resolution"]
    resize = setting.get("resize") or resolution

    def to_uint8(example):
        # Task images come from uint8 files, so this is lossless and keeps the cache 4x smaller.
        image = tf.cast(tf.round(example["image"] * 255.0), tf.uint8)
        return {"image": image, "label": example["label"]}

    def augment(index, example):
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
    """A function `step(index) -> (loss, learning_rate)` that applies one update of `train`.

    VTAB's update (TF1's `MomentumOptimizer`): `slot = momentum * slot + grad` (plus
    `weight_decay * var` for L2), then `var -= lr * slot`. Not Keras' optimizer (issue 22,
    tests/vtab_eval/test_finetune_optimizer.py): Keras' `SGD` gives other numbers whenever the
    learning rate changes, and a Keras subclass with this formula matches on one replica only:
    it updates each replica's copy, and grappler (which sorts the inputs of merged adds by op
    name) then sums gradients and momentum in another order. For the same reason, renaming or
    reordering the ops of `train_step` moves weights by float32 roundings.
    """
    strategy = strategy or tf.distribute.get_strategy()
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
    classifier, dataset, setting, num_classes, strategy=None, seed=0, log=None, summary_writer=None
):
    """Fine-tunes `classifier` in place on `dataset` ({"image", "label"}) with one sweep setting.

    `classifier` comes from `build_classifier` under `strategy` (default: the current one);
    `seed` as in `finetune_seeds`; `log(str)` gets a line every ~10% of the steps and
    `summary_writer` the scalars `loss` and `learning_rate` at steps 1..steps.

    Returns:
      {"final_loss": mean loss of the last 10% of steps, "steps": int, "seconds": float}.

    Raises:
      FloatingPointError: the loss became non-finite.
    """
    step_fn = _make_stepper(classifier, dataset, setting, num_classes, strategy, seed)
    steps = setting["steps"]
    tail = max(1, steps // 10)
    losses = []
    start = time.time()
    for step in range(steps):
        loss, lr = step_fn(step)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"fine-tuning {classifier.handle!r} diverged at step {step} (loss {loss}) with "
                f"setting {setting['name']!r}"
            )
        outputs.write_scalars(summary_writer, step + 1, {"loss": loss, "learning_rate": lr})
        losses.append(loss)
        if log and (step + 1) % tail == 0:
            rate = (step + 1) * setting["batch_size"] / max(1e-9, time.time() - start)
            log(f"  step {step + 1}/{steps} loss {loss:.4f} lr {lr:.4g} ({rate:.0f} img/s)")
    return {
        "final_loss": float(np.mean(losses[-tail:])),
        "steps": steps,
        "seconds": round(time.time() - start, 3),
    }


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
    deterministic=True,
    summary_dir=None,
    predictions_path=None,
    save_model_dir=None,
):
    """Builds a classifier on `handle`, trains it on `train_split` and scores it on `eval_split`.

    docs/evaluation.md, "Fine-tune outputs", is the contract: `setting` (`vtab_eval.sweeps`) runs
    with the task's augmentation policy; every seed derives from `seed` (`finetune_seeds`);
    `deterministic` turns op determinism on (`determinism.configure`); `summary_dir` (TensorBoard),
    `predictions_path` (.npz; both may be URLs) and `save_model_dir` (a local folder for
    `classifier.ExportedClassifier` and its metadata) are optional outputs.

    Returns:
      {"score" (the task's metric), "accuracy", "mean_per_class_accuracy", "num_examples",
      "final_loss", "steps", "seconds", "seed", "seeds" (`finetune_seeds(seed)` plus
      "deterministic"), "setting" (its name), "train_split", "eval_split"}.

    Raises:
      ValueError: a bad seed, setting, output path or module (one line, before any training).
      FloatingPointError: the loss became non-finite.
    """
    seeds = finetune_seeds(seed)
    sweeps.validate_setting(setting)
    setting = sweeps.for_task(setting, task)
    outputs.check_output_paths(summary_dir, predictions_path, save_model_dir)
    task.validate_splits([train_split, eval_split])
    classifier = build_classifier(handle, task.num_classes, strategy)
    # After every check, so that refused input leaves the process's settings as they were.
    determinism.configure(seeds["seed"], deterministic)
    seeds["deterministic"] = bool(deterministic)
    train_ds = task.load(train_split, data_dir=data_dir)
    writer = outputs.open_summary_writer(summary_dir)
    try:
        stats = train(
            classifier, train_ds, setting, task.num_classes, strategy, seeds["seed"], log, writer
        )
        eval_ds = task.load(eval_split, data_dir=data_dir)
        logits, labels = predict_logits(classifier, eval_ds, setting["resolution"])
        result = scores(np.argmax(logits, axis=-1), labels, task.num_classes)
        result.update(stats, score=result[task.metric], seed=seeds["seed"], seeds=seeds)
        result.update(setting=setting["name"], train_split=train_split, eval_split=eval_split)
        keys = ("accuracy", "score", "mean_per_class_accuracy")
        outputs.write_scalars(
            writer, stats["steps"], {f"{eval_split}/{k}": result[k] for k in keys}
        )
    finally:
        if writer is not None:
            writer.close()
    if predictions_path is not None:
        outputs.write_predictions(
            predictions_path, task, handle, eval_split, setting, logits, labels
        )
    if save_model_dir is not None:
        metadata = outputs.classifier_metadata(task, handle, setting, result)
        save_classifier(classifier, save_model_dir, setting["resolution"], metadata)
    return result
