"""Benchmark: kNN expert selection + fine-tuning against Domain Adaptive Transfer + fine-tuning.

    OMP_NUM_THREADS=2 taskset -c 0,1 python -m benchmarks.transfer_cost --upstream runs/demo/upstream
    python -m benchmarks.transfer_cost --config world_demo:quick --tasks textures --sweep quick
                                 # smoke: trains and publishes its own tiny upstream first

The paper's cost claim (section 5 of issue 12): selecting an expert with kNN is 500-1000x cheaper
than Domain Adaptive Transfer (DAT; Ngiam et al., 2018), which, as Puigcerver et al. run it,
fine-tunes B for every task on the upstream data re-weighted towards the task's labels. On the
offline world, per task and side by side, one child process each (their order alternates between
tasks and repeats), pinned to the same cores with the same thread counts:

  select  `vtab_eval.ranking.rank(collection, task, "knn")` (B included, the default) on
          train800val200 with a fresh feature cache (every candidate embeds the 1000 images), then
          the VTAB-1k protocol (`vtab_eval.runner.run_tracks`) on the selected module with the demo's sweep
  dat     B's predictions on train800val200 -> importance weights -> B's trained weights, head
          included, fine-tuned on the re-weighted data with the schedule that makes a full expert
          from B (the upstream config's `full` stage; `bit_experts.training.dat.finetune`),
          exported as a feature-vector module, then the same protocol with the same sweep and seed

Each child reports seconds per part and the image passes it made (forward: one per image a network
sees; backward: one per training image; a backward costs about 2 forwards in FLOPs, so the
*forward-equivalents* are forward + 2 x backward). The upstream job, the published collection and
the tasks are made once before (their one-time cost is printed, not part of the per-task ratio).
The same ratio is then computed analytically from image passes at the paper's scale.
"""

import argparse
import json
import os
import shutil
import tempfile
import time

from benchmarks import _common

DEMO_TASKS = ("digits", "greek_lower_heldout_fonts", "glyph_count", "textures")
SELECTION_SPLIT = "train800val200"
# The paper's scale, from bit_experts/configs/imagenet21k.py (this repository's settings for
# ImageNet-21k, not a published recipe): B = R50x1, 300k steps of batch 4096 at 224 px;
# 50 full + 50 adapter experts, ranked together with B.
PAPER_UPSTREAM_STEPS = 300_000
PAPER_UPSTREAM_BATCH = 4096
# DAT's fine-tune of B at that scale: the config's full-expert schedule (10k steps), which
# `dat.finetune` uses, and twice that. B's schedule is 15-30x longer (issue 25 puts DAT at 15-31x
# less than B by the paper's figures).
PAPER_DAT_STEPS = (10_000, 20_000)
PAPER_CANDIDATES = 50 + 50 + 1
PAPER_TASK_IMAGES = 1000  # VTAB-1k: train800val200.
PAPER_TEST_IMAGES = 10_000  # A typical VTAB test split (sizes vary by task).
# One-time cost of the experts (same config): 50 full + 50 adapter experts x 10k steps, EPN 20k.
PAPER_EXPERT_STEPS = 50 * 10_000 + 50 * 10_000 + 20_000


def forward_equivalents(passes):
    """forward + 2 x backward image passes (a backward pass costs about twice a forward one)."""
    return passes["forward"] + 2 * passes["backward"]


def finetune_passes(runs):
    """Image passes of the protocol's fine-tunes: training steps x batch forward and backward, plus
    one forward per evaluated image."""
    train = sum(r["steps"] * r["batch_size"] for r in runs)
    return {"forward": train + sum(r["num_examples"] for r in runs), "backward": train}


def _sweep(name, resolution):
    from vtab_eval import sweeps

    return sweeps.get_sweep(name, resolution=None if name == "demo" else resolution)


def _protocol(handle, task, sweep, seed):
    """The VTAB-1k protocol on one module, through the runner with a temporary memo."""
    import tempfile

    from vtab_eval import plan, runner

    start = time.perf_counter()
    track = plan.Track(plan.Job(task, "vtab1k", "per_selection", sweep), "cost", [(handle, {})])
    track.seed = seed
    with tempfile.TemporaryDirectory() as memo_dir:
        executor = runner.Executor(runner.Memo(memo_dir), log=None, progress=False)
        runner.run_tracks([track], executor)
        specs = track.tuning[0] + track.retrains[0]
        runs = [dict(executor.memo.get(s), batch_size=s.setting["batch_size"]) for s in specs]
    seconds = time.perf_counter() - start
    outcome = runs[-1]["score"]  # the one retrain on test
    return seconds, finetune_passes(runs), outcome, len(runs)


def _task_images(task):
    import numpy as np

    images = [ex["image"].numpy() for ex in task.load(SELECTION_SPLIT)]
    return np.stack(images)


