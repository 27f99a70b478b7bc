"""Quiet command lines: TensorFlow's start-up banners and INFO logs are hidden unless asked for.

Every `python -m` entry point of the package (`bit_experts.train`, `hub_export.publish`,
`vtab_eval.run`, ...) prints its own progress with `print`; TensorFlow adds its C++ start-up lines
(oneDNN, CPU instructions) and Python INFO logs (e.g. the saver's "Sharding callback duration").
Two calls hide those by default, and absl's own `--verbosity` (or `-v`) brings them back:

- `quiet_start()`, from each package's `__init__`, runs before TensorFlow is imported and sets
  `TF_CPP_MIN_LOG_LEVEL=2` (errors only), but only when the program is one of our `python -m`
  entry points and the user set neither `--verbosity` nor `TF_CPP_MIN_LOG_LEVEL`. Importing the
  package as a library changes nothing.
- `quiet_logs()`, in each entry point's `if __name__ == "__main__":` block, before `app.run`,
  sets TensorFlow's Python logger to WARNING unless `--verbosity` was given. Our own absl
  `logging.info` lines keep absl's usual level.

What neither can hide: the lines TensorFlow's C++ runtime writes before its logging is set up
("All log messages before absl::InitializeLog() ...", CUDA probing on a machine without a GPU).

`one_line_errors(prog)` wraps an entry point's work so that an expected failure (bad input, a
missing file) ends the program with one line `<prog>: error: <message>` instead of a traceback.
"""

import contextlib
import logging
import os
import sys

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

    Must run before TensorFlow is imported (the C++ runtime reads the variable once).
    """
    args = command_argv()
    if args is None or verbosity_requested(args) or TF_LOG_LEVEL_ENV in os.environ:
        return False
    os.environ[TF_LOG_LEVEL_ENV] = QUIET_TF_CPP_LEVEL
    return True


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
