"""Fine-tunes identified by their content: the unit of work `vtab_eval.run` and the demo plan.

A `Spec` is one fine-tune: a module, a task, a training and an evaluation split, a sweep setting,
a seed and the determinism flag. Its `key` is the SHA-256 of the canonical JSON of everything that
determines the result (docs/evaluation.md, "Identity"):

* the module's identity (`module_identity`: its weights fingerprint when published with one,
  else its SHA-256 checksum; the same identity the feature cache keys on);
* the task's identity (`task_identity`: `task.fingerprint()`, which covers the task's definition,
  its label and decode code, and for folder tasks every image file's size and modification time);
* the two split names, the full setting dict, the seed and the determinism flag.

Two specs with the same key are the same fine-tune; the executor runs it once and every plan that
holds it (several selectors that picked the same expert, hindsight) shares the result.
"""

import dataclasses
import hashlib
import json

import numpy as np

# Bump when the fine-tuning code changes what a spec's result means.
SPEC_FORMAT = 1


def canonical_json(obj):
    """Compact, key-sorted JSON: the same content always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(obj, length=64):
    """Hex SHA-256 of `canonical_json(obj)`, cut to `length` characters."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def module_identity(entry):
    """What identifies a module's content: `{"module": vtab_eval.embed.module_identity(entry)}`
    (its weights fingerprint, else its checksum), the same identity the feature cache keys on.

    Args:
      entry: a `hub_export.collection.ModuleEntry` or a handle string.
    """
    from vtab_eval import embed

    return {"module": embed.module_identity(entry)}


def task_identity(task):
    """What identifies a task's content: `{"fingerprint": task.fingerprint()}` (JSON-able).

    Every `vtab_eval.tasks.Task` has `fingerprint()` (vtab_eval/tasks/base.py); callers with a
    stand-in task that has none pass their own `task_id` to `make_spec`.
    """
    return {"fingerprint": task.fingerprint()}


def derive_seed(base_seed, *path):
    """A 31-bit seed derived from `base_seed` and a path such as ("retrain", selection, j).

    numpy's `SeedSequence` mixes the parts, so neighbouring base seeds give unrelated streams.
    """
    words = [int(base_seed)] + [
        int(p) if isinstance(p, int) else int(hashlib.sha256(str(p).encode()).hexdigest()[:8], 16)
        for p in path
    ]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
    """One fine-tune. `task` and `handle` say how to run it; `key` says what it is.

    Attributes:
      handle: what `hub.load` takes.
      module_id: `module_identity(entry)`.
      name: the module's display name (not part of the identity).
      task: a `vtab_eval.tasks.Task`.
      task_id: `task_identity(task)`.
      train_split, eval_split: split names, e.g. "train800" and "val200".
      setting: a `vtab_eval.sweeps` setting dict.
      seed: the fine-tune's seed.
      deterministic: whether TF op determinism is asked for.
    """

    handle: str
    module_id: dict
    name: str
    task: object
    task_id: dict
    train_split: str
    eval_split: str
    setting: dict
    seed: int
    deterministic: bool = True

    def identity(self):
        """Everything that determines the result, as a JSON-able dict."""
        return {
            "format": SPEC_FORMAT,
            "module": self.module_id,
            "task": self.task_id,
            "train_split": self.train_split,
            "eval_split": self.eval_split,
            "setting": self.setting,
            "seed": int(self.seed),
            "deterministic": bool(self.deterministic),
        }

    @property
    def key(self):
        """Hex SHA-256 of `identity()`: equal keys mean the same fine-tune."""
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = content_hash(self.identity())
            object.__setattr__(self, "_key", cached)
        return cached

    @property
    def is_final(self):
        """A fine-tune scored on the test split (its predictions are kept)."""
        return self.eval_split == "test"

    def describe(self):
        """One line for logs: task, module, splits, setting, seed."""
        return (
            f"{self.task.name} / {self.name}: {self.train_split} -> {self.eval_split}, "
            f"setting {self.setting['name']}, seed {self.seed}"
        )


def make_spec(
    entry, task, train_split, eval_split, setting, seed, deterministic=True, task_id=None
):
    """A `Spec` for a pool entry (ModuleEntry or handle) and a task."""
    if isinstance(entry, str):
        handle, name = entry, entry.rstrip("/").split("/")[-1]
    else:
        handle, name = entry.handle, entry.name
    return Spec(
        handle=handle,
        module_id=module_identity(entry),
        name=name,
        task=task,
        task_id=task_id if task_id is not None else task_identity(task),
        train_split=train_split,
        eval_split=eval_split,
        setting=dict(setting),
        seed=int(seed),
        deterministic=bool(deterministic),
    )


def unique(specs):
    """The specs with duplicate keys dropped, in first-seen order."""
    found = {}
    for spec in specs:
        found.setdefault(spec.key, spec)
    return list(found.values())
