"""Content-derived identities of modules, for caches and for skipping work already done.

- `weights_fingerprint(module, settings)`: SHA-256 of what a module computes, from its variables
  (order, name, shape, dtype, value bytes), its architecture config, the export settings (role,
  output, expert) and the source of the code that defines its forward pass. Written to the module's
  metadata as `weights_fingerprint`. Exporting the same weights twice gives the same fingerprint,
  although the SavedModel bytes (and so the `sha256` checksum) differ: TensorFlow names traced
  functions with process-wide counters.
- `module_identity(entry_or_path)`: what feature caches and run plans key a module on: its
  `weights_fingerprint` when its metadata has one, else its file checksum (`sha256`).
- `source_fingerprint(...)`: SHA-256 of what a planned module is exported from (the model file's
  bytes, its info.json, the label vocabulary and prior, the module's name, role and expert), so
  that a rerun of `hub_export.publish` skips modules listed from the same source;
  `derived_source_fingerprint` extends it with a rename, license and citation.
"""

import hashlib
import json
import os

import numpy as np

FINGERPRINT_FIELD = "weights_fingerprint"
FINGERPRINT_FORMAT = "bit_experts.weights_fingerprint/1"
SOURCE_FORMAT = "bit_experts.source_fingerprint/1"

# The code whose text defines what a module computes. A change to any of them changes every
# fingerprint, so caches miss rather than serve features of an older forward pass.
_FORWARD_CODE = (
    "bit_experts/resnet_v2.py",
    "bit_experts/adapters.py",
    "bit_experts/layers.py",
    "hub_export/module.py",
    "hub_export/packed.py",
)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def file_sha256(path):
    """SHA-256 of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def forward_code_sha256():
    """SHA-256 over the source files that define a module's forward pass (`_FORWARD_CODE`)."""
    digest = hashlib.sha256()
    for rel in _FORWARD_CODE:
        path = os.path.join(_ROOT, rel)
        digest.update(rel.encode("utf-8") + b"\0")
        digest.update(file_sha256(path).encode("ascii") if os.path.isfile(path) else b"absent")
        digest.update(b"\n")
    return digest.hexdigest()


def _variable_name(variable):
    # Keras 3 variables have a stable `path` (layer names are explicit in BiTResNetV2); the
    # tf.Variable behind them may carry process-dependent suffixes, so it is only a fallback.
    for holder in (variable, getattr(variable, "_keras_variable", None)):
        path = getattr(holder, "path", None)
        if isinstance(path, str):
            return path
    return variable.name.split(":")[0]


def export_settings(metadata):
    """What, besides the variables and the architecture, selects a module's computation: from its
    metadata, `{role, output, output_dim, expert_id}` and, for a packed module, its expert names."""
    settings = {k: metadata.get(k) for k in ("role", "output", "output_dim", "expert_id")}
    if metadata.get("role") == "packed":
        settings["experts"] = [m["name"] for m in metadata.get("experts", [])]
    return settings


def weights_fingerprint(module, settings):
    """The SHA-256 hex digest of what `module` computes.

    Args:
      module: a HubModule or PackedAdapterModule (anything with `variables` and `_model`).
      settings: the export settings that select the computation, e.g. `{"role", "output",
        "expert_id", "experts"}` (JSON-serialisable).

    Variables are hashed in order by Keras path (less the model's name), shape, dtype and value
    bytes; the model's `get_config()` (less its name) and `forward_code_sha256()` stand for the call
    graph. The model's name is left out: Keras numbers unnamed models within a process
    (`bi_t_res_net_v2_1`), and it changes nothing computed.
    """
    digest = hashlib.sha256()
    digest.update(FINGERPRINT_FORMAT.encode("ascii") + b"\n")
    model = getattr(module, "_model", None)
    config = None
    if model is not None:  # The model's name computes nothing (Keras numbers unnamed models).
        config = {k: v for k, v in model.get_config().items() if k != "name"}
    digest.update(_canonical({"settings": settings, "config": config}) + b"\n")
    digest.update(forward_code_sha256().encode("ascii") + b"\n")
    keras_paths = {}
    if model is not None:  # The module's variables are the tf.Variables behind model.weights.
        prefix = f"{model.name}/"
        for w in model.weights:
            path = w.path[len(prefix) :] if w.path.startswith(prefix) else w.path
            keras_paths[id(getattr(w, "value", w))] = path
    for v in module.variables:
        value = np.ascontiguousarray(v.numpy())
        name = keras_paths.get(id(v)) or _variable_name(v)
        header = {"name": name, "shape": list(value.shape), "dtype": value.dtype.str}
        digest.update(_canonical(header) + b"\n")
        digest.update(value.tobytes())
    return digest.hexdigest()


def source_fingerprint(model_sha256, info, label_names, label_prior, name, role, expert=None):
    """The SHA-256 hex digest of what a planned module is exported from (see the module doc)."""
    prior = None if label_prior is None else np.asarray(label_prior, np.float32).tobytes().hex()
    return hashlib.sha256(
        _canonical(
            {
                "format": SOURCE_FORMAT,
                "model_sha256": model_sha256,
                "info": info,
                "label_names": label_names,
                "label_prior": prior,
                "name": name,
                "role": role,
                "expert": expert,
            }
        )
    ).hexdigest()


def derived_source_fingerprint(fingerprint, **extra):
    """`fingerprint` (a `source_fingerprint`) extended by what else publishing puts into a module
    (a new name, renames, license, citation): unchanged when every `extra` value is None or empty,
    so modules published without them keep their fingerprint."""
    extra = {k: v for k, v in extra.items() if v not in (None, {}, "")}
    if not extra:
        return fingerprint
    return hashlib.sha256(
        _canonical({"format": SOURCE_FORMAT, "source": fingerprint, **extra})
    ).hexdigest()


def module_identity(entry_or_path):
    """The identity a feature cache or run plan keys a module on (a 64-hex-digit string).

    Accepts a `collection.ModuleEntry`, a manifest entry dict, or a local module directory
    (`handles.module_folder`: ModuleError for a folder without saved_model.pb or with a link). Returns
    the module's `weights_fingerprint` (identical for identical weights, architecture, export
    settings and forward-pass code, whatever the SavedModel bytes), or, for a module without one
    (third-party, or published before fingerprints), its file checksum `sha256`.
    """
    from hub_export import handles
    from hub_export.metadata import read_metadata

    if isinstance(entry_or_path, (str, os.PathLike)):
        path = handles.module_folder(os.fspath(entry_or_path))  # no link read as its metadata
        metadata = read_metadata(path) or {}
        return metadata.get(FINGERPRINT_FIELD) or handles.module_sha256(path)
    if isinstance(entry_or_path, dict):
        metadata, checksum, path = (
            entry_or_path.get("metadata") or {},
            entry_or_path.get("sha256"),
            None,
        )
    else:
        metadata, checksum = entry_or_path.metadata or {}, entry_or_path.sha256
        path = entry_or_path.path
    if metadata.get(FINGERPRINT_FIELD):
        return metadata[FINGERPRINT_FIELD]
    if checksum:
        return checksum
    if path:
        return handles.module_sha256(path)
    raise ValueError(f"cannot identify module {entry_or_path!r}: no fingerprint, checksum or path")
