"""Writing the job's outputs atomically: JSON files and finished models (docs/workdir.md).

A work directory may be local or a URL of any `tf.io.gfile` filesystem (`gs://...`). A finished
model is committed by its `info.json`, written last: `model_exists` trusts a model folder only when
that file is there, so a folder left by a writer killed before it (possible on object stores, where
nothing is renamed into place) is rewritten, not used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile

from bit_experts import atomic_files, lazy_api

keras = lazy_api.module("keras")  # imported on first use: commands check flags first

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
    """True when models/<name>/ is complete: its info.json, written last, is there."""
    return atomic_files.isfile(os.path.join(models_dir(workdir), name, INFO_FILE))


def save_model(workdir: str, model: keras.Model, info: dict) -> str:
    """Writes models/<info['name']>/{model.keras, info.json}.

    Locally through a temporary folder + os.replace. On a `tf.io.gfile` URL (no atomic rename):
    model.keras is saved locally, uploaded in one write, and info.json is written after it, as the
    commit marker (`model_exists`). A model already complete is kept.
    """
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"info.json for {info.get('name')!r} lacks keys {missing}")
    workdir = atomic_files.check_url(workdir)  # file:// -> its local path
    if atomic_files.is_url(workdir):
        return _save_model_remote(workdir, model, info)
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


def _save_model_remote(workdir: str, model: keras.Model, info: dict) -> str:
    final = os.path.join(models_dir(workdir), info["name"])
    if model_exists(workdir, info["name"]):
        return final
    local = tempfile.mkdtemp(prefix="bit-experts-model-")
    try:
        model.save(os.path.join(local, MODEL_FILE))
        atomic_files.upload_file(os.path.join(local, MODEL_FILE), os.path.join(final, MODEL_FILE))
    finally:
        shutil.rmtree(local, ignore_errors=True)
    write_json(os.path.join(final, INFO_FILE), info)  # the commit marker: last
    return final


def load_model(workdir: str, name: str) -> keras.Model:
    """Loads models/<name>/model.keras (of a complete model: `model_exists`); ValueError naming the
    file and what to do when it cannot be loaded (truncated or corrupt)."""
    workdir = atomic_files.check_url(workdir)
    path = os.path.join(models_dir(workdir), name, MODEL_FILE)
    remote = atomic_files.is_url(path)
    if not atomic_files.isfile(path) or (remote and not model_exists(workdir, name)):
        raise FileNotFoundError(f"model {path!r} does not exist (was its stage trained?)")
    from bit_experts import resnet_v2  # noqa: F401 (registers the classes the file holds)

    local = None if not remote else tempfile.mkdtemp(prefix="bit-experts-model-")
    try:
        if local is not None:
            with open(os.path.join(local, MODEL_FILE), "wb") as f:
                f.write(atomic_files.read_bytes(path))
        return keras.models.load_model(path if local is None else os.path.join(local, MODEL_FILE))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"{path} cannot be loaded ({str(e).splitlines()[0][:160]}); delete "
            f"{os.path.dirname(path)} and rerun the training command: it saves the model again "
            "from its last checkpoint"
        ) from None
    finally:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
