"""A training job's work directory: its path, its lock, the config it was trained with, its disk.

Everything here runs before a job writes anything (docs/workdir.md): the path is checked, the lock
`.train.lock` is taken (one job per work directory; another job's is named in one line), the stored
`config.json` is compared with the job's (a work directory in which nothing was trained yet takes
the new one, so a failed first attempt never blocks its corrected rerun), and the free disk space is
compared with what the stages to run may write.
"""

from __future__ import annotations

import os
import re

from bit_experts import atomic_files, expert_domains, locks
from bit_experts.training import outputs
from bit_experts.training.config import DEFAULTS
from bit_experts.training.upstream import DOMAINS_FILE

LOCK_FILE = ".train.lock"
CONFIG_FILE = "config.json"
# Settings that may change between runs of one work directory without changing what is trained.
RUNTIME_KEYS = ("checkpoint_every", "log_every", "keep_checkpoints", "max_image_size")


class DiskFullError(OSError):
    """The work directory's disk is (or would become) full: free space and rerun (it resumes)."""


def check_workdir(workdir: str) -> None:
    """ValueError naming `workdir` unless it is (or can be created as) a writable directory.

    Nothing is created: a refused run leaves no trace. A URL of a `tf.io.gfile` filesystem
    (`gs://bucket/work`, docs/workdir.md) is refused only when it names a file: whether it can be
    written shows at the first write. A symbolic link in it that leads outside it is refused.
    """
    if not workdir:
        raise ValueError("--workdir must be a directory path, got an empty string")
    try:
        workdir = atomic_files.check_url(workdir)  # file:// is local; an unknown scheme: refused
    except ValueError as err:
        raise ValueError(f"--workdir: {err}") from None
    if atomic_files.is_url(workdir):
        if atomic_files.exists(workdir) and not atomic_files.isdir(workdir):
            raise ValueError(
                f"--workdir {workdir!r} is a file; expected a directory (or a new path)"
            )
        return
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--workdir {workdir!r} is a file; expected a directory (or a new path)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"--workdir {workdir!r} lies under the file {existing!r}; expected a directory path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {workdir!r}: {existing!r} is not writable")
    atomic_files.refuse_links_out(path, "--workdir")


def take_lock(workdir: str, print_fn=print) -> locks.DirectoryLock:
    """Holds the work directory's lock (call `.__exit__(None, None, None)` to give it back).

    Raises LockHeldError at once, naming the work directory and the holder (pid, host, start, its
    command), when another live job holds it; a dead holder's lock (a killed job) is taken over.
    """
    atomic_files.makedirs(workdir)
    lock = locks.DirectoryLock(workdir, LOCK_FILE, "work directory", timeout=0, log=print_fn)
    lock.__enter__()
    return lock


def trained_anything(workdir: str) -> bool:
    """Whether a model or a checkpoint was written into the work directory."""
    root = outputs.models_dir(workdir)
    if atomic_files.isdir(root) and any(
        outputs.model_exists(workdir, n) for n in atomic_files.listdir(root)
    ):
        return True
    checkpoints = os.path.join(workdir, "checkpoints")
    return atomic_files.isdir(checkpoints) and any(
        re.search(r"(^|/)step_\d+/", f) for f in atomic_files.walk_files(checkpoints)
    )


def check_config(workdir: str, config: dict, print_fn=print) -> None:
    """Compares `config` with the work directory's `config.json` (when there is one).

    A different config (keys outside RUNTIME_KEYS) is refused once something was trained; before
    that, the work directory starts over with `config` (its expert domains, chosen with the old
    one, are removed). A key that `config.json` lacks (it was added to the config later) counts at
    its default, which keeps what versions before it did. A `config.json` that does not parse is
    named in one line with what to do.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not atomic_files.isfile(path):
        return
    advice = (
        "it is the config this work directory was first trained with: if that was this config, "
        "delete the file and rerun (it is written again); else use a new --workdir"
    )
    previous = atomic_files.read_json(path, advice)
    if not isinstance(previous, dict):
        raise ValueError(f"{path} does not hold a JSON object; {advice}")
    previous = previous | {
        key: {**default, **previous[key]}
        if isinstance(default, dict) and isinstance(previous.get(key), dict)
        else previous.get(key, default)
        for key, default in DEFAULTS.items()
    }
    changed = sorted(
        k
        for k in set(previous) | set(config)
        if k not in RUNTIME_KEYS and previous.get(k) != config.get(k)
    )
    if not changed:
        return
    if trained_anything(workdir):
        raise ValueError(
            f"{workdir} was trained with a different config (keys {changed} differ); "
            "use a new --workdir or the same config"
        )
    print_fn(
        f"{workdir}: nothing was trained with its earlier config (keys {changed} differ); "
        "starting over with this one"
    )
    domains = os.path.join(workdir, DOMAINS_FILE)
    for stale in (domains, expert_domains.index_file_path(domains)):
        if atomic_files.exists(stale):
            atomic_files.remove(stale)


def tree_bytes(folder: str) -> int:
    """The bytes of every file under the local `folder` (0 when absent)."""
    return sum(
        os.path.getsize(os.path.join(top, name))
        for top, _, names in os.walk(folder)
        for name in names
    )


def check_free_space(workdir: str, need: int, estimate: str) -> None:
    """DiskFullError when the disk of the local `workdir` has less than `need` bytes free; the
    message gives `estimate` (how `need` was found). A URL is not checked (no free space to ask)."""
    free = atomic_files.free_bytes(workdir)
    if free is not None and need > free:
        raise DiskFullError(
            28,  # errno.ENOSPC
            f"the disk of work directory {workdir!r} has {free / 2**20:.1f} MiB free; the stages "
            f"to run may write {need / 2**20:.1f} MiB ({estimate}): free space, lower "
            "keep_checkpoints or use a --workdir on another disk",
        )
