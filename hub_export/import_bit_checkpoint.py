r"""Turns a public BiT checkpoint (`.npz`) into a TF Hub image feature-vector module.

    python -m hub_export.import_bit_checkpoint --checkpoint=BiT-M-R50x1.npz --output_dir=DIR

The architecture (depth and width) is inferred from the file. DIR becomes a reusable SavedModel:
`__call__(images, training=False)` on float32 `[N, H, W, 3]` in [0, 1], returning `[N, feature_dim]`.
"""

import os

from absl import app, flags, logging

from bit_experts import checkpoint
from hub_export.module import HubModule, save_module

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "BiT checkpoint .npz file.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to write the TF Hub module to.")
_GROUPS = flags.DEFINE_integer("groups", 32, "GroupNorm groups of the checkpoint's architecture.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output_dir.")


def import_checkpoint(checkpoint_path, output_dir, groups=32, overwrite=False):
    """Loads `checkpoint_path` strictly and saves it as a feature-vector module; returns metadata."""
    model = checkpoint.load_bit_checkpoint(checkpoint_path, num_classes=0, groups=groups)
    metadata = {
        "name": os.path.splitext(os.path.basename(checkpoint_path))[0],
        "kind": "full",
        "architecture": {
            "block_units": list(model.block_units),
            "width_factor": model.width_factor,
            "groups": model.groups,
        },
        "source_checkpoint": os.path.basename(checkpoint_path),
        "feature_dim": model.feature_dim,
        "input_range": [0.0, 1.0],
    }
    save_module(HubModule(model, output="features"), output_dir, metadata, overwrite=overwrite)
    return metadata


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value or not _OUTPUT_DIR.value:
        raise app.UsageError("both --checkpoint and --output_dir are required")
    try:
        metadata = import_checkpoint(
            _CHECKPOINT.value, _OUTPUT_DIR.value, _GROUPS.value, _OVERWRITE.value
        )
    except (ValueError, OSError) as error:
        raise SystemExit(f"import_bit_checkpoint: error: {error}") from None
    logging.info("wrote %s (feature_dim %d)", _OUTPUT_DIR.value, metadata["feature_dim"])
    print(f"wrote {_OUTPUT_DIR.value}: {metadata['name']}, feature_dim {metadata['feature_dim']}")


if __name__ == "__main__":
    app.run(main)
