r"""Publishes trained models and saved modules as a collection of TF Hub modules.

    python -m hub_export.publish [--workdir=W ...] [--module=DIR[:name=N,kind=K,resolution=R] ...] \
        --collection_dir=C [--rename=OLD[@K]:NEW ...] [--version=N] [--overwrite] \
        [--skip_validation] [--only=name,...] [--license=TEXT] [--citation=TEXT]

Every module is saved (a work directory's model) or copied (an added `--module`), given its Keras 3
archive (`keras_artifact`), and validated in a staging folder inside C, then, holding C's lock file,
moved to C/<name>/<version> and listed in the re-read C/manifest.json (written atomically): a killed
publish never lists a half-written module, and concurrent publishers into one collection merge.
Publishing is resumable: a rerun removes what killed publishers left and skips every module already
listed from the same source. Publishing into an existing collection adds to it. Flags and the
protocol: docs/hub_modules.md.
"""

import errno
import functools
import os
import shutil
import socket
import sys

from absl import app, flags

from bit_experts import atomic_files, cli, lazy_api, locks
from hub_export import (
    added_modules,
    collection,
    collection_lock,
    doc_pages,
    expert_modules,
    handles,
    identity,
    keras_artifact,
    validate,
)
from hub_export.collection import CollectionError
from hub_export.metadata import metadata_asset_path, write_metadata

hub_module = lazy_api.module("hub_export.module")  # TensorFlow: imported when a module is saved


def _define_flags():
    """Defines the command-line flags; only when run as a program, so that importing this module
    next to other entry points (which define flags such as --overwrite too) never clashes."""
    return {
        "workdir": flags.DEFINE_multi_string(
            "workdir", None, "Training work directory (repeatable)."
        ),
        "module": flags.DEFINE_multi_string(
            "module",
            None,
            "Saved module folder to add, DIR or DIR:name=N,kind=K,resolution=R (repeatable).",
        ),
        "rename": flags.DEFINE_multi_string(
            "rename",
            None,
            "OLD:NEW, or OLD@K:NEW for the K-th source (1-based) planning OLD (repeatable).",
        ),
        "license": flags.DEFINE_string("license", None, "License of the modules (doc pages)."),
        "citation": flags.DEFINE_string(
            "citation", None, "How to cite the modules (doc pages); default: the paper."
        ),
        "collection_dir": flags.DEFINE_string("collection_dir", None, "Collection directory."),
        "version": flags.DEFINE_integer(
            "version", None, "Version for every module published; default: each module's next."
        ),
        "overwrite": flags.DEFINE_bool(
            "overwrite", False, "Replace a module version already listed."
        ),
        "skip_validation": flags.DEFINE_bool("skip_validation", False, "List without validating."),
        "only": flags.DEFINE_list("only", None, "Publish only these module names."),
        "publisher": flags.DEFINE_string("publisher", "bit-experts", "Publisher on the doc pages."),
        "description": flags.DEFINE_string("description", None, "One-line collection description."),
    }


_FLAGS = {}


def _plan(workdirs, modules=(), only=None, renames=()):
    """[PlannedModule] of every source (work directories in order, then added modules) and the
    work directories' label vocabulary (None with no work directory); renames applied. `only`
    (names after renames) picks among the work directories' modules: an added module was asked
    for by name, so it is always kept. Names must be unique among the modules kept."""
    sources, names = [], None
    for workdir in workdirs:
        planned, label_names = expert_modules.plan_workdir(workdir)
        if names is not None and label_names != names:
            raise CollectionError(
                f"work directory {workdir!r} has a different upstream label vocabulary than "
                f"{workdirs[0]!r}; one collection holds one upstream dataset"
            )
        names = label_names
        sources.append((workdir, planned))
    added = [added_modules.plan_module(spec) for spec in modules]
    sources += [(os.fspath(spec), [p]) for spec, p in zip(modules, added)]
    _apply_renames(sources, renames)
    planned = [p for _, ps in sources for p in ps]
    if only:
        known = {p.name for p in planned}
        unknown = sorted(set(only) - known)
        if unknown:
            raise CollectionError(f"--only names unknown modules {unknown}; known: {sorted(known)}")
        planned = [p for p in planned if p.name in set(only) or any(p is a for a in added)]
    seen = {}
    for p in planned:
        if p.name in seen:
            raise CollectionError(
                f"two sources export a module named {p.name!r} ({seen[p.name].source!r} and "
                f"{p.source!r}); rename one with --rename={p.name}@2:NEW_NAME"
            )
        seen[p.name] = p
    if not planned:
        raise CollectionError(f"nothing to publish from {[s for s, _ in sources]}")
    return planned, names


