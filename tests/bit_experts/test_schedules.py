"""Our learning-rate schedules against `keras.optimizers.schedules` (issue 14, section 5): where
Keras can express them it gives the same values, and where it cannot, the difference is real."""

import math

import keras
import numpy as np
import pytest

from bit_experts.training import schedules

PEAK, TOTAL, WARMUP = 0.4, 40, 5
GRID = range(TOTAL + 3)  # every step, and a few past the end (both stay at the final value)


def _values(schedule, steps=GRID):
    return np.array([float(schedule(step)) for step in steps])


POINTS = (0.25, 0.5)  # "step" decay: x0.1 at steps 10 and 20


def _ours(decay, warmup):
    return np.array(
        [schedules.learning_rate_at(s, PEAK, TOTAL, warmup, decay, POINTS) for s in GRID]
    )


# float32 evaluation of cos / a division on values <= PEAK: a few float32 roundings of PEAK.
ATOL = 8 * 2.0**-24 * PEAK


@pytest.mark.parametrize(
    "decay, keras_schedule",
    [
        ("cosine", keras.optimizers.schedules.CosineDecay(PEAK, TOTAL)),
        ("linear", keras.optimizers.schedules.PolynomialDecay(PEAK, TOTAL, 0.0, power=1.0)),
        # Keras' boundaries are inclusive: step 9 still has the first value.
        ("step", keras.optimizers.schedules.PiecewiseConstantDecay([9, 19], [PEAK, 0.04, 0.004])),
    ],
)
def test_without_warmup_our_decays_are_keras(decay, keras_schedule):
    ours = _ours(decay, 0)
    np.testing.assert_allclose(_values(keras_schedule), ours, rtol=0, atol=ATOL)
    np.testing.assert_allclose(
        _values(schedules.WarmupDecay(PEAK, TOTAL, 0, decay, POINTS)), ours, rtol=0, atol=ATOL
    )


@pytest.mark.parametrize("decay", schedules.DECAYS)
def test_python_and_keras_evaluate_one_formula(decay):
    """`learning_rate_at` is the closed form in float64; `WarmupDecay` the same in float32 and it
    survives a save (its config)."""
    progress = [min(1.0, (s - WARMUP) / (TOTAL - WARMUP)) for s in GRID]
    after = {
        "cosine": [PEAK * 0.5 * (1.0 + math.cos(math.pi * p)) for p in progress],
        "linear": [PEAK * (1.0 - p) for p in progress],
        "constant": [PEAK for _ in GRID],
        "step": [PEAK * 0.1 ** sum(s >= p * TOTAL for p in POINTS) for s in GRID],
    }[decay]
    expected = [PEAK * (s + 1) / WARMUP if s < WARMUP else a for s, a in zip(GRID, after)]
    assert list(_ours(decay, WARMUP)) == expected
    keras_schedule = schedules.WarmupDecay(PEAK, TOTAL, WARMUP, decay, POINTS)
    restored = schedules.WarmupDecay.from_config(keras_schedule.get_config())
    for schedule in (keras_schedule, restored):
        np.testing.assert_allclose(_values(schedule), expected, rtol=0, atol=ATOL)


def test_keras_cosine_warmup_cannot_give_ours():
    """The module docstring's reason for keeping our schedule: Keras' warm-up starts at its initial
    rate on step 0 and peaks on step W; ours peaks on step W - 1 and never trains at rate 0."""
    ours = _ours("cosine", WARMUP)
    np.testing.assert_allclose(
        _values(schedules.WarmupDecay(PEAK, TOTAL, WARMUP)), ours, rtol=0, atol=ATOL
    )
    keras_schedule = keras.optimizers.schedules.CosineDecay(
        0.0, TOTAL - WARMUP, warmup_target=PEAK, warmup_steps=WARMUP
    )
    theirs = _values(keras_schedule, range(TOTAL + 4))
    assert theirs[0] == 0.0 and ours[0] == pytest.approx(PEAK / WARMUP)
    for shift in (0, 1):  # step s of ours against step s + shift of Keras'
        gap = np.abs(theirs[shift : shift + len(ours)] - ours).max()
        assert gap > 1e3 * ATOL, f"shift {shift}: Keras' schedule matches ours within {gap}"
