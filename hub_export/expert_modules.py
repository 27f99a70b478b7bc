"""What a training work directory exports: one planned TF Hub module per expert, plus classifiers.

Reads only what docs/workdir.md promises (models/<name>/model.keras + info.json, label_names.json,
expert_domains.json), each only inside the work directory (`workdir_path`: a symbolic link out of
it is refused, not followed). Per model kind:

  baseline -> `<name>` (feature vector) and `<name>_classifier` (logits over upstream labels)
  full     -> `<name>` (feature vector)
  adapter  -> one module per expert (a standalone backbone with only that expert's adapters), named
              after the expert (`adapter_<slice>`, as the training job names them; `<name>_<expert>`
              for an expert name without the `adapter` prefix), and `<name>` (the packed module:
              backbone with every adapter expert)
  epn      -> `<name>` (logits over experts)

Feature-vector modules are built from a head-less copy of the model, so their variables are exactly
what their output depends on. Every planned module carries a `source_fingerprint`
(`identity.source_fingerprint`): the content it is exported from, so reruns can skip it.
"""

import dataclasses
import json
import os
import re
import zipfile
from collections.abc import Callable

import numpy as np

from bit_experts import atomic_files, lazy_api
from hub_export import identity

# TensorFlow's modules: imported when the first module is built, not when one is planned.
hub_module = lazy_api.module("hub_export.module")
packed = lazy_api.module("hub_export.packed")

KINDS = ("baseline", "full", "adapter", "epn")
_INFO_KEYS = ("name", "kind", "preset", "resolution", "upstream_dataset", "num_classes")


@dataclasses.dataclass
class PlannedModule:
    """A module to export. `make()` loads the Keras model (once per model folder) and returns
    `(trackable module to save, metadata dict)`."""

    name: str
    role: str  # feature_vector | classifier | epn | packed
    make: Callable[[], tuple]
    label_prior: np.ndarray | None = None
    expert: dict | None = None  # an adapter expert's {name, expert_id, slice, ...}
    release: Callable[[], None] = lambda: None  # frees the loaded Keras model of this source
    source_fingerprint: str = ""  # identity.source_fingerprint of what it is exported from
    source: str = ""  # the work directory (or, for an added module, its folder) it comes from
    # A saved module folder to copy instead of exporting (`hub_export.publish --module`); `make`
    # then returns `(None, metadata)`.
    copy_from: str | None = None
    renames: dict = dataclasses.field(default_factory=dict)  # old -> new names of its source


class _ModelLoader:
    """Loads a model folder's Keras model on first use and keeps it until `release()`."""

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self._model = None

    def __call__(self):
        if self._model is None:
            self._model = load_model(self.model_dir)
        return self._model

    def release(self):
        self._model = None


def slug(text):
    """A module-name-safe form of `text`: lower case, runs of other characters become `_`."""
    out = re.sub(r"[^a-z0-9_-]+", "_", str(text).lower()).strip("_")
    if not out:
        raise ValueError(f"cannot make a module name from {text!r}")
    return out


def workdir_path(workdir, relative):
    """`workdir`/`relative` (a POSIX path), refused with one ValueError line naming it when a
    symbolic link on the way leads out of the work directory (`atomic_files.confined`)."""
    return atomic_files.confined(workdir, relative, f"work directory {workdir}: entry")


