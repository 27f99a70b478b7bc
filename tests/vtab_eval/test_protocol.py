"""The VTAB-1k protocol's rules (tuning, retraining, trials, seeds, the suite's aggregate), run
through the one runner (`runner.run_tracks`) over a temporary memo with a fake fine-tune."""

import json
import types

import numpy as np
import pytest

from vtab_eval import config, plan, protocol, results, runner, sweeps

TASK = types.SimpleNamespace(
    name="toy", num_classes=3, metric="accuracy", suite="vtab1k", group=None
)
SWEEP = [sweeps.make_setting(lr, 5, 8, resolution=16) for lr in (0.1, 0.01, 0.001)]
VAL = {SWEEP[0]["name"]: 0.5, SWEEP[1]["name"]: 0.8, SWEEP[2]["name"]: 0.8}


class FakeFinetune:
    """Records calls; val scores from VAL, test score from the seed; can die after N calls."""

    def __init__(self, die_after=None):
        self.calls = []
        self.die_after = die_after

    def __call__(self, handle, task, train_split, eval_split, setting, **kwargs):
        if self.die_after is not None and len(self.calls) >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls.append((handle, train_split, eval_split, setting["name"], kwargs["seed"]))
        score = VAL[setting["name"]] if eval_split in ("val200", "val") else kwargs["seed"] % 97
        return {"score": score, "setting": setting["name"], "seed": kwargs["seed"]}


def select(index):
    return f"expert{index % 2}", {"selected_name": f"expert{index % 2}"}


def make_track(
    task,
    sweep,
    *,
    num_selections=1,
    num_retrains=1,
    scheme="vtab1k",
    search="per_selection",
    seed=0,
    aggregate=None,
    method="knn",
):
    job = plan.Job(
        task, scheme, search, list(sweep), task_id={"name": task.name}, aggregate=aggregate
    )
    entries = [select(i) for i in range(num_selections)]
    return plan.Track(job, method, entries, seed=seed, num_retrains=num_retrains)


def run_one_track(root, task, sweep, finetune_fn, **options):
    """One track through `runner.run_tracks` over the memo root/memo; returns its result file's
    dict (`results.write_result`, written under root/out)."""
    track = make_track(task, sweep, **options)
    executor = runner.Executor(
        runner.Memo(str(root / "memo")), finetune_fn=finetune_fn, log=None, progress=False
    )
    runner.run_tracks([track], executor)
    settings = {"seed": track.seed, "deterministic": True}
    pool = sorted({entry for entry, _ in track.entries})
    return results.write_result(
        [track], executor.memo, settings, pool, str(root / "out"), log=print
    )


def test_tunes_on_val_then_retrains_on_train800val200(tmp_path):
    fake = FakeFinetune()
    state = run_one_track(tmp_path, TASK, SWEEP, fake, num_selections=2, num_retrains=3)
    tuning = [c for c in fake.calls if c[2] == "val200"]
    final = [c for c in fake.calls if c[2] == "test"]
    assert len(tuning) == 2 * 3 and all(c[1] == "train800" for c in tuning)
    assert len(final) == 2 * 3 and all(c[1] == "train800val200" for c in final)
    # Best val score 0.8 is tied; the first in sweep order wins.
    assert {c[3] for c in final} == {SWEEP[1]["name"]}
    assert [s["handle"] for s in state["selections"]] == ["expert0", "expert1"]
    assert [s["best_setting"] for s in state["selections"]] == [SWEEP[1]["name"]] * 2
    assert len(state["outcomes"]) == 6 and state["complete"]
    assert sorted(state["outcomes"]) == sorted(c[4] % 97 for c in final)
    # VTAB-1k reports the median: the same float64 median of the same six numbers, exactly.
    summary = state["summary"]
    assert (summary["kind"], summary["n"]) == ("median", 6)
    assert summary["value"] == float(np.median(state["outcomes"]))
    assert summary["ci_low"] <= summary["value"] <= summary["ci_high"]
    assert len({c[4] for c in final}) == 6  # Every retrain has its own seed.


