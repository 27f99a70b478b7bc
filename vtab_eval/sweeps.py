"""Fine-tuning hyperparameter sweeps: named presets, BiT-HyperRule and random search.

A *setting* is a plain JSON-serialisable dict (`make_setting`); a *sweep* is a list of settings.
docs/evaluation.md, "Sweeps", lists the presets (`PRESETS`). BiT-HyperRule (Kolesnikov et al.,
2020) is a few pure functions of the dataset size and image size, with google-research/big_transfer's
values. `for_task` turns off the augmentations a task forbids (`vtab_eval.tasks.Augmentation`):
call it on every sweep before fine-tuning and before keying caches on the settings.
"""

import math

import numpy as np

SCHEDULES = ("step", "cosine", "constant")
# The schedule's keys of a setting, in `bit_experts.training.schedules.learning_rate_at`'s order.
_SCHEDULE_DEFAULTS = (
    ("warmup_steps", 0),
    ("schedule", "step"),
    ("decay_points", ()),
    ("decay_factor", 0.1),
)

# BiT-HyperRule constants (Big Transfer, section 3.3).
HYPERRULE_LR = 0.003
HYPERRULE_BATCH_SIZE = 512
_SMALL_DATASET = 20_000
_LARGE_DATASET = 500_000
_SMALL_IMAGE_AREA = 96 * 96


def make_setting(
    learning_rate,
    steps,
    batch_size,
    *,
    momentum=0.9,
    weight_decay=0.0,
    warmup_steps=0,
    schedule="step",
    decay_points=(0.3, 0.6, 0.9),
    decay_factor=0.1,
    resolution=224,
    resize=None,
    flip=False,
    mixup_alpha=0.0,
    name=None,
):
    """One fine-tuning setting as a validated plain dict; ValueError names a bad value.

    docs/evaluation.md, "Sweeps", defines the keys: `learning_rate` is the peak, `batch_size` the
    global batch, `decay_points` fractions of `steps`, `resize` (None: no crop) the side training
    images are resized to before a random crop to `resolution`, `weight_decay` an L2 term added to
    the gradient; `name` is derived from the values when None.
    """
    setting = {
        "learning_rate": float(learning_rate),
        "steps": int(steps),
        "batch_size": int(batch_size),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "warmup_steps": int(warmup_steps),
        "schedule": schedule,
        "decay_points": [float(p) for p in decay_points],
        "decay_factor": float(decay_factor),
        "resolution": int(resolution),
        "resize": None if resize is None else int(resize),
        "flip": bool(flip),
        "mixup_alpha": float(mixup_alpha),
    }
    setting["name"] = name or f"lr{setting['learning_rate']:g}_steps{setting['steps']}"
    validate_setting(setting)
    return setting


def validate_setting(setting):
    """Raises ValueError naming the first bad key of a setting dict."""
    required = ("learning_rate", "steps", "batch_size", "resolution")
    missing = [k for k in required if k not in setting]
    if missing:
        raise ValueError(f"sweep setting {setting!r} lacks {missing}")
    if not (setting["learning_rate"] > 0 and math.isfinite(setting["learning_rate"])):
        raise ValueError(f"learning_rate must be > 0, got {setting['learning_rate']!r}")
    for key in ("steps", "batch_size", "resolution"):
        if int(setting[key]) < 1:
            raise ValueError(f"{key} must be a positive integer, got {setting[key]!r}")
    if setting.get("schedule", "step") not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {setting.get('schedule')!r}")
    warmup = int(setting.get("warmup_steps", 0))
    if not 0 <= warmup < int(setting["steps"]):
        raise ValueError(f"warmup_steps must be in [0, steps), got {warmup} for {setting['steps']}")
    resize = setting.get("resize")
    if resize is not None and int(resize) < int(setting["resolution"]):
        raise ValueError(f"resize ({resize}) must be >= resolution ({setting['resolution']})")
    if float(setting.get("mixup_alpha", 0.0)) < 0:
        raise ValueError(f"mixup_alpha must be >= 0, got {setting['mixup_alpha']!r}")
    if not 0 <= float(setting.get("momentum", 0.9)) < 1:
        raise ValueError(f"momentum must be in [0, 1), got {setting['momentum']!r}")


