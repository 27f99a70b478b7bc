"""`python -m vtab_eval.run`: end to end on tiny modules and folder data; sharing, resume, seeds,
checks before training, dry run and report."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import vtab_eval_toys as toys

from vtab_eval import checks, config, engine, files, finetune, plan, report, runner, sweeps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = ["--sweep=quick", "--resolution=16", "--selection_resolution=16", "--num_retrains=2"]
ARGS = ["--selectors=knn,random,baseline,hindsight", *COMMON, "--save_models"]
NAME = "data"  # the task's name: its folder's (ROOT/data)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_cli")
    pool = toys.save_toy_pool(str(root))
    data = toys.make_colour_folder(str(root / "data"), per_class=8)
    out = root / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vtab_eval.run",
            f"--collection={pool}",
            f"--tasks=folder:{data}",
            f"--output_dir={out}",
            *ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=REPO,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Later tests rerun into `out` with other settings; keep this run's kNN result as it was.
    slug = files.task_slug(NAME)
    (root / "knn_uninterrupted.json").write_text((out / "results" / slug / "knn.json").read_text())
    return root, pool, f"folder:{data}", out, proc.stdout + proc.stderr


def test_end_to_end_selects_finetunes_shares_and_reports(finished_run):
    root, _, task, out, console = finished_run
    slug = files.task_slug(NAME)
    knn = json.loads((out / "results" / slug / "knn.json").read_text())
    assert knn["complete"] and knn["summary"]["n"] == 2
    # A folder task's outcomes are summarised by their median unless --aggregate says otherwise.
    assert knn["aggregate"] == knn["summary"]["kind"] == "median"
    assert knn["summary"]["value"] == float(np.median(knn["outcomes"]))
    assert knn["selections"][0]["handle"] == str(root / "colour")
    assert knn["ranking"]["selected_name"] == "expert_colour"
    # The baseline B is ranked with the experts by default.
    names = [e["name"] for e in knn["ranking"]["experts"]]
    assert names == ["baseline", "expert_noise", "expert_colour"]
    assert all(0 <= r["score"] <= 1 for r in knn["selections"][0]["retrains"])
    assert knn["seed"] == 0 and knn["deterministic"] is True
    assert all(
        "seed" in r and r["key"] in knn["spec_keys"] for r in knn["selections"][0]["retrains"]
    )
    baseline = json.loads((out / "results" / slug / "baseline.json").read_text())
    assert baseline["selections"][0]["handle"] == str(root / "b")
    hindsight = json.loads((out / "results" / slug / "hindsight.json").read_text())
    assert set(hindsight["experts"]) == {"baseline", "expert_noise", "expert_colour"}
    # Every selector's fine-tunes are some of hindsight's: 3 candidates x 2 retrains in all.
    memo = sorted(p for p in os.listdir(out / "finetunes") if p.endswith(".json"))
    assert len(memo) == 6
    for method in ("knn", "random", "baseline"):
        result = json.loads((out / "results" / slug / f"{method}.json").read_text())
        assert set(result["spec_keys"]) <= set(hindsight["spec_keys"]), method
    assert console.count(": test score ") == 6  # one line per fine-tune, each run once
    text = (out / "report.md").read_text()
    assert "| Method | Other | Mean |" in text
    assert any(line.startswith("| knn |") for line in text.splitlines())
    assert "| expert_colour | **100.0** |" in text
    assert (out / "plots" / f"{slug}__knn.png").stat().st_size > 0
    assert (out / "plots" / "outcomes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"knn", "random", "baseline", "hindsight"}
    groups = summary["knn"]["groups"]
    assert set(groups) == {"other", "all", "bootstrap"}  # folder tasks have no VTAB group
    assert groups["all"]["mean"] == knn["summary"]["value"]  # one task: its own aggregate
    assert summary["knn"]["tasks"] == {NAME: knn["summary"]}
    assert "selected expert_colour" in console
    # Short names (issue 26): the folder's name in the report, the plots and the paths.
    assert f"| {NAME} | other |" in text and str(root) not in text
    assert knn["task"] == NAME and slug.startswith(f"{NAME}-")


def _memo_records(out):
    return [
        json.loads(p.read_text())["result"]
        for p in sorted((out / "finetunes").iterdir())
        if p.suffix == ".json" and not p.name.startswith(".")
    ]


def _scalars(summary_dir):
    """tag -> [(step, value)] of every scalar in the folder's event files."""
    import tensorflow as tf

    found = {}
    for path in sorted(summary_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((event.step, number))
    return found


def test_every_final_finetune_keeps_its_logs_predictions_and_model(finished_run):
    import tensorflow as tf
    import tensorflow_hub as hub

    from vtab_eval import tasks

    _, _, task_name, out, _ = finished_run
    task = tasks.get_task(task_name)
    test_ds = task.load("test")
    images = np.stack([e["image"].numpy() for e in test_ds])
    records = _memo_records(out)
    assert len(records) == 6 and all(r["eval_split"] == "test" for r in records)
    for record in records:
        outputs = record["outputs"]
        # TensorBoard scalars, written by core TF (no tensorboard package needed): the loss at
        # every step and the test score at the last, equal to the recorded score in float32.
        scalars = _scalars(out / outputs["summary_dir"])
        assert [step for step, _ in scalars["loss"]] == list(range(1, record["steps"] + 1))
        assert scalars["test/score"] == [(record["steps"], float(np.float32(record["score"])))]
        # Test-set predictions that give the recorded score.
        saved = np.load(out / outputs["predictions_path"])
        assert saved["predictions"].shape == (record["num_examples"],)
        assert float(np.mean(saved["predictions"] == saved["labels"])) == record["accuracy"]
        assert record["score"] == record["accuracy"]  # the task's metric
        # --save_models: a SavedModel that hub.load reads and that classifies the test images
        # as evaluation did. Same weights and ops; only the batch differs (all images here, 64
        # in evaluation), which can reorder float32 sums: the toy's feature is a mean over
        # 16*16 pixels and the head a sum over 8 features, so each logit is within
        # (256 + 8) float32 roundings of its size.
        model = hub.load(str(out / outputs["save_model_dir"]))
        logits = model(tf.constant(images), training=False).numpy()
        assert logits.shape == (len(images), task.num_classes)
        bound = (256 + 8) * np.finfo(np.float32).eps * max(1.0, float(np.abs(logits).max()))
        np.testing.assert_allclose(logits, saved["logits"], rtol=0, atol=bound)


def _count_finetunes(monkeypatch):
    calls = []
    real = finetune.finetune_and_evaluate

    def counting(*args, **kwargs):
        calls.append(args[2:4])
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_and_evaluate", counting)
    return calls


def _config(pool, task, out, changes=None):
    """The config of ARGS (as `python -m vtab_eval.run` makes it), with `changes` (dotted keys)."""
    made = config.make(
        collection=pool,
        tasks=[task],
        output_dir=str(out),
        selection={"selectors": ["knn", "random", "baseline", "hindsight"], "resolution": 16},
        finetune={"sweep": "quick", "resolution": 16},
        protocol={"num_retrains": 2},
    )
    for key, value in (changes or {}).items():
        made = config.set_key(made, key, value)
    return config.resolve(made)


def _rerun(pool, task, out, changes=None, log=lambda m: None):
    """What the command does, in this process: evaluate, the report as tasks finish, the report;
    returns method -> task -> result as the result files hold them."""
    cfg = _config(pool, task, out, changes)
    executor = runner.make_executor(cfg, log, progress=False)
    engine.evaluate(
        cfg, executor=executor, log=log, on_task_done=lambda d: report.write(d, with_plots=False)
    )
    return report.write(cfg["output_dir"])


def test_rerun_redoes_nothing_and_resumes_what_a_kill_lost(finished_run, monkeypatch):
    _, pool, task, out, _ = finished_run
    calls = _count_finetunes(monkeypatch)
    before = _rerun(pool, task, out)
    assert calls == []
    # As if killed before the last fine-tune was recorded: only that one runs again.
    memo = out / "finetunes"
    victim = sorted(memo.iterdir())[0]
    victim.unlink()
    after = _rerun(pool, task, out)
    assert calls == [("train800val200", "test")]
    assert {m: {t: r["outcomes"] for t, r in by.items()} for m, by in after.items()} == {
        m: {t: r["outcomes"] for t, r in by.items()} for m, by in before.items()
    }


def test_changed_settings_give_new_fine_tunes_not_old_results(finished_run, monkeypatch):
    _, pool, task, out, _ = finished_run
    calls = _count_finetunes(monkeypatch)
    # One more retrain per candidate: only the new ones run, the old ones are shared.
    results = _rerun(pool, task, out, {"protocol.num_retrains": 3})
    assert len(calls) == 3 and all(c == ("train800val200", "test") for c in calls)
    assert all(r[NAME]["summary"]["n"] == 3 for r in results.values())
    # Another resolution: every fine-tune is a new one, nothing old is reported as current.
    del calls[:]
    results = _rerun(
        pool,
        task,
        out,
        {"finetune.resolution": 8, "selection.selectors": ["baseline"], "protocol.num_retrains": 1},
    )
    assert len(calls) == 1
    assert results["baseline"][NAME]["sweep"][0]["resolution"] == 8
    with pytest.raises(ValueError, match=r"^bad config: selection.selectors: unknown \['oracle'\]"):
        _rerun(pool, task, out, {"selection.selectors": ["oracle"]})


class Killed(BaseException):
    """Stands for a kill: like KeyboardInterrupt, no `except Exception` catches it."""


def test_killed_run_resumed_equals_uninterrupted_run(finished_run, tmp_path, monkeypatch):
    _, pool, task, _, _ = finished_run
    real = finetune.finetune_and_evaluate
    count = []

    def dies_after_two(*args, **kwargs):
        if len(count) == 2:
            raise Killed()
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_and_evaluate", dies_after_two)
    with pytest.raises(Killed):
        _rerun(pool, task, tmp_path / "killed")
    assert len(os.listdir(tmp_path / "killed" / "finetunes")) == 2
    # Results and report were written as the run went: all when the final fine-tunes started
    # (incomplete), then kNN's again when its two fine-tunes (the first to run) were recorded.
    results = tmp_path / "killed" / "results" / files.task_slug(NAME)
    knn = json.loads((results / "knn.json").read_text())
    assert knn["complete"] is True and len(knn["outcomes"]) == 2
    partial = json.loads((results / "hindsight.json").read_text())
    assert partial["complete"] is False and partial["outcomes"] == [] and partial["summary"] is None
    assert "| knn |" in (tmp_path / "killed" / "report.md").read_text()
    monkeypatch.setattr(finetune, "finetune_and_evaluate", real)
    calls = _count_finetunes(monkeypatch)
    lines = []
    resumed = _rerun(pool, task, tmp_path / "killed", log=lines.append)
    assert len(calls) == 6 - 2  # the two finished fine-tunes are not redone
    # Each fine-tune's line counts the run's fine-tunes, with the progress bar off too.
    counts = [line.split("]")[0] for line in lines if ": test score " in line]
    assert counts == ["[1/4", "[2/4", "[3/4", "[4/4"]
    monkeypatch.setattr(finetune, "finetune_and_evaluate", real)
    fresh = _rerun(pool, task, tmp_path / "fresh")
    for method, by_task in fresh.items():
        assert resumed[method][NAME]["outcomes"] == by_task[NAME]["outcomes"], method
    assert knn["outcomes"] == fresh["knn"][NAME]["outcomes"]


def test_same_seed_same_score_other_seed_differs(finished_run, tmp_path):
    root, _, task_name, _, _ = finished_run
    from vtab_eval import tasks

    task = tasks.get_task(task_name)
    setting = sweeps.make_setting(0.05, 6, 8, resolution=16)
    colour = str(root / "colour")

    def result(seed, memo):
        job = plan.Job(task, "vtab1k", "per_selection", [setting])
        spec = plan.make_spec(colour, job, ("train800val200", "test"), setting, seed)
        ex = runner.Executor(runner.Memo(str(tmp_path / memo)), log=None, progress=False)
        return ex.run([spec])[spec.key]

    first, again, other = result(1, "a"), result(1, "b"), result(2, "c")
    assert (first["score"], first["final_loss"]) == (again["score"], again["final_loss"])
    assert other["final_loss"] != first["final_loss"]


def test_problems_are_found_before_training(finished_run, tmp_path, monkeypatch):
    _, pool, task, _, _ = finished_run
    calls = _count_finetunes(monkeypatch)
    # A bad value of the config itself: one line naming its key, before anything is looked at.
    with pytest.raises(ValueError, match=r"^bad config: finetune.batch_size must be an int >= 0"):
        _rerun(pool, task, tmp_path / "b", {"finetune.batch_size": -1})
    # Problems with the inputs: all of them, one line each. Two settings need the tuning split
    # val200, which 24 images cannot fill; the output folder is under a regular file.
    two = {"finetune.learning_rates": [0.1, 0.01], "finetune.steps": [4], "finetune.batch_size": 8}
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError) as err:
        _rerun(pool, task, tmp_path / "file" / "out", two)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{len(lines) - 1} problem(s) found before training; nothing was run:"
    assert any("val200" in line and "too small" in line for line in lines), lines
    assert any(
        line.strip().startswith("--output_dir:") and "regular file" in line for line in lines
    )
    bad_numbers = {"finetune.learning_rates": ["abc"], "finetune.steps": ["3"]}
    with pytest.raises(
        ValueError, match=r"finetune.learning_rates must be .* numbers > 0, got \['abc'\]"
    ):
        _rerun(pool, task, tmp_path / "o", bad_numbers)
    assert calls == [] and not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


