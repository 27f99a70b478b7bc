"""Benchmark: images per second of the BiT R50x1 forward pass and training step, on the CPU.

    python -m benchmarks.embed                               # 128 and 224 px; several minutes on 2 cores
    python -m benchmarks.embed --resolutions 128 --modes forward --methods ours,timm

Methods (all randomly initialised, nothing is downloaded):
  ours          bit_experts.presets.create_model("r50x1") under tf.function
  ours-xla      the same under tf.function(jit_compile=True)
  keras-rn50v2  keras.applications.ResNet50V2(weights=None): same depth, BatchNorm, no weight
                standardisation (what GroupNorm + weight standardisation is measured against)
  timm          timm resnetv2_50x1_bit(pretrained=False) in PyTorch, the same BiT architecture

Modes: `forward` (pre-logits features, inference) and `train` (one SGD-with-momentum step on a
100-class softmax head, forward and backward). Each (method, mode) runs in its own child process;
every resolution is warmed up (tracing, compiling) and then timed for `--iters` steps, and the
table reports images per second from the median step time, the warm-up time and the peak RSS.
With `--repeats` > 1 the children are interleaved and the medians of the repeats are reported.
"""

import argparse
import time

import numpy as np

from benchmarks import _common

METHODS = ("ours", "ours-xla", "keras-rn50v2", "timm")
MODES = ("forward", "train")
NUM_CLASSES = 100


def _tf_runner(method, mode, batch):
    """Returns step(images_nhwc) for the TensorFlow methods; builds the model once."""
    import keras
    import tensorflow as tf

    if method in ("ours", "ours-xla"):
        from bit_experts.presets import create_model

        model = create_model("r50x1", num_classes=NUM_CLASSES if mode == "train" else 0)
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


def _timm_runner(mode, batch):
    import timm
    import torch

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
    if args.child == "timm":
        import torch

        step = _timm_runner(args.mode, args.batch)
        make = lambda r: torch.from_numpy(rng.random((args.batch, 3, r, r), np.float32))
    else:
        import tensorflow as tf

        step = _tf_runner(args.child, args.mode, args.batch)
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
    _common.emit_result({"by_resolution": results, "peak_mib": _common.peak_rss_mib()})


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
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per resolution")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per resolution")
    parser.add_argument(
        "--repeats", type=int, default=1, help="child processes per method (median)"
    )
    parser.add_argument("--timeout_s", type=float, default=1800.0, help="per child process")
    # Child-process arguments (internal).
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.resolutions = [int(r) for r in args.resolutions.split(",") if r]
    args.train_resolutions = [int(r) for r in args.train_resolutions.split(",") if r]
    args.methods = [m for m in args.methods.split(",") if m]
    args.modes = [m for m in args.modes.split(",") if m]
    if set(args.methods) - set(METHODS) or not args.methods:
        parser.error(f"--methods must name some of {METHODS}; got {args.methods}")
    if set(args.modes) - set(MODES) or not args.modes:
        parser.error(f"--modes must name some of {MODES}; got {args.modes}")
    if min(args.resolutions + args.train_resolutions, default=0) < 32:
        parser.error("resolutions must be integers >= 32")
    if min(args.batch, args.iters, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch, --iters and --repeats must be >= 1, --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    print(f"machine: {_common.machine_line()}; batch {args.batch}, {args.iters} timed steps")
    runs = {}
    for _ in range(args.repeats):
        for mode in args.modes:
            resolutions = args.resolutions if mode == "forward" else args.train_resolutions
            for method in args.methods:  # interleaved, so load changes hit every method alike
                child_args = ["--child", method, "--mode", mode, "--batch", str(args.batch)]
                child_args += ["--resolutions", ",".join(map(str, resolutions))]
                child_args += ["--warmup", str(args.warmup), "--iters", str(args.iters)]
                result = _common.run_child("benchmarks.embed", child_args, args.timeout_s)
                print(f"  {mode} {method}: {result['by_resolution']}", flush=True)
                for res, r in result["by_resolution"].items():
                    runs.setdefault((mode, int(res), method), []).append(
                        dict(r, peak_mib=result["peak_mib"])
                    )
    rows, speed = [], {}
    for (mode, res, method), results in runs.items():
        speed[mode, res, method] = _common.median([r["images_per_s"] for r in results])
        rows.append(
            [mode, res, method, speed[mode, res, method]]
            + [_common.median([r["warmup_s"] for r in results])]
            + [_common.median([r["peak_mib"] for r in results])]
        )
    headers = ["mode", "px", "method", "images/s", "warm-up s", "peak RSS MiB"]
    print(_common.format_table(headers, rows))
    ratios = []
    for mode, res, method in speed:
        ours = [speed.get((mode, res, m)) for m in ("ours", "ours-xla")]
        ours = max((v for v in ours if v), default=None)
        if method == "timm" and ours:
            ratios.append(f"{mode} {res}px: {ours / speed[mode, res, method]:.2f}x")
    if ratios:
        print(
            "headline: best of ours / timm images per second = " + ", ".join(ratios) + " (goal > 1)"
        )


if __name__ == "__main__":
    main()