def learning_rate_at(setting, step):
    """The learning rate of `setting` at step `step` (0-based), by `schedules.learning_rate_at`."""
    from bit_experts.training import schedules  # here: it imports Keras

    decay = [setting.get(key, default) for key, default in _SCHEDULE_DEFAULTS]
    return schedules.learning_rate_at(step, setting["learning_rate"], setting["steps"], *decay)


def hyperrule_schedule(dataset_size):
    """(warm-up steps, decay boundaries, total steps) by dataset size: below 20k images 500
    steps, below 500k 10k steps, else 20k; the learning rate drops 10x at the boundaries."""
    if dataset_size < _SMALL_DATASET:
        return 100, (200, 300, 400), 500
    if dataset_size < _LARGE_DATASET:
        return 500, (3000, 6000, 9000), 10_000
    return 500, (6000, 12_000, 18_000), 20_000


def hyperrule_resolution(image_size):
    """(resize, crop) by image size (a side or (height, width)): area < 96x96 px: (160, 128), else
    (512, 480), as big_transfer's bit_hyperrule.py. Test images are resized to the crop size."""
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    return (160, 128) if height * width < _SMALL_IMAGE_AREA else (512, 480)


def hyperrule_mixup(dataset_size):
    """Mixup alpha: 0 below 20k examples, 0.1 from there."""
    return 0.0 if dataset_size < _SMALL_DATASET else 0.1


def bit_hyperrule(dataset_size, image_size):
    """The single BiT-HyperRule setting for a dataset of `dataset_size` images of `image_size` px."""
    warmup, boundaries, steps = hyperrule_schedule(dataset_size)
    resize, crop = hyperrule_resolution(image_size)
    return make_setting(
        HYPERRULE_LR,
        steps,
        HYPERRULE_BATCH_SIZE,
        warmup_steps=warmup,
        schedule="step",
        decay_points=[b / steps for b in boundaries],
        resolution=crop,
        resize=resize,
        flip=True,
        mixup_alpha=hyperrule_mixup(dataset_size),
        name=f"hyperrule_steps{steps}",
    )


def vtab_lightweight(resolution=224):
    """VTAB's recommended lightweight sweep: 2 learning rates x 2 schedules (4 settings)."""
    return [
        make_setting(lr, steps, 512, resolution=resolution)
        for lr in (0.1, 0.01)
        for steps in (2500, 10_000)
    ]


def local(resolution=32):
    """CPU preset for the offline demo: 200 steps of 64 32-px images, ~35-50 s per fine-tune."""
    return [
        make_setting(
            lr, 200, 64, warmup_steps=20, schedule="cosine", resolution=resolution, flip=True
        )
        for lr in (0.03, 0.01)
    ]


def quick(resolution=32):
    """A few steps at small batch size: smoke tests, not accuracy."""
    return [make_setting(0.01, 4, 16, resolution=resolution)]


def demo(quick=False, resolution=32):
    """The offline demo's one setting (nothing to tune); `quick`: 20 steps (the demo's --quick)."""
    if quick:
        return [make_setting(0.03, 20, 32, resolution=resolution, name="quick_lr0.03")]
    return [
        make_setting(
            0.03, 50, 32, warmup_steps=5, schedule="cosine", resolution=resolution, name="lr0.03"
        )
    ]


def random_search(num_settings, seed=0, resolution=224):
    """`num_settings` settings drawn from this package's own search space, not the paper's: the
    paper (table 3) gives only the number of settings, 36, not the space they come from.

    The space: learning rate log-uniform in [1e-3, 1e-1], steps in {2500, 5000, 10000, 20000},
    warm-up 500 steps, step decay at 30/60/90%, mixup alpha in {0, 0.1}, batch 512, flips, resize
    8/7 then crop. The report of a run that used it says so (`vtab_eval.report`).
    """
    rng = np.random.default_rng(seed)
    settings = []
    for i in range(num_settings):
        lr = float(10 ** rng.uniform(-3, -1))
        steps = int(rng.choice([2500, 5000, 10_000, 20_000]))
        settings.append(
            make_setting(
                round(lr, 6),
                steps,
                512,
                warmup_steps=500,
                resolution=resolution,
                resize=int(round(resolution * 8 / 7)),
                flip=True,
                mixup_alpha=float(rng.choice([0.0, 0.1])),
                name=f"rs{i:02d}_lr{lr:.2g}_steps{steps}",
            )
        )
    return settings


