"""Published collections: reading a pool of modules, and the manifest and upstream files behind it.

A collection directory (layout and manifest schema in docs/hub_modules.md):

  COLLECTION/
    manifest.json                 every listed module with its metadata and SHA-256
    README.md                     the collection page (tfhub.dev format)
    label_names-<sha8>.json       upstream label vocabulary (content-addressed, so a rewrite is atomic)
    label_priors-<sha8>.npz       module name -> label prior float32 [L], for experts with a slice
    <name>/<version>/             one TF Hub module (SavedModel + metadata + doc.md)
    .publish.lock, .staging-*/    while hub_export.publish writes (collection_lock, publish)

Wherever a pool is consumed, `resolve_pool` accepts the collection directory, its manifest, or a text
file with one module handle per line (any form of `resolve_handle`: a path, `COLLECTION:NAME`, a
Kaggle or a TF Hub handle). Every path a manifest gives is read only inside the collection
(`inside`: no `..`, absolute path, URL or symbolic link out of it), and every module folder only
without following a link (`handles.module_folder`).
"""

import dataclasses
import hashlib
import io
import json
import os
import re
import warnings

import numpy as np

from bit_experts import atomic_files
from hub_export import handles
from hub_export.handles import CollectionError, ModuleError
from hub_export.metadata import read_metadata

__all__ = [
    "CollectionError",
    "ModuleError",
    "ModuleEntry",
    "resolve_pool",
    "feature_extractors",
    "find",
    "named_module",
    "resolve_handle",
    "load_module",
    "label_priors",
    "label_names",
]

MANIFEST_FILE = "manifest.json"
PAGE_FILE = "README.md"
DOC_FILE = "doc.md"
FORMAT = "bit_experts.collection"
FORMAT_VERSION = 1
ROLES = ("feature_vector", "classifier", "epn", "packed")
_ENTRY_KEYS = ("name", "version", "path", "kind", "role", "sha256", "metadata")


@dataclasses.dataclass(frozen=True)
class ModuleEntry:
    """One module of a pool.

    Attributes:
      handle: what `hub.load` / `hub.KerasLayer` takes: a local path or a remote handle.
      name: unique within the pool (the metadata name, or one derived from the handle).
      kind: "baseline", "full", "adapter", "epn", or "third_party" for modules without our metadata.
      role: "feature_vector", "classifier", "epn" or "packed".
      metadata: the module's metadata dict ({} for third-party modules).
      sha256: the module's checksum (handles.module_sha256), or None when not computed.
      version: the collection version, or None outside a collection.
      path: the local directory the handle resolves to.
      aliases: other names `find` accepts for it: an adapter expert's name in collections published
        before the rename (`adapters_adapter_<slice>`), or its current name (`adapter_<slice>`) in
        such an old collection.
    """

    handle: str
    name: str
    kind: str
    role: str
    metadata: dict
    sha256: str | None
    version: int | None = None
    path: str | None = None
    aliases: tuple = ()


# --- reading -----------------------------------------------------------------------------------


def resolve_pool(spec, verify_checksums=True, check_signatures=True, all_versions=False):
    """The modules of `spec`, in collection order, as [ModuleEntry].

    Args:
      spec: a collection directory, its manifest.json, or a text file with one handle per line
        (blank lines and `#` comments skipped; relative paths are relative to the file).
      verify_checksums: compare each manifest module's files with its SHA-256 (for a handle list,
        compute the checksums instead, so that they can key caches).
      check_signatures: check each module's saved_model.pb for the entry points of its role.
      all_versions: list every version of a module, not only the latest.

    Raises CollectionError (or its subclass ModuleError) naming the module or handle at fault.
    """
    spec = os.fspath(spec)
    if atomic_files.isdir(spec):
        manifest_path = manifest_file(spec)
        if not atomic_files.isfile(manifest_path):
            raise CollectionError(
                f"{spec} has no {MANIFEST_FILE}: expected a collection directory, a manifest or "
                "a text file of module handles"
            )
        pool = _pool_from_manifest(manifest_path, verify_checksums, check_signatures, all_versions)
    elif not atomic_files.isfile(spec):
        raise CollectionError(f"collection {spec!r} does not exist")
    elif _looks_like_json(spec):
        pool = _pool_from_manifest(spec, verify_checksums, check_signatures, all_versions)
    else:
        pool = _pool_from_handle_list(spec, verify_checksums, check_signatures)
    note = baselines_note(pool)
    if note:
        warnings.warn(f"collection {spec}: {note}", BaselineWarning, stacklevel=2)
    return pool


