"""Benchmark: cost of ranking E experts with the kNN selector against the bare forward pass.

    python -m benchmarks.selection                          # tiny E sweep + R50x1 E=2; ~8 min
    python -m benchmarks.selection --sizes tiny --experts 2,4 --repeats 1   # ~1 min smoke run

Every module is a randomly initialised BiT model exported as a TF Hub module (nothing is
downloaded); the task is the offline world's `textures` folder task (1000 training images). For
each (size, E, repeat) one child process measures, side by side on the same modules and images:

  floor    for each module: `hub.load`, then a `tf.function` forward over the task's images,
           already decoded and resized, in batches of `--batch` (load and forward timed apart)
  rank     `vtab_eval.ranking.rank(pool, task, "knn", resolution=..., cache_dir=<fresh dir>)`,
           end to end: checksums, loading, decoding, embedding, cache writes and the kNN
  warm     the same call again with the same cache directory (features read from the cache)
  knn      `vtab_eval.selectors.knn_scores` alone on the E experts' features

The order of floor and rank alternates between repeats, so neither always runs on a cold page
cache. Ratios are against the floor (load + forward). Goals (issue 7): rank <= 1.15x the floor,
kNN < 2% of it, rank time linear in E (least-squares fit of the median times over E, its R^2).
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from benchmarks import _common

# size name -> (model preset, default resolution, default split). R50x1 on 2 CPU cores embeds
# ~20-40 images/s at 224 px, so it runs on val200 (200 images) unless told otherwise.
SIZES = {
    "tiny": ("r14_tiny", 64, "train800val200"),
    "r50x1": ("r50x1", 224, "val200"),
}
TASK = "textures"


def export_pool(preset, count, resolution, out_dir, log=print):
    """Exports `count` randomly initialised `preset` feature-vector modules; returns their paths.

    The module is traced once; every further copy gets its weights re-drawn in place (each
    variable scaled elementwise by a seeded factor in [0.5, 1.5]) and is saved again, which is
    much faster than tracing a new model, yet gives every module its own weights and checksum.
    """
    import tensorflow as tf

    from bit_experts.presets import create_model
    from hub_export.module import HubModule, save_module

    model = create_model(preset)
    model(np.zeros((1, resolution, resolution, 3), np.float32))
    module = HubModule(model, "features")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = os.path.join(out_dir, f"{preset}_{index:02d}")
        if index:
            for variable in module.variables:
                factor = rng.uniform(0.5, 1.5, variable.shape).astype(np.float32)
                variable.assign(variable * tf.constant(factor, variable.dtype))
        start = time.perf_counter()
        save_module(module, path, {"name": os.path.basename(path), "resolution": resolution})
        log(f"  exported {path} in {time.perf_counter() - start:.1f}s")
        paths.append(path)
    return paths


def write_task(out_dir, image_size):
    """The world's `textures` folder task at `image_size` px; returns its `folder:` task name."""
    from bit_experts.world import downstream

    (task_dir,) = downstream.write_downstream_tasks(
        out_dir, image_size=image_size, tasks=[TASK], test_images=10
    )
    return "folder:" + task_dir


def _floor(handles, batches):
    """Bare cost: load each module and run a compiled forward pass; features by handle."""
    import tensorflow as tf
    import tensorflow_hub as hub

    load_s = forward_s = 0.0
    features = {}
    for handle in handles:
        start = time.perf_counter()
        module = hub.load(handle)
        loaded = time.perf_counter()
        forward = tf.function(lambda x, module=module: module(x))
        features[handle] = np.concatenate([forward(b).numpy() for b in batches])
        load_s += loaded - start
        forward_s += time.perf_counter() - loaded
    return load_s, forward_s, features


