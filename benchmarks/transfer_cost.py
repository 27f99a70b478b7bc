"""Benchmark: one task's expert selection cost against fine-tuning one expert with a sweep.

    python -m benchmarks.transfer_cost                      # 16 r14_tiny experts, local sweep; ~5 min
    python -m benchmarks.transfer_cost --experts 4 --sweep quick    # smoke run, ~1 min

The paper's headline comparison (section 5): ranking every expert of the pool with kNN on the
task's 1000 training images is cheap next to fine-tuning even one of them. On the offline world's
`textures` folder task, with randomly initialised exported modules (nothing is downloaded), one
child process per repeat measures:

  selection   `vtab_eval.ranking.rank(pool, task, "knn", cache_dir=<fresh dir>)`, cold cache
  fine-tune   `vtab_eval.protocol.run_protocol` on the selected expert: every setting of the
              sweep trained on train800 and scored on val200, then the best one retrained on
              train800val200 and scored on test (one selection, one retrain)

and prints the ratio selection / fine-tuning (the smaller, the cheaper selection is).
"""

import argparse
import os
import shutil
import tempfile
import time

from benchmarks import _common
from benchmarks.selection import export_pool, write_task

SWEEPS = ("local", "quick")


def child_main(args):
    from vtab_eval import protocol, ranking, sweeps
    from vtab_eval.tasks import get_task

    handles = args.handles.split(",")
    task = get_task(args.task)
    cache_dir = tempfile.mkdtemp(prefix="bench-transfer-cache-")
    try:
        start = time.perf_counter()
        ranked = ranking.rank(handles, task, "knn", resolution=args.resolution, cache_dir=cache_dir)
        selection_s = time.perf_counter() - start
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    sweep = getattr(sweeps, args.sweep)(resolution=args.resolution)
    start = time.perf_counter()
    state = protocol.run_protocol(lambda index: (ranked["selected"], {}), task, sweep)
    finetune_s = time.perf_counter() - start
    runs = state["selections"][0]["tuning"] + state["selections"][0]["retrains"]
    _common.emit_result(
        {
            "selection_s": selection_s,
            "finetune_s": finetune_s,
            "num_finetunes": len(runs),
            "train_steps": sum(r["steps"] for r in runs),
            "test_score": state["outcomes"][0],
            "peak_mib": _common.peak_rss_mib(),
        }
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", type=int, default=16, help="pool size E to select from")
    parser.add_argument("--preset", default="r14_tiny", help="model preset of the experts")
    parser.add_argument("--resolution", type=int, default=32, help="px of modules and sweep")
    parser.add_argument("--sweep", default="local", choices=SWEEPS, help="vtab_eval.sweeps preset")
    parser.add_argument("--repeats", type=int, default=1, help="child processes (median)")
    parser.add_argument("--workdir", default=None, help="where modules and task go (default: tmp)")
    parser.add_argument("--timeout_s", type=float, default=3600.0, help="per child process")
    # Child-process arguments (internal).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--handles", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.experts, args.repeats) < 1:
        parser.error("--experts and --repeats must be >= 1")
    if args.resolution < 32:
        parser.error(f"--resolution must be >= 32; got {args.resolution}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    print(f"machine: {_common.machine_line()}; {args.experts} {args.preset} experts")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-transfer-")
    sub = os.path.join(workdir, f"{args.preset}_{args.resolution}")
    os.makedirs(sub, exist_ok=True)
    handles = export_pool(args.preset, args.experts, args.resolution, sub)
    task = write_task(os.path.join(sub, "tasks"), args.resolution)
    results = []
    for repeat in range(args.repeats):
        child_args = ["--child", "--handles", ",".join(handles), "--task", task]
        child_args += ["--resolution", str(args.resolution), "--sweep", args.sweep]
        result = _common.run_child("benchmarks.transfer_cost", child_args, args.timeout_s)
        print(f"  repeat {repeat}: {result}", flush=True)
        results.append(result)
    m = {k: _common.median([r[k] for r in results]) for k in results[0]}
    ratio = _common.median([r["selection_s"] / r["finetune_s"] for r in results])
    headers = ["experts", "px", "sweep", "selection s", "s/expert", "fine-tunes", "steps"]
    headers += ["fine-tune s", "s/fine-tune", "selection/fine-tune", "peak RSS MiB"]
    row = [f"{args.experts} x {args.preset}", args.resolution, args.sweep, m["selection_s"]]
    row += [m["selection_s"] / args.experts, results[0]["num_finetunes"], results[0]["train_steps"]]
    row += [m["finetune_s"], m["finetune_s"] / results[0]["num_finetunes"], ratio, m["peak_mib"]]
    print(_common.format_table(headers, [row]))
    print(
        f"headline: selecting among {args.experts} experts costs {ratio:.3f}x fine-tuning one "
        f"expert with the {args.sweep} sweep ({len(results)} repeat(s))"
    )


if __name__ == "__main__":
    main()
