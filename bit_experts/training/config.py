"""The training config: its schema (`DEFAULTS`, `SCHEMA`), validation and config files, in the
package's one config style (`bit_experts.config_schema`). docs/training.md lists every key."""

from __future__ import annotations

from collections.abc import Sequence

from bit_experts import config_schema as cs
from bit_experts import presets

STAGES = ("baseline", "full", "adapter", "epn")
PRECISIONS = ("float32", "mixed_bfloat16")


def check_stages(stages: Sequence[str]) -> list[str]:
    """Returns `stages` as a list; ValueError naming any that is not in STAGES."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; expected some of {list(STAGES)}")
    return list(stages)


def _stage(steps, base_lr, warmup_steps):
    return {
        "steps": steps,
        "base_lr": base_lr,  # Scaled by batch_size / 256.
        "warmup_steps": warmup_steps,
        "decay": "cosine",
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "batch_size": None,  # None: the top-level batch_size.
    }


DEFAULTS = {
    "upstream": {
        "source": "world",  # world | tfds:NAME | tfrecord:GLOB | folder:PATH
        "data_dir": None,
        "split": "train",
        "image_key": "image",
        "label_key": "label",
        "label_names": None,  # tfrecord sources: JSON list or text file of label names.
        "shuffle_buffer": 10_000,
        "crop_min_area": 0.05,  # BiT's inception crop keeps 5%-100% of the image area.
        "flip": True,
        "world_seed": 0,
        "world_images_per_class": 20,
        "world_image_size": 32,
        "world_scripts": None,  # None: every script of bit_experts.world; else a list of names
    },
    # upstream (the source's own, e.g. the world's) | is_a:PATH | json:PATH | tfds_two_level
    "hierarchy": {"source": "upstream", "coarse_key": "coarse_label"},
    # include_roots: hierarchy roots compete like any node (the paper's collection has `entity`).
    "experts": {
        "top_k": None,
        "min_images": None,
        "include_roots": True,
        "control": False,
        "control_seed": 0,
    },
    # head_bias_init: None starts every logit at the label prior, -ln(num_classes) (see docs).
    "model": {
        "preset": "r14_micro",
        "image_size": 32,
        "precision": "float32",
        "head_bias_init": None,
    },
    "batch_size": 64,
    "seed": 0,  # Data order, augmentation and initialisation seeds derive from it (determinism.py).
    "deterministic": True,  # Op determinism + seeded initialisation (--nodeterministic: off).
    # B's starting point: None (random), a BiT .npz, an exported baseline module or a models/<name>.
    "init_from": None,
    # Copy init_from's label head too (implied by baseline.steps=0: B is init_from as it is).
    "init_head": False,
    "baseline": _stage(steps=300, base_lr=0.03, warmup_steps=30),
    "full": _stage(steps=100, base_lr=0.03, warmup_steps=10),
    "adapter": _stage(steps=100, base_lr=0.03, warmup_steps=10),
    "epn": {**_stage(steps=150, base_lr=0.03, warmup_steps=15), "preset": None, "init": "baseline"},
    "checkpoint_every": 100,
    "log_every": 10,
    "keep_checkpoints": 2,
    # The largest model.image_size and upstream.world_image_size accepted (memory: see resolve_config).
    "max_image_size": 1024,
}


# Every leaf key -> (check, what was expected); the rules are `bit_experts.config_schema`'s.
_STAGE = {
    "steps": cs.INT_MIN1,
    "base_lr": (lambda x: cs.is_number(x) and x > 0, "a number > 0"),
    "warmup_steps": cs.INT_MIN0,
    "decay": (lambda x: x in ("cosine", "linear", "constant"), "'cosine', 'linear' or 'constant'"),
    "weight_decay": (lambda x: cs.is_number(x) and x >= 0, "a number >= 0"),
    "momentum": (lambda x: cs.is_number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "batch_size": cs.OPT_INT_MIN1,
}
SCHEMA = {
    "upstream": {
        "source": cs.STR,
        "data_dir": cs.OPT_STR,
        "split": cs.STR,
        "image_key": cs.STR,
        "label_key": cs.STR,
        "label_names": cs.OPT_STR,
        "shuffle_buffer": cs.INT_MIN1,
        "crop_min_area": (lambda x: cs.is_number(x) and 0 < x <= 1, "a number in (0, 1]"),
        "flip": cs.BOOL,
        "world_seed": cs.SEED,
        "world_images_per_class": cs.INT_MIN1,
        "world_image_size": cs.INT_MIN1,
        "world_scripts": (
            lambda x: x is None or (cs.is_str_list(x) and len(x) > 0),
            "None or a non-empty list of script names",
        ),
    },
    "hierarchy": {"source": cs.STR, "coarse_key": cs.STR},
    "experts": {
        "top_k": cs.OPT_INT_MIN1,
        "min_images": cs.OPT_INT_MIN1,
        "include_roots": cs.BOOL,
        "control": cs.BOOL,
        "control_seed": cs.SEED,
    },
    "model": {
        "preset": cs.STR,
        "image_size": cs.INT_MIN1,
        "precision": (lambda x: x in PRECISIONS, f"one of {PRECISIONS}"),
        "head_bias_init": (lambda x: x is None or cs.is_number(x), "None or a number"),
    },
    "batch_size": cs.INT_MIN1,
    "seed": cs.SEED,
    "deterministic": cs.BOOL,
    "init_from": cs.OPT_STR,
    "init_head": cs.BOOL,
    "baseline": {**_STAGE, "steps": cs.INT_MIN0},  # 0: B is init_from as it is (resolve_config)
    "full": _STAGE,
    "adapter": _STAGE,
    "epn": {
        **_STAGE,
        "preset": cs.OPT_STR,
        "init": (lambda x: x in ("baseline", "scratch"), "'baseline' or 'scratch'"),
    },
    "checkpoint_every": cs.INT_MIN1,
    "log_every": cs.INT_MIN1,
    "keep_checkpoints": cs.INT_MIN1,
    "max_image_size": cs.INT_MIN1,
}


def resolve_config(user: dict) -> dict:
    """Fills in defaults and validates `user`; returns the complete config (a new dict).

    Raises ValueError with one line naming the first bad key, what was expected and what was given
    (e.g. `bad config: baseline.base_lr must be a number > 0, got 'abc'`). Nothing is read, built or
    written before this check, so a corrected rerun is never refused because of a bad first try.
    """
    config = cs.merge(DEFAULTS, user, "")
    cs.check_schema(config, SCHEMA)
    experts = config["experts"]
    cs.require(
        (experts["top_k"] is None) != (experts["min_images"] is None),
        "set exactly one of experts.top_k or experts.min_images, got "
        f"top_k={experts['top_k']!r}, min_images={experts['min_images']!r}",
    )
    presets.preset_config(config["model"]["preset"])  # Raises listing the presets.
    if config["epn"]["preset"] is not None:
        presets.preset_config(config["epn"]["preset"])
    if config["epn"]["init"] == "baseline":
        epn_preset = config["epn"]["preset"] or config["model"]["preset"]
        cs.require(
            epn_preset == config["model"]["preset"],
            f"epn.init='baseline' needs epn.preset equal to model.preset "
            f"({config['model']['preset']!r}), got {epn_preset!r}",
        )
    limit, batch = config["max_image_size"], config["batch_size"]
    for key in ("model.image_size", "upstream.world_image_size"):
        section, name = key.split(".")
        pixels = config[section][name] ** 2 * 12  # bytes of one float32 RGB image
        cs.require(
            config[section][name] <= limit,
            f"{key}={config[section][name]} is above max_image_size={limit} (one float32 image "
            f"of that size takes {pixels / 2**20:.0f} MiB, a batch of {batch}: "
            f"{batch * pixels / 2**30:.1f} GiB, before any activation); set max_image_size "
            "higher if your memory holds it",
        )
    cs.require(
        config["init_from"] is not None or not config["init_head"],
        "init_head=true copies init_from's label head, but init_from is not set",
    )
    cs.require(
        config["init_from"] is not None or config["baseline"]["steps"] > 0,
        "baseline.steps=0 takes B as init_from is (backbone and head, no training), but init_from "
        "is not set; give --init_from=<BiT .npz with a head, or WORKDIR/models/<name>/>",
    )
    for stage in STAGES:
        s = config[stage]
        if s["steps"] == 0:
            continue  # nothing is trained: the schedule's other keys play no part
        cs.require(
            s["warmup_steps"] <= s["steps"],
            f"{stage}.warmup_steps must be in [0, {stage}.steps={s['steps']}], "
            f"got {s['warmup_steps']!r}",
        )
    return config


def load_config(spec: str) -> dict:
    """Loads a config: `path/to/file.py[:arg]` or a module of `bit_experts.configs` (`name[:arg]`);
    returns its `get_config(arg)` dict unresolved (`cs.load_config`)."""
    return cs.load_config(spec, "bit_experts.configs")
