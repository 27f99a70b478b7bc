"""Fine-tuning hyperparameter sweeps: named presets, BiT-HyperRule and random search.

A *setting* is a plain JSON-serialisable dict (see `make_setting` for its keys); a *sweep* is a list
of settings. The protocol (`vtab_eval.protocol`) trains each setting of a sweep on the tuning split,
keeps the best on the validation split and retrains it. docs/evaluation.md lists the presets.

Presets:
  vtab_lightweight: VTAB's recommended lightweight sweep: learning rate {0.1, 0.01} x schedule
    {2500, 10000} steps, batch 512, SGD momentum 0.9, decay by 10x at 30/60/90% of the steps,
    images resized to 224, no augmentation.
  bit_hyperrule: BiT-HyperRule (Kolesnikov et al., 2020), one setting derived from the dataset
    size and image size by the small functions below, with google-research/big_transfer's values
    (bit_hyperrule.py: resize 512 -> crop 480, or 160 -> 128 below 96x96 pixels).
  local: a CPU preset for the offline demo (32-px images, ~1000 training images, ~1 min per run).
  quick: a few steps, for tests and smoke runs.
  random_search: `num_settings` settings drawn from a fixed space (paper table 3 uses 36).

A task forbids the augmentations that would corrupt its labels (`task.augmentation`, see
vtab_eval.tasks.base.Augmentation); `for_task` applies that policy to any preset's settings, so call
it on every sweep before fine-tuning (and before keying caches on the settings).
"""

import math

import numpy as np
import tensorflow as tf

from bit_experts.training import schedules

PRESETS = (
    "vtab_lightweight",
    "bit_hyperrule",
    "local",
    "quick",
    "random_search",
    "demo",
    "demo_quick",
)
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
    """One fine-tuning setting as a validated plain dict.

    Args:
      learning_rate: peak learning rate of SGD with momentum.
      steps: number of training steps.
      batch_size: global batch size (split across replicas).
      momentum: SGD momentum.
      weight_decay: L2 coefficient added to the gradient of every tuned weight (0 = none).
      warmup_steps: linear warm-up from 0 to `learning_rate` over this many steps.
      schedule: "step" (multiply by `decay_factor` at each of `decay_points`, fractions of
        `steps`), "cosine" (cosine decay to 0 after warm-up) or "constant".
      resolution: side of the square images the network sees (training crop and evaluation size).
      resize: training images are resized to resize x resize and randomly cropped to
        `resolution`; None means resized straight to `resolution` (no crop).
      flip: random horizontal flips during training.
      mixup_alpha: mixup's Beta(alpha, alpha) parameter; 0 turns mixup off.
      name: a short label for reports; derived from the values when None.
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
    decay = [setting.get(key, default) for key, default in _SCHEDULE_DEFAULTS]
    return schedules.learning_rate_at(step, setting["learning_rate"], setting["steps"], *decay)


# --- BiT-HyperRule: small pure functions of the dataset size and the image size. ---


def hyperrule_schedule(dataset_size):
    """(warm-up steps, decay boundaries, total steps) by dataset size.

    Below 20k examples: 500 steps; below 500k: 10k steps; otherwise 20k steps. Warm-up is 100 steps
    for the smallest datasets and 500 otherwise; the learning rate drops 10x at the boundaries.
    """
    if dataset_size < 1:
        raise ValueError(f"dataset_size must be positive, got {dataset_size!r}")
    if dataset_size < _SMALL_DATASET:
        return 100, (200, 300, 400), 500
    if dataset_size < _LARGE_DATASET:
        return 500, (3000, 6000, 9000), 10_000
    return 500, (6000, 12_000, 18_000), 20_000


def hyperrule_resolution(image_size):
    """(resize, crop) by original image size: area < 96x96 px: 160 -> 128, else 512 -> 480.

    The values of google-research/big_transfer (bit_hyperrule.py `get_resolution` and the colab's
    table): training images are resized to the first and randomly cropped to the second; test
    images are resized to the second.
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
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
    """CPU preset for the offline demo: 32-px images, ~1000 training images.

    200 steps of 64 images (~13 epochs of train800val200), cosine decay, flips; measured at
    ~300-400 images/s for r14_micro/r14_tiny on 2 cores, i.e. ~35-50 s per fine-tune.
    """
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
    """The offline demo's sweep (`vtab_eval.demo`): one setting, so the VTAB-1k protocol trains
    on train800val200 and tests (nothing to tune); 52 fine-tunes (13 candidates x 4 tasks) fit 2
    CPU cores. `quick`: 20 steps (the demo's --quick)."""
    if quick:
        return [make_setting(0.03, 20, 32, resolution=resolution, name="quick_lr0.03")]
    return [
        make_setting(
            0.03, 50, 32, warmup_steps=5, schedule="cosine", resolution=resolution, name="lr0.03"
        )
    ]