def parse_rename(text):
    """`"OLD:NEW"` or `"OLD@K:NEW"` -> `(old, k or None, new)`; CollectionError otherwise."""
    old, sep, new = os.fspath(text).partition(":")
    occurrence = None
    if "@" in old:
        old, _, k = old.partition("@")
        if not k.isdigit() or int(k) < 1:
            raise CollectionError(f"--rename={text}: K in OLD@K:NEW must be a positive integer")
        occurrence = int(k)
    if not sep or not old or not added_modules._NAME.match(new or ""):
        raise CollectionError(
            f"--rename={text}: expected OLD:NEW or OLD@K:NEW, NEW in lower-case letters, digits, "
            "_ or -"
        )
    return old, occurrence, new


def _apply_renames(sources, renames):
    """Renames planned modules in place. `sources`: [(label, [PlannedModule])] in order. A name
    planned by several sources needs `OLD@K` (the K-th of them, 1-based, in source order)."""
    by_name = {}
    for i, (_, planned) in enumerate(sources):
        for p in planned:
            by_name.setdefault(p.name, []).append(i)
    per_source = [{} for _ in sources]
    for text in renames or ():
        old, k, new = parse_rename(text)
        where = by_name.get(old)
        if not where:
            raise CollectionError(
                f"--rename={text}: no source plans a module named {old!r}; planned: "
                f"{sorted(by_name)}"
            )
        if k is None and len(where) > 1:
            labels = [sources[i][0] for i in where]
            raise CollectionError(
                f"--rename={text}: {len(where)} sources plan {old!r} ({labels}); say which with "
                f"--rename={old}@K:{new}, K from 1 to {len(where)} in that order"
            )
        if k is not None and k > len(where):
            raise CollectionError(
                f"--rename={text}: only {len(where)} source(s) plan a module named {old!r}"
            )
        index = where[(k or 1) - 1]
        if old in per_source[index]:
            raise CollectionError(f"--rename={text}: {old!r} of that source is renamed twice")
        per_source[index][old] = new
    for mapping, (_, planned) in zip(per_source, sources):
        if not mapping:
            continue
        for p in planned:  # every module of the source: its metadata may name renamed siblings
            p.renames = dict(mapping)
            p.name = mapping.get(p.name, p.name)
            p.source_fingerprint = identity.derived_source_fingerprint(
                p.source_fingerprint, renames=mapping
            )


def rename_metadata(metadata, renames):
    """`metadata` with the module names it holds (`name`, `packed_module`, a packed module's
    `experts[*].module`) mapped through `renames` (old -> new)."""
    if not renames:
        return metadata
    out = dict(metadata)
    for key in ("name", "packed_module"):
        if out.get(key) in renames:
            out[key] = renames[out[key]]
    if isinstance(out.get("experts"), list):
        out["experts"] = [
            dict(e, module=renames.get(e.get("module"), e.get("module")))
            if isinstance(e, dict)
            else e
            for e in out["experts"]
        ]
    return out


STAGING_PREFIX = ".staging-"
OWNER_FILE = "OWNER"  # in a staging folder: the publisher that owns it ({pid, host, start_time})


