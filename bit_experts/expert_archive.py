"""An expert as a Keras 3 native `.keras` archive, with its metadata on the loaded model.

TF Hub modules serve tf_keras users (`hub.KerasLayer(trainable=True)`); a Keras 3 user can run a
SavedModel through `keras.layers.TFSMLayer` but not fine-tune it with SGD-momentum or Adam (a Keras
limitation). So every published module also ships the same weights as a `.keras` archive of the
`BiTResNetV2`, at `<module folder>/keras/expert.keras` (`ARCHIVE_PATH`); this module writes and reads
it. The model code uses `keras.ops` only, so the archive loads and trains on any Keras backend
(TensorFlow, JAX); nothing here imports TensorFlow except reads or writes of a `tf.io.gfile` URL
(`gs://...`). `load_expert` here takes paths; the public `bit_experts.load_expert`
(`hub_export.keras_artifact.load_expert`) takes every module handle (a collection name, a `kaggle:`
handle, ...) and resolves it to a path first.

The archive is the file `keras.Model.save` writes plus one member, `bit_experts_metadata.json` (the
module's metadata; Keras ignores members it does not know). `load_expert(...).metadata` gives it back,
a plain dict like timm's `pretrained_cfg`:

  timm pretrained_cfg                 here
  architecture (model name)           `architecture`: {preset, block_units, width_factor, groups}
  input_size (3, H, W)                `resolution` (pixels, square)
  mean / std                          `input_range`: [0.0, 1.0] (mapped to [-1, 1] inside the model)
  num_features                        `feature_dim`
  tag / source (hf_hub_id, url)       `kind`, `slice`, `source` or `source_checkpoint` (init source)

The loaded model's `call(images)` (float `[N, H, W, 3]` in [0, 1]) returns what the module's
`__call__` returns: `[N, feature_dim]` pre-logits features for a feature-vector module, logits for a
classifier or EPN. A packed adapter archive (role `packed`) holds every adapter expert; pass
`expert=NAME` to get a standalone 1-expert model for one of them.
"""

import io
import json
import os
import shutil
import tempfile
import zipfile

import keras
import numpy as np

from bit_experts import atomic_files
from bit_experts.resnet_v2 import BiTResNetV2

ARCHIVE_PATH = os.path.join("keras", "expert.keras")  # relative to a module folder
METADATA_MEMBER = "bit_experts_metadata.json"  # the same name as the module's metadata file
# What the loader promises to find in `.metadata` (see the table above); `slice` may be null.
REQUIRED_METADATA = (
    "name",
    "kind",
    "role",
    "architecture",
    "resolution",
    "input_range",
    "feature_dim",
    "slice",
)


def _check_metadata(model, metadata, where):
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: metadata must be a dict, got {type(metadata).__name__}")
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"{where}: metadata is missing {missing} (expected {REQUIRED_METADATA})")
    if int(metadata["feature_dim"]) != model.feature_dim:
        raise ValueError(
            f"{where}: metadata feature_dim {metadata['feature_dim']!r} differs from the model's "
            f"{model.feature_dim}"
        )
    if metadata["role"] == "packed":
        names = [e.get("name") for e in metadata.get("experts") or [] if isinstance(e, dict)]
        if (
            not model.num_experts
            or len(names) != model.num_experts
            or len(set(names)) != len(names)
        ):
            raise ValueError(
                f"{where}: a packed archive needs a model with adapter experts and metadata "
                f"'experts' with one uniquely named entry per expert ({model.num_experts}), "
                f"got {names!r}"
            )


def save_expert(model, path, metadata):
    """Writes `model` (a `BiTResNetV2`) and `metadata` (a JSON-serialisable dict) to `path`.

    `path` must end in `.keras`; it is replaced atomically (a killed save leaves the old file or
    none, never a partial one): locally by a rename, on a `tf.io.gfile` URL (`gs://...`, no
    atomic rename) by building the archive on the local disk and uploading it in one write
    (docs/workdir.md, commit protocol). Raises ValueError for another model class, a path without
    the `.keras` suffix, or metadata missing a key of `REQUIRED_METADATA` or not matching the model
    (feature_dim; for role `packed`, one named entry of `experts` per adapter expert).
    Returns the absolute path (a URL as given).
    """
    path = atomic_files.abspath(os.fspath(path))
    if not isinstance(model, BiTResNetV2):
        raise ValueError(f"save_expert needs a BiTResNetV2, got {type(model).__name__}")
    if not path.endswith(".keras"):
        raise ValueError(f"an expert archive's path must end in .keras, got {path!r}")
    _check_metadata(model, metadata, path)
    text = json.dumps(metadata, indent=2, sort_keys=True)  # TypeError now, not after the save.
    remote = atomic_files.is_url(path)
    if remote:
        tmp_dir = tempfile.mkdtemp(prefix="bit-experts-archive-")
    else:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp_dir = atomic_files.make_temp_dir(directory, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        tmp = os.path.join(tmp_dir, os.path.basename(path))
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_MEMBER, text)
        if remote:
            atomic_files.upload_file(tmp, path)  # one write: the old object or the new one
        else:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def replace_metadata(path, metadata):
    """Rewrites the metadata of the expert archive at `path`, keeping every other member's bytes;
    atomic. The model is not loaded, so `metadata` is checked only for `REQUIRED_METADATA`."""
    path = atomic_files.abspath(os.fspath(path))
    read_metadata(path)  # ValueError unless it is an expert archive.
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"{path}: metadata is missing {missing} (expected {REQUIRED_METADATA})")
    text = json.dumps(metadata, indent=2, sort_keys=True)

    def write(f):
        with zipfile.ZipFile(_zip_source(path)) as src, zipfile.ZipFile(f, "w") as dst:
            for info in src.infolist():
                if info.filename != METADATA_MEMBER:
                    dst.writestr(info, src.read(info))
            dst.writestr(METADATA_MEMBER, text)

    return atomic_files.write_atomic(path, write)


