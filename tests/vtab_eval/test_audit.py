"""The selection audit: its metrics on hand-made tables, and `selection_audit.run` end to end in
quick mode on a tiny bank (toy modules, two folder tasks), checked against the memo by hand."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import vtab_eval_toys as toys

from vtab_eval import audit_metrics as metrics
from vtab_eval import audit_scores, config, engine, files, runner, selection_audit, selectors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Sums of a few accuracies in [0, 1] scaled to points: float error far below this.
TOL = 1e-9


# --- metrics on hand-made tables --------------------------------------------------------------

TABLE = {"B": [0.80, 0.82, 0.84], "e1": [0.90, 0.70, 0.80], "e2": [0.85, 0.85, 0.86]}


def test_regret_hit_and_random_by_hand():
    # Means: B 0.82, e1 0.80, e2 0.8533...; the hindsight best is e2.
    best = (0.85 + 0.85 + 0.86) / 3
    assert metrics.hindsight_best(TABLE) == ["e2"]
    assert metrics.regret(TABLE, "B") == pytest.approx(100 * (best - 0.82), abs=TOL)
    assert metrics.regret(TABLE, "e1") == pytest.approx(100 * (best - 0.80), abs=TOL)
    assert metrics.regret(TABLE, "e2") == 0
    assert metrics.hit(TABLE, "e2") and not metrics.hit(TABLE, "B")
    full, half = metrics.random_regret(TABLE)
    assert full == pytest.approx(100 * (best - 0.82 + best - 0.80) / 3, abs=TOL)
    assert half == pytest.approx(
        np.mean([metrics.split_half_regret(TABLE, c) for c in TABLE]), abs=TOL
    )
    with pytest.raises(ValueError, match="not a candidate"):
        metrics.regret(TABLE, "e3")
    with pytest.raises(ValueError, match="one accuracy per seed"):
        metrics.regret({"B": [0.5], "e": [0.5, 0.6]}, "B")


def test_equal_counts_summed_in_another_order_are_a_tie():
    # The recorded study's digits_noisy task: two experts with 1113 right answers over 3 seeds of
    # 797 test images, whose float64 means differ in the last bit.
    table = {
        "greek": [370 / 797, 375 / 797, 368 / 797],
        "capital": [368 / 797, 367 / 797, 378 / 797],
        "B": [360 / 797, 362 / 797, 361 / 797],
    }
    assert np.mean(table["greek"]) != np.mean(table["capital"])  # the float64 artefact itself
    assert metrics.hindsight_best(table) == ["greek", "capital"]
    assert metrics.regret(table, "capital") == 0.0 == metrics.regret(table, "greek")
    assert metrics.hit(table, "capital")
    assert metrics.regret(table, "B") == pytest.approx(100 * (1113 - 1083) / (3 * 797), abs=TOL)
    # One image apart is not a tie.
    apart = dict(table, capital=[368 / 797, 367 / 797, 377 / 797])
    assert metrics.hindsight_best(apart) == ["greek"] and metrics.regret(apart, "capital") > 0
    # The dataset-agnostic pick breaks the tie by candidate order, as documented.
    picks = metrics.agnostic_picks({"t1": table, "t2": table})
    assert picks == {"t1": "greek", "t2": "greek"}


def test_split_half_regret_by_hand_two_seeds():
    table = {"B": [0.80, 0.84], "e": [0.90, 0.70]}
    # Means 0.82 and 0.80: full regret of B is 0. Choosing on seed 0 gives e, which scores 0.70 on
    # seed 1 against B's 0.84 (-14 points); choosing on seed 1 gives B itself (0).
    assert metrics.regret(table, "B") == 0
    assert metrics.split_half_regret(table, "B") == pytest.approx(-7.0, abs=TOL)
    # For e: seed 0 -> e, scored on seed 1: 0; seed 1 -> B (0.80 on seed 0) vs e's 0.90: -10.
    assert metrics.split_half_regret(table, "e") == pytest.approx(-5.0, abs=TOL)
    assert metrics.split_half_regret({"B": [0.8], "e": [0.9]}, "B") is None


def test_split_half_ties_average_the_tied_candidates():
    # Seed 0 ties a and b; scored on seed 1 they give 0.5 and 0.75: the chosen score is 0.625.
    table = {"a": [0.5, 0.5], "b": [0.5, 0.75], "c": [0.25, 0.25]}
    by_hand = ((0.625 - 0.25) + (0.5 - 0.25)) / 2  # second split: b chosen on seed 1 -> 0.5
    assert metrics.split_half_regret(table, "c") == pytest.approx(100 * by_hand, abs=TOL)


def test_seed_splits_cover_every_balanced_split():
    for n in range(2, 6):
        splits = metrics.seed_splits(n)
        expected = sum(
            len(list(itertools.combinations(range(n), k))) for k in {n // 2, (n + 1) // 2}
        )
        assert len(splits) == expected == len(set(splits))
        for choose, score in splits:
            assert sorted(choose + score) == list(range(n)) and choose and score
    assert metrics.seed_splits(1) == []


def test_split_half_removes_the_winners_curse():
    # Ten candidates with the same true accuracy: the full regret of a fixed pick is biased up (the
    # best of ten noisy means), the split-half regret is not. 400 tables, 4 seeds, sd 1 point.
    rng = np.random.default_rng(0)
    full, half = [], []
    for _ in range(400):
        table = {f"c{i}": list(0.8 + 0.01 * rng.standard_normal(4)) for i in range(10)}
        full.append(metrics.regret(table, "c0"))
        half.append(metrics.split_half_regret(table, "c0"))
    half_se = np.std(half, ddof=1) / np.sqrt(len(half))
    assert abs(np.mean(half)) < 4 * half_se
    # E[max of 10 N(0, 1/4)] is about 0.77 points; with pick c0 the mean full regret is that.
    assert np.mean(full) > 0.5


def test_agnostic_pick_leaves_the_task_out():
    # Exact binary fractions: the means below compare exactly.
    tables = {
        "x": {"B": [0.5], "e1": [0.875], "e2": [0.625]},
        "y": {"B": [0.625], "e1": [0.5], "e2": [0.75]},
        "z": {"B": [0.75], "e1": [0.625], "e2": [0.625]},
    }
    # x: others y, z -> B 0.6875, e1 0.5625, e2 0.6875: a tie of B and e2, the first (B) wins.
    # y: x, z -> B 0.625, e1 0.75, e2 0.625 -> e1.  z: x, y -> B 0.5625, e1 0.6875, e2 0.6875 -> e1.
    assert metrics.agnostic_picks(tables) == {"x": "B", "y": "e1", "z": "e1"}
    assert metrics.agnostic_picks({"x": tables["x"]}) == {"x": None}
    with pytest.raises(ValueError, match="other candidates"):
        metrics.agnostic_picks({"x": tables["x"], "w": {"B": [0.5], "e9": [0.5]}})


def test_weighted_tau_agrees_with_the_order():
    acc = {"a": [0.9], "b": [0.8], "c": [0.7], "d": [0.6]}
    assert metrics.weighted_tau({"a": 4, "b": 3, "c": 2, "d": 1}, acc) == pytest.approx(1.0)
    assert metrics.weighted_tau({"a": 1, "b": 2, "c": 3, "d": 4}, acc) == pytest.approx(-1.0)
    # Lower-is-better scores are turned around.
    lower = metrics.weighted_tau({"a": 1, "b": 2, "c": 3, "d": 4}, acc, higher_is_better=False)
    assert lower == pytest.approx(1.0)
    # A swap at the top costs more than one at the bottom (hyperbolic weights).
    top = metrics.weighted_tau({"a": 3, "b": 4, "c": 2, "d": 1}, acc)
    bottom = metrics.weighted_tau({"a": 4, "b": 3, "c": 1, "d": 2}, acc)
    assert -1 < top < bottom < 1
    assert metrics.weighted_tau({"a": 1, "b": 1}, acc) is None  # constant scores
    assert metrics.weighted_tau({"a": 1, "b": None, "z": 2}, acc) is None  # one usable score


def test_mean_interval():
    assert metrics.mean_interval([]) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    one = metrics.mean_interval([2.0, None])
    assert one["mean"] == 2.0 and one["ci_low"] is None and one["n"] == 1
    same = metrics.mean_interval([1.5, 1.5, 1.5])
    assert same["ci_low"] == same["ci_high"] == 1.5
    values = [0.1, 0.4, 2.0, 0.3, 1.2, 0.0, 0.8, 0.5]
    first = metrics.mean_interval(values, seed=3)
    assert first == metrics.mean_interval(values, seed=3)  # seeded
    assert first["ci_low"] < np.mean(values) < first["ci_high"]
    assert min(values) <= first["ci_low"] and first["ci_high"] <= max(values)


def test_report_cells_say_n_1_where_one_value_has_no_interval():
    from vtab_eval import audit_report

    assert audit_report._interval(metrics.mean_interval([2.0])) == "2.0 (n = 1)"
    two = metrics.mean_interval([1.0, 3.0, 2.5])
    assert audit_report._interval(two) == f"2.2 [{two['ci_low']:.1f}, {two['ci_high']:.1f}]"


# --- end to end -------------------------------------------------------------------------------


def _memo_score(memo_dir, key):
    with open(os.path.join(memo_dir, f"{key}.json"), encoding="utf-8") as f:
        record = json.load(f)
    assert record["key"] == key
    return record["result"]["score"]


def _quiet(message):
    pass


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    pool = toys.save_toy_pool(str(root))
    # 350 images per class: 840 pool images, so val200 (the probes' split) holds 40.
    tasks = [
        "folder:" + toys.make_colour_folder(str(root / f"data{i}"), per_class=350, seed=i)
        for i in range(2)
    ]
    return root, pool, tasks


NAMES = ["data0", "data1"]  # the tasks' names: their folders'


def _config(pool, tasks, out, **audit):
    """The config `python -m vtab_eval.audit --quick --seeds=0,1 --resolution=16
    --selection_resolution=16` makes (`audit`: more keys of the "audit" section)."""
    return config.make(
        collection=pool,
        tasks=tasks,
        output_dir=str(out),
        selection={"resolution": 16},
        finetune={"sweep": "quick", "resolution": 16},
        audit={"quick": True, "seeds": [0, 1], **audit},
    )


def _audit(pool, tasks, out, **audit):
    """What the command does, in this process: run the audit, then write its outputs."""
    from vtab_eval import audit as audit_command

    cfg = _config(pool, tasks, out, **audit)
    executor = runner.make_executor(cfg, _quiet, progress=False)
    result = selection_audit.run(cfg, executor=executor, log=_quiet)
    audit_command.write(str(out), {k: v for k, v in result.items() if k != "trained"})
    return result


@pytest.fixture(scope="module")
def finished(bank):
    root, pool, tasks = bank
    out = root / "out"
    result = _audit(pool, tasks, out)
    return root, pool, tasks, out, result


PROBE_POLICIES = ["knn_probe", "knn_probe_top1", "probe_all"]


def _default_policies():
    proxies = selectors.names(kind="feature")
    rows = [p for p in proxies if selectors.get(p).rows]
    assert {"knn", "ncm", "linear_loo"} <= set(rows) and "logme" not in rows
    assert list(selectors.names(kind="probe")) == PROBE_POLICIES
    fallbacks = [p + "+fallback" for p in rows]
    return [*proxies, *fallbacks, *PROBE_POLICIES, "baseline", "agnostic", "random", "hindsight"]


def test_audit_end_to_end_matches_the_memo_by_hand(finished):
    root, _, tasks, out, result = finished
    assert result["trained"] == 2 * 3 * 2 * 2  # (fine-tune, probe) x candidates x seeds x tasks
    written = json.loads((out / "audit.json").read_text())
    assert written == {k: v for k, v in result.items() if k != "trained"}
    assert written["candidates"] == ["baseline", "expert_noise", "expert_colour"]
    assert written["proxies"] == list(
        selectors.names(kind="feature")
    )  # every feature proxy by default
    assert written["policies"] == _default_policies()
    memo = str(out / "finetunes")
    means = {}
    for task in NAMES:
        info = written["tasks"][task]
        acc = {}
        for name, row in info["accuracy"].items():
            acc[name] = [_memo_score(memo, k) for k in row["spec_keys"]]
            assert acc[name] == row["seeds"] and len(set(row["spec_keys"])) == 2
        mean = {c: sum(v) / len(v) for c, v in acc.items()}
        means[task] = mean
        best = max(mean.values())
        pol = info["policies"]
        # Always-B: hindsight best minus B's mean, in points.
        assert pol["baseline"]["regret"] == pytest.approx(100 * (best - mean["baseline"]), abs=TOL)
        # Each proxy's regret is that of the expert its ranking picked.
        for proxy in written["proxies"]:
            pick = info["proxies"][proxy]["pick"]
            assert pol[proxy]["pick"] == pick
            assert pol[proxy]["regret"] == pytest.approx(100 * (best - mean[pick]), abs=TOL)
        # Random: the mean over candidates of their regret.
        expected = sum(100 * (best - m) for m in mean.values()) / len(mean)
        assert pol["random"]["regret"] == pytest.approx(expected, abs=TOL)
        # Split-half with 2 seeds: choose on one, score on the other, both ways, ties averaged.
        halves = []
        for c, s in ((0, 1), (1, 0)):
            top = max(v[c] for v in acc.values())
            chosen = [v[s] for v in acc.values() if v[c] == top]
            halves.append(sum(chosen) / len(chosen) - acc["baseline"][s])
        assert pol["baseline"]["split_half_regret"] == pytest.approx(50 * sum(halves), abs=TOL)
        # The fallback keeps the proxy's pick exactly when its p_better reaches the confidence.
        fb = info["proxies"]["knn"]["fallback"]
        assert fb["fired"] == (fb["p_better"] is not None and fb["p_better"] < 0.9)
        assert pol["knn+fallback"]["pick"] == ("baseline" if fb["fired"] else fb["best_expert"])
        assert info["proxies"]["knn"]["pick"] == "expert_colour"  # the informative features
        # Seed sd in points, from the memo.
        sd = np.std([100 * a for a in acc["baseline"]], ddof=1)
        assert info["accuracy"]["baseline"]["sd"] == pytest.approx(sd, abs=TOL)
        assert info["forward"]["computed"] + info["forward"]["cached"] == 3
        _check_probe_policies(info, acc, memo, written["candidates"])
    # Agnostic: the best mean on the other task.
    for task, other in (NAMES, NAMES[::-1]):
        order = written["candidates"]
        top = max(means[other].values())
        pick = next(c for c in order if means[other][c] == top)
        assert written["tasks"][task]["policies"]["agnostic"]["pick"] == pick
    # Aggregates: means over the two tasks.
    agg = written["aggregate"]["baseline"]["regret"]
    by_task = [written["tasks"][t]["policies"]["baseline"]["regret"] for t in NAMES]
    assert agg["mean"] == pytest.approx(sum(by_task) / 2, abs=TOL) and agg["n"] == 2
    # Paired differences and the mean cost over tasks.
    for policy in PROBE_POLICIES:
        item, rows = written["aggregate"][policy], [written["tasks"][t]["policies"] for t in NAMES]
        for other in ("baseline", "agnostic"):
            diff = [r[policy]["regret"] - r[other]["regret"] for r in rows]
            assert item["regret_minus"][other]["mean"] == pytest.approx(sum(diff) / 2, abs=TOL)
        steps = [r[policy]["cost"]["finetune_steps"] for r in rows]
        assert item["cost"]["finetune_steps"] == sum(steps) / 2
    # Outputs: the report and one plot per task.
    text = (out / "audit.md").read_text()
    assert "## Aggregate over tasks" in text and "| knn+fallback |" in text
    cost_rows = [
        line.split(" | ")[0][2:]
        for line in text.split("## Regret against cost")[1].split("\n\n")[1].splitlines()[2:]
    ]
    costs = [written["aggregate"][p]["cost"]["fine_tunes"] for p in cost_rows]
    assert costs == sorted(costs) and set(cost_rows) == set(_default_policies())
    assert (out / "plots" / "regret_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for task in NAMES:
        png = out / "plots" / f"{files.task_slug(task)}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{png.name}" in text


def _check_probe_policies(info, acc, memo, candidates):
    """Each probe policy's pick per seed is its best finalist's probe of that seed (from the
    memo), its regret that of those picks, its cost its finalists' probe steps."""
    probes = info["probes"]
    assert probes["setting"]["steps"] == 1 and probes["setting"]["name"].endswith("_probe1")
    val = {c: [_memo_score(memo, k) for k in keys] for c, keys in probes["spec_keys"].items()}
    assert val == probes["scores"] and set(val) == set(acc)
    knn = info["proxies"]["knn"]["scores"]
    experts = sorted(candidates[1:], key=lambda c: -knn[c])  # ties in collection order
    finalists = {
        "knn_probe": ["baseline", *experts[:2]],
        "knn_probe_top1": ["baseline", experts[0]],
        "probe_all": candidates,
    }
    best = max(sum(v) / len(v) for v in acc.values())
    passes = info["forward"]["passes"]
    assert passes == 840 * 3  # train800val200 x candidates
    for policy, chosen in finalists.items():
        row = info["policies"][policy]
        picks = [max(chosen, key=lambda c: (val[c][s], -chosen.index(c))) for s in range(2)]
        assert row["finalists"] == chosen and row["pick"] == picks
        mean = sum(acc[p][s] for s, p in enumerate(picks)) / 2
        assert row["regret"] == pytest.approx(max(0.0, 100 * (best - mean)), abs=TOL)
        forward = 0 if policy == "probe_all" else passes
        assert row["cost"]["forward_passes"] == forward
        assert row["cost"]["finetune_steps"] == len(chosen)  # one step each
        assert row["cost"]["fine_tunes"] == pytest.approx((forward + 3 * 16 * len(chosen)) / 192)
    assert info["policies"]["knn"]["cost"]["fine_tunes"] == pytest.approx(passes / 192)
    assert info["policies"]["baseline"]["cost"]["fine_tunes"] == 0
    assert info["policies"]["hindsight"]["cost"]["fine_tunes"] == 3  # each candidate, 4 steps
    assert info["policies"]["hindsight"]["regret"] == 0


