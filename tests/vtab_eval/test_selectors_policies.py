"""The probe policies (`selectors.policies`): finalists, probe setting and choice by hand; through
`engine.evaluate` with a planted fine-tune (the best probe wins, probes recorded once, cost);
`python -m vtab_eval.run --selectors=knn_probe` end to end on toy modules."""

import json
import os
import subprocess
import sys

import pytest
import vtab_eval_toys as toys

from vtab_eval import config, engine, files, plan, protocol, results, runner, selectors, sweeps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PER_CLASS = 350  # 3 classes, a fifth for test: 840 pool images, so val200 holds 40
POOL_IMAGES, QUICK = 840, sweeps.quick(resolution=16)[0]  # quick: 4 steps of 16 images


def test_finalists_are_b_then_the_proxys_best():
    knn_probe, top1 = selectors.get("knn_probe"), selectors.get("knn_probe_top1")
    scores = {"b": 0.9, "e1": 0.5, "e2": 0.7, "e3": 0.7, "e4": float("nan")}
    assert knn_probe.finalists(scores, "b") == ["b", "e2", "e3"]  # ties: collection order
    assert top1.finalists(scores, "b") == ["b", "e2"]
    experts = {h: v for h, v in scores.items() if h != "b"}
    assert knn_probe.finalists(experts, None) == ["e2", "e3"]  # no B in the pool
    assert knn_probe.finalists(scores, "b", higher_is_better=False) == ["b", "e1", "e2"]
    assert selectors.get("probe_all").finalists(scores, "b") == ["b", "e1", "e2", "e3"]


def test_probe_setting_is_a_quarter_of_the_first_setting():
    demo = sweeps.demo()  # 50 steps, warm-up 5
    probe = selectors.get("knn_probe").probe_setting([*demo, *sweeps.quick()])
    assert probe == dict(demo[0], steps=13, warmup_steps=1, name="lr0.03_probe13")
    short = selectors.get("knn_probe").probe_setting([QUICK])
    assert (short["steps"], short["warmup_steps"], short["name"]) == (1, 0, "lr0.01_steps4_probe1")


def test_choice_is_the_best_probe_ties_to_the_first_finalist():
    choose = selectors.get("knn_probe").choose
    assert choose({"b": 0.5, "e1": 0.7, "e2": 0.6}).selected == "e1"
    tied = choose({"b": 0.7, "e1": 0.7})
    assert tied.selected == "b" and tied.tie_broken


