"""Entry points start fast (TensorFlow is imported only when work starts) and hide TensorFlow's
start-up and INFO lines by default; --verbosity brings them back."""

import logging
import os
import pathlib
import re
import subprocess
import sys

import pytest

from bit_experts import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What takes seconds to import (TensorFlow alone 4-20 s here): none of it before work starts.
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_hub", "tensorflow_datasets", "jax")


def _commands():
    """Every `python -m` command of the package: the modules with a `__main__` block."""
    found = []
    for package in cli.PACKAGES:
        for path in sorted(pathlib.Path(ROOT, package).rglob("*.py")):
            if re.search(r'^if __name__ == "__main__":', path.read_text("utf-8"), re.MULTILINE):
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


COMMANDS = _commands()


def _run_command(module, *args, cwd=ROOT):
    """`python -X importtime -m module args`: (exit status, stdout, stderr without the import
    lines, the names of the modules it imported)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    stderr = [line for line in lines if not line.startswith("import time:")]
    return done.returncode, done.stdout, stderr, imported


def _heavy(imported):
    return sorted(m for m in imported if m.split(".")[0] in HEAVY)


def test_every_command_is_found():
    assert {"vtab_eval.rank", "vtab_eval.run", "bit_experts.train", "hub_export.publish"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("module", COMMANDS)
def test_help_imports_no_tensorflow(module):
    _, stdout, stderr, imported = _run_command(module, "--help")  # absl exits 1 after --help
    assert "Try --helpfull to get a list of all flags." in stdout, stderr
    assert _heavy(imported) == [], f"{module} --help imported {_heavy(imported)[:5]}"


@pytest.mark.parametrize("module", COMMANDS)
def test_flag_typo_is_one_line_without_tensorflow(module):
    status, stdout, stderr, imported = _run_command(module, "--no_such_flag=1")
    assert status != 0 and stdout == ""
    assert stderr[0] == ("FATAL Flags parsing error: Unknown command line flag 'no_such_flag'"), (
        stderr
    )
    assert not any("Traceback" in line for line in stderr)
    assert _heavy(imported) == []


# Bad input that needs no model: one line `<command>: error: ...`, before TensorFlow is imported.
BAD_INPUT = [
    (
        "vtab_eval.rank",
        ["--collection=C", "--dataset=cifar100", "--output_json=F", "--method=nope"],
        "vtab_eval.rank: error: bad config: selection.selectors (--method): unknown ['nope']",
    ),
    (
        "vtab_eval.rank",
        ["--collection=C", "--dataset=nope", "--output_json=F"],
        "vtab_eval.rank: error: Unknown task 'nope'",
    ),
    (
        "vtab_eval.run",
        ["--output_dir=OUT", "--collection=C", "--tasks=cifar100", "--sweep=nope"],
        "vtab_eval.run: error: bad config: finetune.sweep (--sweep) must be one of",
    ),
    ("vtab_eval.audit", ["--output_dir=OUT", "--rescore"], "vtab_eval.audit: error: "),
    (
        "vtab_eval.run",
        ["--output_dir=OUT", "--collection=missing", "--tasks=folder:missing"],
        "vtab_eval.run: error: ",  # checked before TensorFlow seeds anything
    ),
    (
        "vtab_eval.audit",
        ["--output_dir=OUT", "--collection=missing", "--tasks=folder:missing"],
        "vtab_eval.audit: error: ",
    ),
    ("vtab_eval.demo", ["--seed=-1"], "vtab_eval.demo: error: bad config: seed must be"),
    ("vtab_eval.list_tasks", ["--task=nope"], "vtab_eval.list_tasks: error: Unknown task 'nope'"),
    (
        "bit_experts.train",
        ["--config=world_local", "--workdir=W", "--stages=nope"],
        "bit_experts.train: error: unknown stages ['nope']",
    ),
    (
        "bit_experts.train",
        ["--config=world_local", "--workdir=W", "--set=model.preset=nope"],
        "bit_experts.train: error: unknown model preset 'nope'",
    ),
    ("bit_experts.expert_quality", ["--workdir=missing"], "bit_experts.expert_quality: error: "),
    ("hub_export.publish", ["--collection_dir=C", "--workdir=missing"], "publish: error: "),
    (
        "hub_export.import_bit_checkpoint",
        ["--checkpoint=missing.npz", "--output_dir=D"],
        "import_bit_checkpoint: error: BiT checkpoint 'missing.npz' does not exist",
    ),
]


@pytest.mark.parametrize(
    "module, args, line", BAD_INPUT, ids=[f"{m} {a[-1]}" for m, a, _ in BAD_INPUT]
)
def test_bad_input_is_one_line_before_tensorflow(tmp_path, module, args, line):
    status, stdout, stderr, imported = _run_command(module, *args, cwd=tmp_path)
    assert status != 0
    assert [e for e in stderr if "error" in e] == [stderr[0]] and stderr[0].startswith(line), stderr
    assert _heavy(imported) == [], f"{module} imported {_heavy(imported)[:5]}"
    assert list(tmp_path.iterdir()) == []  # nothing written


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
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # quiet_start may add a finder
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.quiet_start() is quiet
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == (
        "2" if quiet else env.get("TF_CPP_MIN_LOG_LEVEL")
    )
    filtering = any(isinstance(f, cli._QuietTensorFlowImport) for f in sys.meta_path)
    assert filtering == (quiet and "tensorflow" not in sys.modules)


# What TensorFlow 2.21 printed at import (and at its first device query) on a CPU machine here.
_TF_START = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796698417.406588   31717 port.cc:153] oneDNN custom operations are on.\n",
    "I0000 00:00:1796698417.406939   31717 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.\n",
    "W0000 00:00:1796698417.451294   31717 cpu_feature_guard.cc:227] This TensorFlow binary ...\n",
    "E0000 00:00:1796698426.516201   31745 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
]


def test_tensorflow_noise_hides_start_up_lines_but_not_errors():
    python_warning = "/x/y.py:3: DeprecationWarning: old\n"
    other_error = "E0000 00:00:1796698426.5 31745 op_kernel.cc:9] real failure\n"
    lines = [*_TF_START, python_warning, other_error]
    assert cli.tensorflow_noise(lines) == [True] * len(_TF_START) + [False, False]
    # With a CUDA runtime found (a GPU machine), a failed cuInit is a real error: kept.
    on_gpu = [line for line in lines if "cudart_stub" not in line]
    kept = [line for line, hide in zip(on_gpu, cli.tensorflow_noise(on_gpu)) if not hide]
    assert kept == [_TF_START[-1], python_warning, other_error]


def test_quiet_logs_sets_tensorflow_logger_unless_verbosity(monkeypatch):
    logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    assert cli.quiet_logs(["prog", "--verbosity=0"]) is False
    assert logger.level == logging.NOTSET
    assert cli.quiet_logs(["prog"]) is True
    assert logger.level == logging.WARNING


def test_a_command_prints_no_tensorflow_start_up_lines_unless_asked(tmp_path):
    # With --threads_per_item, `run` starts TensorFlow (to size its thread pools) before it finds
    # the collection missing. TensorFlow prints its oneDNN, CUDA-probe and cpu_feature_guard lines
    # at import unless quiet_start hides them; the test environment's own TF_CPP_MIN_LOG_LEVEL is
    # removed.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    command = [sys.executable, "-m", "vtab_eval.run", "--output_dir=out", "--collection=none"]
    command += ["--tasks=cifar100", "--threads_per_item=1"]
    runs = [
        subprocess.Popen(
            command + extra,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ([], ["--verbosity=0"])
    ]
    (quiet_out, quiet_err), (loud_out, loud_err) = (r.communicate(timeout=300) for r in runs)
    assert [r.returncode for r in runs] == [1, 1], quiet_err + loud_err
    problem = "vtab_eval.run: error: 1 problem(s) found before training; nothing was run:"
    assert quiet_err.splitlines()[0] == problem and len(quiet_err.splitlines()) == 2, quiet_err
    # The same command with --verbosity shows what was hidden (so the check above can fail).
    tf_line = re.compile(r"^[IWE]\d{4} .*\] |absl::InitializeLog", re.MULTILINE)
    assert tf_line.search(loud_err) and not tf_line.search(quiet_err), loud_err
    assert problem in loud_err


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