def _count_finetunes(monkeypatch):
    from vtab_eval import finetune

    calls = []
    real = finetune.finetune_and_evaluate

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_and_evaluate", counting)
    return calls


def test_rescore_reproduces_the_audit_and_follows_changed_results(finished):
    *_, out, _ = finished
    written = json.loads((out / "audit.json").read_text())
    again = audit_scores.rescore(written)
    assert again["aggregate"] == written["aggregate"]
    assert {t: v["policies"] for t, v in again["tasks"].items()} == {
        t: v["policies"] for t, v in written["tasks"].items()
    }
    # Make B the best candidate of the first task: its hindsight best and B's regret follow.
    task = next(iter(written["tasks"]))
    changed = json.loads(json.dumps(written))
    for name, row in changed["tasks"][task]["accuracy"].items():
        row["seeds"] = [1.0, 1.0] if name == "baseline" else [0.5, 0.5]
    rescored = audit_scores.rescore(changed)
    assert rescored["tasks"][task]["hindsight_best"] == ["baseline"]
    assert rescored["tasks"][task]["policies"]["baseline"]["regret"] == 0.0
    assert written == json.loads((out / "audit.json").read_text())  # input left alone
    with pytest.raises(ValueError, match="not an audit.json"):
        audit_scores.rescore({"format": -1})
    # An audit recorded before probes and costs (docs/results/): scored again, hindsight added,
    # no cost anywhere rather than a partial one.
    old = json.loads(json.dumps(written))
    del old["probe_policies"]
    old["policies"] = [p for p in old["policies"] if p not in [*PROBE_POLICIES, "hindsight"]]
    for info in old["tasks"].values():
        del info["forward"]["passes"], info["probes"], info["hindsight_cost"]
    from_old = audit_scores.rescore(old)
    assert from_old["policies"] == [*old["policies"], "hindsight"]
    assert all(item["cost"] is None for item in from_old["aggregate"].values())
    assert from_old["aggregate"]["knn"]["regret"] == written["aggregate"]["knn"]["regret"]


