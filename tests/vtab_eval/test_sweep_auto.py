"""`--sweep=auto` (the default, issue 25): table-3 tasks get the table-3 search, the others the
sweep they had before, so the default plan of a VTAB-1k or folder task keeps every spec key."""

import types

import pytest
import vtab_eval_toys as toys

from vtab_eval import checks, config, identity, plan, protocol, results, runner, sweeps, tasks

EXPERT = types.SimpleNamespace(handle="expert_a", name="expert_a", sha256="a" * 64, metadata={})

# identity.content_hash(keys, 16) of the tuning specs and retrain placeholders of one kNN track
# (2 selections of EXPERT) on each task, for `config.make(tasks=[...])` (no --sweep), computed by
# `plan_keys` at commit 65a04d8, before "auto" existed (the default sweep was "local"). A change of
# the spec format or of a task's definition changes them on purpose; then recompute them there.
KEYS_BEFORE_AUTO = {
    "cifar100": "2f775df1213d2ab3",
    "clevr_count": "b70d6a24c67197ea",
    "dsprites_location": "8b2d2f6209d68df9",
    "oxford_iiit_pet": "7e26cdeb81b81ccd",
    "cifar10": "0ccb2f361c5cb0e7",  # a table-3 task: now only with --sweep=local
}


def plan_keys(cfg):
    """Task name -> hash of the spec keys a default run would plan (before any ranking)."""
    keys = {}
    for job in checks.make_jobs(cfg):
        track = plan.make_track(cfg, job, "knn", [(EXPERT, {})] * 2)
        plan.plan_tuning(track)
        found = [s.key for specs in track.tuning for s in specs]
        found += sorted(plan.retrain_placeholders(track))
        keys[job.task.name] = identity.content_hash(found, 16)
    return keys


def test_auto_is_the_default_and_picks_the_suites_sweep():
    assert config.DEFAULTS["finetune"]["sweep"] == "auto"
    default = config.make()["finetune"]
    by_name = {n: plan.sweep_preset(tasks.get_task(n), default) for n in tasks.list_tasks()}
    assert {n for n, p in by_name.items() if p == "random_search"} == set(
        tasks.list_tasks("table3")
    )
    assert {p for n, p in by_name.items() if n in tasks.list_tasks("vtab1k")} == {"local"}
    assert protocol.default_sweep(tasks.get_task("cifar10")) == "random_search"
    # A named preset or a flags grid is taken as given, whatever the suite.
    table3_task = tasks.get_task("cifar10")
    assert plan.sweep_preset(table3_task, dict(default, sweep="local")) == "local"
    assert plan.sweep_preset(table3_task, dict(default, learning_rates=[0.1], steps=[5])) == "flags"
    with pytest.raises(ValueError, match=r"finetune.sweep must be one of \('auto', "):
        config.make(finetune={"sweep": "fast"})


def test_table3_tasks_get_the_table3_search_by_default():
    cfg = config.make(tasks=["table3", "cifar100"], collection="C")
    jobs = checks.make_jobs(cfg)
    assert [job.preset for job in jobs] == ["random_search"] * 6 + ["local"]
    for job in jobs[:6]:
        assert (job.scheme, job.search) == ("full", "once")
        size = cfg["finetune"]["random_search_size"]
        assert job.sweep == sweeps.for_task(sweeps.random_search(size, cfg["seed"]), job.task)


def test_result_files_record_the_preset_outside_their_identity(tmp_path):
    def fake_finetune(handle, task, train_split, eval_split, setting, **kwargs):
        return {"score": 0.5, "setting": setting["name"], "seed": kwargs["seed"]}

    cfg = config.make(tasks=["cifar10"], collection="C", finetune={"random_search_size": 1})
    (job,) = checks.make_jobs(cfg)
    track = plan.make_track(cfg, job, "knn", [(EXPERT, {})])
    memo = runner.Memo(str(tmp_path / "memo"))
    executor = runner.Executor(memo, finetune_fn=fake_finetune, log=None, progress=False)
    runner.run_tracks([track], executor)
    settings = results.run_settings(cfg)
    written = results.write_result([track], memo, settings, [EXPERT], str(tmp_path), print)
    assert written["sweep_preset"] == "random_search" and written["outcomes"] == [0.5]
    job.preset = "local"  # a name only: the settings, hence the identity, are the same
    again = results.write_result([track], memo, settings, [EXPERT], str(tmp_path), print)
    assert again["identity"] == written["identity"] and again["sweep_preset"] == "local"


def test_default_plans_of_vtab_tasks_keep_their_spec_keys():
    vtab = [n for n in KEYS_BEFORE_AUTO if n != "cifar10"]
    assert plan_keys(config.make(tasks=vtab, collection="C")) == {
        n: KEYS_BEFORE_AUTO[n] for n in vtab
    }
    # The table-3 task changed by design; asking for the old sweep gives the old keys.
    explicit = config.make(tasks=["cifar10"], collection="C", finetune={"sweep": "local"})
    assert plan_keys(explicit) == {"cifar10": KEYS_BEFORE_AUTO["cifar10"]}
    assert plan_keys(config.make(tasks=["cifar10"], collection="C")) != plan_keys(explicit)


def test_default_plan_of_a_folder_task_is_the_local_sweeps(tmp_path):
    name = "folder:" + toys.make_colour_folder(str(tmp_path / "data"), per_class=4)
    default = plan_keys(config.make(tasks=[name], collection="C"))
    local = plan_keys(config.make(tasks=[name], collection="C", finetune={"sweep": "local"}))
    assert default == local
    quick = plan_keys(config.make(tasks=[name], collection="C", finetune={"sweep": "quick"}))
    assert quick != default