def test_search_once_tunes_only_the_first_selection(tmp_path):
    fake = FakeFinetune()
    state = run_one_track(
        tmp_path / "memo", TASK, SWEEP, fake, num_selections=3, num_retrains=2, search="once"
    )
    tuning = [c for c in fake.calls if c[2] == "val200"]
    assert len(tuning) == 3 and {c[0] for c in tuning} == {"expert0"}
    assert len(state["outcomes"]) == 6
    assert [s["best_setting"] for s in state["selections"]] == [SWEEP[1]["name"]] * 3
    # Every selection retrains its own expert with the shared search's setting.
    final = [c for c in fake.calls if c[2] == "test"]
    assert [c[0] for c in final] == ["expert0"] * 2 + ["expert1"] * 2 + ["expert0"] * 2


def test_best_setting_and_the_specs_of_each_stage(tmp_path):
    assert protocol.best_setting(SWEEP, VAL) == SWEEP[1]["name"]  # tie: first in sweep order
    assert protocol.best_setting(SWEEP[:1], {}) == SWEEP[0]["name"]
    track = make_track(TASK, SWEEP, num_selections=2, seed=5)
    plan.plan_tuning(track)
    tune = track.tuning[0]
    assert [(s.train_split, s.eval_split) for s in tune] == [("train800", "val200")] * 3
    assert [s.setting for s in tune] == SWEEP
    single = make_track(TASK, SWEEP[:1])
    plan.plan_tuning(single)
    assert single.tuning == [[]]  # one setting: nothing to tune

    def retrains(seed, scheme="full"):
        track = make_track(TASK, SWEEP, num_selections=2, num_retrains=2, scheme=scheme, seed=seed)
        plan.plan_tuning(track)
        memo = runner.Memo(str(tmp_path / f"memo{seed}{scheme}"))
        for specs in track.tuning:
            for s in specs:
                memo.put(s, {"score": VAL[s.setting["name"]]})
        plan.plan_retrains(track, memo)
        return track

    final = retrains(5)
    assert [(s.train_split, s.eval_split) for s in final.retrains[1]] == [("trainval", "test")] * 2
    assert [(s.train_split, s.eval_split) for s in final.tuning[0]] == [("train", "val")] * 3
    assert final.best == [SWEEP[1]["name"]] * 2
    # Seeds derive from the base seed, the selection and the setting or retrain index.
    seeds = [s.seed for specs in final.tuning + final.retrains for s in specs]
    assert len(set(seeds)) == len(seeds) == 2 * 3 + 2 * 2
    assert final.retrains[1][0].seed == protocol.retrain_seed(5, 1, 0)
    assert final.tuning[1][2].seed == protocol.tuning_seed(5, 1, 2)
    other = retrains(6)
    assert {s.seed for s in other.retrains[1]}.isdisjoint(s.seed for s in final.retrains[1])
    again = retrains(5)
    assert [s.key for s in again.retrains[1]] == [s.key for s in final.retrains[1]]
    # The key is the content: another split scheme is another fine-tune.
    vtab = retrains(5, "vtab1k")
    assert {s.key for s in vtab.retrains[1]}.isdisjoint(s.key for s in final.retrains[1])


def test_single_setting_skips_tuning_and_full_scheme_splits(tmp_path):
    fake = FakeFinetune()
    run_one_track(tmp_path, TASK, SWEEP[:1], fake, num_retrains=2, scheme="full")
    assert [(c[1], c[2]) for c in fake.calls] == [("trainval", "test")] * 2


def test_summary_uses_the_suites_aggregate(tmp_path):
    # Table 3 reports the mean of its outcomes; VTAB-1k the median; only folders may choose.
    table3 = types.SimpleNamespace(**{**vars(TASK), "suite": "table3"})
    state = run_one_track(tmp_path / "1", table3, SWEEP[:1], FakeFinetune(), num_retrains=3)
    assert state["summary"]["kind"] == state["aggregate"] == "mean"
    assert state["summary"]["value"] == float(np.mean(state["outcomes"]))
    folder = types.SimpleNamespace(**{**vars(TASK), "suite": "folder"})
    state = run_one_track(
        tmp_path / "m2", folder, SWEEP[:1], FakeFinetune(), num_retrains=2, aggregate="mean"
    )
    assert state["summary"]["kind"] == "mean"
    fake = FakeFinetune()
    with pytest.raises(
        ValueError, match="--aggregate: task toy: the vtab1k suite reports the median"
    ):
        run_one_track(tmp_path / "3", TASK, SWEEP, fake, aggregate="mean")
    assert fake.calls == []
    # One outcome has no interval.
    assert protocol.aggregate([0.7], "median")["ci_low"] is None