def child_select(args):
    from hub_export import collection
    from vtab_eval import ranking
    from vtab_eval.tasks import get_task

    task = get_task(args.task)
    pool = collection.resolve_pool(args.collection)
    cache_dir = tempfile.mkdtemp(prefix="bench-transfer-cache-")
    try:
        start = time.perf_counter()
        options = {"split": SELECTION_SPLIT, "resolution": args.resolution}
        ranked = ranking.rank(pool, task, "knn", options, cache_dir=cache_dir)
        select_s = time.perf_counter() - start
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    candidates = sum(e["status"] == "ok" for e in ranked["experts"])
    num_images = ranked["num_images"]
    finetune_s, ft_passes, score, runs = _protocol(
        ranked["selected"], task, _sweep(args.sweep, args.resolution), args.seed
    )
    return {
        "selected": ranked["selected_name"],
        "candidates": candidates,
        "prepare_s": select_s,
        "prepare_passes": {"forward": candidates * num_images, "backward": 0},
        "finetune_s": finetune_s,
        "finetune_passes": ft_passes,
        "finetunes": runs,
        "score": score,
    }


def child_dat(args):
    import numpy as np

    from bit_experts.data import load_source  # noqa: F401 (imported before TF work is timed)
    from bit_experts.training import config as training_config
    from bit_experts.training import dat, outputs, upstream
    from hub_export.module import HubModule, save_module
    from vtab_eval.tasks import get_task

    task = get_task(args.task)
    with open(os.path.join(args.upstream, "config.json"), encoding="utf-8") as f:
        config = training_config.resolve_config(json.load(f))
    start = time.perf_counter()
    source = upstream.open_source(config)
    open_s = time.perf_counter() - start
    images = _task_images(task)

    start = time.perf_counter()
    b = outputs.load_model(args.upstream, "baseline")
    size = config["model"]["image_size"]
    probs = dat.predict_label_probabilities(b, images, size)
    weights = dat.importance_weights(
        dat.target_label_distribution(probs), source.image_labels, source.num_labels
    )
    weights_s = time.perf_counter() - start
    workdir = tempfile.mkdtemp(prefix="bench-dat-", dir=args.scratch)
    try:
        start = time.perf_counter()
        run = dat.finetune(args.upstream, workdir, source, weights, print_fn=lambda m: None)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        handle = os.path.join(workdir, "module")
        save_module(HubModule(run.model, "features"), handle, {"name": "dat", "resolution": size})
        export_s = time.perf_counter() - start
        finetune_s, ft_passes, score, runs = _protocol(
            handle, task, _sweep(args.sweep, args.resolution), args.seed
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    schedule = dat.schedule_of(config)
    steps, batch = schedule["steps"], schedule["batch_size"] or config["batch_size"]
    top = np.argsort(-weights)[:1]
    return {
        "open_upstream_s": open_s,
        "weights_s": weights_s,
        "dat_train_s": train_s,
        "export_s": export_s,
        "prepare_s": weights_s + train_s + export_s,
        "prepare_passes": {"forward": len(images) + steps * batch, "backward": steps * batch},
        "finetune_s": finetune_s,
        "finetune_passes": ft_passes,
        "finetunes": runs,
        "score": score,
        "weight_max": float(weights[top[0]]),
        "weight_zero_share": float(np.mean(weights < 1e-3)),
    }


def child_main(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    load = os.getloadavg()[0]
    result = child_select(args) if args.method == "select" else child_dat(args)
    result["load_before"] = load
    result["peak_mib"] = _common.peak_rss_mib()
    _common.emit_result(result)


def paper_scale_table(dat_steps, upstream_batch, candidates, task_images, test_images):
    """Rows (fine-tune protocol, DAT steps, selection FE, DAT FE, fine-tune FE, ratios) in
    forward-equivalents (FE) at the paper's scale, from image-pass counts alone; one row per
    protocol and DAT length in `dat_steps`."""
    from vtab_eval import sweeps

    select = forward_equivalents({"forward": candidates * task_images, "backward": 0})
    hyper = sweeps.get_sweep("bit_hyperrule", dataset_size=task_images)
    light = sweeps.get_sweep("vtab_lightweight")
    protocols = {
        "BiT-HyperRule (1 run)": [(hyper[0], test_images)],
        "VTAB lightweight, best = 2500 steps": [(s, 200) for s in light]
        + [(min(light, key=lambda s: s["steps"]), test_images)],
        "VTAB lightweight, best = 10000 steps": [(s, 200) for s in light]
        + [(max(light, key=lambda s: s["steps"]), test_images)],
    }
    rows = []
    for name, runs in protocols.items():
        ft = forward_equivalents(
            finetune_passes(
                [
                    {"steps": s["steps"], "batch_size": s["batch_size"], "num_examples": n}
                    for s, n in runs
                ]
            )
        )
        for steps in dat_steps:
            images = steps * upstream_batch
            dat_fe = forward_equivalents({"forward": task_images + images, "backward": images})
            rows.append(
                [name, steps, select, dat_fe, ft, dat_fe / select, (dat_fe + ft) / (select + ft)]
            )
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--upstream",
        default=None,
        help="an existing upstream work directory with models/ (read only); default: train one",
    )
    parser.add_argument("--config", default="world_demo", help="upstream config when training one")
    parser.add_argument("--tasks", default=",".join(DEMO_TASKS), help="comma-separated world tasks")
    parser.add_argument("--sweep", default="demo", help="'demo' (the offline demo's) or a preset")
    parser.add_argument("--resolution", type=int, default=32, help="px of selection and sweep")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the tasks (seed = r)")
    parser.add_argument("--threads", type=int, default=2, help="TF intra/inter-op threads")
    parser.add_argument("--workdir", default=None, help="collection, tasks, scratch (default: tmp)")
    parser.add_argument("--timeout_s", type=float, default=3600.0, help="per child process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=("select", "dat"), help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--collection", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    if args.upstream is not None and not os.path.isdir(os.path.join(args.upstream, "models")):
        parser.error(
            f"--upstream {args.upstream!r} has no models/ folder (a finished upstream job)"
        )
    return args


def _setup(args, workdir):
    """The upstream job (unless given), its published collection and the tasks; seconds of each."""
    from bit_experts.training import config as training_config
    from bit_experts.training import job
    from bit_experts.world import write_downstream_tasks
    from hub_export import publish

    timings = {}
    upstream = args.upstream
    if upstream is None:
        upstream = os.path.join(workdir, "upstream")
        start = time.perf_counter()
        job.run_job(training_config.load_config(args.config), upstream, print_fn=lambda m: None)
        timings["upstream s"] = time.perf_counter() - start
    collection = os.path.join(workdir, "collection")
    start = time.perf_counter()
    publish.publish([upstream], collection, log=lambda m: None)
    timings["publish s"] = time.perf_counter() - start
    tasks = args.tasks.split(",")
    start = time.perf_counter()
    dirs = write_downstream_tasks(os.path.join(workdir, "tasks"), image_size=32, tasks=tasks)
    timings["tasks s"] = time.perf_counter() - start
    return upstream, collection, dict(zip(tasks, dirs, strict=True)), timings


def _spread(values):
    med = _common.median(values)
    return f"{med:.3g} [{min(values):.3g}-{max(values):.3g}]"


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    print(f"machine: {_common.machine_line()}; threads {args.threads}", flush=True)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-transfer-")
    os.makedirs(workdir, exist_ok=True)
    upstream, collection, task_dirs, timings = _setup(args, workdir)
    print("one-time setup: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), flush=True)
    with open(os.path.join(upstream, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    results = {"select": [], "dat": []}
    turn = 0
    for repeat in range(args.repeats):
        for name, task_dir in task_dirs.items():
            order = ("select", "dat") if turn % 2 == 0 else ("dat", "select")
            turn += 1
            for method in order:
                child = ["--child", "--method", method, "--task", f"folder:{task_dir}"]
                child += ["--collection", collection, "--upstream", upstream, "--scratch", workdir]
                child += ["--sweep", args.sweep, "--resolution", str(args.resolution)]
                child += ["--threads", str(args.threads), "--seed", str(repeat)]
                result = _common.run_child("benchmarks.transfer_cost", child, args.timeout_s)
                result.update(task=name, repeat=repeat)
                print(f"  {name} r{repeat} {method}: {json.dumps(result)}", flush=True)
                results[method].append(result)
    _report(args, config, results)


def _report(args, config, results):
    from bit_experts.training import config as training_config
    from bit_experts.training import dat

    config = training_config.resolve_config(config)
    rows = []
    for sel, dat_r in zip(results["select"], results["dat"], strict=True):
        sel_total = sel["prepare_s"] + sel["finetune_s"]
        dat_total = dat_r["prepare_s"] + dat_r["finetune_s"]
        sel_fe = forward_equivalents(sel["prepare_passes"]) + forward_equivalents(
            sel["finetune_passes"]
        )
        dat_fe = forward_equivalents(dat_r["prepare_passes"]) + forward_equivalents(
            dat_r["finetune_passes"]
        )
        rows.append(
            {
                "task": sel["task"],
                "repeat": sel["repeat"],
                "select_s": sel["prepare_s"],
                "dat_s": dat_r["prepare_s"],
                "ft_sel_s": sel["finetune_s"],
                "ft_dat_s": dat_r["finetune_s"],
                "ratio_prepare_s": dat_r["prepare_s"] / sel["prepare_s"],
                "ratio_total_s": dat_total / sel_total,
                "ratio_prepare_fe": forward_equivalents(dat_r["prepare_passes"])
                / forward_equivalents(sel["prepare_passes"]),
                "ratio_total_fe": dat_fe / sel_fe,
                "acc_sel": sel["score"],
                "acc_dat": dat_r["score"],
                "selected": sel["selected"],
                "load": (sel["load_before"], dat_r["load_before"]),
            }
        )
    schedule = dat.schedule_of(config)
    batch = schedule["batch_size"] or config["batch_size"]
    print(
        f"\nPer task (B: {config['model']['preset']} at {config['model']['image_size']} px, "
        f"{config['baseline']['steps']} upstream steps; DAT fine-tunes it {schedule['steps']} "
        f"steps x batch {batch} at base_lr {schedule['base_lr']}; sweep {args.sweep}; "
        f"fine-tune seed = repeat; accuracy n = 1 per cell):"
    )
    headers = ["task", "r", "kNN select s", "DAT re-weight+fine-tune B+export s", "fine-tune s"]
    headers += ["DAT/select s", "DAT+ft / select+ft s", "DAT/select passes"]
    headers += ["DAT+ft / select+ft passes", "kNN pick", "acc kNN+ft", "acc DAT+ft", "load"]
    table = [
        [
            r["task"],
            r["repeat"],
            r["select_s"],
            r["dat_s"],
            f"{r['ft_sel_s']:.0f} / {r['ft_dat_s']:.0f}",
            r["ratio_prepare_s"],
            r["ratio_total_s"],
            r["ratio_prepare_fe"],
            r["ratio_total_fe"],
            r["selected"],
            r["acc_sel"],
            r["acc_dat"],
            f"{r['load'][0]:.1f} / {r['load'][1]:.1f}",
        ]
        for r in rows
    ]
    print(_common.format_table(headers, table))
    sel0, dat0 = results["select"][0], results["dat"][0]
    print(
        f"image passes per task: select {sel0['prepare_passes']} ({sel0['candidates']} candidates x "
        f"{sel0['prepare_passes']['forward'] // sel0['candidates']} images); DAT "
        f"{dat0['prepare_passes']}; fine-tune {sel0['finetune_passes']} ({sel0['finetunes']} runs)"
    )
    print(
        "DAT parts, median s: "
        + ", ".join(
            f"{k} {_common.median([d[k] for d in results['dat']]):.1f}"
            for k in ("weights_s", "dat_train_s", "export_s", "open_upstream_s")
        )
    )
    n = len(rows)
    print(
        f"\nmedians [min-max] over {n} paired measurements: DAT/select seconds "
        f"{_spread([r['ratio_prepare_s'] for r in rows])}; (DAT+fine-tune)/(select+fine-tune) "
        f"seconds {_spread([r['ratio_total_s'] for r in rows])}; accuracy kNN+ft "
        f"{_spread([r['acc_sel'] for r in rows])}, DAT+ft {_spread([r['acc_dat'] for r in rows])}"
    )
    print(
        f"\nPaper scale, analytic (forward-equivalents = forward + 2 x backward image passes): B "
        f"fine-tuned {' or '.join(map(str, PAPER_DAT_STEPS))} steps x {PAPER_UPSTREAM_BATCH} "
        f"(B itself: {PAPER_UPSTREAM_STEPS} steps); {PAPER_CANDIDATES} candidates x "
        f"{PAPER_TASK_IMAGES} images; test split {PAPER_TEST_IMAGES}; every network at 224 px, so "
        "the per-pass FLOPs are equal and cancel:"
    )
    rows = paper_scale_table(
        PAPER_DAT_STEPS,
        PAPER_UPSTREAM_BATCH,
        PAPER_CANDIDATES,
        PAPER_TASK_IMAGES,
        PAPER_TEST_IMAGES,
    )
    headers = ["fine-tune protocol", "DAT steps", "kNN select FE", "DAT FE", "fine-tune FE"]
    headers += ["DAT / select", "(DAT+ft) / (select+ft)"]
    print(_common.format_table(headers, rows))
    experts_fe = 3 * PAPER_EXPERT_STEPS * PAPER_UPSTREAM_BATCH
    for row in rows[: len(PAPER_DAT_STEPS)]:
        print(
            f"One-time expert training (not per task): {PAPER_EXPERT_STEPS} steps x "
            f"{PAPER_UPSTREAM_BATCH} = {experts_fe:.3g} forward-equivalents = "
            f"{experts_fe / row[3]:.1f} DAT fine-tunes of {row[1]} steps: selection is cheaper "
            f"in total from {experts_fe / (row[3] - row[2]):.1f} tasks on."
        )


if __name__ == "__main__":
    main()
