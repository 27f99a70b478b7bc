"""Prints the registered transfer tasks.

    python -m vtab_eval.list_tasks --format=json           # all tasks, JSON list
    python -m vtab_eval.list_tasks --suite=vtab1k          # the 19 VTAB-1k tasks, a table
    python -m vtab_eval.list_tasks --task=folder:/data/x   # describe one task (any name)

The JSON fields are documented in docs/tasks.md.
"""

import json

from absl import app, flags

from bit_experts import cli
from vtab_eval import tasks

_FORMAT = flags.DEFINE_enum("format", "text", ["text", "json"], "Output format.")
_SUITE = flags.DEFINE_enum("suite", "all", list(tasks.SUITES), "Which tasks to list.")
_TASK = flags.DEFINE_multi_string(
    "task", [], "Describe these tasks instead of a suite (registry names or folder:PATH)."
)


def format_text(descriptions: list[dict]) -> str:
    """A fixed-width table: name, group, classes, metric, augmentation, TFDS name, test split."""
    header = ("name", "group", "classes", "metric", "augment", "tfds_name", "test")
    rows = [header] + [
        (
            d["name"],
            d["group"] or "-",
            str(d["num_classes"]),
            d["metric"],
            "+".join(k for k in ("flip", "crop") if d["augmentation"][k]) or "none",
            d["tfds_name"] or "-",
            d["splits"]["test"],
        )
        for d in descriptions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    names = _TASK.value or tasks.list_tasks(_SUITE.value)
    with cli.one_line_errors("vtab_eval.list_tasks"):
        descriptions = [tasks.get_task(name).to_json() for name in names]
    print(
        json.dumps(descriptions, indent=2) if _FORMAT.value == "json" else format_text(descriptions)
    )


if __name__ == "__main__":
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
