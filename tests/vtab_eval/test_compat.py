"""`vtab_eval.run_command` and `vtab_eval.rank_command`, the Python API before evaluation configs,
kept for one release: each old keyword lands on its config key, and the call does what it did."""

import os

import pytest
import vtab_eval_toys as toys

import vtab_eval
from vtab_eval import compat, config, engine, files, results

# Every old keyword of run_command, with a value other than its default, and where it goes.
RUN_KEYWORDS = {
    "selectors": (("knn", "random"), "selection.selectors", ["knn", "random"]),
    "sweep": ("quick", "finetune.sweep", "quick"),
    "learning_rates": ([0.1, 0.01], "finetune.learning_rates", [0.1, 0.01]),
    "steps": ([3], "finetune.steps", [3]),
    "batch_size": (32, "finetune.batch_size", 32),
    "resolution": (16, "finetune.resolution", 16),
    "selection_resolution": (24, "selection.resolution", 24),
    "random_search_size": (5, "finetune.random_search_size", 5),
    "num_selections": (2, "protocol.num_selections", 2),
    "num_retrains": (3, "protocol.num_retrains", 3),
    "scheme": ("full", "protocol.scheme", "full"),
    "search": ("once", "protocol.search", "once"),
    "aggregate": ("mean", "protocol.aggregate", "mean"),
    "strategy": ("one_device", "finetune.strategy", "one_device"),
    "tpu": ("grpc://x", "finetune.tpu", "grpc://x"),
    "include_baseline": (False, "selection.include_baseline", False),
    "save_models": (True, "finetune.save_models", True),
    "data_dir": ("/data", "data_dir", "/data"),
    "cache_dir": ("/cache", "cache_dir", "/cache"),
    "seed": (7, "seed", 7),
    "deterministic": (False, "deterministic", False),
    "skip_bad_images": (True, "skip_bad_images", True),
}
RANK_KEYWORDS = {
    "method": ("ncm", "selection.selectors", ["ncm"]),
    "split": ("train800", "selection.split", "train800"),
    "resolution": (16, "selection.resolution", 16),
    "batch_size": (8, "selection.batch_size", 8),
    "include_baseline": (False, "selection.include_baseline", False),
    "num_shards": (3, "selection.num_shards", 3),
    "shard_index": (2, "selection.shard_index", 2),
    "cache_only": (True, "selection.cache_only", True),
    "verify_checksums": (False, "selection.verify_checksums", False),
    "fallback": ("baseline", "selection.fallback", "baseline"),
    "fallback_confidence": (0.8, "selection.fallback_confidence", 0.8),
    "precision": ("bfloat16", "selection.precision", "bfloat16"),
    "data_dir": ("/data", "data_dir", "/data"),
    "cache_dir": ("/cache", "cache_dir", "/cache"),
    "seed": (3, "seed", 3),
    "skip_bad_images": (True, "skip_bad_images", True),
    "plot_png": ("/p.png", "plot_png", "/p.png"),
}


def _expected(base, table):
    made = config.make(**base)
    for _, key, value in table.values():
        made = config.set_key(made, key, value)
    return config.resolve(made)


def test_run_command_maps_every_old_keyword_onto_the_config(monkeypatch):
    seen = []
    monkeypatch.setattr(engine, "dry_run", lambda *args: seen.append(args))
    fake, log = object(), object()
    kwargs = {name: value for name, (value, _, _) in RUN_KEYWORDS.items()}
    with pytest.warns(DeprecationWarning, match="use vtab_eval.evaluate"):
        out = vtab_eval.run_command(
            "C", ("t1", "t2"), "/o", dry_run=True, log=log, finetune_fn=fake, **kwargs
        )
    assert out is None
    [(made, given_log, given_fn)] = seen
    base = {"collection": "C", "tasks": ["t1", "t2"], "output_dir": "/o"}
    assert made == _expected(base, RUN_KEYWORDS)
    assert given_log is log and given_fn is fake
    # Each keyword on its own changes its key only.
    for name, (value, key, converted) in RUN_KEYWORDS.items():
        seen.clear()
        with pytest.warns(DeprecationWarning):
            compat.run_command("C", ["t"], "/o", dry_run=True, **{name: value})
        alone = config.make(collection="C", tasks=["t"], output_dir="/o")
        assert seen[0][0] == config.set_key(alone, key, converted), name