def test_rerun_trains_nothing_and_resumes_a_kill(finished, monkeypatch):
    from bit_experts.training import slice_eval

    _, pool, tasks, out, first = finished
    calls = _count_finetunes(monkeypatch)
    quality = {
        "expert_colour": {
            "slice": "colour",
            "kind": "full",
            "n": 10,
            "num_labels": 2,
            "expert_acc": 0.9,
            "baseline_acc": 0.6,
            "delta": 0.3,
        }
    }
    monkeypatch.setattr(slice_eval, "expert_quality", lambda workdir: quality)
    again = _audit(pool, tasks, out, upstream_dir=str(out))
    assert calls == [] and again["trained"] == 0
    assert again["aggregate"]["knn"]["regret"] == first["aggregate"]["knn"]["regret"]
    assert again["expert_quality"] == quality
    assert "| expert_colour | colour | 10 | 90.0 | 60.0 | +30.0 |" in (out / "audit.md").read_text()
    # As if killed before one fine-tune was recorded: only that one runs again.
    key = first["tasks"][NAMES[1]]["accuracy"]["expert_colour"]["spec_keys"][1]
    (out / "finetunes" / f"{key}.json").unlink()
    probe = first["tasks"][NAMES[0]]["probes"]["spec_keys"]["baseline"][0]
    (out / "finetunes" / f"{probe}.json").unlink()
    resumed = _audit(pool, tasks, out)
    assert resumed["trained"] == 2 and calls == [str(out.parent / n) for n in ("colour", "b")]
    # Deterministic fine-tunes: the redone one gives the same score, so the same table.
    scores = lambda audit, t: {c: v["seeds"] for c, v in audit["tasks"][t]["accuracy"].items()}
    for t in NAMES:
        assert scores(resumed, t) == scores(first, t)
        assert resumed["tasks"][t]["probes"]["scores"] == first["tasks"][t]["probes"]["scores"]


