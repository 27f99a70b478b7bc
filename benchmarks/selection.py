"""Benchmark: cost of ranking E experts with the kNN selector against the bare forward pass.

    python -m benchmarks.selection                          # tiny E sweep + R50x1 E=2; ~8 min
    python -m benchmarks.selection --sizes tiny --experts 2,4 --repeats 1   # ~1 min smoke run
    python -m benchmarks.selection --sizes r50x1 --r50x1_experts 8 --r50x1_split train800val200 \
        --workdir /tmp/bench-selection-r50x1 --profile_dir DIR   # paper scale; ~40 CPU-min a repeat
    python -m benchmarks.selection --agreement       # --precision / --resolution vs float32, BANK
    python -m benchmarks.selection --precision_speed # R50x1 forward: float32 vs each --agreement_precisions

Every module is a randomly initialised BiT model exported as a TF Hub module (nothing is
downloaded); the task is the offline world's `textures` folder task (1000 training images). For
each (size, E, repeat) one child process measures, side by side on the same modules and images:

  floor    for each module: `tf.saved_model.load`, then a `tf.function` forward over the task's images,
           already decoded and resized, in batches of `--batch` (load and forward timed apart)
  rank     `vtab_eval.engine.rank` (what `python -m vtab_eval.rank` calls) on a handle
           list, knn, a fresh cache: checksums, loading, decoding, embedding, cache writes, kNN,
           bootstrap and JSON; wall and CPU seconds, RSS and peak RSS after each expert, and
           optionally a cProfile (--profile_dir)
  warm     the same call again with the same cache directory (features read from the cache)
  knn      the `knn` selector (`vtab_eval.selectors.get("knn").score_features`) alone on the E
           experts' features

The order of floor and rank alternates between repeats, so neither always runs on a cold page
cache. Ratios are against the floor (load + forward). Goals (issue 7): rank <= 1.15x the floor,
kNN < 2% of it, rank time linear in E (least-squares fit of the median times over E, its R^2);
issue 12: rank <= 1.10x the floor for E = 8 R50x1 at 224 px, peak memory flat in E. `--workdir`
keeps the exported modules for later runs.
"""

import argparse
import cProfile
import functools
import os
import resource
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

    paths = [os.path.join(out_dir, f"{preset}_{index:02d}") for index in range(count)]
    if all(os.path.isfile(os.path.join(p, "saved_model.pb")) for p in paths):
        log(f"  reusing {count} modules in {out_dir}")
        return paths
    model = create_model(preset)
    model(np.zeros((1, resolution, resolution, 3), np.float32))
    module = HubModule(model, "features")
    rng = np.random.default_rng(0)
    for index, path in enumerate(paths):
        if index:
            for variable in module.variables:
                factor = rng.uniform(0.5, 1.5, variable.shape).astype(np.float32)
                variable.assign(variable * tf.constant(factor, variable.dtype))
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            continue  # exported by an earlier run into the same --workdir
        start = time.perf_counter()
        save_module(module, path, {"name": os.path.basename(path), "resolution": resolution})
        log(f"  exported {path} in {time.perf_counter() - start:.1f}s")
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

    load_s = forward_s = 0.0
    features = {}
    for handle in handles:
        start = time.perf_counter()
        module = tf.saved_model.load(handle)  # what ranking loads with (no tensorflow_hub)
        loaded = time.perf_counter()
        forward = tf.function(lambda x, module=module: module(x))
        features[handle] = np.concatenate([forward(b).numpy() for b in batches])
        load_s += loaded - start
        forward_s += time.perf_counter() - loaded
    return load_s, forward_s, features


