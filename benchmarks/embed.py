"""Benchmark: images per second of the BiT R50x1 forward pass and training step, on the CPU.

    taskset -c 0,1 python -m benchmarks.embed            # 128 and 224 px, batch 16 and 64
    taskset -c 0,1 python -m benchmarks.embed --resolutions 128 --modes forward --methods ours,timm

Methods (all randomly initialised, nothing is downloaded):
  ours          bit_experts.presets.create_model("r50x1") under tf.function
  ours-ws-once  its `standardized_copy()` (kernels weight-standardised once; forward mode only)
  ours-xla      the same as `ours` under tf.function(jit_compile=True)
  keras-rn50v2  keras.applications.ResNet50V2(weights=None): same depth, BatchNorm, no weight
                standardisation (what GroupNorm + weight standardisation is measured against)
  timm          timm resnetv2_50x1_bit(pretrained=False) in PyTorch, the same BiT architecture
  timm-passive  the same with OMP_WAIT_POLICY=PASSIVE: PyTorch's OpenMP threads sleep instead of
                spin-waiting between ops, which is what saves it on oversubscribed (loaded) cores

Modes: `forward` (pre-logits features, inference) and `train` (one SGD-with-momentum step on a
100-class softmax head, forward and backward). Each (method, mode, batch) runs in its own child
process; every resolution is warmed up (tracing, compiling) and then timed for `--iters` steps.
A child's speed is the batch over its median step time. The children of one repeat run one after
the other, methods in turn (reversed on odd repeats), so load changes hit every method alike.
The table gives the median over `--repeats` and its [min-max]; the ratios pair the children of
the same repeat.

Fairness: every child inherits the parent's CPU set (pin it with `taskset`), and both frameworks
get `--threads` threads (default: the size of that CPU set): `OMP_NUM_THREADS` and
`torch.set_num_threads` for PyTorch, TensorFlow's intra-op and inter-op pools. The load average
before each child is recorded and printed.
"""

import argparse
import os
import time

import numpy as np

from benchmarks import _common

METHODS = ("ours", "ours-ws-once", "ours-xla", "keras-rn50v2", "timm", "timm-passive")
FORWARD_ONLY = ("ours-ws-once",)
# (numerator, denominator) of the printed images/s ratios, > 1 when the numerator is faster.
RATIOS = (
    ("ours", "timm"),
    ("ours", "timm-passive"),
    ("ours-ws-once", "timm"),
    ("ours-ws-once", "timm-passive"),
    ("ours-ws-once", "ours"),
    ("ours-xla", "ours"),
    ("ours", "keras-rn50v2"),
)
MODES = ("forward", "train")
NUM_CLASSES = 100


def _cpu_set():
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _tf_runner(method, mode, batch, threads):
    """Returns step(images_nhwc) for the TensorFlow methods; builds the model once."""
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    if method in ("ours", "ours-ws-once", "ours-xla"):
        from bit_experts.presets import create_model

        model = create_model("r50x1", num_classes=NUM_CLASSES if mode == "train" else 0)
        if method == "ours-ws-once":
            model = model.standardized_copy()
    else:
        backbone = keras.applications.ResNet50V2(
            weights=None, include_top=False, pooling="avg", input_shape=(None, None, 3)
        )
        head = keras.layers.Dense(NUM_CLASSES)
        model = keras.Sequential([backbone, head]) if mode == "train" else backbone
    jit = method == "ours-xla"
    if mode == "forward":
        return tf.function(lambda x: model(x, training=False), jit_compile=jit)

    optimizer = keras.optimizers.SGD(learning_rate=0.003, momentum=0.9)
    optimizer.build(model.trainable_variables)
    labels = tf.constant(np.arange(batch) % NUM_CLASSES, tf.int32)

    @tf.function(jit_compile=jit)
    def train_step(x):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


def _timm_runner(mode, batch, threads):
    import timm
    import torch

    torch.set_num_threads(threads)
    model = timm.create_model(
        "resnetv2_50x1_bit", pretrained=False, num_classes=NUM_CLASSES if mode == "train" else 0
    )
    if mode == "forward":
        model.eval()

        def forward(x):
            with torch.inference_mode():
                return model(x)

        return forward
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    labels = torch.arange(batch) % NUM_CLASSES

    def train_step(x):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return train_step


def child_main(args):
    rng = np.random.default_rng(0)
    if args.child in ("timm", "timm-passive"):
        if args.child == "timm-passive":
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read when torch loads libgomp, below
        import torch

        step = _timm_runner(args.mode, args.batch, args.threads)
        make = lambda r: torch.from_numpy(rng.random((args.batch, 3, r, r), np.float32))
    else:
        import tensorflow as tf

        step = _tf_runner(args.child, args.mode, args.batch, args.threads)
        make = lambda r: tf.constant(rng.random((args.batch, r, r, 3), np.float32))
    results = {}
    for resolution in args.resolutions:
        images = make(resolution)
        start = time.perf_counter()
        for _ in range(args.warmup):
            _materialise(step(images))
        warmup_s = time.perf_counter() - start
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            _materialise(step(images))
            times.append(time.perf_counter() - start)
        results[str(resolution)] = {
            "images_per_s": args.batch / float(np.median(times)),
            "warmup_s": warmup_s,
        }
    _common.emit_result(
        {"by_resolution": results, "peak_mib": _common.peak_rss_mib(), "cpus": _cpu_set()}
    )


