"""`python -m vtab_eval.run`: end to end on tiny modules and folder data; resume; report."""

import json
import os
import subprocess
import sys

import pytest
import vtab_eval_toys as toys

from vtab_eval import finetune, report
from vtab_eval import run as run_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [
    "--selectors=knn,random,baseline",
    "--sweep=quick",
    "--resolution=16",
    "--selection_resolution=16",
    "--num_retrains=2",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_cli")
    save = toys.save_toy_module
    modules = [
        save(str(root / "b"), "noise", {"name": "baseline", "kind": "baseline"}),
        save(str(root / "noise"), "noise", {"name": "expert_noise", "kind": "full"}),
        save(str(root / "colour"), "colour", {"name": "expert_colour", "kind": "full"}),
    ]
    pool = toys.write_handle_list(str(root / "pool.txt"), modules)
    data = toys.make_colour_folder(str(root / "data"), per_class=8)
    out = root / "out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
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
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, pool, f"folder:{data}", out, proc.stdout + proc.stderr


def test_end_to_end_selects_finetunes_and_reports(finished_run):
    root, _, task, out, console = finished_run
    slug = report.task_slug(task)
    knn = json.loads((out / "results" / slug / "knn.json").read_text())
    assert knn["complete"] and knn["summary"]["num_outcomes"] == 2
    assert knn["selections"][0]["handle"] == str(root / "colour")
    assert knn["ranking"]["selected_name"] == "expert_colour"
    assert [e["name"] for e in knn["ranking"]["experts"]] == ["expert_noise", "expert_colour"]
    assert all(0 <= r["score"] <= 1 for r in knn["selections"][0]["retrains"])
    baseline = json.loads((out / "results" / slug / "baseline.json").read_text())
    assert baseline["selections"][0]["handle"] == str(root / "b")
    text = (out / "report.md").read_text()
    assert "| Method | Other | Mean |" in text
    assert any(line.startswith("| knn |") for line in text.splitlines())
    assert "| expert_colour | **100.0** |" in text
    assert (out / "plots" / f"{slug}__knn.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"knn", "random", "baseline"}
    assert "selected expert_colour" in console and "baseline" in console


def _count_finetunes(monkeypatch):
    calls = []
    real = finetune.finetune_and_evaluate

    def counting(*args, **kwargs):
        calls.append(args[2:4])
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_and_evaluate", counting)
    return calls


def _rerun(pool, task, out, **overrides):
    kwargs = dict(
        selectors=["knn", "random", "baseline"],
        sweep="quick",
        resolution=16,
        selection_resolution=16,
        num_retrains=2,
        log=lambda m: None,
    )
    kwargs.update(overrides)
    return run_lib.run_command(pool, [task], str(out), **kwargs)


def test_rerun_skips_finished_work_and_resumes_a_killed_task(finished_run, monkeypatch):
    _, pool, task, out, _ = finished_run
    calls = _count_finetunes(monkeypatch)
    _rerun(pool, task, out)
    assert calls == []
    # As if killed after the first retrain of the knn trial: only the second one runs again.
    path = out / "results" / report.task_slug(task) / "knn.json"
    state = json.loads(path.read_text())
    state["selections"][0]["retrains"] = state["selections"][0]["retrains"][:1]
    state["complete"] = False
    report.write_json(str(path), state)
    results = _rerun(pool, task, out)
    assert calls == [("train800val200", "test")]
    assert results["knn"][task]["complete"] and len(results["knn"][task]["outcomes"]) == 2


def test_changed_settings_are_refused_not_mixed(finished_run):
    _, pool, task, out, _ = finished_run
    with pytest.raises(ValueError, match="different settings"):
        _rerun(pool, task, out, num_retrains=3)
    with pytest.raises(ValueError, match="unknown selectors"):
        _rerun(pool, task, out, selectors=["oracle"])


def test_expand_tasks():
    assert len(run_lib.expand_tasks(["vtab1k"])) == 19
    assert run_lib.expand_tasks(["cifar100", "vtab1k"])[0] == "cifar100"
    with pytest.raises(ValueError, match="no tasks"):
        run_lib.expand_tasks([" "])
