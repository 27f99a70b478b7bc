"""Markdown pages in tfhub.dev's documentation format: one per module and one per collection.

A tfhub.dev page starts with a `# Module publisher/name/version` (or `# Collection ...`) title, a
one-line description, then `<!-- key: value -->` metadata lines, then free markdown sections. A module
page's usage loads the module by its path in the collection (`COLLECTION/name/version`, so the page
holds true wherever the collection is copied; a Kaggle variation's page: by its `kaggle:` handle,
through `kagglehub` for TF Hub) with TF Hub and, when the module has its Keras archive, with Keras 3
(`bit_experts.load_expert`); it ends with the license and the citation
(`hub_export.publish --license/--citation`; by default the paper for our own modules).
"""

import json

_TASKS = {
    "feature_vector": "image-feature-vector",
    "packed": "image-feature-vector",
    "classifier": "image-classification",
    "epn": "image-classification",
}


# The module is traced for float32 images only (tracing float16 and bfloat16 too would add four
# traces to every export); under a mixed-precision policy Keras would cast the inputs to float16.
MIXED_PRECISION_NOTE = (
    'Pass `dtype="float32"` to `hub.KerasLayer` (as above) when a mixed-precision policy '
    "(`mixed_float16`, `mixed_bfloat16`) is set: the module takes float32 images only, and without "
    "it Keras casts them to the policy's compute dtype and the call finds no matching concrete "
    "function. The layers after it may still compute in float16."
)


def module_description(m):
    """The one-line description of a module from its metadata `m`."""
    arch = m.get("architecture", {}).get("preset", "BiT ResNet-v2")
    if not m.get("upstream_dataset") and m["role"] == "feature_vector" and not m.get("slice"):
        if m.get("source_checkpoint"):  # hub_export.import_bit_checkpoint
            return (
                f"{arch} imported from the checkpoint `{m['source_checkpoint']}` (feature vector), "
                "pre-trained on that checkpoint's data, not on this collection's upstream dataset."
            )
        return "A feature-vector module added as it is; the collection does not record its data."
    dataset = m.get("upstream_dataset", "the upstream dataset")
    if m["role"] == "packed":
        return (
            f"{arch} backbone with {len(m.get('experts', []))} residual adapter experts trained on "
            f"slices of {dataset}, packed in one module."
        )
    if m["role"] == "classifier":
        return f"{arch} classifier over the {m['output_dim']} upstream labels of {dataset}."
    if m["role"] == "epn":
        return (
            f"{arch} expert-prediction network: which of {m['output_dim']} experts fits an image."
        )
    if m.get("slice"):
        what = "adapter expert" if m.get("kind") == "adapter" else "expert"
        return f"{arch} {what} for the `{m['slice']}` slice of {dataset} (feature vector)."
    return f"{arch} trained on {dataset} (feature vector)."


# What our modules cite unless the publisher gives a citation (the paper they implement).
PAPER_CITATION = """@inproceedings{puigcerver2021scalable,
  title={Scalable Transfer Learning with Expert Models},
  author={Puigcerver, Joan and Riquelme, Carlos and Mustafa, Basil and Renggli, Cedric and
          Susano Pinto, Andr{\\'e} and Gelly, Sylvain and Keysers, Daniel and Houlsby, Neil},
  booktitle={International Conference on Learning Representations (ICLR)},
  year={2021}
}"""
NOT_GIVEN = "not given by the publisher"


def _handle_line(path, hub=False):
    """The usage snippets' line naming the module: by its path in the collection, or by its
    `kaggle:` handle (`hub`: TF Hub reads the folder kagglehub downloads)."""
    if path.startswith("kaggle:"):
        if hub:
            slug = json.dumps(path.removeprefix("kaggle:"))
            return f"import kagglehub\n\nhandle = kagglehub.model_download({slug})"
        return f"handle = {json.dumps(path)}"
    return f"handle = {json.dumps('COLLECTION/' + path)}  # COLLECTION: the collection's folder"


def _tf_hub_usage(m, path, get_metadata):
    size = m.get("resolution", 224)
    lines = ["```python", "import tensorflow as tf", "import tensorflow_hub as hub", ""]
    lines.append(_handle_line(path, hub=True))
    if m["role"] == "packed":
        first = (m.get("experts") or [{"name": "EXPERT"}])[0]["name"]
        lines += [
            "module = hub.load(handle)",
            f"images = tf.zeros([8, {size}, {size}, 3])  # float32 in [0, 1]",
            f'features = module.experts["{first}"](images)  # [8, {m.get("feature_dim")}]',
            "features = module.call_expert(images, 0)  # the same, by expert id",
        ]
    else:
        out = "logits" if m.get("output") == "logits" else "features"
        lines += [
            'layer = hub.KerasLayer(handle, trainable=True, dtype="float32")',
            f"images = tf.zeros([8, {size}, {size}, 3])  # float32 in [0, 1], any size",
            f"{out} = layer(images)  # [8, {m['output_dim']}]",
        ]
    if get_metadata:
        lines += [
            "",
            "import json",
            "metadata = json.loads(hub.load(handle).get_metadata().numpy())",
        ]
    text = "\n".join(lines + ["```", ""])
    return text if m["role"] == "packed" else f"{text}\n{MIXED_PRECISION_NOTE}\n"


