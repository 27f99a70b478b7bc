"""The Keras 3 native artifact of a module: `<module folder>/keras/expert.keras`.

Written from the very Keras model the SavedModel was traced from (the `BiTResNetV2` a `HubModule` or
`PackedAdapterModule` holds), so both hold the same weights and compute the same function; the
archive carries the module's metadata (`bit_experts.expert_archive`). It lies inside the module
folder, so it is covered by the module's checksum, moved into a collection with it, and found from
the module's path or handle by `bit_experts.load_expert`.
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