def child_main(args):
    import tensorflow as tf

    from vtab_eval import ranking, selectors
    from vtab_eval.tasks import get_task

    handles = args.handles.split(",")
    task = get_task(args.task)
    # The floor's input: the same images rank() embeds, decoded once, outside any timing.
    images, labels = [], []
    start = time.perf_counter()
    for example in task.load(args.split, image_size=args.resolution):
        images.append(example["image"].numpy())
        labels.append(int(example["label"]))
    decode_s = time.perf_counter() - start  # what decoding the split once costs
    images = np.stack(images)
    batches = [tf.constant(images[i : i + args.batch]) for i in range(0, len(images), args.batch)]
    # Warm-up: TensorFlow's first function call and thread pools, paid by neither side.
    _floor(handles[:1], batches[:1])

    result = {"num_images": len(images), "decode_s": decode_s}
    cache_dir = tempfile.mkdtemp(prefix="bench-selection-cache-")
    try:

        def run_rank():
            kwargs = dict(resolution=args.resolution, cache_dir=cache_dir, split=args.split)
            start = time.perf_counter()
            ranked = ranking.rank(handles, task, "knn", batch_size=args.batch, **kwargs)
            result["rank_s"] = time.perf_counter() - start
            start = time.perf_counter()
            warm = ranking.rank(handles, task, "knn", batch_size=args.batch, **kwargs)
            result["warm_s"] = time.perf_counter() - start
            if ranked["cache"]["computed"] != handles or warm["cache"]["cached"] != handles:
                raise RuntimeError(f"unexpected cache use: {ranked['cache']}, {warm['cache']}")
            result["scores"] = [e["score"] for e in ranked["experts"]]

        def run_floor():
            load_s, forward_s, features = _floor(handles, batches)
            result.update(floor_load_s=load_s, floor_forward_s=forward_s)
            # Twice: the first call in a process also traces the kNN's tf.function.
            for key in ("knn_first_s", "knn_s"):
                start = time.perf_counter()
                knn = selectors.knn_scores(features, np.asarray(labels))
                result[key] = time.perf_counter() - start
            if not args.floor_first:  # rank() already traced it: not a first call
                result["knn_first_s"] = None
            result["floor_scores"] = [knn[h] for h in handles]

        for step in (run_floor, run_rank) if args.floor_first else (run_rank, run_floor):
            step()
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    result["peak_mib"] = _common.peak_rss_mib()
    _common.emit_result(result)


