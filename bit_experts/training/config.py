"""The training config: its schema with defaults, validation, overrides and loading config files.

A config is a plain nested dict. Every key must exist in `DEFAULTS`; an unknown key (a typo) raises a
ValueError naming it and the closest known keys, before anything is built. docs/training.md lists
every key.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib
import importlib.util
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
    "experts": {"top_k": None, "min_images": None, "control": False, "control_seed": 0},
    # head_bias_init: None starts every logit at the label prior, -ln(num_classes) (see docs).
    "model": {
        "preset": "r14_micro",
        "image_size": 32,
        "precision": "float32",
        "head_bias_init": None,
    },
    "batch_size": 64,
    "seed": 0,
    "baseline": _stage(steps=300, base_lr=0.03, warmup_steps=30),
    "full": _stage(steps=100, base_lr=0.03, warmup_steps=10),
    "adapter": _stage(steps=100, base_lr=0.03, warmup_steps=10),
    "epn": {**_stage(steps=150, base_lr=0.03, warmup_steps=15), "preset": None, "init": "baseline"},
    "checkpoint_every": 100,
    "log_every": 10,
    "keep_checkpoints": 2,
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


def resolve_config(user: dict) -> dict:
    """Fills in defaults and validates `user`; returns the complete config (a new dict)."""
    config = _merge(DEFAULTS, user, "")
    experts = config["experts"]
    _require(
        (experts["top_k"] is None) != (experts["min_images"] is None),
        "set exactly one of experts.top_k or experts.min_images, got "
        f"top_k={experts['top_k']!r}, min_images={experts['min_images']!r}",
    )
    presets.preset_config(config["model"]["preset"])  # Raises listing the presets.
    if config["epn"]["preset"] is not None:
        presets.preset_config(config["epn"]["preset"])
    _require(
        config["model"]["precision"] in PRECISIONS,
        f"model.precision must be one of {PRECISIONS}, got {config['model']['precision']!r}",
    )
    _require(
        config["epn"]["init"] in ("baseline", "scratch"),
        f"epn.init must be 'baseline' or 'scratch', got {config['epn']['init']!r}",
    )
    if config["epn"]["init"] == "baseline":
        epn_preset = config["epn"]["preset"] or config["model"]["preset"]
        _require(
            epn_preset == config["model"]["preset"],
            f"epn.init='baseline' needs epn.preset equal to model.preset "
            f"({config['model']['preset']!r}), got {epn_preset!r}",
        )
    for key in ("batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
        _require(_is_int(config[key]) and config[key] >= 1, f"{key} must be an int >= 1")
    _require(_is_int(config["model"]["image_size"]), "model.image_size must be an int")
    for stage in STAGES:
        s = config[stage]
        _require(_is_int(s["steps"]) and s["steps"] >= 1, f"{stage}.steps must be an int >= 1")
        _require(
            _is_int(s["warmup_steps"]) and 0 <= s["warmup_steps"] <= s["steps"],
            f"{stage}.warmup_steps must be an int in [0, {stage}.steps]",
        )
        _require(s["decay"] in ("cosine", "linear", "constant"), f"{stage}.decay is unknown")
        _require(s["base_lr"] > 0, f"{stage}.base_lr must be > 0")
        _require(
            s["batch_size"] is None or (_is_int(s["batch_size"]) and s["batch_size"] >= 1),
            f"{stage}.batch_size must be None or an int >= 1",
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
