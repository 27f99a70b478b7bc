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

import ast
import copy
import difflib
import importlib
import importlib.util
import math
import os

from bit_experts import presets

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


def _merge(defaults: dict, user: dict, path: str) -> dict:
    if not isinstance(user, dict):
        raise ValueError(f"config{path or ''} must be a dict, got {type(user).__name__}")
    out = copy.deepcopy(defaults)
    for key, value in user.items():
        where = f"{path}.{key}" if path else key
        if key not in defaults:
            close = difflib.get_close_matches(str(key), list(defaults), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown config key {where!r}{hint} (known: {sorted(defaults)})")
        if isinstance(defaults[key], dict):
            out[key] = _merge(defaults[key], value, where)
        else:
            out[key] = value
    return out


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"bad config: {message}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_str_list(x) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(v, str) and v for v in x)


# Every leaf key -> (check, what was expected). Checked before anything is read, built or written.
_INT_MIN1 = (lambda x: _is_int(x) and x >= 1, "an int >= 1")
_INT_MIN0 = (lambda x: _is_int(x) and x >= 0, "an int >= 0")
_SEED = (lambda x: _is_int(x) and 0 <= x <= 2**31 - 1, "an int in [0, 2**31 - 1]")
_BOOL = (lambda x: isinstance(x, bool), "true or false")
_STR = (lambda x: isinstance(x, str) and x != "", "a non-empty string")
_OPT_STR = (lambda x: x is None or (isinstance(x, str) and x != ""), "None or a non-empty string")
_OPT_INT_MIN1 = (lambda x: x is None or (_is_int(x) and x >= 1), "None or an int >= 1")
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
    "baseline": _STAGE,
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


def _check_types(config: dict, schema: dict, path: str = "") -> None:
    for key, rule in schema.items():
        where = f"{path}{key}"
        if isinstance(rule, dict):
            _check_types(config[key], rule, f"{where}.")
            continue
        check, expected = rule
        value = config[key]
        _require(check(value), f"{where} must be {expected}, got {value!r}")


def resolve_config(user: dict) -> dict:
    """Fills in defaults and validates `user`; returns the complete config (a new dict).

    Raises ValueError with one line naming the first bad key, what was expected and what was given
    (e.g. `bad config: baseline.base_lr must be a number > 0, got 'abc'`). Nothing is read, built or
    written before this check, so a corrected rerun is never refused because of a bad first try.
    """
    config = _merge(DEFAULTS, user, "")
    _check_types(config, SCHEMA)
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
    for stage in STAGES:
        s = config[stage]
        _require(
            s["warmup_steps"] <= s["steps"],
            f"{stage}.warmup_steps must be in [0, {stage}.steps={s['steps']}], "
            f"got {s['warmup_steps']!r}",
        )
    return config


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Applies `key.sub=value` strings (value: a Python literal, else a string) to a copy of config.

    Keys are checked later by `resolve_config`; unknown ones raise there.
    """
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return config


def load_config(spec: str) -> dict:
    """Loads a config: `path/to/file.py[:arg]` or a module name in `bit_experts.configs` (`name[:arg]`).

    Calls the file's `get_config(arg)` (`arg` is None when absent) and returns its dict unresolved.
    """
    target, _, arg = spec.partition(":")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise FileNotFoundError(f"config file {target!r} does not exist")
        module_spec = importlib.util.spec_from_file_location("_bit_experts_config", target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(f"bit_experts.configs.{target}")
        except ModuleNotFoundError as e:
            if e.name != f"bit_experts.configs.{target}":
                raise
            raise ValueError(
                f"unknown config {target!r}: give a .py file or one of bit_experts/configs/"
            ) from None
    if not hasattr(module, "get_config"):
        raise ValueError(f"config {target!r} has no get_config() function")
    config = module.get_config(arg or None)
    if not isinstance(config, dict):
        raise ValueError(f"config {spec!r}: get_config() must return a dict")
    return config
