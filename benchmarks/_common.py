"""Helpers shared by the benchmark scripts: one measurement per child process, medians, tables.

Each measurement runs in a fresh `python -m benchmarks.<script> --child ...` process so that its peak
resident memory (`ru_maxrss`) is its own and frameworks (TensorFlow, PyTorch, faiss) never share a
process or a thread pool. The child prints one JSON line, prefixed with `RESULT `, on stdout.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys

RESULT_PREFIX = "RESULT "


def peak_rss_mib() -> float:
    """This process's peak resident memory (since the last `reset_peak_rss`), in MiB."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def current_rss_mib() -> float:
    """This process's resident memory now, in MiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark to the current RSS (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


def emit_result(result: dict) -> None:
    """Prints a child's result as the single line the parent looks for."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(module: str, args: list[str], timeout_s: float) -> dict:
    """Runs `python -m module *args` and returns the dict it emitted; RuntimeError if it emitted none."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(
        f"{module} {' '.join(args)} exited with {proc.returncode} and no result:\n"
        f"{proc.stderr[-3000:]}"
    )


def median(values):
    """Median of the non-None `values`, or None when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def machine_line() -> str:
    """CPU model and core count, as RESULTS.md reports them."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, load average {load:.1f} at start"


def format_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-markdown table; floats get 3 significant digits, None prints as '-'."""

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
