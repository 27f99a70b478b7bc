"""Plain nested-dict configs with a schema: defaults, per-key checks, overrides, config files.

The one config style of the package (training: `bit_experts.training.config`; evaluation:
`vtab_eval.config`). A config is a nested dict whose every key exists in its DEFAULTS; an unknown
key (a typo) raises a ValueError naming it and the closest known keys, and every leaf is checked by
a (predicate, what was expected) rule before anything is read, built or written. Why this and
not ml_collections: docs/training.md, "Configs".
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib
import importlib.util
import math
import os
import pkgutil


def merge(defaults: dict, user: dict, path: str) -> dict:
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
            out[key] = merge(defaults[key], value, where)
        else:
            out[key] = value
    return out


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"bad config: {message}")


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_str_list(x) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(v, str) and v for v in x)


# Rules: (predicate, what was expected), for the SCHEMA of a config (leaf key -> rule).
INT_MIN1 = (lambda x: is_int(x) and x >= 1, "an int >= 1")
INT_MIN0 = (lambda x: is_int(x) and x >= 0, "an int >= 0")
SEED = (lambda x: is_int(x) and 0 <= x <= 2**31 - 1, "an int in [0, 2**31 - 1]")
BOOL = (lambda x: isinstance(x, bool), "true or false")
STR = (lambda x: isinstance(x, str) and x != "", "a non-empty string")
OPT_STR = (lambda x: x is None or (isinstance(x, str) and x != ""), "None or a non-empty string")
OPT_INT_MIN1 = (lambda x: x is None or (is_int(x) and x >= 1), "None or an int >= 1")


def check_schema(config: dict, schema: dict, path: str = "") -> None:
    for key, rule in schema.items():
        if isinstance(rule, dict):
            check_schema(config[key], rule, f"{path}{key}.")
        else:
            require(rule[0](config[key]), f"{path}{key} must be {rule[1]}, got {config[key]!r}")


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Applies `key.sub=value` strings (a Python literal, else a string) to a copy; keys are checked
    later, when the config is resolved."""
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


def load_config(spec: str, package: str = "bit_experts.configs") -> dict:
    """Loads a config: `path/to/file.py[:arg]` or a module name in `package` (`name[:arg]`).

    Calls the file's `get_config(arg)` (`arg` is None when absent) and returns its dict unresolved.
    """
    target, _, arg = spec.partition(":")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise FileNotFoundError(f"config file {target!r} does not exist")
        module_spec = importlib.util.spec_from_file_location("_config_file", target)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:  # any failure of the user's file is bad input: one line
            where = f" (line {err.lineno})" if isinstance(err, SyntaxError) else ""
            raise ValueError(
                f"config file {target!r} cannot be loaded: {type(err).__name__}: {err.args[0] if err.args else err}{where}"
            ) from None
    else:
        try:
            module = importlib.import_module(f"{package}.{target}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{target}":
                raise
            found = importlib.import_module(package).__path__
            names = sorted(m.name for m in pkgutil.iter_modules(found) if m.name[0] != "_")
            raise ValueError(
                f"unknown config {target!r}: give a .py file or one of {names}"
            ) from None
    if not hasattr(module, "get_config"):
        raise ValueError(f"config {target!r} has no get_config() function")
    config = module.get_config(arg or None)
    if not isinstance(config, dict):
        raise ValueError(f"config {spec!r}: get_config() must return a dict")
    return config
