"""`vtab_eval.runner`: the content-keyed memo and the in-process executor, with a fake fine-tune.

The protocol driven through `run_tracks` is tested in test_protocol.py; real fine-tunes, kills and
resumes of the whole command in test_run_cli.py.
"""

import json
import types

import pytest

from vtab_eval import identity, plan, runner, sweeps

TASK = types.SimpleNamespace(name="toy", num_classes=3, metric="accuracy", suite="folder")
SETTING = sweeps.make_setting(0.1, 5, 8, resolution=16)


def _job():
    return plan.Job(TASK, "vtab1k", "per_selection", [SETTING], task_id={"name": "toy"})


def _spec(seed=0, handle="expert0"):
    return plan.make_spec(handle, _job(), ("train800val200", "test"), SETTING, seed)


class Fake:
    def __init__(self):
        self.calls = []

    def __call__(self, handle, task, train_split, eval_split, setting, **kwargs):
        self.calls.append((handle, kwargs["seed"], sorted(kwargs)))
        return {"score": kwargs["seed"] / 100, "accuracy": kwargs["seed"] / 100}


def _executor(memo_dir, fake, lines=None, **kwargs):
    log = lines.append if lines is not None else None
    return runner.Executor(
        runner.Memo(str(memo_dir)), finetune_fn=fake, log=log, progress=False, **kwargs
    )


def test_memo_keeps_each_result_under_its_content_key(tmp_path):
    memo = runner.Memo(str(tmp_path / "memo"))
    spec, other = _spec(1), _spec(2)
    assert memo.get(spec) is None
    memo.put(spec, {"score": 0.5})
    assert memo.get(spec) == {"score": 0.5} and memo.get(other) is None
    record = json.loads((tmp_path / "memo" / f"{spec.key}.json").read_text())
    assert record["key"] == spec.key == identity.content_hash(record["identity"])
    assert record["identity"]["format"] == identity.SPEC_FORMAT
    assert runner.load_records(str(tmp_path / "memo")) == {spec.key: {"score": 0.5}}
    # The same fine-tune described again has the same key; any change of content another.
    assert _spec(1).key == spec.key
    assert _spec(1, handle="expert1").key != spec.key


@pytest.mark.parametrize(
    "content",
    [
        "{truncated",
        json.dumps({"key": "someone else's", "result": {"score": 0.9}}),
        json.dumps({"key": None, "result": {"no_score": 1}}),
    ],
    ids=["unreadable", "another-key", "no-score"],
)
def test_a_bad_record_is_run_again_not_reused(tmp_path, content):
    spec = _spec(3)
    if "someone" not in content:
        content = content.replace('"key": null', f'"key": "{spec.key}"')
    path = tmp_path / "memo" / f"{spec.key}.json"
    path.parent.mkdir()
    path.write_text(content)
    lines = []
    assert runner.Memo(str(path.parent), log=lines.append).get(spec) is None
    # An unreadable record is named in one line; one of another key or without a score is not ours.
    assert len(lines) == (content == "{truncated") and all(str(path) in ln for ln in lines)
    fake = Fake()
    found = _executor(tmp_path / "memo", fake).run([spec])
    assert len(fake.calls) == 1 and found[spec.key]["score"] == 0.03
    assert runner.Memo(str(tmp_path / "memo")).get(spec)["score"] == 0.03  # rewritten, readable


def test_records_of_an_earlier_spec_format_are_refused_in_one_line(tmp_path):
    spec = _spec(4)
    # The same fine-tune as an earlier version recorded it: another format, so another key.
    old_identity = dict(identity.spec_identity(spec), format=identity.SPEC_FORMAT - 1)
    old_key = identity.content_hash(old_identity)
    memo_dir = tmp_path / "memo"
    memo_dir.mkdir()
    (memo_dir / f"{old_key}.json").write_text(
        json.dumps({"format": 1, "key": old_key, "identity": old_identity, "result": {"score": 1}})
    )
    assert runner.Memo(str(memo_dir)).earlier_formats() == 1
    fake, lines = Fake(), []
    track = plan.Track(_job(), "baseline", [("expert0", {})], seed=0)
    runner.run_tracks([track], _executor(memo_dir, fake, lines))
    stale = [line for line in lines if "earlier version" in line]
    assert stale == [
        f"{memo_dir}: 1 fine-tunes recorded by an earlier version (spec format other than "
        f"{identity.SPEC_FORMAT}) are not reused; they are run again"
    ]
    assert len(fake.calls) == 1  # run again, not read from the old record
    score = runner.Memo(str(memo_dir)).get(track.retrains[0][0])["score"]
    assert score != 1
    # A memo of this version alone says nothing.
    lines.clear()
    (memo_dir / f"{old_key}.json").unlink()
    runner.run_tracks(
        [plan.Track(_job(), "baseline", [("expert0", {})])], _executor(memo_dir, fake, lines)
    )
    assert not any("earlier version" in line for line in lines)


def test_executor_runs_each_key_once_and_counts_the_run(tmp_path):
    fake, lines = Fake(), []
    executor = _executor(tmp_path / "memo", fake, lines)
    specs = [_spec(1), _spec(2), _spec(1)]  # the third is the first again
    found = executor.run(specs, later=3)
    assert [c[1] for c in fake.calls] == [1, 2] and executor.ran == [specs[0].key, specs[1].key]
    assert set(found) == {specs[0].key, specs[1].key}
    # One line per fine-tune, counting this run's fine-tunes (and those later stages will add).
    assert [line.split("]")[0] for line in lines] == ["[1/5", "[2/5"]
    assert all("test score" in line for line in lines)
    # What the fine-tune did not say, the executor adds: its key, seed and wall time.
    assert found[specs[1].key]["key"] == specs[1].key and found[specs[1].key]["seed"] == 2
    lines.clear()
    again = _executor(tmp_path / "memo", fake, lines).run(specs)
    assert len(fake.calls) == 2 and again == found
    assert lines == [f"2 fine-tunes already recorded in {tmp_path / 'memo'}: reused"]


def test_executor_passes_per_fine_tune_output_paths(tmp_path):
    fake = Fake()
    tuning = plan.make_spec("expert0", _job(), ("train800", "val200"), SETTING, 5)
    final = _spec(6)
    out = tmp_path / "out"
    _executor(tmp_path / "memo", fake, output_dir=str(out), save_models=True).run([tuning, final])
    (_, _, tuning_kwargs), (_, _, final_kwargs) = fake.calls
    assert "summary_dir" in tuning_kwargs and "predictions_path" not in tuning_kwargs
    assert {"summary_dir", "predictions_path", "save_model_dir"} <= set(final_kwargs)
    record = runner.Memo(str(tmp_path / "memo")).get(final)
    name = runner.spec_dir_name(final)
    assert record["outputs"] == {
        "summary_dir": f"tensorboard/{name}",
        "predictions_path": f"predictions/{name}.npz",
        "save_model_dir": f"models/{name}",
    }
    assert name.startswith("toy-") and name.endswith(f"/expert0-{final.key[:12]}")
