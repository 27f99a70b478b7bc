"""Are the experts experts? `python -m bit_experts.expert_quality --workdir=W`.

Prints, for every full and adapter expert of an upstream work directory trained on the offline
world, its top-1 accuracy on held-out images of its own slice next to B's, with the paired
bootstrap 95% interval of the difference (`bit_experts.training.slice_eval.expert_quality`;
docs/selection.md, "Are the experts experts?"). An expert is clearly better than B on its slice
when the interval lies above 0. `--output_json=F` also writes the table as JSON (fractions).
"""

from absl import app, flags

from bit_experts import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Finished upstream work directory (world source).")
_IMAGES_PER_CLASS = flags.DEFINE_integer(
    "images_per_class", 10, "Held-out images rendered per upstream class (>= 1)."
)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the table here as JSON.")

flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with cli.one_line_errors("bit_experts.expert_quality"):
        if _IMAGES_PER_CLASS.value < 1:
            raise ValueError(f"--images_per_class must be >= 1, got {_IMAGES_PER_CLASS.value}")
        from bit_experts import atomic_files
        from bit_experts.training import slice_eval

        table = slice_eval.expert_quality(_WORKDIR.value, _IMAGES_PER_CLASS.value)
        print(slice_eval.format_table(table), flush=True)
        if _OUTPUT_JSON.value:
            atomic_files.write_json(_OUTPUT_JSON.value, table, sort_keys=True)


if __name__ == "__main__":
    cli.quiet_logs()
    app.run(main)
