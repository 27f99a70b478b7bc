"""Quiet command lines: TensorFlow's start-up banners and INFO logs are hidden unless asked for.

Every `python -m` entry point of the package (`bit_experts.train`, `hub_export.publish`,
`vtab_eval.run`, ...) prints its own progress with `print`; TensorFlow adds its C++ start-up lines
(oneDNN, CPU instructions) and Python INFO logs (e.g. the saver's "Sharding callback duration").
Two calls hide those by default, and absl's own `--verbosity` (or `-v`) brings them back:

- `quiet_start()`, from each package's `__init__`, runs before TensorFlow is imported and sets
  `TF_CPP_MIN_LOG_LEVEL=2` (errors only), but only when the program is one of our `python -m`
  entry points and the user set neither `--verbosity` nor `TF_CPP_MIN_LOG_LEVEL`. Importing the
  package as a library changes nothing. That variable cannot hide the lines TensorFlow's C++
  runtime writes while its libraries load, before its logging is set up ("All log messages before
  absl::InitializeLog() ...", oneDNN, "Could not find cuda drivers", and on the first device
  query "failed call to cuInit"), so it also has TensorFlow's first import, wherever a command
  makes it, write stderr to a file and pass on every line but those (`tensorflow_noise`): INFO
  and WARNING lines, and the cuInit error on a machine where TensorFlow found no CUDA driver.
  Every other line (errors, Python warnings) is passed on, in order.
- `quiet_logs()`, in each entry point's `if __name__ == "__main__":` block, before `app.run`,
  sets TensorFlow's Python logger to WARNING unless `--verbosity` was given. Our own absl
  `logging.info` lines keep absl's usual level.

`command_argv()` says whether the program is one of those commands; `import bit_experts` then
skips registering the Keras classes, so that a command parses and checks its flags before anything
imports TensorFlow (seconds), and `--help` or a typo answers at once.

`one_line_errors(prog)` wraps an entry point's work so that an expected failure (bad input, a
missing file) ends the program with one line `<prog>: error: <message>` instead of a traceback.
"""

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile

PACKAGES = ("bit_experts", "hub_export", "vtab_eval")
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_CPP_LEVEL = "2"  # 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR.


def verbosity_requested(argv) -> bool:
    """True when `argv` (without the program) sets absl's --verbosity / -v in any spelling."""
    for arg in argv:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if name in ("--verbosity", "-verbosity", "-v", "--v"):
            return True
    return False


def command_argv():
    """The arguments after `-m <module>` when the program is `python -m <one of ours>`, else None."""
    argv = list(getattr(sys, "orig_argv", []))
    if "-m" not in argv:
        return None
    i = argv.index("-m")
    if i + 1 >= len(argv) or argv[i + 1].split(".")[0] not in PACKAGES:
        return None
    return argv[i + 2 :]


def quiet_start() -> bool:
    """Hides TensorFlow's C++ INFO/WARNING lines for our entry points; True if it did.

    Must run before TensorFlow is imported (the C++ runtime reads the variable once, and the
    lines of its first import are filtered by `_QuietTensorFlowImport`).
    """
    args = command_argv()
    if args is None or verbosity_requested(args) or TF_LOG_LEVEL_ENV in os.environ:
        return False
    os.environ[TF_LOG_LEVEL_ENV] = QUIET_TF_CPP_LEVEL
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    return True


# A line of absl's C++ log: severity, date, time, thread, file:line] message.
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\] ")
_BEFORE_INIT = "WARNING: All log messages before absl::InitializeLog() is called"
_NO_CUDA_DRIVER = "Could not find cuda drivers on your machine"


def tensorflow_noise(lines) -> list[bool]:
    """For each line TensorFlow wrote to stderr while it loaded, whether `quiet_start` hides it:
    absl's "before InitializeLog" banner, INFO and WARNING lines, and `cuda_platform.cc`'s
    "failed call to cuInit" when TensorFlow also said it found no CUDA driver (a CPU machine).
    Every other line (errors, Python warnings, a real GPU's failure) is kept."""
    cpu_only = any(_NO_CUDA_DRIVER in line for line in lines)
    hidden = []
    for line in lines:
        match = _LOG_LINE.match(line)
        severity, source = match.groups() if match else (None, None)
        cuda_probe = source == "cuda_platform.cc" and "cuInit" in line
        hidden.append(
            line.startswith(_BEFORE_INIT)
            or severity in ("I", "W")
            or (severity == "E" and cuda_probe and cpu_only)
        )
    return hidden


@contextlib.contextmanager
def _filtered_stderr(noise):
    """Sends file descriptor 2 to a temporary file inside the block (C++ writes there, past
    `sys.stderr`), then writes its lines back to stderr except those `noise(lines)` marks."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [line for line, hide in zip(lines, noise(lines), strict=True) if not hide]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class _QuietTensorFlowImport:
    """A `sys.meta_path` finder that makes the first `import tensorflow` (by any module) run with
    its load-time lines filtered (`tensorflow_noise`), including those of the CUDA probe, which
    it runs there (`tf.config.list_physical_devices`; devices stay configurable after it)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one import; the real finders find it
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            with _filtered_stderr(tensorflow_noise):
                load(module)
                module.config.list_physical_devices("GPU")

        spec.loader.exec_module = exec_module
        return spec


def quiet_logs(argv=None) -> bool:
    """Quiets TensorFlow's logs for a command line unless `argv` has --verbosity; True if it did.

    Call it from an entry point's `__main__` block before `app.run(main)`. `argv` defaults to
    `sys.argv`.
    """
    argv = sys.argv if argv is None else argv
    if verbosity_requested(argv[1:]):
        return False
    os.environ.setdefault(TF_LOG_LEVEL_ENV, QUIET_TF_CPP_LEVEL)  # if TF is not imported yet
    # TensorFlow's Python logs (tf.get_logger()) go to the "tensorflow" logger.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    # TF modules that log through absl (the saver's "Sharding callback duration") follow absl's
    # verbosity, which app.run raises from WARNING to INFO once flags are parsed unless
    # --verbosity was given; put it back to WARNING right after that, before main runs.
    from absl import app
    from absl import logging as absl_logging

    app.call_after_init(lambda: absl_logging.set_verbosity(absl_logging.WARNING))
    return True


@contextlib.contextmanager
def one_line_errors(prog, errors=(ValueError, FileNotFoundError), line=str):
    """Turns an expected error raised inside the block into `SystemExit("<prog>: error: <line>")`.

    Args:
      prog: the program's name as the user typed it, e.g. "vtab_eval.run".
      errors: the exception class (or tuple of classes) that counts as expected.
      line: maps a caught error to its message; when it returns None the error is re-raised
        unchanged (a failure the entry point does not recognise keeps its traceback).

    Raises:
      SystemExit: with the one-line message, for an expected error.
    """
    try:
        yield
    except errors as error:
        text = line(error)
        if text is None:
            raise
        raise SystemExit(f"{prog}: error: {text}") from None
