r"""The selection audit: every proxy and selection policy scored by regret against hindsight.

    python -m vtab_eval.audit --collection=C --tasks=T1,T2,... --output_dir=OUT \
        [--bank_dir=DIR] [--memo_dir=M] [--seeds=0,1,2] [--sweep=demo] [--upstream_dir=U]

Flags become an evaluation config (`vtab_eval.config`, its "audit" section) and one call runs it
(`vtab_eval.selection_audit.run`). Writes OUT/audit.json, OUT/audit.md and OUT/plots/<task>.png
(`vtab_eval.audit_report`); `--rescore` scores a finished OUT/audit.json again from its stored
results. Layout and how to read it: docs/selection.md, "Audit".
"""

import os
import sys

from absl import app, flags

from bit_experts import atomic_files, cli
from vtab_eval import audit_report, audit_scores, config, files, offline_demo

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags (defined only when run as a program, as `vtab_eval.run` does)."""
    config.define_flags("audit")
    flags.DEFINE_bool(
        "rescore",
        False,
        "Only score OUT/audit.json again from its stored results (after a metrics change) and "
        "rewrite audit.json, audit.md and plots/; needs only --output_dir.",
    )


def bank_task_names(bank_dir, names=None, log=print):
    """Writes the offline world's task bank (`bit_experts.world.BANK`, seed 0, the demo's image
    size) into `bank_dir` (complete tasks are kept) and returns their `folder:` task names."""
    from bit_experts import world  # here: it imports matplotlib

    atomic_files.require_local(
        bank_dir, "--bank_dir", "folder: tasks read local folders; write the bank to a local disk"
    )
    names = list(names or world.BANK)
    log(f"task bank: {len(names)} tasks in {bank_dir}")
    paths = world.write_downstream_tasks(
        bank_dir, seed=0, image_size=offline_demo.IMAGE_SIZE, tasks=names
    )
    return [f"folder:{os.path.abspath(p)}" for p in paths]


def write(output_dir, audit):
    """OUT/audit.json, OUT/audit.md and OUT/plots/ of an audit dict."""
    audit_report.write_plots(audit, os.path.join(output_dir, "plots"))
    files.write_json(os.path.join(output_dir, "audit.json"), audit)
    files.write_text(os.path.join(output_dir, "audit.md"), audit_report.markdown(audit))


def rescore(output_dir):
    """`--rescore`: OUT/audit.json scored again (`audit_scores.rescore`) and written back;
    FileNotFoundError if it is missing, ValueError if it is not an audit."""
    path = os.path.join(output_dir, "audit.json")
    stored = files.read_json(path, "audit")
    if stored is None:
        raise FileNotFoundError(f"{path!r} is missing: --rescore needs a finished audit")
    audit = audit_scores.rescore(stored)
    write(output_dir, audit)
    return audit


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    errors = (ValueError, FileNotFoundError, FloatingPointError)
    with cli.one_line_errors("vtab_eval.audit", errors):
        out = atomic_files.abspath(FLAGS.output_dir)
        if FLAGS.rescore:
            rescore(out)
        else:
            if not FLAGS.collection:
                raise app.UsageError("--collection and --output_dir are required")
            if not FLAGS.tasks and not FLAGS.bank_dir:
                raise app.UsageError("give --tasks, --bank_dir or both")
            cfg = config.from_flags("audit")
            sweep = cfg["finetune"]["sweep"]
            default = sweep in ("local", config.AUTO)
            if cfg["audit"]["quick"] and not FLAGS["sweep"].present and default:
                sweep = "quick"  # the quick mode's default sweep
            if sweep == "demo" and cfg["audit"]["quick"]:
                sweep = "demo_quick"
            cfg = config.set_key(cfg, "finetune.sweep", sweep)
            if cfg["audit"]["bank_dir"]:
                cfg["tasks"] = cfg["tasks"] + bank_task_names(cfg["audit"]["bank_dir"])
            from vtab_eval import selection_audit  # after the flags: it imports TensorFlow

            command = "python -m vtab_eval.audit " + " ".join(sys.argv[1:])
            audit = selection_audit.run(cfg, command=command)
            write(out, {k: v for k, v in audit.items() if k != "trained"})
        print(atomic_files.read_bytes(os.path.join(out, "audit.md")).decode("utf-8"))


if __name__ == "__main__":
    define_flags()
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
