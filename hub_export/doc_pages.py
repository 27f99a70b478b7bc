"""Markdown pages in tfhub.dev's documentation format: one per module and one per collection.

A tfhub.dev page starts with a `# Module publisher/name/version` (or `# Collection ...`) title, a
one-line description, then `<!-- key: value -->` metadata lines, then free markdown sections.
"""

_TASKS = {
    "feature_vector": "image-feature-vector",
    "packed": "image-feature-vector",
    "classifier": "image-classification",
    "epn": "image-classification",
}


def _description(m):
    arch = m.get("architecture", {}).get("preset", "BiT ResNet-v2")
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


def _usage(m, handle):
    size = m.get("resolution", 224)
    if m["role"] == "packed":
        first = (m.get("experts") or [{"name": "EXPERT"}])[0]["name"]
        return (
            "```python\n"
            "import tensorflow as tf\n"
            "import tensorflow_hub as hub\n\n"
            f'module = hub.load("{handle}")\n'
            f"images = tf.zeros([8, {size}, {size}, 3])  # float32 in [0, 1]\n"
            f'features = module.experts["{first}"](images)  # [8, {m["feature_dim"]}]\n'
            f"features = module.call_expert(images, 0)  # the same, by expert id\n"
            "```\n"
        )
    out = "logits" if m["output"] == "logits" else "features"
    return (
        "```python\n"
        "import tensorflow as tf\n"
        "import tensorflow_hub as hub\n\n"
        f'layer = hub.KerasLayer("{handle}", trainable=True)\n'
        f"images = tf.zeros([8, {size}, {size}, 3])  # float32 in [0, 1], any size\n"
        f"{out} = layer(images)  # [8, {m['output_dim']}]\n"
        "```\n"
    )


def module_page(metadata, publisher, handle):
    """The tfhub.dev-style page of one module. `handle` is what the usage snippet loads."""
    m = metadata
    lines = [
        f"# Module {publisher}/{m['name']}/{m['version']}",
        "",
        _description(m),
        "",
        f"<!-- task: {_TASKS[m['role']]} -->",
        "<!-- network-architecture: bit-resnet-v2 -->",
        f"<!-- dataset: {m.get('upstream_dataset', 'unknown')} -->",
        "<!-- format: saved_model_2 -->",
        "<!-- fine-tunable: true -->",
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
    lines += ["", "## Usage", "", _usage(m, handle)]
    if m["role"] in ("classifier", "epn"):
        labels = "label_names.json" if m["role"] == "classifier" else "the metadata's `outputs`"
        activation = m.get("output_activation", "sigmoid")
        lines += [f"Outputs are logits (apply a {activation}); their names are in {labels}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def collection_page(name, publisher, entries, description=None):
    """The tfhub.dev-style page of a collection. `entries` are manifest module entries."""
    lines = [
        f"# Collection {publisher}/{name}/1",
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
    return "\n".join(lines) + "\n"
