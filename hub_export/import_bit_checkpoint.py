r"""Turns a public BiT checkpoint (`.npz`) into a TF Hub image feature-vector module.

    python -m hub_export.import_bit_checkpoint --checkpoint=BiT-M-R50x1.npz --output_dir=DIR
    python -m hub_export.import_bit_checkpoint --checkpoint=BiT-M-R50x1.npz --collection_dir=C \
        [--name=bit_m_r50x1] [--output_dir=DIR] [--license=TEXT] [--citation=TEXT]

The architecture (depth and width) is inferred from the file, and from it what the file does not
store (`checkpoint_settings`): the GroupNorm groups of a known architecture (`bit_experts.presets`:
BiT's 32; the small presets' own) and, for BiT's architectures, BiT's resolution, 224 px (BiT-S
and BiT-M were pre-trained at 224 x 224; Kolesnikov et al., 2020). Whatever cannot be known is
asked for in one line naming its flag (`--groups`, `--resolution`). DIR becomes a reusable
SavedModel: `__call__(images, training=False)` on float32 `[N, H, W, 3]` in [0, 1], returning
`[N, feature_dim]`, with its metadata inside (`get_metadata()`) and beside it, and its Keras 3
archive (`keras/expert.keras`, `bit_experts.load_expert`). With `--collection_dir` the module is
also published into collection C in the same step (`hub_export.publish` with `--module`; without
`--output_dir` it is imported into a temporary folder first).

A public BiT checkpoint is a generic model, so the module is labelled as a baseline (`kind:
baseline`, `slice: null`): the `baseline` selector picks it and ranking can fall back on it. A
collection given a second baseline says so (`collection.baselines_note`).
"""

import functools
import os
import shutil
import tempfile

from absl import app, flags

from bit_experts import atomic_files, checkpoint, cli, lazy_api, presets
from hub_export import identity, keras_artifact

