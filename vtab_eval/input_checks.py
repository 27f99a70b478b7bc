"""Checks of command-line paths and numbers before any work, each failing with one line naming the flag.

Entry points call these first, so that a bad value never ends in a TensorFlow traceback after
minutes of work, or in half-written output. Every check raises ValueError (FileNotFoundError for
a missing input) whose message starts with the flag, e.g.
`--batch_size must be a positive integer; got 0`.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

from bit_experts import atomic_files

# Less free space than this on the disk of an output or cache directory is refused up front
# (one expert's cached features for 1000 images of 2048-d floats take 8 MiB).
MIN_FREE_BYTES = 64 << 20


def positive_int(flag: str, value) -> int:
    """`value` as an int if it is an integer >= 1; else ValueError naming `flag`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{flag} must be a positive integer; got {value!r}")
    return value


def non_negative_int(flag: str, value) -> int:
    """`value` as an int if it is an integer >= 0; else ValueError naming `flag`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{flag} must be an integer >= 0; got {value!r}")
    return value


def _existing_ancestor(path: str) -> str:
    """The deepest existing path among `path` and its parents."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def writable_dir(flag: str, path: str, min_free_bytes: int = MIN_FREE_BYTES) -> str:
    """Checks that directory `path` exists or can be created, is writable and has free space.

    Creates nothing: the deepest existing ancestor is probed with a temporary file (removed at
    once), which also catches read-only file systems and permissions that os.access misses. A URL
    of a `tf.io.gfile` filesystem (`gs://...`, docs/workdir.md) is checked only for naming a file:
    whether it can be written shows at the first write.

    Returns:
      The absolute path (a URL as given; `file://` as its local path).

    Raises:
      ValueError: one line naming `flag`, `path` and what is wrong (a regular file in the way,
        not writable, less than `min_free_bytes` free, a URL scheme without a filesystem).
    """
    path = checked_path(flag, path)
    if atomic_files.is_url(path):
        if atomic_files.exists(path) and not atomic_files.isdir(path):
            raise ValueError(f"{flag}: {path!r} is a regular file; expected a directory")
        return path
    path = os.path.abspath(os.path.expanduser(path))
    existing = _existing_ancestor(path)
    if not os.path.isdir(existing):
        where = "is" if existing == path else f"is under {existing!r}, which is"
        raise ValueError(f"{flag}: {path!r} {where} a regular file; expected a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write_probe_", dir=existing)
    except OSError as err:
        reason = "read-only" if err.errno == errno.EROFS else "not writable"
        raise ValueError(
            f"{flag}: {existing!r} is {reason} ({err.strerror}); expected a writable directory"
        ) from None
    os.close(handle)
    os.remove(probe)
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        raise ValueError(
            f"{flag}: the disk holding {existing!r} has {free / 2**20:.1f} MiB free; at least "
            f"{min_free_bytes / 2**20:.0f} MiB expected"
        )
    return path


def output_file(flag: str, path: str, min_free_bytes: int = MIN_FREE_BYTES) -> str:
    """Checks that file `path` can be written: not a directory, its folder writable (above).

    Returns:
      The absolute path (a URL as given: `writable_dir`).
    """
    if not path:
        raise ValueError(f"{flag} must be a file path; got {path!r}")
    path = checked_path(flag, path)
    if atomic_files.is_url(path):
        if atomic_files.isdir(path):
            raise ValueError(f"{flag}: {path!r} is a directory; expected a file path")
        return path
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path!r} is a directory; expected a file path")
    writable_dir(flag, os.path.dirname(path), min_free_bytes)
    return path


def checked_path(flag: str, path) -> str:
    """`path` with `file://` made local; ValueError naming `flag` for a URL scheme that has no
    `tf.io.gfile` filesystem (`atomic_files.check_url`)."""
    try:
        return atomic_files.check_url(path)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def _absolute(path: str) -> str:
    """`atomic_files.abspath(path)`, or `path` itself if that refuses it (for error lines)."""
    try:
        return atomic_files.abspath(path)
    except ValueError:
        return path


def disk_error_line(flag_by_path: dict, err: OSError) -> str:
    """One line for an OSError met while writing (e.g. a disk that filled up during the work),
    naming the file and the flag whose directory holds it."""
    filename = err.filename or ""
    flag = next(
        (
            f
            for p, f in sorted(flag_by_path.items(), key=lambda kv: -len(kv[0]))
            if p and _absolute(filename).startswith(_absolute(p))
        ),
        None,
    )
    where = f" ({flag})" if flag else ""
    reason = "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return f"writing {filename or 'output'}{where} failed: {reason}"
