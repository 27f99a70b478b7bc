"""Are the experts experts? `python -m bit_experts.expert_quality --workdir=W`.

Prints, for every full and adapter expert of an upstream work directory trained on the offline
world, its top-1 accuracy on held-out images of its own slice next to B's, with the paired
bootstrap 95% interval of the difference (`bit_experts.training.slice_eval.expert_quality`;
docs/selection.md, "Are the experts experts?"). An expert is clearly better than B on its slice
when the interval lies above 0 (column "better than B"). `--output_json=F` also writes the table
as JSON (fractions, rows in models/ order, null where a value is undefined).

Bad input (a work directory that is missing, not finished or not a world job; an --output_json
that is a directory) ends with one line `bit_experts.expert_quality: error: ...` before any
evaluation, and writes nothing.
"""

import os

from absl import app, flags

from bit_experts import cli

PROG = "bit_experts.expert_quality"

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Finished upstream work directory of a job trained on the offline world."
)
_IMAGES_PER_CLASS = flags.DEFINE_integer(
    "images_per_class", 10, "Held-out images rendered per upstream class (>= 1)."
)
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json",
    None,
    "Also write the table here as JSON (written atomically; missing parent folders are created; "
    "an existing directory is refused before any evaluation).",
)

flags.mark_flags_as_required(["workdir"])


def check_output_path(path: str) -> None:
    """Raises ValueError (one line naming --output_json) when `path` cannot become a file: an
    existing directory, a name ending in a separator, or a parent that is an existing file."""
    from bit_experts import atomic_files

    path = atomic_files.check_url(path)
    if atomic_files.is_url(path):
        return
    if path.endswith(os.sep) or os.path.isdir(path):
        raise ValueError(f"--output_json={path!r} is a directory; expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--output_json={path!r}: {parent!r} is a file, not a directory")


def _error_line(error) -> str:
    from bit_experts.training import slice_eval

    if isinstance(error, slice_eval.NotAWorldJobError):
        return (
            f"--workdir={error.workdir!r} was trained on upstream.source={error.source!r} "
            "(config.json); this command supports only jobs trained on the offline world "
            '(upstream.source = "world")'
        )
    return str(error)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    errors = (ValueError, FileNotFoundError, NotADirectoryError)
    with cli.one_line_errors(PROG, errors=errors, line=_error_line):
        if _IMAGES_PER_CLASS.value < 1:
            raise ValueError(f"--images_per_class must be >= 1, got {_IMAGES_PER_CLASS.value}")
        from bit_experts import atomic_files

        atomic_files.require_local(
            _WORKDIR.value, "--workdir", "copy the work directory to a local disk first"
        )
        if _OUTPUT_JSON.value:
            check_output_path(_OUTPUT_JSON.value)
        from bit_experts.training import slice_eval

        table = slice_eval.expert_quality(_WORKDIR.value, _IMAGES_PER_CLASS.value)
        print(slice_eval.format_table(table), flush=True)
        if _OUTPUT_JSON.value:
            atomic_files.write_json(_OUTPUT_JSON.value, slice_eval.json_ready(table))


if __name__ == "__main__":
    cli.quiet_logs()
    app.run(main)