def test_cost_counts_passes_steps_and_fine_tunes():
    unit = {"steps": 4, "batch_size": 16}
    found = plan.cost(300, [dict(unit, steps=1)] * 3, unit)
    assert found == {
        "forward_passes": 300,
        "finetune_steps": 3,
        "finetune_images": 48,
        "fine_tunes": (300 + 3 * 48) / (3 * 64),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("policies")
    pool = toys.save_toy_pool(str(root))
    data = toys.make_colour_folder(str(root / "data"), per_class=PER_CLASS)
    return root, pool, f"folder:{data}"  # named "data" (its folder's name) in results


# Validation scores of the planted fine-tune, by module folder: the noise expert probes best, B
# second, the colour expert (kNN's pick) last.
PROBED = {"noise": 0.9, "b": 0.6, "colour": 0.5}


class Planted:
    """A fine-tune whose validation score is `PROBED`'s (test: 0.5); records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, handle, task, train_split, eval_split, setting, **kwargs):
        self.calls.append((os.path.basename(handle), train_split, eval_split, setting["steps"]))
        return {"score": PROBED[os.path.basename(handle)] if eval_split == "val200" else 0.5}


def _evaluate(pool, task, out, methods, fake, lines=None):
    cfg = config.make(
        collection=pool,
        tasks=[task],
        output_dir=str(out),
        selection={"selectors": methods, "resolution": 16},
        finetune={"sweep": "quick", "resolution": 16},
    )
    log = (lines if lines is not None else []).append
    executor = runner.make_executor(cfg, log, progress=False, finetune_fn=fake)
    return engine.evaluate(cfg, executor=executor, log=log)


def test_the_best_probe_wins_and_is_recorded_once(inputs, tmp_path):
    root, pool, task = inputs
    out, fake, lines = tmp_path / "out", Planted(), []
    methods = ["knn", "knn_probe_top1", "knn_probe", "hindsight"]
    found = _evaluate(pool, task, out, methods, fake, lines)
    # kNN picks the colour expert; top-1 probes B and it (B wins), knn_probe all three (noise).
    picked = {
        m: found[m]["data"]["selections"][0]["selection"]["selected_name"] for m in methods[:3]
    }
    assert picked == {
        "knn": "expert_colour",
        "knn_probe_top1": "baseline",
        "knn_probe": "expert_noise",
    }
    probes = [c for c in fake.calls if c[2] == "val200"]
    # Each module probed once (shared by both policies), 1 step of train800 -> val200, first.
    assert sorted(probes) == [(m, "train800", "val200", 1) for m in ("b", "colour", "noise")]
    assert fake.calls[:3] == probes
    knn_probe = found["knn_probe"]["data"]
    selection = knn_probe["selections"][0]["selection"]
    assert [(p["name"], p["score"]) for p in selection["probes"]] == [
        ("baseline", 0.6),
        ("expert_colour", 0.5),
        ("expert_noise", 0.9),
    ]
    assert selection["seed"] == protocol.probe_seed(0, 0)
    memo = str(out / "finetunes")
    for probe in selection["probes"]:
        assert probe["key"] in knn_probe["spec_keys"]
        record = files.read_json(os.path.join(memo, f"{probe['key']}.json"))
        assert record["result"]["score"] == probe["score"]
    # The probe policy's ranking is kNN's, drawn under knn only.
    assert knn_probe["ranking"]["method"] == "knn"
    assert any("knn_probe: selected expert_noise (best probe" in line for line in lines)
    # A rerun trains nothing: probes, retrains and hindsight all come from the memo.
    again = Planted()
    assert _evaluate(pool, task, out, methods, again)["knn_probe"]["data"] == knn_probe
    assert again.calls == []


def test_each_pick_states_its_cost(inputs, tmp_path):
    _, pool, task = inputs
    methods = ["knn", "knn_probe", "probe_all", "random", "baseline", "hindsight"]
    found = _evaluate(pool, task, tmp_path / "out", methods, Planted())
    cost = {m: found[m]["data"]["cost"] for m in methods}
    unit = 3 * QUICK["steps"] * QUICK["batch_size"]  # one fine-tune: 4 steps of 16 images
    passes = POOL_IMAGES * 3  # train800val200 x the three candidates
    assert cost["knn"] == plan.cost(passes, [], QUICK)
    assert cost["knn"]["fine_tunes"] == passes / unit and cost["knn"]["finetune_steps"] == 0
    assert cost["knn_probe"] == {
        "forward_passes": passes,
        "finetune_steps": 3,  # 3 finalists x 1 step
        "finetune_images": 3 * 16,
        "fine_tunes": (passes + 3 * 3 * 16) / unit,
    }
    assert cost["probe_all"]["forward_passes"] == 0 and cost["probe_all"]["finetune_steps"] == 3
    assert cost["random"] == cost["baseline"] == plan.cost(0, [], QUICK)
    assert cost["hindsight"] == plan.cost(0, [QUICK] * 3, QUICK)  # 3 full fine-tunes
    assert cost["hindsight"]["fine_tunes"] == 3.0


def test_dry_run_counts_the_probes(inputs, tmp_path):
    _, pool, task = inputs
    cfg = config.make(
        collection=pool,
        tasks=[task],
        output_dir=str(tmp_path / "out"),
        selection={"selectors": ["knn_probe", "probe_all"], "resolution": 16},
        finetune={"sweep": "quick", "resolution": 16},
    )
    lines = []
    found = engine.dry_run(cfg, lines.append, finetune_fn=Planted())
    # 3 probes each (the finalists' keys are not known before ranking), then 2 final fine-tunes.
    assert found["fine_tunes"] == 8
    assert any("fine-tunes: 8 after sharing identical ones (0 tuning, 6 short" in x for x in lines)


def test_a_task_without_val200_is_refused_before_any_work(inputs, tmp_path):
    root, pool, _ = inputs
    small = "folder:" + toys.make_colour_folder(str(root / "small"), per_class=8)
    fake = Planted()
    with pytest.raises(ValueError, match=r"too small for split 'val200'.*unless a probe policy"):
        _evaluate(pool, small, tmp_path / "out", ["knn_probe"], fake)
    assert fake.calls == [] and not (tmp_path / "out").exists()


def test_run_command_with_a_probe_policy(inputs):
    """`python -m vtab_eval.run --selectors=knn_probe`: real probes and fine-tune, report."""
    root, pool, task = inputs
    out = root / "cli_out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vtab_eval.run",
            f"--collection={pool}",
            f"--tasks={task}",
            f"--output_dir={out}",
            "--selectors=knn,knn_probe",
            "--sweep=quick",
            "--resolution=16",
            "--selection_resolution=16",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(open(results.result_path(str(out), "data", "knn_probe")).read())
    selection = written["selections"][0]["selection"]
    probes = {p["name"]: p["score"] for p in selection["probes"]}
    assert list(probes) == ["baseline", "expert_colour", "expert_noise"]
    assert probes[selection["selected_name"]] == max(probes.values())
    assert written["complete"] and written["cost"]["finetune_steps"] == 3
    # 3 probes and at most 2 final fine-tunes (kNN's and the policy's pick, shared if equal).
    records = [p for p in os.listdir(out / "finetunes") if p.endswith(".json")]
    console = proc.stdout + proc.stderr
    assert 4 <= len(records) <= 5 and console.count(": validation score ") == 3
    report = (out / "report.md").read_text()
    assert "## What each pick cost" in report and "| knn_probe | 2,520 | 3 |" in report
    assert not (out / "plots" / f"{files.task_slug(task)}__knn_probe.png").exists()
