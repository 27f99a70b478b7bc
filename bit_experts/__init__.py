"""bit-experts: BiT ResNet-v2 experts, their TF Hub export and their selection (ICLR 2021).

Importing the package registers its Keras layers and models, so `keras.models.load_model` reads a
saved `.keras` file after a plain `import bit_experts`. Our own commands (`python -m
bit_experts.train`, `vtab_eval.rank`, ...) skip that: they parse and check their flags first and
import Keras and TensorFlow only when their work starts (bit_experts.cli). `load_expert` loads a
published expert by path or handle (`hub_export.keras_artifact.load_expert`: resolving handles
reads collections, which is `hub_export`'s); `save_expert` writes one (`expert_archive`); both are
imported on first use.
"""

from bit_experts import cli, lazy_api

cli.quiet_start()  # Before TensorFlow is imported: hides its start-up lines for our commands.

if cli.command_argv() is None:  # a library import, not one of our commands
    from bit_experts import resnet_v2  # noqa: E402, F401 (registers the Keras serializables)

lazy_api.install(
    globals(),
    {
        "load_expert": ("hub_export.keras_artifact", "load_expert"),
        "save_expert": ("bit_experts.expert_archive", "save_expert"),
    },
)
