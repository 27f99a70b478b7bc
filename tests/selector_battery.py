"""The standard checks every registered selector goes through, on an in-memory task and pool.

`FakeContext` stands in for `vtab_eval.selectors.Context` with arrays: three experts ("noise",
"planted" and "weak" features of 4 classes x 25 images), an EPN and a baseline classifier that
believe in "planted", and label priors. `assert_selector_battery` checks a selector's face (a
probe policy's with `assert_probe_policy`); `assert_ranking_battery` checks the ranking dict
`ranking.rank` builds with it.
"""

import re
import types

import numpy as np
import pytest
import vtab_eval_toys as toys

from vtab_eval import selectors, sweeps

EXPERTS = ("noise", "planted", "weak")
PLANTED = "planted"
UPSTREAM = 100  # upstream images of the fake EPN and classifier


def clustered(rng, labels, separation, dim=16):
    """float32 [N, dim] features whose class means are `separation` apart (noise: 0)."""
    centres = rng.normal(size=(labels.max() + 1, dim)) * separation
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32)


class FakeContext:
    """What a selector may read (`selectors.Context`'s interface), from arrays in memory."""

    def __init__(self, seed=0, num_classes=4, per_class=25, task="fake"):
        rng = np.random.default_rng(seed)
        self.labels = np.repeat(np.arange(num_classes), per_class)
        self.seed, self.record = seed, {}
        self.task = types.SimpleNamespace(name=task, fingerprint=lambda: f"fingerprint of {task}")
        self.experts = list(EXPERTS)
        self.feature_arrays = {
            "noise": rng.normal(size=(len(self.labels), 16)).astype(np.float32),
            "planted": clustered(rng, self.labels, separation=8.0),
            "weak": clustered(rng, self.labels, separation=0.7),
        }
        n = len(self.labels)
        epn = np.full((n, 3), 0.1)
        epn[:, 1] = 0.8  # the EPN believes every image comes from "planted"
        upstream = rng.uniform(0.0, 0.05, size=(n, 5))
        upstream[:, :2] += 0.6  # the task looks like upstream labels 0 and 1
        self.label_priors = {
            "noise": np.array([0.0, 0.0, 1.0, 1.0, 1.0]),
            "planted": np.array([5.0, 5.0, 0.0, 0.0, 0.1]),
            "weak": np.array([1.0, 1.0, 1.0, 1.0, 1.0]),
        }
        # Images of each expert's upstream slice, of the UPSTREAM images the EPN and the
        # classifier were trained on: the domains' shares are 0.5, 0.2 and 0.8.
        self.counts = {"noise": 50, "planted": 20, "weak": 80}
        meta = {"outputs": list(EXPERTS), "output_activation": "sigmoid", "image_count": UPSTREAM}
        self.modules = {
            "epn": toys.Entry("epn", "epn", "epn", "epn", meta),
            "classifier": toys.Entry(
                "clf", "clf", "baseline", "classifier", {"image_count": UPSTREAM}
            ),
        }
        self.outputs = {"epn": epn, "clf": upstream}

    def handles(self):
        return list(self.experts)

    def features(self):
        return dict(self.feature_arrays), self.labels

    def module(self, role):
        return self.modules.get(role)

    def probabilities(self, entry, what):
        self.record["num_images"] = len(self.labels)
        return self.outputs[entry.handle]

    def image_counts(self):
        return {h: self.counts[h] for h in self.experts if h in self.counts}

    def by_alias(self, table):
        return {h: table[h] for h in self.experts if h in table}


