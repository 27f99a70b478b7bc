"""Ranks a collection of expert modules on a task and writes the ranking as JSON.

    python -m vtab_eval.rank --collection=C --dataset=D --output_json=F [--method=knn]

`--collection` is a collection directory, its manifest.json, or a text file with one module handle
per line. With `--num_shards=K --shard_index=i` the command only computes (into the shared
`--cache_dir`) the features of its share of the experts and writes a shard report; a final run
without sharding then reads the merged cache. Flags and the JSON schema: docs/evaluation.md.
"""

import os

from absl import app, flags

from bit_experts import atomic_files, cli

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command's flags (only when run as a program, so that importing this
    module next to other entry points never clashes over flag names)."""
    flags.DEFINE_string(
        "collection", None, "Collection dir, manifest.json or text file of handles."
    )
    flags.DEFINE_string(
        "dataset", None, "Task name (python -m vtab_eval.list_tasks) or folder:PATH."
    )
    flags.DEFINE_string("output_json", None, "Where to write the ranking (or shard report) JSON.")
    flags.DEFINE_enum(
        "method",
        "knn",
        ["knn", "random", "domain_prediction", "label_matching", "baseline"]
        + ["logme", "linear_loo", "ncm", "gbc"],
        "Selection method.",
    )
    flags.DEFINE_enum(
        "fallback",
        "none",
        ["none", "baseline"],
        "baseline: pick B unless the best expert beats it with probability >= "
        "--fallback_confidence (knn, linear_loo, ncm; needs --include_baseline).",
    )
    flags.DEFINE_float(
        "fallback_confidence", 0.9, "Paired bootstrap probability the pick must beat B with."
    )
    flags.DEFINE_string("split", "train800val200", "Task split the selector looks at.")
    flags.DEFINE_integer(
        "resolution", 0, "Image side for every module; 0: each module its own (metadata, else 224)."
    )
    flags.DEFINE_string(
        "precision",
        "float32",
        "The experts' forward pass for feature selectors: float32 (the module as saved), "
        "bfloat16 or float16 (mixed precision), or float32_standardized (kernels "
        "weight-standardised once); all but float32 need each module's Keras archive.",
    )
    flags.DEFINE_string("data_dir", None, "TFDS data directory.")
    flags.DEFINE_string(
        "cache_dir", None, "Feature cache; default: feature_cache/ beside output_json."
    )
    flags.DEFINE_integer("batch_size", 64, "Images per module call.")
    flags.DEFINE_integer("seed", 0, "Seed of the random selector.")
    flags.DEFINE_bool(
        "include_baseline",
        True,
        "Rank the baseline B with the experts (--noinclude_baseline: not).",
    )
    flags.DEFINE_bool(
        "skip_bad_images", False, "Leave out undecodable images of a folder task, with a warning."
    )
    flags.DEFINE_integer("num_shards", 1, "Split feature extraction over this many workers.")
    flags.DEFINE_integer("shard_index", 0, "This worker's shard, in [0, num_shards).")
    flags.DEFINE_bool("cache_only", False, "Never compute features; missing ones are left out.")
    flags.DEFINE_string("plot_png", None, "Also write a bar plot of the scores here.")
    flags.DEFINE_bool("verify_checksums", True, "Check module checksums against the manifest.")


def rank_command(
    collection_spec,
    task_name,
    output_json,
    *,
    method="knn",
    split="train800val200",
    resolution=0,
    data_dir=None,
    cache_dir=None,
    batch_size=64,
    seed=0,
    include_baseline=True,
    num_shards=1,
    shard_index=0,
    cache_only=False,
    plot_png=None,
    verify_checksums=True,
    fallback="none",
    fallback_confidence=0.9,
    skip_bad_images=False,
    precision="float32",
    log=print,
):
    """Does what the command does, with plain arguments; returns the written dict.

    Every flag value, path and the task's split are checked before any module is loaded; each
    problem is a ValueError of one line naming the flag (`check_arguments`).
    """
    from hub_export import collection
    from vtab_eval import ranking, report, tasks

    cache_dir = check_arguments(
        output_json,
        split=split,
        resolution=resolution,
        cache_dir=cache_dir,
        batch_size=batch_size,
        num_shards=num_shards,
        shard_index=shard_index,
        cache_only=cache_only,
        plot_png=plot_png,
        precision=precision,
    )
    task = tasks.get_task(task_name, skip_bad_images=skip_bad_images)
    task.validate_splits([split])
    # Signatures are not pre-checked: a module that fails to load is left out, not fatal.
    pool = collection.resolve_pool(
        collection_spec, verify_checksums=verify_checksums, check_signatures=False
    )
    resolution = resolution or None  # None: each module at its own recommended resolution.
    common = dict(
        split=split,
        resolution=resolution,
        cache_dir=cache_dir,
        data_dir=data_dir,
        batch_size=batch_size,
        include_baseline=include_baseline,
        precision=precision,
        log=log,
    )
    if num_shards > 1:
        result = ranking.extract_shard(pool, task, num_shards, shard_index, **common)
    else:
        priors = ranking.load_label_priors(collection_spec) if method == "label_matching" else None
        result = ranking.rank(
            pool,
            task,
            method,
            seed=seed,
            cache_only=cache_only,
            label_priors=priors,
            fallback=fallback,
            fallback_confidence=fallback_confidence,
            **common,
        )
        result["collection"] = collection_spec
        if plot_png:
            report.plot_scores(result, plot_png)
    report.write_json(output_json, result)
    for item in result.get("left_out", []):
        log(f"left out {item['handle']}: {item['error']}")
    if "selected" in result:
        log(f"selected {result['selected_name']} ({result['selected']}) by {method}")
    if result.get("fallback"):
        fired = result["fallback"]["fired"]
        log(f"fallback to the baseline {'fired' if fired else 'did not fire'}")
    return result


def check_arguments(
    output_json,
    *,
    split,
    resolution,
    cache_dir,
    batch_size,
    num_shards,
    shard_index,
    cache_only,
    plot_png,
    precision="float32",
):
    """Checks the command's values and paths before any work; returns the cache directory.

    Raises:
      ValueError: one line naming the flag and what was expected.
    """
    from vtab_eval import embed, input_checks, tasks

    input_checks.positive_int("--batch_size", batch_size)
    input_checks.non_negative_int("--resolution", resolution)
    if precision not in embed.PRECISIONS:
        raise ValueError(f"--precision must be one of {list(embed.PRECISIONS)}; got {precision!r}")
    input_checks.positive_int("--num_shards", num_shards)
    input_checks.non_negative_int("--shard_index", shard_index)
    if shard_index >= num_shards:
        raise ValueError(
            f"--shard_index must be in [0, --num_shards={num_shards}); got {shard_index}"
        )
    if split not in tasks.SPLIT_NAMES:
        raise ValueError(f"--split must be one of {list(tasks.SPLIT_NAMES)}; got {split!r}")
    output_json = input_checks.output_file("--output_json", output_json)
    cache_dir = cache_dir or os.path.join(os.path.dirname(output_json), "feature_cache")
    if cache_only:
        cache_dir = input_checks.checked_path("--cache_dir", cache_dir)
        if not atomic_files.isdir(cache_dir):
            raise ValueError(
                f"--cache_dir: {cache_dir!r} is not a directory (--cache_only reads it)"
            )
    else:
        input_checks.writable_dir("--cache_dir", cache_dir)
    if plot_png:
        input_checks.output_file("--plot_png", plot_png)
    return cache_dir


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("collection", "dataset", "output_json"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    with (
        cli.one_line_errors("vtab_eval.rank", OSError, line=_disk_error_line),
        cli.one_line_errors("vtab_eval.rank"),
    ):
        rank_command(
            FLAGS.collection,
            FLAGS.dataset,
            FLAGS.output_json,
            method=FLAGS.method,
            split=FLAGS.split,
            resolution=FLAGS.resolution,
            data_dir=FLAGS.data_dir,
            cache_dir=FLAGS.cache_dir,
            batch_size=FLAGS.batch_size,
            seed=FLAGS.seed,
            include_baseline=FLAGS.include_baseline,
            num_shards=FLAGS.num_shards,
            shard_index=FLAGS.shard_index,
            cache_only=FLAGS.cache_only,
            plot_png=FLAGS.plot_png,
            verify_checksums=FLAGS.verify_checksums,
            fallback=FLAGS.fallback,
            fallback_confidence=FLAGS.fallback_confidence,
            skip_bad_images=FLAGS.skip_bad_images,
            precision=FLAGS.precision,
        )


def _disk_error_line(err):
    """The line for an OSError of `main`, e.g. the disk filled up writing features or the JSON."""
    paths = {
        os.path.dirname(FLAGS.output_json) or ".": "--output_json",  # made absolute there
        FLAGS.cache_dir: "--cache_dir",
    }
    from vtab_eval import input_checks

    return input_checks.disk_error_line(paths, err)


if __name__ == "__main__":
    define_flags()
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
