"""A lock file that serialises the writers of one folder: a collection, a training work directory.

`DirectoryLock(folder, lock_file, what)` holds `folder/lock_file` for a `with` block. The file is
created with `O_CREAT | O_EXCL`, so exactly one process holds it; it records the holder's pid, host,
process start time and command line. A writer that finds it held waits (polling) until it is
released, takes it over when the holder is a dead process on this host (a killed writer), and
otherwise gives up after `timeout` seconds (0: at once) with one line naming the folder, the holder
and the lock file.

Each collection has one (`hub_export.collection_lock`, held while publishers change its listing)
and each training work directory has one (`bit_experts.training.job`, held while a job runs).

A folder on a `tf.io.gfile` URL (`gs://...`) has no exclusive create: there the lock is written
when absent and read back, which serialises writers that start seconds apart but not two that
create it in the same instant (docs/workdir.md: run one writer per remote folder).
"""

import json
import os
import socket
import sys
import threading
import time
import uuid

from bit_experts import atomic_files


class LockHeldError(OSError):
    """The lock is held by another live writer past the timeout; the message names it."""


def process_start_time(pid):
    """The process's start time in clock ticks since boot (Linux /proc), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # The command name (field 2) may hold spaces; the fields after it are space-separated.
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # A zombie has exited; only its exit status is left.
            return "zombie"
        return fields[19]  # Field 22 of proc(5): starttime.
    except (OSError, IndexError):
        return None


def pid_alive(pid, start_time=None):
    """Whether process `pid` on this host runs (and, if `start_time` is known, is the same process
    and not a later one that reused the pid)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # Another user's process: it exists.
    except (OverflowError, ValueError):
        return False
    now = process_start_time(pid)
    if now == "zombie":
        return False
    return start_time is None or now is None or str(now) == str(start_time)


def holder_description(holder):
    """`pid 123 on host h since 2024-01-01 12:00:00 (python -m bit_experts.train ...)`."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    command = " ".join(holder.get("argv") or [])[:120]
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {since}" + (
        f" ({command})" if command else ""
    )


class _State:
    """What the DirectoryLocks of one path share within a process."""

    def __init__(self):
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.token = None


class DirectoryLock:
    """Context manager: holds `folder/lock_file` for the duration of a `with` block.

    Re-entrant within a process (a counter), thread-safe (threads of one process take turns), and
    reusable: `with lock:` may be entered many times. Raises LockHeldError after `timeout` seconds
    of waiting for a live holder; `what` names the folder in that message ("collection").
    """

    _states = {}  # lock path -> _State shared by every DirectoryLock of this process
    _registry_lock = threading.Lock()

    def __init__(self, folder, lock_file, what, timeout=600.0, poll=0.1, log=print):
        self.path = os.path.join(atomic_files.abspath(folder), lock_file)
        self.what = what
        self.remote = atomic_files.is_url(self.path)
        self.timeout = float(timeout)
        self.poll = float(poll)
        self.log = log
        with DirectoryLock._registry_lock:
            self._state = DirectoryLock._states.setdefault(self.path, _State())

    def __enter__(self):
        if not self._state.thread_lock.acquire(timeout=self.timeout if self.timeout >= 0 else -1):
            raise LockHeldError(
                f"{self.what} lock {self.path} is held by another thread of this process "
                f"(waited {self.timeout:.0f} s)"
            )
        try:
            if self._state.depth == 0:
                self._acquire_file()
            self._state.depth += 1
        except BaseException:
            self._state.thread_lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self._state.depth -= 1
            if self._state.depth == 0:
                self._release_file()
        finally:
            self._state.thread_lock.release()

    def _record(self):
        self._state.token = uuid.uuid4().hex
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_time": process_start_time(os.getpid()),
            "time": time.time(),
            "argv": list(sys.argv),
            "token": self._state.token,
        }

    def _acquire_file(self):
        deadline = time.monotonic() + self.timeout
        reported = False
        while True:
            try:
                fd = self._create()
            except FileExistsError:
                if atomic_files.islink(self.path):  # none of ours; what it points at is not read
                    raise LockHeldError(
                        f"lock {self.path} is a symbolic link (to {os.readlink(self.path)}), not a "
                        "lock a writer of ours made: remove it"
                    ) from None
                holder = self.read_holder()
                if holder is not None and self._is_stale(holder):
                    self._break(holder)
                    continue
                if time.monotonic() >= deadline:
                    who = holder_description(holder) if holder else "an unknown writer"
                    waited = (
                        f"waited {self.timeout:.0f} s for {self.path}"
                        if self.timeout > 0
                        else f"its lock is {self.path}"
                    )
                    raise LockHeldError(
                        f"{self.what} {os.path.dirname(self.path)} is being changed by {who}: "
                        f"{waited}; remove that file only if that process is gone"
                    ) from None
                if not reported and holder:
                    self.log(f"waiting for {holder_description(holder)} to release {self.path}")
                    reported = True
                time.sleep(self.poll)
                continue
            if fd is None:
                return  # remote: written and read back by _create
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._record(), f)
            return

    def _create(self):
        """Creates the lock file exclusively: an open descriptor to write the record into, or
        (remote) None once the record is written and read back; FileExistsError when held."""
        if not self.remote:
            return os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        if atomic_files.exists(self.path):
            raise FileExistsError(self.path)
        atomic_files.write_json(self.path, self._record())
        time.sleep(self.poll)  # let a writer that created it in the same instant write too
        holder = self.read_holder()
        if holder is None or holder.get("token") != self._state.token:
            raise FileExistsError(self.path)  # the other one's record won: wait for it
        return None

    def read_holder(self):
        """The holder's record, or None when the lock file is absent or (briefly, while its holder
        writes it) empty or unreadable."""
        try:
            if self.remote and not atomic_files.exists(self.path):
                return None
            holder = json.loads(atomic_files.read_bytes(self.path).decode("utf-8"))
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):
            return None

    @staticmethod
    def _is_stale(holder):
        if holder.get("host") != socket.gethostname():
            return False  # A process on another host cannot be checked from here.
        return not pid_alive(holder.get("pid", -1), holder.get("start_time"))

    def _break(self, holder):
        """Removes a dead holder's lock, unless another writer broke it and took the lock since."""
        if self.remote:  # no rename there: re-read, then remove (a narrow race, see the top)
            if (self.read_holder() or {}).get("token") == holder.get("token"):
                atomic_files.remove(self.path)
                self.log(f"removed the stale lock of {holder_description(holder)}")
            return
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # Another writer broke it first.
        try:
            with open(aside, encoding="utf-8") as f:
                moved = json.load(f)
        except (OSError, ValueError):
            moved = None
        if isinstance(moved, dict) and moved.get("token") != holder.get("token"):
            # We moved a fresh lock that a live writer took meanwhile: put it back.
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.remove(aside)
            return
        os.remove(aside)
        self.log(f"removed the stale lock of {holder_description(holder)} (that process is gone)")

    def _release_file(self):
        holder = self.read_holder()
        if holder is not None and holder.get("token") == self._state.token:
            atomic_files.remove(self.path)
        self._state.token = None
