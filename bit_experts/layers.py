"""The two BiT building blocks that Keras does not ship as BiT needs them.

Written with `keras.ops` only, so the same layers run on any Keras backend.
"""

import keras
from keras import ops

# BiT standardises kernels with this epsilon inside the square root.
WEIGHT_STANDARDIZATION_EPSILON = 1e-10
# BiT's GroupNorm epsilon; Keras' GroupNormalization default (1e-3) would change the numerics.
GROUP_NORM_EPSILON = 1e-5


def standardize_kernel(kernel):
    """Standardises an HWIO kernel over H, W and input channels, per output channel (in float32)."""
    kernel = ops.cast(kernel, "float32")
    mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
    variance = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
    return (kernel - mean) / ops.sqrt(variance + WEIGHT_STANDARDIZATION_EPSILON)


@keras.saving.register_keras_serializable(package="bit_experts")
class StandardizedConv2D(keras.layers.Layer):
    """Bias-free 2-D convolution with a weight-standardised kernel (on every call, or once for inference).

    Weight standardisation (Qiao et al., 2019), as Big Transfer (Kolesnikov et al., 2020) uses it:
    the HWIO kernel `[k, k, C_in, filters]` is standardised per output channel (`standardize_kernel`)
    before each convolution, so gradients flow through the standardisation and fine-tuning is exact.

    Padding is always "valid": BiT pads explicitly (see `pad_for_kernel`), which keeps outputs identical
    to the public checkpoints whatever the input size.

    Args:
      filters, kernel_size, strides: as for `keras.layers.Conv2D` (square kernels and strides).
      prestandardized: False (default) for the BiT layer above. True for an inference copy: the
        variable (named `standardized_kernel`, never trainable) already holds a standardised kernel
        and the layer is a plain convolution with it. Made by `BiTResNetV2.standardized_copy()`,
        which standardises the kernels once; do not load raw (checkpoint) kernels into it.

    Call: NHWC `[N, H, W, C_in]` -> `[N, (H - k) // s + 1, (W - k) // s + 1, filters]`.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        kernel_initializer="he_normal",
        prestandardized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.prestandardized = bool(prestandardized)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"{self.name}: the input's channel dimension must be known, got {input_shape}"
            )
        self.kernel = self.add_weight(
            name="standardized_kernel" if self.prestandardized else "kernel",
            shape=(self.kernel_size, self.kernel_size, int(in_channels), self.filters),
            initializer=self.kernel_initializer,
            trainable=not self.prestandardized,
        )

    def call(self, inputs):
        kernel = self.kernel if self.prestandardized else standardize_kernel(self.kernel)
        kernel = ops.cast(kernel, self.compute_dtype)
        return ops.conv(inputs, kernel, strides=self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else (size - self.kernel_size) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            prestandardized=self.prestandardized,
        )
        return config


def _group_average(per_channel, groups):
    # [N, 1, 1, C] -> mean within each group of C // groups channels, broadcast back to the same.
    # The broadcast is a multiply by ones (exact): `ops.repeat` would put about 28 more ops per call
    # into the graph (98 calls in an R50x1), which every trace, save, `hub.load` and gradient
    # construction pays for (benchmarks/RESULTS.md, Publishing).
    channels = per_channel.shape[-1]
    grouped = ops.reshape(per_channel, (-1, groups, channels // groups))
    grouped = ops.mean(grouped, axis=-1, keepdims=True)
    grouped = grouped * ops.ones((1, 1, channels // groups), dtype=grouped.dtype)
    return ops.reshape(grouped, (-1, 1, 1, channels))


def group_moments(inputs, groups):
    """Per-example, per-group mean and variance of NHWC `inputs`, each [N, 1, 1, C] in float32.

    One pass for the per-channel means and one for the per-channel variances (about their own
    mean, so no cancellation); the group variance then follows exactly on the small [N, C]
    tensors as mean(channel variance) + mean((channel mean - group mean)^2). No reshape of the
    spatial dimensions is needed, so any input resolution (including unknown ones inside a
    SavedModel) works.
    """
    x = ops.cast(inputs, "float32")
    channel_mean, channel_var = ops.moments(x, axes=(1, 2), keepdims=True)
    mean = _group_average(channel_mean, groups)
    variance = _group_average(channel_var + ops.square(channel_mean - mean), groups)
    return mean, variance


def group_normalize(inputs, groups, epsilon=GROUP_NORM_EPSILON, gamma=None, beta=None):
    """Normalises NHWC `inputs` per example and channel group (float32 out).

    `gamma` and `beta` (optional, broadcastable to [N, 1, 1, C]) scale and shift the result. They
    are folded with the statistics into one per-channel scale and offset, so the full-size
    activation is touched by a single multiply-add rather than by a subtract, a divide, a
    multiply and an add: on a CPU this memory traffic, not the arithmetic, is what GroupNorm costs.
    """
    x = ops.cast(inputs, "float32")
    mean, variance = group_moments(x, groups)
    scale = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * ops.cast(gamma, "float32")
    offset = -mean * scale
    if beta is not None:
        offset = offset + ops.cast(beta, "float32")
    return x * scale + offset


@keras.saving.register_keras_serializable(package="bit_experts")
class GroupNorm(keras.layers.Layer):
    """Group normalisation over NHWC inputs, statistics in float32 even under mixed precision."""

    def __init__(self, groups=32, epsilon=GROUP_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"{self.name}: channels ({channels}) must be a known multiple of groups ({self.groups})"
            )
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        x = group_normalize(inputs, self.groups, self.epsilon, gamma=self.gamma, beta=self.beta)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, epsilon=self.epsilon)
        return config


def pad_for_kernel(x, kernel_size):
    """Zero-pads H and W as BiT does before a strided conv or pool: (k - 1) split evenly."""
    total = kernel_size - 1
    before, after = total // 2, total - total // 2
    return ops.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))
