"""The expert-prediction network (EPN, paper section 5): predicts an image's expert domain(s).

Slices overlap (an image is in every domain on its path to the root), so the EPN is a multi-label
classifier: one sigmoid per expert, target 1 for each domain the image belongs to (all zeros for an
image in no domain). It is a BiT ResNet-v2 with a head over the experts, by default initialised from
the baseline's backbone (`epn.init='baseline'`) and trained on all upstream images.
"""

from __future__ import annotations

from collections.abc import Sequence

from bit_experts import presets
from bit_experts.data import membership_targets
from bit_experts.expert_domains import ExpertDomain


def epn_targets(domains: Sequence[ExpertDomain], num_images: int):
    """`(pattern_ids, patterns)` for `training_dataset(expert_targets=...)`; see membership_targets."""
    return membership_targets([d.image_indices for d in domains], num_images)


def build_epn(preset: str, num_experts: int, dtype=None):
    """A BiT model of `preset` with a zero-initialised head of `num_experts` outputs."""
    if num_experts < 1:
        raise ValueError(f"the EPN needs at least one expert, got {num_experts}")
    return presets.create_model(preset, num_classes=num_experts, dtype=dtype)