def _read_json(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist ({what})")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def read_label_names(workdir):
    """The upstream label vocabulary of a work directory (label_names.json)."""
    path = workdir_path(workdir, "label_names.json")
    names = _read_json(path, "the upstream label vocabulary")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: expected a JSON list of label names")
    return names


def read_label_priors(workdir, num_labels):
    """Expert domain name -> label prior float32 [num_labels], from expert_domains.json."""
    path = workdir_path(workdir, "expert_domains.json")
    entries = _read_json(path, "the expert domains")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of expert domains")
    priors = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "name" not in e or "label_prior" not in e:
            raise ValueError(f"{path}: entry {i} needs 'name' and 'label_prior'")
        prior = np.asarray(e["label_prior"], dtype=np.float32)
        if prior.shape != (num_labels,):
            raise ValueError(
                f"{path}: domain {e['name']!r} has a label_prior of shape {prior.shape}, "
                f"expected ({num_labels},) to match label_names.json"
            )
        priors[e["name"]] = prior
    return priors


def read_model_infos(workdir):
    """[(model_dir, info dict)] for every finished model in `workdir`: baseline first, then full
    experts, adapter models and the EPN, each kind sorted by folder name (the collection order)."""
    models_dir = workdir_path(workdir, "models")
    if not os.path.isdir(models_dir):
        raise FileNotFoundError(f"{models_dir} does not exist: {workdir!r} has no finished models")
    found = []
    for folder in sorted(os.listdir(models_dir)):
        if folder.startswith("."):
            continue  # Temporary folders of an unfinished atomic write.
        model_dir = workdir_path(workdir, f"models/{folder}")
        if not os.path.isdir(model_dir):
            continue
        info = _read_json(workdir_path(workdir, f"models/{folder}/info.json"), "the model's info")
        missing = [k for k in _INFO_KEYS if k not in info]
        if missing:
            raise ValueError(f"{model_dir}/info.json is missing {missing}")
        if info["kind"] not in KINDS:
            raise ValueError(
                f"{model_dir}/info.json: kind must be one of {KINDS}, got {info['kind']!r}"
            )
        if not os.path.isfile(workdir_path(workdir, f"models/{folder}/model.keras")):
            raise FileNotFoundError(f"{model_dir}/model.keras does not exist")
        found.append((model_dir, info))
    if not found:
        raise FileNotFoundError(f"{models_dir} holds no finished models")
    return sorted(found, key=lambda f: KINDS.index(f[1]["kind"]))  # stable: folder order within


def load_model(model_dir):
    """Loads models/<name>/model.keras (a BiTResNetV2)."""
    import keras

    import bit_experts.resnet_v2  # noqa: F401 - registers the classes for deserialisation.

    path = os.path.join(model_dir, "model.keras")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad archive.
        if zipfile.is_zipfile(path):
            raise ValueError(f"cannot load {path}: {type(error).__name__}: {error}") from None
        raise ValueError(
            f"cannot load {path}: not a Keras archive (a .keras file is a zip; this one is "
            f"{os.path.getsize(path)} bytes, truncated or overwritten?): retrain that model or "
            "restore the file"
        ) from None


def backbone_copy(model, expert_id=None):
    """A head-less copy of `model` sharing no variables: with `expert_id`, only that expert's
    adapters are kept (a 1-expert model); without, every adapter expert is kept."""
    from bit_experts.expert_archive import copy_backbone_weights
    from bit_experts.resnet_v2 import BiTResNetV2

    num_experts = model.num_experts if expert_id is None else 1
    if expert_id is not None and not 0 <= expert_id < model.num_experts:
        raise ValueError(f"expert_id must be in [0, {model.num_experts}), got {expert_id!r}")
    copy = BiTResNetV2(
        block_units=model.block_units,
        width_factor=model.width_factor,
        num_classes=0,
        num_experts=num_experts,
        groups=model.groups,
        adapter_bottleneck=model.adapter_bottleneck,
        name=model.name,
    )
    copy_backbone_weights(model, copy, expert_id)
    return copy


def plan_workdir(workdir):
    """The modules `workdir` exports, as [PlannedModule], plus its label names.

    Returns `(planned, label_names)`. Models are loaded lazily, once per model folder,
    and kept until a module of that folder calls `release()`.
    """
    atomic_files.require_local(
        workdir,
        "--workdir",
        "publishing reads a local training work directory; copy it to a local disk first "
        "(e.g. gsutil -m cp -r), then publish (--collection_dir may be a URL)",
    )
    workdir = atomic_files.abspath(workdir)
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"work directory {workdir} does not exist")
    label_names = read_label_names(workdir)
    priors = read_label_priors(workdir, len(label_names))
    planned = []
    for model_dir, info in read_model_infos(workdir):
        loader = _ModelLoader(model_dir)
        model_sha256 = identity.file_sha256(os.path.join(model_dir, "model.keras"))
        for p in _plan_model(workdir, model_dir, info, loader, priors, len(label_names)):
            p.release = loader.release
            p.source = workdir
            p.source_fingerprint = identity.source_fingerprint(
                model_sha256,
                info,
                label_names if p.role == "classifier" else None,
                p.label_prior,
                p.name,
                p.role,
                p.expert,
            )
            planned.append(p)
    return planned, label_names


def _prior(priors, slice_name, model_dir):
    if slice_name not in priors:
        raise ValueError(
            f"{model_dir}/info.json names slice {slice_name!r}, which is not in expert_domains.json"
        )
    return priors[slice_name]


