import keras
import numpy as np
import pytest
from model_battery import assert_model_battery
from tolerances import model_atol, reduction_error

from bit_experts.layers import GroupNorm
from bit_experts.presets import PRESETS, create_model, preset_config


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype("float32")


def test_r50x1_backbone_has_bit_parameter_count():
    model = create_model("r50x1")
    assert _count(model.weights) == 23_500_352
    assert model.feature_dim == 2048


def test_head_adds_exactly_its_parameters_and_starts_at_zero():
    model = create_model("r14_micro", num_classes=7)
    assert _count(model.head.weights) == model.feature_dim * 7 + 7
    np.testing.assert_array_equal(np.asarray(model(_images())), 0.0)


def test_presets_table_lists_family_and_small_variants():
    assert {"r50x1", "r101x3", "r152x4", "r14_tiny", "r26_small"} <= set(PRESETS)
    with pytest.raises(ValueError, match="unknown model preset 'r42'"):
        preset_config("r42")


def test_feature_shapes_at_any_resolution():
    model = create_model("r14_micro")
    for size in (32, 45, 64):
        assert model(_images(2, size)).shape == (2, model.feature_dim)


def test_inputs_are_mapped_from_unit_range():
    # The model must see x * 2 - 1: a constant image of 0.5 is all zeros inside, whatever the weights.
    model = create_model("r14_micro")
    features = np.asarray(model(np.full((1, 32, 32, 3), 0.5, "float32")))
    zeros_in = np.asarray(model.final_norm.beta.numpy())  # GN(0) = beta; ReLU; average
    # Exact: a zero input stays exactly zero through every conv (0 * w summed is 0 in any order)
    # and GroupNorm (mean 0, variance 0, 0 * scale + beta). Was atol=1e-5. Feeding x instead of
    # 2x - 1 makes the features O(1).
    np.testing.assert_array_equal(features[0], np.maximum(zeros_in, 0))


def test_battery_plain_model(tmp_path):
    model = create_model("r14_tiny", num_classes=4)
    model.head.kernel.assign(np.random.default_rng(0).normal(size=model.head.kernel.shape))
    assert_model_battery(model, _images(), tmp_path)


def test_battery_model_with_adapters(tmp_path):
    model = create_model("r14_tiny", num_experts=3)
    for adapter in model.adapters:
        adapter.conv2_kernel.assign(
            np.random.default_rng(1).normal(size=adapter.conv2_kernel.shape)
        )
    out = assert_model_battery(model, _images(), tmp_path, {"expert_ids": np.array([2, 0, 1])})
    alone = np.asarray(model(_images(), expert_ids=np.array([2, 2, 2])))
    # Same example, other batch companions: float32 bound of the network (tests/tolerances.py)
    # instead of a fixed 1e-5; routing example 0 to expert 0 or 1 instead would differ by O(1).
    np.testing.assert_allclose(out[0], alone[0], rtol=0, atol=model_atol(model, _images(), out))


def test_mixed_bfloat16_keeps_norm_statistics_in_float32():
    reference = create_model("r14_micro")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = create_model("r14_micro")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(reference.get_weights())
    assert all(v.dtype == "float32" for v in model.weights)
    features = model(_images())
    assert keras.backend.standardize_dtype(features.dtype) == "bfloat16"
    expected = np.asarray(reference(_images()))
    got = np.asarray(features, dtype="float32")
    assert np.all(np.isfinite(got))
    # bfloat16 keeps ~3 significant digits: features must point the same way as in float32.
    # Rounding every activation to bfloat16 (relative 2**-8) over the ~50 reductions of r14_micro
    # adds up, as a random walk, to ~sqrt(50) * 2**-8 = 3% relative, i.e. cosine >= 0.9995; 0.99
    # allows 14% (5x). bfloat16 GroupNorm statistics (spacing 2**-8 of the mean) give cosines ~0.
    cosine = (
        np.sum(got * expected, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() > 0.99


def test_group_norm_statistics_survive_bfloat16_inputs():
    # Mean 1000, spread 1: bfloat16 statistics (8 mantissa bits) could not resolve the spread.
    x = 1000 + np.random.default_rng(0).normal(size=(2, 4, 4, 8))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        norm = GroupNorm(groups=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    out = np.asarray(norm(keras.ops.cast(x, "bfloat16")), dtype="float32")
    g = np.asarray(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float32")).reshape(2, 4, 4, 4, 2)
    ref = (g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + 1e-5)
    # The output is rounded to bfloat16 (relative error <= 2**-8); float32 statistics of values
    # near 1000 over 32 per group add ~sqrt(32) * u * 1000 in units of the spread. Was atol=0.05.
    # bfloat16 statistics (spacing 4 at 1000) would be off by O(1).
    np.testing.assert_allclose(
        out, ref.reshape(x.shape), rtol=2**-8, atol=reduction_error(32, 1000.0)
    )


def test_bad_construction_arguments_are_clear():
    with pytest.raises(ValueError, match="block_units"):
        create_model("r14_micro", block_units=(1, 1, 1))
    with pytest.raises(ValueError, match="width_factor"):
        create_model("r14_micro", width_factor=0.3)
