"""Bootstrap confidence intervals: BCa, with the percentile interval where BCa is undefined.

The wrapper over `scipy.stats.bootstrap` that every BCa interval of the project goes through
(`vtab_eval.confidence`, `vtab_eval.audit_metrics`, `bit_experts.training.slice_eval`): the
bias-corrected and accelerated interval (Efron, "Better Bootstrap Confidence Intervals", JASA 1987),
and the percentile interval of the same resamples where BCa is undefined (NaN or inf ends, e.g.
when nearly every resample has the same statistic). The resampling is seeded, so the same inputs
give the same interval on every machine. The report's task and suite aggregates are percentile
intervals of a stratified, multi-sample statistic (each task's outcomes resampled on their own)
and call `scipy.stats.bootstrap` directly (`vtab_eval.protocol.bootstrap_interval`).
"""

import warnings

import numpy as np


def bca_interval(
    samples, statistic, *, confidence_level, n_resamples, seed, paired=False, batch=None
) -> tuple[float, float]:
    """(low, high) bootstrap interval of `statistic` over `samples`.

    Args:
      samples: a tuple of 1-D float arrays (one for a mean; two of equal length for a paired
        difference).
      statistic: vectorised, `statistic(*samples, axis=-1)` -> a scalar per resample.
      confidence_level: two-sided coverage, in (0, 1).
      n_resamples: bootstrap resamples.
      seed: seed of `numpy.random.default_rng` for the resampling.
      paired: resample the samples' rows jointly (same rows for every sample).
      batch: resamples per vectorised call (memory bound; None: all at once). Different batch
        sizes draw different resamples, so a caller keeps its own for reproducible intervals.

    Returns:
      floats in the statistic's unit. Degenerate-data warnings are silenced: the interval is
      still returned, from percentiles where BCa fails.

    Raises:
      ValueError: `confidence_level` outside (0, 1) (from scipy for malformed samples).
    """
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1); got {confidence_level!r}")
    from scipy import stats  # here: importing it costs a command's start-up half a second

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # BCa's 0/0 on degenerate resamples
        result = stats.bootstrap(
            tuple(samples),
            statistic,
            paired=paired,
            vectorized=True,
            confidence_level=confidence_level,
            n_resamples=int(n_resamples),
            batch=batch,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
        low, high = result.confidence_interval
        if not (np.isfinite(low) and np.isfinite(high)):
            tail = 50 * (1 - confidence_level)
            low, high = np.percentile(result.bootstrap_distribution, [tail, 100 - tail])
    return float(low), float(high)