def test_shares_fine_tunes_with_run_hindsight(finished, monkeypatch):
    """`vtab_eval.run --selectors=hindsight,knn_probe --seed=s` on the same output trains nothing
    new, and the run's probe policy picks what the audit scored for seed s."""
    _, pool, tasks, out, _ = finished
    calls = _count_finetunes(monkeypatch)
    cfg = config.make(
        collection=pool,
        tasks=tasks[:1],
        output_dir=str(out),
        seed=1,
        selection={"selectors": ["hindsight", "knn_probe"], "resolution": 16},
        finetune={"sweep": "quick", "resolution": 16},
    )
    results = engine.evaluate(
        cfg, executor=runner.make_executor(cfg, _quiet, progress=False), log=_quiet
    )
    assert calls == []
    audit = json.loads((out / "audit.json").read_text())
    seed_1 = {row["spec_keys"][1] for row in audit["tasks"][NAMES[0]]["accuracy"].values()}
    assert set(results["hindsight"][NAMES[0]]["spec_keys"]) == seed_1
    probe = results["knn_probe"][NAMES[0]]["selections"][0]["selection"]
    assert probe["selected_name"] == audit["tasks"][NAMES[0]]["policies"]["knn_probe"]["pick"][1]


def test_bad_input_is_one_line_and_writes_nothing(bank, tmp_path):
    _, pool, tasks = bank
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"--seeds=\[0\]: the audit needs at least 3 seeds"):
        _audit(pool, tasks, out, quick=False, seeds=[0])
    with pytest.raises(ValueError, match=r"--proxies=\['oracle'\]"):
        _audit(pool, tasks, out, proxies=["oracle"])
    with pytest.raises(ValueError, match="--reference='ncm'"):
        _audit(pool, tasks, out, proxies=["knn"], reference="ncm")
    with pytest.raises(ValueError, match="repeated"):
        _audit(pool, tasks, out, seeds=[1, 1])
    with pytest.raises(ValueError, match=r"--probe_policies=\['knn'\]: expected some of"):
        _audit(pool, tasks, out, probe_policies=["knn"])
    with pytest.raises(ValueError, match="knn_probe needs its proxy 'knn' in --proxies"):
        _audit(pool, tasks, out, proxies=["ncm"], reference="ncm", probe_policies=["knn_probe"])
    small = ["folder:" + toys.make_colour_folder(str(tmp_path / "small"), per_class=8)]
    with pytest.raises(ValueError, match="too small for split 'val200'"):
        _audit(pool, small, out)
    _audit_without_probes = _config(pool, small, out, probe_policies=[])
    assert selection_audit.check_arguments(_audit_without_probes) == []
    no_b = toys.write_handle_list(str(tmp_path / "no_b.txt"), [str(bank[0] / "colour")])
    with pytest.raises(ValueError, match="no baseline B"):
        _audit(no_b, tasks, out)
    assert not out.exists()


