"""Writing the job's outputs atomically: JSON files and finished models (docs/workdir.md)."""

from __future__ import annotations

import json
import os
import re
import shutil

import keras

from bit_experts import atomic_files

MODEL_FILE = "model.keras"
INFO_FILE = "info.json"
INFO_KEYS = (
    "name",
    "kind",
    "preset",
    "resolution",
    "upstream_dataset",
    "num_classes",
    "steps",
    "slice",
    "image_count",
    "experts",
    "seeds",
    "init_from",
)


def write_json(path: str, data) -> None:
    """Writes `data` as indented JSON to `path` atomically."""
    atomic_files.write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def safe_name(name: str) -> str:
    """`name` with every character outside [A-Za-z0-9_.-] replaced by `_` (for folder names)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def models_dir(workdir: str) -> str:
    return os.path.join(workdir, "models")


def model_exists(workdir: str, name: str) -> bool:
    """True when models/<name>/ is complete (it only ever appears complete)."""
    return os.path.isfile(os.path.join(models_dir(workdir), name, INFO_FILE))


def save_model(workdir: str, model: keras.Model, info: dict) -> str:
    """Writes models/<info['name']>/{model.keras, info.json} through a temporary folder + os.replace."""
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"info.json for {info.get('name')!r} lacks keys {missing}")
    parent = models_dir(workdir)
    os.makedirs(parent, exist_ok=True)
    final = os.path.join(parent, info["name"])
    tmp = atomic_files.make_temp_dir(parent, prefix=f".tmp-{info['name']}-")
    try:
        model.save(os.path.join(tmp, MODEL_FILE))
        with open(os.path.join(tmp, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        if os.path.isdir(final):  # An incomplete leftover can't exist; a complete one is kept.
            return final
        os.replace(tmp, final)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_model(workdir: str, name: str) -> keras.Model:
    """Loads models/<name>/model.keras."""
    path = os.path.join(models_dir(workdir), name, MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model {path!r} does not exist (was its stage trained?)")
    return keras.models.load_model(path)
