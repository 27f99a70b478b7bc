"""Initialising one BiT model from another: whole copies, and backbone (+ head) copies."""

from __future__ import annotations

from bit_experts.resnet_v2 import BiTResNetV2


def copy_backbone(dst: BiTResNetV2, src: BiTResNetV2, head: bool = True) -> None:
    """Copies every backbone weight (and the head's, if `head`) from `src` into `dst`.

    Adapters are left alone. Raises ValueError if the architectures differ.
    """
    pairs = list(zip(dst.backbone_layers(), src.backbone_layers()))
    if len(dst.backbone_layers()) != len(src.backbone_layers()):
        raise ValueError(f"cannot copy backbone: {src.name} and {dst.name} differ in depth")
    if head:
        if dst.head is None or src.head is None:
            raise ValueError("cannot copy the head: one of the models has none")
        pairs.append((dst.head, src.head))
    for d, s in pairs:
        weights = s.get_weights()
        if [w.shape for w in weights] != [tuple(v.shape) for v in d.weights]:
            raise ValueError(f"cannot copy {s.name} into {d.name}: weight shapes differ")
        d.set_weights(weights)