class BaselineWarning(UserWarning):
    """A pool lists more than one baseline feature-vector module (`baselines_note`)."""


def baselines_note(entries):
    """One line when `entries` (pool or manifest entries, latest versions) list more than one
    baseline feature-vector module (`kind: baseline`), else None."""
    field = lambda e, key: e.get(key) if isinstance(e, dict) else getattr(e, key)
    names = [
        field(e, "name")
        for e in entries
        if field(e, "kind") == "baseline" and field(e, "role") == "feature_vector"
    ]
    if len(names) < 2:
        return None
    return (
        f"{len(names)} baseline modules ({', '.join(names)}): the baseline selector, the "
        f"fallback and B's fine-tunes use the first, {names[0]}; a pool should hold one"
    )


def feature_extractors(pool):
    """The entries with role "feature_vector": the experts to rank."""
    return [e for e in pool if e.role == "feature_vector"]


def find(pool, role=None, name=None):
    """The first entry with `role` and `name` (each when given), or None. An exact name wins over
    an alias (`ModuleEntry.aliases`). ValueError for a role not in ROLES."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES} or None, got {role!r}")
    matches = [e for e in pool if role is None or e.role == role]
    if name is None:
        return matches[0] if matches else None
    for e in matches:
        if e.name == name:
            return e
    for e in matches:
        if name in e.aliases:
            return e
    return None


def named_module(spec, name, label=None):
    """The ModuleEntry of the module called `name` in the local collection `spec` (its folder or
    manifest): its latest version, or `NAME/VERSION`. Reads the manifest and that module's folder
    listing only (no checksum: as for a module named by its path). ModuleError naming `label`
    (default `spec:name`) for an unknown name, listing the names, or an unknown version, listing
    the versions."""
    label = label or f"{spec}:{name}"
    base, _, version = name.rpartition("/") if re.fullmatch(r".+/\d+", name) else (name, "", "")
    manifest_path = manifest_file(spec) if atomic_files.isdir(spec) else spec
    if not atomic_files.isfile(manifest_path):
        raise ModuleError(f"module {label!r}: {spec} is no collection (no {MANIFEST_FILE})")
    manifest = load_manifest(manifest_path)
    entries = [
        e
        for e in manifest["modules"]
        if e["name"] == base or base in name_aliases(e["name"], e["metadata"])
    ]
    if not entries:
        names = sorted({e["name"] for e in manifest["modules"]})
        raise ModuleError(f"module {label!r}: no module named {base!r} in {spec}; it lists {names}")
    versions = sorted(int(e["version"]) for e in entries)
    if version and int(version) not in versions:
        raise ModuleError(
            f"module {label!r}: {spec} lists versions {versions} of {base!r}, not {int(version)}"
        )
    want = int(version) if version else versions[-1]
    entry = next(e for e in entries if int(e["version"]) == want)
    root = os.path.dirname(atomic_files.abspath(manifest_path))
    module_dir = listed_module_dir(root, entry, manifest_path)
    if not atomic_files.isdir(module_dir):
        raise ModuleError(
            f"module {label!r}: listed in {manifest_path} but {module_dir} is missing"
        )
    return _entry(entry, module_dir)


def resolve_handle(handle, name=None):
    """The local module folder of any handle (docs/hub_modules.md, "Handles"): `COLLECTION:NAME`
    and `COLLECTION:NAME/VERSION` (`named_module`), else `handles.resolve` (a path, a Kaggle or a
    TF Hub handle). ModuleError, one line naming it (`name`, default the handle), otherwise."""
    named = handles.split_name(handles.local_handle(handle, name))
    if named is None:
        return handles.resolve(handle, name)
    label = name or handle
    return handles.module_folder(named_module(*named, label=label).path, label)


def load_module(handle, name=None):
    """The module at `handle` (any form of `resolve_handle`) loaded with `tf.saved_model.load`,
    what `hub.load` does for a TF2 module, without `tensorflow_hub`. ModuleError when it cannot be
    resolved; a module that fails to load raises TensorFlow's error."""
    import tensorflow as tf

    return tf.saved_model.load(resolve_handle(handle, name))