def linear_fit(xs, ys):
    """(intercept, slope, R^2) of the least-squares line through (xs, ys)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    slope, intercept = np.polyfit(xs, ys, 1)
    residual = ys - (intercept + slope * xs)
    total = ((ys - ys.mean()) ** 2).sum()
    return (
        float(intercept),
        float(slope),
        float(1.0 - (residual**2).sum() / total) if total else 1.0,
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="tiny,r50x1", help="subset of " + ",".join(SIZES))
    parser.add_argument("--experts", default="2,4,8,16", help="pool sizes E for tiny modules")
    parser.add_argument("--r50x1_experts", default="2", help="pool sizes E for r50x1 modules")
    parser.add_argument("--tiny_preset", default="r14_tiny", help="preset of the tiny modules")
    parser.add_argument("--tiny_resolution", type=int, default=64, help="px of the tiny modules")
    parser.add_argument("--r50x1_resolution", type=int, default=224, help="px of r50x1 modules")
    parser.add_argument(
        "--r50x1_split",
        default="val200",
        help="task split r50x1 ranks (val200: 200 images; train800val200: all 1000)",
    )
    parser.add_argument("--batch", type=int, default=64, help="images per module call")
    parser.add_argument("--repeats", type=int, default=2, help="child processes per (size, E)")
    parser.add_argument("--workdir", default=None, help="where modules and task go (default: tmp)")
    parser.add_argument("--timeout_s", type=float, default=3600.0, help="per child process")
    # Child-process arguments (internal).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--handles", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--split", help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor_first", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    args.sizes = [s for s in args.sizes.split(",") if s]
    if not args.sizes or set(args.sizes) - set(SIZES):
        parser.error(f"--sizes must name some of {list(SIZES)}; got {args.sizes}")
    try:
        args.experts = sorted({int(e) for e in args.experts.split(",") if e})
        args.r50x1_experts = sorted({int(e) for e in args.r50x1_experts.split(",") if e})
    except ValueError:
        parser.error("--experts and --r50x1_experts must be comma-separated integers")
    if min(args.experts + args.r50x1_experts, default=0) < 1:
        parser.error("pool sizes must be integers >= 1")
    if args.r50x1_split not in ("val200", "train800", "train800val200"):
        parser.error(
            f"--r50x1_split must be val200, train800 or train800val200; got {args.r50x1_split!r}"
        )
    if min(args.tiny_resolution, args.r50x1_resolution) < 32:
        parser.error("resolutions must be >= 32")
    if min(args.batch, args.repeats) < 1:
        parser.error("--batch and --repeats must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    print(f"machine: {_common.machine_line()}; batch {args.batch}, {args.repeats} repeats")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-selection-")
    plans = []  # (size, preset, resolution, split, E values, handles, task)
    for size in args.sizes:
        preset, resolution, split = SIZES[size]
        if size == "tiny":
            preset, resolution, pool_sizes = args.tiny_preset, args.tiny_resolution, args.experts
        else:
            resolution, split, pool_sizes = (
                args.r50x1_resolution,
                args.r50x1_split,
                args.r50x1_experts,
            )
        print(f"exporting {max(pool_sizes)} {preset} modules at {resolution} px", flush=True)
        sub = os.path.join(workdir, f"{size}_{resolution}")
        os.makedirs(sub, exist_ok=True)
        handles = export_pool(preset, max(pool_sizes), resolution, sub)
        task = write_task(os.path.join(sub, "tasks"), resolution)
        plans.append((size, preset, resolution, split, pool_sizes, handles, task))

    runs = {}
    for repeat in range(args.repeats):
        for size, _, resolution, split, pool_sizes, handles, task in plans:
            for num in pool_sizes:
                child_args = ["--child", "--handles", ",".join(handles[:num]), "--task", task]
                child_args += ["--split", split, "--resolution", str(resolution)]
                child_args += ["--batch", str(args.batch), "--floor_first", str(1 - repeat % 2)]
                result = _common.run_child("benchmarks.selection", child_args, args.timeout_s)
                if not np.allclose(result["scores"], result["floor_scores"], atol=2e-3):
                    print(f"  WARNING: rank and floor kNN scores differ: {result}")
                floor = result["floor_load_s"] + result["floor_forward_s"]
                print(
                    f"  {size} E={num} repeat {repeat}: rank {result['rank_s']:.2f}s, "
                    f"floor {floor:.2f}s, warm {result['warm_s']:.2f}s, knn {result['knn_s']:.3f}s",
                    flush=True,
                )
                runs.setdefault((size, num), []).append(dict(result, floor_s=floor))

    rows, ratios, medians = [], {}, {}
    keys = ("rank_s", "floor_s", "floor_load_s", "floor_forward_s", "warm_s", "knn_s")
    keys += ("knn_first_s", "decode_s", "peak_mib")
    for (size, num), results in runs.items():
        m = {k: _common.median([r[k] for r in results]) for k in keys}
        medians[size, num] = m
        ratio = _common.median([r["rank_s"] / r["floor_s"] for r in results])
        knn_pct = 100.0 * _common.median([r["knn_s"] / r["floor_s"] for r in results])
        first = [r["knn_first_s"] / r["floor_s"] for r in results if r["knn_first_s"] is not None]
        first_pct = 100.0 * _common.median(first) if first else None
        warm = _common.median([r["warm_s"] / r["floor_s"] for r in results])
        ratios[size, num] = (ratio, knn_pct, warm)
        plan = next(p for p in plans if p[0] == size)
        rows.append(
            [f"{plan[1]} {plan[2]}px", results[0]["num_images"], num, m["decode_s"]]
            + [m["floor_load_s"], m["floor_forward_s"], m["floor_s"], m["rank_s"]]
            + [m["rank_s"] / num, ratio, m["warm_s"], warm, m["knn_s"], knn_pct, first_pct]
            + [m["peak_mib"]]
        )
    headers = ["modules", "images", "E", "decode s", "floor load s", "floor fwd s", "floor s"]
    headers += ["rank s", "rank s/expert", "rank/floor", "warm s", "warm/floor", "knn s"]
    headers += ["knn % floor", "knn 1st call % floor", "peak RSS MiB"]
    print(_common.format_table(headers, rows))
    fits = []
    for size, _, _, _, pool_sizes, _, _ in plans:
        if len(pool_sizes) >= 2:
            intercept, slope, r2 = linear_fit(
                pool_sizes, [medians[size, n]["rank_s"] for n in pool_sizes]
            )
            fits.append(f"{size} {intercept:.2f}s + {slope:.2f}s x E (R^2 {r2:.3f})")
    if fits:
        print("linear fit of rank s over E: " + "; ".join(fits))
    worst = max(r[0] for r in ratios.values())
    knn_worst = max(r[1] for r in ratios.values())
    warm_worst = max(r[2] for r in ratios.values())
    print(
        f"headline: ranking / floor <= {worst:.3f}x over every size and E (goal <= 1.15), "
        f"kNN <= {knn_worst:.2f}% of the floor (goal < 2%), warm cache <= {warm_worst:.3f}x"
    )


if __name__ == "__main__":
    main()