def random_search(num_settings, seed=0, resolution=224):
    """`num_settings` settings drawn from a fixed space (paper table 3: 36 sets).

    Space (our choice; the paper gives only the count): learning rate log-uniform in
    [1e-3, 1e-1], steps in {2500, 5000, 10000, 20000}, warm-up 500 steps, step decay at
    30/60/90%, mixup alpha in {0, 0.1}, batch 512, random flips, resize 1.14x then crop.
    """
    if num_settings < 1:
        raise ValueError(f"num_settings must be positive, got {num_settings!r}")
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
    """The settings of a named preset.

    Args:
      name: one of PRESETS.
      dataset_size: training images (BiT-HyperRule's schedule and mixup depend on it).
      image_size: original image side (BiT-HyperRule's resolution depends on it).
      resolution: overrides the preset's resolution (and drops its resize-then-crop).
      num_settings, seed: for "random_search".
    """
    if name == "vtab_lightweight":
        settings = vtab_lightweight()
    elif name == "bit_hyperrule":
        settings = [bit_hyperrule(dataset_size, image_size)]
    elif name == "local":
        settings = local()
    elif name == "quick":
        settings = quick()
    elif name == "random_search":
        settings = random_search(num_settings, seed)
    elif name in ("demo", "demo_quick"):
        settings = demo(quick=name == "demo_quick")
    else:
        raise ValueError(f"unknown sweep preset {name!r}; expected one of {PRESETS}")
    if resolution is not None:
        settings = [override(s, resolution=resolution, resize=None) for s in settings]
    return settings


def apply_augmentation(setting, augmentation):
    """`setting` with the augmentations that `augmentation` forbids turned off.

    Args:
      setting: a sweep setting dict.
      augmentation: a `vtab_eval.tasks.Augmentation` (a task's `augmentation`).

    Returns a new validated dict: `flip` is False unless both allow it; without crops `resize` is
    None (images are resized straight to `resolution`). Idempotent; the name is kept.
    """
    changes = {}
    if setting.get("flip") and not augmentation.flip:
        changes["flip"] = False
    if setting.get("resize") is not None and not augmentation.crop:
        changes["resize"] = None
    return override(setting, **changes) if changes else dict(setting)


def for_task(settings, task):
    """The settings (a list, or one dict) with `task.augmentation` applied (see apply_augmentation).

    Every preset that augments (bit_hyperrule, local, random_search, flag grids with flips) goes
    through this, so no fine-tune flips or crops a task whose labels that would corrupt.
    """
    if isinstance(settings, dict):
        return apply_augmentation(settings, task.augmentation)
    return [apply_augmentation(s, task.augmentation) for s in settings]


def image_statistics(dataset, what="dataset", log=None):
    """Image count and typical size of a dataset of {"image": [H, W, C], ...} examples.

    Reads every example once (only the shapes are kept). The typical side is the square root of the
    median image area, rounded down, so that `side**2 < 96*96` exactly when the median area is below
    BiT-HyperRule's threshold. Logs one line with the size chosen.

    Args:
      dataset: an un-batched tf.data.Dataset, e.g. `task.load("train800val200")`.
      what: a name for the log line (e.g. "cifar100/train800val200").
      log: callable(str); None logs nothing.

    Returns:
      {"num_images": int, "median_area": float (px^2), "image_side": int (px),
       "min_side": int, "max_side": int (over heights and widths)}.

    Raises:
      ValueError: the dataset is empty.
    """
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
    """`image_statistics` of one split of a task (e.g. the tuning split for BiT-HyperRule).

    Returns the same dict; `get_sweep(..., dataset_size=stats["num_images"],
    image_size=stats["image_side"])` then picks the schedule and resolution from the whole split.
    """
    dataset = task.load(split, data_dir=data_dir)
    return image_statistics(dataset, what=f"{task.name}/{split}", log=log)


def override(setting, **changes):
    """A copy of `setting` with `changes` applied and validated (unknown keys are refused)."""
    unknown = sorted(set(changes) - set(setting))
    if unknown:
        raise ValueError(f"unknown sweep setting keys {unknown}; known: {sorted(setting)}")
    updated = dict(setting, **changes)
    validate_setting(updated)
    return updated


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