def test_command_line(finished):
    """The entry point: flags to the config and one call, everything read from the memo and cache."""
    _, pool, tasks, out, _ = finished
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    cli_out = out.parent / "cli_out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vtab_eval.audit",
            f"--collection={pool}",
            f"--tasks={','.join(tasks)}",
            f"--output_dir={cli_out}",
            f"--memo_dir={out / 'finetunes'}",
            f"--cache_dir={out / 'feature_cache'}",
            "--quick",
            "--seeds=0,1",
            "--proxies=knn,ncm",
            "--resolution=16",
            "--selection_resolution=16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# Selection audit" in proc.stdout and "test score" not in proc.stdout  # no training
    written = json.loads((cli_out / "audit.json").read_text())
    assert written["policies"] == [
        "knn",
        "ncm",
        "knn+fallback",
        "ncm+fallback",
        *PROBE_POLICIES,
        "baseline",
        "agnostic",
        "random",
        "hindsight",
    ]
    assert written["command"].startswith("python -m vtab_eval.audit --collection=")


def test_rescore_command_rewrites_the_outputs_from_the_stored_results(finished, tmp_path):
    import shutil

    *_, out, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out / "plots", copy / "plots")
    stored = json.loads((out / "audit.json").read_text())
    task = next(iter(stored["tasks"]))
    for name, row in stored["tasks"][task]["accuracy"].items():
        row["seeds"] = [1.0, 1.0] if name == "baseline" else [0.5, 0.5]
    (copy / "audit.json").write_text(json.dumps(stored))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "vtab_eval.audit", "--rescore"]
    proc = subprocess.run(
        [*cmd, f"--output_dir={copy}"], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rewritten = json.loads((copy / "audit.json").read_text())
    assert rewritten["tasks"][task]["hindsight_best"] == ["baseline"]
    assert "# Selection audit" in proc.stdout and (copy / "audit.md").read_text() in proc.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run(
        [*cmd, f"--output_dir={empty}"], capture_output=True, text=True, timeout=300, env=env
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        f"vtab_eval.audit: error: {str(empty / 'audit.json')!r} is missing: --rescore needs a "
        "finished audit"
    )
    assert sorted(p.name for p in empty.iterdir()) == []
