r"""Publishes the models of training work directories as a collection of TF Hub modules.

    python -m hub_export.publish --workdir=W [--workdir=W2 ...] --collection_dir=C \
        [--version=N] [--overwrite] [--skip_validation] [--only=name,...]

Every module is saved and validated in a staging folder inside C, moved to C/<name>/<version> and
only then listed in C/manifest.json (written atomically), so a killed publish never lists a
half-written module. Publishing into an existing collection adds to it. Flags: docs/hub_modules.md.
"""

import os
import shutil
import tempfile

from absl import app, flags, logging

from hub_export import collection, doc_pages, expert_modules, handles, validate
from hub_export.collection import CollectionError
from hub_export.module import _replace_directory, save_module


def _define_flags():
    """Defines the command-line flags; only when run as a program, so that importing this module
    next to other entry points (which define flags such as --overwrite too) never clashes."""
    return {
        "workdir": flags.DEFINE_multi_string(
            "workdir", None, "Training work directory (repeatable)."
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


def _plan(workdirs, only):
    planned, names = [], None
    for workdir in workdirs:
        modules, label_names = expert_modules.plan_workdir(workdir)
        if names is not None and label_names != names:
            raise CollectionError(
                f"work directory {workdir!r} has a different upstream label vocabulary than "
                f"{workdirs[0]!r}; one collection holds one upstream dataset"
            )
        names = label_names
        planned.extend(modules)
    seen = {}
    for p in planned:
        if p.name in seen:
            raise CollectionError(f"two models export a module named {p.name!r}")
        seen[p.name] = p
    if only:
        unknown = sorted(set(only) - set(seen))
        if unknown:
            raise CollectionError(f"--only names unknown modules {unknown}; known: {sorted(seen)}")
        planned = [p for p in planned if p.name in set(only)]
    if not planned:
        raise CollectionError(f"nothing to publish from {workdirs}")
    return planned, names


def _existing_versions(collection_dir, name):
    folder = os.path.join(collection_dir, name)
    if not os.path.isdir(folder):
        return []
    return [int(v) for v in os.listdir(folder) if v.isdigit()]


def _choose_versions(planned, manifest, collection_dir, version, overwrite):
    listed = {(e["name"], int(e["version"])) for e in manifest["modules"]}
    chosen = {}
    for p in planned:
        if version is None:
            known = [v for n, v in listed if n == p.name]
            known += _existing_versions(collection_dir, p.name)  # leftovers of a killed publish
            chosen[p.name] = max(known, default=0) + 1
        else:
            if (p.name, version) in listed and not overwrite:
                raise FileExistsError(
                    f"module {p.name!r} version {version} is already in {collection_dir} "
                    "(pass overwrite to replace it, or omit the version to publish the next one)"
                )
            chosen[p.name] = version
    return chosen


def _list_module(manifest, entry):
    modules = [
        e
        for e in manifest["modules"]
        if (e["name"], int(e["version"])) != (entry["name"], entry["version"])
    ]
    manifest["modules"] = modules + [entry]


def _write_upstream(collection_dir, manifest, label_names, new_priors):
    """Writes label names and the merged label priors; returns the manifest's upstream section."""
    import json

    old = manifest.get("upstream")
    priors = {}
    if old:
        old_names = collection.label_names(os.path.join(collection_dir, collection.MANIFEST_FILE))
        if old_names != label_names:
            raise CollectionError(
                f"collection {collection_dir} holds modules of another upstream label vocabulary"
            )
        priors = collection.label_priors(os.path.join(collection_dir, collection.MANIFEST_FILE))
    priors.update(new_priors)
    names_ref = collection.write_content_addressed(
        collection_dir, "label_names", ".json", (json.dumps(label_names) + "\n").encode("utf-8")
    )
    names_ref["count"] = len(label_names)
    priors_ref = collection.write_content_addressed(
        collection_dir, "label_priors", ".npz", collection.priors_bytes(priors)
    )
    priors_ref["modules"] = sorted(priors)
    return {"label_names": names_ref, "label_priors": priors_ref}


def _remove_unreferenced_upstream(collection_dir, manifest):
    keep = {ref["file"] for ref in (manifest.get("upstream") or {}).values()}
    for f in os.listdir(collection_dir):
        if f.startswith(("label_names-", "label_priors-")) and f not in keep:
            os.remove(os.path.join(collection_dir, f))


def _write_listing(collection_dir, manifest, publisher, description):
    collection.write_manifest(collection_dir, manifest)
    page = doc_pages.collection_page(
        manifest["name"], publisher, manifest["modules"], description or manifest.get("description")
    )
    collection.write_bytes_atomic(
        os.path.join(collection_dir, collection.PAGE_FILE), page.encode("utf-8")
    )


def publish(
    workdirs,
    collection_dir,
    version=None,
    overwrite=False,
    validate_modules=True,
    only=None,
    publisher="bit-experts",
    description=None,
    log=print,
):
    """Exports, validates and lists every module of `workdirs` in `collection_dir`.

    Returns the manifest entries written, in order. Nothing is written before every work directory
    has been read and every version chosen; each module is listed only once it is complete (and, with
    `validate_modules`, valid). Raises CollectionError/ValueError/FileNotFoundError/FileExistsError.
    """
    if isinstance(workdirs, (str, os.PathLike)):
        workdirs = [workdirs]
    if not workdirs:
        raise ValueError("publish needs at least one work directory")
    if version is not None and int(version) < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    collection_dir = os.path.abspath(os.fspath(collection_dir))
    planned, label_names = _plan([os.fspath(w) for w in workdirs], only)
    manifest_path = os.path.join(collection_dir, collection.MANIFEST_FILE)
    if os.path.isfile(manifest_path):
        manifest = collection.load_manifest(manifest_path)
    elif os.path.isdir(collection_dir) and any(
        not f.startswith(".") for f in os.listdir(collection_dir)
    ):
        raise CollectionError(
            f"{collection_dir} is not empty and holds no {collection.MANIFEST_FILE}"
        )
    else:
        manifest = collection.empty_manifest(os.path.basename(collection_dir), publisher)
    if description:
        manifest["description"] = description
    versions = _choose_versions(planned, manifest, collection_dir, version, overwrite)

    os.makedirs(collection_dir, exist_ok=True)
    manifest["upstream"] = _write_upstream(
        collection_dir,
        manifest,
        label_names,
        {p.name: p.label_prior for p in planned if p.label_prior is not None},
    )
    staging = tempfile.mkdtemp(dir=collection_dir, prefix=".staging-")
    written = []
    try:
        for i, p in enumerate(planned):
            entry = _stage_module(p, versions[p.name], staging, publisher, validate_modules, log)
            last_of_source = i + 1 == len(planned) or planned[i + 1].release != p.release
            if last_of_source:
                p.release()
            target = os.path.join(collection_dir, p.name, str(entry["version"]))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # A listed version is only replaced with overwrite (checked above); an unlisted folder
            # there is the leftover of a killed publish.
            _replace_directory(os.path.join(staging, p.name), target, overwrite=True)
            _list_module(manifest, entry)
            _write_listing(collection_dir, manifest, publisher, description)
            written.append(entry)
            log(f"listed {p.name}/{entry['version']} ({p.role})")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_unreferenced_upstream(collection_dir, manifest)
    return written


def _stage_module(planned, version, staging, publisher, validate_modules, log):
    module, metadata = planned.make()
    metadata["version"] = version
    path = f"{planned.name}/{version}"
    module_dir = os.path.join(staging, planned.name)
    save_module(module, module_dir, metadata)
    page = doc_pages.module_page(metadata, publisher, path)
    with open(os.path.join(module_dir, collection.DOC_FILE), "w", encoding="utf-8") as f:
        f.write(page)
    report = None
    if validate_modules:
        report = validate.validate_module(
            module_dir,
            planned.role,
            output_dim=metadata["output_dim"],
            resolutions=validate.default_resolutions(metadata["resolution"]),
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    value = {name: holder.value for name, holder in _FLAGS.items()}
    if not value["workdir"] or not value["collection_dir"]:
        raise app.UsageError("--workdir (at least one) and --collection_dir are required")
    try:
        written = publish(
            value["workdir"],
            value["collection_dir"],
            version=value["version"],
            overwrite=value["overwrite"],
            validate_modules=not value["skip_validation"],
            only=value["only"],
            publisher=value["publisher"],
            description=value["description"],
            log=logging.info,
        )
    except (ValueError, OSError) as error:
        raise SystemExit(f"publish: error: {error}") from None
    for e in written:
        print(
            f"{e['name']}/{e['version']}  {e['role']:<14} {e['kind']:<8} sha256 {e['sha256'][:12]}"
        )
    print(f"wrote {len(written)} modules to {value['collection_dir']}")


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    app.run(main)