def _cpu_s():
    """CPU seconds of this process, every thread (less sensitive to other load than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rank_command(handles, task_name, split, resolution, batch, work_dir, cache_dir, trace):
    """`vtab_eval.engine.rank` on a handle list, as `python -m vtab_eval.rank` runs it.

    `trace` gets, after each expert, (seconds since start, RSS MiB now, peak RSS MiB so far).
    """
    from vtab_eval import config, engine

    handle_list = os.path.join(work_dir, "handles.txt")
    with open(handle_list, "w", encoding="utf-8") as f:
        f.write("\n".join(handles) + "\n")
    start = time.perf_counter()

    def log(line):
        if "computed" in line or "cached" in line:
            trace.append(
                [time.perf_counter() - start, _common.current_rss_mib(), _common.peak_rss_mib()]
            )

    selection = {"split": split, "resolution": resolution or 0, "batch_size": batch}
    cfg = config.make(
        collection=handle_list,
        tasks=[task_name],
        output_json=os.path.join(work_dir, "ranking.json"),
        cache_dir=cache_dir,
        selection=dict(selection, include_baseline=False),
    )
    return engine.rank(cfg, log=log)


def child_main(args):
    import tensorflow as tf

    from vtab_eval import selectors
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

    result = {"num_images": len(images), "decode_s": decode_s, "load": os.getloadavg()[0]}
    work_dir = tempfile.mkdtemp(prefix="bench-selection-cache-")
    cache_dir = os.path.join(work_dir, "cache")
    try:

        def run_rank():
            trace = []
            call = functools.partial(
                _rank_command,
                handles,
                args.task,
                args.split,
                args.resolution,
                args.batch,
                work_dir,
                cache_dir,
            )
            profiler = cProfile.Profile() if args.profile_out else None
            start, cpu = time.perf_counter(), _cpu_s()
            ranked = profiler.runcall(call, trace) if profiler else call(trace)
            result["rank_s"] = time.perf_counter() - start
            result["rank_cpu_s"] = _cpu_s() - cpu
            result["rank_trace"] = trace
            if profiler:
                profiler.dump_stats(args.profile_out)
            start = time.perf_counter()
            warm = call([])
            result["warm_s"] = time.perf_counter() - start
            if ranked["cache"]["computed"] != handles or warm["cache"]["cached"] != handles:
                raise RuntimeError(f"unexpected cache use: {ranked['cache']}, {warm['cache']}")
            result["scores"] = [e["score"] for e in ranked["experts"]]

        def run_floor():
            start, cpu = time.perf_counter(), _cpu_s()
            load_s, forward_s, features = _floor(handles, batches)
            result["floor_cpu_s"] = _cpu_s() - cpu
            result.update(floor_load_s=load_s, floor_forward_s=forward_s)
            result["floor_wall_s"] = time.perf_counter() - start
            # Twice: the first call in a process also traces the kNN's tf.function.
            for key in ("knn_first_s", "knn_s"):
                start = time.perf_counter()
                knn = selectors.get("knn").score_features(features, labels).scores
                result[key] = time.perf_counter() - start
            if not args.floor_first:  # rank() already traced it: not a first call
                result["knn_first_s"] = None
            result["floor_scores"] = [knn[h] for h in handles]

        for step in (run_floor, run_rank) if args.floor_first else (run_rank, run_floor):
            step()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    result["peak_mib"] = _common.peak_rss_mib()
    result["load_end"] = os.getloadavg()[0]
    _common.emit_result(result)


def export_archived_pool(preset, count, resolution, out_dir, log=print):
    """`count` random-weight `preset` modules as `hub_export.publish` writes them (SavedModel plus
    Keras archive, which --precision needs); reused when present. Returns their paths."""
    from bit_experts.presets import create_model, preset_config
    from hub_export.keras_artifact import write_keras_artifact
    from hub_export.module import HubModule, save_module

    paths = []
    for index in range(count):
        path = os.path.join(out_dir, f"{preset}_{index:02d}")
        paths.append(path)
        if os.path.isfile(os.path.join(path, "keras", "expert.keras")):
            continue
        model = create_model(preset)
        rng = np.random.default_rng(index)
        for w in model.weights:  # heads and adapters start at zero; give every weight noise
            w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype(np.float32))
        metadata = {
            "name": os.path.basename(path),
            "kind": "full",
            "role": "feature_vector",
            "architecture": {"preset": preset, **preset_config(preset)},
            "resolution": resolution,
            "input_range": [0.0, 1.0],
            "feature_dim": model.feature_dim,
            "slice": None,
        }
        module = HubModule(model, "features")
        save_module(module, path, metadata, overwrite=True)
        write_keras_artifact(module, path, metadata)
        log(f"  exported {path}")
    return paths


def agreement(args):
    """kNN scores of a reduced precision / resolution against float32 at the modules' own side,
    on every task of the world's bank: per-expert score differences, Kendall tau, top-1 match."""
    from scipy import stats

    from bit_experts.world import BANK, downstream
    from vtab_eval import embed, selectors
    from vtab_eval.tasks import get_task

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-selection-agreement-")
    side = args.agreement_resolution
    handles = export_archived_pool(
        args.tiny_preset, args.agreement_experts, side, os.path.join(workdir, "modules")
    )
    task_dirs = downstream.write_downstream_tasks(
        os.path.join(workdir, "tasks"), image_size=side, tasks=list(BANK), test_images=200
    )
    variants = [("float32", side)] + [(p, side) for p in args.agreement_precisions]
    variants += [("float32", r) for r in args.agreement_resolutions]
    print(f"{len(handles)} {args.tiny_preset} modules at {side}px; variants {variants}", flush=True)
    bank = [get_task("folder:" + task_dir) for task_dir in task_dirs]
    # Each module is loaded once per variant and embeds every task (loading dominates otherwise).
    scores = {}  # (task name, variant) -> [E] kNN scores
    seconds = {v: 0.0 for v in variants}
    for variant in variants:
        precision, resolution = variant
        features = {}  # task name -> handle -> [N, d]
        labels = {}
        start = time.perf_counter()
        for handle in handles:
            module = embed.load_module(handle, precision)
            for task in bank:
                dataset = task.load("train800val200", image_size=resolution)
                out, labels[task.name] = embed.embed_dataset(module, dataset, handle, 256)
                features.setdefault(task.name, {})[handle] = out
        seconds[variant] = time.perf_counter() - start
        for task in bank:
            found = selectors.get("knn").score_features(features[task.name], labels[task.name])
            knn = found.scores
            scores[task.name, variant] = np.array([knn[h] for h in handles])
        print(f"  {precision} {resolution}px: {seconds[variant]:.1f}s", flush=True)
    rows = []
    for task in bank:
        reference = scores[task.name, variants[0]]
        for variant in variants[1:]:
            other = scores[task.name, variant]
            diff = np.abs(other - reference)
            tau = stats.kendalltau(reference, other).statistic
            rows.append(
                [task.name.removeprefix("folder:").rstrip("/").split("/")[-1]]
                + [f"{variant[0]} {variant[1]}px", float(reference.max()), float(diff.max())]
                + [float(diff.mean()), float(tau), bool(np.argmax(other) == np.argmax(reference))]
            )
    headers = ["task", "variant", "best f32 score", "max |d score|", "mean |d score|"]
    headers += ["Kendall tau", "top-1 match"]
    print(_common.format_table(headers, rows))
    for variant in variants[1:]:
        mine = [r for r in rows if r[1] == f"{variant[0]} {variant[1]}px"]
        print(
            f"{variant[0]} {variant[1]}px: top-1 match {sum(r[6] for r in mine)}/{len(mine)} "
            f"tasks, median tau {_common.median([r[5] for r in mine]):.3f} "
            f"(min {min(r[5] for r in mine):.3f}), max |d score| {max(r[3] for r in mine):.4f}; "
            f"embedding {seconds[variant]:.1f}s vs float32 {seconds[variants[0]]:.1f}s"
        )