def _materialise(out):
    # Both frameworks may return before the work is done; reading the values waits for it.
    return out.numpy() if hasattr(out, "numpy") else out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", default="128,224", help="comma-separated image sizes")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="subset of " + ",".join(METHODS)
    )
    parser.add_argument("--modes", default=",".join(MODES), help="subset of " + ",".join(MODES))
    parser.add_argument("--train_resolutions", default="128", help="resolutions of the train mode")
    parser.add_argument("--batches", default="16,64", help="comma-separated images per step")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(_cpu_set()) or os.cpu_count(),
        help="threads of both frameworks (default: the size of the CPU set)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per resolution")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per resolution")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved child processes per method"
    )
    parser.add_argument("--timeout_s", type=float, default=1800.0, help="per child process")
    # Child-process arguments (internal).
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.resolutions = [int(r) for r in args.resolutions.split(",") if r]
    args.train_resolutions = [int(r) for r in args.train_resolutions.split(",") if r]
    args.methods = [m for m in args.methods.split(",") if m]
    args.modes = [m for m in args.modes.split(",") if m]
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        parser.error(f"--batches must be comma-separated integers; got {args.batches!r}")
    if set(args.methods) - set(METHODS) or not args.methods:
        parser.error(f"--methods must name some of {METHODS}; got {args.methods}")
    if set(args.modes) - set(MODES) or not args.modes:
        parser.error(f"--modes must name some of {MODES}; got {args.modes}")
    if min(args.resolutions + args.train_resolutions, default=0) < 32:
        parser.error("resolutions must be integers >= 32")
    if min(args.batches + [args.iters, args.repeats, args.threads], default=0) < 1:
        parser.error("--batches, --iters, --repeats and --threads must be >= 1")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0; got {args.warmup}")
    if args.child and not args.batch:
        parser.error("a child process needs --batch")
    return args


def _ratio_line(label, ratios):
    return f"{label} {_common.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    # PyTorch's OpenMP pool reads this at import: set it for the children before they start.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(
        f"machine: {_common.machine_line()}; CPU set {_cpu_set()} (children inherit it), "
        f"{args.threads} threads per framework; batches {args.batches}, {args.warmup} warm-up "
        f"and {args.iters} timed steps per resolution, {args.repeats} interleaved repeats"
    )
    runs, loads = {}, []
    for repeat in range(args.repeats):
        methods = args.methods if repeat % 2 == 0 else args.methods[::-1]
        for mode in args.modes:
            resolutions = args.resolutions if mode == "forward" else args.train_resolutions
            for batch in args.batches:
                for method in methods:
                    if mode != "forward" and method in FORWARD_ONLY:
                        continue
                    loads.append(os.getloadavg()[0])
                    child_args = ["--child", method, "--mode", mode, "--batch", str(batch)]
                    child_args += ["--resolutions", ",".join(map(str, resolutions))]
                    child_args += ["--warmup", str(args.warmup), "--iters", str(args.iters)]
                    child_args += ["--threads", str(args.threads)]
                    result = _common.run_child("benchmarks.embed", child_args, args.timeout_s)
                    print(
                        f"  repeat {repeat} {mode} batch {batch} {method} (load {loads[-1]:.1f}): "
                        f"{result['by_resolution']}",
                        flush=True,
                    )
                    for res, r in result["by_resolution"].items():
                        key = (mode, batch, int(res), method)
                        runs.setdefault(key, {})[repeat] = dict(r, peak_mib=result["peak_mib"])
    rows = []
    for (mode, batch, res, method), by_repeat in runs.items():
        speeds = [r["images_per_s"] for r in by_repeat.values()]
        rows.append(
            [mode, batch, res, method, _common.median(speeds), min(speeds), max(speeds)]
            + [_common.median([r["warmup_s"] for r in by_repeat.values()])]
            + [_common.median([r["peak_mib"] for r in by_repeat.values()])]
        )
    headers = ["mode", "batch", "px", "method", "images/s", "min", "max", "warm-up s", "peak MiB"]
    print(_common.format_table(headers, rows))
    print(f"load average before each child: {min(loads):.1f}-{max(loads):.1f}")
    for mode, batch, res, _ in sorted({k[:3] + (None,) for k in runs}):
        for faster, slower in RATIOS:
            a, b = runs.get((mode, batch, res, faster)), runs.get((mode, batch, res, slower))
            # Per repeat: the two children ran next to each other, under about the same load.
            if not (a and b):
                continue
            ratios = [a[r]["images_per_s"] / b[r]["images_per_s"] for r in a if r in b]
            if ratios:
                print(_ratio_line(f"{mode} batch {batch} {res}px: {faster} / {slower}", ratios))


if __name__ == "__main__":
    main()