def _manifest_path(collection_dir):
    return collection.manifest_file(collection_dir)


def _open_collection(collection_dir, publisher, description, license=None, citation=None):  # noqa: A002
    """The collection's manifest; a new collection gets an empty one at once (under the lock), so
    that a publish killed before its first module still leaves a collection that a rerun resumes.
    A given description, license or citation replaces the collection's."""
    path = _manifest_path(collection_dir)
    given = {"description": description, "license": license, "citation": citation}
    given = {k: v for k, v in given.items() if v}
    if atomic_files.isfile(path):
        manifest = collection.load_manifest(path)
        if any(manifest.get(k) != v for k, v in given.items()):
            manifest.update(given)
            _write_listing(collection_dir, manifest, publisher, description)
        return manifest
    leftovers = sorted(f for f in atomic_files.listdir(collection_dir) if not f.startswith("."))
    if leftovers:
        raise CollectionError(
            f"{collection_dir} is not empty and holds no {collection.MANIFEST_FILE} "
            f"(found {leftovers[:3]}); publish into a new or empty folder, or into a collection"
        )
    manifest = collection.empty_manifest(os.path.basename(collection_dir), publisher)
    manifest.update(given)
    _write_listing(collection_dir, manifest, publisher, description)
    return manifest


def _check_vocabulary(collection_dir, manifest, label_names):
    if label_names is None:  # added modules only: they bring no vocabulary
        return
    if manifest.get("upstream") and collection.label_names(_manifest_path(collection_dir)) != list(
        label_names
    ):
        raise CollectionError(
            f"collection {collection_dir} holds modules of another upstream label vocabulary"
        )


def _select(planned, manifest, collection_dir, version, overwrite, log):
    """[(planned module, version)] still to publish: a module whose latest listed version (or, with
    `version`, that version) comes from the same source and is intact is skipped."""
    listed = {(e["name"], int(e["version"])): e for e in manifest["modules"]}
    latest = {}
    for (name, v), e in listed.items():
        if v > latest.get(name, (0, None))[0]:
            latest[name] = (v, e)

    def same_source(p, e):
        return (
            e is not None
            and e.get("source_fingerprint") == p.source_fingerprint
            and _intact(collection_dir, e)
        )

    todo = []
    for p in planned:
        if version is None:
            v, e = latest.get(p.name, (0, None))
            if same_source(p, e):
                log(f"{p.name}: already listed as {e['path']} from the same source; skipped")
                continue
            todo.append((p, v + 1))
            continue
        e = listed.get((p.name, version))
        if e is not None and not overwrite:
            if same_source(p, e):
                log(f"{p.name}: already listed as {e['path']} from the same source; skipped")
                continue
            raise FileExistsError(
                f"module {p.name!r} version {version} is already in {collection_dir} "
                "(pass --overwrite to replace it, or omit --version to publish the next one)"
            )
        todo.append((p, version))
    for p, v in todo:
        _target(collection_dir, p.name, v)  # refused now, before anything is staged
    return todo


def _target(collection_dir, name, version):
    """Where module `name` version `version` goes: `C/<name>/<version>`, refused (CollectionError
    naming it) when a symbolic link there or on the way would put it elsewhere."""
    path = f"{name}/{version}"
    target = collection.inside(collection_dir, path, f"module {path!r}: collection path")
    if atomic_files.islink(target):
        raise CollectionError(
            f"module {path!r}: {target} is a symbolic link (to {os.readlink(target)}); a "
            "collection's module folders are its own: remove the link"
        )
    return target


def _intact(collection_dir, entry):
    module_dir = collection.listed_module_dir(collection_dir, entry, _manifest_path(collection_dir))
    return atomic_files.isdir(module_dir) and handles.module_sha256(module_dir) == entry["sha256"]


