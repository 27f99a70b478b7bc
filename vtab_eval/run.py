r"""Selects experts and fine-tunes them on one task or many, then reports; resumable after a kill.

    python -m vtab_eval.run --collection=C --tasks=vtab1k --output_dir=OUT \
        --selectors=knn,random,baseline --sweep=vtab_lightweight
    python -m vtab_eval.run --config=vtab1k --collection=C --output_dir=OUT

Flags become an evaluation config (`vtab_eval.config`) and one call runs it
(`vtab_eval.engine.evaluate`). Everything is checked before anything trains; each fine-tune is
recorded the moment it ends (OUT/finetunes/) under a key of its content: the module's weights
fingerprint (its checksum when it has none), the task's fingerprint, splits, setting and seed. So
re-running after a kill redoes nothing finished, and a module republished with the same weights
reuses its fine-tunes and features. `--dry_run` prints the plan and a time estimate. Writes
OUT/results/, the report (OUT/report.md, OUT/summary.json) and OUT/plots/. Flags, layout and JSON
schema: docs/evaluation.md.
"""

import os

from absl import app, flags

from bit_experts import atomic_files, cli
from vtab_eval import config

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags (defined only when run as a program, so that importing this module next
    to other entry points never clashes over flag names)."""
    config.define_flags("run")
    flags.DEFINE_bool("report_only", False, "Only rewrite the report from existing results.")
    flags.DEFINE_bool("dry_run", False, "Check and print the plan with a time estimate.")
    flags.DEFINE_list("compare", None, "Output dirs of earlier runs to put side by side.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    with (
        cli.one_line_errors("vtab_eval.run", OSError, line=_disk_error_line),
        cli.one_line_errors("vtab_eval.run", (ValueError, FileNotFoundError, FloatingPointError)),
    ):
        from vtab_eval import report  # here, as engine below: --help and flag errors need neither

        out = atomic_files.abspath(FLAGS.output_dir)
        if FLAGS.compare:
            text = report.compare(FLAGS.compare)
            atomic_files.write_text(os.path.join(out, "comparison.md"), text)
            print(text)
            return
        if not FLAGS.report_only:
            cfg = config.from_flags("run")
            if not (cfg["collection"] and cfg["tasks"]):
                raise app.UsageError("--collection and --tasks are required (unless --report_only)")
            from vtab_eval import engine

            if FLAGS.dry_run:
                engine.dry_run(cfg)
                return
            engine.evaluate(cfg, on_task_done=lambda out: report.write(out, with_plots=False))
        report.write(out)
        print(atomic_files.read_bytes(os.path.join(out, "report.md")).decode("utf-8"))


def _disk_error_line(err):
    from vtab_eval import checks

    dirs = {FLAGS.output_dir: "--output_dir", FLAGS.cache_dir: "--cache_dir"}
    return checks.disk_error_line(err, dirs)


if __name__ == "__main__":
    define_flags()
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
