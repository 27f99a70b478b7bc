"""Selectors on a classifier's outputs (Puigcerver et al. 2021): domain_prediction (the EPN) and
label_matching (the baseline's upstream classifier and the experts' label priors). Both score the
experts one of whose aliases (`Context.by_alias`) the classifier or the priors name, and both
divide the evidence for an expert's domain by that domain's prior (domain prediction: the EPN's
mean over upstream images; label matching: its share of the upstream images), so a domain that holds every image (a hierarchy root) scores 0 and is the generic
fallback, not the pick of every task.
"""

import numpy as np

from vtab_eval.selectors import base

# Probabilities and ratios are clipped to at least this before taking logs (the same floor as the
# EPN's prior, bit_experts.training.epn.LOG_PROB_FLOOR, which this module does not import: TF).
LOG_PROB_FLOOR = 1e-12


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


def _check_share(share, name: str) -> float:
    share = float(share)
    if not 0 < share <= 1:
        raise ValueError(f"the domain share of {name!r} must be in (0, 1]; got {share!r}")
    return share


def domain_shares(ctx, module, handles, what: str) -> dict[str, float]:
    """handle -> the share of the upstream images in the domain of each expert of `handles`: its
    metadata "image_count" (images of its slice) over `module`'s (the EPN's or the baseline
    classifier's, trained on every upstream image). SelectorUnavailable when a count is missing."""
    total = (module.metadata or {}).get("image_count")
    base.require(
        isinstance(total, int) and total > 0,
        f"{what} {module.handle!r} metadata lacks 'image_count' (its upstream images)",
    )
    counts = ctx.image_counts()
    lacking = [h for h in handles if h not in counts]
    base.require(not lacking, f"experts without metadata 'image_count' (slice size): {lacking}")
    return {h: counts[h] / total for h in handles}


@base.register
class DomainPrediction(base.Selector):
    """The expert prediction network's (EPN) evidence that the task's images come from each
    expert's domain (Puigcerver et al., ICLR 2021, "domain prediction"): the mean over the task's
    images of log max(p, LOG_PROB_FLOOR), where p is the EPN's probability that the image is in
    the domain, less the EPN's prior for the domain: the same mean over upstream images (metadata
    "upstream_log_p", measured when the EPN is trained), or, for an EPN published without it,
    log(share), share being the fraction of the EPN's upstream images in the domain.

    Why a prior: the paper picks the expert whose domain the EPN says the task's images come
    from, and says nothing of nested domains. Ours are nested (an image is in every domain on its
    path to the root) and the EPN has one sigmoid per domain, so the raw mean log p favours large
    domains: a root's p is 1 for every image, and it won every task of `world_local:quick`. Less
    the prior, p(x | domain) / p(x) (Bayes) asks how much more likely the images are under the
    domain than upstream images are; a root scores 0, the generic fallback when no domain is more
    likely. The EPN's own prior rather than the share: a briefly trained EPN under-predicts every
    non-root domain on every image, so against the shares the root won every task again, though
    the EPN ranked the task's domain above its upstream average.

    Needs the pool's module of role "epn" with metadata "outputs" (domain names in column order)
    and "upstream_log_p" (one per output) or "image_count" (its upstream images, with each scored
    expert's "image_count").
    """

    name = "domain_prediction"
    kind = "epn"
    revision = 3  # 3: less the EPN's prior; 2: divided by the domain's share; 1: mean log p

    def score(self, ctx):
        need = "domain_prediction needs the EPN module; the pool has none"
        epn = base.require(ctx.module("epn"), need)
        metadata = epn.metadata or {}
        lacks = f"EPN {epn.handle!r} metadata lacks 'outputs' (expert names)"
        outputs = base.require(metadata.get("outputs"), lacks)
        column = ctx.by_alias({name: name for name in outputs})  # handle -> its EPN output
        prior = metadata.get("upstream_log_p")
        if prior is not None:
            if not isinstance(prior, list) or len(prior) != len(outputs):
                raise ValueError(
                    f"EPN {epn.handle!r} metadata 'upstream_log_p' is not one per output"
                )
            by_name = {name: float(p) for name, p in zip(outputs, prior) if name in column.values()}
        else:
            shares = domain_shares(ctx, epn, column, "EPN")
            by_name = {}
            for handle, name in column.items():
                if by_name.setdefault(name, shares[handle]) != shares[handle]:
                    raise ValueError(f"experts of domain {name!r} differ in 'image_count'")
            by_name = {name: float(np.log(_check_share(v, name))) for name, v in by_name.items()}
        probs = ctx.probabilities(epn, "EPN")
        scores = self.score_probabilities(probs, outputs, by_name)
        return base.Scores({handle: scores[name] for handle, name in column.items()})

    @staticmethod
    def score_probabilities(epn_probs, expert_names, log_priors) -> dict[str, float]:
        """name -> score, for each name of `log_priors` (name -> the domain's prior as a log, <= 0:
        the EPN's mean log p over upstream images, or log of the domain's share) in column order,
        from [N, E] EPN probabilities and the E names of their columns. ValueError for
        probabilities not a non-empty 2-D array in [0, 1], names repeated or miscounted, or a
        prior not finite or for no column."""
        probs = _as_probabilities(epn_probs, "epn_probs")
        names = list(expert_names)
        if len(set(names)) != len(names):
            raise ValueError(f"expert_names must be unique; got {names}")
        if probs.shape[1] != len(names):
            raise ValueError(
                f"epn_probs has {probs.shape[1]} expert columns but {len(names)} expert names "
                "were given"
            )
        unknown = sorted(set(log_priors) - set(names))
        if unknown:
            raise ValueError(f"log_priors names {unknown}, which have no EPN column")
        bad = {n: v for n, v in log_priors.items() if not np.isfinite(v) or v > 0}
        if bad:
            raise ValueError(
                f"log_priors must be finite and <= 0 (logs of probabilities); got {bad}"
            )
        mean_log = np.mean(np.log(np.maximum(probs, LOG_PROB_FLOOR)), axis=0)
        return {
            name: float(value - log_priors[name])
            for name, value in zip(names, mean_log)
            if name in log_priors
        }


