r"""The main job on the embedded offline world, in one command (about 15 minutes on 2 CPU cores).

    python -m vtab_eval.demo --workdir=runs/demo [--quick] [--update_readme=README.md]

Generates the glyph world, trains a small BiT baseline, 6 full and 6 adapter experts and the EPN,
publishes them as a TF Hub collection, then on four downstream tasks ranks the experts with every
selector, fine-tunes under the VTAB-1k protocol with a small sweep and writes the report:
WORKDIR/evaluation/report.md (+ summary.json, plots/) and WORKDIR/demo_summary.md. Re-running reuses
finished stages. `--quick` runs the same path with tiny sizes (about two minutes).
"""

import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where every stage writes its output.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes: the same path in about two minutes.")
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "one_device", "mirrored"], "tf.distribute strategy."
)
_UPDATE_README = flags.DEFINE_string(
    "update_readme", None, "Also write the results section into this README (between markers)."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from vtab_eval import offline_demo

    command = "python -m vtab_eval.demo" + (" --quick" if _QUICK.value else "")
    try:
        summary = offline_demo.run_demo(
            _WORKDIR.value, quick=_QUICK.value, strategy=_STRATEGY.value, command=command
        )
        if _UPDATE_README.value:
            offline_demo.replace_readme_section(_UPDATE_README.value, summary)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        sys.exit(f"vtab_eval.demo: error: {error}")
    print(summary)


if __name__ == "__main__":
    app.run(main)
