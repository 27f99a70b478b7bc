"""Entry points hide TensorFlow's start-up and INFO lines by default; --verbosity brings them back."""

import logging
import os
import subprocess
import sys

import pytest

from bit_experts import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], False),
        (["--format=json"], False),
        (["--verbosity=0"], True),
        (["--verbosity", "1"], True),
        (["-v=1"], True),
        (["-v", "1"], True),
        (["--", "--verbosity=0"], False),  # after "--" it is a positional argument
        (["--verbose"], False),
    ],
)
def test_verbosity_requested(argv, expected):
    assert cli.verbosity_requested(argv) is expected


@pytest.mark.parametrize(
    "orig_argv, env, quiet",
    [
        (["python", "-m", "vtab_eval.run", "--output_dir=x"], {}, True),
        (["python", "-m", "vtab_eval.run", "--verbosity=0"], {}, False),
        (["python", "-m", "vtab_eval.run"], {"TF_CPP_MIN_LOG_LEVEL": "0"}, False),  # user's own
        (["python", "-m", "pytest"], {}, False),  # not our command: a library import
        (["python", "script.py"], {}, False),
    ],
)
def test_quiet_start_only_for_our_entry_points(monkeypatch, orig_argv, env, quiet):
    monkeypatch.setattr(sys, "orig_argv", orig_argv, raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.quiet_start() is quiet
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == (
        "2" if quiet else env.get("TF_CPP_MIN_LOG_LEVEL")
    )


def test_quiet_logs_sets_tensorflow_logger_unless_verbosity(monkeypatch):
    logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    assert cli.quiet_logs(["prog", "--verbosity=0"]) is False
    assert logger.level == logging.NOTSET
    assert cli.quiet_logs(["prog"]) is True
    assert logger.level == logging.WARNING


def test_list_tasks_prints_no_tensorflow_banner_unless_asked():
    # TensorFlow prints its cpu_feature_guard / oneDNN INFO lines at import unless
    # TF_CPP_MIN_LOG_LEVEL hides them; the test environment's own setting is removed.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "vtab_eval.list_tasks", "--suite=vtab1k"]
    runs = [
        subprocess.Popen(
            command + extra,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ([], ["--verbosity=0"])
    ]
    (quiet_out, quiet_err), (loud_out, loud_err) = (r.communicate(timeout=300) for r in runs)
    assert all(r.returncode == 0 for r in runs), quiet_err + loud_err
    assert quiet_out == loud_out and "caltech101" in quiet_out
    # Not "oneDNN": on CPUs where TensorFlow turns oneDNN on (e.g. with AVX-512), it prints that
    # line before its logging is set up, like the CUDA probe, and no setting hides it.
    banners = ("cpu_feature_guard", "I tensorflow", "functional_saver")
    assert not [line for line in quiet_err.splitlines() if any(b in line for b in banners)]
    # The same command with --verbosity shows what was hidden (so the check above can fail).
    assert any(b in loud_err for b in banners), loud_err


def test_one_line_errors_ends_expected_errors_in_one_line():
    with pytest.raises(SystemExit) as exit_:
        with cli.one_line_errors("prog"):
            raise FileNotFoundError("--data_dir=/x: no such folder")
    assert exit_.value.code == "prog: error: --data_dir=/x: no such folder"
    assert exit_.value.__cause__ is None


def test_one_line_errors_maps_with_line_and_reraises_the_rest():
    with pytest.raises(SystemExit) as exit_:
        with cli.one_line_errors("prog", OSError, line=lambda e: f"disk: {e.strerror}"):
            raise OSError(28, "No space left on device")
    assert exit_.value.code == "prog: error: disk: No space left on device"
    with pytest.raises(KeyError):  # not an expected error: the traceback stays
        with cli.one_line_errors("prog"):
            raise KeyError("x")
    with pytest.raises(RuntimeError, match="unknown"):  # line() gave None: re-raised unchanged
        with cli.one_line_errors("prog", Exception, line=lambda e: None):
            raise RuntimeError("unknown")


_ABSL_APP = """
import sys
from absl import app, logging
from bit_experts import cli

def main(argv):
    # TF's saver logs "Sharding callback duration" like this, through absl at INFO.
    logging.info("absl info line")
    logging.warning("absl warning line")

cli.quiet_logs()
app.run(main)
"""


@pytest.mark.parametrize("extra, info_shown", [([], False), (["--verbosity=0"], True)])
def test_quiet_logs_hides_absl_info_that_app_run_would_enable(extra, info_shown):
    # absl raises its verbosity from WARNING to INFO once flags are parsed unless --verbosity is
    # given; quiet_logs must undo that before main runs, and leave an explicit --verbosity alone.
    done = subprocess.run(
        [sys.executable, "-c", _ABSL_APP, *extra], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert ("absl info line" in done.stderr) == info_shown
    assert "absl warning line" in done.stderr
