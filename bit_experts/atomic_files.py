"""Atomic file writes: a temporary file in the target's directory, then `os.replace`.

A process killed at any moment (SIGKILL included) leaves either the old file or the new one, never
a half-written one. Every module of the package that writes results goes through here.

`tempfile.mkstemp` and `tempfile.mkdtemp` create their results private (0600 / 0700) whatever the
umask; renamed into place they would stay private and another user could not read a published
collection. So every temporary file or folder made here gets the mode a plain `open` or `os.mkdir`
would have given it: 0666 & ~umask for files, 0777 & ~umask for folders.
"""

import json
import os
import tempfile
import threading

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status).

    Elsewhere it falls back to setting and restoring it under a lock, which is safe against the
    other callers of this function but not against threads that create files meanwhile.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode `os.mkdir(path)` gives a new folder under the current umask."""
    return 0o777 & ~current_umask()


def make_temp_dir(dir: str, prefix: str = ".tmp-") -> str:  # noqa: A002 (tempfile's name)
    """`tempfile.mkdtemp(dir=dir, prefix=prefix)` with the umask's folder mode instead of 0700.

    Use it for a folder that is filled and then renamed into place, so that the result is as
    readable as any other folder the user creates.
    """
    path = tempfile.mkdtemp(dir=dir, prefix=prefix)
    os.chmod(path, dir_mode())
    return path


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
            os.fchmod(f.fileno(), file_mode())  # mkstemp made it 0600.
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