hub_module = lazy_api.module("hub_export.module")  # TensorFlow: imported when the module is built

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "BiT checkpoint .npz file.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to write the TF Hub module to.")
_GROUPS = flags.DEFINE_integer(
    "groups", None, "GroupNorm groups of the checkpoint's architecture; default: inferred."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output_dir.")
_COLLECTION_DIR = flags.DEFINE_string(
    "collection_dir", None, "Also publish the module into this collection (hub_export.publish)."
)
_NAME = flags.DEFINE_string(
    "name", None, "Module name in the collection; default: the checkpoint's file name, slugged."
)
_LICENSE = flags.DEFINE_string(
    "license", None, "License on the module's page (with --collection_dir)."
)
_CITATION = flags.DEFINE_string("citation", None, "Citation on its page (with --collection_dir).")
_SKIP_VALIDATION = flags.DEFINE_bool(
    "skip_validation", False, "List the module without validating it (with --collection_dir)."
)
# BiT's upstream training (and feature-extraction) resolution, the same for every BiT architecture.
BIT_RESOLUTION = 224
_RESOLUTION = flags.DEFINE_integer(
    "resolution",
    None,
    "Image size (pixels) the checkpoint was trained at, written into the metadata; default: "
    "224 for BiT's architectures, else required.",
)


def checkpoint_settings(arch, groups=None, resolution=None):
    """(groups, resolution) of a checkpoint of architecture `arch` (`infer_architecture`): the
    given values, else the preset of the same units and width gives its groups and, when it is
    one of BiT's (`presets.BIT`), BiT's 224 px. ValueError, one line naming `--groups` or
    `--resolution`: what neither gives, or groups that do not divide the channels."""
    units, width = tuple(arch["block_units"]), arch["width_factor"]
    shape = (units, width)
    name = next(
        (n for n, p in presets.PRESETS.items() if (p["block_units"], p["width_factor"]) == shape),
        None,
    )
    what = f"the checkpoint's architecture ({name or f'block units {list(units)}, width {width}'})"
    if groups is None and name is None:
        raise ValueError(
            f"--groups: a checkpoint does not store its GroupNorm groups, and {what} is no "
            "preset's; pass --groups=G as it was trained (BiT's checkpoints: 32)"
        )
    groups = presets.PRESETS[name]["groups"] if groups is None else groups
    channels = round(64 * width)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or channels % groups:
        raise ValueError(f"--groups={groups}: must divide the {channels} channels of {what}")
    if resolution is None and name not in presets.BIT:
        raise ValueError(
            f"--resolution: {what} is not one of BiT's, so the image size it was trained at is "
            "unknown; pass --resolution=PIXELS"
        )
    return groups, BIT_RESOLUTION if resolution is None else resolution


def import_checkpoint(checkpoint_path, output_dir, groups=None, overwrite=False, resolution=None):
    """Loads `checkpoint_path` strictly and saves it as a feature-vector module; returns metadata.

    The module is a baseline (`kind: "baseline"`, `slice: None`) whose metadata records
    `resolution` pixels; `groups` and `resolution` default to what the architecture tells
    (`checkpoint_settings`). `output_dir` gets the SavedModel (metadata inside and beside it) and
    its Keras 3 archive `keras/expert.keras`. Raises ValueError for a resolution that is not a
    positive integer (before anything is read), or for groups or a resolution that cannot be
    known or do not fit (one line naming the flag, before anything is written), ValueError/OSError
    for a checkpoint that does not load, FileExistsError for an existing `output_dir` without
    `overwrite`.
    """
    bad = isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1
    if resolution is not None and bad:
        raise ValueError(f"resolution must be a positive integer (pixels), got {resolution!r}")
    atomic_files.require_local(
        output_dir,
        "--output_dir",
        "the module is saved locally; publish it to a URL with --collection_dir (or "
        "hub_export.publish --module=DIR --collection_dir=URL)",
    )
    weights = checkpoint.read_npz(checkpoint_path)
    arch = checkpoint.infer_architecture(weights)
    groups, resolution = checkpoint_settings(arch, groups, resolution)
    model = checkpoint.load_bit_checkpoint(weights, num_classes=0, groups=groups)
    metadata = {
        "name": os.path.splitext(os.path.basename(checkpoint_path))[0],
        "kind": "baseline",
        "role": "feature_vector",
        "slice": None,
        "architecture": {
            "block_units": list(model.block_units),
            "width_factor": model.width_factor,
            "groups": model.groups,
        },
        "source_checkpoint": os.path.basename(checkpoint_path),
        "output": "features",
        "output_dim": model.feature_dim,
        "feature_dim": model.feature_dim,
        "resolution": resolution,
        "input_range": [0.0, 1.0],
    }
    module = hub_module.HubModule(model, output="features")
    metadata[identity.FINGERPRINT_FIELD] = identity.weights_fingerprint(
        module, identity.export_settings(metadata)
    )
    hub_module.save_module(module, output_dir, metadata, overwrite=overwrite)
    keras_artifact.write_keras_artifact(module, output_dir, metadata)
    return metadata


def publish_checkpoint(
    checkpoint_path,
    collection_dir,
    output_dir=None,
    groups=None,
    overwrite=False,
    resolution=None,
    name=None,
    **publish_options,
):
    """Imports `checkpoint_path` (`import_checkpoint`) and publishes the module into
    `collection_dir` in one step (`hub_export.publish.publish(modules=[...])`).

    `output_dir` keeps the imported module there too; without it the module is imported into a
    temporary folder, removed afterwards. `name` is its module name in the collection (default:
    the checkpoint's file name, slugged); `publish_options` go to `publish` (`renames`,
    `license`, `citation`, `validate_modules`, `publisher`, `log`, ...). Rerunning it skips a module
    already listed from the same checkpoint and options. Returns the manifest entries written.
    """
    from hub_export import publish  # noqa: PLC0415 (publish imports validation and collections)

    temporary = None
    if output_dir is None:
        temporary = tempfile.mkdtemp(prefix="import_bit_checkpoint-")
        output_dir, overwrite = os.path.join(temporary, "module"), False
    try:
        import_checkpoint(checkpoint_path, output_dir, groups, overwrite, resolution)
        spec = os.fspath(output_dir) + (f":name={name}" if name else "")
        return publish.publish((), collection_dir, modules=[spec], **publish_options)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value or not (_OUTPUT_DIR.value or _COLLECTION_DIR.value):
        raise app.UsageError("--checkpoint and --output_dir or --collection_dir are required")
    if _COLLECTION_DIR.value:
        from hub_export import publish  # noqa: PLC0415

        with cli.one_line_errors(
            "import_bit_checkpoint",
            Exception,  # one line for expected failures, as publish
            line=lambda error: publish.error_line(error, _COLLECTION_DIR.value),
        ):
            written = publish_checkpoint(
                _CHECKPOINT.value,
                _COLLECTION_DIR.value,
                output_dir=_OUTPUT_DIR.value,
                groups=_GROUPS.value,
                overwrite=_OVERWRITE.value,
                resolution=_RESOLUTION.value,
                name=_NAME.value,
                license=_LICENSE.value,
                citation=_CITATION.value,
                validate_modules=not _SKIP_VALIDATION.value,
                log=functools.partial(print, flush=True),
            )
        publish.print_written(written, _COLLECTION_DIR.value)
        return
    with cli.one_line_errors("import_bit_checkpoint", (ValueError, OSError)):
        metadata = import_checkpoint(
            _CHECKPOINT.value,
            _OUTPUT_DIR.value,
            _GROUPS.value,
            _OVERWRITE.value,
            resolution=_RESOLUTION.value,
        )
    print(f"wrote {_OUTPUT_DIR.value} (feature_dim {metadata['feature_dim']})", flush=True)
    print(f"wrote {_OUTPUT_DIR.value}: {metadata['name']}, feature_dim {metadata['feature_dim']}")


if __name__ == "__main__":
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
