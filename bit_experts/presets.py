"""Named model sizes: the BiT ResNet-v2 family and small variants of the same structure for CPUs."""

_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

# name -> constructor arguments. R-depth = 3 * sum(block_units) + 2.
PRESETS = {
    f"r{depth}x{width}": {"block_units": units, "width_factor": width, "groups": 32}
    for depth, units in _DEPTHS.items()
    for width in (1, 2, 3, 4)
}
BIT = tuple(PRESETS)  # BiT's own architectures (Kolesnikov et al., 2020): 32 groups, 224 px
PRESETS.update(
    {
        # Small variants: same units, norms and adapters; fewer units and channels, fewer groups.
        "r26_small": {"block_units": (2, 2, 2, 2), "width_factor": 0.5, "groups": 16},
        "r14_tiny": {"block_units": (1, 1, 1, 1), "width_factor": 0.25, "groups": 8},
        "r14_micro": {"block_units": (1, 1, 1, 1), "width_factor": 0.125, "groups": 4},
    }
)


def preset_config(name):
    """The constructor arguments of preset `name`; ValueError listing the presets if unknown."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
    return dict(PRESETS[name])


def create_model(preset, num_classes=0, num_experts=0, **overrides):
    """Builds a `BiTResNetV2` from a preset name, e.g. `create_model("r50x1", num_classes=10)`."""
    from bit_experts.resnet_v2 import BiTResNetV2  # here: configs are checked without Keras

    config = preset_config(preset)
    config.update(overrides)
    return BiTResNetV2(num_classes=num_classes, num_experts=num_experts, name=preset, **config)
