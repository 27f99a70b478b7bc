"""BiT ResNet-v2: pre-activation bottleneck ResNet with weight-standardised convs and GroupNorm.

Structure and numerics follow Big Transfer (Kolesnikov et al., 2020) so that the public BiT checkpoints
load (see `bit_experts.checkpoint`). Images come in as float [0, 1] and are mapped to [-1, 1] inside, as
the public BiT TF Hub modules do. Optional expert adapters sit before each of the four blocks:
`x_i = F_i(x_{i-1} + a_e(x_{i-1}))`.
"""

import functools

import keras
import numpy as np
from keras import ops

from bit_experts.adapters import ExpertAdapters
from bit_experts.layers import GroupNorm, StandardizedConv2D, pad_for_kernel, standardize_kernel

NUM_BLOCKS = 4


@keras.saving.register_keras_serializable(package="bit_experts")
class BottleneckUnit(keras.layers.Layer):
    """Pre-activation bottleneck: GN-ReLU, [projection], 1x1, GN-ReLU-3x3 (strided), GN-ReLU-1x1, add."""

    def __init__(self, filters, strides, groups, prestandardized=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)  # output channels; the bottleneck has filters // 4.
        self.strides = int(strides)
        self.groups = int(groups)
        self.prestandardized = bool(prestandardized)  # see StandardizedConv2D
        mid = self.filters // 4
        conv = functools.partial(StandardizedConv2D, prestandardized=self.prestandardized)
        self.norm_a = GroupNorm(groups, name="a_group_norm")
        self.conv_a = conv(mid, 1, name="a_standardized_conv2d")
        self.norm_b = GroupNorm(groups, name="b_group_norm")
        self.conv_b = conv(mid, 3, strides=self.strides, name="b_standardized_conv2d")
        self.norm_c = GroupNorm(groups, name="c_group_norm")
        self.conv_c = conv(self.filters, 1, name="c_standardized_conv2d")
        self.projection = None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels != self.filters or self.strides != 1:
            self.projection = StandardizedConv2D(
                self.filters,
                1,
                strides=self.strides,
                prestandardized=self.prestandardized,
                name="a_proj_standardized_conv2d",
            )
            self.projection.build(input_shape)
        mid_shape = (None, None, None, self.filters // 4)
        self.norm_a.build(input_shape)
        self.conv_a.build(input_shape)
        self.norm_b.build(mid_shape)
        self.conv_b.build(mid_shape)
        self.norm_c.build(mid_shape)
        self.conv_c.build(mid_shape)

    def call(self, x):
        preact = ops.relu(self.norm_a(x))
        shortcut = x if self.projection is None else self.projection(preact)
        h = self.conv_a(preact)
        h = self.conv_b(pad_for_kernel(ops.relu(self.norm_b(h)), 3))
        h = self.conv_c(ops.relu(self.norm_c(h)))
        return h + shortcut

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else (size - 1) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            strides=self.strides,
            groups=self.groups,
            prestandardized=self.prestandardized,
        )
        return config


def _channels(width_factor, base):
    channels = base * width_factor
    if channels != int(channels) or channels < 1:
        raise ValueError(
            f"width_factor {width_factor!r} gives {channels} channels for a base of {base}; "
            "expected a whole number"
        )
    return int(channels)


