import numpy as np
import pytest

from bit_experts.layers import GroupNorm, StandardizedConv2D, pad_for_kernel, standardize_kernel


def test_standardized_kernel_has_zero_mean_unit_variance_per_output_channel():
    kernel = np.random.default_rng(0).normal(3.0, 5.0, (3, 3, 4, 6)).astype("float32")
    std = np.asarray(standardize_kernel(kernel)).astype(np.float64)  # check in float64
    # n = 36 per channel; kernel values up to ~20 (3 + 3 * 5), spread 5, so the float32 mean's
    # error in units of the spread is ~sqrt(36) * 2**-24 * 20 / 5 = 1.4e-6 per value; the variance
    # of standardised values (~3 at most squared: 9) ~3 * sqrt(36) * 2**-24 * 9 = 1e-5. Bounds
    # 1e-5 and 1e-4 keep ~7x and ~10x over that; the wrong axes or no division move them by O(1).
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
            expected[:, i, j] = np.einsum("nhwc,hwco->no", patch.astype(float), kernel)
    # Float64 reference; a float32 sum of n = 27 products has error <= 27 * 2**-24 * sum |x k|
    # (worst case, any order): with |x|, |k| <~ 3 that is < 27 * 6e-8 * 27 * 9 = 4e-4 and
    # typically sqrt(27) * 6e-8 * 20 = 6e-6. 1e-4 lies between; a wrong stride, padding or a
    # missing standardisation changes outputs by O(1).
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert layer.compute_output_shape((None, 5, 5, 3)) == (None, 2, 2, 4)


def test_group_norm_matches_reference_and_uses_bit_epsilon():
    rng = np.random.default_rng(2)
    # Tiny variance makes the epsilon matter: 1e-5 (BiT) and 1e-3 (Keras default) differ clearly.
    x = (rng.normal(size=(2, 4, 3, 8)) * 0.01).astype("float32")
    out = np.asarray(GroupNorm(groups=4)(x))
    g = x.astype(np.float64).reshape(2, 4, 3, 4, 2)  # float64 reference
    ref = (g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + 1e-5)
    # Outputs ~N(0, 0.95); float32 moments over n = 24 carry ~sqrt(24) * 2**-24 * 3 = 1e-6 of
    # error, rsqrt and the multiply-add a few ulp more: 1e-4 is ~50x that. The Keras epsilon
    # (1e-3 against a variance of 1e-4) would shrink the outputs by 3x, an O(1) change.
    np.testing.assert_allclose(out, ref.reshape(x.shape), atol=1e-4)


def test_group_norm_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="multiple of groups"):
        GroupNorm(groups=4)(np.zeros((1, 2, 2, 6), "float32"))


def test_pad_for_kernel_pads_like_bit():
    x = np.ones((1, 4, 4, 1), "float32")
    assert pad_for_kernel(x, 7).shape == (1, 10, 10, 1)
    assert pad_for_kernel(x, 3).shape == (1, 6, 6, 1)
