"""bit-experts: BiT ResNet-v2 experts, their TF Hub export and their selection (ICLR 2021).

Importing the package registers its Keras layers and models, so `keras.models.load_model` reads a
saved `.keras` file after a plain `import bit_experts`. `load_expert` loads a published expert by
path or handle (`hub_export.keras_artifact.load_expert`, imported on first use: resolving handles
reads collections, which is `hub_export`'s); `save_expert` writes one (`expert_archive`).
"""

from bit_experts import cli

cli.quiet_start()  # Before TensorFlow is imported: hides its start-up lines for our commands.

from bit_experts import lazy_api, resnet_v2  # noqa: E402, F401 (resnet_v2 registers the classes)
from bit_experts.expert_archive import save_expert  # noqa: E402, F401 (public API)

lazy_api.install(globals(), {"load_expert": ("hub_export.keras_artifact", "load_expert")})
