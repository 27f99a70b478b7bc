"""Bootstrap intervals and exact paired win probabilities against enumeration and the binomial."""

import itertools

import numpy as np
import pytest
from scipy import stats

from vtab_eval import confidence, selectors


def _enumerated(a, b):
    """(better, tie, worse) fractions over all N^N equally likely paired resamples of the rows."""
    n = len(a)
    index = np.array(list(itertools.product(range(n), repeat=n)))  # [N^N, N]
    diff = a[index].sum(axis=1) - b[index].sum(axis=1)
    return np.mean(diff > 0), np.mean(diff == 0), np.mean(diff < 0)


@pytest.mark.parametrize("seed", range(4))
def test_paired_win_probability_equals_enumerating_every_resample(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(6) < 0.6
    b = rng.random(6) < 0.5
    win = confidence.paired_win_probability(a, b)
    better, tie, worse = _enumerated(a.astype(int), b.astype(int))
    # Sums of at most 7 products of binomial terms: rounding is a few eps.
    assert (win.p_better, win.p_tie, win.p_worse) == pytest.approx((better, tie, worse), abs=1e-12)


def test_paired_win_probability_edge_cases_and_symmetry():
    same = np.array([1, 0, 1, 1, 0])
    assert confidence.paired_win_probability(same, same) == confidence.WinProbability(0, 1, 0)
    assert confidence.paired_win_probability([1, 1, 1], [0, 0, 0]).p_better == 1.0
    rng = np.random.default_rng(9)
    a, b = rng.random(300) < 0.8, rng.random(300) < 0.75
    ab = confidence.paired_win_probability(a, b)
    ba = confidence.paired_win_probability(b, a)
    assert ab.p_better == pytest.approx(ba.p_worse, abs=1e-12)
    assert ab.p_tie == pytest.approx(ba.p_tie, abs=1e-12)
    # Against a Monte Carlo paired bootstrap: within 5 standard errors of 20000 resamples.
    index = rng.integers(0, 300, size=(20000, 300))
    mc = np.mean(a[index].sum(axis=1) > b[index].sum(axis=1))
    assert abs(mc - ab.p_better) < 5 * np.sqrt(ab.p_better * (1 - ab.p_better) / 20000)
    with pytest.raises(ValueError, match="same rows"):
        confidence.paired_win_probability([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        confidence.paired_win_probability([1, 2, 0], [1, 0, 0])


def test_accuracy_interval_is_seeded_and_close_to_the_binomial_percentiles():
    rng = np.random.default_rng(1)
    hits = rng.random(1000) < 0.8
    low, high = confidence.accuracy_interval(hits, seed=3)
    assert (low, high) == confidence.accuracy_interval(hits, seed=3)
    assert low < hits.mean() < high
    # The percentile bootstrap of a mean of N hits is Binomial(N, p) / N; BCa shifts the ends by
    # at most a count or two at N = 1000, and 9999 resamples add about 0.3 counts of noise.
    exact = stats.binom.ppf([0.025, 0.975], 1000, hits.mean()) / 1000
    assert low == pytest.approx(exact[0], abs=3e-3) and high == pytest.approx(exact[1], abs=3e-3)
    narrow = confidence.accuracy_interval(hits, confidence_level=0.5, seed=3)
    assert low < narrow[0] < narrow[1] < high


def test_accuracy_interval_degenerate_and_bad_input():
    assert confidence.accuracy_interval(np.ones(20, dtype=bool)) == (1.0, 1.0)
    assert confidence.accuracy_interval(np.zeros(20)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="confidence_level"):
        confidence.accuracy_interval([1, 0, 1], confidence_level=1.0)
    with pytest.raises(ValueError, match="1-D"):
        confidence.accuracy_interval([[1, 0]])


def _hits(count, total=200, offset=0):
    hits = np.zeros(total, dtype=bool)
    hits[offset : offset + count] = True
    return hits


def _selection(correct):
    return selectors.select_best({h: float(np.mean(c)) for h, c in correct.items()})


def _annotated(correct, baseline="B", **options):
    """The ranking dict `annotate` completes for these hits, with the fallback on."""
    result = {"experts": [{"handle": h, "name": h.upper()} for h in correct]}
    selection = _selection(correct)
    result["selected"], result["selected_name"] = selection.selected, selection.selected.upper()
    options = {"confidence_level": 0.9, "n_resamples": 999, "seed": 4, **options}
    options = {"fallback": "baseline", "fallback_confidence": 0.9, **options}
    confidence.annotate(result, selection, correct, baseline, options)
    return result


def test_fallback_keeps_a_confident_pick_and_falls_back_otherwise():
    baseline = _hits(150)
    clear = _hits(150) | _hits(30, offset=150)  # 30 more images right, none lost
    marginal = _hits(149) | _hits(2, offset=150)  # +2, -1: within noise
    for expert, keeps in [(clear, True), (marginal, False)]:
        correct = {"B": baseline, "e": expert}
        p = confidence.paired_win_probability(expert, baseline).p_better
        assert (p >= 0.9) == keeps
        result = _annotated(correct)
        assert result["fallback"] == {
            "policy": "baseline",
            "confidence": 0.9,
            "baseline": "B",
            "best_expert": "e",
            "p_better": p,
            "proxy_selected": "e",
            "fired": not keeps,
        }
        assert (result["selected"], result["selected_name"]) == (
            ("e", "E") if keeps else ("B", "B")
        )
        # The threshold is the caller's: at p itself the pick stays, just above it B wins.
        assert not _annotated(correct, fallback_confidence=p)["fallback"]["fired"]
        assert _annotated(correct, fallback_confidence=min(1.0, p + 1e-9))["fallback"]["fired"]


def test_fallback_when_the_proxy_picks_b_or_b_alone_or_b_missing():
    correct = {"B": _hits(160), "e": _hits(150)}
    fallback = _annotated(correct)["fallback"]
    assert (fallback["fired"], fallback["best_expert"], fallback["p_better"]) == (False, "e", None)
    alone = _annotated({"B": _hits(160)})
    assert alone["fallback"]["best_expert"] is None and not alone["fallback"]["fired"]
    with pytest.raises(selectors.SelectorUnavailable, match="no baseline module"):
        _annotated(correct, baseline=None)
    with pytest.raises(selectors.SelectorUnavailable, match="B was left out"):
        _annotated(correct, baseline="B0")


def test_annotate_adds_intervals_and_pairs_to_a_ranking():
    correct = {"B": _hits(150), "e": _hits(150) | _hits(30, offset=150), "f": _hits(100)}
    result = _annotated(correct, fallback="none")
    for info in result["experts"]:
        expected = confidence.accuracy_interval(
            correct[info["handle"]], confidence_level=0.9, n_resamples=999, seed=4
        )
        assert (info["ci_low"], info["ci_high"]) == expected
    assert result["confidence"]["level"] == 0.9 and result["confidence"]["seed"] == 4
    assert [(p["pair"], p["a"], p["b"], p["a_name"]) for p in result["pairwise"]] == [
        ("top_vs_runner_up", "e", "B", "E"),
        ("best_expert_vs_baseline", "e", "B", "E"),
    ]
    win = confidence.paired_win_probability(correct["e"], correct["B"])
    assert result["pairwise"][0]["p_better"] == win.p_better and result["fallback"] is None
    no_rows = {"experts": [{"handle": "e", "name": "E"}], "selected": "e"}
    options = dict(confidence_level=0.9, n_resamples=999, seed=4, fallback="none")
    confidence.annotate(no_rows, _selection(correct), None, None, options)
    assert no_rows["experts"][0]["ci_low"] is None and no_rows["pairwise"] == []
    assert no_rows["confidence"] is None and no_rows["fallback"] is None
