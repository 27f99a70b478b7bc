"""The main job on the embedded offline world, end to end: upstream -> experts -> collection ->
selection -> fine-tuning; `python -m vtab_eval.demo` is its command line (and writes the report).

Every stage writes under one work directory and is skipped when its output is complete, so
re-running after a kill (or after the job finished) reuses what is done. Stages: upstream
(`bit_experts.training.job.run_job`, `world_demo` config), publish (`hub_export.publish` into
collection/), tasks (`bit_experts.world.write_downstream_tasks` into tasks/) and evaluate (the
`demo` evaluation config on the four tasks; each fine-tune kept in evaluation/finetunes/).
"""

import os
import time

from bit_experts import atomic_files
from vtab_eval import config, files

DEMO_TASKS = ("digits", "greek_lower_heldout_fonts", "glyph_count", "textures")
IMAGE_SIZE = 32


def run_upstream(upstream_dir, quick, log):
    from bit_experts.training import config as training_config
    from bit_experts.training import job

    cfg = training_config.load_config("world_demo:quick" if quick else "world_demo")
    if quick:
        cfg["experts"]["top_k"] = 1  # the same path with one expert of each kind, for tests
    job.run_job(cfg, upstream_dir, print_fn=log)


def run_publish(upstream_dir, collection_dir, log):
    """Publishes the upstream work directory's modules into `collection_dir`; returns the entries
    written. `hub_export.publish` skips every module already listed from the same source, so it is
    the stage's completion check: a rerun after a kill finishes the collection, and writes nothing
    after a finished publish."""
    from hub_export import publish

    written = publish.publish([upstream_dir], collection_dir, log=log)
    if not written:
        log(f"{collection_dir}: every module already published from the same source")
    return written


def paths(workdir):
    """{"upstream", "collection", "tasks", "evaluation", "timings"} under `workdir` (absolute)."""
    workdir = atomic_files.abspath(workdir)
    found = {n: os.path.join(workdir, n) for n in ("upstream", "collection", "tasks", "evaluation")}
    return dict(found, timings=os.path.join(workdir, "timings.json"))


def evaluation_config(workdir, quick=False, strategy="default", include_baseline=True, **changes):
    """The resolved evaluation config of the demo under `workdir`: the `demo` named config with
    the collection, the four tasks and the output folder there; `changes`: top-level keys."""
    where = paths(workdir)
    return config.make(
        "demo:quick" if quick else "demo",
        collection=where["collection"],
        tasks=[f"folder:{os.path.join(where['tasks'], t)}" for t in DEMO_TASKS],
        output_dir=where["evaluation"],
        finetune={"strategy": strategy},
        selection={"include_baseline": include_baseline},
        **changes,
    )


def run_demo(workdir, eval_config, evaluate, log=print):
    """Runs (or resumes) the four stages under `workdir`; returns the stage timings (seconds).

    `eval_config`: `evaluation_config(workdir, ...)`; `evaluate()`: the evaluate stage (the command
    calls `vtab_eval.engine.evaluate` of `eval_config` there).
    """
    from bit_experts import world

    atomic_files.require_local(
        workdir, "--workdir", "the demo reads its task folders from a local disk; run it there"
    )
    # Every stage writes under workdir: a link out of it is refused now, not stages later.
    atomic_files.refuse_links_out(atomic_files.abspath(workdir), "--workdir")
    where = paths(workdir)
    quick = eval_config["finetune"]["sweep"] == "demo_quick"
    timings = files.read_json(where["timings"], "timings file") or {}

    def timed(name, fn):
        # A finished stage keeps the time of the run that finished it; calling it again is cheap
        # (each stage skips what is complete) and catches outputs deleted since.
        if name in timings:
            log(f"== {name}: finished earlier in {timings[name]:.0f}s ==")
            fn()
            return
        start = time.time()
        log(f"== {name} ==")
        fn()
        timings[name] = round(time.time() - start, 1)
        log(f"== {name} done in {timings[name]:.0f}s ==")
        files.write_json(where["timings"], timings)

    timed("upstream", lambda: run_upstream(where["upstream"], quick, log))
    timed("publish", lambda: run_publish(where["upstream"], where["collection"], log))
    timed(
        "tasks",
        lambda: world.write_downstream_tasks(where["tasks"], seed=0, image_size=IMAGE_SIZE),
    )
    report = os.path.join(eval_config["output_dir"], "report.md")
    log(f"the report is {report}, rewritten as each task finishes")
    timed("evaluate", evaluate)
    return timings