def assert_selector_battery(name, ctx, pool):
    """The face every selector shows: registered under its name and kind, a year-dated source in
    its docstring, candidates drawn from the pool, and `score(ctx)` deterministic Scores in
    collection order with per-image hits exactly when it has `rows`. Returns the Scores (None
    for a kind that scores nothing)."""
    selector = selectors.get(name)
    assert selector.name == name and name in selectors.names(selector.kind)
    assert selector.kind in selectors.KINDS
    assert (name in selectors.names(rows=True)) == selector.rows
    doc = type(selector).__doc__ or ""
    assert re.search(r"\b(19|20)\d\d\b", doc), f"{name}: its docstring names no dated source"
    found_candidates = selector.candidates(pool, True)
    assert found_candidates and all(c in pool for c in found_candidates)
    if selector.kind in selectors.PLANNED:
        with pytest.raises(ValueError, match="scores nothing"):
            selector.score(ctx)
        if selector.kind == "probe":
            assert_probe_policy(selector, ctx)
        return None
    found = selector.score(ctx)
    assert isinstance(found, selectors.Scores)
    handles = ctx.handles()
    assert list(found.scores) == [h for h in handles if h in found.scores]
    assert found.scores and all(isinstance(v, float) for v in found.scores.values())
    again = selector.score(ctx)
    assert again.scores == found.scores, f"{name}: the same context gave other scores"
    assert (found.correct is not None) == selector.rows
    for handle, hits in (found.correct or {}).items():
        assert hits.dtype == bool and hits.shape == (len(ctx.labels),)
        assert found.scores[handle] == float(np.mean(hits))
        np.testing.assert_array_equal(hits, again.correct[handle])
    selection = selectors.select_best(found.scores, selector.higher_is_better, name)
    assert selection.selected in found.scores
    return found


def assert_probe_policy(policy, ctx):
    """A probe policy's face: B first, then its proxy's best experts (the planted one first) or
    every expert; a valid probe setting shorter than the sweep's; the best probe wins."""
    scores = {h: 0.0 for h in ctx.handles()}
    if policy.proxy is not None:
        scores = selectors.get(policy.proxy).score(ctx).scores
    finalists = policy.finalists({"b": 1.0, **scores}, "b")
    assert finalists[0] == "b" and len(finalists) == len(set(finalists))
    assert len(finalists) == 1 + min(policy.top_k or len(scores), len(scores))
    assert set(finalists[1:]) <= set(ctx.handles())
    if policy.proxy is not None:
        assert finalists[1] == PLANTED
    sweep = [sweeps.make_setting(0.01, 100, 8, warmup_steps=10, name="s")]
    probe = policy.probe_setting(sweep)
    sweeps.validate_setting(probe)
    assert 1 <= probe["steps"] < 100 and probe["name"] != "s"
    last = {f: float(i == len(finalists) - 1) for i, f in enumerate(finalists)}
    assert policy.choose(last).selected == finalists[-1]


def assert_ranking_battery(result, name):
    """The ranking dict of docs/evaluation.md ("Ranking JSON"), consistent with the selector."""
    selector = selectors.get(name)
    assert result["method"] == name and result["higher_is_better"] == selector.higher_is_better
    if selector.kind != "feature":
        assert result["precision"] == "float32"
    assert (result["forward_passes"] > 0) == (selector.kind != "none")
    assert ("seed" in result) == (selector.kind == "none")
    ok = [e for e in result["experts"] if e["status"] == "ok"]
    assert ok and all(isinstance(e["score"], float) for e in ok)
    picked = next(e for e in result["experts"] if e["handle"] == result["selected"])
    assert picked["name"] == result["selected_name"] and picked["finetunable"]
    if result["fallback"] is None or not result["fallback"]["fired"]:
        best = [e["score"] for e in ok if e["finetunable"]]
        best = max(best) if selector.higher_is_better else min(best)
        assert picked["score"] == best
    for e in result["experts"]:
        assert (e["ci_low"] is not None) == (selector.rows and e["status"] == "ok")
        if e["ci_low"] is not None:
            assert e["ci_low"] <= e["score"] <= e["ci_high"]
    assert (result["confidence"] is not None) == selector.rows
    assert selector.rows or not result["pairwise"]
    for pair in result["pairwise"]:
        total = pair["p_better"] + pair["p_tie"] + pair["p_worse"]
        assert total == pytest.approx(1.0, abs=1e-9)  # three probabilities of one partition
