"""The VTAB-1k protocol: tuning, retraining, trials, seeds, stage specs, the suite's aggregate."""

import types

import numpy as np
import pytest

from vtab_eval import protocol, sweeps

TASK = types.SimpleNamespace(name="toy", num_classes=3, metric="accuracy", suite="vtab1k")
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


def test_tunes_on_val_then_retrains_on_train800val200():
    fake = FakeFinetune()
    state = protocol.run_protocol(
        select, TASK, SWEEP, num_selections=2, num_retrains=3, finetune_fn=fake
    )
    tuning = [c for c in fake.calls if c[2] == "val200"]
    final = [c for c in fake.calls if c[2] == "test"]
    assert len(tuning) == 2 * 3 and all(c[1] == "train800" for c in tuning)
    assert len(final) == 2 * 3 and all(c[1] == "train800val200" for c in final)
    # Best val score 0.8 is tied; the first in sweep order wins.
    assert {c[3] for c in final} == {SWEEP[1]["name"]}
    assert [s["handle"] for s in state["selections"]] == ["expert0", "expert1"]
    assert len(state["outcomes"]) == 6 and state["complete"]
    # VTAB-1k reports the median: the same float64 median of the same six numbers, exactly.
    summary = state["summary"]
    assert (summary["kind"], summary["n"]) == ("median", 6)
    assert summary["value"] == float(np.median(state["outcomes"]))
    assert summary["ci_low"] <= summary["value"] <= summary["ci_high"]
    assert len({c[4] for c in final}) == 6  # Every retrain has its own seed.


def test_search_once_tunes_only_the_first_selection():
    fake = FakeFinetune()
    state = protocol.run_protocol(
        select, TASK, SWEEP, num_selections=3, num_retrains=2, search="once", finetune_fn=fake
    )
    tuning = [c for c in fake.calls if c[2] == "val200"]
    assert len(tuning) == 3 and {c[0] for c in tuning} == {"expert0"}
    assert len(state["outcomes"]) == 6
    assert [s["best_setting"] for s in state["selections"]] == [SWEEP[1]["name"]] * 3


def test_best_setting_and_stage_specs():
    assert protocol.best_setting(SWEEP, VAL) == SWEEP[1]["name"]  # tie: first in sweep order
    assert protocol.best_setting(SWEEP[:1], {}) == SWEEP[0]["name"]
    with pytest.raises(ValueError, match="no validation score"):
        protocol.best_setting(SWEEP, {SWEEP[0]["name"]: 0.1})
    tune = protocol.tuning_specs("m", TASK, SWEEP, selection=0, seed=5, task_id={"t": 1})
    assert [(s.train_split, s.eval_split) for s in tune] == [("train800", "val200")] * 3
    assert protocol.tuning_specs("m", TASK, SWEEP[:1], selection=0, task_id={"t": 1}) == []
    final = protocol.retrain_specs(
        "m", TASK, SWEEP[0], selection=1, num_retrains=2, scheme="full", seed=5, task_id={}
    )
    assert [(s.train_split, s.eval_split) for s in final] == [("trainval", "test")] * 2
    # Seeds derive from the base seed, the selection and the retrain index.
    seeds = {s.seed for s in final} | {s.seed for s in tune}
    assert len(seeds) == 5
    other = protocol.retrain_specs(
        "m", TASK, SWEEP[0], selection=1, num_retrains=2, scheme="full", seed=6, task_id={}
    )
    assert {s.seed for s in other}.isdisjoint(s.seed for s in final)
    again = protocol.retrain_specs(
        "m", TASK, SWEEP[0], selection=1, num_retrains=2, scheme="full", seed=5, task_id={}
    )
    assert [s.key for s in again] == [s.key for s in final]


def test_single_setting_skips_tuning_and_full_scheme_splits():
    fake = FakeFinetune()
    protocol.run_protocol(select, TASK, SWEEP[:1], num_retrains=2, scheme="full", finetune_fn=fake)
    assert [(c[1], c[2]) for c in fake.calls] == [("trainval", "test")] * 2


def test_summary_uses_the_suites_aggregate():
    # Table 3 reports the mean of its outcomes; VTAB-1k the median; only folders may choose.
    table3 = types.SimpleNamespace(**{**vars(TASK), "suite": "table3"})
    state = protocol.run_protocol(
        select, table3, SWEEP[:1], num_retrains=3, finetune_fn=FakeFinetune()
    )
    assert state["summary"]["kind"] == "mean"
    assert state["summary"]["value"] == float(np.mean(state["outcomes"]))
    folder = types.SimpleNamespace(**{**vars(TASK), "suite": "folder"})
    state = protocol.run_protocol(
        select, folder, SWEEP[:1], num_retrains=2, finetune_fn=FakeFinetune(), aggregate="mean"
    )
    assert state["summary"]["kind"] == "mean"
    with pytest.raises(ValueError, match="vtab1k suite reports the median"):
        protocol.run_protocol(select, TASK, SWEEP, finetune_fn=FakeFinetune(), aggregate="mean")
    # One outcome has no interval; no outcome, no summary.
    assert protocol.summarize([0.7])["ci_low"] is None
    assert protocol.summarize([]) is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        protocol.run_protocol(select, TASK, [], finetune_fn=FakeFinetune())
    with pytest.raises(ValueError, match="split scheme"):
        protocol.run_protocol(select, TASK, SWEEP, scheme="x", finetune_fn=FakeFinetune())
    with pytest.raises(ValueError, match="unique"):
        protocol.run_protocol(select, TASK, SWEEP[:1] * 2, finetune_fn=FakeFinetune())
    with pytest.raises(ValueError, match="search"):
        protocol.run_protocol(select, TASK, SWEEP, search="x", finetune_fn=FakeFinetune())
