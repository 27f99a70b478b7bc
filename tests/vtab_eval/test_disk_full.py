"""A disk that fills up during the work ends `run` and `rank` with one line naming the file and the
flag whose folder holds it, never a traceback (issue 24)."""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main_with_a_full_disk(tmp_path, command, patched, args, filename):
    """Runs `command`'s main in a fresh interpreter with `patched` (engine.evaluate or engine.rank)
    raising ENOSPC for `filename`; returns (exit status, stderr lines)."""
    code = textwrap.dedent(
        f"""
        import errno, os, sys
        from absl import app
        import importlib
        from vtab_eval import engine
        command = importlib.import_module("vtab_eval.{command}")

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), {filename!r})

        engine.{patched} = full
        command.define_flags() if hasattr(command, "define_flags") else None
        sys.argv = ["vtab_eval.{command}", *{args!r}]
        app.run(command.main)
        """
    )
    if command == "rank":  # rank defines its flags in its __main__ block
        code = code.replace(
            'command.define_flags() if hasattr(command, "define_flags") else None',
            "from vtab_eval import config; config.define_flags('rank')",
        )
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("vtab_eval.")]
    return proc.returncode, lines, proc.stderr


@pytest.mark.parametrize("command", ["run", "rank"])
def test_a_disk_that_fills_during_the_work_gives_one_line(tmp_path, command):
    out = tmp_path / "out"
    if command == "run":
        args = [f"--collection={tmp_path}", "--tasks=x", f"--output_dir={out}"]
        filename, patched, flag = str(out / "feature_cache" / "f.npz"), "evaluate", "--output_dir"
    else:
        args = [f"--collection={tmp_path}", "--dataset=x", f"--output_json={out / 'r.json'}"]
        filename, patched, flag = str(out / "r.json"), "rank", "--output_json"
    status, lines, stderr = _main_with_a_full_disk(tmp_path, command, patched, args, filename)
    assert status == 1, stderr
    assert lines == [f"vtab_eval.{command}: error: writing {filename} ({flag}) failed: disk full"]
    assert "Traceback" not in stderr
