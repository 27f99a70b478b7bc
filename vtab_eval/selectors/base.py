"""The selector registry, the one signature every selector has, and the deterministic choice.

A `Selector` subclass registered by name (`@register`) scores `ctx.experts` (`context.Context`);
`select_best` picks the best finite score, ties going to the first expert in collection order.
"""

import dataclasses
import math
import re

import numpy as np

# What each kind of selector reads; `ranking.rank` records `precision` for "feature" selectors
# and `seed` for "none" ones, and refuses to rank with a kind the run plans (`PLANNED`).
KINDS = {
    "feature": "the experts' features of the task's images (cached; ctx.features())",
    "epn": "the expert prediction network's probabilities on the task's images",
    "classifier": "the baseline classifier's upstream-label probabilities and the label priors",
    "none": "no task image",
    "every": "nothing: every candidate is fine-tuned and the best kept (planned by the run)",
    "probe": "a proxy's ranking, then short fine-tunes of the finalists (planned by the run)",
}
PLANNED = ("every", "probe")  # kinds whose selection fine-tunes: the run plans them, rank refuses
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTRY = {}


class SelectorUnavailable(ValueError):
    """The pool lacks what a selector needs (e.g. no EPN for domain_prediction)."""


def require(value, message):
    """`value`, or SelectorUnavailable(message) when it is missing (None or empty)."""
    if not value:
        raise SelectorUnavailable(message)
    return value


@dataclasses.dataclass(frozen=True)
class Scores:
    """A selector's handle -> float score for the experts it scored (the rest are "not_scored"),
    and for selectors with `rows` `correct`, handle -> bool [N] per-image hits (their mean)."""

    scores: dict
    correct: dict | None = None


class Selector:
    """One selection method: a subclass sets `name` (lower case letters, digits and "_"), `kind`
    (one of `KINDS`), `rows` (`score` gives per-image hits, hence intervals, win probabilities and
    the `baseline` fallback) and `higher_is_better`, writes `score`, and is `@register`ed.
    `revision` (None, or a number raised whenever the score's definition changes) is part of the
    identity of a ranking the engine keeps, so rankings kept under another definition are redone."""

    name = None
    kind = "feature"
    rows = False
    higher_is_better = True
    revision = None

    def candidates(self, pool, include_baseline):
        """The entries to score, in collection order (default: `candidates`)."""
        return candidates(pool, include_baseline)

    def score(self, ctx) -> Scores:
        """Scores the experts `ctx.experts`; raises SelectorUnavailable or ValueError."""
        raise NotImplementedError


def register(cls):
    """Class decorator: registers an instance of a `Selector` subclass under `cls.name`;
    ValueError for a malformed or taken name, an unknown kind, or `rows` if lower-is-better."""
    selector = cls()
    if not isinstance(selector.name, str) or not _NAME.match(selector.name):
        raise ValueError(f"selector name must match {_NAME.pattern}; got {selector.name!r}")
    if selector.name in _REGISTRY:
        raise ValueError(f"a selector named {selector.name!r} is already registered")
    if selector.kind not in KINDS:
        raise ValueError(f"selector {selector.name!r}: kind {selector.kind!r} not in {list(KINDS)}")
    if selector.rows and not selector.higher_is_better:
        raise ValueError(f"selector {selector.name!r}: a mean of hits is higher-is-better")
    _REGISTRY[selector.name] = selector
    return cls


def unregister(name):
    """Removes a registered selector (for tests and plugins); KeyError if there is none."""
    del _REGISTRY[name]


def names(kind=None, *, rows=None):
    """Registered names in registration order, of `kind` (a name or several) and `rows` if given."""
    kinds = (kind,) if isinstance(kind, str) else kind
    return tuple(
        n
        for n, s in _REGISTRY.items()
        if (kinds is None or s.kind in kinds) and (rows is None or s.rows == rows)
    )