def test_rank_command_maps_every_old_keyword_onto_the_config(monkeypatch):
    seen = []
    monkeypatch.setattr(
        engine, "rank", lambda cfg, log: seen.append((cfg, log)) or {"left_out": []}
    )
    # The fallback needs B ranked: include_baseline=False goes on its own.
    together = {k: v for k, v in RANK_KEYWORDS.items() if k != "include_baseline"}
    kwargs = {name: value for name, (value, _, _) in together.items()}
    with pytest.warns(DeprecationWarning, match="use vtab_eval.rank"):
        out = vtab_eval.rank_command("C", "dtd", "/r.json", log=print, **kwargs)
    assert out == {"left_out": []}
    [(made, log)] = seen
    base = {"collection": "C", "tasks": ["dtd"], "output_json": "/r.json"}
    assert made == _expected(base, together) and log is print
    with pytest.warns(DeprecationWarning):
        compat.rank_command("C", "dtd", "/r.json", include_baseline=False)
    assert seen[-1][0]["selection"]["include_baseline"] is False
    # resolution and batch_size are the ranking's here, the fine-tuning's in run_command.
    assert made["finetune"] == config.DEFAULTS["finetune"]


@pytest.mark.parametrize("call", [compat.run_command, compat.rank_command])
def test_an_unknown_or_bad_keyword_is_refused_before_any_work(call, tmp_path):
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="'sweeep'"):
        call("C", ["t"] if call is compat.run_command else "t", str(tmp_path / "x"), sweeep="quick")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"batch_size must be"):
        call("C", ["t"] if call is compat.run_command else "t", str(tmp_path / "x"), batch_size=-1)
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    pool = toys.save_toy_pool(str(root))
    tasks = [
        "folder:" + toys.make_colour_folder(str(root / f"data{i}"), per_class=8, seed=i)
        for i in range(2)
    ]
    return pool, tasks


def test_run_command_evaluates_and_rewrites_the_report_as_tasks_finish(inputs, tmp_path, capsys):
    pool, tasks = inputs
    out = tmp_path / "out"
    seen = []

    def fake(handle, task, train_split, eval_split, setting, **kwargs):
        report_md = out / "report.md"
        seen.append((task.name, report_md.read_text() if report_md.exists() else None))
        return {"score": 0.25 + kwargs["seed"] % 5 / 10}

    with pytest.warns(DeprecationWarning):
        found = compat.run_command(
            pool,
            tasks,
            str(out),
            selectors=["baseline"],
            sweep="quick",
            resolution=16,
            num_retrains=2,
            finetune_fn=fake,
            log=lambda m: None,
            progress=False,
        )
    assert [t for t, _ in seen] == ["data0", "data0", "data1", "data1"]  # folder names
    assert "fine-tunes:" not in capsys.readouterr().err  # progress=False: no progress bar
    # Before the first retrain the report lists every task as incomplete; when the second task
    # starts, the first one's row is final.
    assert seen[0][1].count("(incomplete)") == 0  # no outcome yet: no cell to mark
    first_row = next(line for line in seen[2][1].splitlines() if line.startswith("| data0 |"))
    second_row = next(line for line in seen[2][1].splitlines() if line.startswith("| data1 |"))
    assert "n = 2" in first_row and "(incomplete)" not in first_row
    assert second_row.endswith("| — |")
    # It returns what the result files hold, and the final report has plots.
    for task in ("data0", "data1"):
        assert found["baseline"][task] == files.read_json(
            results.result_path(str(out), task, "baseline")
        )
    assert (out / "plots" / "outcomes.png").exists()
    with pytest.warns(DeprecationWarning):
        assert vtab_eval.run_command(None, [], str(out), report_only=True) == found
