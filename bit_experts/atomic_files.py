"""Atomic file writes: a temporary file in the target's directory, then `os.replace`.

A process killed at any moment (SIGKILL included) leaves either the old file or the new one, never
a half-written one. Every module of the package that writes results goes through here.
"""

import json
import os
import tempfile


def write_atomic(path, write, binary=True):
    """Calls `write(file)` on a temporary file next to `path`, then renames it onto `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically."""
    return write_atomic(path, lambda f: f.write(data))


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    return write_atomic(path, lambda f: f.write(text), binary=False)


def write_json(path, obj, indent=2, sort_keys=False):
    """Writes `obj` as JSON (with a trailing newline) to `path` atomically."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")
