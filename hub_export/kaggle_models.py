r"""Kaggle Models: a collection laid out for `kagglehub.model_upload`, with Kaggle's metadata.

    python -m hub_export.kaggle_models --collection_dir=C --kaggle_dir=K --owner=O --model=M

writes every module version that C lists as a Kaggle Models variation version (docs/hub_modules.md,
"Kaggle Models"):

  K/O/M/model-metadata.json                      the model and its card (`kaggle models create -p`)
  K/O/M/tensorFlow2/<name>/model-instance-metadata.json   the variation's overview and usage
  K/O/M/tensorFlow2/<name>/<version>/            the module folder, byte for byte (its checksum is
                                                 the manifest's); what `kagglehub.model_upload` takes

and prints the `kagglehub.model_upload` call of each. Rerun it after each publish: it copies only
the versions that are new or changed, so K follows C. Once uploaded, each version is the handle
`kaggle:O/M/tensorFlow2/<name>/<version>`, which `hub_export.handles.resolve` reads through
kagglehub's cache. Nothing here needs kagglehub.
"""

import functools
import json
import os
import re
import shutil

from bit_experts import atomic_files
from hub_export import collection, doc_pages, handles
from hub_export.handles import CollectionError, ModuleError

FRAMEWORK = "tensorFlow2"  # Kaggle's name for TF2 SavedModels (the TF Hub format)
MODEL_METADATA = "model-metadata.json"
INSTANCE_METADATA = "model-instance-metadata.json"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def variation_dir(kaggle_dir, owner, model, name):
    """`kaggle_dir/owner/model/tensorFlow2/name`: one variation's folder."""
    return os.path.join(kaggle_dir, owner, model, FRAMEWORK, name)


def handle_of(owner, model, name, version=None):
    """The `kaggle:` handle of a variation (with `version`: of that version)."""
    text = f"kaggle:{owner}/{model}/{FRAMEWORK}/{name}"
    return text if version is None else f"{text}/{int(version)}"


def write_layout(collection_dir, kaggle_dir, owner, model, private=True, log=print):
    """Lays out every module version listed in the collection `collection_dir` under `kaggle_dir`
    for Kaggle Models (the module docstring): each module a variation named like it, each version a
    folder `kagglehub.model_upload` takes as it is, plus the model card and variation metadata the
    Kaggle CLI reads. A version already there with the manifest's checksum is kept; others are
    copied (via a temporary folder renamed into place). Uploading a variation's versions in order
    into a new variation gives them the same numbers on Kaggle.

    Returns [(kaggle handle, version folder)] in manifest order. Raises CollectionError naming the
    input: an owner or model that is not a Kaggle slug, a collection that cannot be read, or a
    module whose files no longer match its checksum.
    """
    for what, value in (("owner", owner), ("model", model)):
        if not isinstance(value, str) or not _SLUG.match(value):
            raise CollectionError(
                f"--{what}={value!r}: a Kaggle slug is needed (lower-case letters, digits, _ or -)"
            )
    collection_dir = os.path.abspath(os.fspath(collection_dir))
    kaggle_dir = os.path.abspath(os.fspath(kaggle_dir))
    manifest_path = collection.manifest_file(collection_dir)
    if not os.path.isfile(manifest_path):
        raise CollectionError(f"collection {collection_dir!r} has no {collection.MANIFEST_FILE}")
    manifest = collection.load_manifest(manifest_path)
    try:  # a link in the output would carry the copies out of it
        atomic_files.refuse_links_out(kaggle_dir, "--kaggle_dir")
    except ValueError as err:
        raise CollectionError(str(err)) from None
    plan = []  # every module checked before anything is written
    for e in manifest["modules"]:
        source = collection.listed_module_dir(collection_dir, e, manifest_path)
        target = os.path.join(variation_dir(kaggle_dir, owner, model, e["name"]), str(e["version"]))
        plan.append((source if _needs_copy(source, target, e) else None, target, e))
    written = []
    for source, target, e in plan:
        if source is not None:
            _copy_version(source, target, e["version"])
        written.append((handle_of(owner, model, e["name"], e["version"]), target))
    publisher = manifest.get("publisher") or owner
    latest = {e["name"]: e for e in collection.latest_only(manifest["modules"])}
    for name, e in latest.items():
        folder = variation_dir(kaggle_dir, owner, model, name)
        _write_json(
            os.path.join(folder, INSTANCE_METADATA),
            instance_metadata(owner, model, e, publisher, os.path.join(folder, str(e["version"]))),
        )
    _write_json(
        os.path.join(kaggle_dir, owner, model, MODEL_METADATA),
        model_metadata(owner, model, manifest, list(latest.values()), private),
    )
    for handle, target in written:
        variation = handle.removeprefix("kaggle:").rsplit("/", 1)[0]
        log(f'kagglehub.model_upload("{variation}", "{target}")  # becomes {handle}')
    return written


