"""Fine-tuning's SGD-momentum stepper keeps its numbers, and why it is not a Keras optimizer.

Issue 22 asked for fine-tuning on Keras' optimizer without changing a number. On a module with
enough variables for the op names that order grappler's sums to matter (a 12-layer toy; BiT
r14_micro, 69 variables, in the slow run) and a setting of every kind (warm-up + cosine, step
decay, constant, weight decay, mixup with crops and flips), with op determinism on:
- `finetune._make_stepper` gives, bit for bit, the losses and weights of the stepper as it stood
  before issue 22 (`_reference_stepper`, a frozen copy);
- a `keras.optimizers.Optimizer` with the same update, applied the Keras way, gives them too on one
  replica, and Keras' `SGD` does not (its formula differs when the learning rate changes);
- under MirroredStrategy (slow: a subprocess with two logical CPUs) the Keras optimizer does not:
  the reason `_make_stepper`'s docstring gives for keeping the stepper.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import vtab_eval_toys as toys

from bit_experts import determinism
from vtab_eval import classifier as classifier_lib
from vtab_eval import finetune, sweeps, tasks

SETTINGS = {
    "warmup_cosine": sweeps.make_setting(
        0.3, 10, 8, resolution=16, warmup_steps=3, schedule="cosine"
    ),
    "step_decay": sweeps.make_setting(
        0.3, 10, 8, resolution=16, warmup_steps=2, decay_points=[0.5]
    ),
    "constant": sweeps.make_setting(0.1, 10, 8, resolution=16, schedule="constant"),
    "weight_decay": sweeps.make_setting(
        0.2, 10, 8, resolution=16, warmup_steps=2, schedule="cosine", weight_decay=0.01
    ),
    "mixup": sweeps.make_setting(
        0.3, 10, 8, resolution=16, resize=20, flip=True, mixup_alpha=0.4, warmup_steps=2
    ),
}


def _reference_stepper(classifier, dataset, setting, num_classes, strategy, seed):
    """`finetune._make_stepper` as it stood before issue 22, op for op (op names order sums)."""
    strategy = strategy or tf.distribute.get_strategy()
    tf.random.set_seed(finetune.finetune_seeds(seed)["global"])
    global_batch = setting["batch_size"]
    momentum = float(setting.get("momentum", 0.9))
    weight_decay = float(setting.get("weight_decay", 0.0))
    variables = classifier.trainable_variables
    with strategy.scope():
        slots = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
    data = strategy.experimental_distribute_dataset(
        finetune._prepare_train(dataset, setting, num_classes, seed)
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

    def step(index):
        lr = sweeps.learning_rate_at(setting, index)
        return float(train_step(iterator, tf.constant(lr, tf.float32))), float(lr)

    return step


class VtabMomentum(keras.optimizers.Optimizer):
    """The stepper's update as a Keras optimizer: the same ops, under the same names."""

    def __init__(self, setting):
        super().__init__(learning_rate=0.0, name="vtab_momentum")
        self.momentum = float(setting.get("momentum", 0.9))
        # Not `self.weight_decay`: Keras would apply that as decoupled decay, besides this L2.
        self.l2 = float(setting.get("weight_decay", 0.0))

    def build(self, variables):
        super().build(variables)
        self.slots = self.add_optimizer_variables(variables, "slot")

    def update_step(self, grad, var, learning_rate):
        # Keras' ops (`self.assign`, `ops.multiply`) would be named `Mul...`: another sum order.
        slot = self.slots[self._get_variable_index(var)].value
        lr = tf.convert_to_tensor(learning_rate)
        if self.l2:
            grad += self.l2 * var
        slot.assign(self.momentum * slot + grad)
        var.assign_sub(lr * slot)


def _keras_stepper(make_optimizer):
    """`_make_stepper`'s interface on a Keras optimizer, applied the Keras way (in `strategy.run`,
    which sums the replicas' gradients and updates every replica's copy)."""

    def make(classifier, dataset, setting, num_classes, strategy, seed):
        strategy = strategy or tf.distribute.get_strategy()
        tf.random.set_seed(finetune.finetune_seeds(seed)["global"])
        variables = classifier.trainable_variables
        with strategy.scope():
            optimizer = make_optimizer(setting)
            optimizer.build(variables)
        data = strategy.experimental_distribute_dataset(
            finetune._prepare_train(dataset, setting, num_classes, seed)
        )

        def replica_step(batch):
            with tf.GradientTape() as tape:
                logits = classifier.logits(batch["image"], training=True)
                losses = tf.nn.softmax_cross_entropy_with_logits(batch["label"], logits)
                loss = tf.reduce_sum(losses) / setting["batch_size"]
            grads = tape.gradient(
                loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            optimizer.apply([tf.convert_to_tensor(g) for g in grads], variables)
            return loss

        @tf.function
        def train_step(iterator, lr):
            optimizer.learning_rate.assign(lr)
            loss = strategy.run(replica_step, args=(next(iterator),))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)

        iterator = iter(data)

        def step(index):
            lr = sweeps.learning_rate_at(setting, index)
            return float(train_step(iterator, tf.constant(lr, tf.float32))), float(lr)

        return step

    return make


def _train(world, make_stepper, setting, strategy=None):
    """(per-step losses, final weights) of `setting` by `make_stepper`, seed 0."""
    task, handle = world
    classifier = classifier_lib.build_classifier(handle, task.num_classes, strategy)
    data = task.load("train800")
    step = make_stepper(classifier, data, setting, task.num_classes, strategy, 0)
    losses = [step(index)[0] for index in range(setting["steps"])]
    return losses, [v.numpy() for v in classifier.trainable_variables]


