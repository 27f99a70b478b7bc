import numpy as np
import pytest

from bit_experts.layers import GroupNorm, StandardizedConv2D, pad_for_kernel, standardize_kernel


def test_standardized_kernel_has_zero_mean_unit_variance_per_output_channel():
    kernel = np.random.default_rng(0).normal(3.0, 5.0, (3, 3, 4, 6)).astype("float32")
    std = np.asarray(standardize_kernel(kernel))
    np.testing.assert_allclose(std.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(std.var(axis=(0, 1, 2)), 1, atol=1e-4)


def test_standardized_conv_matches_manual_convolution():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    layer = StandardizedConv2D(4, 3, strides=2)
    out = np.asarray(layer(x))
    kernel = np.asarray(standardize_kernel(layer.kernel.numpy()))
    expected = np.zeros((2, 2, 2, 4))
    for i in range(2):
        for j in range(2):
            patch = x[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
            expected[:, i, j] = np.einsum("nhwc,hwco->no", patch, kernel)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert layer.compute_output_shape((None, 5, 5, 3)) == (None, 2, 2, 4)


def test_group_norm_matches_reference_and_uses_bit_epsilon():
    rng = np.random.default_rng(2)
    # Tiny variance makes the epsilon matter: 1e-5 (BiT) and 1e-3 (Keras default) differ clearly.
    x = (rng.normal(size=(2, 4, 3, 8)) * 0.01).astype("float32")
    out = np.asarray(GroupNorm(groups=4)(x))
    g = x.reshape(2, 4, 3, 4, 2)
    ref = (g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, ref.reshape(x.shape), atol=1e-4)


def test_group_norm_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="multiple of groups"):
        GroupNorm(groups=4)(np.zeros((1, 2, 2, 6), "float32"))


def test_pad_for_kernel_pads_like_bit():
    x = np.ones((1, 4, 4, 1), "float32")
    assert pad_for_kernel(x, 7).shape == (1, 10, 10, 1)
    assert pad_for_kernel(x, 3).shape == (1, 6, 6, 1)
