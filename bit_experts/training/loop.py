"""The custom training loop, the same under every tf.distribute strategy.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so training is a
plain loop: a `tf.function` step runs `strategy.run` on a replica step that computes gradients with a
GradientTape and applies them with a Keras 3 SGD-with-momentum optimizer (which all-reduces them
across replicas); the loss is reduced with `strategy.reduce`. The per-replica loss is divided by the
*global* batch size, so summing over replicas gives exactly the single-device gradient.

Loss: sigmoid cross-entropy summed over classes (multi-label targets), averaged over examples.
Weight decay: an L2 penalty `weight_decay / 2 * sum(w^2)` on convolution and dense kernels (not on
norms or biases), added to the loss ("coupled" L2, as BiT's original training did). For one adapter
expert only that expert's adapter rows are penalised, so other experts' adapters stay untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from bit_experts.training.checkpointing import AtomicCheckpointer, model_state
from bit_experts.training.schedules import WarmupDecay, learning_rate_at

log = logging.getLogger(__name__)
# What TensorBoard's scalar plugin expects on a scalar summary.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


@dataclasses.dataclass(frozen=True)
class UnitPlan:
    """One model (or one adapter expert) to train: its name, length and optimisation settings.

    `expert_id` routes every example through that expert's adapters (adapter experts only).
    """

    name: str
    steps: int
    batch_size: int
    peak_lr: float
    warmup_steps: int
    decay: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    expert_id: int | None = None


@dataclasses.dataclass(frozen=True)
class UnitResult:
    """What a finished unit reports: steps, last logged loss, throughput, a weights fingerprint."""

    name: str
    steps: int
    resumed_from: int
    final_loss: float | None
    images_per_second: float | None
    fingerprint: str


def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of every weight's bytes (equal on all workers iff they hold the same weights)."""
    digest = hashlib.sha1()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def _decayed(model, expert_id):
    """(variable, row) pairs that weight decay applies to; row = expert id for adapter weights."""
    adapter_ids = {id(w) for a in getattr(model, "adapters", []) for w in a.weights}
    pairs = []
    for v in model.trainable_variables:
        if "kernel" not in v.name:
            continue
        row = expert_id if (expert_id is not None and id(v) in adapter_ids) else None
        pairs.append((v, row))
    return pairs