def name_aliases(name, metadata):
    """The other names of a module (see `ModuleEntry.aliases`): for an adapter expert, its current
    and its legacy name, less `name`."""
    from hub_export import expert_modules

    metadata = metadata or {}
    packed, expert = metadata.get("packed_module"), metadata.get("expert")
    if metadata.get("kind") != "adapter" or not packed or not expert:
        return ()
    try:
        names = {
            expert_modules.adapter_module_name(packed, expert),
            expert_modules.legacy_adapter_module_name(packed, expert),
        }
    except ValueError:
        return ()
    return tuple(sorted(names - {name}))


def label_names(spec):
    """The upstream label vocabulary of a collection (directory or manifest)."""
    manifest, root = _load_manifest_of(spec)
    ref = _upstream_ref(manifest, "label_names", spec)
    data = _read_checked(root, ref, spec)
    try:
        names = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CollectionError(
            f"collection {spec!r}: {ref['file']} is not valid JSON ({error})"
        ) from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CollectionError(f"collection {spec!r}: {ref['file']} is not a list of label names")
    return names


def label_priors(spec):
    """Module name -> label prior float32 [L] for the listed experts that have a slice."""
    manifest, root = _load_manifest_of(spec)
    ref = _upstream_ref(manifest, "label_priors", spec)
    data = _read_checked(root, ref, spec)
    try:
        with np.load(io.BytesIO(data)) as npz:
            priors = {k: npz[k].astype(np.float32) for k in npz.files}
    except Exception as error:  # np.load raises several types for bad data.
        raise CollectionError(
            f"collection {spec!r}: {ref['file']} is unreadable ({error})"
        ) from None
    listed = {e["name"] for e in manifest["modules"]}
    return {k: v for k, v in priors.items() if k in listed}


def _looks_like_json(path):
    if path.endswith(".json"):
        return True
    with atomic_files.open_file(path, "rb") as f:
        return f.read(64).lstrip().startswith(b"{")


