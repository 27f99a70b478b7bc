"""The in-memory form of one downstream task, shared by the task builders (docs/world.md)."""

from __future__ import annotations

import dataclasses

import numpy as np

TRAIN_IMAGES = 1000  # VTAB-1k: 800 train + 200 validation, split by the loader.
GROUPS = ("natural", "specialized", "structured")  # VTAB's task groups.


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """One downstream task in memory.

    Attributes:
      name: the task name (one of `downstream.TASKS`).
      description: one line saying what the images and classes are.
      near_expert: the upstream hierarchy node the task was built close to, or None.
      class_names: folder name of each class id, sorted (the image-folder loader's label order).
      train_images, test_images: uint8 [n, S, S, 3].
      train_labels, test_labels: int64 [n] class ids.
      group: VTAB-like group, one of GROUPS ("natural", "specialized", "structured").
    """

    name: str
    description: str
    near_expert: str | None
    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    group: str | None = None


def balanced_labels(num_classes: int, total: int) -> np.ndarray:
    """`total` labels over `num_classes` classes, counts differing by at most one, sorted."""
    counts = total // num_classes + (np.arange(num_classes) < total % num_classes)
    return np.repeat(np.arange(num_classes), counts)