def train_unit(
    plan: UnitPlan,
    model: keras.Model,
    make_dataset: Callable[[tf.distribute.InputContext, int], tf.data.Dataset],
    strategy: tf.distribute.Strategy,
    checkpoint_dir: str,
    *,
    init_fn: Callable[[], None] | None = None,
    checkpoint_every: int = 100,
    log_every: int = 10,
    keep_checkpoints: int = 2,
    chief: bool = True,
    summary_dir: str | None = None,
    preemption_handler: bool = False,
    print_fn: Callable[[str], None] = print,
) -> UnitResult:
    """Trains `model` (built under `strategy.scope()`) for `plan.steps` steps, resuming if possible.

    Args:
      plan: what to train and how.
      model: the model; its trainable variables are trained (freeze layers beforehand).
      make_dataset: `(input_context, start_step) -> dataset` of per-replica `(images, targets)`
        batches: the stream an uninterrupted run reads from step `start_step` on (a resumed run then
        ends with the same weights as an uninterrupted one; `data.training_dataset(start_step=...)`).
      strategy: the tf.distribute strategy.
      checkpoint_dir: this unit's checkpoint folder; the newest readable committed checkpoint is
        restored (every variable of the model, frozen ones included, and the optimizer's state),
        also when it is the last step: a finished unit leaves `model` as it ended.
      init_fn: called (no checkpoint read) to initialise the model, e.g. from the baseline.
      checkpoint_every: save every this many steps (and at the last step).
      log_every: print a progress line and write summaries every this many steps.
      keep_checkpoints: how many checkpoints to keep.
      chief: False on non-chief workers (no outputs written).
      summary_dir: TensorBoard folder (None: no summaries).
      preemption_handler: use tf.distribute.experimental.PreemptionCheckpointHandler (TPU, multi-worker).
      print_fn: where progress lines go.
    """
    if plan.steps < 1 or plan.batch_size < 1:
        raise ValueError(f"{plan.name}: steps and batch_size must be >= 1, got {plan}")
    replicas = strategy.num_replicas_in_sync
    if plan.batch_size % replicas:
        raise ValueError(
            f"{plan.name}: batch_size {plan.batch_size} is not divisible by the {replicas} replicas"
        )
    with strategy.scope():
        optimizer = keras.optimizers.SGD(
            learning_rate=WarmupDecay(plan.peak_lr, plan.steps, plan.warmup_steps, plan.decay),
            momentum=plan.momentum,
        )
        optimizer.build(model.trainable_variables)
    # Every variable the unit's output depends on, frozen ones included (model_state).
    checkpoint = model_state(model, optimizer=optimizer)
    checkpointer = AtomicCheckpointer(checkpoint_dir, checkpoint, keep_checkpoints, chief)
    handler = None
    if preemption_handler:
        handler = _preemption_handler(strategy, checkpoint, checkpoint_dir)
    start = int(optimizer.iterations.numpy())  # > 0 when the preemption handler restored.
    if (checkpointer.latest_step() or 0) > start:
        restored = checkpointer.restore_latest(
            lambda line: print_fn(f"[{plan.name}] {line}"), [*model.weights, *optimizer.variables]
        )
        start = restored or start
    if start == 0 and init_fn is not None:
        init_fn()
    if start >= plan.steps:
        return UnitResult(plan.name, start, start, None, None, weights_fingerprint(model))
    if start:
        print_fn(f"[{plan.name}] resuming at step {start}/{plan.steps}")

    trainable = model.trainable_variables
    decayed = _decayed(model, plan.expert_id)
    global_batch = plan.batch_size
    call_kwargs = {} if plan.expert_id is None else {"expert_ids": plan.expert_id}

    def replica_step(images, targets):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True, **call_kwargs), tf.float32)
            xent = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
            loss = tf.reduce_sum(xent) / global_batch
            total = loss
            if plan.weight_decay and decayed:
                squares = [
                    tf.reduce_sum(tf.square(v if row is None else tf.gather(v, row)))
                    for v, row in decayed
                ]
                total += 0.5 * plan.weight_decay * tf.add_n(squares) / replicas
        grads = tape.gradient(total, trainable)
        optimizer.apply_gradients(zip(grads, trainable))
        top = tf.argmax(logits, axis=-1, output_type=tf.int32)
        hits = tf.reduce_sum(tf.gather(targets, top, axis=1, batch_dims=1))
        return loss, hits

    @tf.function(reduce_retracing=True)
    def train_step(iterator):
        images, targets = next(iterator)
        loss, hits = strategy.run(replica_step, args=(images, targets))
        reduce = tf.distribute.ReduceOp.SUM
        return strategy.reduce(reduce, loss, axis=None), strategy.reduce(reduce, hits, axis=None)

    dataset = strategy.distribute_datasets_from_function(lambda ctx: make_dataset(ctx, start))
    iterator = iter(dataset)
    writer = (
        tf.summary.create_file_writer(os.path.join(summary_dir, plan.name))
        if chief and summary_dir
        else tf.summary.create_noop_writer()
    )
    loss = None
    rate = None
    began = last_time = time.time()
    last_step = start
    for step in range(start, plan.steps):
        if handler is not None:
            loss_t, hits_t = handler.run(train_step, iterator)
        else:
            loss_t, hits_t = train_step(iterator)
        done = step + 1
        if done % log_every == 0 or done == plan.steps:
            loss, hits = float(loss_t), float(hits_t)
            now = time.time()
            rate = (done - last_step) * global_batch / max(now - last_time, 1e-9)
            eta = (now - began) / (done - start) * (plan.steps - done)
            lr = learning_rate_at(step, plan.peak_lr, plan.steps, plan.warmup_steps, plan.decay)
            print_fn(
                f"[{plan.name}] step {done}/{plan.steps} loss {loss:.4f} prec@1 "
                f"{hits / global_batch:.3f} lr {lr:.5f} {rate:.0f} img/s ETA {_clock(eta)}"
            )
            with writer.as_default(step=done):
                _scalar("loss", loss)
                _scalar("precision_at_1", hits / global_batch)
                _scalar("learning_rate", lr)
                _scalar("images_per_second", rate)
            last_step, last_time = done, now
        if done % checkpoint_every == 0 or done == plan.steps:
            checkpointer.save(done)
    writer.flush()
    return UnitResult(plan.name, plan.steps, start, loss, rate, weights_fingerprint(model))


def _scalar(name, value):
    """A TensorBoard scalar through the core summary op (no tensorboard package needed)."""
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)


def _preemption_handler(strategy, checkpoint, checkpoint_dir):
    """A PreemptionCheckpointHandler where the strategy supports one, else None (logged)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None
    directory = os.path.join(checkpoint_dir, "preemption")
    try:
        return tf.distribute.experimental.PreemptionCheckpointHandler(
            resolver, checkpoint, checkpoint_dir=directory
        )
    except (ValueError, NotImplementedError, tf.errors.OpError) as e:
        log.warning("no preemption checkpoint handler for %s: %s", type(strategy).__name__, e)
        return None


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