def archive_path(path):
    """The `.keras` file that `path` names: the file itself or `<module folder>/keras/
    expert.keras`. Raises FileNotFoundError naming it when there is none (other handles:
    `bit_experts.load_expert`, which resolves them first)."""
    text = os.fspath(path)
    if os.path.isfile(text):
        return os.path.abspath(text)
    if not os.path.isdir(text):
        raise FileNotFoundError(f"{text!r} is neither a .keras file nor a module folder")
    archive = os.path.join(text, ARCHIVE_PATH)
    if not os.path.isfile(archive):
        if not os.path.isfile(os.path.join(text, "saved_model.pb")):
            raise FileNotFoundError(
                f"{text!r} is no module folder (no saved_model.pb); a collection's module folder "
                "is COLLECTION/<name>/<version>"
            )
        raise FileNotFoundError(
            f"{text!r} has no Keras archive ({ARCHIVE_PATH}): modules published before it existed, "
            "and third-party modules, have none; load it with tf.saved_model.load or "
            "hub.KerasLayer, or publish the module again"
        )
    return os.path.abspath(archive)


def _zip_source(path):
    """What `zipfile.ZipFile` reads: a local path, or a URL's bytes in memory."""
    return io.BytesIO(atomic_files.read_bytes(path)) if atomic_files.is_url(path) else path


def read_metadata(path):
    """The metadata dict stored in the `.keras` archive at `path` (ValueError if it has none);
    `path` may be a `tf.io.gfile` URL."""
    try:
        with zipfile.ZipFile(_zip_source(path)) as archive:
            if METADATA_MEMBER not in archive.namelist():
                raise ValueError(
                    f"{path}: not an expert archive (no {METADATA_MEMBER}; write it with save_expert)"
                )
            return json.loads(archive.read(METADATA_MEMBER))
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a .keras archive (not a zip file)") from None


def pick_expert(model, expert_id):
    """A head-less standalone copy of `model` with only adapter expert `expert_id` (0-based): a
    1-expert `BiTResNetV2` sharing no variables, whose features are the source's for that expert."""
    if not 0 <= int(expert_id) < model.num_experts:
        raise ValueError(f"expert_id must be in [0, {model.num_experts}), got {expert_id!r}")
    config = {**model.get_config(), "num_experts": 1, "num_classes": 0}
    copy = BiTResNetV2.from_config(config)
    copy_backbone_weights(model, copy, expert_id)
    return copy


def copy_backbone_weights(source, target, expert_id=None):
    """Copies `source`'s backbone weights into the built `target` (a `BiTResNetV2` of the same
    shape, head aside): every adapter expert, or with `expert_id` only that expert's adapters (into
    a 1-expert `target`)."""
    for src, dst in zip(source.backbone_layers(), target.backbone_layers()):
        dst.set_weights(src.get_weights())
    for src, dst in zip(source.adapters, target.adapters):
        weights = src.get_weights()
        if expert_id is not None:
            weights = [np.asarray(w)[expert_id : expert_id + 1] for w in weights]
        dst.set_weights(weights)


def _expert_metadata(metadata, name, path):
    experts = metadata.get("experts") or []
    names = [e["name"] for e in experts]
    if name not in names:
        raise ValueError(f"{path}: no expert {name!r} in this packed archive; it holds {names}")
    entry = experts[names.index(name)]
    result = {k: v for k, v in metadata.items() if k != "experts"}
    result.update(
        name=entry.get("module", name),
        role="feature_vector",
        expert=name,
        expert_id=int(entry["expert_id"]),
        slice=entry.get("slice", name),
        image_count=entry.get("image_count"),
        packed_module=metadata["name"],
    )
    return result


def load_expert(handle_or_path, expert=None):
    """Loads a published expert as a Keras 3 model on the current backend.

    Args:
      handle_or_path: a `.keras` archive written by `save_expert`, or a module folder holding one
        at `keras/expert.keras` (every module `hub_export.publish` writes).
      expert: for a packed adapter archive (metadata role `packed`), the name of the adapter expert
        to return as a standalone 1-expert model (`metadata["experts"]` lists them). Without it a
        packed archive loads whole: call it as `model(images, expert_ids=ID)`.

    Returns a `BiTResNetV2` whose `call(images)` (float `[N, H, W, 3]` in [0, 1]) gives the module's
    output (features `[N, feature_dim]` for a feature vector), with `.metadata`, a plain dict (see the
    module docstring). Fine-tune it as any Keras model (e.g. below a `Dense` head, with `fit`); save
    it again, metadata included, with `save_expert(model, path, model.metadata)`.

    Raises FileNotFoundError for a path without an archive, ValueError for a file that is not an
    expert archive or an `expert` that is unknown or given for an archive that is not packed.
    """
    path = archive_path(handle_or_path)
    metadata = read_metadata(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad archive.
        raise ValueError(f"cannot load {path}: {type(error).__name__}: {error}") from None
    if not isinstance(model, BiTResNetV2):
        raise ValueError(f"{path}: holds a {type(model).__name__}, expected a BiTResNetV2")
    if expert is not None:
        if metadata.get("role") != "packed":
            raise ValueError(
                f"{path}: expert={expert!r} needs a packed adapter archive, this one's role is "
                f"{metadata.get('role')!r}"
            )
        metadata = _expert_metadata(metadata, str(expert), path)
        model = pick_expert(model, metadata["expert_id"])
    # Keras would wrap a dict attribute (and the lists inside it) in tracked containers.
    object.__setattr__(model, "metadata", metadata)
    return model
