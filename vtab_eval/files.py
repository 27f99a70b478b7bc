"""Every file the evaluation side reads or writes back goes through here: JSON, text, names.
Writes are atomic (`bit_experts.atomic_files`): a killed run never leaves half a file."""

import hashlib
import json
import os
import re

from bit_experts import atomic_files

write_text = atomic_files.write_text


class StateFileError(ValueError):
    """A state file (result, memo record, ranking, config) exists but cannot be read."""


def write_json(path, obj):
    """Writes `obj` as indented, key-sorted JSON to `path` (local or a URL), atomically."""
    return atomic_files.write_json(path, obj, indent=2, sort_keys=True)


def read_json(path, what="state file"):
    """The JSON at `path` (local or a URL), or None if it does not exist. Raises StateFileError,
    one line naming the file and `what` it is, when it is not valid UTF-8 JSON."""
    if not atomic_files.exists(path):
        return None
    try:
        return json.loads(atomic_files.read_bytes(path))
    except (ValueError, UnicodeDecodeError) as err:
        raise StateFileError(
            f"{path}: this {what} cannot be read ({type(err).__name__}: {err}); delete it to "
            "have it written again"
        ) from None


def name_slug(text):
    """`text` with every run of characters other than letters, digits, `_`, `.`, `-` as `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_")


def task_slug(task_name):
    """An injective, file-name-safe `<readable>-<hash>` of a task name: its `name_slug`, cut after
    a whole word within 48 characters when longer, and 10 hex digits of the name's SHA-256."""
    readable = name_slug(task_name)
    if len(readable) > 48:
        words = re.match(r"(.{1,48})(?=[_.-])", readable)
        readable = words[1] if words else readable[:48]
    readable = readable.strip("_.-") or "task"
    digest = hashlib.sha256(task_name.encode("utf-8")).hexdigest()[:10]
    return f"{readable}-{digest}"


# What run, audit and their report write in an output folder (docs/evaluation.md, "Output layout").
OUTPUTS = (
    "results rankings finetunes tensorboard predictions models plots feature_cache report.md "
    "summary.json comparison.md audit.json audit.md"
).split()


def output_paths(config):
    """(output dir, memo dir, feature cache dir) of an evaluation config, absolute (URLs as they
    are): `memo_dir` and `cache_dir` default to OUT/finetunes and OUT/feature_cache."""

    def absolute(flag, path):
        try:
            return atomic_files.abspath(path)
        except ValueError as err:  # a URL scheme without a tf.io.gfile filesystem
            raise ValueError(f"{flag}: {err}") from None

    out = absolute("--output_dir", config["output_dir"])
    memo = absolute("--memo_dir", config["memo_dir"] or os.path.join(out, "finetunes"))
    cache = absolute("--cache_dir", config["cache_dir"] or os.path.join(out, "feature_cache"))
    return out, memo, cache
