"""A filesystem without rename for tests of the commit protocol (docs/workdir.md).

`ram_root`: a fresh folder on TensorFlow's in-memory `ram://` filesystem; the test runs in an empty
local working folder, checked empty afterwards, so that a local folder literally named `ram:` (what
`os.makedirs` or `os.path.abspath` make of a URL) fails the test. `no_rename`: every rename
raises (`os.replace`, `os.rename`, `tf.io.gfile.rename`), as on an object store. `Killed` stands for
SIGKILL at an injection point (a BaseException, which no `except Exception` swallows).
Use the fixtures as `no_rename, ram_root = gfile_double.no_rename, gfile_double.ram_root`.
"""

import os
import uuid

import pytest


class Killed(BaseException):
    """Stands for SIGKILL at the injection point."""


@pytest.fixture
def no_rename(monkeypatch):
    """Every rename raises, as on a filesystem that has none."""
    import tensorflow as tf  # noqa: PLC0415 (only tests that use the fixture pay the import)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"rename called: {args}")

    monkeypatch.setattr(os, "replace", forbidden)
    monkeypatch.setattr(os, "rename", forbidden)
    monkeypatch.setattr(tf.io.gfile, "rename", forbidden)


@pytest.fixture
def ram_root(tmp_path, monkeypatch):
    """A fresh ram:// folder, removed afterwards; the local working folder must stay empty."""
    import tensorflow as tf  # noqa: PLC0415

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    root = f"ram://gfile-double-{uuid.uuid4().hex}"
    yield root
    if tf.io.gfile.exists(root):
        tf.io.gfile.rmtree(root)
    assert os.listdir(work) == [], "something was written to the local disk instead of the URL"
