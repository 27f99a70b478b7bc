"""Benchmark: images per second of the BiT R50x1 forward pass on one GPU, ours (Keras 3 on JAX)
against timm `resnetv2_50x1_bit` (PyTorch), side by side in one process.

    KERAS_BACKEND=jax python3 -m benchmarks.gpu_embed --out=/tmp/gpu_embed.json

Written for a machine with a CUDA GPU, JAX and PyTorch (with timm) but no TensorFlow: it imports
neither TensorFlow nor `benchmarks._common`. Both models are randomly initialised (nothing is
downloaded) and compute the 2048-d pre-logits features of NHWC/NCHW float32 images at `--px`.

- ours: `bit_experts.presets.create_model("r50x1")` called through `model.stateless_call` under
  `jax.jit` (the Keras 3 way to run a model as one compiled XLA function).
- timm: `timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=0)` in eval mode
  under `torch.inference_mode()`, with channels-last memory format (cuDNN's fast layout) and,
  as `timm-compiled`, additionally under `torch.compile`.

Float32 matrix and convolution precision is set the same way on both sides (`--tf32`): with it,
TF32 tensor cores are allowed (JAX `jax_default_matmul_precision="tensorfloat32"`; PyTorch
`allow_tf32` for cuDNN and matmul); without it, both use full float32 ("highest" / no TF32).

The methods are timed interleaved: for each repeat, each method runs `--iters` steps after its
warm-up; images per second come from the median step time (the GPU is synchronised after every
step: `block_until_ready` / `torch.cuda.synchronize`). Printed and written as JSON: per method and
setting the median and min-max over repeats, the GPU name and the library versions.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # Share the GPU with PyTorch.


def _ours(batch, px):
    import jax
    import numpy as np

    from bit_experts.presets import create_model

    model = create_model("r50x1")  # Built in its constructor (input side free).
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(images):
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return outputs

    images = jax.device_put(np.random.default_rng(0).random((batch, px, px, 3), np.float32))

    def step():
        forward(images).block_until_ready()

    return step


def _timm(batch, px, compiled):
    import timm
    import torch

    model = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=0)
    model = model.cuda().eval().to(memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)
    images = torch.rand((batch, 3, px, px), device="cuda").to(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            model(images)
        torch.cuda.synchronize()

    return step


def _set_precision(tf32):
    import jax
    import torch

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def _time(step, iters):
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(methods, batches, px, repeats, iters, warmup, tf32_settings):
    """Returns one row per (setting, batch, method): images/s median and min-max over repeats."""
    rows = []
    for tf32 in tf32_settings:
        _set_precision(tf32)
        for batch in batches:
            steps, warm_seconds = {}, {}
            for method in methods:
                start = time.perf_counter()
                if method == "ours":
                    steps[method] = _ours(batch, px)
                else:
                    steps[method] = _timm(batch, px, compiled=method == "timm-compiled")
                for _ in range(warmup):
                    steps[method]()
                warm_seconds[method] = time.perf_counter() - start
            rates = {method: [] for method in methods}
            for _ in range(repeats):
                for method in methods:  # Interleaved.
                    rates[method].append(batch / _time(steps[method], iters))
            for method in methods:
                row = {
                    "tf32": tf32,
                    "batch": batch,
                    "px": px,
                    "method": method,
                    "images_per_s": statistics.median(rates[method]),
                    "min": min(rates[method]),
                    "max": max(rates[method]),
                    "repeats": repeats,
                    "iters": iters,
                    "warmup_s": warm_seconds[method],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _environment():
    import jax
    import keras
    import timm
    import torch

    return {
        "gpu": torch.cuda.get_device_name(0),
        "jax": jax.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "keras": keras.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="ours,timm,timm-compiled")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--px", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tf32", default="1,0", help="Comma-separated 1/0: TF32 allowed or not.")
    parser.add_argument("--out", default="", help="Write the environment and rows as JSON here.")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - {"ours", "timm", "timm-compiled"})
    if unknown:
        parser.error(f"--methods: unknown {unknown}; expected ours, timm, timm-compiled")
    environment = _environment()
    print(json.dumps(environment), flush=True)
    rows = run(
        methods,
        [int(b) for b in args.batches.split(",")],
        args.px,
        args.repeats,
        args.iters,
        args.warmup,
        [bool(int(t)) for t in args.tf32.split(",")],
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": environment, "args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
