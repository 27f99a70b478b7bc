"""Ranking with the proxy bank: intervals, pairwise win probabilities and the baseline fallback."""

import os
import subprocess
import sys

import pytest
import vtab_eval_toys as toys

from vtab_eval import confidence, embed, ranking, selectors, tasks

Entry = toys.Entry


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking_confidence")
    save = lambda name, kind: toys.save_toy_module(str(root / name), kind)
    pool = [
        Entry(save("b", "noise"), "baseline", "baseline", "feature_vector", {}),
        Entry(save("e_noise", "noise"), "expert_a", "full", "feature_vector", {}),
        Entry(save("e_colour", "colour"), "expert_b", "full", "feature_vector", {}),
    ]
    task = tasks.get_task("folder:" + toys.make_colour_folder(str(root / "data"), per_class=10))
    return root, pool, task


@pytest.mark.parametrize("method", ["logme", "linear_loo", "ncm", "gbc"])
def test_every_proxy_ranks_through_rank_and_picks_the_informative_expert(setup, method):
    root, pool, task = setup
    options = {"resolution": 16, "include_baseline": False}
    result = ranking.rank(pool, task, method, options, cache_dir=str(root / "cache"))
    assert result["method"] == method and result["higher_is_better"]
    assert result["selected_name"] == "expert_b"
    assert [e["status"] for e in result["experts"]] == ["ok", "ok"]
    has_rows = selectors.get(method).rows
    for e in result["experts"]:
        assert (e["ci_low"] is not None) == has_rows
        if has_rows:
            assert e["ci_low"] <= e["score"] <= e["ci_high"]
    assert (result["confidence"] is not None) == has_rows
    assert [p["pair"] for p in result["pairwise"]] == (["top_vs_runner_up"] if has_rows else [])
    assert result["fallback"] is None


def _hits(setup, method, handles):
    """The per-image hits of `method` recomputed from the cached features, as a cross-check."""
    root, pool, task = setup
    embedded = embed.embed_pool(
        pool, task, ranking.DEFAULTS["split"], 16, cache_dir=str(root / "cache")
    )
    features = {h: embedded.features[h] for h in handles}
    return selectors.get(method).score_features(features, embedded.labels).correct


def test_knn_reports_intervals_pairs_and_a_fallback_that_does_not_fire(setup):
    root, pool, task = setup
    options = {"resolution": 16, "fallback": "baseline", "fallback_confidence": 0.9}
    result = ranking.rank(pool, task, "knn", options, cache_dir=str(root / "cache"))
    b, noise, colour = (e.handle for e in pool)
    hits = _hits(setup, "knn", [b, noise, colour])
    for info in result["experts"]:
        expected = confidence.accuracy_interval(hits[info["handle"]], seed=0)
        assert (info["ci_low"], info["ci_high"]) == expected
    assert result["confidence"]["level"] == 0.95 and result["confidence"]["seed"] == 0
    pairs = {p["pair"]: p for p in result["pairwise"]}
    assert set(pairs) == {"top_vs_runner_up", "best_expert_vs_baseline"}
    vs_b = pairs["best_expert_vs_baseline"]
    assert (vs_b["a"], vs_b["b"], vs_b["a_name"], vs_b["b_name"]) == (
        colour,
        b,
        "expert_b",
        "baseline",
    )
    win = confidence.paired_win_probability(hits[colour], hits[b])
    assert (vs_b["p_better"], vs_b["p_tie"], vs_b["p_worse"]) == (
        win.p_better,
        win.p_tie,
        win.p_worse,
    )
    assert win.p_better >= 0.9  # colour features: 30/30; noise: near chance
    assert result["fallback"] == {
        "policy": "baseline",
        "confidence": 0.9,
        "baseline": b,
        "best_expert": colour,
        "p_better": win.p_better,
        "proxy_selected": colour,
        "fired": False,
    }
    assert result["selected"] == colour


def test_fallback_fires_when_the_pick_is_no_surer_than_b(setup):
    root, pool, task = setup
    # An expert whose features equal B's: it ties B (and wins the tie by coming first), but
    # never beats it on a resample, so the policy falls back to B.
    twin = Entry(
        toys.save_toy_module(str(root / "b_colour"), "colour"),
        "b",
        "baseline",
        "feature_vector",
        {},
    )
    options = {"resolution": 16, "fallback": "baseline"}
    result = ranking.rank([pool[2], twin], task, "ncm", options, cache_dir=str(root / "cache"))
    assert result["experts"][0]["score"] == result["experts"][1]["score"]
    assert result["fallback"]["p_better"] == 0.0 and result["fallback"]["fired"]
    assert result["fallback"]["proxy_selected"] == pool[2].handle
    assert result["selected"] == twin.handle and result["selected_name"] == "b"
    assert result["pairwise"][0]["p_tie"] == 1.0


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("knn", {"fallback": "baseline", "include_baseline": False}, "include_baseline"),
        ("logme", {"fallback": "baseline"}, "per-image correctness, which 'logme' lacks"),
        ("knn", {"fallback": "expert"}, "unknown fallback"),
        ("knn", {"fallback_confidence": 1.5}, "fallback_confidence"),
        ("knn", {"precision": "float8"}, "precision"),
        ("knn", {"batch_size": 0}, "batch_size"),
        ("knn", {"resolution": -3}, "resolution"),
    ],
)
def test_options_are_checked_before_any_work(setup, method, options, message):
    _, pool, task = setup
    with pytest.raises(ValueError, match=message):
        ranking.rank(pool, task, method, options, cache_dir=None)


def test_fallback_needs_b_in_the_pool(setup):
    _, pool, task = setup
    options = {"resolution": 16, "fallback": "baseline"}
    with pytest.raises(selectors.SelectorUnavailable, match="no baseline"):
        ranking.rank(pool[1:], task, "knn", options, cache_dir=None)


def test_command_line_passes_the_fallback_flags_to_ranking(setup):
    root, pool, _ = setup
    handles = toys.write_handle_list(str(root / "pool.txt"), [e.handle for e in pool])
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vtab_eval.rank",
            f"--collection={handles}",
            "--dataset=folder:" + str(root / "data"),
            f"--output_json={root / 'cli.json'}",
            "--method=gbc",
            "--fallback=baseline",
            "--fallback_confidence=0.8",
            "--include_baseline",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
        env=env,
    )
    assert proc.returncode != 0
    assert "per-image correctness, which 'gbc' lacks" in proc.stderr.strip().splitlines()[-1]
    assert not (root / "cli.json").exists()
