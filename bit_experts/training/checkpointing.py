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

What a checkpoint holds: `model_state` puts every variable of the model in it, frozen ones included.
A committed checkpoint that cannot be read back (a truncated or corrupt file, or one without every
variable) is reported in one line and removed, and the previous committed one is restored instead.
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
# What reading a damaged checkpoint raises: OpError (a corrupt index, a missing file), IndexError (a
# truncated data file), AssertionError (a variable the checkpoint does not hold), ValueError.
_UNREADABLE = (tf.errors.OpError, IndexError, AssertionError, ValueError, OSError)


def model_state(model, **others) -> tf.train.Checkpoint:
    """A checkpoint of every variable of `model`, trainable or frozen, and of `others` (an optimizer).

    Variables are keyed by their path inside the model (`block1_unit01/a_standardized_conv2d/kernel`),
    the same in every process. `tf.train.Checkpoint(model=model)` is not enough for a Keras 3 model:
    it follows only layers held in plain attributes, so BiT's blocks and adapters (held in lists)
    reached a checkpoint only through the optimizer, that is only while trainable, and a resumed
    adapter expert rebuilt its frozen backbone from its random initialisation.
    """
    prefix = f"{model.name}/"
    variables = {}
    for v in model.weights:
        key = v.path[len(prefix) :] if v.path.startswith(prefix) else v.path
        if key in variables:
            raise ValueError(f"model {model.name!r} has two variables named {key!r}")
        variables[key] = v
    return tf.train.Checkpoint(variables=variables, **others)


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

    def restore_latest(self, print_fn=print, variables=()) -> int | None:
        """Restores the newest readable checkpoint; returns its step, or None when none reads.

        Each committed one that cannot be read is reported by one line on `print_fn` and removed (by
        the chief; a save of its step rewrites it), and the one before it is tried. A failed read
        may have set some variables already (one that lacks a frozen variable still sets those
        the optimizer holds): when none reads, `variables` (the checkpoint's) are put back as they were.
        """
        steps = self.steps()
        before = [v.numpy() for v in variables] if steps else []
        while steps:
            step = steps.pop()
            try:
                self.restore(step)
                return step
            except _UNREADABLE as e:
                reason = _reason(e)
            then = f"falling back to step {steps[-1]}" if steps else "starting from step 0"
            removed = "removed it; " if self.chief else ""
            print_fn(f"checkpoint {self.path(step)} cannot be read ({reason}): {removed}{then}")
            if self.chief:
                atomic_files.remove_unit(self.path(step))
        for v, value in zip(variables, before):
            v.assign(value)
        return None

    def restore(self, step: int) -> None:
        status = self.checkpoint.read(os.path.join(self.path(step), _PREFIX))
        try:
            status.assert_existing_objects_matched()
        except AssertionError:
            status.expect_partial()  # no warnings on its unused values: the caller reports it
            raise

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


def _reason(error: BaseException) -> str:
    if isinstance(error, AssertionError):
        return (
            "it lacks some of the model's variables: older versions saved only the trainable ones"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first[:160]}"
