r"""`--executor=ray` against `--executor=local` on the same cores (issue 23: overhead and scaling).

    taskset -c 0,1 python -m benchmarks.ray_executor --collection=runs/demo/collection \
        --tasks=folder:runs/demo/tasks/digits,folder:runs/demo/tasks/greek_lower_heldout_fonts

Each measurement is one `python -m vtab_eval.run` in a fresh output folder (so nothing is reused
from a memo or a feature cache), as a child process; wall seconds include Python and TensorFlow
start-up, Ray's start-up and, on Ray, each worker's TensorFlow import. The methods are interleaved
over `--repeats` rounds, so a change of load hits all of them; the load average is recorded before
each measurement. Every measurement also checks that its records equal the first run's
(scores less wall times): give `--threads_per_item=1` when methods run on different numbers of
cores (scores depend on the size of TensorFlow's thread pools). "item s" is the sum of the
fine-tunes' own wall times as recorded (the rest of a run's wall time is start-up: Python,
TensorFlow and Ray, ranking, and on Ray each worker's TensorFlow import).

With `--demo_workdir=W` (a finished `python -m vtab_eval.demo --workdir=W`, `--demo_quick` if it
was `--quick`) each measurement is instead the demo's evaluate stage (its `timings.json`) on a copy
of W without its evaluation, with `--executor=local` or `ray`.

Methods (`--methods`):
- `local`: the in-process executor, TensorFlow's default thread pools (all cores given by taskset);
- `ray`: a Ray instance the command starts with every core given, one CPU per item;
- `local_1t`: in process on one core (`taskset -c FIRST`), the scaling baseline;
- `ray_1node`, `ray_2nodes`: a Ray cluster of one or two nodes of one CPU each, started with
  `ray start` on loopback before the round and stopped after it (the command joins it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from benchmarks import _common

METHODS = ("local", "ray", "local_1t", "ray_1node", "ray_2nodes")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_cluster(nodes, temp_dir, env):
    """Starts `nodes` Ray nodes of one CPU on loopback; returns (address, their Popen objects)."""
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    base = [ray_cli, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1"]
    base += ["--disable-usage-stats", f"--temp-dir={temp_dir}"]
    log = open(os.path.join(temp_dir, "start.log"), "a")
    started = [
        subprocess.Popen(
            [*base, "--head", f"--port={port}", "--include-dashboard=false"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    ]
    address = f"127.0.0.1:{port}"
    time.sleep(8)  # the GCS comes up before a second node may join
    for _ in range(nodes - 1):
        started.append(
            subprocess.Popen(
                [*base, f"--address={address}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        )
    time.sleep(8 if nodes > 1 else 0)
    return address, started


def _stop(started):
    for process in reversed(started):
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)


def _records(memo_dir):
    """(key -> result less wall time and output paths, the sum of the items' own seconds)."""
    found, item_seconds = {}, 0.0
    for name in sorted(os.listdir(memo_dir)):
        with open(os.path.join(memo_dir, name), encoding="utf-8") as f:
            record = json.load(f)
        drop = ("seconds", "outputs")
        found[record["key"]] = {k: v for k, v in record["result"].items() if k not in drop}
        item_seconds += record["result"]["seconds"]
    return found, item_seconds


def measure(method, args, cores, work):
    """(wall seconds, records, load average, the items' own seconds) of one run of `method`."""
    out = tempfile.mkdtemp(prefix=f"{method}-", dir=work)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", RAY_AUTH_MODE="disabled")
    command = [sys.executable, "-m", "vtab_eval.run", f"--collection={args.collection}"]
    command += [f"--tasks={args.tasks}", f"--output_dir={out}", "--selectors=knn,baseline"]
    command += [f"--sweep={args.sweep}", f"--num_retrains={args.num_retrains}"]
    command += [f"--threads_per_item={args.threads_per_item}"]
    pin = ",".join(map(str, cores))
    started = []
    if method == "local_1t":
        pin = str(cores[0])
    elif method == "ray":
        command += ["--executor=ray", "--cpus_per_item=1"]
    elif method.startswith("ray_"):
        temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        address, started = _start_cluster(1 if method == "ray_1node" else 2, temp_dir, env)
        command += ["--executor=ray", f"--ray_address={address}", "--cpus_per_item=1"]
    load = os.getloadavg()[0]
    start = time.time()
    try:
        done = subprocess.run(
            ["taskset", "-c", pin, *command], capture_output=True, text=True, env=env
        )
    finally:
        _stop(started)
    seconds = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    records, item_seconds = _records(os.path.join(out, "finetunes"))
    shutil.rmtree(out, ignore_errors=True)
    return seconds, records, load, item_seconds


def measure_demo(method, args, cores, work):
    """(evaluate-stage seconds, records, load average, the items' own seconds) of the demo's
    evaluate stage under `method` (local or ray), on a copy of `args.demo_workdir` whose other
    stages are done and whose evaluation is removed."""
    copy = tempfile.mkdtemp(prefix=f"demo-{method}-", dir=work)
    shutil.rmtree(copy)
    shutil.copytree(args.demo_workdir, copy, ignore=shutil.ignore_patterns("evaluation"))
    with open(os.path.join(copy, "timings.json"), encoding="utf-8") as f:
        timings = json.load(f)
    timings.pop("evaluate", None)
    with open(os.path.join(copy, "timings.json"), "w", encoding="utf-8") as f:
        json.dump(timings, f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", RAY_AUTH_MODE="disabled")
    command = [sys.executable, "-m", "vtab_eval.demo", f"--workdir={copy}"]
    command += ["--quick"] * args.demo_quick + [f"--threads_per_item={args.threads_per_item}"]
    command += ["--executor=ray", "--cpus_per_item=1"] if method == "ray" else []
    load = os.getloadavg()[0]
    pin = ",".join(map(str, cores))
    done = subprocess.run(["taskset", "-c", pin, *command], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"demo {method} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(copy, "timings.json"), encoding="utf-8") as f:
        seconds = json.load(f)["evaluate"]
    records, item_seconds = _records(os.path.join(copy, "evaluation", "finetunes"))
    shutil.rmtree(copy, ignore_errors=True)
    return seconds, records, load, item_seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", help="as vtab_eval.run --collection")
    parser.add_argument("--tasks", help="comma list, as vtab_eval.run --tasks")
    parser.add_argument(
        "--demo_workdir",
        help="measure the demo's evaluate stage instead (methods local and ray), on copies of "
        "this finished demo work directory",
    )
    parser.add_argument("--demo_quick", action="store_true", help="the demo workdir is --quick")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sweep", default="quick")
    parser.add_argument("--num_retrains", type=int, default=2)
    parser.add_argument("--work", default="/tmp/ray_executor_bench")
    parser.add_argument(
        "--threads_per_item",
        type=int,
        default=0,
        help="as vtab_eval.run's; 1 makes every method's records equal (scores depend on it)",
    )
    args = parser.parse_args(argv)
    if not args.demo_workdir and not (args.collection and args.tasks):
        parser.error("give --collection and --tasks, or --demo_workdir")
    methods = args.methods.split(",")
    cores = sorted(os.sched_getaffinity(0))
    os.makedirs(args.work, exist_ok=True)
    times, items = {m: [] for m in methods}, {m: [] for m in methods}
    loads, reference = [], None
    for round_index in range(args.repeats):
        for method in methods if round_index % 2 == 0 else methods[::-1]:
            run = measure_demo if args.demo_workdir else measure
            seconds, records, load, item_seconds = run(method, args, cores, args.work)
            items[method].append(item_seconds)
            reference = reference or records
            same = records == reference
            times[method].append(seconds)
            loads.append(load)
            print(
                f"round {round_index} {method}: {seconds:.1f} s (fine-tunes {item_seconds:.1f} s of "
                f"item time), load {load:.2f}, same records {same}"
            )
            if not same:
                raise RuntimeError(f"{method}'s records differ from the first run's")
    rows = []
    base = _common.median(times["local"]) if "local" in times else None
    for method in methods:
        median = _common.median(times[method])
        spread = f"{min(times[method]):.1f}-{max(times[method]):.1f}"
        ratio = f"{median / base:.2f}" if base else "-"
        inside = _common.median(items[method])
        rows.append([method, f"{median:.1f}", spread, ratio, f"{inside:.1f}"])
    print(_common.machine_line())
    print(f"cores {cores}; load average before each run: {min(loads):.2f}-{max(loads):.2f}")
    head = ["method", "median s", "min-max s", "x local", "item s (sum)"]
    print(_common.format_table(head, rows))
    pairs = ", ".join(f"{m} {_common.median(times[m]) / base:.2f}x" for m in methods if base)
    print(f"headline: wall time against local (n = {args.repeats} each): {pairs}")


if __name__ == "__main__":
    main()
