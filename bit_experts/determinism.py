"""Seeds and determinism for every entry point that trains or fine-tunes (issue 16).

One user-facing seed is expanded into named seeds, one per source of randomness, by a fixed hash, so
adding a new use never shifts the others:

    seeds = determinism.configure(seed=0, deterministic=True)
    # {"seed": 0, "deterministic": True, "data": ..., "augmentation": ..., "init": ...,
    #  "selection": ..., "finetune": ...}

`configure` turns on `tf.config.experimental.enable_op_determinism()` and seeds Python, NumPy,
TensorFlow and Keras (`keras.utils.set_random_seed(seeds["init"])`) when `deterministic` is true, and
turns op determinism off again when it is false. Record the returned dict in output JSON: it is plain
ints and bools. `seed_for(seeds, name)` derives a further seed for one named unit (one model of a
job, one task of a run), and `reseed(seeds, name)` re-seeds the global generators from it so that
what a unit draws does not depend on what ran before it in the process (a resumed job then equals an
uninterrupted one).

Determinism holds for one machine and one TensorFlow build: other CPUs, and other sizes of
TensorFlow's thread pools, may give other, equally valid, numbers (docs/training.md). `fix_threads`
sets the pool sizes, so that work run in another process (a Ray worker) gives the same numbers.
"""

from __future__ import annotations

import hashlib
import os

# Every named seed `configure` returns, besides `seed` itself.
SEED_NAMES = ("data", "augmentation", "init", "selection", "finetune")
_MAX_SEED = 2**31 - 1  # Keeps every derived seed valid for tf, NumPy and Python alike.


def check_seed(seed) -> int:
    """`seed` as an int; ValueError naming it unless it is an int in [0, 2**31 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, {_MAX_SEED}], got {seed!r}")
    return seed


def derive_seed(seed: int, name: str) -> int:
    """A seed in [0, 2**31 - 1) for `name`, fixed by (`seed`, `name`) on every machine and version."""
    digest = hashlib.sha256(f"{check_seed(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _MAX_SEED


def derive_seeds(seed: int) -> dict[str, int]:
    """`{"data", "augmentation", "init", "selection", "finetune"}` -> seed, derived from `seed`."""
    return {name: derive_seed(seed, name) for name in SEED_NAMES}


def configure(seed: int, deterministic: bool = True) -> dict:
    """Seeds the process and switches TensorFlow op determinism on (or off); returns the seeds.

    Args:
      seed: the run's seed, an int in [0, 2**31 - 1].
      deterministic: True: `enable_op_determinism()` and `keras.utils.set_random_seed(init seed)`
        (Python, NumPy, TensorFlow and Keras initialisers). False: op determinism off; nothing
        global is seeded, so initialisations differ between runs (data order and augmentation still
        follow the `data` and `augmentation` seeds wherever the caller uses them).

    Returns:
      `{"seed": seed, "deterministic": bool, **derive_seeds(seed)}`, to record in output JSON.
    Raises:
      ValueError: `seed` is not an int in range, or `deterministic` not a bool.
    """
    seeds = derive_seeds(seed)
    if not isinstance(deterministic, bool):
        raise ValueError(f"deterministic must be true or false, got {deterministic!r}")
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    if deterministic:
        keras.utils.set_random_seed(seeds["init"])
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    return {"seed": seed, "deterministic": deterministic, **seeds}


def seed_for(seeds: dict, name: str, kind: str = "init") -> int:
    """The `kind` seed (one of SEED_NAMES) of the unit `name`, from `configure`'s dict."""
    return derive_seed(seeds[kind], name)


def reseed(seeds: dict, name: str) -> None:
    """Re-seeds the global generators for unit `name` (no-op unless `seeds["deterministic"]`)."""
    if seeds.get("deterministic"):
        import keras

        keras.utils.set_random_seed(seed_for(seeds, name))


def is_enabled() -> bool:
    """Whether TensorFlow op determinism is on in this process."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def cores_available() -> int:
    """How many CPU cores this process may run on (its affinity mask): the size TensorFlow gives
    its thread pools by default."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fix_threads(threads: int) -> None:
    """Sets TensorFlow's intra- and inter-op thread pools of this process to `threads` (0: leaves
    TensorFlow's default, `cores_available()`).

    A fine-tune's scores depend on the intra-op pool's size (reductions and oneDNN kernels split
    their work by it), so two processes give the same numbers only with the same size.
    ValueError (one line): TensorFlow already started here with pools of another size (they are
    fixed when it starts).
    """
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        running = tf.config.threading.get_intra_op_parallelism_threads() or cores_available()
        if running != threads:
            raise ValueError(
                f"{threads} threads per item: TensorFlow already started in this process with "
                f"{running}; the thread count must be set before it starts"
            ) from None
