"""Transfer tasks selected by name: the 19 VTAB-1k tasks, the paper's Table 3, image folders.

    from vtab_eval import tasks
    task = tasks.get_task("cifar100")
    ds = task.load("train800", image_size=224)  # {"image": float32 [0, 1], "label": int64}

The contract (names, splits, JSON) is documented in docs/tasks.md.
"""

import collections

from vtab_eval.tasks import fgvc_aircraft, folder, natural, specialized, structured, table3
from vtab_eval.tasks.base import SPLIT_NAMES, VTAB_SPLITS, Augmentation, Task, to_model_input  # noqa: F401
from vtab_eval.tasks.folder import make_folder_task  # noqa: F401

# VTAB order: natural, specialized, structured.
_SUITES = {
    "vtab1k": natural.TASKS + specialized.TASKS + structured.TASKS,
    "table3": table3.TASKS + fgvc_aircraft.TASKS,
}
SUITES = (*_SUITES, "all")
_BY_NAME = {task.name: task for suite in _SUITES.values() for task in suite}


def list_tasks(suite: str = "all") -> list[str]:
    """Names of the registered tasks of a suite: "vtab1k" (19), "table3" or "all"."""
    if suite == "all":
        return list(_BY_NAME)
    if suite not in _SUITES:
        raise ValueError(f"Unknown suite {suite!r}; expected one of {list(SUITES)}")
    return [task.name for task in _SUITES[suite]]


def get_task(name: str, *, skip_bad_images: bool = False) -> Task:
    """The task called `name` (`list_tasks`), or the image-folder task of "folder:PATH", named by
    its folder (`distinct_names`).

    `skip_bad_images` (folder tasks only): leave out undecodable image files with a warning
    instead of raising (`make_folder_task`).

    Raises:
      ValueError: unknown name (the message lists the known ones), a bad folder layout, or an
        undecodable image file (named) in a folder.
      FileNotFoundError: a folder task whose folder or train/ sub-folder does not exist.
    """
    if name.startswith(folder.PREFIX):
        path = name[len(folder.PREFIX) :]
        if not path:
            raise ValueError(f"Task name {name!r} lacks a path; expected 'folder:PATH'")
        return distinct_names([folder.make_folder_task(path, skip_bad_images=skip_bad_images)])[0]
    if name not in _BY_NAME:
        raise ValueError(
            f"Unknown task {name!r}; known tasks: {', '.join(_BY_NAME)}; "
            "or 'folder:PATH' for an image folder"
        )
    return _BY_NAME[name]


def distinct_names(found: list[Task]) -> list[Task]:
    """`found` with one task of each (name, fingerprint) and every name unique, none a registered
    task's or suite's: a folder task whose name is taken is `folder.disambiguated` (8 hex digits of
    its fingerprint; all 64 where 8 collide). ValueError if names still collide."""
    unique = {}
    for task in found:
        unique.setdefault((task.name, task.fingerprint()), task)
    found = list(unique.values())
    for digits in (8, 64):
        counts = collections.Counter(t.name for t in found)
        taken = {n for n, count in counts.items() if count > 1 or n in _BY_NAME or n in SUITES}
        found = [
            folder.disambiguated(t, digits) if t.suite == "folder" and t.name in taken else t
            for t in found
        ]
    names = [t.name for t in found]
    if len(set(names)) < len(names):
        raise ValueError(
            f"tasks share a name after disambiguation: {sorted(names)}; rename a folder"
        )
    return found
