"""Wall seconds of every command's `--help` and of a flag typo, this tree against another checkout.

    python -m benchmarks.cli_startup --before=/path/to/old/checkout [--repeats=5]

Each run is `python -m <command> <args>` in a fresh process with `PYTHONPATH` and the working folder
set to the tree measured; the trees alternate run by run (which goes first flips every repeat), so a
change of load hits both. Prints the CPU, the load average before and after, a markdown table
(median and min-max seconds per command and case) and a `headline:` line.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = (
    "bit_experts.train",
    "bit_experts.expert_quality",
    "hub_export.publish",
    "hub_export.import_bit_checkpoint",
    "vtab_eval.rank",
    "vtab_eval.run",
    "vtab_eval.demo",
    "vtab_eval.audit",
    "vtab_eval.list_tasks",
)
# case -> (arguments, what its output must hold, so a broken command is not timed as fast)
CASES = {
    "--help": (["--help"], "Try --helpfull"),
    "typo": (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
}


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_command(tree, command, args, expected):
    """Seconds of one `python -m command args` run in `tree`; RuntimeError if its output lacks
    `expected`."""
    env = dict(os.environ, PYTHONPATH=tree)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", command, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    if expected not in done.stdout + done.stderr:
        raise RuntimeError(f"{tree}: {command} {args}: {done.stderr[-500:]}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the checkout to compare against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    args = parser.parse_args()
    trees = {"before": os.path.abspath(args.before), "after": os.getcwd()}
    commands = args.commands.split(",")
    load_before = os.getloadavg()
    times = {}
    for repeat in range(args.repeats):
        order = list(trees) if repeat % 2 == 0 else list(reversed(trees))
        for command in commands:
            for case, (case_args, expected) in CASES.items():
                for name in order:
                    seconds = time_command(trees[name], command, case_args, expected)
                    times.setdefault((command, case, name), []).append(seconds)
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}")
    print(f"before: {trees['before']}; after: {trees['after']}; n = {args.repeats} each\n")
    print("| command | case | before median s (min-max) | after median s (min-max) | x faster |")
    print("|---|---|---|---|---|")
    slowest_after = 0.0
    for command in commands:
        for case in CASES:
            cells = []
            medians = []
            for name in trees:
                values = times[(command, case, name)]
                medians.append(statistics.median(values))
                cells.append(f"{medians[-1]:.2f} ({min(values):.2f}-{max(values):.2f})")
            slowest_after = max(slowest_after, medians[1])
            print(f"| `{command}` | {case} | {' | '.join(cells)} | {medians[0] / medians[1]:.0f} |")
    print(f"\nheadline: the slowest median after is {slowest_after:.2f} s")


if __name__ == "__main__":
    main()