def _plan_model(workdir, model_dir, info, loader, priors, num_labels):
    kind, name = info["kind"], slug(info["name"])

    def metadata(model, module_name, role, output, output_dim, **extra):
        config = model.get_config()
        result = {
            "name": module_name,
            "kind": kind,
            "role": role,
            "architecture": {
                "preset": info["preset"],
                "block_units": list(config["block_units"]),
                "width_factor": config["width_factor"],
                "groups": config["groups"],
            },
            "upstream_dataset": info["upstream_dataset"],
            "slice": None,
            "image_count": info.get("image_count"),
            "output": output,
            "output_dim": int(output_dim),
            "feature_dim": int(model.feature_dim),
            "resolution": int(info["resolution"]),
            "input_range": [0.0, 1.0],
            "training_steps": info.get("steps"),
            "source": {"workdir": workdir, "model": os.path.basename(model_dir)},
        }
        result.update(extra)
        return result

    if kind in ("baseline", "full"):
        slice_name = info.get("slice") if kind == "full" else None
        if kind == "full" and not slice_name:
            raise ValueError(f"{model_dir}/info.json: a full expert needs its 'slice'")

        def make_features():
            model = loader()
            meta = metadata(
                model, name, "feature_vector", "features", model.feature_dim, slice=slice_name
            )
            return hub_module.HubModule(backbone_copy(model), "features"), meta

        prior = _prior(priors, slice_name, model_dir) if slice_name else None
        yield PlannedModule(name, "feature_vector", make_features, prior)
        if kind == "baseline":
            if int(info["num_classes"]) != num_labels:
                raise ValueError(
                    f"{model_dir}/info.json: num_classes {info['num_classes']} differs from the "
                    f"{num_labels} labels of label_names.json"
                )

            def make_classifier():
                model = loader()
                meta = metadata(
                    model,
                    f"{name}_classifier",
                    "classifier",
                    "logits",
                    info["num_classes"],
                    output_activation=info.get("output_activation", "sigmoid"),
                    labels="label_names.json",
                )
                return hub_module.HubModule(model, "logits"), meta

            yield PlannedModule(f"{name}_classifier", "classifier", make_classifier)
    elif kind == "adapter":
        members = _adapter_members(info, name, model_dir)
        for m in members:

            def make_expert(m=m):
                model = loader()
                meta = metadata(
                    model,
                    m["module"],
                    "feature_vector",
                    "features",
                    model.feature_dim,
                    slice=m["slice"],
                    image_count=m["image_count"],
                    expert=m["name"],
                    expert_id=m["expert_id"],
                    packed_module=name,
                )
                return hub_module.HubModule(backbone_copy(model, m["expert_id"]), "features"), meta

            prior = _prior(priors, m["slice"], model_dir)
            yield PlannedModule(m["module"], "feature_vector", make_expert, prior, expert=m)

        def make_packed():
            model = loader()
            meta = metadata(model, name, "packed", "features", model.feature_dim, experts=members)
            names = [m["name"] for m in members]
            return packed.PackedAdapterModule(backbone_copy(model), names), meta

        yield PlannedModule(name, "packed", make_packed)
    else:  # epn
        experts = info.get("experts")
        if not isinstance(experts, list) or len(experts) != int(info["num_classes"]):
            raise ValueError(
                f"{model_dir}/info.json: an EPN needs 'experts', one name per output "
                f"({info['num_classes']} outputs)"
            )

        def make_epn():
            model = loader()
            meta = metadata(
                model,
                name,
                "epn",
                "logits",
                info["num_classes"],
                output_activation=info.get("output_activation", "sigmoid"),
                outputs=[str(e) for e in experts],
                upstream_log_p=info.get("upstream_log_p"),  # the EPN's own prior, per output
            )
            return hub_module.HubModule(model, "logits"), meta

        yield PlannedModule(name, "epn", make_epn)


def adapter_module_name(model_name, expert_name):
    """The module name of an adapter expert: the expert's own name when it already says `adapter`
    (the training job names experts `adapter_<slice>`), else `<model name>_<expert name>`."""
    expert = slug(expert_name)
    if expert == "adapter" or expert.startswith("adapter_"):
        return expert
    return f"{slug(model_name)}_{expert}"


def legacy_adapter_module_name(model_name, expert_name):
    """The name collections published before the rename gave an adapter expert's module:
    always `<model name>_<expert name>` (`adapters_adapter_<slice>`)."""
    return f"{slug(model_name)}_{slug(expert_name)}"


def _adapter_members(info, name, model_dir):
    """The experts of an adapter model, sorted by expert id, which must be 0..E-1."""
    experts = info.get("experts")
    if not isinstance(experts, list) or not experts:
        raise ValueError(f"{model_dir}/info.json: an adapter model needs its 'experts' list")
    members = []
    for e in experts:
        if not isinstance(e, dict) or "name" not in e or "expert_id" not in e:
            raise ValueError(f"{model_dir}/info.json: each expert needs 'name' and 'expert_id'")
        members.append(
            {
                "name": str(e["name"]),
                "expert_id": int(e["expert_id"]),
                "slice": e.get("slice") or str(e["name"]),
                "image_count": e.get("image_count"),
                "module": adapter_module_name(name, e["name"]),
            }
        )
    members.sort(key=lambda m: m["expert_id"])
    if [m["expert_id"] for m in members] != list(range(len(members))):
        raise ValueError(
            f"{model_dir}/info.json: expert ids must be 0..{len(members) - 1}, got "
            f"{[m['expert_id'] for m in members]}"
        )
    return members
