"""Reading module handles: resolving them to local directories, checksums, and cheap signature checks.

A handle is a local module directory or a remote handle that `tensorflow_hub` resolves (downloading
when online, or from `TFHUB_CACHE_DIR` when the module was cached before). A local module has one
handle syntax: a plain path or a `file://` URL, which `local_handle` turns into the plain absolute
path, so that embedding, hashing, validation and the fine-tunability check all see one path.
A resolved handle is a module folder (`module_folder`): it holds `saved_model.pb` and no symbolic
link. Signatures are checked by reading `saved_model.pb` only, so a pool of many modules can be
checked without loading any of them.
"""

import hashlib
import os

from bit_experts import atomic_files


class CollectionError(ValueError):
    """A collection, manifest, handle list or module that cannot be used; the message names it."""


class ModuleError(CollectionError):
    """A module that is missing, unreadable or has the wrong signature; the message names it."""


# What each role's module must expose at its root (see docs/hub_modules.md).
_REUSABLE = ("variables", "trainable_variables", "regularization_losses")
REQUIRED_ATTRIBUTES = {
    "feature_vector": ("__call__", *_REUSABLE),
    "classifier": ("__call__", *_REUSABLE),
    "epn": ("__call__", *_REUSABLE),
    "packed": ("experts", "call_expert", *_REUSABLE),
}


def is_remote(handle):
    """True for handles `tensorflow_hub` downloads (URLs, gs://), False for local paths, `file://`
    URLs included (`local_handle`)."""
    return "://" in handle and not handle.lower().startswith("file://")


def local_handle(handle, label=None):
    """The one form of `handle`: a `file://` URL as its plain local path (`file:///a/m` ->
    `/a/m`), `~` expanded; a plain path or a remote handle as it is. ModuleError naming `label`
    (default: the handle) for a `file://` URL that names no absolute path."""
    try:
        local = atomic_files.normalize(handle)
    except ValueError as error:
        raise ModuleError(f"module {label or handle!r}: {error}") from None
    return local if is_remote(local) else os.path.expanduser(local)


def resolve(handle, name=None):
    """The local module folder of `handle` (`module_folder`); ModuleError naming it if it cannot be
    found or fetched, or is not a module folder."""
    label = name or handle
    handle = local_handle(handle, label)
    if not is_remote(handle):
        path = os.path.abspath(handle)
        if not os.path.isdir(path):
            what = "is a file, not a module folder" if os.path.exists(path) else "does not exist"
            raise ModuleError(f"module {label!r}: {path} {what}")
        return module_folder(path, label)
    import tensorflow_hub as hub  # Imported lazily: it is only needed for remote handles.

    try:
        path = hub.resolve(handle)
    except Exception as error:  # any resolver failure means "not available here".
        raise ModuleError(
            f"module {label!r}: cannot resolve remote handle {handle!r} (offline and not in "
            f"TFHUB_CACHE_DIR={os.environ.get('TFHUB_CACHE_DIR', '<unset>')}?): "
            f"{type(error).__name__}: {error}"
        ) from None
    return module_folder(path, label)


def module_folder(module_dir, name=None):
    """`module_dir` if it is a module folder that can be read without leaving it: it holds
    `saved_model.pb`, and no symbolic link anywhere under it (never followed: docs/hub_modules.md,
    "Trust"). Only folder listings are read, so a folder that is no module (`/etc`) is refused
    before any of its files is opened. Raises ModuleError naming the module (`name`, default the
    folder) otherwise."""
    label = name or module_dir
    if not atomic_files.isfile(os.path.join(module_dir, "saved_model.pb")):
        _no_saved_model(module_dir, label)
    module_files(module_dir, label)
    return module_dir


def module_files(module_dir, name=None):
    """Sorted relative POSIX paths of every regular file under `module_dir` (a local folder or a
    `tf.io.gfile` URL); ModuleError naming the module (`name`, default the folder) for a symbolic
    link under it."""
    try:
        return atomic_files.walk_files(module_dir)
    except ValueError as error:
        raise ModuleError(f"module {name or module_dir!r}: {error}") from None


