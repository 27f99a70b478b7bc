"""`BiTResNetV2.standardized_copy()`: kernels standardised once, same outputs, a frozen snapshot."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_battery import assert_model_battery
from tolerances import model_atol

from bit_experts.layers import StandardizedConv2D
from bit_experts.presets import create_model


def _images(n=3, size=48, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype("float32")


def _model_with_random_head_and_adapters(seed=0):
    # The head and the adapters' last convs start at zero; random values make every weight count.
    model = create_model("r14_tiny", num_classes=6, num_experts=3)
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.path.endswith(("head/kernel", "conv2_kernel")):
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
    return model


def _atol(model, images, output):
    # model_atol allows two float32 reductions per kernel (its GroupNorm's moments and the conv).
    # Weight standardisation adds one more per conv (mean and variance over the fan-in), which the
    # copy evaluates once and the model on each call, possibly in another order: at most 3 / 2
    # as many reductions (adapter kernels are not standardised, so fewer).
    atol = 1.5 * model_atol(model, images, output)
    # A real bug (raw instead of standardised kernels, a lost weight) changes outputs by O(1) of
    # their size; the bound must stay far below that to detect it.
    assert atol < 1e-3 * np.abs(output).max()
    return atol


@pytest.mark.parametrize("size", [48, 65])
def test_copy_computes_what_the_model_computes(size):
    model = _model_with_random_head_and_adapters()
    copy = model.standardized_copy()
    images = _images(size=size)
    ids = np.array([2, 0, 1], "int32")
    for call in (lambda m: m(images, expert_ids=ids), lambda m: m.features(images, expert_ids=1)):
        expected = np.asarray(call(model))
        np.testing.assert_allclose(
            np.asarray(call(copy)), expected, rtol=0, atol=_atol(model, images, expected)
        )


def test_copy_stores_standardised_kernels_and_runs_them_as_plain_convolutions():
    model = create_model("r14_micro")
    copy = model.standardized_copy()
    assert len(copy.standardized_convs()) == len(model.standardized_convs()) > 10
    for conv in copy.standardized_convs():
        assert conv.prestandardized and conv.kernel.path.endswith("standardized_kernel")
        kernel = np.asarray(conv.kernel).astype(np.float64).reshape(-1, conv.filters)
        # Standardised per output channel: mean 0, variance 1. Fan-ins here are 3 * 49 to
        # 9 * 64 terms of size ~1: float32 moments err by ~sqrt(n) * 2**-24 < 1e-5; a raw He-normal
        # kernel has variance 2 / fan_in, far from 1.
        np.testing.assert_allclose(kernel.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(kernel.var(axis=0), 1.0, atol=1e-5)
    # The plain convolution really skips the standardisation: a kernel that is not standardised
    # (all 2s) is used as it is, so one 1x1x3 -> 1 conv of ones sums 2 * 3 = 6.
    layer = StandardizedConv2D(1, 1, prestandardized=True)
    layer.build((None, 2, 2, 3))
    layer.kernel.assign(np.full((1, 1, 3, 1), 2.0, "float32"))
    np.testing.assert_array_equal(np.asarray(layer(np.ones((1, 2, 2, 3), "float32"))), 6.0)


def test_copy_is_a_snapshot_that_cannot_go_stale_silently():
    model = _model_with_random_head_and_adapters()
    images = _images()
    copy = model.standardized_copy()
    before = np.asarray(copy(images, expert_ids=0))
    # Change the original's weights (as training or loading a checkpoint would).
    rng = np.random.default_rng(1)
    for conv in model.standardized_convs()[:3]:
        conv.kernel.assign(rng.normal(size=conv.kernel.shape).astype("float32"))
    after = np.asarray(model(images, expert_ids=0))
    atol = _atol(model, images, after)
    # The copy still computes the old weights' outputs ...
    np.testing.assert_allclose(np.asarray(copy(images, expert_ids=0)), before, rtol=0, atol=atol)
    assert np.abs(after - before).max() > 100 * atol  # ... which the change moved far.
    # ... and a new copy computes the new ones.
    np.testing.assert_allclose(
        np.asarray(model.standardized_copy()(images, expert_ids=0)), after, rtol=0, atol=atol
    )


def test_copy_is_frozen_and_cannot_be_trained():
    model = _model_with_random_head_and_adapters()
    copy = model.standardized_copy()
    assert copy.trainable_weights == [] and len(copy.weights) == len(model.weights)
    with pytest.raises(ValueError, match=r"train_everything\(\) on .*frozen for inference"):
        copy.train_everything()
    with pytest.raises(ValueError, match=r"train_adapters_only\(\) on .*frozen for inference"):
        copy.train_adapters_only()
    with pytest.raises(ValueError, match="already a standardized_copy"):
        copy.standardized_copy()
    # Even a layer switched back on keeps its standardised kernel out of training.
    copy.trainable = True
    assert not any(v.path.endswith("standardized_kernel") for v in copy.trainable_weights)


def test_training_path_still_differentiates_through_the_standardisation():
    # Fine-tuning stays exact: the model (not the copy) standardises on every call, so the
    # gradient reaching each raw kernel is projected: per output channel it sums to zero (the
    # standardisation removes any shift of the kernel). Without the standardisation in the
    # forward pass these sums are O(1) of the gradient's size.
    model = create_model("r14_micro", num_classes=3)
    model.head.kernel.assign(np.random.default_rng(2).normal(size=model.head.kernel.shape))
    images = tf.constant(_images(2, 32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(images)))
    kernels = [conv.kernel for conv in model.standardized_convs()]
    assert all(k.trainable for k in kernels)
    for kernel, grad in zip(kernels, tape.gradient(loss, kernels), strict=True):
        grad = np.asarray(grad, np.float64).reshape(-1, kernel.shape[-1])
        scale = np.abs(grad).sum(axis=0) + 1e-30
        # Summing n float32 terms errs by at most n * 2**-24 of their absolute sum (n <= 576).
        assert np.all(np.abs(grad.sum(axis=0)) <= grad.shape[0] * 2.0**-24 * scale * 4)


def test_battery_standardized_copy(tmp_path):
    model = _model_with_random_head_and_adapters()
    copy = model.standardized_copy()
    assert_model_battery(copy, _images(), tmp_path, call_kwargs={"expert_ids": 1})
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert reloaded.prestandardized and reloaded.trainable_weights == []
    assert all(conv.prestandardized for conv in reloaded.standardized_convs())


def test_copy_keeps_the_mixed_precision_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = create_model("r14_micro")
        copy = model.standardized_copy()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert copy.dtype_policy.name == "mixed_bfloat16"
    assert all(conv.kernel.dtype == "float32" for conv in copy.standardized_convs())
    features = copy(_images(2, 32))
    assert keras.backend.standardize_dtype(features.dtype) == "bfloat16"
