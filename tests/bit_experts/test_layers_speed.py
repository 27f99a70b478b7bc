"""The folded GroupNorm path (one multiply-add over the activation) computes what the plain one did."""

import numpy as np
import tensorflow as tf

from bit_experts.layers import GroupNorm, group_moments, group_normalize


def _plain_group_norm(x, groups, gamma, beta, epsilon=1e-5):
    # The textbook formula, unfolded: (x - mean) / sqrt(var + eps) * gamma + beta.
    n, h, w, c = x.shape
    g = tf.reshape(x, (n, h, w, groups, c // groups))
    mean, var = tf.nn.moments(g, axes=(1, 2, 4), keepdims=True)
    normalised = tf.reshape((g - mean) / tf.sqrt(var + epsilon), x.shape)
    return normalised * gamma + beta


def _inputs(seed, shape=(2, 5, 3, 8), offset=0.0):
    rng = np.random.default_rng(seed)
    # Per-channel offsets make the channel means differ within a group, so the group variance
    # depends on the between-channel term as well as the within-channel one.
    channel_offsets = rng.normal(size=shape[-1]) * 3.0 + offset
    return (rng.normal(size=shape) + channel_offsets).astype("float32")


def test_group_moments_match_numpy_per_group_statistics():
    x = _inputs(0)
    mean, var = (np.asarray(t) for t in group_moments(x, groups=4))
    g = x.astype(np.float64).reshape(2, 5, 3, 4, 2)
    expected_mean = np.repeat(g.mean(axis=(1, 2, 4)), 2, axis=-1)[:, None, None, :]
    expected_var = np.repeat(g.var(axis=(1, 2, 4)), 2, axis=-1)[:, None, None, :]
    assert mean.shape == var.shape == (2, 1, 1, 8)
    # Float64 reference. Values up to ~10, 30 per group: the float32 mean errs by about
    # sqrt(30) * 2**-24 * 10 = 3e-6 (< 1e-5); the variance, computed about each channel's own
    # mean, by a few times sqrt(15) * 2**-24 relative = 1e-6 (< 1e-5). Dropping the between-channel
    # term (channel offsets of spread 3) would change the variance ~10x.
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var, expected_var, rtol=1e-5)


def test_group_variance_has_no_cancellation_for_large_means():
    # Mean 1000, spread 1: E[x^2] - E[x]^2 in float32 would lose about 3 of 7 digits here.
    x = _inputs(1, offset=1000.0) - np.float32(0)
    _, var = group_moments(x, groups=2)
    g = x.astype(np.float64).reshape(2, 5, 3, 2, 4)
    expected = np.repeat(g.var(axis=(1, 2, 4)), 4, axis=-1)[:, None, None, :]
    # A mean error d only adds d**2 to a variance taken about it; each (x - mean) near 1000 is
    # off by <= 1000 * 2**-24 = 6e-5 against spreads ~3, i.e. ~2e-5 relative per term and less
    # after averaging: rtol 1e-4 holds ~5x over it. E[x^2] - E[x]^2 in float32 would be off by
    # ~1e6 * 2**-24 * sqrt(15) = 0.2 absolute (~2e-2 relative), 200x over the bound.
    np.testing.assert_allclose(np.asarray(var), expected, rtol=1e-4)


def test_folded_group_norm_matches_plain_formula_forward_and_backward():
    x = tf.constant(_inputs(2))
    layer = GroupNorm(groups=4)
    layer.build(x.shape)
    rng = np.random.default_rng(3)
    layer.gamma.assign(rng.normal(size=8).astype("float32"))
    layer.beta.assign(rng.normal(size=8).astype("float32"))
    upstream = tf.constant(rng.normal(size=x.shape).astype("float32"))

    def loss_and_grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * upstream)
        return [np.asarray(g) for g in tape.gradient(loss, [x, layer.gamma, layer.beta])], fn(x)

    (got_grads, got) = loss_and_grads(layer)
    (want_grads, want) = loss_and_grads(lambda t: _plain_group_norm(t, 4, layer.gamma, layer.beta))
    # Two float32 orders of the same formula; outputs up to ~5 from moments over n = 30:
    # 2 * 2 * sqrt(30) * 2**-24 * 5 = 7e-6 < 1e-5 (tests/tolerances.reduction_error, 2 layers).
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    # Gradients sum 30 upstream terms (|upstream| ~3, |gamma| ~2) back through the moments: the
    # same bound at magnitude ~30 * 3 * 2 / std(~3) = 60 is ~1e-4. Dropping the moments' own
    # gradient (a plain affine rescale) changes the input gradient by O(1).
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_group_normalize_without_affine_has_zero_mean_unit_variance_per_group():
    out = np.asarray(group_normalize(_inputs(4), groups=4, epsilon=0.0)).reshape(2, 5, 3, 4, 2)
    out = out.astype(np.float64)  # check in float64: only the layer's float32 error remains
    # Standardised outputs up to ~3, n = 30 per group: mean error ~sqrt(30) * 2**-24 * 3 = 1e-6,
    # variance error ~2 * sqrt(30) * 2**-24 * 9 = 6e-6; 1e-5 and 1e-4 hold 10x over them. A wrong
    # grouping leaves groups with means and variances off by O(1).
    np.testing.assert_allclose(out.mean(axis=(1, 2, 4)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(1, 2, 4)), 1.0, atol=1e-4)


def _group_average_by_repeat(per_channel, groups):
    # The earlier `_group_average`: the group mean is broadcast back with `ops.repeat`.
    from keras import ops

    channels = per_channel.shape[-1]
    grouped = ops.reshape(per_channel, (-1, groups, channels // groups))
    grouped = ops.mean(grouped, axis=-1, keepdims=True)
    grouped = ops.repeat(grouped, channels // groups, axis=-1)
    return ops.reshape(grouped, (-1, 1, 1, channels))


def _graph_size(fn, spec):
    return len(tf.function(fn).get_concrete_function(spec).graph.get_operations())


def test_group_average_is_exact_and_its_graph_is_smaller_than_by_repeat(monkeypatch):
    from bit_experts import layers

    x = tf.constant(_inputs(4, shape=(3, 4, 4, 64)))
    # A multiply by ones is exact, so the statistics equal the repeat version's bit for bit.
    new = [np.asarray(t) for t in group_moments(x, groups=32)]
    spec = tf.TensorSpec([None, None, None, 64], tf.float32)
    new_ops = _graph_size(lambda t: group_moments(t, 32), spec)
    monkeypatch.setattr(layers, "_group_average", _group_average_by_repeat)
    old = [np.asarray(t) for t in group_moments(x, groups=32)]
    old_ops = _graph_size(lambda t: group_moments(t, 32), spec)
    for a, b in zip(new, old):
        np.testing.assert_array_equal(a, b)
    # 84 ops by repeat, 28 now (TF 2.20); every GroupNorm and adapter norm pays this in each trace.
    assert new_ops * 2 <= old_ops, (new_ops, old_ops)