def _same(a, b):
    return a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


class _Deep(tf.__internal__.tracking.AutoTrackable):
    """A reusable SavedModel root: 12 dense layers on the mean colour, dropout when training."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        shapes = [(3, 8)] + [(8, 8)] * 11
        self.variables = [tf.Variable(rng.normal(0, 0.5, s).astype("float32")) for s in shapes]
        self.trainable_variables = list(self.variables)
        self.regularization_losses = []
        self.__call__ = tf.function(self._call)
        for training in (False, True):
            self.__call__.get_concrete_function(tf.TensorSpec([None, None, None, 3]), training)

    def _call(self, images, training=False):
        x = tf.reduce_mean(images, axis=[1, 2])
        for w in self.variables:
            x = tf.nn.elu(x @ w)
        return tf.nn.dropout(x, rate=0.2, seed=5) if training else x


def make_world(root, kind):
    """(a colour folder task, the handle of a "deep" toy module or a BiT "r14_micro" one)."""
    folder = toys.make_colour_folder(os.path.join(root, "data"), per_class=12)
    handle = os.path.join(root, kind)
    if kind == "deep":
        tf.saved_model.save(_Deep(), handle)
    else:
        from bit_experts.presets import create_model
        from hub_export.module import HubModule, save_module

        model = create_model(kind, num_experts=1)
        model(np.zeros((1, 16, 16, 3), "float32"), expert_ids=np.zeros((1,), "int32"))
        save_module(HubModule(model, expert_id=0), handle)
    return tasks.get_task("folder:" + folder), handle


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`runs(kind, name, make_stepper)`: `_train` on `make_world(kind)` (reference runs kept)."""
    determinism.configure(0, True)
    root = tmp_path_factory.mktemp("optimizer")
    worlds, references = {}, {}

    def run(kind, name, make_stepper):
        if kind not in worlds:
            worlds[kind] = make_world(str(root / kind), kind)
        if make_stepper is not _reference_stepper:
            return _train(worlds[kind], make_stepper, SETTINGS[name])
        if (kind, name) not in references:
            references[kind, name] = _train(worlds[kind], make_stepper, SETTINGS[name])
        return references[kind, name]

    return run


CASES = [
    pytest.param(kind, name, marks=[pytest.mark.slow] if kind != "deep" else [])
    for kind in ("deep", "r14_micro")
    for name in SETTINGS
]


@pytest.mark.parametrize("kind, name", CASES)
def test_the_stepper_keeps_its_numbers(runs, kind, name):
    assert _same(runs(kind, name, finetune._make_stepper), runs(kind, name, _reference_stepper))


@pytest.mark.parametrize("kind, name", CASES)
def test_a_keras_optimizer_gives_them_on_one_replica(runs, kind, name):
    keras_run = runs(kind, name, _keras_stepper(VtabMomentum))
    assert _same(keras_run, runs(kind, name, _reference_stepper))


def test_keras_sgd_does_not():
    """Keras' `m = momentum * m - lr * grad; var += m` carries each step's learning rate in `m`."""
    ours, theirs = tf.Variable(1.0), tf.Variable(1.0)
    sgd = keras.optimizers.SGD(momentum=0.9)
    sgd.build([theirs])
    slot = 0.0
    for lr in (0.1, 0.2, 0.3):
        slot = 0.9 * slot + 1.0  # gradient 1.0
        ours.assign_sub(lr * slot)
        sgd.learning_rate = lr
        sgd.apply([tf.constant(1.0)], [theirs])
    # ours: 1 - 0.1 * 1 - 0.2 * 1.9 - 0.3 * 2.71; Keras': 1 - 0.1 - (0.09 + 0.2) - (0.261 + 0.3)
    np.testing.assert_allclose([ours.numpy(), theirs.numpy()], [-0.293, 0.049], rtol=1e-5)


@pytest.mark.slow
def test_but_not_under_mirrored_strategy(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{os.path.dirname(__file__)!r}, {os.path.dirname(toys.__file__)!r}]
        from bit_experts.training import strategies
        strategies.configure_cpu_devices(2)
        from bit_experts import determinism
        from vtab_eval import finetune
        import test_finetune_optimizer as t
        determinism.configure(0, True)
        world = t.make_world({str(tmp_path)!r}, "r14_micro")
        strategy = strategies.make_strategy("mirrored")
        out = {{"replicas": strategy.num_replicas_in_sync}}
        for name, setting in t.SETTINGS.items():
            runs = [t._train(world, make, setting, strategy) for make in
                    (t._reference_stepper, finetune._make_stepper, t._keras_stepper(t.VtabMomentum))]
            gap = max(float(abs(a - b).max()) for a, b in zip(runs[0][1], runs[2][1]))
            out[name] = [t._same(runs[1], runs[0]), t._same(runs[2], runs[0]), gap]
        print("RESULT" + json.dumps(out))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900, env=env
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    out = json.loads(line[0][len("RESULT") :])
    assert out.pop("replicas") == 2
    assert all(stepper_same for stepper_same, _, _ in out.values()), out
    # The Keras optimizer's weights differ by float32 roundings (amplified over 10 steps): `gap`.
    assert not all(keras_same for _, keras_same, _ in out.values()), out
