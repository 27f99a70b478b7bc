"""Reading module handles: resolving them to local directories, checksums, and cheap signature
checks.

A handle is one of (docs/hub_modules.md, "Handles"):

  /path/to/module  or  file:///path/to/module     a local module folder (`local_handle`: one form)
  kaggle:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION   Kaggle Models, through kagglehub (optional): its
  https://www.kaggle.com/models/OWNER/...          cache without a network, else a download
  https://tfhub.dev/...  and other URLs            resolved by `tensorflow_hub` (optional: online,
                                                   or from `TFHUB_CACHE_DIR`)
  COLLECTION:NAME[/VERSION]                        a module of a local collection by its name:
                                                   `collection.resolve_handle` (it reads manifests)

`resolve` turns every form but the last into a module folder (`module_folder`): it holds
`saved_model.pb` and no symbolic link. Signatures are checked by reading `saved_model.pb` only, so a
pool of many modules can be checked without loading any of them.
"""

import hashlib
import os
import re

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
_KAGGLE_URL = re.compile(r"^https?://(www\.)?kaggle\.com/models/", re.I)
_KAGGLE_LONG = ["frameworks", "variations", "versions"]  # the browser's URL: .../frameworks/F/...


def is_kaggle(handle):
    """True for a Kaggle Models handle: `kaggle:...` or a `kaggle.com/models/...` URL."""
    return handle.lower().startswith("kaggle:") or bool(_KAGGLE_URL.match(handle))


def is_remote(handle):
    """True for handles fetched from elsewhere (Kaggle handles, URLs, gs://), False for local
    paths, `file://` URLs included (`local_handle`)."""
    return is_kaggle(handle) or ("://" in handle and not handle.lower().startswith("file://"))


def split_name(handle):
    """`(collection, name)` for a `COLLECTION:NAME` handle (the part before the last `:` an
    existing local collection folder or manifest file), else None: a path that exists, even with a
    `:` in it, is a path."""
    if is_remote(handle) or ":" not in handle or os.path.exists(handle):
        return None
    spec, _, name = handle.rpartition(":")
    spec = os.path.expanduser(spec)
    if not name or not (os.path.isdir(spec) or os.path.isfile(spec)):
        return None
    return spec, name


def kaggle_slug(handle):
    """`OWNER/MODEL/FRAMEWORK/VARIATION[/VERSION]` of a Kaggle handle (`kaggle:...`, or a
    kaggle.com/models URL, also in its `/frameworks/F/variations/V/versions/N` form); ModuleError
    naming it for any other shape."""
    text = handle[len("kaggle:") :] if handle.lower().startswith("kaggle:") else handle
    parts = _KAGGLE_URL.sub("", text).strip("/").split("/")
    if len(parts) in (6, 8) and parts[2::2] == _KAGGLE_LONG[: len(parts) // 2 - 1]:
        parts = parts[:2] + parts[3::2]
    if len(parts) not in (4, 5) or not all(parts) or (len(parts) == 5 and not parts[4].isdigit()):
        raise ModuleError(
            f"module {handle!r}: not a Kaggle Models handle; expected "
            "kaggle:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION"
        )
    return "/".join(parts)


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
    """The local module folder of `handle` (a path, a Kaggle or a TF Hub handle; a collection name
    is `collection.resolve_handle`'s); ModuleError naming it (`name`, default the handle) if it
    cannot be found or fetched, or is not a module folder."""
    label = name or handle
    handle = local_handle(handle, label)
    if is_kaggle(handle):
        return module_folder(_resolve_kaggle(handle, label), label)
    if not is_remote(handle):
        path = os.path.abspath(handle)
        if not os.path.isdir(path):
            what = "is a file, not a module folder" if os.path.exists(path) else "does not exist"
            raise ModuleError(f"module {label!r}: {path} {what}")
        return module_folder(path, label)
    try:
        import tensorflow_hub as hub  # Optional: only remote TF Hub handles need it.
    except ImportError:
        raise ModuleError(
            f"module {label!r}: resolving remote handle {handle!r} needs tensorflow_hub (pip "
            "install tensorflow-hub), or name the module by its kaggle: handle"
        ) from None
    try:
        path = hub.resolve(handle)
    except Exception as error:  # any resolver failure means "not available here".
        raise ModuleError(
            f"module {label!r}: cannot resolve remote handle {handle!r} (offline and not in "
            f"TFHUB_CACHE_DIR={os.environ.get('TFHUB_CACHE_DIR', '<unset>')}?): "
            f"{type(error).__name__}: {error}"
        ) from None
    return module_folder(path, label)


def _resolve_kaggle(handle, label):
    """`kagglehub.model_download` of the Kaggle handle: a version in kagglehub's cache without a
    network, else downloaded. One-line ModuleError when kagglehub is missing or it cannot be
    fetched; for a handle without a version, the line says to pin one and lists the cached ones."""
    slug = kaggle_slug(handle)
    try:
        import kagglehub  # Optional: only Kaggle handles need it.
        from kagglehub import cache
        from kagglehub.handle import parse_model_handle
    except ImportError:
        raise ModuleError(
            f"module {label!r}: Kaggle handles need kagglehub (pip install kagglehub)"
        ) from None
    try:
        return kagglehub.model_download(slug)
    except Exception as error:  # noqa: BLE001 - requests, kagglehub and OS errors alike
        why = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    h = parse_model_handle(slug)
    if h.version is not None:
        folder = os.path.dirname(cache.get_cached_path(h))
        raise ModuleError(
            f"module {label!r}: not in the kagglehub cache ({folder}) and cannot be downloaded "
            f"({why})"
        )
    folder = os.path.dirname(cache.get_cached_path(h.with_version(1)))
    names = os.listdir(folder) if os.path.isdir(folder) else []
    cached = sorted(int(n[: -len(".complete")]) for n in names if re.fullmatch(r"\d+\.complete", n))
    raise ModuleError(
        f"module {label!r}: names no version, and the latest cannot be looked up ({why}); pin one: "
        f"kaggle:{slug}/VERSION (in the kagglehub cache: {cached or 'none'})"
    )


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
    """Raises the ModuleError for a folder without `saved_model.pb`: a TF1 Hub module, a module's
    folder of versions (`COLLECTION/<name>` without `/<version>`), or none."""
    if atomic_files.isfile(os.path.join(module_dir, "tfhub_module.pb")):
        raise ModuleError(
            f"module {label!r}: {module_dir} is in the TF1 Hub format; a TF2 SavedModel is needed"
        )
    names = atomic_files.listdir(module_dir) if atomic_files.isdir(module_dir) else []
    versions = sorted(
        int(v)
        for v in names
        if v.isdigit() and atomic_files.isfile(os.path.join(module_dir, v, "saved_model.pb"))
    )
    if versions:
        raise ModuleError(
            f"module {label!r}: {module_dir} holds versions {versions} of a module, not a module: "
            f"add the version ({os.path.join(module_dir, str(versions[-1]))})"
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