def load_manifest(path):
    """Parses and checks a manifest file; CollectionError if it is malformed."""
    try:
        manifest = json.loads(atomic_files.read_bytes(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CollectionError(f"manifest {path}: unreadable or not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CollectionError(f"manifest {path}: not a {FORMAT} manifest (no 'format' key)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CollectionError(
            f"manifest {path}: format_version {manifest.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    modules = manifest.get("modules")
    if not isinstance(modules, list):
        raise CollectionError(f"manifest {path}: 'modules' must be a list")
    for i, e in enumerate(modules):
        missing = [k for k in _ENTRY_KEYS if not isinstance(e, dict) or k not in e]
        if missing:
            label = e.get("name", f"#{i}") if isinstance(e, dict) else f"#{i}"
            raise CollectionError(f"manifest {path}: module {label!r} is missing {missing}")
        if e["role"] not in ROLES:
            raise CollectionError(
                f"manifest {path}: module {e['name']!r} has role {e['role']!r}, expected one of "
                f"{ROLES}"
            )
        if not atomic_files.plain_relative(e["path"]):
            raise CollectionError(
                f"manifest {path}: module {e['name']!r} path {e['path']!r} leaves the collection"
            )
    upstream = manifest.get("upstream")
    if upstream is not None and not isinstance(upstream, dict):
        raise CollectionError(f"manifest {path}: 'upstream' must be an object or null")
    for key, ref in (upstream or {}).items():
        if isinstance(ref, dict) and "file" in ref and not atomic_files.plain_relative(ref["file"]):
            raise CollectionError(
                f"manifest {path}: upstream {key} file {ref['file']!r} leaves the collection "
                "(expected a file name inside it)"
            )
    return manifest


def manifest_file(collection_dir):
    """The path of `collection_dir`'s manifest; CollectionError when it is a symbolic link out of
    the collection."""
    return inside(collection_dir, MANIFEST_FILE, f"collection {collection_dir}:")


def inside(root, relative, what, error=CollectionError):
    """`root`/`relative` when it stays inside `root` (`atomic_files.confined`: no `..`, absolute
    path, URL or symbolic link out of it); `error` (a CollectionError) naming `what` and
    `relative` otherwise."""
    try:
        return atomic_files.confined(root, relative, what)
    except ValueError as escape:
        raise error(str(escape)) from None


def _load_manifest_of(spec):
    spec = os.fspath(spec)
    path = manifest_file(spec) if atomic_files.isdir(spec) else spec
    if not atomic_files.isfile(path):
        raise CollectionError(f"collection {spec!r}: {path} does not exist")
    return load_manifest(path), os.path.dirname(atomic_files.abspath(path))


def _upstream_ref(manifest, key, spec):
    ref = (manifest.get("upstream") or {}).get(key)
    if not isinstance(ref, dict) or "file" not in ref or "sha256" not in ref:
        raise CollectionError(f"collection {spec!r} lists no {key}")
    return ref


def _read_checked(root, ref, spec):
    path = inside(root, ref["file"], f"collection {spec!r}: file")
    if not atomic_files.isfile(path):
        raise CollectionError(f"collection {spec!r}: {ref['file']} is missing")
    data = atomic_files.read_bytes(path)
    if hashlib.sha256(data).hexdigest() != ref["sha256"]:
        raise CollectionError(
            f"collection {spec!r}: checksum mismatch for {ref['file']} (modified or truncated)"
        )
    return data


def latest_only(entries):
    """The latest version of each module of manifest `entries`, in collection order."""
    latest = {}
    for e in entries:
        if e["name"] not in latest or e["version"] > latest[e["name"]]["version"]:
            latest[e["name"]] = e
    # Keep collection order: a module appears where it was first listed.
    seen, out = set(), []
    for e in entries:
        if e["name"] not in seen:
            seen.add(e["name"])
            out.append(latest[e["name"]])
    return out


def _pool_from_manifest(path, verify_checksums, check_signatures, all_versions):
    manifest = load_manifest(path)
    root = os.path.dirname(atomic_files.abspath(path))
    entries = manifest["modules"] if all_versions else latest_only(manifest["modules"])
    pool = []
    for e in entries:
        label = f"{e['name']}/{e['version']}"
        module_dir = listed_module_dir(root, e, path)
        if not atomic_files.isdir(module_dir):
            raise ModuleError(f"module {label!r}: listed in {path} but {module_dir} is missing")
        handles.module_folder(module_dir, label)  # no link followed, whatever the checks asked
        if verify_checksums and handles.module_sha256(module_dir) != e["sha256"]:
            raise ModuleError(
                f"module {label!r}: checksum mismatch in {module_dir} (files modified, truncated "
                "or missing since it was published)"
            )
        if check_signatures:
            handles.check_signature(module_dir, e["role"], label)
        pool.append(_entry(e, module_dir))
    return pool


def _entry(e, module_dir):
    """The ModuleEntry of manifest entry `e`, whose folder is `module_dir`."""
    return ModuleEntry(
        handle=module_dir,
        name=e["name"],
        kind=e["kind"],
        role=e["role"],
        metadata=dict(e["metadata"]),
        sha256=e["sha256"],
        version=int(e["version"]),
        path=module_dir,
        aliases=name_aliases(e["name"], e["metadata"]),
    )


def listed_module_dir(root, entry, manifest_path):
    """The folder of manifest `entry` in the collection at `root`; ModuleError naming the module
    when its path leads out of the collection (`inside`)."""
    label = f"{entry['name']}/{entry['version']}"
    return inside(
        root, entry["path"], f"manifest {manifest_path}: module {label!r} path", ModuleError
    )


def _name_from_handle(handle):
    """`.../expert_a/3` -> `expert_a`; `https://tfhub.dev/google/bit/m-r50x1/1` -> `google/bit/m-r50x1`;
    `kaggle:google/bit/tensorFlow2/m-r50x1/1` -> `google/bit/tensorFlow2/m-r50x1`; `C:expert_a/2`
    -> `expert_a`."""
    if handles.is_kaggle(handle):
        text = handles.kaggle_slug(handle)
    elif handles.split_name(handle):
        text = handles.split_name(handle)[1]
    elif handles.is_remote(handle):
        text = handle.split("://", 1)[1]
        text = text.split("/", 1)[1] if "/" in text else text  # Drop the host.
    else:
        text = handle
    parts = [p for p in text.replace(os.sep, "/").split("/") if p]
    if len(parts) > 1 and parts[-1].isdigit():
        parts = parts[:-1]
    return "/".join(parts) if handles.is_remote(handle) else parts[-1]


def _pool_from_handle_list(path, verify_checksums, check_signatures):
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise CollectionError(f"{path}: not a text file of module handles") from None
    pool, names = [], {}
    for number, line in enumerate(lines, 1):
        handle = line.split(" #", 1)[
            0
        ].strip()  # `handle  # comment`; URLs keep their '#'-free form.
        if not handle or handle.startswith("#"):
            continue
        try:
            handle = handles.local_handle(handle)  # file:///a/m -> /a/m: one form everywhere
            if not handles.is_remote(handle) and not os.path.isabs(handle):
                handle = os.path.normpath(os.path.join(base, handle))
            module_dir = resolve_handle(handle)  # a module folder: refused before any hashing
        except ModuleError as error:
            raise ModuleError(f"{path}:{number}: {error}") from None
        metadata = read_metadata(module_dir) or {}
        name = str(metadata.get("name") or _name_from_handle(handle))
        if name in names:
            raise CollectionError(
                f"{path}:{number}: module name {name!r} of {handle!r} is already used by "
                f"{names[name]!r} (line names must be unique)"
            )
        names[name] = handle
        role = metadata.get("role", "feature_vector")
        if check_signatures:
            handles.check_signature(module_dir, role, name)
        pool.append(
            ModuleEntry(
                handle=handle,
                name=name,
                kind=metadata.get("kind", "third_party") if metadata else "third_party",
                role=role,
                metadata=metadata,
                sha256=handles.module_sha256(module_dir) if verify_checksums else None,
                version=metadata.get("version"),
                path=module_dir,
                aliases=name_aliases(name, metadata),
            )
        )
    if not pool:
        raise CollectionError(f"{path}: no module handles in the file")
    return pool


# --- writing (used by hub_export.publish) -------------------------------------------------------


# Every collection file is written atomically (the shared helper, under the name publish uses): by
# rename locally, in one object write on a `tf.io.gfile` URL (docs/hub_modules.md, "Commit protocol").
write_bytes_atomic = atomic_files.write_bytes


def empty_manifest(name, publisher):
    """A manifest listing nothing yet."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": 1,
        "publisher": publisher,
        "page": PAGE_FILE,
        "upstream": None,
        "modules": [],
    }


def collection_version(manifest):
    """The collection's version (manifest `version`): 1 for its first publish, raised by one by
    every later publish run that lists a module; 1 for manifests written before it existed."""
    return int(manifest.get("version") or 1)


def write_manifest(collection_dir, manifest):
    """Writes manifest.json atomically."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(os.path.join(collection_dir, MANIFEST_FILE), text.encode("utf-8"))


def write_content_addressed(collection_dir, stem, suffix, data):
    """Writes `data` as `<stem>-<sha8><suffix>` (atomically) and returns its manifest reference."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{digest[:8]}{suffix}"
    path = os.path.join(collection_dir, name)
    if (  # a symbolic link there is replaced, never read: the manifest must name a file inside
        atomic_files.islink(path)
        or not atomic_files.isfile(path)
        or hashlib.sha256(atomic_files.read_bytes(path)).hexdigest() != digest
    ):
        write_bytes_atomic(path, data)
    return {"file": name, "sha256": digest}


def priors_bytes(priors):
    """The .npz bytes of a name -> prior dict (keys sorted, so equal dicts give equal bytes)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(priors[k], np.float32) for k in sorted(priors)})
    return buffer.getvalue()