def _list_module(manifest, entry):
    modules = [
        e
        for e in manifest["modules"]
        if (e["name"], int(e["version"])) != (entry["name"], entry["version"])
    ]
    manifest["modules"] = modules + [entry]


def _write_upstream(collection_dir, manifest, label_names, name, prior):
    """Writes the label names and the label priors of the listed modules with `name`'s `prior`;
    returns the manifest's upstream section. `manifest` is the one on disk plus `name`'s entry."""
    import json

    priors = {}
    if manifest.get("upstream"):
        priors = collection.label_priors(_manifest_path(collection_dir))  # listed modules only
    priors.pop(name, None)
    if prior is not None:
        priors[name] = prior
    listed = {e["name"] for e in manifest["modules"]}
    priors = {k: v for k, v in priors.items() if k in listed}
    names_ref = collection.write_content_addressed(
        collection_dir, "label_names", ".json", (json.dumps(label_names) + "\n").encode("utf-8")
    )
    names_ref["count"] = len(label_names)
    priors_ref = collection.write_content_addressed(
        collection_dir, "label_priors", ".npz", collection.priors_bytes(priors)
    )
    priors_ref["modules"] = sorted(priors)
    return {"label_names": names_ref, "label_priors": priors_ref}


def _write_listing(collection_dir, manifest, publisher, description):
    collection.write_manifest(collection_dir, manifest)
    page = doc_pages.collection_page(
        manifest["name"],
        publisher,
        manifest["modules"],
        description or manifest.get("description"),
        version=collection.collection_version(manifest),
        license=manifest.get("license"),
        citation=manifest.get("citation"),
    )
    collection.write_bytes_atomic(
        os.path.join(collection_dir, collection.PAGE_FILE), page.encode("utf-8")
    )


def _make_staging(collection_dir):
    """A staging folder owned by this process (called under the lock, so that every staging folder
    without an owner record is a leftover). For a collection on a `tf.io.gfile` URL it is a local
    temporary folder: modules are exported and validated on the local disk, then uploaded."""
    import json
    import tempfile

    if atomic_files.is_url(collection_dir):
        return tempfile.mkdtemp(prefix="bit-experts" + STAGING_PREFIX)
    staging = atomic_files.make_temp_dir(collection_dir, prefix=STAGING_PREFIX)
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_time": locks.process_start_time(os.getpid()),
    }
    collection.write_bytes_atomic(
        os.path.join(staging, OWNER_FILE), json.dumps(owner).encode("utf-8")
    )
    return staging


