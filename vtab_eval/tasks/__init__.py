"""Transfer tasks selected by name: the 19 VTAB-1k tasks, the paper's Table 3, image folders.

    from vtab_eval import tasks
    task = tasks.get_task("cifar100")
    ds = task.load("train800", image_size=224)  # {"image": float32 [0, 1], "label": int64}

The contract (names, splits, JSON) is documented in docs/tasks.md.
"""

from vtab_eval.tasks.base import (
    FULL_SPLITS,
    GROUPS,
    METRICS,
    SPLIT_NAMES,
    VTAB_SPLITS,
    Task,
    to_model_input,
)
from vtab_eval.tasks.folder import FolderTask, make_folder_task
from vtab_eval.tasks.registry import SUITES, get_task, list_tasks
from vtab_eval.tasks.tfds_task import TfdsTask

__all__ = [
    "FULL_SPLITS",
    "GROUPS",
    "METRICS",
    "SPLIT_NAMES",
    "SUITES",
    "VTAB_SPLITS",
    "FolderTask",
    "Task",
    "TfdsTask",
    "get_task",
    "list_tasks",
    "make_folder_task",
    "to_model_input",
]
