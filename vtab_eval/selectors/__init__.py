"""Expert selectors, picked by name: `get("knn").score(ctx) -> Scores` (docs/selection.md).

The registry and the one signature live in `base`, what `score` reads in `context`. Built in, in
registration order: knn, logme, linear_loo, ncm, gbc (`features`), domain_prediction,
label_matching (`classifiers`), random, baseline, hindsight (`references`), knn_probe,
knn_probe_top1, probe_all (`policies`); a selector registered anywhere else (`@selectors.register`)
is ranked like these.
"""

# Importing the built-in selectors registers them; knn first, the paper's selector.
from vtab_eval.selectors import features  # noqa: F401

# isort: split
from vtab_eval.selectors import classifiers, references  # noqa: F401

# isort: split
from vtab_eval.selectors import policies  # noqa: F401
from vtab_eval.selectors.base import (  # noqa: F401
    KINDS,
    PLANNED,
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
