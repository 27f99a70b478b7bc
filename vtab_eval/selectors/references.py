"""The references every selector is compared with (Puigcerver et al., ICLR 2021): random (kind
"none"), baseline (kind "none") and hindsight (kind "every"). None looks at the task's images."""

import hashlib

import numpy as np

from vtab_eval.selectors import base


@base.register
class Random(base.Selector):
    """Random selection, the paper's lower reference (Puigcerver et al., ICLR 2021): uniform
    [0, 1) scores, one per expert in collection order, drawn per task from the seed and the task's
    fingerprint; higher wins. The same experts, seed and task give the same pick."""

    name = "random"
    kind = "none"
    revision = 2  # 2: drawn per task (issue 26); 1: one draw, the same pick on every task

    def score(self, ctx):
        return base.Scores(self.score_names(ctx.handles(), ctx.seed, ctx.task.fingerprint()))

    @staticmethod
    def score_names(expert_names, seed, task) -> dict[str, float]:
        """name -> uniform [0, 1) score from `numpy.random.default_rng` seeded with `seed` and the
        SHA-256 of `task` (a task's fingerprint); ValueError for no, repeated names or a bad seed."""
        names = list(expert_names)
        if not names:
            raise ValueError("expert_names is empty")
        if len(set(names)) != len(names):
            raise ValueError(f"expert_names must be unique; got {names}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        words = np.frombuffer(hashlib.sha256(str(task).encode("utf-8")).digest(), np.uint32)
        values = np.random.default_rng([int(seed), *map(int, words)]).random(len(names))
        return {name: float(value) for name, value in zip(names, values)}


@base.register
class Baseline(base.Selector):
    """No selection: always the upstream baseline B, the generic model trained on all upstream
    data (BiT, Kolesnikov et al., ECCV 2020), the "no expert" reference of Puigcerver et al.,
    ICLR 2021. Its only candidate is B, scored 1.0 (SelectorUnavailable if the pool has no B)."""

    name = "baseline"
    kind = "none"

    def candidates(self, pool, include_baseline):
        missing = "the pool has no baseline feature-vector module (kind 'baseline')"
        return [base.require(base.find_baseline(pool), missing)]

    def score(self, ctx):
        return base.Scores({ctx.handles()[0]: 1.0})


@base.register
class Hindsight(base.Selector):
    """Selection in hindsight, the upper bound any selector is measured against (Puigcerver et
    al., ICLR 2021): every candidate (`base.candidates(pool, True)`, B included) is fine-tuned
    with the same protocol and the best kept. It scores nothing (`score` raises ValueError);
    the run plans its fine-tunes (kind "every")."""

    name = "hindsight"
    kind = "every"

    def score(self, ctx):
        raise ValueError("hindsight scores nothing: every candidate is fine-tuned (vtab_eval.run)")
