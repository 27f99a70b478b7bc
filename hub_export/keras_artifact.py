"""The Keras 3 native artifact of a module: `<module folder>/keras/expert.keras`.

Written from the very Keras model the SavedModel was traced from (the `BiTResNetV2` a `HubModule` or
`PackedAdapterModule` holds), so both hold the same weights and compute the same function; the
archive carries the module's metadata (`bit_experts.expert_archive`). It lies inside the module
folder, so it is covered by the module's checksum, moved into a collection with it, and found from
the module's path or any of its handles by `load_expert` (what `bit_experts.load_expert` is).
"""

import os

from bit_experts import lazy_api

expert_archive = lazy_api.module("bit_experts.expert_archive")  # Keras: imported on first use


def keras_archive_path(module_dir):
    """Where a module folder's Keras archive lives: `<module_dir>/keras/expert.keras`."""
    return os.path.join(os.fspath(module_dir), expert_archive.ARCHIVE_PATH)


def write_keras_artifact(module, module_dir, metadata):
    """Writes the Keras archive of `module` (a `HubModule` or `PackedAdapterModule`) into
    `module_dir`, the folder its SavedModel was saved to, with `metadata` (the module's).

    The archive's model computes the module's `__call__` output (features for a feature vector,
    logits for a classifier or EPN); a packed module's archive holds every adapter expert, to be
    picked by name with `load_expert(path, expert=NAME)`. Atomic (see `save_expert`). Raises
    ValueError for an object that holds no Keras model, a `module_dir` without `saved_model.pb`,
    or metadata that does not match the model. Returns the archive's path.
    """
    model = getattr(module, "_model", None)
    if model is None:
        raise ValueError(
            f"write_keras_artifact needs a HubModule or PackedAdapterModule, got {type(module).__name__}"
        )
    if not os.path.isfile(os.path.join(os.fspath(module_dir), "saved_model.pb")):
        raise ValueError(f"{module_dir}: no saved_model.pb; save the module before its archive")
    return expert_archive.save_expert(model, keras_archive_path(module_dir), metadata)


def update_keras_metadata(module_dir, metadata):
    """Rewrites the metadata inside `module_dir`'s Keras archive (after the module's own metadata
    file changed, e.g. a new version number), keeping the model bytes; atomic. Does nothing for a
    module without an archive. Returns the archive's path, or None."""
    path = keras_archive_path(module_dir)
    if not os.path.isfile(path):
        return None
    return expert_archive.replace_metadata(path, metadata)


def load_expert(handle_or_path, expert=None):
    """`bit_experts.load_expert`: the expert's Keras 3 model (`expert_archive.load_expert`) from a
    `.keras` file, a module folder, or any module handle (docs/hub_modules.md, "Handles"):
    `"COLLECTION:expert_greek"` (by name: the latest version; `".../expert_greek/2"` for one),
    `"kaggle:OWNER/MODEL/tensorFlow2/expert_greek/1"` (kagglehub's cache, else a download), a TF
    Hub URL. `expert`: an adapter expert's name in a packed module (`expert_archive.load_expert`).

    Raises `hub_export.ModuleError` (a ValueError), one line naming the handle, when it names no
    module (an unknown name lists the collection's names; a folder of versions without
    `/<version>` asks for it; a Kaggle handle without a version offline asks to pin one),
    FileNotFoundError for a module without an archive, and what `expert_archive.load_expert`
    raises.
    """
    path = os.fspath(handle_or_path)
    if not (os.path.isfile(path) or os.path.isfile(keras_archive_path(path))):
        from hub_export import collection  # reads manifests and handles; it imports TensorFlow

        path = collection.resolve_handle(path)
    return expert_archive.load_expert(path, expert)
