"""Shared pytest setup: quiet TensorFlow, Keras 3 on the TensorFlow backend, CPU only."""

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _restore_op_determinism():
    """Fine-tuning and training switch TF op determinism on for the whole process (issue 16);
    each test, and each test module (its module-scoped fixtures fine-tune too), gets back the
    setting it started with, so no test depends on the ones before it.
    Only acts when TensorFlow is already imported (pure-Python tests stay TF-free)."""
    tf_loaded = "tensorflow" in sys.modules
    before = None
    if tf_loaded:
        from tensorflow.python.framework import config as tf_config

        before = tf_config.is_op_determinism_enabled()
    yield
    if "tensorflow" not in sys.modules:
        return
    from tensorflow.python.framework import config as tf_config

    if tf_config.is_op_determinism_enabled() and not before:
        tf_config.disable_op_determinism()


_op_determinism_does_not_leak = pytest.fixture(autouse=True, name="_op_determinism_does_not_leak")(
    _restore_op_determinism
)
_op_determinism_does_not_leak_from_module = pytest.fixture(
    scope="module", autouse=True, name="_op_determinism_does_not_leak_from_module"
)(_restore_op_determinism)
