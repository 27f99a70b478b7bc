"""bit-experts: scalable transfer learning with expert models (Puigcerver et al., ICLR 2021)."""

import setuptools

HUB = [
    "tensorflow-hub>=0.16",
    "tf-keras>=2.21,<2.22",  # tensorflow_hub.KerasLayer needs Keras 2 (tf_keras).
    "setuptools<81",  # tensorflow_hub imports pkg_resources, which setuptools 81+ dropped.
]
KAGGLE = ["kagglehub>=1.0"]  # tested with 1.0.3: its cache layout and model_download

setuptools.setup(
    name="bit-experts",
    version="0.1.0",
    description="BiT ResNet-v2 expert models: train, publish as TF Hub modules, select by kNN, fine-tune.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["bit_experts*", "hub_export*", "vtab_eval*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10",
        "tensorflow-datasets>=4.9",
        "absl-py",
        "numpy",
        "matplotlib",  # report plots; also ships the DejaVu fonts the offline world renders.
        "scikit-learn",  # ships the real handwritten-digits task of the offline demo.
        "tqdm",  # progress bar with an ETA of vtab_eval.run's fine-tunes.
        "scipy>=1.15",  # bootstrap intervals of selector scores (vtab_eval.confidence).
        "threadpoolctl>=3",  # one BLAS thread per kNN worker thread (vtab_eval.knn).
    ],
    extras_require={
        # jax: the Keras 3 archive test runs under KERAS_BACKEND=jax too (CPU jaxlib, ~380 MB).
        # The hub and kaggle extras too: hub.KerasLayer and kaggle: handles are tested.
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.6",
            "ruff==0.17.6",
            "jax[cpu]>=0.6",
            "ray>=2.40",
            *HUB,
            *KAGGLE,
        ],
        # Loading our modules needs neither: tf.saved_model.load and the Keras archive do.
        # hub: hub.KerasLayer (tf_keras) for users, and remote tfhub.dev handles.
        "hub": HUB,
        # kaggle: kaggle: handles (kagglehub's cache and downloads) and kagglehub.model_upload.
        "kaggle": KAGGLE,
        # --executor=ray: fine-tunes and embeddings as Ray tasks (docs/scale.md).
        "ray": ["ray>=2.40"],
        # timm imports torchvision at load time; this pair installs (and runs on the CPU) here.
        "bench": ["faiss-cpu", "timm", "torch==2.14.1", "torchvision==0.29.1"],
    },
)