def _staging_is_stale(staging):
    import json

    try:  # O_NOFOLLOW: an owner record that is a symbolic link is none of ours
        fd = os.open(os.path.join(staging, OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return True  # Made under the lock with its owner record: without one it is a leftover.
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return not isinstance(owner, dict)  # Another host's publisher cannot be checked here.
    return not locks.pid_alive(owner.get("pid", -1), owner.get("start_time"))


def clean_stale(collection_dir, log=print, report_links=True):
    """Removes what killed publishers left in `collection_dir` (call it holding the lock):

    - staging folders whose publisher is gone, and temporary files of interrupted atomic writes;
    - module version folders that are not listed (moved into place, then killed before listing),
      and the `.old-*` folders of an interrupted replacement;
    - upstream files (`label_names-*`, `label_priors-*`) that the manifest does not point at.

    A symbolic link is never followed nor removed: a linked folder is not entered (what it leads
    to is not the collection's), and, with `report_links`, each link met is named in one logged
    line.

    Returns the relative paths removed.
    """
    path = _manifest_path(collection_dir)
    manifest = collection.load_manifest(path) if atomic_files.isfile(path) else None
    listed = {e["path"] for e in manifest["modules"]} if manifest else set()
    keep = {ref["file"] for ref in ((manifest or {}).get("upstream") or {}).values()}
    removed, links = [], []

    def entries(rel=""):
        """The names in `collection_dir`/`rel` that are no symbolic link (those go to `links`)."""
        folder = os.path.join(collection_dir, rel) if rel else collection_dir
        for name in sorted(atomic_files.listdir(folder)):
            if atomic_files.islink(os.path.join(folder, name)):
                links.append(f"{rel}/{name}" if rel else name)
            else:
                yield name

    def remove(rel):
        full = os.path.join(collection_dir, rel)
        if atomic_files.is_url(full):
            if atomic_files.isdir(full):
                atomic_files.rmtree(full)
            elif atomic_files.exists(full):
                atomic_files.remove(full)
        elif os.path.isdir(full):  # never a link: `entries` leaves those out
            shutil.rmtree(full, ignore_errors=True)
        elif os.path.lexists(full):
            os.remove(full)
        removed.append(rel)

    for f in entries():
        full = os.path.join(collection_dir, f)
        if f.startswith(STAGING_PREFIX) and atomic_files.isdir(full):
            if _staging_is_stale(full):
                remove(f)
        elif (
            f.startswith(".")
            and (f.endswith(".tmp") or ".stale-" in f)
            and atomic_files.isfile(full)
        ):
            remove(f)  # Every write to the collection's root happens under the lock.
        elif f.startswith(("label_names-", "label_priors-")) and manifest and f not in keep:
            remove(f)
        elif not f.startswith(".") and atomic_files.isdir(full):
            for v in entries(f):
                if v.startswith(".old-") or ".tmp-" in v:
                    remove(f"{f}/{v}")
                elif v.isdigit() and f"{f}/{v}" not in listed:
                    remove(f"{f}/{v}")
            if not atomic_files.listdir(full) and not any(p.startswith(f + "/") for p in listed):
                if atomic_files.is_url(full):
                    atomic_files.rmtree(full)
                else:
                    os.rmdir(full)
    for rel in removed:
        log(f"removed {rel} from {collection_dir} (no listed module or manifest entry uses it)")
    for rel in links if report_links else ():
        log(
            f"left {rel} in {collection_dir} alone: a symbolic link, which publishing never follows"
        )
    return removed


def publish(
    workdirs=(),
    collection_dir=None,
    version=None,
    overwrite=False,
    validate_modules=True,
    only=None,
    publisher="bit-experts",
    description=None,
    log=print,
    lock_timeout=600.0,
    modules=(),
    renames=(),
    license=None,  # noqa: A002 (the flag's name)
    citation=None,
):
    """Exports, validates and lists every module of `workdirs` and `modules` in `collection_dir`;
    resumable.

    Args:
      workdirs: training work directories (docs/workdir.md), or one as a string; may be empty
        when `modules` is not.
      collection_dir: the collection folder to create or add to.
      version: the version of every module published; None: each module's next.
      overwrite: replace a version already listed (with `version`).
      validate_modules: load and exercise each module before listing it (`hub_export.validate`).
      only: publish only these of the work directories' modules (names after renames); every
        module of `modules` is published, and names must be unique among the modules kept.
      publisher, description: names on the doc pages.
      modules: saved module folders to add as they are, each `"DIR"` or
        `"DIR:name=N,kind=K,resolution=R"` (`hub_export.added_modules`).
      renames: `"OLD:NEW"` or `"OLD@K:NEW"` (the K-th source planning OLD, sources in order: work
        directories, then modules), to resolve a name clash between sources.
      license, citation: written into each module's metadata and onto the doc pages.

    A module whose latest listed version (with `version`: that version) was exported from the same
    source (`identity.source_fingerprint`: model file bytes, info.json, label vocabulary and prior,
    name, role; for an added module its weights fingerprint or checksum, metadata and options; plus
    renames, license and citation) and is intact is skipped, so a rerun after a kill, or of a
    finished publish, redoes nothing finished. Leftovers of killed publishers are removed first
    (`clean_stale`). Each module is saved (or copied), given its Keras archive and validated in a
    staging folder, then, holding the collection's lock (`collection_lock`), moved to
    `<name>/<version>` and listed in the re-read manifest, so concurrent publishers into one
    collection merge and a killed publish never lists a half-written module.

    No symbolic link is followed: a module folder holding one is refused, and a link in the
    collection is never entered, removed or written through (docs/hub_modules.md, "Trust").

    Returns the manifest entries written, in order (skipped modules are not in it). Nothing is
    written before every source has been read and every version chosen. Raises
    CollectionError/ValueError/FileNotFoundError/FileExistsError, and
    collection_lock.CollectionLockError when another live writer holds the lock past
    `lock_timeout` seconds.
    """
    if isinstance(workdirs, (str, os.PathLike)):
        workdirs = [workdirs]
    if isinstance(modules, (str, os.PathLike)):
        modules = [modules]
    workdirs, modules = list(workdirs or ()), list(modules or ())
    if not workdirs and not modules:
        raise ValueError("publish needs at least one work directory or module")
    if collection_dir is None:
        raise ValueError("publish needs a collection_dir")
    if version is not None and int(version) < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    collection_dir = atomic_files.abspath(collection_dir)  # a local folder or a tf.io.gfile URL
    planned, label_names = _plan([os.fspath(w) for w in workdirs], modules, only, renames)
    for p in planned:
        p.source_fingerprint = identity.derived_source_fingerprint(
            p.source_fingerprint, license=license, citation=citation
        )
    if atomic_files.exists(collection_dir) and not atomic_files.isdir(collection_dir):
        raise CollectionError(f"collection {collection_dir} is a file, expected a folder")
    atomic_files.makedirs(collection_dir)
    lock = collection_lock.CollectionLock(collection_dir, timeout=lock_timeout, log=log)
    with lock:
        manifest = _open_collection(collection_dir, publisher, description, license, citation)
        _check_vocabulary(collection_dir, manifest, label_names)
        clean_stale(collection_dir, log)
        todo = _select(planned, manifest, collection_dir, version, overwrite, log)
        if not todo:
            log(f"every planned module is already listed in {collection_dir}")
            return []
        staging = _make_staging(collection_dir)
    written, new_revision = [], True
    publication = {"license": license, "citation": citation}
    try:
        for i, (p, v) in enumerate(todo):
            entry = _stage_module(p, v, staging, publisher, validate_modules, log, publication)
            entry["source_fingerprint"] = p.source_fingerprint
            if i + 1 == len(todo) or todo[i + 1][0].release != p.release:
                p.release()
            with lock:
                listed = _commit(
                    collection_dir,
                    staging,
                    p,
                    entry,
                    label_names,
                    version,
                    overwrite,
                    publisher,
                    new_revision,
                )
            if listed is None:
                log(f"{p.name}: listed meanwhile by another publisher from the same source")
                continue
            new_revision = False
            written.append(listed)
            log(f"listed {listed['path']} ({p.role})")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with lock:
        clean_stale(collection_dir, log, report_links=False)  # said at the start already
    if any(w["kind"] == "baseline" and w["role"] == "feature_vector" for w in written):
        manifest = collection.load_manifest(_manifest_path(collection_dir))
        note = collection.baselines_note(collection.latest_only(manifest["modules"]))
        if note:
            log(f"warning: {collection_dir}: {note}")
    return written


def _commit(
    collection_dir,
    staging,
    planned,
    entry,
    label_names,
    version,
    overwrite,
    publisher,
    new_revision=False,
):
    """Moves a staged module into place and lists it (call it holding the lock). Returns the entry
    listed, or None when another publisher listed the same source at that version meanwhile.
    `new_revision`: this is the publish run's first listing, which raises the collection's version
    when the collection already listed modules."""
    manifest = collection.load_manifest(_manifest_path(collection_dir))  # others may have listed
    _check_vocabulary(collection_dir, manifest, label_names)
    versions = [int(e["version"]) for e in manifest["modules"] if e["name"] == planned.name]
    other = next(
        (
            e
            for e in manifest["modules"]
            if e["name"] == planned.name and int(e["version"]) == entry["version"]
        ),
        None,
    )
    module_dir = os.path.join(staging, planned.name)
    if other is not None and not overwrite:
        if other.get("source_fingerprint") == entry["source_fingerprint"]:
            return None
        if version is not None:
            raise CollectionError(
                f"module {entry['path']} was listed by another publisher while this one exported "
                "it (pass --overwrite to replace it, or omit --version to publish the next one)"
            )
        # Another publisher took this version meanwhile: take the next one.
        entry = _renumber(module_dir, entry, max(versions) + 1, publisher)
    target = _target(collection_dir, planned.name, entry["version"])
    # A listed version is only replaced with overwrite (checked above); an unlisted folder there is
    # the leftover of a killed publish.
    _move_into_place(module_dir, target)
    if new_revision and manifest["modules"]:
        manifest["version"] = collection.collection_version(manifest) + 1
    _list_module(manifest, entry)
    if label_names is None and manifest.get("upstream"):
        label_names = collection.label_names(_manifest_path(collection_dir))
    if label_names is not None:
        manifest["upstream"] = _write_upstream(
            collection_dir, manifest, label_names, planned.name, planned.label_prior
        )
    _write_listing(collection_dir, manifest, publisher, manifest.get("description"))
    return entry


def _move_into_place(module_dir, target):
    """Puts a staged module at `target`: locally by rename (`_replace_directory`); on a
    `tf.io.gfile` URL, where a folder rename is a copy, by uploading its files after removing what
    was there. Either way the module counts only once the manifest lists it (written after this),
    and `clean_stale` removes an unlisted folder (docs/hub_modules.md, "Commit protocol")."""
    if atomic_files.is_url(target):
        atomic_files.rmtree(target)
        atomic_files.upload_tree(module_dir, target)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    hub_module._replace_directory(module_dir, target, overwrite=True)


def _write_module_files(module_dir, metadata, publisher, path):
    """Rewrites a staged module's metadata (sidecar, in-SavedModel asset, Keras archive) and its
    doc page."""
    write_metadata(module_dir, metadata)
    keras_artifact.update_keras_metadata(module_dir, metadata)
    _write_doc_page(module_dir, metadata, publisher, path)


def _write_doc_page(module_dir, metadata, publisher, path):
    page = doc_pages.module_page(
        metadata,
        publisher,
        path,
        keras=os.path.isfile(keras_artifact.keras_archive_path(module_dir)),
        get_metadata=metadata_asset_path(module_dir) is not None,
    )
    collection.write_bytes_atomic(
        os.path.join(module_dir, collection.DOC_FILE), page.encode("utf-8")
    )


def _renumber(module_dir, entry, version, publisher):
    path = f"{entry['name']}/{version}"
    metadata = dict(entry["metadata"], version=version)
    _write_module_files(module_dir, metadata, publisher, path)
    return dict(
        entry,
        version=version,
        path=path,
        doc=f"{path}/{collection.DOC_FILE}",
        metadata=metadata,
        sha256=handles.module_sha256(module_dir),
    )


def _copy_module(source, target):
    """Copies a saved module folder; the copy's files and folders get this user's default modes
    (a module from a read-only cache must become writable to take its new metadata). A symbolic
    link is copied as the link it is, never followed (planning refused one already; one added
    since is then refused by the copy's checksum)."""
    shutil.copytree(source, target, symlinks=True, copy_function=shutil.copyfile)
    for root, _, _ in os.walk(target):
        os.chmod(root, atomic_files.dir_mode())


def _stage_module(planned, version, staging, publisher, validate_modules, log, publication=None):
    publication = publication or {}
    module, metadata = planned.make()
    metadata = rename_metadata(metadata, planned.renames)
    metadata["version"] = version
    for key in ("license", "citation"):
        if publication.get(key):
            metadata[key] = publication[key]
    path = f"{planned.name}/{version}"
    module_dir = os.path.join(staging, planned.name)
    if planned.copy_from is not None:
        _copy_module(planned.copy_from, module_dir)
        if metadata.get("output_dim") is None:
            metadata["output_dim"] = added_modules.probe_output_dim(
                module_dir, metadata.get("resolution") or validate.DEFAULT_RESOLUTION
            )
        metadata.setdefault("feature_dim", metadata["output_dim"])
        write_metadata(module_dir, metadata)
        keras_artifact.update_keras_metadata(module_dir, metadata)
    else:
        metadata[identity.FINGERPRINT_FIELD] = identity.weights_fingerprint(
            module, identity.export_settings(metadata)
        )
        hub_module.save_module(module, module_dir, metadata, overwrite=True)
        keras_artifact.write_keras_artifact(module, module_dir, metadata)
    _write_doc_page(module_dir, metadata, publisher, path)
    report = None
    if validate_modules:
        report = validate.validate_module(
            module_dir,
            planned.role,
            output_dim=metadata["output_dim"],
            resolutions=validate.default_resolutions(
                metadata.get("resolution") or validate.DEFAULT_RESOLUTION
            ),
            name=path,
        )
        log(f"validated {path}: {report}")
    return {
        "name": planned.name,
        "version": version,
        "path": path,
        "kind": metadata["kind"],
        "role": planned.role,
        "sha256": handles.module_sha256(module_dir),
        "doc": f"{path}/{collection.DOC_FILE}",
        "metadata": metadata,
        "validation": report,
    }


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def error_line(error, collection_dir):
    """One line for an expected failure of `publish` (bad input, a full disk, a held lock), or None
    for an unexpected one (a bug), which should keep its traceback."""
    tf = sys.modules.get("tensorflow")  # an OpError comes only from an imported TensorFlow
    text = str(error)
    disk_full = getattr(error, "errno", None) in _DISK_FULL or any(
        t in text for t in _DISK_FULL_TEXT
    )
    if disk_full:
        where = getattr(error, "filename", None) or collection_dir
        return (
            f"no space left on the device (or quota exceeded) writing {where}: free some and rerun "
            "the same command; it resumes, and no half-written module was listed"
        )
    if tf is not None and isinstance(error, tf.errors.OpError):
        return f"{type(error).__name__}: {(error.message or text).strip().splitlines()[0]}"
    if isinstance(error, (ValueError, OSError)):
        return " ".join(text.split())  # One line, whatever the message held.
    return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    value = {name: holder.value for name, holder in _FLAGS.items()}
    if not (value["workdir"] or value["module"]) or not value["collection_dir"]:
        raise app.UsageError("--collection_dir and at least one --workdir or --module are required")
    with cli.one_line_errors(
        "publish",
        Exception,  # every failure ends in one line, see error_line
        line=lambda error: error_line(error, value["collection_dir"]),
    ):
        written = publish(
            value["workdir"] or (),
            value["collection_dir"],
            version=value["version"],
            overwrite=value["overwrite"],
            validate_modules=not value["skip_validation"],
            only=value["only"],
            publisher=value["publisher"],
            description=value["description"],
            log=functools.partial(print, flush=True),  # progress on stdout, as run prints it
            modules=value["module"] or (),
            renames=value["rename"] or (),
            license=value["license"],
            citation=value["citation"],
        )
    print_written(written, value["collection_dir"])


def print_written(written, collection_dir):
    """One line per module listed, then a total (what the publishing commands print)."""
    for e in written:
        print(
            f"{e['name']}/{e['version']}  {e['role']:<14} {e['kind']:<8} sha256 {e['sha256'][:12]}"
        )
    print(
        f"wrote {len(written)} modules to {collection_dir}"
        + ("" if written else " (every module is already listed from the same source)")
    )


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
