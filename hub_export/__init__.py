"""hub_export: experts as TF Hub modules and collections (docs/hub_modules.md).

The public Python API (docs/api.md), imported lazily on first use so that `import hub_export` imports
none of the submodules below (and so no import cycle with vtab_eval):

  publish_collection(workdirs, collection_dir, ...)   `hub_export.publish.publish`
  import_checkpoint(checkpoint_path, output_dir, ...)  `hub_export.import_bit_checkpoint`
  publish_checkpoint(checkpoint_path, collection_dir, ...)
  resolve_pool(spec, ...)                              `hub_export.collection.resolve_pool`
  write_kaggle_layout(collection_dir, kaggle_dir, owner, model)
                                                       `hub_export.kaggle_models.write_layout`
  read_metadata(module_dir)                            `hub_export.metadata.read_metadata`
  module_identity(entry_or_path)                       `hub_export.identity.module_identity`
  CollectionError, ModuleError                         the errors they raise (ValueError)

(`hub_export.publish` is the command's module, so the function is `publish_collection`.)
"""

# Importing bit_experts first hides TF's start-up lines for our commands (bit_experts.cli).
from bit_experts import lazy_api

_API = {
    "publish_collection": ("hub_export.publish", "publish"),
    "import_checkpoint": ("hub_export.import_bit_checkpoint", "import_checkpoint"),
    "publish_checkpoint": ("hub_export.import_bit_checkpoint", "publish_checkpoint"),
    "resolve_pool": ("hub_export.collection", "resolve_pool"),
    "write_kaggle_layout": ("hub_export.kaggle_models", "write_layout"),
    "read_metadata": ("hub_export.metadata", "read_metadata"),
    "module_identity": ("hub_export.identity", "module_identity"),
    "CollectionError": ("hub_export.handles", "CollectionError"),
    "ModuleError": ("hub_export.handles", "ModuleError"),
}
lazy_api.install(globals(), _API)
