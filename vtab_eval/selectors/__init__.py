"""Expert selectors, picked by name: `get("knn").score(ctx) -> Scores` (docs/selection.md).

  register, unregister, get, names(kind=None, rows=None)   the registry (`base`)
  Selector, Scores, KINDS, SelectorUnavailable               the one signature (`base`)
  Context                                                    what `score` reads (`context`)
  select_best, SelectionResult, validate_task_labels         the choice and label checks (`base`)
  candidates, find_baseline, entry_info                      the pool's experts and B (`base`)

Built in, in registration order: knn, logme, linear_loo, ncm, gbc (`features`),
domain_prediction, label_matching (`classifiers`), random, baseline, hindsight (`references`).
A selector registered anywhere else (`@selectors.register`) is ranked like these.
"""

# Importing the built-in selectors registers them; knn first, the paper's selector.
from vtab_eval.selectors import features  # noqa: F401

# isort: split
from vtab_eval.selectors import classifiers, references  # noqa: F401
from vtab_eval.selectors.base import (  # noqa: F401
    KINDS,
    Scores,
    SelectionResult,
    Selector,
    SelectorUnavailable,
    candidates,
    entry_info,
    find_baseline,
    get,
    names,
    register,
    select_best,
    unregister,
    validate_task_labels,
)
from vtab_eval.selectors.context import Context  # noqa: F401


def feature_scores(method, features_by_expert, labels):
    """Old API, until vtab_eval.audit moves: (scores, correct) of `get(method).score_features`."""
    found = get(method).score_features(features_by_expert, labels)
    return found.scores, found.correct


def __getattr__(name):
    """Old constants, read from the registry, until vtab_eval.audit moves: FEATURE_METHODS =
    names("feature"), ROW_METHODS = names(rows=True), DEFAULT_FALLBACK_CONFIDENCE."""
    if name == "FEATURE_METHODS":
        return names("feature")
    if name == "ROW_METHODS":
        return names(rows=True)
    if name == "DEFAULT_FALLBACK_CONFIDENCE":
        from vtab_eval import confidence

        return confidence.DEFAULT_FALLBACK_CONFIDENCE
    raise AttributeError(f"module 'vtab_eval.selectors' has no attribute {name!r}")