@keras.saving.register_keras_serializable(package="bit_experts")
class BiTResNetV2(keras.Model):
    """A BiT ResNet-v2 backbone with an optional zero-initialised head and optional expert adapters.

    Args:
      block_units: units per block, e.g. (3, 4, 6, 3) for R50.
      width_factor: channel multiplier (1 for x1; fractions give the small CPU presets).
      num_classes: size of the head; 0 means no head (the model returns pre-logits features).
      num_experts: number of expert adapter sets; 0 means no adapters.
      groups: GroupNorm groups (BiT uses 32).
      adapter_bottleneck: adapter bottleneck width as a fraction of its input channels.
      prestandardized: True only for the frozen inference copies `standardized_copy()` makes (its
        convolution kernels are stored already standardised); False for every model that trains.

    Call: `model(images, expert_ids=None)`. `images`: float `[N, H, W, 3]` in [0, 1]. `expert_ids`: an
    int scalar or `[N]` vector when the model has adapters; may be omitted with a single expert or when
    `routing_fn` (a callable images -> ids, not serialised) is set.
    """

    def __init__(
        self,
        block_units=(3, 4, 6, 3),
        width_factor=1,
        num_classes=0,
        num_experts=0,
        groups=32,
        adapter_bottleneck=0.5,
        prestandardized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        block_units = tuple(int(u) for u in block_units)
        if len(block_units) != NUM_BLOCKS or min(block_units) < 1:
            raise ValueError(f"block_units must be {NUM_BLOCKS} positive ints, got {block_units!r}")
        if int(num_classes) < 0 or int(num_experts) < 0:
            raise ValueError(
                f"num_classes and num_experts must be >= 0, got {num_classes!r}, {num_experts!r}"
            )
        self.block_units = block_units
        self.width_factor = width_factor
        self.num_classes = int(num_classes)
        self.num_experts = int(num_experts)
        self.groups = int(groups)
        self.adapter_bottleneck = float(adapter_bottleneck)
        self.prestandardized = bool(prestandardized)
        self.routing_fn = None

        self.root_conv = StandardizedConv2D(
            _channels(width_factor, 64),
            7,
            strides=2,
            prestandardized=self.prestandardized,
            name="root_standardized_conv2d",
        )
        self.blocks = []
        for b, units in enumerate(block_units):
            filters = _channels(width_factor, 256 * 2**b)
            self.blocks.append(
                [
                    BottleneckUnit(
                        filters,
                        strides=2 if (b > 0 and u == 0) else 1,
                        groups=self.groups,
                        prestandardized=self.prestandardized,
                        name=f"block{b + 1}_unit{u + 1:02d}",
                    )
                    for u in range(units)
                ]
            )
        self.adapters = (
            [
                ExpertAdapters(
                    self.num_experts, self.groups, self.adapter_bottleneck, name=f"adapter{b + 1}"
                )
                for b in range(NUM_BLOCKS)
            ]
            if self.num_experts
            else []
        )
        self.final_norm = GroupNorm(self.groups, name="group_norm")
        self.head = (
            keras.layers.Dense(self.num_classes, kernel_initializer="zeros", name="head")
            if self.num_classes
            else None
        )
        self.build((None, None, None, 3))

    @property
    def feature_dim(self):
        return _channels(self.width_factor, 2048)

    def build(self, input_shape):
        channels = self.root_conv.filters
        self.root_conv.build((None, None, None, 3))
        for b, units in enumerate(self.blocks):
            if self.adapters:
                self.adapters[b].build((None, None, None, channels))
            for unit in units:
                unit.build((None, None, None, channels))
                channels = unit.filters
        self.final_norm.build((None, None, None, channels))
        if self.head is not None:
            self.head.build((None, channels))
        self.built = True

    def _resolve_expert_ids(self, images, expert_ids):
        if not self.adapters:
            if expert_ids is not None:
                raise ValueError("expert_ids was given but this model has no expert adapters")
            return None
        if expert_ids is None and self.routing_fn is not None:
            expert_ids = self.routing_fn(images)
        if expert_ids is None:
            if self.num_experts != 1:
                raise ValueError(
                    f"this model holds {self.num_experts} experts: pass expert_ids (a scalar or [N] ints)"
                )
            expert_ids = 0
        try:
            ids = np.asarray(expert_ids)
        except (NotImplementedError, TypeError, ValueError):
            ids = None  # a symbolic tensor inside a traced function: checked by the gather op
        if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= self.num_experts):
            raise ValueError(f"expert_ids must be in [0, {self.num_experts}), got {ids.tolist()!r}")
        return expert_ids

    def features(self, images, expert_ids=None):
        """Pre-logits features `[N, feature_dim]`: final GN-ReLU, then global average pooling."""
        expert_ids = self._resolve_expert_ids(images, expert_ids)
        x = ops.cast(images, self.compute_dtype) * 2.0 - 1.0
        x = self.root_conv(pad_for_kernel(x, 7))
        x = ops.max_pool(pad_for_kernel(x, 3), pool_size=3, strides=2, padding="valid")
        for b, units in enumerate(self.blocks):
            if self.adapters:
                x = self.adapters[b](x, expert_ids=expert_ids)
            for unit in units:
                x = unit(x)
        x = ops.relu(self.final_norm(x))
        return ops.mean(x, axis=(1, 2))

    def call(self, images, expert_ids=None, training=None):
        features = self.features(images, expert_ids)
        return features if self.head is None else self.head(features)

    # --- what is trained -----------------------------------------------------------------------------

    def backbone_layers(self):
        """Every layer except the adapters and the head."""
        return [self.root_conv, *(u for units in self.blocks for u in units), self.final_norm]

    def standardized_convs(self):
        """Every `StandardizedConv2D` of the backbone: root, then each unit's [projection,] a, b, c."""
        convs = [self.root_conv]
        for unit in (u for units in self.blocks for u in units):
            convs += [c for c in (unit.projection, unit.conv_a, unit.conv_b, unit.conv_c) if c]
        return convs

    def standardized_copy(self):
        """A frozen copy for inference whose convolution kernels are weight-standardised once.

        This model standardises each kernel on every call, so that gradients flow through the
        standardisation (exact fine-tuning). With frozen weights that work repeats identically on
        every batch; the copy stores `standardize_kernel(kernel)` in each convolution (a variable
        named `standardized_kernel`) and runs it as a plain convolution. Its outputs equal this
        model's up to float32 rounding.

        The copy is a snapshot: later changes to this model's weights do not reach it (make a new
        copy), and it cannot train: every weight is non-trainable, and `train_everything()` /
        `train_adapters_only()` raise ValueError on it. Same config (architecture, experts, head,
        dtype policy) and `routing_fn`; extra memory: one more copy of the weights.

        Returns: a `BiTResNetV2` with `prestandardized=True`.
        """
        if self.prestandardized:
            raise ValueError(f"{self.name} is already a standardized_copy(); use it as it is")
        config = dict(self.get_config(), prestandardized=True, name=f"{self.name}_standardized")
        copy = type(self).from_config(config)
        copy.routing_fn = self.routing_fn
        pairs = list(zip(self.standardized_convs(), copy.standardized_convs(), strict=True))
        for source, target in pairs:
            target.kernel.assign(standardize_kernel(source.kernel))
        convs = {id(source.kernel) for source, _ in pairs}
        others = [v for v in self.weights if id(v) not in convs]
        copied = {id(target.kernel) for _, target in pairs}
        for source, target in zip(
            others, [v for v in copy.weights if id(v) not in copied], strict=True
        ):
            target.assign(source)
        copy.trainable = False
        return copy

    def _refuse_if_prestandardized(self, method):
        if self.prestandardized:
            raise ValueError(
                f"{method}() on {self.name}: a standardized_copy() is frozen for inference (its "
                "kernels are stored standardised, so training it would not train BiT); train the "
                "original model and make a new copy"
            )

    def train_adapters_only(self):
        """Freezes backbone and head, leaving only the expert adapters trainable."""
        self._refuse_if_prestandardized("train_adapters_only")
        if not self.adapters:
            raise ValueError("train_adapters_only() needs a model built with num_experts >= 1")
        self.trainable = True
        for layer in self.backbone_layers():
            layer.trainable = False
        if self.head is not None:
            self.head.trainable = False
        for adapter in self.adapters:
            adapter.trainable = True

    def train_everything(self):
        """Makes every weight trainable (downstream fine-tuning)."""
        self._refuse_if_prestandardized("train_everything")
        self.trainable = True
        for layer in [*self.backbone_layers(), *self.adapters, *([self.head] if self.head else [])]:
            layer.trainable = True

    def get_config(self):
        config = super().get_config()
        config.update(
            block_units=list(self.block_units),
            width_factor=self.width_factor,
            num_classes=self.num_classes,
            num_experts=self.num_experts,
            groups=self.groups,
            adapter_bottleneck=self.adapter_bottleneck,
            prestandardized=self.prestandardized,
        )
        return config