def precision_speed(args):
    """Forward-pass seconds of one R50x1 batch under each precision, interleaved repeats."""
    import keras
    import tensorflow as tf

    from bit_experts.presets import create_model
    from bit_experts.resnet_v2 import BiTResNetV2
    from vtab_eval.embed import STANDARDIZED

    side = args.r50x1_resolution
    images = np.random.default_rng(0).uniform(0, 1, (args.speed_batch, side, side, 3))
    images = tf.constant(images.astype(np.float32))
    source = create_model("r50x1")
    forwards = {}
    for precision in ["float32"] + args.agreement_precisions:
        if precision == STANDARDIZED:  # as vtab_eval.embed.load_module builds it
            model = source.standardized_copy()
        else:
            policy = "float32" if precision == "float32" else f"mixed_{precision}"
            model = BiTResNetV2.from_config({**source.get_config(), "dtype": policy})
            model.set_weights(source.get_weights())
        forwards[precision] = tf.function(lambda x, m=model: tf.cast(m(x), tf.float32))
        forwards[precision](images)  # trace and warm up
    times = {p: [] for p in forwards}
    for _ in range(args.repeats):
        for precision, forward in forwards.items():
            start = time.perf_counter()
            forward(images).numpy()
            times[precision].append(time.perf_counter() - start)
    reference = _common.median(times["float32"])
    for precision, values in times.items():
        print(
            f"r50x1 {side}px batch {args.speed_batch} {precision}: median {_common.median(values):.2f}s "
            f"[{min(values):.2f}-{max(values):.2f}] n={len(values)}, speed-up vs float32 "
            f"{reference / _common.median(values):.2f}x (keras {keras.__version__}, "
            f"load {os.getloadavg()[0]:.1f})"
        )


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