def test_bad_arguments(tmp_path):
    fake = FakeFinetune()
    with pytest.raises(ValueError, match="unique"):
        run_one_track(tmp_path, TASK, SWEEP[:1] * 2, fake)
    assert fake.calls == []
    # The split scheme, search, aggregate and counts are checked with the config, before any work;
    # so is every way to an empty sweep.
    for section, key, value in (
        ("finetune", "learning_rates", []),
        ("finetune", "steps", []),
        ("finetune", "random_search_size", 0),
        ("protocol", "scheme", "x"),
        ("protocol", "search", "x"),
        ("protocol", "aggregate", "mode"),
        ("protocol", "num_retrains", 0),
        ("protocol", "num_selections", 0),
    ):
        with pytest.raises(ValueError, match=f"^bad config: {section}.{key} must be"):
            config.make(**{section: {key: value}})


def test_a_killed_run_resumes_and_shared_fine_tunes_run_once(tmp_path):
    """Two tracks (two selectors picking experts 0 and 1 alternately, and always expert 0) share
    expert 0's fine-tunes; a kill loses only the fine-tune it interrupted."""
    memo = tmp_path / "memo"
    fake = FakeFinetune(die_after=4)

    def tracks():
        first = make_track(TASK, SWEEP, num_selections=2, num_retrains=2)
        second = make_track(TASK, SWEEP, num_selections=1, num_retrains=2, method="baseline")
        return [first, second]

    executor = runner.Executor(runner.Memo(str(memo)), finetune_fn=fake, log=None, progress=False)
    with pytest.raises(KeyboardInterrupt):
        runner.run_tracks(tracks(), executor)
    assert len(runner.load_records(str(memo))) == 4
    # Resumed: the four recorded are not redone; expert 0's fine-tunes, which both tracks hold,
    # run once.
    lines, done = [], []
    fake.die_after = None
    executor = runner.Executor(
        runner.Memo(str(memo)), finetune_fn=fake, log=lines.append, progress=False
    )
    resumed = tracks()
    runner.run_tracks(resumed, executor, on_result=lambda spec, result: done.append(spec.key))
    keys = {s.key for t in resumed for specs in t.tuning + t.retrains for s in specs}
    assert len(keys) == 2 * 3 + 2 * 2  # tuning and retrains of expert0 and expert1
    assert len(fake.calls) == len(keys) == len(runner.load_records(str(memo)))
    assert len(executor.ran) == len(keys) - 4
    assert "4 fine-tunes already recorded" in lines[0]
    # on_result hears of every retrain this run trained, and of nothing else.
    retrains = {s.key for t in resumed for specs in t.retrains for s in specs}
    assert len(done) == len(set(done)) and set(done) == retrains & set(executor.ran)


# --- aggregates and intervals (issue 10, items 4 and 5) ----------------------------------------


def test_the_aggregate_is_a_property_of_the_suite():
    assert protocol.suite_aggregate("vtab1k") == "median"  # The paper's VTAB-1k tables.
    assert protocol.suite_aggregate("table3") == "mean"  # Its table 3: mean over 30 trials.
    assert protocol.suite_aggregate("folder") == "median"
    assert protocol.suite_aggregate("folder", "mean") == "mean"
    assert protocol.suite_aggregate("table3", "mean") == "mean"
    with pytest.raises(ValueError, match="vtab1k suite reports the median"):
        protocol.suite_aggregate("vtab1k", "mean")
    # An unknown aggregate is refused with the config (test_bad_arguments).


def test_aggregate_value_interval_and_edge_cases():
    values = np.random.default_rng(0).normal(0.6, 0.05, size=30)
    for kind, fn in (("median", np.median), ("mean", np.mean)):
        out = protocol.aggregate(values, kind)
        assert set(out) == {"value", "ci_low", "ci_high", "n", "kind"}
        assert (out["kind"], out["n"]) == (kind, 30) and out["value"] == float(fn(values))
        assert values.min() <= out["ci_low"] < out["value"] < out["ci_high"] <= values.max()
        assert protocol.aggregate(values, kind) == out  # Fixed seed: the same interval every time.
    # Fewer outcomes, wider interval.
    small = protocol.aggregate(values[:6], "mean")
    large = protocol.aggregate(values, "mean")
    assert small["ci_high"] - small["ci_low"] > large["ci_high"] - large["ci_low"]
    # One outcome has no spread to resample: no interval (reported as n = 1).
    assert protocol.aggregate([0.7], "median") == {
        "value": 0.7,
        "ci_low": None,
        "ci_high": None,
        "n": 1,
        "kind": "median",
    }
    assert protocol.aggregate([0.5] * 4, "mean")["ci_low"] == 0.5
    for bad, message in (([], "non-empty"), ([0.1, float("nan")], "finite")):
        with pytest.raises(ValueError, match=message):
            protocol.aggregate(bad, "mean")
    with pytest.raises(ValueError, match="unknown aggregate"):
        protocol.aggregate([0.1, 0.2], "max")


