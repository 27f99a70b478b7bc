"""The training config: its schema with defaults, validation, overrides and loading config files.

A config is a plain nested dict. Every key must exist in `DEFAULTS`; an unknown key (a typo) raises a
ValueError naming it and the closest known keys, before anything is built. docs/training.md lists
every key.

Why not ml_collections (big_vision's convention; checked with ml_collections 1.1.0): its
`ConfigDict` would give us the typo suggestions and type locking (a str assigned to a float field
is refused), but not ranges (`steps=0` and `base_lr=-1` are accepted), and fields whose default is
None (`batch_size`, `data_dir`, `init_from`) need placeholders to be typed at all. The per-key
`SCHEMA` below, which checks type and range in one pass and names the key and the expectation
before the work directory exists, would therefore stay; moving would save only `_merge` and the
suggestion code (about 30 lines) for a new dependency and a changed override syntax (`--set a.b=v`
-> `--config.a.b=v`). So the plain-dict config stays.
"""

from __future__ import annotations

from bit_experts import config_schema, presets
from bit_experts.config_schema import BOOL as _BOOL
from bit_experts.config_schema import INT_MIN0 as _INT_MIN0
from bit_experts.config_schema import INT_MIN1 as _INT_MIN1
from bit_experts.config_schema import OPT_INT_MIN1 as _OPT_INT_MIN1
from bit_experts.config_schema import OPT_STR as _OPT_STR
from bit_experts.config_schema import SEED as _SEED
from bit_experts.config_schema import STR as _STR
from bit_experts.config_schema import apply_overrides  # noqa: F401 (public: bit_experts.train)
from bit_experts.config_schema import is_number as _is_number
from bit_experts.config_schema import is_str_list as _is_str_list
from bit_experts.config_schema import require as _require

STAGES = ("baseline", "full", "adapter", "epn")
PRECISIONS = ("float32", "mixed_bfloat16")


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
    "steps": _INT_MIN1,
    "base_lr": (lambda x: _is_number(x) and x > 0, "a number > 0"),
    "warmup_steps": _INT_MIN0,
    "decay": (lambda x: x in ("cosine", "linear", "constant"), "'cosine', 'linear' or 'constant'"),
    "weight_decay": (lambda x: _is_number(x) and x >= 0, "a number >= 0"),
    "momentum": (lambda x: _is_number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "batch_size": _OPT_INT_MIN1,
}
SCHEMA = {
    "upstream": {
        "source": _STR,
        "data_dir": _OPT_STR,
        "split": _STR,
        "image_key": _STR,
        "label_key": _STR,
        "label_names": _OPT_STR,
        "shuffle_buffer": _INT_MIN1,
        "crop_min_area": (lambda x: _is_number(x) and 0 < x <= 1, "a number in (0, 1]"),
        "flip": _BOOL,
        "world_seed": _SEED,
        "world_images_per_class": _INT_MIN1,
        "world_image_size": _INT_MIN1,
        "world_scripts": (
            lambda x: x is None or (_is_str_list(x) and len(x) > 0),
            "None or a non-empty list of script names",
        ),
    },
    "hierarchy": {"source": _STR, "coarse_key": _STR},
    "experts": {
        "top_k": _OPT_INT_MIN1,
        "min_images": _OPT_INT_MIN1,
        "include_roots": _BOOL,
        "control": _BOOL,
        "control_seed": _SEED,
    },
    "model": {
        "preset": _STR,
        "image_size": _INT_MIN1,
        "precision": (lambda x: x in PRECISIONS, f"one of {PRECISIONS}"),
        "head_bias_init": (lambda x: x is None or _is_number(x), "None or a number"),
    },
    "batch_size": _INT_MIN1,
    "seed": _SEED,
    "deterministic": _BOOL,
    "init_from": _OPT_STR,
    "init_head": _BOOL,
    "baseline": {**_STAGE, "steps": _INT_MIN0},  # 0: B is init_from as it is (resolve_config)
    "full": _STAGE,
    "adapter": _STAGE,
    "epn": {
        **_STAGE,
        "preset": _OPT_STR,
        "init": (lambda x: x in ("baseline", "scratch"), "'baseline' or 'scratch'"),
    },
    "checkpoint_every": _INT_MIN1,
    "log_every": _INT_MIN1,
    "keep_checkpoints": _INT_MIN1,
    "max_image_size": _INT_MIN1,
}


def resolve_config(user: dict) -> dict:
    """Fills in defaults and validates `user`; returns the complete config (a new dict).

    Raises ValueError with one line naming the first bad key, what was expected and what was given
    (e.g. `bad config: baseline.base_lr must be a number > 0, got 'abc'`). Nothing is read, built or
    written before this check, so a corrected rerun is never refused because of a bad first try.
    """
    config = config_schema.merge(DEFAULTS, user, "")
    config_schema.check_schema(config, SCHEMA)
    experts = config["experts"]
    _require(
        (experts["top_k"] is None) != (experts["min_images"] is None),
        "set exactly one of experts.top_k or experts.min_images, got "
        f"top_k={experts['top_k']!r}, min_images={experts['min_images']!r}",
    )
    presets.preset_config(config["model"]["preset"])  # Raises listing the presets.
    if config["epn"]["preset"] is not None:
        presets.preset_config(config["epn"]["preset"])
    if config["epn"]["init"] == "baseline":
        epn_preset = config["epn"]["preset"] or config["model"]["preset"]
        _require(
            epn_preset == config["model"]["preset"],
            f"epn.init='baseline' needs epn.preset equal to model.preset "
            f"({config['model']['preset']!r}), got {epn_preset!r}",
        )
    limit, batch = config["max_image_size"], config["batch_size"]
    for key in ("model.image_size", "upstream.world_image_size"):
        section, name = key.split(".")
        pixels = config[section][name] ** 2 * 12  # bytes of one float32 RGB image
        _require(
            config[section][name] <= limit,
            f"{key}={config[section][name]} is above max_image_size={limit} (one float32 image "
            f"of that size takes {pixels / 2**20:.0f} MiB, a batch of {batch}: "
            f"{batch * pixels / 2**30:.1f} GiB, before any activation); set max_image_size "
            "higher if your memory holds it",
        )
    _require(
        config["init_from"] is not None or not config["init_head"],
        "init_head=true copies init_from's label head, but init_from is not set",
    )
    _require(
        config["init_from"] is not None or config["baseline"]["steps"] > 0,
        "baseline.steps=0 takes B as init_from is (backbone and head, no training), but init_from "
        "is not set; give --init_from=<BiT .npz with a head, or WORKDIR/models/<name>/>",
    )
    for stage in STAGES:
        s = config[stage]
        if s["steps"] == 0:
            continue  # nothing is trained: the schedule's other keys play no part
        _require(
            s["warmup_steps"] <= s["steps"],
            f"{stage}.warmup_steps must be in [0, {stage}.steps={s['steps']}], "
            f"got {s['warmup_steps']!r}",
        )
    return config


def load_config(spec: str) -> dict:
    """Loads a config: `path/to/file.py[:arg]` or a module of `bit_experts.configs` (`name[:arg]`);
    returns its `get_config(arg)` dict unresolved (`config_schema.load_config`)."""
    return config_schema.load_config(spec, "bit_experts.configs")
