"""A module's metadata files, read and written without TensorFlow (docs/hub_modules.md).

The metadata JSON lies beside `saved_model.pb` (`METADATA_FILE`, the sidecar) and inside the
SavedModel as the asset its `get_metadata()` returns (`hub_export.module.attach_metadata`).
`read_metadata` reads the sidecar, else the asset, without loading the module: a module that
embeds another of ours carries that one's asset too, under a renamed file, so the module's own
asset is the one the root object's `metadata_asset` attribute refers to in `saved_model.pb`'s
object graph (`metadata_asset_path`; the protocol buffer is parsed, TensorFlow imported, only
then).
"""

import json
import os

from bit_experts import atomic_files

METADATA_FILE = "bit_experts_metadata.json"
# Where `get_metadata()` of a module that embeds no other of ours reads its JSON from (relative to
# the module); in general use `metadata_asset_path`.
METADATA_ASSET = os.path.join("assets", METADATA_FILE)
# The root object's attribute holding its metadata asset (`hub_export.module.attach_metadata`).
METADATA_ATTRIBUTE = "metadata_asset"


def metadata_bytes(metadata):
    """The metadata dict as the bytes both files hold (sorted keys, indented JSON)."""
    return json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8")


def metadata_asset_path(module_dir):
    """The path of the asset file the saved module's own `get_metadata()` reads, found in
    `saved_model.pb`'s object graph without loading the module (root object -> its
    `metadata_asset` child -> `asset_file_def_index` -> the file's name under `assets/`), so an
    embedded module's asset of the same base name is never taken for it. None when the module has
    no `saved_model.pb`, its root has no metadata asset (a third-party module), or the file is
    missing. Raises ValueError naming `saved_model.pb` if `assets/` holds a metadata file but
    `saved_model.pb` cannot be parsed."""
    from tensorflow.core.protobuf import saved_model_pb2

    module_dir = os.fspath(module_dir)
    pb_path = os.path.join(module_dir, "saved_model.pb")
    assets = os.path.join(module_dir, "assets")
    if not os.path.isfile(pb_path) or not (
        os.path.isdir(assets) and any(n.startswith(METADATA_FILE) for n in os.listdir(assets))
    ):
        return None  # Not ours (no such asset at all): saved_model.pb is not parsed.
    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(pb_path, "rb") as f:
            saved_model.ParseFromString(f.read())
    except Exception as error:  # google.protobuf.message.DecodeError
        raise ValueError(f"{pb_path}: not a SavedModel protocol buffer ({error})") from None
    if not saved_model.meta_graphs:
        return None
    meta_graph = saved_model.meta_graphs[0]
    nodes = meta_graph.object_graph_def.nodes
    if not nodes:
        return None
    for child in nodes[0].children:  # nodes[0] is the root object.
        if child.local_name != METADATA_ATTRIBUTE:
            continue
        node = nodes[child.node_id]
        if node.WhichOneof("kind") != "asset":
            return None
        index = node.asset.asset_file_def_index
        if not 0 <= index < len(meta_graph.asset_file_def):
            return None
        path = os.path.join(module_dir, "assets", meta_graph.asset_file_def[index].filename)
        return path if os.path.isfile(path) else None
    return None


def write_metadata(module_dir, metadata):
    """Rewrites a saved module's metadata, atomically per file: the sidecar `METADATA_FILE` and,
    when the module has one, the asset its `get_metadata()` reads (`metadata_asset_path`; the
    SavedModel is not re-traced, and an embedded module's asset is left alone)."""
    data = metadata_bytes(metadata)
    module_dir = os.fspath(module_dir)
    atomic_files.write_bytes(os.path.join(module_dir, METADATA_FILE), data)
    asset = metadata_asset_path(module_dir)
    if asset is not None:
        atomic_files.write_bytes(asset, data)


def read_metadata(module_dir):
    """The metadata dict saved with a module: its sidecar `METADATA_FILE`, else the copy inside the
    SavedModel (the asset the module's own `get_metadata()` returns, `metadata_asset_path`: never an
    embedded module's), read without loading the module; None for a module with neither
    (third-party). Raises ValueError naming the file if it is not JSON."""
    module_dir = os.fspath(module_dir)
    path = os.path.join(module_dir, METADATA_FILE)
    if not os.path.isfile(path):
        path = metadata_asset_path(module_dir)  # saved_model.pb is parsed only when needed.
        if path is None:
            return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: module metadata is not valid JSON ({error})") from None
