r"""The main job on the embedded offline world, in one command (15-42 minutes on 2 CPU cores).

    python -m vtab_eval.demo --workdir=runs/demo [--quick] [--update_readme=README.md]

Generates the glyph world, trains a small BiT baseline, 6 full and 6 adapter experts and the EPN,
publishes them as a TF Hub collection, then on four downstream tasks ranks the experts with every
selector, fine-tunes under the VTAB-1k protocol with a small sweep and writes the report:
WORKDIR/evaluation/report.md (+ summary.json, plots/) and WORKDIR/demo_summary.md. Re-running reuses
finished stages. `--quick` runs the same path with tiny sizes (about 11 minutes on a loaded 2-core
machine). Measured times and results, with their machines: README.md.
"""

from absl import app, flags

from bit_experts import cli

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where every stage writes its output.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes, same path; ~11 min on 2 loaded cores.")
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "one_device", "mirrored"], "tf.distribute strategy."
)
_SEED = flags.DEFINE_integer(
    "seed", 0, "Base seed of every selection and fine-tune (recorded in every result)."
)
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic", True, "TF op determinism and seeded RNGs (--nodeterministic: off)."
)
_INCLUDE_BASELINE = flags.DEFINE_bool(
    "include_baseline", True, "Rank the baseline B together with the experts."
)
_UPDATE_README = flags.DEFINE_string(
    "update_readme", None, "Also write the results section into this README (between markers)."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from bit_experts import determinism
    from vtab_eval import offline_demo

    command = "python -m vtab_eval.demo" + (" --quick" if _QUICK.value else "")
    if _SEED.value:
        command += f" --seed={_SEED.value}"
    determinism.configure(_SEED.value, _DETERMINISTIC.value)
    with cli.one_line_errors("vtab_eval.demo", (ValueError, FileNotFoundError, FileExistsError)):
        summary = offline_demo.run_demo(
            _WORKDIR.value,
            quick=_QUICK.value,
            strategy=_STRATEGY.value,
            command=command,
            seed=_SEED.value,
            deterministic=_DETERMINISTIC.value,
            include_baseline=_INCLUDE_BASELINE.value,
        )
        if _UPDATE_README.value:
            offline_demo.replace_readme_section(_UPDATE_README.value, summary)
    print(summary)


if __name__ == "__main__":
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