def test_dry_run_prints_the_plan_and_trains_nothing(finished_run, tmp_path):
    _, pool, task, _, _ = finished_run
    lines = []
    plan = engine.dry_run(_config(pool, task, tmp_path / "dry"), lines.append)
    text = "\n".join(lines)
    assert "train800val200" in text and "expert_colour" in text
    # Hindsight: 3 candidates x 2 retrains (baseline's are among them); the kNN and random picks
    # are not ranked yet, so each counts as a distinct expert: 2 x 2 more.
    assert "fine-tunes: 10 after sharing" in text, text
    assert plan["fine_tunes"] == 10 and plan["recorded"] == 0 and plan["seconds"] > 0
    assert "time: about" in text
    assert not (tmp_path / "dry" / "finetunes").exists()
    assert not (tmp_path / "dry" / "results").exists()
    # Against the finished run's memo, every fine-tune of B and hindsight is known recorded.
    lines.clear()
    done = engine.dry_run(_config(pool, task, finished_run[3]), lines.append)
    assert done["recorded"] == 6 and done["fine_tunes"] == 10  # each shared one counted once
    assert any("6 already recorded, 4 to run" in line for line in lines)


def test_help_usage_line_has_no_gap():
    proc = subprocess.run(
        [sys.executable, "-m", "vtab_eval.run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=_env(),
    )
    usage = next(line for line in proc.stdout.splitlines() if "python -m vtab_eval.run" in line)
    assert "  " not in usage.strip() and usage.rstrip().endswith("\\")


def test_command_line_errors_are_one_line(finished_run, tmp_path):
    _, pool, task, _, _ = finished_run
    base = [sys.executable, "-m", "vtab_eval.run", f"--collection={pool}", f"--tasks={task}"]
    for flags, last in (
        (
            ["--batch_size=-1"],
            "bad config: finetune.batch_size (--batch_size) must be an int >= 0, got -1",
        ),
        (
            ["--selectors=random", "--fallback=baseline"],
            "bad config: selection.fallback (--fallback) 'baseline' needs per-image correctness, "
            "which 'random' lacks; use one of ('knn', 'linear_loo', 'ncm')",
        ),
        (
            ["--config=nope"],
            "unknown config 'nope': give a .py file or one of ['demo', 'local', 'table3', 'vtab1k']",
        ),
    ):
        proc = subprocess.run(
            [*base, f"--output_dir={tmp_path / 'out'}", *flags],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            env=_env(),
        )
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == f"vtab_eval.run: error: {last}"
    assert not (tmp_path / "out").exists()


def test_aggregate_flag_and_bad_choices(finished_run, tmp_path, monkeypatch):
    _, pool, task, out, _ = finished_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    calls = _count_finetunes(monkeypatch)
    results = _rerun(pool, task, copy, {"protocol.aggregate": "mean"})
    assert calls == []  # the aggregate changes the summary, not a fine-tune
    knn = results["knn"][NAME]
    assert knn["summary"]["kind"] == knn["aggregate"] == "mean"
    assert knn["summary"]["value"] == float(np.mean(knn["outcomes"]))
    groups = json.loads((copy / "summary.json").read_text())["knn"]["groups"]
    assert groups["all"]["aggregates"] == ["mean"]
    # VTAB-1k and table 3 follow the paper: one line, before anything is read or trained.
    with pytest.raises(ValueError, match="--aggregate: task cifar100: the vtab1k suite"):
        _rerun(pool, "cifar100", tmp_path / "v", {"protocol.aggregate": "mean"})
    assert calls == [] and not (tmp_path / "v" / "finetunes").exists()


def test_the_report_says_how_sure_each_pick_is_and_the_fallback_reaches_knn(
    finished_run, tmp_path, monkeypatch
):
    import shutil

    _, pool, task, out, _ = finished_run
    text = (out / "report.md").read_text()
    assert "## How sure each pick is (the ranking of the first selection)" in text
    name = task.rsplit("/", 1)[1]  # a folder task is named by its folder
    row = f"| {name} | knn | expert_colour 1.000 [1.000, 1.000] (selected); "
    assert text.count(row) == 1 and "P(expert_colour beats baseline, the runner-up) = 1.000" in text
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    calls = _count_finetunes(monkeypatch)
    results = _rerun(pool, task, copy, {"selection.fallback": "baseline"})
    assert calls == []  # expert_colour surely beats B: the same pick, the same fine-tunes
    knn = results["knn"][name]
    assert (
        knn["ranking"]["fallback"]["fired"] is False
        and knn["ranking"]["fallback"]["p_better"] > 0.99
    )
    assert knn["config"]["fallback"] == {"policy": "baseline", "confidence": 0.9}
    assert results["random"][name]["ranking"]["fallback"] is None  # no per-image hits
    report_row = next(
        line for line in (copy / "report.md").read_text().splitlines() if line.startswith(row)
    )
    assert report_row.endswith(" | fallback to B did not fire (needs P >= 0.9) |")


def test_task_sweep_applies_the_task_policy_and_whole_split_statistics(finished_run):
    from vtab_eval import tasks

    _, _, task_name, _, _ = finished_run
    # dSprites location: no flips, no crops. Every preset's settings come back without them,
    # and applying the policy again changes nothing: what is keyed is what runs.
    dsprites = tasks.get_task("dsprites_location")
    for preset in ("local", "random_search", "vtab_lightweight"):
        finetune_section = config.make(finetune={"sweep": preset, "random_search_size": 3})
        settings = plan.task_sweep(dsprites, "vtab1k", finetune_section["finetune"], seed=0)
        assert all(not s["flip"] and s["resize"] is None for s in settings), preset
        assert sweeps.for_task(settings, dsprites) == settings
    assert any(s["flip"] for s in sweeps.local())  # the preset itself flips
    jobs = checks.make_jobs(config.make(tasks=["dsprites_location"]))
    assert all(not s["flip"] for s in jobs[0].sweep)
    # BiT-HyperRule reads the whole final training split of the folder (16x16 toy images) and
    # logs the size it chose: area below 96x96 -> resize 160, crop 128.
    lines = []
    folder = tasks.get_task(task_name)
    hyperrule = config.make(finetune={"sweep": "bit_hyperrule"})["finetune"]
    (setting,) = plan.task_sweep(folder, "vtab1k", hyperrule, seed=0, log=lines.append)
    stats = sweeps.split_statistics(folder, "train800val200")
    assert (setting["resize"], setting["resolution"]) == (160, 128)
    assert stats["image_side"] == 16 and stats["median_area"] == 256
    assert len(lines) == 1 and "median area 256" in lines[0] and "16 px" in lines[0]


def test_sigkilled_run_resumes_to_the_uninterrupted_result(finished_run, tmp_path, monkeypatch):
    """A real kill (SIGKILL, no clean-up) after the first fine-tune is recorded; the rerun (in
    this process, to save a TF start-up) redoes none of the recorded ones and ends with the
    uninterrupted run's results."""
    import signal
    import time

    root, pool, task, _, _ = finished_run
    out = tmp_path / "out"
    # kNN alone: its two final fine-tunes are two of the six of the uninterrupted run.
    cmd = [
        sys.executable,
        "-m",
        "vtab_eval.run",
        f"--collection={pool}",
        f"--tasks={task}",
        f"--output_dir={out}",
        "--selectors=knn",
        *COMMON,
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    memo = out / "finetunes"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if memo.is_dir() and any(
                p.suffix == ".json" and not p.name.startswith(".") for p in memo.iterdir()
            ):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    kept = {
        p.name: p.stat().st_mtime_ns
        for p in memo.iterdir()
        if p.suffix == ".json" and not p.name.startswith(".")
    }
    assert 1 <= len(kept) < 2
    # The report written when the final fine-tunes started is there, and says it is incomplete.
    slug = files.task_slug(NAME)
    partial = json.loads((out / "results" / slug / "knn.json").read_text())
    assert partial["complete"] is False
    calls = _count_finetunes(monkeypatch)
    _rerun(pool, task, out, {"selection.selectors": ["knn"]})  # the same settings as COMMON
    assert len(calls) == 2 - len(kept)  # only the unrecorded one ran
    assert {name: (memo / name).stat().st_mtime_ns for name in kept} == kept  # none rewritten
    resumed = json.loads((out / "results" / slug / "knn.json").read_text())
    uninterrupted = json.loads((root / "knn_uninterrupted.json").read_text())
    for key in ("complete", "outcomes", "summary", "spec_keys", "identity"):
        assert resumed[key] == uninterrupted[key], key


def test_expand_tasks():
    assert len(checks.expand_tasks(["vtab1k"])) == 19
    assert checks.expand_tasks(["cifar100", "vtab1k"])[0] == "cifar100"
    assert checks.expand_tasks(["cifar100", "vtab1k"]).count("cifar100") == 1
    with pytest.raises(ValueError, match="no tasks"):
        checks.expand_tasks([" "])


def test_results_named_by_a_folder_path_are_refused_then_resumed(
    finished_run, tmp_path, monkeypatch
):
    """Results written before folder tasks were named by their folder are named (one line) and,
    once moved away, rebuilt from the memo without training (the memo is keyed by content)."""
    _, pool, task, out, _ = finished_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    old_name = f"folder:{tmp_path}/old/{NAME}"
    old = copy / "results" / files.task_slug(old_name)
    (copy / "results" / files.task_slug(NAME)).rename(old)
    for path in old.iterdir():
        path.write_text(json.dumps(dict(json.loads(path.read_text()), task=old_name)))
    calls = _count_finetunes(monkeypatch)
    with pytest.raises(
        ValueError, match=re.escape(f"{old} holds results of {old_name} in an older layout")
    ):
        _rerun(pool, task, copy)
    shutil.rmtree(old)
    assert set(_rerun(pool, task, copy)["knn"]) == {NAME} and calls == []
