"""Which training augmentations keep a task's labels true: its augmentation policy.

BiT's fine-tuning recipe (Kolesnikov et al., 2020; the big_transfer colab) does random crops and
horizontal flips "for all tasks except those where such actions destroy label semantics": no random
crops for counting tasks, no flips where the label is an orientation. Every task carries an
`Augmentation` next to its label function; `vtab_eval.sweeps.for_task` turns off in a sweep setting
whatever the task forbids, so every preset that augments honours it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A task's augmentation policy.

    Attributes:
      flip: random horizontal flips keep the label (False when it is an orientation, a position
        along x, or a pose angle).
      crop: random crops keep the label (False when it counts, locates, or measures something in
        the whole image, which a crop can cut out or move).
      reason: one line saying why something is forbidden (empty when both are allowed).
    """

    flip: bool = True
    crop: bool = True
    reason: str = ""

    def __post_init__(self):
        for key in ("flip", "crop"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"Augmentation.{key} must be a bool, got {getattr(self, key)!r}")
        if not (self.flip and self.crop) and not self.reason:
            raise ValueError("an Augmentation that forbids flips or crops must give its reason")

    def to_json(self) -> dict:
        """{"flip", "crop", "reason"}: the policy as `list_tasks --format=json` prints it."""
        return dataclasses.asdict(self)


# Natural images whose label survives a mirror image and a crop of most of the picture.
FLIP_AND_CROP = Augmentation()