def _needs_copy(source, target, entry):
    """ModuleError naming the module unless its `source` folder matches the manifest `entry`'s
    checksum (on every run: a damaged collection is refused even where `target` is complete);
    then False when `target` already holds it, True otherwise."""
    label = f"{entry['name']}/{entry['version']}"
    if not os.path.isdir(source):
        raise ModuleError(f"module {label!r}: listed but {source} is missing; nothing was written")
    if handles.module_sha256(source) != entry["sha256"]:  # refuses a symbolic link too
        raise ModuleError(
            f"module {label!r}: checksum mismatch in {source} (files changed since it was "
            "published); nothing was written"
        )
    return not (os.path.isdir(target) and handles.module_sha256(target) == entry["sha256"])


def _copy_version(source, target, version):
    """Copies the module folder `source` to `target` through a temporary folder beside it."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = atomic_files.make_temp_dir(os.path.dirname(target), prefix=f".{version}.tmp-")
    try:
        shutil.copytree(source, os.path.join(tmp, "m"), copy_function=shutil.copyfile)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(os.path.join(tmp, "m"), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_files.write_bytes(path, (json.dumps(value, indent=2) + "\n").encode("utf-8"))


def instance_metadata(owner, model, entry, publisher, module_dir):
    """`model-instance-metadata.json` of the variation of manifest `entry` (its latest version, in
    `module_dir`): its overview and its usage page (`doc_pages.module_page` with its `kaggle:`
    handle)."""
    from bit_experts import expert_archive
    from hub_export.module import metadata_asset_path

    m = dict(entry["metadata"], name=entry["name"], version=entry["version"])
    handle = handle_of(owner, model, entry["name"], entry["version"])
    keras = os.path.isfile(os.path.join(module_dir, expert_archive.ARCHIVE_PATH))
    get_metadata = metadata_asset_path(module_dir) is not None
    value = {
        "ownerSlug": owner,
        "modelSlug": model,
        "instanceSlug": entry["name"],
        "framework": FRAMEWORK,
        "overview": doc_pages.module_description(m),
        "usage": doc_pages.module_page(m, publisher, handle, keras, get_metadata),
        "fineTunable": entry["role"] != "packed",
        "trainingData": [m["upstream_dataset"]] if m.get("upstream_dataset") else [],
        "modelInstanceType": "Unspecified",
    }
    if m.get("license"):
        value["licenseName"] = m["license"]
    return value


def model_metadata(owner, model, manifest, latest, private=True):
    """`model-metadata.json`: the model card is the collection's page, its module links the
    variations' Kaggle pages."""
    entries = [
        dict(e, path=f"https://www.kaggle.com/models/{owner}/{model}/{FRAMEWORK}/{e['name']}")
        for e in latest
    ]
    card = doc_pages.collection_page(
        manifest["name"],
        manifest.get("publisher") or owner,
        entries,
        manifest.get("description"),
        version=collection.collection_version(manifest),
        license=manifest.get("license"),
        citation=manifest.get("citation"),
    )
    return {
        "ownerSlug": owner,
        "title": manifest["name"],
        "slug": model,
        "subtitle": manifest.get("description") or "",
        "isPrivate": bool(private),
        "description": card,
        "publishTime": "",
        "provenanceSources": "",
    }


# --- command line -----------------------------------------------------------------------------


def _define_flags():
    from absl import flags

    return {
        "collection_dir": flags.DEFINE_string("collection_dir", None, "Collection to lay out."),
        "kaggle_dir": flags.DEFINE_string("kaggle_dir", None, "Folder for the Kaggle layout."),
        "owner": flags.DEFINE_string("owner", None, "Kaggle owner (user or organisation) slug."),
        "model": flags.DEFINE_string("model", None, "Kaggle model slug."),
        "public": flags.DEFINE_bool("public", False, "Mark the model public in its metadata."),
    }


_FLAGS = {}


def main(argv):
    from absl import app

    from bit_experts import cli

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    value = {name: holder.value for name, holder in _FLAGS.items()}
    missing = [f"--{k}" for k in ("collection_dir", "kaggle_dir", "owner", "model") if not value[k]]
    if missing:
        raise app.UsageError(f"{', '.join(missing)} required")
    with cli.one_line_errors("kaggle_models", (ValueError, OSError)):
        written = write_layout(
            value["collection_dir"],
            value["kaggle_dir"],
            value["owner"],
            value["model"],
            private=not value["public"],
            log=functools.partial(print, flush=True),
        )
    print(f"laid out {len(written)} module versions in {value['kaggle_dir']}")


if __name__ == "__main__":
    from absl import app

    from bit_experts import cli

    _FLAGS.update(_define_flags())
    cli.quiet_logs()
    app.run(main)