@base.register
class LabelMatching(base.Selector):
    """How much more of the task's upstream labels, as the baseline's classifier predicts them, an
    expert's domain explains than its share of the upstream images (Puigcerver et al., ICLR 2021,
    "label matching"; in the spirit of Ngiam et al., "Domain Adaptive Transfer Learning with
    Specialist Models", 2018, and Cui et al., "Large Scale Fine-Grained Categorization and
    Domain-Specific Transfer Learning", CVPR 2018). Score (`score_probabilities`): log of
    sum_l t_l * d_l / r_l, t the task's label distribution, d the expert's label prior, r the
    upstream one; for a hierarchy node this is log(t(domain) / share). Higher is better.

    Why not KL(task || expert), which this was until issue 25: a classifier's predictions never
    fall wholly in one domain (on the demo's held-out Greek fonts 47% of the mass lay outside
    `greek`), and KL charges every unit of mass outside the expert's labels log(1/epsilon) of the
    prior's smoothing, so the expert whose labels cover everything (a root) won every task of the
    demo world. Dividing by the upstream label distribution is the prior correction of
    `DomainPrediction`: a root scores 0 and is the fallback, a random control domain (appendix G,
    a prior close to r) about 0 too.

    Needs the pool's module of role "classifier" with metadata "image_count" (its upstream
    images), `ctx.label_priors`, and each scored expert's "image_count".
    """

    name = "label_matching"
    kind = "classifier"
    revision = 2  # 2: log of the prior-divided label mass (issue 25); 1: KL(task || expert)

    def score(self, ctx):
        need = "label_matching needs the baseline's classifier module; the pool has none"
        classifier = base.require(ctx.module("classifier"), need)
        base.require(ctx.label_priors, "label_matching needs the experts' label priors; none given")
        lacking = "no expert of the pool has a label prior"
        priors = base.require(ctx.by_alias(ctx.label_priors), lacking)
        shares = domain_shares(ctx, classifier, priors, "baseline classifier")
        probs = ctx.probabilities(classifier, "baseline classifier")
        return base.Scores(self.score_probabilities(probs, priors, shares))

    @staticmethod
    def score_probabilities(upstream_probs, expert_priors: dict, domain_shares: dict):
        """handle -> log(max(sum_l t_l d_l / r_l, LOG_PROB_FLOOR)) for each handle of
        `expert_priors` (handle -> [L] label counts or frequencies, normalised to d) and
        `domain_shares` (handle -> the domain's share of the upstream images, in (0, 1]).
        t = the mean of the rows of `upstream_probs` ([N, L] upstream-label probabilities; sigmoid
        rows need not sum to 1) normalised. r, the upstream label distribution, is estimated as
        r_l = max over experts of share * d_l: exact for single-label upstream data where some
        expert's domain holds every image of label l (any hierarchy node above it; a root holds
        all); labels no prior has are left out of every sum. ValueError for malformed
        probabilities, no priors, a prior misshapen, negative, non-finite or all 0, or shares not
        matching the priors or outside (0, 1].
        """
        probs = _as_probabilities(upstream_probs, "upstream_probs")
        task = _normalise(probs.mean(axis=0), "the mean of upstream_probs")
        if not expert_priors:
            raise ValueError("expert_priors is empty")
        if set(domain_shares) != set(expert_priors):
            raise ValueError(
                f"domain_shares has {sorted(domain_shares)}; expected the experts of "
                f"expert_priors, {sorted(expert_priors)}"
            )
        label_priors = {}
        for handle, prior in expert_priors.items():
            prior, name = np.asarray(prior, dtype=np.float64), f"label prior of expert {handle!r}"
            if prior.shape != task.shape:
                raise ValueError(
                    f"{name} has shape {prior.shape}; expected ({task.shape[0]},) to match "
                    "upstream_probs"
                )
            if not np.all(np.isfinite(prior)) or prior.min() < 0:
                raise ValueError(f"{name} must be finite and non-negative")
            label_priors[handle] = _normalise(prior, name)
        upstream = np.max(
            [_check_share(domain_shares[h], h) * d for h, d in label_priors.items()], axis=0
        )
        known = upstream > 0
        return {
            handle: float(
                np.log(max(np.sum(task[known] * d[known] / upstream[known]), LOG_PROB_FLOOR))
            )
            for handle, d in label_priors.items()
        }
