"""The lock file that serialises writers of a collection: exclusive, stale-safe, and named on refusal."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import pytest

from bit_experts import locks
from hub_export.collection_lock import LOCK_FILE, CollectionLock, CollectionLockError

QUIET = {"log": lambda *_: None}
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _dead_pid():
    """The pid of a process that has exited and been reaped."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def _write_holder(path, **fields):
    holder = {"pid": 1, "host": socket.gethostname(), "time": time.time(), "token": "t", **fields}
    (path / LOCK_FILE).write_text(json.dumps(holder))


def test_lock_file_is_created_and_removed_with_the_holder_named(tmp_path):
    lock = CollectionLock(tmp_path, **QUIET)
    with lock:
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with lock:  # re-entrant within a process
            assert (tmp_path / LOCK_FILE).exists()
        assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    _write_holder(tmp_path, pid=_dead_pid())
    messages = []
    with CollectionLock(tmp_path, timeout=5, log=messages.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert any("stale lock" in m for m in messages)
    assert os.listdir(tmp_path) == []  # nothing aside left behind


def test_live_holder_elsewhere_is_refused_after_the_timeout_with_its_name(tmp_path):
    # A lock of another host cannot be checked from here: it is never broken, only waited for.
    _write_holder(tmp_path, pid=4242, host="other-host.example", argv=["publish", "--x"])
    start = time.monotonic()
    with pytest.raises(CollectionLockError, match=r"pid 4242 on host other-host\.example") as info:
        with CollectionLock(tmp_path, timeout=0.3, poll=0.05, **QUIET):
            pass
    assert time.monotonic() - start >= 0.3
    assert "\n" not in str(info.value) and "remove that file only if" in str(info.value)
    # The same on this host while the holder lives (this very process stands for it).
    (tmp_path / LOCK_FILE).unlink()
    _write_holder(tmp_path, pid=os.getpid(), start_time=locks.process_start_time(os.getpid()))
    with pytest.raises(CollectionLockError, match=f"pid {os.getpid()} on host"):
        with CollectionLock(tmp_path, timeout=0.2, poll=0.05, **QUIET):
            pass
    assert (tmp_path / LOCK_FILE).exists()  # a live holder's lock is left alone


def test_pid_reuse_is_not_mistaken_for_the_holder():
    me = os.getpid()
    assert locks.pid_alive(me, locks.process_start_time(me))
    if locks.process_start_time(me) is not None:  # Linux: /proc gives start times
        assert not locks.pid_alive(me, "1")  # same pid, another start time
    assert not locks.pid_alive(_dead_pid())


def test_threads_and_processes_take_turns(tmp_path):
    """Each holder appends "enter, exit" under the lock; interleaving would show as two enters."""
    log_file = tmp_path / "log.txt"
    collection = tmp_path / "c"
    collection.mkdir()
    script = (
        "import sys, time\n"
        "from hub_export.collection_lock import CollectionLock\n"
        "for _ in range(3):\n"
        f"    with CollectionLock({str(collection)!r}, timeout=60, log=lambda *_: None):\n"
        f"        open({str(log_file)!r}, 'a').write('enter\\n'); time.sleep(0.05)\n"
        f"        open({str(log_file)!r}, 'a').write('exit\\n')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    other = subprocess.Popen([sys.executable, "-c", script], env=env)

    def hold():
        for _ in range(3):
            with CollectionLock(collection, timeout=60, **QUIET):
                with open(log_file, "a") as f:
                    f.write("enter\n")
                time.sleep(0.05)
                with open(log_file, "a") as f:
                    f.write("exit\n")

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other.wait(timeout=120) == 0
    lines = log_file.read_text().split()
    assert len(lines) == 18 and lines == ["enter", "exit"] * 9
    assert not (collection / LOCK_FILE).exists()
