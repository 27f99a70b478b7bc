"""Ranks a collection of expert modules on a task and writes the ranking as JSON.

    python -m vtab_eval.rank --collection=C --dataset=D --output_json=F [--method=knn]

`--collection` is a collection directory, its manifest.json, or a text file with one module handle
per line. With `--num_shards=K --shard_index=i` the command only computes (into the shared
`--cache_dir`) its share of the experts' features and writes a shard report; a final run without
sharding then reads the merged cache. Flags become an evaluation config (`vtab_eval.config`) and
one call runs it (`vtab_eval.engine.rank`). Flags and the JSON schema: docs/evaluation.md.
"""

import os

from absl import app, flags

from bit_experts import cli
from vtab_eval import config

FLAGS = flags.FLAGS


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
        cfg = config.from_flags("rank")
        # Only now: --help and flag errors need neither (engine imports TensorFlow once its
        # checks pass).
        from vtab_eval import engine, plots, report

        result = engine.rank(cfg)
        if cfg["plot_png"] and "selected" in result:
            plots.plot_scores(result, cfg["plot_png"])
        for item in result.get("left_out", []):
            print(f"left out {item['handle']}: {item['error']}")
        if "selected" in result:
            print(
                f"selected {result['selected_name']} ({result['selected']}) by {result['method']}"
            )
            print("\n".join(report.confidence_lines(result)))


def _disk_error_line(err):
    from vtab_eval import checks

    dirs = {
        os.path.dirname(FLAGS.output_json) or ".": "--output_json",
        FLAGS.cache_dir: "--cache_dir",
    }
    return checks.disk_error_line(err, dirs)


if __name__ == "__main__":
    config.define_flags("rank")
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
