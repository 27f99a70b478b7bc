"""Selectors on the experts' cached features (kind "feature"): knn, logme, linear_loo, ncm, gbc.

Each applies an algorithm of `vtab_eval.knn` or `vtab_eval.proxies` to `ctx.features()`, so trying
another one costs no forward pass; every score is higher-is-better.
"""

import numpy as np

from vtab_eval import knn, proxies
from vtab_eval.selectors import base


class FeatureSelector(base.Selector):
    """A selector that applies `per_expert(features [N, d], labels [N])` to each expert: a float
    score, or, with `rows`, bool [N] per-image hits whose mean is the score."""

    kind = "feature"

    def score(self, ctx):
        return self.score_features(*ctx.features())

    def score_features(self, features_by_expert, labels) -> base.Scores:
        """Scores of handle -> float [N, d] features for integer labels [N], in the given order;
        ValueError for bad labels, or naming the expert, for bad features (the algorithm's)."""
        labels = base.validate_task_labels(labels)
        values = {}
        for handle, features in features_by_expert.items():
            try:
                values[handle] = self.per_expert(features, labels)
            except ValueError as err:
                raise ValueError(f"expert {handle!r}: {err}") from err
        if not self.rows:
            return base.Scores(values)
        return base.Scores({h: float(np.mean(hits)) for h, hits in values.items()}, values)


@base.register
class KNN(FeatureSelector):
    """Leave-one-out 1-nearest-neighbour accuracy of the task's labels in the expert's feature
    space (Euclidean): the paper's selector (Puigcerver et al., "Scalable Transfer Learning with
    Expert Models", ICLR 2021). `knn.loo_1nn_correct`; score in [0, 1]."""

    name = "knn"
    rows = True
    per_expert = staticmethod(knn.loo_1nn_correct)


@base.register
class LogME(FeatureSelector):
    """LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021; `proxies.logme`): mean over classes of the maximised log evidence of a
    Bayesian linear model divided by N, in nats per image."""

    name = "logme"
    per_expert = staticmethod(proxies.logme_score)


@base.register
class LinearLOO(FeatureSelector):
    """Exact leave-one-out accuracy of a ridge classifier on one-hot targets (`proxies.ridge_loo`:
    Allen's PRESS identity, Rifkin & Lippert 2007; penalty chosen by leave-one-out squared
    error as scikit-learn's RidgeClassifierCV); score in [0, 1]."""

    name = "linear_loo"
    rows = True
    per_expert = staticmethod(proxies.linear_loo_correct)


@base.register
class NCM(FeatureSelector):
    """Leave-one-out nearest-class-mean accuracy (Mensink et al., "Distance-Based Image
    Classification", TPAMI 2013; `proxies.ncm_loo_correct`); score in [0, 1]."""

    name = "ncm"
    rows = True
    per_expert = staticmethod(proxies.ncm_loo_correct)


@base.register
class GBC(FeatureSelector):
    """Gaussian Bhattacharyya coefficient (Pándy et al., "Transferability Estimation using
    Bhattacharyya Class Separability", CVPR 2022; `proxies.gbc_score`) on the top 64 principal
    components with spherical class Gaussians; in [-C(C-1), 0] for C classes, 0 best."""

    name = "gbc"
    per_expert = staticmethod(proxies.gbc_score)
