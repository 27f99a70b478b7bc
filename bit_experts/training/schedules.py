"""Learning-rate rules for upstream training and fine-tuning: warm-up, then a decay.

One formula, `_rate`, run in Python floats by `learning_rate_at` (logs, tests, each fine-tuning
step) and in float32 Keras ops by `WarmupDecay` (on the optimizer's step in the compiled step).

Not `keras.optimizers.schedules` (issue 14; tests/bit_experts/test_schedules.py): without warm-up
our decays are Keras' `CosineDecay`, `PolynomialDecay(power=1)` and `PiecewiseConstantDecay`, but
ours warms up as `peak * (step + 1) / warmup` (no update at rate 0, the peak on update
`warmup - 1`), which no Keras schedule gives (`CosineDecay`'s warm-up starts at its initial rate
and peaks on step `warmup`), and Keras has no warm-up for the other decays.
"""

import math
import types

import keras
from keras import ops

DECAYS = ("cosine", "linear", "constant", "step")
REFERENCE_BATCH = 256  # BiT: lr = base_lr * batch_size / 256.
_PYTHON = types.SimpleNamespace(cos=math.cos, minimum=min, where=lambda c, a, b: a if c else b)


def scaled_learning_rate(base_lr: float, batch_size: int) -> float:
    """The peak learning rate for `batch_size`: `base_lr * batch_size / 256`."""
    if base_lr <= 0 or batch_size < 1:
        raise ValueError(f"need base_lr > 0 and batch_size >= 1, got {base_lr!r}, {batch_size!r}")
    return base_lr * batch_size / REFERENCE_BATCH


def _check(total_steps, warmup_steps, decay):
    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; expected one of {DECAYS}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got {total_steps=}, "
            f"{warmup_steps=}"
        )


def _rate(m, step, peak, total, warmup, decay, points, factor):
    """The formula, with `m` (`_PYTHON` or `keras.ops`) for cos, minimum and where."""
    warm = peak * (step + 1) / max(1, warmup)
    if decay == "constant":
        after = peak
    elif decay == "step":  # times `factor` at each of `points` (fractions of `total`) passed
        after = peak * factor ** sum(m.where(step >= p * total, 1.0, 0.0) for p in points)
    else:
        progress = m.minimum(1.0, (step - warmup) / max(1, total - warmup))
        if decay == "linear":
            after = peak * (1.0 - progress)
        else:
            after = peak * 0.5 * (1.0 + m.cos(math.pi * progress))
    return m.where(step < warmup, warm, after)


def learning_rate_at(
    step, peak_lr, total_steps, warmup_steps, decay="cosine", decay_points=(), decay_factor=0.1
):
    """The learning rate of update `step` (0-based): linear warm-up to `peak_lr`, then `decay`:
    "cosine" or "linear" to 0 at `total_steps`, "constant", or "step" (times `decay_factor` at each
    of `decay_points`, fractions of `total_steps`)."""
    _check(total_steps, warmup_steps, decay)
    args = (peak_lr, total_steps, warmup_steps, decay, decay_points, decay_factor)
    return _rate(_PYTHON, step, *args)


@keras.saving.register_keras_serializable(package="bit_experts")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate_at` as a Keras schedule (step = the optimizer's iteration count)."""

    _ARGS = ("peak_lr", "total_steps", "warmup_steps", "decay", "decay_points", "decay_factor")

    def __init__(
        self, peak_lr, total_steps, warmup_steps, decay="cosine", decay_points=(), decay_factor=0.1
    ):
        _check(total_steps, warmup_steps, decay)
        self.peak_lr, self.total_steps = float(peak_lr), int(total_steps)
        self.warmup_steps, self.decay = int(warmup_steps), decay
        self.decay_points, self.decay_factor = [float(p) for p in decay_points], float(decay_factor)

    def __call__(self, step):
        return _rate(ops, ops.cast(step, "float32"), *(getattr(self, a) for a in self._ARGS))

    def get_config(self):
        return {a: getattr(self, a) for a in self._ARGS}
