"""Learning-rate rules: BiT's batch-size scaling, a linear warmup, then a decay to zero.

The same formula exists twice: `learning_rate_at` (plain Python, for logs and tests) and
`WarmupDecay` (a Keras schedule evaluated on the optimizer's step inside the compiled train step).

Why not `keras.optimizers.schedules` (compared for issue 14; tests/bit_experts/test_schedules.py):
- Without warm-up our decays are Keras': `CosineDecay(peak, total)` and
  `PolynomialDecay(peak, total, 0.0, power=1)` give the same values on every step.
- With warm-up (BiT always warms up) Keras cannot give ours exactly. Ours warms up as
  `peak * (step + 1) / warmup` (as `vtab_eval.sweeps` does), so no update runs at a zero learning
  rate and the peak is reached on update `warmup - 1`; `CosineDecay(..., warmup_steps=W)` starts at
  its `initial_learning_rate` on step 0 and reaches the peak on step W. No choice of its
  arguments, nor a shift of the step, matches both phases.
- Keras has no warm-up for a linear or a constant decay (`PolynomialDecay` has none), so a switch
  would still need a class of ours for two of the three decays: keeping this one is smaller.
"""

import math

import keras
from keras import ops

DECAYS = ("cosine", "linear", "constant")
REFERENCE_BATCH = 256  # BiT: lr = base_lr * batch_size / 256.


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
            f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
            f"total_steps={total_steps}, warmup_steps={warmup_steps}"
        )


def learning_rate_at(step, peak_lr, total_steps, warmup_steps, decay="cosine"):
    """The learning rate used for update number `step` (0-based)."""
    _check(total_steps, warmup_steps, decay)
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if decay == "constant":
        return peak_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "linear":
        return peak_lr * (1.0 - progress)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="bit_experts")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate_at` as a Keras schedule (step = the optimizer's iteration count)."""

    def __init__(self, peak_lr, total_steps, warmup_steps, decay="cosine"):
        _check(total_steps, warmup_steps, decay)
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak_lr * (step + 1.0) / max(1, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "constant":
            after = ops.convert_to_tensor(self.peak_lr, "float32")
        elif self.decay == "linear":
            after = self.peak_lr * (1.0 - progress)
        else:
            after = self.peak_lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, after)

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
        }