def get_sweep(name, *, dataset_size=1000, image_size=224, resolution=None, num_settings=36, seed=0):
    """The settings of the preset `name` (one of PRESETS; the evaluation config checks it).

    `dataset_size` and `image_size` (a side or (height, width)) feed BiT-HyperRule; `num_settings`
    and `seed` random search; `resolution` replaces every resolution and drops resize-then-crop.
    """
    settings = _PRESETS[name](dataset_size, image_size, num_settings, seed)
    if resolution is not None:
        settings = [dict(s, resolution=resolution, resize=None) for s in settings]
    return settings


# The presets' settings from get_sweep's (dataset_size, image_size, num_settings, seed).
_PRESETS = {
    "vtab_lightweight": lambda *_: vtab_lightweight(),
    "bit_hyperrule": lambda size, side, count, seed: [bit_hyperrule(size, side)],
    "local": lambda *_: local(),
    "quick": lambda *_: quick(),
    "random_search": lambda size, side, count, seed: random_search(count, seed),
    "demo": lambda *_: demo(),
    "demo_quick": lambda *_: demo(quick=True),
}
PRESETS = tuple(_PRESETS)


def for_task(settings, task):
    """The settings (a list, or one dict) without the augmentations `task.augmentation` forbids.

    Returns new dicts: `flip` False unless the task allows it, `resize` None without crops
    (images resized straight to `resolution`). Idempotent; names are kept.
    """
    policy = task.augmentation

    def adapt(setting):
        adapted = dict(setting)
        if setting.get("flip") and not policy.flip:
            adapted["flip"] = False
        if setting.get("resize") is not None and not policy.crop:
            adapted["resize"] = None
        return adapted

    return adapt(settings) if isinstance(settings, dict) else [adapt(s) for s in settings]


def image_statistics(dataset, what="dataset", log=None):
    """{"num_images", "median_area" (px^2), "image_side", "min_side", "max_side"} of an un-batched
    dataset of {"image": [H, W, C]}; ValueError naming `what` if it is empty. `image_side` is
    the square root of the median area rounded down, so `side**2 < 96*96` exactly when the median
    area is below BiT-HyperRule's threshold. `log(str)` gets one line."""
    import tensorflow as tf  # here: a command checks its flags without it (seconds to import)

    shapes = dataset.map(lambda e: tf.shape(e["image"])[:2], num_parallel_calls=tf.data.AUTOTUNE)
    sizes = np.array([s.numpy() for s in shapes], dtype=np.int64).reshape(-1, 2)
    if len(sizes) == 0:
        raise ValueError(f"{what} has no images: cannot choose an image size")
    median_area = float(np.median(sizes[:, 0] * sizes[:, 1]))
    stats = {
        "num_images": int(len(sizes)),
        "median_area": median_area,
        "image_side": max(1, math.isqrt(int(median_area))),
        "min_side": int(sizes.min()),
        "max_side": int(sizes.max()),
    }
    if log:
        log(
            f"{what}: {stats['num_images']} images of {stats['min_side']}..{stats['max_side']} px; "
            f"median area {median_area:.0f} px^2 -> image size {stats['image_side']} px"
        )
    return stats


def split_statistics(task, split, data_dir=None, log=None):
    """`image_statistics` of one split of a task, e.g. the final training split for
    BiT-HyperRule (`get_sweep(dataset_size=num_images, image_size=image_side)`)."""
    dataset = task.load(split, data_dir=data_dir)
    return image_statistics(dataset, what=f"{task.name}/{split}", log=log)


def fitting_batch(resolution, num_images=None):
    """The batch of a sweep given by flags without one: BiT's 512, halved while it holds more pixels
    than 512 images of 224 px or more images than the training split (`num_images`; None: not
    known)."""
    batch = HYPERRULE_BATCH_SIZE
    pixels = HYPERRULE_BATCH_SIZE * 224**2
    while batch > 1 and (batch * resolution**2 > pixels or batch > (num_images or batch)):
        batch //= 2
    return batch


def from_values(learning_rates, steps, batch_size, resolution, **common):
    """A grid sweep given on the command line: every learning rate x every step count."""
    if not learning_rates or not steps:
        raise ValueError(
            "a sweep given by flags needs at least one learning rate and one step count"
        )
    return [
        make_setting(lr, s, batch_size, resolution=resolution, **common)
        for lr in learning_rates
        for s in steps
    ]
