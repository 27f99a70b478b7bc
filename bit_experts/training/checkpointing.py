"""Atomic training checkpoints: each save is a complete `step_<N>` folder or nothing.

A `tf.train.Checkpoint` is written into a temporary folder next to its final place and then renamed
with `os.replace`, so a process killed at any moment (SIGKILL included) leaves either the previous
checkpoints or the new one, never a half-written one. Leftover temporary folders are removed on the
next start. Non-chief workers of a multi-worker job write to a throwaway folder (every worker must
take part in a save) and delete it.

On a `tf.io.gfile` URL (`gs://...`, where a folder rename is a copy, not atomic) the checkpoint is
written straight into `step_<N>` and committed by the marker file `atomic_files.MARKER_FILE`, written
last; `steps()` lists only committed folders there, and a save finding an uncommitted folder of its
step rewrites it (docs/workdir.md).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import tensorflow as tf

from bit_experts import atomic_files

_STEP_DIR = re.compile(r"^step_(\d+)$")
_PREFIX = "ckpt"


class AtomicCheckpointer:
    """Saves and restores `checkpoint` under `directory`, keeping the newest `keep` saves."""

    def __init__(
        self, directory: str, checkpoint: tf.train.Checkpoint, keep: int = 2, chief: bool = True
    ):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = atomic_files.check_url(directory)  # file:// -> its local path
        self.checkpoint = checkpoint
        self.keep = keep
        self.chief = chief
        self.remote = atomic_files.is_url(self.directory)
        if chief:
            atomic_files.makedirs(self.directory)
            for name in atomic_files.listdir(self.directory):
                if name.startswith(".tmp-"):
                    atomic_files.rmtree(os.path.join(self.directory, name))

    def steps(self) -> list[int]:
        """Steps of the complete (committed) checkpoints, oldest first."""
        if not atomic_files.isdir(self.directory):
            return []
        found = (_STEP_DIR.match(n) for n in atomic_files.listdir(self.directory))
        steps = sorted(int(m.group(1)) for m in found if m)
        return [s for s in steps if atomic_files.is_committed(self.path(s))]

    def path(self, step: int) -> str:
        return os.path.join(self.directory, f"step_{step:09d}")

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def restore_latest(self) -> int | None:
        """Restores the newest checkpoint; returns its step, or None when there is none."""
        step = self.latest_step()
        if step is not None:
            self.restore(step)
        return step

    def restore(self, step: int) -> None:
        status = self.checkpoint.read(os.path.join(self.path(step), _PREFIX))
        status.assert_existing_objects_matched()

    def save(self, step: int) -> str | None:
        """Writes the checkpoint for `step`; returns its folder (None on a non-chief worker)."""
        if self.chief and atomic_files.is_committed(self.path(step)):
            return self.path(step)  # Saved already: a resumed run reached the same step again.
        if self.chief and self.remote:
            return self._save_remote(step)
        parent = self.directory if self.chief else tempfile.gettempdir()
        os.makedirs(parent, exist_ok=True)
        tmp = atomic_files.make_temp_dir(parent, prefix=".tmp-")
        try:
            self.checkpoint.write(os.path.join(tmp, _PREFIX))
            if not self.chief:
                return None
            final = self.path(step)
            os.replace(tmp, final)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        self._drop_old()
        return final

    def _save_remote(self, step: int) -> str:
        final = self.path(step)
        atomic_files.rmtree(final)  # an uncommitted leftover of a killed save
        self.checkpoint.write(os.path.join(final, _PREFIX))
        atomic_files.write_marker(final, {"step": int(step)})  # the commit: last
        self._drop_old()
        return final

    def _drop_old(self) -> None:
        for old in self.steps()[: -self.keep]:
            atomic_files.remove_unit(self.path(old))