def get(name) -> Selector:
    """The registered selector `name`; ValueError (one line, listing the names) otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown selection method {name!r}; expected one of {names()}")
    return _REGISTRY[name]


def entry_field(entry, name, default=None):
    """A pool entry's attribute `name` ("role", "kind", ...); `default` for a handle string (a
    feature-vector module) or an entry without it."""
    return default if isinstance(entry, str) else getattr(entry, name, default)


def entry_handle(entry):
    """The handle of a pool entry (a `ModuleEntry` or a handle string)."""
    return entry if isinstance(entry, str) else entry.handle


def entry_name(entry):
    """The display name of a pool entry: its collection name, or a handle's last part."""
    return entry.rstrip("/").split("/")[-1] if isinstance(entry, str) else entry.name


def entry_info(entry):
    """{"handle", "name", "kind"} of a ModuleEntry or a plain handle string."""
    kind = entry_field(entry, "kind", "third_party")
    return {"handle": entry_handle(entry), "name": entry_name(entry), "kind": kind}


def candidates(pool, include_baseline=True):
    """The experts to rank: feature-vector modules, without the baseline B unless asked."""
    return [
        e
        for e in pool
        if entry_field(e, "role", "feature_vector") == "feature_vector"
        and (include_baseline or entry_field(e, "kind") != "baseline")
    ]


def find_baseline(pool):
    """The baseline feature-vector module B of a pool, or None."""
    return next((e for e in candidates(pool) if entry_field(e, "kind") == "baseline"), None)


@dataclasses.dataclass(frozen=True)
class SelectionResult:
    """The outcome of one selection: the selector name, handle -> score in collection order, the
    chosen handle, and whether several experts shared the best score (`tie_note` says which; "")."""

    method: str
    scores: dict
    selected: str
    higher_is_better: bool
    tie_broken: bool
    tie_note: str


def select_best(
    scores: dict[str, float], higher_is_better: bool = True, method: str = "knn"
) -> SelectionResult:
    """Picks the expert with the best score; non-finite scores never win, and ties (exactly equal
    best scores) go to the first in `scores`' order, which callers keep as collection order.

    Raises:
      ValueError: `scores` is empty, holds a non-number or no finite score.
    """
    if not scores:
        raise ValueError(f"no experts to select from: scores for method {method!r} are empty")
    values = {}
    for handle, value in scores.items():
        try:
            values[handle] = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"score for expert {handle!r} is not a number: {value!r}") from err
    finite = {handle: value for handle, value in values.items() if math.isfinite(value)}
    if not finite:
        raise ValueError(f"no expert has a finite {method!r} score: {values}")
    best_value = (max if higher_is_better else min)(finite.values())
    tied = [handle for handle, value in finite.items() if value == best_value]
    note = ""
    if len(tied) > 1:
        note = f"{len(tied)} experts tied at {best_value:.6g}; picked the first in collection "
        note += "order: " + ", ".join(tied)
    return SelectionResult(method, values, tied[0], higher_is_better, len(tied) > 1, note)


def validate_task_labels(labels, num_classes: int | None = None) -> np.ndarray:
    """A task's labels as int64; ValueError for anything but a 1-D vector of integer class ids
    with at least 2 images and 2 classes, all in [0, num_classes) when that is given."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"task labels must be a 1-D vector; got shape {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"task labels must cover at least 2 images; got {array.shape[0]}")
    if array.dtype.kind not in "iuf":  # integers, or floats holding integers
        raise ValueError(f"task labels must be integer class ids; got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise ValueError("task labels must be integer class ids; got non-integer values")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise ValueError(f"task labels must be non-negative; got minimum {array.min()}")
    if num_classes is not None and array.max() >= num_classes:
        raise ValueError(f"task labels must be in [0, {num_classes}); got maximum {array.max()}")
    distinct = np.unique(array)
    if distinct.size < 2:
        raise ValueError(
            f"task labels must contain at least 2 classes; all {array.size} are {distinct[0]}"
        )
    return array