def _keras_usage(m, path):
    size = m.get("resolution", 224)
    lines = ["```python", "import numpy as np", "", "import bit_experts", "", _handle_line(path)]
    if m["role"] == "packed":
        first = (m.get("experts") or [{"name": "EXPERT"}])[0]["name"]
        lines.append(f'model = bit_experts.load_expert(handle, expert="{first}")')
        dim = m.get("feature_dim")
    else:
        lines.append("model = bit_experts.load_expert(handle)")
        dim = m.get("output_dim")
    lines += [
        f'images = np.zeros([8, {size}, {size}, 3], "float32")  # in [0, 1], any size',
        f"outputs = model(images)  # [8, {dim}]; fine-tune with model.fit on any Keras backend",
        "model.metadata  # this page's metadata, as a dict",
        "```",
        "",
    ]
    return "\n".join(lines)


def _usage(m, path, keras=False, get_metadata=False):
    parts = ["### TF Hub (TensorFlow, tf_keras)", "", _tf_hub_usage(m, path, get_metadata)]
    if keras:
        parts += ["### Keras 3 (TensorFlow or JAX backend)", "", _keras_usage(m, path)]
    return "\n".join(parts)


def _citation(m):
    if m.get("citation"):
        return m["citation"]
    return NOT_GIVEN if m.get("kind") == "third_party" else PAPER_CITATION


def _citation_block(text):
    if text == NOT_GIVEN:
        return [text]
    return ["```bibtex" if text.lstrip().startswith("@") else "```", text, "```"]


def module_page(metadata, publisher, path, keras=False, get_metadata=False):
    """The tfhub.dev-style page of one module.

    Args:
      metadata: the module's metadata dict.
      publisher: the publisher name in the title.
      path: the module's path in its collection (`name/version`), which the usage snippets load,
        or its `kaggle:` handle (a Kaggle variation's page).
      keras: whether the module has its Keras 3 archive (adds the `load_expert` usage).
      get_metadata: whether the SavedModel has `get_metadata()` (adds its usage).
    """
    m = metadata
    license_text = m.get("license") or NOT_GIVEN
    lines = [
        f"# Module {publisher}/{m['name']}/{m['version']}",
        "",
        module_description(m),
        "",
        f"<!-- task: {_TASKS[m['role']]} -->",
        "<!-- network-architecture: bit-resnet-v2 -->",
        f"<!-- dataset: {m.get('upstream_dataset', 'unknown')} -->",
        "<!-- format: saved_model_2 -->",
        "<!-- fine-tunable: true -->",
        f"<!-- license: {license_text} -->",
        "",
        "## Overview",
        "",
        "| field | value |",
        "| --- | --- |",
    ]
    for key in ("kind", "role", "slice", "image_count", "output", "output_dim", "resolution"):
        if m.get(key) is not None:
            lines.append(f"| {key} | {m[key]} |")
    lines.append(f"| input | float32 `[N, H, W, 3]` in {m.get('input_range', [0.0, 1.0])} |")
    lines.append(f"| license | {license_text} |")
    lines += ["", "## Usage", "", _usage(m, path, keras, get_metadata)]
    if m["role"] in ("classifier", "epn"):
        labels = "label_names.json" if m["role"] == "classifier" else "the metadata's `outputs`"
        activation = m.get("output_activation", "sigmoid")
        lines += [f"Outputs are logits (apply a {activation}); their names are in {labels}.", ""]
    lines += ["## License", "", license_text, "", "## Citation", "", *_citation_block(_citation(m))]
    return "\n".join(lines).rstrip() + "\n"


def collection_page(
    name,
    publisher,
    entries,
    description=None,
    version=1,
    license=None,
    citation=None,  # noqa: A002
):
    """The tfhub.dev-style page of a collection. `entries` are manifest module entries; `version`
    is the collection's (`collection.collection_version`)."""
    lines = [
        f"# Collection {publisher}/{name}/{int(version)}",
        "",
        description or "BiT ResNet-v2 expert models trained on slices of an upstream dataset.",
        "",
        "<!-- module-type: image-feature-vector -->",
        "",
        "## Overview",
        "",
        "Experts for transfer learning (Puigcerver et al., ICLR 2021): rank them on a new task by "
        "leave-one-out 1-nearest-neighbour accuracy and fine-tune the best one.",
        "",
        "## Modules",
        "",
        "| module | role | kind | slice | images | outputs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries:
        m = e.get("metadata", {})
        slice_name = m.get("slice") or ""
        images = m.get("image_count")
        lines.append(
            f"| [{publisher}/{e['name']}/{e['version']}]({e['path']}) | {e['role']} | {e['kind']} "
            f"| {slice_name} | {'' if images is None else images} | {m.get('output_dim', '')} |"
        )
    lines += ["", "## License", "", license or "see each module's page"]
    if citation:
        lines += ["", "## Citation", "", *_citation_block(citation)]
    return "\n".join(lines) + "\n"
