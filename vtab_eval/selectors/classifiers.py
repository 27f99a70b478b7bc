"""Selectors on a classifier's outputs (Puigcerver et al. 2021): domain_prediction (the EPN) and
label_matching (the baseline's upstream classifier and the experts' label priors). Both score the
experts one of whose aliases (`Context.by_alias`) the classifier or the priors name.
"""

import numpy as np

from vtab_eval.selectors import base

# Probabilities are clipped to at least this before taking logs (domain prediction).
LOG_PROB_FLOOR = 1e-12
# Added to every upstream label's prior before renormalising (label matching), so an expert
# whose prior is 0 on a label the task shows gets a large but finite divergence.
PRIOR_EPSILON = 1e-6


def _as_probabilities(array, name: str) -> np.ndarray:
    """float64 2-D array with finite values in [0, 1], or ValueError naming it."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
        raise ValueError(f"{name} must hold finite probabilities in [0, 1]")
    return array


def _normalise(distribution: np.ndarray, name: str) -> np.ndarray:
    total = distribution.sum()
    if total <= 0:
        raise ValueError(f"{name} sums to 0; it must put mass on at least one label")
    return distribution / total


@base.register
class DomainPrediction(base.Selector):
    """The expert prediction network's (EPN) belief that the task's images come from each
    expert's domain (Puigcerver et al., ICLR 2021, "domain prediction"): the mean over images of
    log(max(p, LOG_PROB_FLOOR)), the log of the geometric-mean probability (nats, <= 0). Needs
    the pool's module of role "epn" with metadata "outputs" (expert names in column order)."""

    name = "domain_prediction"
    kind = "epn"

    def score(self, ctx):
        need = "domain_prediction needs the EPN module; the pool has none"
        epn = base.require(ctx.module("epn"), need)
        lacks = f"EPN {epn.handle!r} metadata lacks 'outputs' (expert names)"
        outputs = base.require((epn.metadata or {}).get("outputs"), lacks)
        probs = ctx.probabilities(epn, "EPN")
        return base.Scores(ctx.by_alias(self.score_probabilities(probs, outputs)))

    @staticmethod
    def score_probabilities(epn_probs, expert_names) -> dict[str, float]:
        """name -> score from [N, E] EPN probabilities and the E names in column order; ValueError
        for probabilities not a non-empty 2-D array in [0, 1], or names repeated or miscounted."""
        probs = _as_probabilities(epn_probs, "epn_probs")
        names = list(expert_names)
        if len(set(names)) != len(names):
            raise ValueError(f"expert_names must be unique; got {names}")
        if probs.shape[1] != len(names):
            raise ValueError(
                f"epn_probs has {probs.shape[1]} expert columns but {len(names)} expert names "
                "were given"
            )
        mean_log = np.mean(np.log(np.maximum(probs, LOG_PROB_FLOOR)), axis=0)
        return {name: float(value) for name, value in zip(names, mean_log)}


@base.register
class LabelMatching(base.Selector):
    """How well each expert's upstream-label prior matches the upstream labels the baseline's
    classifier predicts on the task (Puigcerver et al., ICLR 2021, "label matching"; in the
    spirit of Ngiam et al., "Domain Adaptive Transfer Learning with Specialist Models", 2018,
    and Cui et al., "Large Scale Fine-Grained Categorization and Domain-Specific Transfer
    Learning", CVPR 2018). Needs the pool's module of role "classifier" and `ctx.label_priors`.
    Score: KL(task || expert) in nats (`score_probabilities`); lower is better.
    """

    name = "label_matching"
    kind = "classifier"
    higher_is_better = False

    def score(self, ctx):
        need = "label_matching needs the baseline's classifier module; the pool has none"
        classifier = base.require(ctx.module("classifier"), need)
        base.require(ctx.label_priors, "label_matching needs the experts' label priors; none given")
        probs = ctx.probabilities(classifier, "baseline classifier")
        lacking = "no expert of the pool has a label prior"
        priors = base.require(ctx.by_alias(ctx.label_priors), lacking)
        return base.Scores(self.score_probabilities(probs, priors))

    @staticmethod
    def score_probabilities(upstream_probs, expert_priors: dict) -> dict[str, float]:
        """handle -> KL(task || expert) in nats: task = the mean of the rows of `upstream_probs`
        ([N, L] upstream-label probabilities; sigmoid rows need not sum to 1) normalised, expert =
        (prior / sum(prior) + PRIOR_EPSILON) renormalised, from `expert_priors` (handle -> [L]
        label counts or frequencies). Labels the task never predicts contribute 0. ValueError for
        malformed probabilities, no priors, or a prior misshapen, negative, non-finite or all 0.
        """
        probs = _as_probabilities(upstream_probs, "upstream_probs")
        task = _normalise(probs.mean(axis=0), "the mean of upstream_probs")
        if not expert_priors:
            raise ValueError("expert_priors is empty")
        support = task > 0
        scores = {}
        for handle, prior in expert_priors.items():
            prior, name = np.asarray(prior, dtype=np.float64), f"label prior of expert {handle!r}"
            if prior.shape != task.shape:
                raise ValueError(
                    f"{name} has shape {prior.shape}; expected ({task.shape[0]},) to match "
                    "upstream_probs"
                )
            if not np.all(np.isfinite(prior)) or prior.min() < 0:
                raise ValueError(f"{name} must be finite and non-negative")
            expert = _normalise(prior, name) + PRIOR_EPSILON
            expert /= expert.sum()
            kl = np.sum(task[support] * (np.log(task[support]) - np.log(expert[support])))
            scores[handle] = float(kl)
        return scores
