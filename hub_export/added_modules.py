"""Saved modules that join a collection as they are (`hub_export.publish --module=DIR`).

An added module is any TF2 image feature-vector SavedModel: one exported by this project (an
imported BiT checkpoint, a module of another collection) or a third-party TF Hub module. Its files
are copied unchanged except its metadata, which publishing rewrites (sidecar, the in-SavedModel copy
that `get_metadata()` returns when the module has one, and its Keras archive's copy when it has one).

The spec is `DIR` or `DIR:key=value,...` with keys `name`, `kind` and `resolution`, which override
the module's metadata: e.g. `--module=/m/bit_r50x1:name=bit_m_r50x1,resolution=160`. What follows the
last `:` is read as options only when it is a comma-separated list of `key=value`, so a remote handle
(`https://...`) or a folder with a `:` in its name is taken whole. Without metadata or options, the
name is the folder's (`collection._name_from_handle`), the kind `third_party` and the resolution
unset (consumers then use 224, BiT's).
"""

import os
import re

from hub_export import expert_modules, handles, identity
from hub_export.expert_modules import PlannedModule
from hub_export.handles import CollectionError
from hub_export.metadata import read_metadata

OPTIONS = ("name", "kind", "resolution")
KINDS = (*expert_modules.KINDS, "third_party")
ROLES = ("feature_vector", "packed")  # classifiers and EPNs need the collection's own vocabulary
_NAME = re.compile(r"^[a-z0-9_-]+$")
_OPTION_LIST = re.compile(r"^\w+=[^,=]*(,\w+=[^,=]*)*$")


def parse_spec(spec):
    """`"DIR[:key=value,...]"` -> `(handle, {key: value})`; CollectionError for an unknown key, a
    bad name, kind or resolution. Values are checked here, the folder when it is planned."""
    text = os.fspath(spec)
    handle, options = text, {}
    head, sep, tail = text.rpartition(":")
    if sep and head and _OPTION_LIST.match(tail):
        handle = head
        for item in tail.split(","):
            key, _, value = item.partition("=")
            if key not in OPTIONS:
                raise CollectionError(
                    f"--module={text}: unknown option {key!r}; expected some of {OPTIONS}"
                )
            options[key] = value
    if "name" in options and not _NAME.match(options["name"]):
        raise CollectionError(
            f"--module={text}: name {options['name']!r} must be lower-case letters, digits, _ or -"
        )
    if "kind" in options and options["kind"] not in KINDS:
        raise CollectionError(f"--module={text}: kind {options['kind']!r} must be one of {KINDS}")
    if "resolution" in options:
        value = options["resolution"]
        if not value.isdigit() or int(value) < 1:
            raise CollectionError(
                f"--module={text}: resolution {value!r} must be a positive integer (pixels)"
            )
        options["resolution"] = int(value)
    return handle, options


def plan_module(spec):
    """A PlannedModule that copies the saved module of `spec` (see the module doc).

    Raises CollectionError (ModuleError for the module itself) naming the spec: a missing folder,
    a signature that is not a feature vector (or packed adapter module), a role other than those.
    """
    from hub_export import collection
    from hub_export.collection import _name_from_handle

    handle, options = parse_spec(spec)
    module_dir = collection.resolve_handle(handle, name=os.fspath(spec))
    try:
        metadata = read_metadata(module_dir) or {}
    except ValueError as error:
        raise CollectionError(f"--module={spec}: {error}") from None
    role = metadata.get("role", "feature_vector")
    if role not in ROLES:
        raise CollectionError(
            f"--module={spec}: a {role} module cannot be added on its own (roles {ROLES}); "
            "publish classifiers and EPNs from their work directory"
        )
    handles.check_signature(module_dir, role, os.fspath(spec))
    name = options.get("name") or expert_modules.slug(
        metadata.get("name") or _name_from_handle(handle).replace("/", "_")
    )
    kind = options.get("kind") or metadata.get("kind") or "third_party"
    if kind not in KINDS:
        raise CollectionError(f"--module={spec}: metadata kind {kind!r} is not one of {KINDS}")
    resolution = options.get("resolution", metadata.get("resolution"))
    source_metadata = dict(metadata)

    def make():
        result = dict(source_metadata)
        for key in ("version", "validation"):
            result.pop(key, None)
        result.update(name=name, kind=kind, role=role)
        result.setdefault("slice", None)
        result.setdefault("input_range", [0.0, 1.0])
        result.setdefault("output", "features")
        if resolution is not None:
            result["resolution"] = int(resolution)
        if not source_metadata:
            result["source"] = {"module": handle}
        return None, result

    fingerprint = identity.source_fingerprint(
        identity.module_identity(module_dir),  # weights fingerprint, else the file checksum
        {"added_module": source_metadata, "options": options},
        None,
        None,
        name,
        role,
    )
    return PlannedModule(
        name,
        role,
        make,
        source_fingerprint=fingerprint,
        source=os.fspath(spec),
        copy_from=module_dir,
    )


def probe_output_dim(module_dir, resolution):
    """The last output axis of a feature-vector module, from one `[1, r, r, 3]` batch (for modules
    whose metadata does not give `output_dim`)."""
    import tensorflow as tf

    module = tf.saved_model.load(module_dir)
    out = module(tf.zeros([1, resolution, resolution, 3]))
    return int(out.shape[-1])
