"""bit-experts: BiT ResNet-v2 experts, their TF Hub export and their selection (ICLR 2021).

Importing the package registers its Keras layers and models, so `keras.models.load_model` reads a
saved `.keras` file after a plain `import bit_experts`.
"""

from bit_experts import cli

cli.quiet_start()  # Before TensorFlow is imported: hides its start-up lines for our commands.

from bit_experts import resnet_v2  # noqa: E402, F401 (registers the Keras serializables)
from bit_experts.expert_archive import load_expert, save_expert  # noqa: E402, F401 (public API)