def module_sha256(module_dir):
    """SHA-256 over a module's files: for each file in sorted relative-path order, the hash takes
    `path`, a NUL byte, the hex SHA-256 of its contents and a newline. Directories themselves and
    file times do not count, so a copied module keeps its checksum."""
    total = hashlib.sha256()
    for rel in module_files(module_dir):
        digest = hashlib.sha256()
        with atomic_files.open_file(os.path.join(module_dir, rel), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        total.update(rel.encode("utf-8") + b"\0" + digest.hexdigest().encode("ascii") + b"\n")
    return total.hexdigest()


def _no_saved_model(module_dir, label):
    """Raises the ModuleError for a folder without `saved_model.pb`."""
    if atomic_files.isfile(os.path.join(module_dir, "tfhub_module.pb")):
        raise ModuleError(
            f"module {label!r}: {module_dir} is in the TF1 Hub format; a TF2 SavedModel is needed"
        )
    raise ModuleError(
        f"module {label!r}: {module_dir} has no saved_model.pb (a module folder must hold one)"
    )


def _read_saved_model(module_dir, label):
    pb = os.path.join(module_dir, "saved_model.pb")
    if not atomic_files.isfile(pb):
        _no_saved_model(module_dir, label)
    from tensorflow.core.protobuf import saved_model_pb2  # here: it imports TensorFlow

    proto = saved_model_pb2.SavedModel()
    try:
        with atomic_files.open_file(pb, "rb") as f:
            proto.ParseFromString(f.read())
    except Exception as error:  # protobuf raises DecodeError and others.
        raise ModuleError(f"module {label!r}: {pb} is corrupt ({error})") from None
    if not proto.meta_graphs or not proto.meta_graphs[0].object_graph_def.nodes:
        raise ModuleError(f"module {label!r}: {pb} holds no object graph (not a TF2 SavedModel)")
    return proto.meta_graphs[0]


def _tensor_specs(value):
    """Every TensorSpec in a StructuredValue, in order."""
    kind = value.WhichOneof("kind")
    if kind == "tensor_spec_value":
        return [value.tensor_spec_value]
    if kind in ("tuple_value", "list_value"):
        return [s for v in getattr(value, kind).values for s in _tensor_specs(v)]
    if kind == "dict_value":
        return [
            s
            for k in sorted(value.dict_value.fields)
            for s in _tensor_specs(value.dict_value.fields[k])
        ]
    return []


def _is_image_spec(spec):
    from tensorflow.core.framework import types_pb2

    dims = [d.size for d in spec.shape.dim]
    return (
        spec.dtype == types_pb2.DT_FLOAT
        and not spec.shape.unknown_rank
        and len(dims) == 4
        and dims[3] in (-1, 3)
    )


def check_signature(module_dir, role="feature_vector", name=None):
    """Checks, from `saved_model.pb` alone, that the module has what `role` needs: the root
    attributes of REQUIRED_ATTRIBUTES[role] and, for `__call__`, a traced function whose first input
    is float32 `[N, H, W, 3]`. Raises ModuleError naming the module otherwise."""
    label = name or module_dir
    if role not in REQUIRED_ATTRIBUTES:
        raise ValueError(f"role must be one of {sorted(REQUIRED_ATTRIBUTES)}, got {role!r}")
    meta_graph = _read_saved_model(module_dir, label)
    graph = meta_graph.object_graph_def
    children = {c.local_name: c.node_id for c in graph.nodes[0].children}
    missing = [a for a in REQUIRED_ATTRIBUTES[role] if a not in children]
    if missing:
        raise ModuleError(
            f"module {label!r}: wrong signature for a {role} module, missing {missing} "
            f"(has {sorted(children)})"
        )
    if "__call__" in REQUIRED_ATTRIBUTES[role]:
        node = graph.nodes[children["__call__"]]
        if node.WhichOneof("kind") != "function" or not node.function.concrete_functions:
            raise ModuleError(f"module {label!r}: __call__ is not a traced tf.function")
        for fn_name in node.function.concrete_functions:
            fn = graph.concrete_functions[fn_name]
            specs = _tensor_specs(fn.canonicalized_input_signature)
            if specs and _is_image_spec(specs[0]):
                break
        else:
            raise ModuleError(
                f"module {label!r}: __call__ does not take float32 images [N, H, W, 3]"
            )
