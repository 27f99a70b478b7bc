"""random, baseline and hindsight: the references the proxies are measured against."""

import pytest
import selector_battery as battery
import vtab_eval_toys as toys

from vtab_eval import selectors

random_scores = selectors.get("random").score_names


def test_random_scores_are_seeded_and_pick_every_expert_sometimes():
    names = ["a", "b", "c", "d"]
    assert random_scores(names, seed=3) == random_scores(names, seed=3)
    assert random_scores(names, seed=3) != random_scores(names, seed=4)
    picks = {selectors.select_best(random_scores(names, s)).selected for s in range(60)}
    assert picks == set(names)
    with pytest.raises(ValueError, match="unique"):
        random_scores(["a", "a"], seed=0)
    with pytest.raises(ValueError, match="seed"):
        random_scores(names, seed=-1)


def test_random_reads_the_seed_and_the_experts_of_the_context():
    ctx = battery.FakeContext(seed=11)
    assert selectors.get("random").score(ctx).scores == random_scores(battery.EXPERTS, 11)


def test_baseline_ranks_b_alone_and_needs_it():
    pool = [
        toys.Entry("e", "expert", "full", "feature_vector", {}),
        toys.Entry("b", "baseline", "baseline", "feature_vector", {}),
    ]
    baseline = selectors.get("baseline")
    assert baseline.candidates(pool, False) == [pool[1]]  # B, whatever include_baseline says
    with pytest.raises(selectors.SelectorUnavailable, match="no baseline"):
        baseline.candidates(pool[:1], True)
    ctx = battery.FakeContext()
    ctx.experts = ["b"]
    assert baseline.score(ctx).scores == {"b": 1.0}


def test_hindsight_scores_nothing_and_fine_tunes_every_candidate():
    hindsight = selectors.get("hindsight")
    assert hindsight.kind == "every" and "fine-tuned" in selectors.KINDS["every"]
    with pytest.raises(ValueError, match="scores nothing"):
        hindsight.score(battery.FakeContext())
