"""`vtab_eval.engine.evaluate` on toy modules and two folder tasks with a fake fine-tune: results
are written as tasks finish, a selector the pool cannot serve is skipped, the dry run trains
nothing. Real fine-tunes through the command: test_run_cli.py."""

import os

import pytest
import vtab_eval_toys as toys

from vtab_eval import checks, config, engine, files, results, runner, selectors


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    pool = toys.save_toy_pool(str(root))
    tasks = [
        "folder:" + toys.make_colour_folder(str(root / f"data{i}"), per_class=8, seed=i)
        for i in range(2)
    ]
    return root, pool, tasks


NAMES = ["data0", "data1"]  # the tasks' names: their folders'


def _config(pool, tasks, out, **changes):
    return config.make(
        collection=pool,
        tasks=tasks,
        output_dir=str(out),
        selection={"selectors": ["knn", "baseline"], "resolution": 16},
        finetune={"sweep": "quick", "resolution": 16},
        protocol={"num_retrains": 2},
        **changes,
    )


def _states(out, tasks, methods):
    """(task index, method) -> the result file's `complete`, or None while it is missing."""
    found = {}
    for i, task in enumerate(tasks):
        for method in methods:
            written = files.read_json(results.result_path(str(out), task, method))
            found[(i, method)] = None if written is None else written["complete"]
    return found


class Fake:
    """A fine-tune that records, at each call, the state of every result file."""

    def __init__(self, out, tasks, methods):
        self.out, self.tasks, self.methods = out, tasks, methods
        self.calls = []

    def __call__(self, handle, task, train_split, eval_split, setting, **kwargs):
        self.calls.append((task.name, handle, _states(self.out, self.tasks, self.methods)))
        return {"score": 0.5 + kwargs["seed"] % 7 / 100}


def test_results_are_written_as_tasks_finish(inputs, tmp_path):
    root, pool, tasks = inputs
    out = tmp_path / "out"
    cfg = _config(pool, tasks, out)
    methods = ["knn", "baseline"]
    fake, reports, lines = Fake(out, NAMES, methods), [], []
    executor = runner.make_executor(cfg, lines.append, progress=False, finetune_fn=fake)
    found = engine.evaluate(
        cfg,
        executor=executor,
        log=lines.append,
        on_task_done=lambda d: reports.append((d, _states(out, NAMES, methods))),
    )
    # Per task: kNN's 2 retrains of expert_colour, then the baseline's 2 of B.
    assert [(t, os.path.basename(h)) for t, h, _ in fake.calls] == [
        (task, name) for task in NAMES for name in ("colour", "colour", "b", "b")
    ]
    # Every result file exists (incomplete) when the first retrain starts ...
    assert set(fake.calls[0][2].values()) == {False}
    # ... and each (task, method) file is complete as soon as its last retrain is recorded.
    assert fake.calls[2][2] == {(0, "knn"): True, (0, "baseline"): False} | {
        (1, m): False for m in methods
    }
    assert fake.calls[4][2] == {(0, m): True for m in methods} | {(1, m): False for m in methods}
    # The command's report is rewritten before the retrains, then as each task finishes.
    assert [d for d, _ in reports] == [str(out)] * 3
    assert [set(s.values()) for _, s in reports] == [{False}, {True, False}, {True}]
    assert reports[1][1] == {(0, m): True for m in methods} | {(1, m): False for m in methods}
    # What evaluate returns is what the files hold.
    for method in methods:
        for task in NAMES:
            written = files.read_json(results.result_path(str(out), task, method))
            assert found[method][task] == written and written["complete"]
            assert len(written["outcomes"]) == 2
    assert found["knn"][NAMES[0]]["ranking"]["selected_name"] == "expert_colour"
    assert f"{NAMES[0]} / knn: selected expert_colour" in lines


def test_a_selector_the_pool_cannot_serve_is_skipped_in_one_line(inputs, tmp_path):
    _, pool, tasks = inputs
    out = tmp_path / "out"
    cfg = _config(pool, tasks[:1], out, deterministic=False)
    cfg = config.set_key(cfg, "selection.selectors", ["domain_prediction", "baseline"])
    lines = []
    executor = runner.make_executor(
        cfg, lines.append, progress=False, finetune_fn=Fake(out, [], [])
    )
    found = engine.evaluate(cfg, executor=executor, log=lines.append)
    skipped = [line for line in lines if "SKIPPED" in line]
    assert len(skipped) == 1 and skipped[0].startswith(f"{NAMES[0]} / domain_prediction: SKIPPED")
    assert set(found) == {"baseline"}
    assert not os.path.exists(results.result_path(str(out), NAMES[0], "domain_prediction"))


