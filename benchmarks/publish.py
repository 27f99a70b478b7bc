"""Seconds per published module (issue 12, section 4): the exporter before and after, side by side.

    taskset -c 0,1 python -m benchmarks.publish                     # both sizes, 3 repeats
    taskset -c 0,1 python -m benchmarks.publish --cases r14_tiny@32 --repeats 5
    taskset -c 0,1 python -m benchmarks.publish --cases r50x1@224 --only baseline

Each measurement is one child process that runs `hub_export.publish.publish`, validation on, on a
synthetic work directory (docs/workdir.md; random weights) holding one baseline model, which
publishes two modules: a feature vector and a classifier (`--only baseline`: the feature vector
alone). A case is `PRESET@PIXELS`: the model preset and the resolution in its info.json (validation
runs at it and at half of it); the defaults are the demo's `r14_tiny@32` and the paper's `r50x1@224`.

Two code paths are measured, alternating within every repeat so that a change of load hits both:

- `after`: this tree.
- `before`: this tree with `hub_export/module.py` and `hub_export/validate.py` as of
  `--before_commit` (read with `git show`, so it needs the repository's history), swapped in for the
  exporter's module class, `save_module` and `validate_module`, and with that commit's GroupNorm
  group average (`bit_experts.layers._group_average`, which broadcast with `ops.repeat`); everything
  else is this tree's.

Per module the child reports the wall time of the whole publish divided by the modules written, and
the seconds spent in each phase: loading the Keras model, building the module object, the weights
fingerprint, the SavedModel save, the Keras archive, validation, the checksum, and the rest
(manifest, doc pages, lock). Both paths use the same CPU set (the parent's, inherited), the same
TensorFlow intra-op and inter-op thread counts (`--threads`) and `OMP_NUM_THREADS`. The load average is
read before every child. The speed-up is called measured only when the gap between the medians is
larger than the spread (max - min) of both paths.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import _common

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The commit before issue 12's change to the exporter: three traces per save, its own validation.
BEFORE_COMMIT = "71e3672"
_SWAPPED = ("hub_export/module.py", "hub_export/validate.py")
PHASES = ("load", "make", "fingerprint", "save", "keras", "validate", "checksum")
LABELS = [f"label_{i}" for i in range(10)]


def _make_workdir(preset, resolution, root):
    """A work directory with one baseline `preset` model of random weights (docs/workdir.md)."""
    import numpy as np

    from bit_experts.presets import create_model

    os.makedirs(os.path.join(root, "models", "baseline"))
    with open(os.path.join(root, "label_names.json"), "w", encoding="utf-8") as f:
        json.dump(LABELS, f)
    prior = np.full(len(LABELS), 1.0 / len(LABELS)).tolist()
    with open(os.path.join(root, "expert_domains.json"), "w", encoding="utf-8") as f:
        json.dump([{"name": "all", "image_count": 10, "label_prior": prior}], f)
    model = create_model(preset, num_classes=len(LABELS))
    rng = np.random.default_rng(0)
    for w in model.weights:  # non-zero everywhere (the head starts at zero)
        w.assign(w.numpy() + rng.normal(0, 0.01, w.shape).astype("float32"))
    model.save(os.path.join(root, "models", "baseline", "model.keras"))
    info = {
        "name": "baseline",
        "kind": "baseline",
        "preset": preset,
        "resolution": resolution,
        "upstream_dataset": "benchmark",
        "num_classes": len(LABELS),
        "steps": 0,
    }
    with open(os.path.join(root, "models", "baseline", "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f)


def _load_before(commit, folder):
    """The `before` path's module and validate modules, imported from `git show commit:path`."""
    loaded = []
    for rel in _SWAPPED:
        text = _git_show(commit, rel)
        name = "before_" + os.path.basename(rel)[: -len(".py")]
        path = os.path.join(folder, name + ".py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module)
    return loaded


def _git_show(commit, rel):
    return subprocess.run(
        ["git", "-C", _ROOT, "show", f"{commit}:{rel}"], capture_output=True, text=True, check=True
    ).stdout


def _before_function(commit, rel, name, namespace):
    """Function `name` of `rel` at `commit`, compiled alone in `namespace` (its globals).

    Only the function is taken: executing the whole old file would register its Keras classes a
    second time.
    """
    tree = ast.parse(_git_show(commit, rel))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    exec(compile(ast.Module(body=[node], type_ignores=[]), f"{commit}:{rel}", "exec"), namespace)
    return namespace[name]


def _child(args) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from hub_export import expert_modules, handles, identity, keras_artifact, publish

    spent = dict.fromkeys(PHASES, 0.0)

    def timed(phase, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[phase] += time.perf_counter() - start

        return wrapper

    with tempfile.TemporaryDirectory() as tmp:
        if args.path == "before":
            module_py, validate_py = _load_before(args.before_commit, tmp)
            hub_module, save_module, validate = (
                module_py.HubModule,
                module_py.save_module,
                validate_py,
            )
            from keras import ops

            from bit_experts import layers

            layers._group_average = _before_function(
                args.before_commit, "bit_experts/layers.py", "_group_average", {"ops": ops}
            )
        else:
            from hub_export import module as module_py
            from hub_export import validate

            hub_module, save_module = module_py.HubModule, module_py.save_module
        # Every phase is wrapped where publishing looks it up, for both paths alike: expert_modules
        # and publish call hub_export.module's HubModule and save_module when they build and save.
        from hub_export import module as looked_up

        looked_up.HubModule = timed("make", hub_module)
        expert_modules.load_model = timed("load", expert_modules.load_model)
        identity.weights_fingerprint = timed("fingerprint", identity.weights_fingerprint)
        looked_up.save_module = timed("save", save_module)
        keras_artifact.write_keras_artifact = timed("keras", keras_artifact.write_keras_artifact)
        validate.validate_module = timed("validate", validate.validate_module)
        publish.validate = validate
        handles.module_sha256 = timed("checksum", handles.module_sha256)
        start = time.perf_counter()
        written = publish.publish(
            [args.workdir],
            os.path.join(tmp, "collection"),
            only=args.only.split(","),
            log=lambda *_: None,
        )
        total = time.perf_counter() - start
    count = len(written)
    per_module = {k: v / count for k, v in spent.items()}
    per_module["other"] = total / count - sum(per_module.values())
    _common.emit_result(
        {
            "path": args.path,
            "modules": count,
            "seconds_per_module": total / count,
            "phases": per_module,
            "validated": all(e.get("validation") for e in written),
        }
    )


def _setup_child(args) -> None:
    _make_workdir(args.preset, args.resolution, args.workdir)
    _common.emit_result({"workdir": args.workdir})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="r14_tiny@32,r50x1@224", help="PRESET@PIXELS,...")
    parser.add_argument("--paths", default="before,after")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before_commit", default=BEFORE_COMMIT)
    parser.add_argument(
        "--only",
        default="baseline,baseline_classifier",
        help="module names to publish (default both: the feature vector and the classifier)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="after", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "setup":
        _setup_child(args)
        return
    if args.child == "publish":
        _child(args)
        return
    cases = []
    for text in args.cases.split(","):
        preset, sep, pixels = text.partition("@")
        if not sep or not pixels.isdigit():
            parser.error(f"--cases: expected PRESET@PIXELS, got {text!r}")
        cases.append((preset, int(pixels)))
    paths = [p for p in args.paths.split(",") if p]
    if not paths or any(p not in ("before", "after") for p in paths):
        parser.error(f"--paths: expected some of before,after, got {args.paths!r}")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(_common.machine_line())
    print(
        f"CPU set {cpus} (children inherit it), {args.threads} TF intra-op and inter-op threads, "
        f"OMP_NUM_THREADS={args.threads}; before = {', '.join(_SWAPPED)} and "
        f"layers._group_average at {args.before_commit}"
    )
    headlines = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, pixels in cases:
            workdir = os.path.join(tmp, f"{preset}_{pixels}")
            setup = ["--child", "setup", "--preset", preset, "--resolution", str(pixels)]
            _common.run_child("benchmarks.publish", [*setup, "--workdir", workdir], 1800)
            runs, loads = {p: [] for p in paths}, []
            for r in range(args.repeats):
                for path in paths if r % 2 == 0 else paths[::-1]:
                    loads.append(os.getloadavg()[0])
                    child = [
                        *("--child", "publish", "--path", path, "--workdir", workdir),
                        *("--threads", str(args.threads), "--before_commit", args.before_commit),
                        *("--only", args.only),
                    ]
                    result = _common.run_child("benchmarks.publish", child, timeout_s=3600)
                    runs[path].append(result)
                    print(
                        f"{preset}@{pixels} repeat {r} {path}: "
                        f"{result['seconds_per_module']:.2f} s/module ({result['modules']} "
                        f"modules, validated {result['validated']}), load {loads[-1]:.1f}",
                        flush=True,
                    )
            headlines.append(_report(preset, pixels, paths, runs, loads))
    print()
    for line in headlines:
        print(line)


def _report(preset, pixels, paths, runs, loads):
    headers = ["path", "s/module median", "min", "max", "n", *(f"{p} s" for p in PHASES), "other s"]
    rows, medians, spreads = [], {}, {}
    for path in paths:
        totals = [x["seconds_per_module"] for x in runs[path]]
        medians[path] = _common.median(totals)
        spreads[path] = max(totals) - min(totals)
        phases = [_common.median([x["phases"][p] for x in runs[path]]) for p in (*PHASES, "other")]
        rows.append([path, medians[path], min(totals), max(totals), len(totals), *phases])
    print(f"\n{preset} at {pixels} px (phase columns: medians, seconds per module)")
    print(_common.format_table(headers, rows))
    print(f"load average during the runs: {min(loads):.1f} to {max(loads):.1f}")
    if set(paths) != {"before", "after"}:
        return f"headline: {preset}@{pixels}: " + ", ".join(
            f"{p} {medians[p]:.2f} s/module" for p in paths
        )
    gap = medians["before"] - medians["after"]
    if min(len(runs[p]) for p in paths) < 3:
        verdict = "NOT resolved (fewer than 3 repeats)"
    elif abs(gap) > max(spreads.values()):
        verdict = "measured"
    else:
        verdict = "NOT resolved (gap within spread)"
    return (
        f"headline: {preset}@{pixels}: before / after = {medians['before'] / medians['after']:.2f}x "
        f"({medians['before']:.2f} -> {medians['after']:.2f} s/module, spread up to "
        f"{max(spreads.values()):.2f} s): {verdict}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
