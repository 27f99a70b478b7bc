"""The VTAB-1k protocol: tuning, retraining, trials, resume, median and bootstrap CI."""

import types

import numpy as np
import pytest

from vtab_eval import protocol, sweeps

TASK = types.SimpleNamespace(name="toy", num_classes=3, metric="accuracy")
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
    assert state["summary"]["median"] == pytest.approx(np.median(state["outcomes"]))
    assert len({c[4] for c in final}) == 6  # Every retrain has its own seed.


def test_resume_after_kill_repeats_no_finished_work():
    saved = {}

    def save(state):
        import json

        saved["state"] = json.loads(json.dumps(state))

    killed = FakeFinetune(die_after=4)
    with pytest.raises(KeyboardInterrupt):
        protocol.run_protocol(
            select, TASK, SWEEP, num_selections=2, num_retrains=2, finetune_fn=killed, save=save
        )
    resumed = FakeFinetune()
    state = protocol.run_protocol(
        select,
        TASK,
        SWEEP,
        num_selections=2,
        num_retrains=2,
        finetune_fn=resumed,
        save=save,
        state=saved["state"],
    )
    assert len(killed.calls) + len(resumed.calls) == 2 * (3 + 2)
    assert not set(killed.calls) & set(resumed.calls)
    assert state["complete"] and len(state["outcomes"]) == 4
    fresh = FakeFinetune()
    again = protocol.run_protocol(
        select,
        TASK,
        SWEEP,
        num_selections=2,
        num_retrains=2,
        finetune_fn=fresh,
        state=saved["state"],
    )
    assert fresh.calls == [] and again["outcomes"] == state["outcomes"]


def test_single_setting_skips_tuning_and_full_scheme_splits():
    fake = FakeFinetune()
    protocol.run_protocol(select, TASK, SWEEP[:1], num_retrains=2, scheme="full", finetune_fn=fake)
    assert [(c[1], c[2]) for c in fake.calls] == [("trainval", "test")] * 2


def test_median_ci():
    single = protocol.median_ci([0.7])
    assert single == {"median": 0.7, "ci_low": 0.7, "ci_high": 0.7, "num_outcomes": 1}
    values = np.random.default_rng(0).normal(0.6, 0.05, size=30)
    ci = protocol.median_ci(values)
    assert ci["ci_low"] < ci["median"] < ci["ci_high"]
    assert values.min() <= ci["ci_low"] and ci["ci_high"] <= values.max()
    wide = protocol.median_ci(values[:5])
    assert wide["ci_high"] - wide["ci_low"] > ci["ci_high"] - ci["ci_low"]
    with pytest.raises(ValueError, match="non-empty"):
        protocol.median_ci([])


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        protocol.run_protocol(select, TASK, [], finetune_fn=FakeFinetune())
    with pytest.raises(ValueError, match="split scheme"):
        protocol.run_protocol(select, TASK, SWEEP, scheme="x", finetune_fn=FakeFinetune())
    with pytest.raises(ValueError, match="unique"):
        protocol.run_protocol(select, TASK, SWEEP[:1] * 2, finetune_fn=FakeFinetune())
