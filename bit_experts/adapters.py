"""Residual bottleneck adapters for many experts in one network (paper section 4.1, figure 3).

One `ExpertAdapters` layer sits before each ResNet block and holds the adapters of every expert:
`x -> x + a_e(x)` with `a_e = Conv(ReLU(GN(Conv(ReLU(GN(x))))))`, 1x1 convolutions through a bottleneck
of k = c / 2 channels (so one adapter costs c^2 weights, like a linear c x c adapter). The last
convolution starts at zero, so a new adapter is the identity. An expert id routes a whole example.
"""

import keras
from keras import ops

from bit_experts.layers import group_normalize


@keras.saving.register_keras_serializable(package="bit_experts")
class ExpertAdapters(keras.layers.Layer):
    """The adapters of `num_experts` experts at one position in the network.

    Call with `(x, expert_ids)`: `expert_ids` is a scalar (the whole batch goes to one expert, the fast
    path) or an int vector `[N]` (one expert per example).
    """

    def __init__(self, num_experts, groups, bottleneck_ratio=0.5, **kwargs):
        super().__init__(**kwargs)
        if int(num_experts) < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts!r}")
        self.num_experts = int(num_experts)
        self.groups = int(groups)
        self.bottleneck_ratio = float(bottleneck_ratio)

    def build(self, input_shape):
        channels = input_shape[-1]
        bottleneck = int(channels * self.bottleneck_ratio)
        for width in (channels, bottleneck):
            if width % self.groups:
                raise ValueError(
                    f"{self.name}: adapter width {width} is not a multiple of groups ({self.groups})"
                )
        experts = self.num_experts
        self.norm1_gamma = self.add_weight(
            name="norm1_gamma", shape=(experts, channels), initializer="ones"
        )
        self.norm1_beta = self.add_weight(
            name="norm1_beta", shape=(experts, channels), initializer="zeros"
        )
        self.conv1_kernel = self.add_weight(
            name="conv1_kernel", shape=(experts, channels, bottleneck), initializer="he_normal"
        )
        self.norm2_gamma = self.add_weight(
            name="norm2_gamma", shape=(experts, bottleneck), initializer="ones"
        )
        self.norm2_beta = self.add_weight(
            name="norm2_beta", shape=(experts, bottleneck), initializer="zeros"
        )
        # Zero-initialised, so that a fresh adapter leaves the backbone's function unchanged.
        self.conv2_kernel = self.add_weight(
            name="conv2_kernel", shape=(experts, bottleneck, channels), initializer="zeros"
        )

    def _branch(self, x, expert_ids):
        dtype = self.compute_dtype
        per_example = len(expert_ids.shape) == 1

        def pick(weights):
            # Scalar id: one expert's weights for the whole batch. Vector: gather per example.
            return ops.take(weights, expert_ids, axis=0)

        def norm(h, gamma, beta):
            # Scale and offset are folded into the normalisation (one pass over the activation).
            if per_example:
                gamma, beta = gamma[:, None, None, :], beta[:, None, None, :]
            return group_normalize(h, self.groups, gamma=gamma, beta=beta)

        def conv1x1(h, kernel):
            kernel = ops.cast(kernel, dtype)
            if per_example:
                return ops.einsum("nhwc,nck->nhwk", h, kernel)
            return ops.einsum("nhwc,ck->nhwk", h, kernel)

        h = norm(x, pick(self.norm1_gamma), pick(self.norm1_beta))
        h = conv1x1(ops.cast(ops.relu(h), dtype), pick(self.conv1_kernel))
        h = norm(h, pick(self.norm2_gamma), pick(self.norm2_beta))
        return conv1x1(ops.cast(ops.relu(h), dtype), pick(self.conv2_kernel))

    def call(self, x, expert_ids):
        expert_ids = ops.convert_to_tensor(expert_ids, dtype="int32")
        if len(expert_ids.shape) > 1:
            raise ValueError(
                f"{self.name}: expert_ids must be a scalar or a vector, got {expert_ids.shape}"
            )
        return x + self._branch(x, expert_ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_experts=self.num_experts, groups=self.groups, bottleneck_ratio=self.bottleneck_ratio
        )
        return config