def test_mean_interval_agrees_with_normal_theory():
    # For the mean of 30 normal outcomes the percentile bootstrap interval approaches
    # mean +- 1.96 * s / sqrt(n) (s with divisor n, the bootstrap's plug-in spread). Monte Carlo
    # error of a 2.5% quantile from 9999 resamples is ~0.03 of that spread, and the small-sample
    # skew of the resampled means a few hundredths more: 0.15 of the spread bounds both.
    values = np.random.default_rng(3).normal(0.8, 0.04, size=30)
    spread = values.std() / np.sqrt(values.size)
    out = protocol.aggregate(values, "mean")
    assert out["ci_low"] == pytest.approx(values.mean() - 1.96 * spread, abs=0.15 * spread)
    assert out["ci_high"] == pytest.approx(values.mean() + 1.96 * spread, abs=0.15 * spread)


def _task(group, outcomes, kind="median"):
    return {
        "group": group,
        "outcomes": list(outcomes),
        "summary": protocol.aggregate(outcomes, kind),
    }


def test_group_summary_means_and_stratified_bootstrap():
    rng = np.random.default_rng(5)
    a, b, c = rng.normal(0.6, 0.03, 30), rng.normal(0.8, 0.02, 30), rng.normal(0.5, 0.05, 12)
    results = {
        "cifar100": _task("natural", a, "mean"),
        "dtd": _task("natural", b, "mean"),
        "clevr_count": _task("structured", c, "mean"),
        "eurosat": {"group": "specialized", "summary": {"value": 0.9, "n": 1, "kind": "mean"}},
    }
    out = protocol.group_summary(results)
    assert list(out) == ["natural", "specialized", "structured", "all", "bootstrap"]
    natural = out["natural"]
    assert natural["mean"] == pytest.approx((a.mean() + b.mean()) / 2, abs=1e-12)
    assert (natural["num_tasks"], natural["tasks"]) == (2, ["cifar100", "dtd"])
    assert natural["aggregates"] == ["mean"]
    # The same stratified bootstrap by hand: resample each task's outcomes on its own.
    draws = np.random.default_rng(99)
    means = (
        a[draws.integers(0, 30, (40_000, 30))].mean(1)
        + b[draws.integers(0, 30, (40_000, 30))].mean(1)
    ) / 2
    spread = means.std()
    # Quantile Monte Carlo error: ~0.03 spread (9999 resamples) and ~0.015 (40000); 0.15 is >4 SE.
    assert natural["ci_low"] == pytest.approx(np.percentile(means, 2.5), abs=0.15 * spread)
    assert natural["ci_high"] == pytest.approx(np.percentile(means, 97.5), abs=0.15 * spread)
    # A task with one outcome enters with its value; alone, its group has no interval.
    assert out["specialized"] == {
        "mean": 0.9,
        "ci_low": None,
        "ci_high": None,
        "num_tasks": 1,
        "tasks": ["eurosat"],
        "aggregates": ["mean"],
    }
    everything = out["all"]
    assert everything["mean"] == pytest.approx(
        (a.mean() + b.mean() + c.mean() + 0.9) / 4, abs=1e-12
    )
    assert everything["ci_low"] < everything["mean"] < everything["ci_high"]
    assert out["bootstrap"] == {
        "confidence_level": 0.95,
        "n_resamples": protocol.BOOTSTRAP_RESAMPLES,
        "seed": protocol.BOOTSTRAP_SEED,
        "method": "percentile",
        "resampled": "each task's outcomes, independently (stratified by task)",
    }
    assert json.loads(json.dumps(out)) == out  # summary.json takes it as it is.
    assert protocol.group_summary(results) == out  # Fixed seed.
