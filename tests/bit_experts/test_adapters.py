import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import model_atol

from bit_experts.presets import create_model


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype("float32")


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def test_new_adapters_are_the_identity():
    plain = create_model("r14_tiny")
    with_adapters = create_model("r14_tiny", num_experts=3)
    for source, target in zip(plain.backbone_layers(), with_adapters.backbone_layers()):
        target.set_weights(source.get_weights())
    expected = np.asarray(plain(_images()))
    # The zero conv2 makes each branch exactly 0, but the vector-id path may run the backbone in a
    # different op order: float32 bound of the network (tests/tolerances.py, ~4e-4 here). A
    # non-identity adapter (e.g. a He-initialised conv2) moves features by O(1).
    atol = model_atol(with_adapters, _images(), expected)
    for ids in (0, 2, np.array([0, 1, 2, 1])):
        got = np.asarray(with_adapters(_images(), expert_ids=ids))
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def test_one_expert_adapters_cost_about_six_percent_of_r50x1():
    model = create_model("r50x1", num_experts=1)
    backbone = _count(w for layer in model.backbone_layers() for w in layer.weights)
    adapters = _count(w for adapter in model.adapters for w in adapter.weights)
    # Per position c^2 conv weights + 3c norm parameters, c in (64, 256, 512, 1024).
    assert adapters == sum(c * c + 3 * c for c in (64, 256, 512, 1024)) == 1_385_920
    assert 0.055 < adapters / backbone < 0.065


def test_routing_sends_each_example_to_its_expert():
    model = create_model("r14_tiny", num_experts=3)
    rng = np.random.default_rng(3)
    for adapter in model.adapters:  # every adapter weight differs between experts
        for weight in adapter.weights:
            weight.assign(rng.normal(1.0, 0.5, size=weight.shape))
    images = _images()
    ids = np.array([1, 0, 2, 1])
    mixed = np.asarray(model(images, expert_ids=ids))
    # Per-example gathers (einsum nhwc,nck) against one expert's weights (nhwc,ck) add in another
    # order: float32 bound of the network, from its fan-ins and depth (tests/tolerances.py).
    # Was a fixed 1e-5, which an AMD EPYC exceeded (1.9e-5 on features of size 2).
    atol = model_atol(model, images, mixed)
    for e in range(3):
        alone = np.asarray(model(images, expert_ids=e))
        np.testing.assert_allclose(mixed[ids == e], alone[ids == e], rtol=0, atol=atol)
    # Routing to a wrong expert would show: two experts differ by far more than the bound.
    gap = np.abs(np.asarray(model(images, expert_ids=0)) - np.asarray(model(images, expert_ids=1)))
    assert gap.max() > 100 * atol


def test_routing_function_hook_is_used_when_no_ids_are_given():
    model = create_model("r14_tiny", num_experts=2)
    for adapter in model.adapters:
        adapter.conv2_kernel.assign(
            np.random.default_rng(4).normal(size=adapter.conv2_kernel.shape)
        )
    model.routing_fn = lambda images: np.ones(len(images), "int32")
    expected = np.asarray(model(_images(), expert_ids=1))
    # The hook's [N] ids take the per-example path, expert_ids=1 the scalar one: same float32
    # bound as above (the old default rtol=1e-7 was below float32 rounding of a deep network).
    atol = model_atol(model, _images(), expected)
    np.testing.assert_allclose(np.asarray(model(_images())), expected, rtol=0, atol=atol)
    # Had the hook been ignored (expert 0 used), the outputs would differ by far more.
    gap = np.abs(np.asarray(model(_images(), expert_ids=0)) - expected)
    assert gap.max() > 100 * atol


def test_expert_id_errors_are_clear():
    model = create_model("r14_tiny", num_experts=2)
    with pytest.raises(ValueError, match="pass expert_ids"):
        model(_images())
    with pytest.raises(ValueError, match=r"expert_ids must be in \[0, 2\)"):
        model(_images(), expert_ids=np.array([0, 5, 1, 1]))
    with pytest.raises(ValueError, match="no expert adapters"):
        create_model("r14_tiny")(_images(), expert_ids=0)


def test_adapter_training_switch_freezes_backbone_and_head_bit_identically():
    model = create_model("r14_tiny", num_classes=3, num_experts=2)
    # A zero head would send zero gradient to everything below it.
    model.head.kernel.assign(np.random.default_rng(5).normal(size=model.head.kernel.shape))
    model.train_adapters_only()
    adapter_vars = {id(v) for a in model.adapters for v in a.weights}
    assert {id(v) for v in model.trainable_weights} == adapter_vars
    frozen_before = [v.numpy().copy() for v in model.weights if id(v) not in adapter_vars]
    adapters_before = [v.numpy().copy() for a in model.adapters for v in a.weights]

    opt = keras.optimizers.SGD(0.5)
    labels = np.array([0, 1, 2, 0])
    for _ in range(2):
        with tf.GradientTape() as tape:
            logits = model(_images(), expert_ids=1)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            )
        grads = tape.gradient(loss, model.trainable_weights)
        opt.apply_gradients(zip(grads, model.trainable_weights))

    frozen_after = [v.numpy() for v in model.weights if id(v) not in adapter_vars]
    for before, after in zip(frozen_before, frozen_after):
        np.testing.assert_array_equal(before, after)
    changed = [
        not np.array_equal(b, v.numpy())
        for b, v in zip(adapters_before, (v for a in model.adapters for v in a.weights))
    ]
    assert any(changed)

    model.train_everything()
    assert len(model.trainable_weights) == len(model.weights)