def print_profile(path, top=25):
    """The `top` functions of a cProfile dump by cumulative time."""
    import pstats

    print(f"  profile of the rank command ({path}), by cumulative time:")
    pstats.Stats(path).sort_stats("cumulative").print_stats(top)


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
    parser.add_argument(
        "--agreement",
        action="store_true",
        help="instead: agreement of --agreement_precisions/_resolutions with float32 on BANK",
    )
    parser.add_argument("--agreement_experts", type=int, default=8, help="modules to rank")
    parser.add_argument("--agreement_resolution", type=int, default=32, help="modules' own px")
    parser.add_argument("--agreement_precisions", default="bfloat16,float16", help="to compare")
    parser.add_argument("--agreement_resolutions", default="16,24", help="reduced px to compare")
    parser.add_argument(
        "--precision_speed",
        action="store_true",
        help="instead: R50x1 forward seconds per --agreement_precisions, --repeats interleaved",
    )
    parser.add_argument("--speed_batch", type=int, default=8, help="images per timed R50x1 call")
    parser.add_argument(
        "--profile_dir",
        default=None,
        help="cProfile the rank command of repeat 0 into DIR/<size>_E<E>.pstats; print its top",
    )
    # Child-process arguments (internal).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--handles", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--split", help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor_first", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--profile_out", default=None, help=argparse.SUPPRESS)
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
    args.agreement_precisions = [p for p in args.agreement_precisions.split(",") if p]
    if args.agreement or args.precision_speed:  # only these modes need TensorFlow
        from vtab_eval.embed import PRECISIONS

        reduced = [p for p in PRECISIONS if p != "float32"]
        if set(args.agreement_precisions) - set(reduced):
            parser.error(
                f"--agreement_precisions: some of {reduced}; got {args.agreement_precisions}"
            )
    try:
        args.agreement_resolutions = [int(r) for r in args.agreement_resolutions.split(",") if r]
    except ValueError:
        parser.error("--agreement_resolutions must be comma-separated integers")
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
    if args.agreement or args.precision_speed:
        print(f"machine: {_common.machine_line()}")
        if args.agreement:
            agreement(args)
        else:
            precision_speed(args)
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
                profile = None
                if args.profile_dir and repeat == 0:
                    os.makedirs(args.profile_dir, exist_ok=True)
                    profile = os.path.join(args.profile_dir, f"{size}_E{num}.pstats")
                    child_args += ["--profile_out", profile]
                result = _common.run_child("benchmarks.selection", child_args, args.timeout_s)
                if profile:
                    print_profile(profile)
                if not np.allclose(result["scores"], result["floor_scores"], atol=2e-3):
                    print(f"  WARNING: rank and floor kNN scores differ: {result}")
                floor = result["floor_load_s"] + result["floor_forward_s"]
                print(
                    f"  {size} E={num} repeat {repeat}: rank {result['rank_s']:.2f}s "
                    f"({result['rank_cpu_s']:.1f} CPU s), floor {floor:.2f}s "
                    f"({result['floor_cpu_s']:.1f} CPU s), warm {result['warm_s']:.2f}s, "
                    f"knn {result['knn_s']:.3f}s, load {result['load']:.1f}-{result['load_end']:.1f}",
                    flush=True,
                )
                print("    after expert e: [s since start, RSS MiB, peak RSS MiB]")
                for e, row in enumerate(result["rank_trace"], 1):
                    print(f"    e={e}: {row[0]:.1f}s, {row[1]:.0f} MiB, peak {row[2]:.0f} MiB")
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