def test_dry_run_plans_and_trains_nothing(inputs, tmp_path):
    _, pool, tasks = inputs
    out = tmp_path / "out"
    cfg = _config(pool, tasks, out)
    fake, lines = Fake(out, [], []), []
    plan = engine.dry_run(cfg, lines.append, finetune_fn=fake)
    # knn's pick is not ranked yet: a stand-in; B's fine-tunes are known: 2 tasks x 2 x 2.
    assert plan["fine_tunes"] == 8 and plan["recorded"] == 0 and plan["seconds"] >= 0
    assert any("fine-tunes: 8 after sharing" in line for line in lines)
    # Each task's line names the preset its sweep comes from.
    assert sum("search per_selection, sweep quick, aggregate" in line for line in lines) == 2
    # The time is measured with a warm-up and two short probes, not by running the plan.
    assert [c[0] for c in fake.calls] == [NAMES[0]] * 3
    assert not out.exists()


def test_a_ranking_kept_under_another_selector_revision_is_computed_again(
    inputs, tmp_path, monkeypatch
):
    """Issue 25 changed what domain_prediction and label_matching score: their `revision` is part
    of a kept ranking's identity, so a ranking kept before is not reused."""
    _, pool, tasks = inputs
    cfg = _config(pool, tasks[:1], tmp_path / "out")
    pool_entries, jobs, _ = checks.prepare(cfg, str)
    computed = []

    def fake_rank(pool, task, method, options, **kwargs):
        computed.append(method)
        return {"method": method, "selected": "x", "forward_passes": 0}

    monkeypatch.setattr(engine.ranking, "rank", fake_rank)
    context = dict(config=cfg, output_dir=str(tmp_path / "out"), log=str, rank_kwargs={})
    rank = lambda: engine.cached_ranking(jobs[0], "domain_prediction", pool_entries, 0, context)
    first = rank()
    assert rank() == first and computed == ["domain_prediction"]  # kept, not recomputed
    selector = type(selectors.get("domain_prediction"))
    monkeypatch.setattr(selector, "revision", selector.revision + 1)
    assert rank()["identity"] != first["identity"]
    assert computed == ["domain_prediction"] * 2
    (task_dir,) = (tmp_path / "out" / "rankings").iterdir()
    kept = [p.name for p in task_dir.iterdir()]
    assert len(kept) == 2 and all(name.startswith("domain_prediction-") for name in kept)


def test_the_fallback_reaches_the_rankings_with_hits_and_random_draws_per_task(inputs, tmp_path):
    """Issue 26: `run --fallback` ranks knn with it (a kept ranking of another fallback is not
    reused) and random without it; random draws anew on each task from the same seed."""
    _, pool, tasks = inputs
    out = tmp_path / "out"
    plain = _config(pool, tasks, out)
    sure = config.set_key(plain, "selection.fallback", "baseline")
    entries, jobs, _ = checks.prepare(plain, str)
    kwargs = {"cache_dir": str(tmp_path / "cache")}

    def rank(cfg, method, job=jobs[0], seed=0):
        context = dict(config=cfg, output_dir=str(out), log=str, rank_kwargs=kwargs)
        return engine.cached_ranking(job, method, entries, seed, context)

    knn, knn_sure = rank(plain, "knn"), rank(sure, "knn")
    assert knn["fallback"] is None and knn_sure["fallback"]["policy"] == "baseline"
    assert knn_sure["identity"] != knn["identity"] and knn["pairwise"] == knn_sure["pairwise"]
    assert rank(plain, "knn", seed=1)["identity"] != knn["identity"]  # its intervals' seed
    random, random_sure = rank(plain, "random", seed=7), rank(sure, "random", seed=7)
    assert random_sure == random and random["fallback"] is None
    scores = lambda r: [e["score"] for e in r["experts"]]
    assert scores(rank(plain, "random", jobs[1], seed=7)) != scores(random)
    kept = sorted(p.name for p in (out / "rankings").rglob("*.json"))
    assert len(kept) == 5  # knn x 3 identities, random on two tasks


@pytest.mark.parametrize("linked", ["results", "tensorboard", "models", "finetunes"])
def test_an_output_folder_holding_a_link_out_of_it_is_refused_before_any_work(
    inputs, tmp_path, linked
):
    _, pool, tasks = inputs
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    (out / linked).symlink_to(outside)
    cfg = config.set_key(_config(pool, tasks[:1], out), "finetune.save_models", True)
    fake = Fake(out, [], [])
    executor = runner.make_executor(cfg, None, progress=False, finetune_fn=fake)
    with pytest.raises(ValueError, match=rf"--output_dir .*: '{linked}' is a symbolic link to"):
        engine.evaluate(cfg, executor=executor, log=lambda line: None)
    assert fake.calls == [] and sorted(os.listdir(outside)) == ["precious.txt"]


def test_links_out_where_the_run_writes_nothing_do_not_stop_it(inputs, tmp_path):
    _, pool, tasks = inputs
    out, outside = tmp_path / "project", tmp_path / "elsewhere"
    (out / ".venv" / "bin").mkdir(parents=True)
    outside.mkdir()
    (out / ".venv" / "bin" / "python3").symlink_to(outside)  # e.g. --output_dir=. in a project
    (out / "notes").symlink_to(outside)
    cfg = _config(pool, tasks[:1], out)
    fake = Fake(out, [], [])
    executor = runner.make_executor(cfg, None, progress=False, finetune_fn=fake)
    engine.evaluate(cfg, executor=executor, log=lambda line: None)
    assert fake.calls and os.listdir(outside) == []
