"""Policies that spend a fine-tuning budget on the choice (kind "probe"): a proxy names finalists,
short fine-tunes decide.

A policy says which candidates are finalists, the probe setting and how the probes decide; the run
plans the probes like hindsight's fine-tunes (`engine.select`, `runner.run_tracks`): content-keyed
specs on the tuning splits (`train800 -> val200`), recorded once in the memo, on Ray with
`--executor=ray`. Cost: the proxy's forward passes plus the probes' steps (docs/selection.md).
"""

import math

from vtab_eval.selectors import base

PROBE_FRACTION = 0.25  # of the steps (and warm-up) of the sweep's first setting


class ProbePolicy(base.Selector):
    """Finalists: B, then the `top_k` best experts by the selector `proxy` (`proxy` None: every
    expert, in collection order). Each finalist is fine-tuned for `PROBE_FRACTION` of the sweep's
    first setting (`probe_setting`) on the tuning splits; the best validation score wins, ties going
    to the first finalist (B first). `score` raises ValueError: the run plans the probes."""

    kind = "probe"
    proxy = "knn"
    top_k = 2
    fraction = PROBE_FRACTION

    def score(self, ctx):
        raise ValueError(
            f"{self.name} scores nothing itself: its finalists are fine-tuned (vtab_eval.run)"
        )

    def finalists(self, scores, baseline, higher_is_better=True):
        """The finalists, in order: `baseline` (None: none), then the experts of `scores` (id ->
        the proxy's score, collection order; `baseline` and non-finite scores left out) best
        first (ties in collection order), `top_k` of them; with `proxy` None every one, in order."""
        experts = [h for h in scores if h != baseline and math.isfinite(scores[h])]
        if self.proxy is not None:
            experts = sorted(experts, key=scores.get, reverse=higher_is_better)  # stable on ties
        return ([] if baseline is None else [baseline]) + experts[: self.top_k]

    def probe_setting(self, sweep):
        """The sweep's first setting with `fraction` of its steps (rounded up) and of its warm-up
        (rounded down, below the steps), named `<name>_probe<steps>`."""
        first = sweep[0]
        steps = max(1, math.ceil(first["steps"] * self.fraction))
        warmup = min(int(first.get("warmup_steps", 0) * self.fraction), steps - 1)
        return dict(first, steps=steps, warmup_steps=warmup, name=f"{first['name']}_probe{steps}")

    def choose(self, probe_scores):
        """The `base.SelectionResult` of the finalists' validation scores (id -> score, finalist
        order): the best wins, ties going to the first."""
        return base.select_best(probe_scores, True, self.name)


@base.register
class KNNProbe(ProbePolicy):
    """B and kNN's two best experts as finalists, decided by a probe fine-tune of each: the
    hybrid of Renggli et al. ("Which Model to Transfer? Finding the Needle in the Growing
    Haystack", CVPR 2022), who found task-agnostic and task-aware search alone to have high
    regret on VTAB and the best generic model plus the top kNN models to do better."""

    name = "knn_probe"


@base.register
class KNNProbeTop1(KNNProbe):
    """`knn_probe` with one expert: B against kNN's pick, decided by a probe fine-tune of each
    (Renggli et al., CVPR 2022)."""

    name = "knn_probe_top1"
    top_k = 1


@base.register
class ProbeAll(ProbePolicy):
    """Every candidate probed, no proxy: the first rung of successive halving (Jamieson &
    Talwalkar, AISTATS 2016) kept at one rung, the most a probe can spend."""

    name = "probe_all"
    proxy = None
    top_k = None
