"""random, baseline and hindsight: the references the proxies are measured against."""

import pytest
import selector_battery as battery
import vtab_eval_toys as toys

from vtab_eval import selectors

random_scores = selectors.get("random").score_names


def test_random_scores_are_seeded_per_task_and_pick_every_expert_sometimes():
    names = ["a", "b", "c", "d"]
    assert random_scores(names, 3, "t") == random_scores(names, 3, "t")
    assert random_scores(names, 3, "t") != random_scores(names, 4, "t")
    assert random_scores(names, 3, "t") != random_scores(names, 3, "u")
    picks = {selectors.select_best(random_scores(names, s, "t")).selected for s in range(60)}
    assert picks == set(names)
    # One seed, many tasks: the picks differ between tasks (issue 26: one draw gave one pick).
    picks = {selectors.select_best(random_scores(names, 0, f"t{i}")).selected for i in range(60)}
    assert picks == set(names)
    with pytest.raises(ValueError, match="unique"):
        random_scores(["a", "a"], 0, "t")
    with pytest.raises(ValueError, match="seed"):
        random_scores(names, -1, "t")


def test_random_reads_the_seed_the_experts_and_the_task_of_the_context():
    ctx = battery.FakeContext(seed=11, task="cifar")
    expected = random_scores(battery.EXPERTS, 11, "fingerprint of cifar")
    assert selectors.get("random").score(ctx).scores == expected
    other = selectors.get("random").score(battery.FakeContext(seed=11, task="dtd")).scores
    assert other != expected


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
