"""Everything decided before training starts: the upstream source, its hierarchy, the expert domains.

All input checks (a cycle in the hierarchy, a label missing from it, an unknown label id, an empty
slice) happen here, so a bad input stops the job before any model is built.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from bit_experts import atomic_files, expert_domains
from bit_experts.expert_domains import ExpertDomain
from bit_experts.hierarchy import Hierarchy, two_level_from_tfds

if TYPE_CHECKING:  # bit_experts.data imports TensorFlow: open_source imports it when it runs
    from bit_experts.data import UpstreamSource

DOMAINS_FILE = "expert_domains.json"


@dataclasses.dataclass(frozen=True, eq=False)
class Upstream:
    """The upstream data and the expert domains chosen on it."""

    source: UpstreamSource
    hierarchy: Hierarchy
    domains: list[ExpertDomain]


def load_hierarchy(config: dict, source: UpstreamSource) -> Hierarchy:
    """The hierarchy named by `config['hierarchy']['source']` (see docs/training.md)."""
    spec = config["hierarchy"]["source"]
    kind, _, arg = spec.partition(":")
    if spec == "upstream":
        if source.hierarchy_edges is None:
            raise ValueError(
                f"hierarchy.source='upstream' but source {source.name!r} carries no hierarchy; "
                "use is_a:PATH, json:PATH or tfds_two_level"
            )
        return Hierarchy.from_edges(source.hierarchy_edges)
    if kind == "is_a" and arg:
        return Hierarchy.from_is_a_file(arg)
    if kind == "json" and arg:
        return Hierarchy.from_json(arg)
    if spec == "tfds_two_level":
        up = config["upstream"]
        if not up["source"].startswith("tfds:"):
            raise ValueError("hierarchy.source='tfds_two_level' needs a tfds:NAME upstream source")
        return two_level_from_tfds(
            up["source"].partition(":")[2],
            data_dir=up["data_dir"],
            split=up["split"],
            fine_key=up["label_key"],
            coarse_key=config["hierarchy"]["coarse_key"],
        )
    raise ValueError(
        f"unknown hierarchy source {spec!r}; expected 'upstream', 'is_a:PATH', 'json:PATH' or "
        "'tfds_two_level'"
    )


def open_source(config: dict) -> UpstreamSource:
    """The upstream source of `config['upstream']`."""
    from bit_experts.data import load_source

    up = config["upstream"]
    return load_source(
        up["source"],
        data_dir=up["data_dir"],
        split=up["split"],
        image_key=up["image_key"],
        label_key=up["label_key"],
        label_names=up["label_names"],
        world_seed=up["world_seed"],
        world_images_per_class=up["world_images_per_class"],
        world_image_size=up["world_image_size"],
        world_scripts=up["world_scripts"],
    )


def prepare_upstream(
    config: dict,
    workdir: str,
    chief: bool = True,
    print_fn: Callable[[str], None] = print,
    source: UpstreamSource | None = None,
) -> Upstream:
    """Opens the data, builds the hierarchy and chooses (or reloads) the expert domains.

    The domains are saved to WORKDIR/expert_domains.json on the first run and reloaded afterwards,
    so a resumed job trains exactly the same experts. `source` replaces `config['upstream']` (for
    data that is already in memory, e.g. `data.array_source`).
    """
    source = source or open_source(config)
    hierarchy = load_hierarchy(config, source)
    images = source.labelled_images()  # Validates every label id.
    hierarchy.check_nodes(source.label_names, what="upstream label names")
    path = os.path.join(workdir, DOMAINS_FILE)
    if atomic_files.isfile(path):
        try:
            domains = expert_domains.load_domains(path)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(
                f"{e}; delete {path} and {expert_domains.index_file_path(path)} and rerun: the "
                "same config and data choose the same domains again"
            ) from None
    else:
        experts = config["experts"]
        domains = expert_domains.choose_expert_domains(
            hierarchy,
            images,
            top_k=experts["top_k"],
            min_images=experts["min_images"],
            include_roots=experts["include_roots"],
        )
        if experts["control"]:
            domains = expert_domains.random_control_domains(
                domains, images, seed=experts["control_seed"]
            )
    for d in domains:
        if d.image_count < 1:
            raise ValueError(f"expert domain {d.name!r} is an empty slice")
        if d.image_indices.max() >= source.num_images:
            raise ValueError(
                f"expert domain {d.name!r} refers to image {int(d.image_indices.max())} but the "
                f"upstream data has {source.num_images} images ({path} is from other data?)"
            )
    if chief and not atomic_files.isfile(path):
        atomic_files.makedirs(workdir)
        expert_domains.save_domains(domains, path)
    print_fn(
        f"upstream {source.name}: {source.num_images} images, {source.num_labels} labels, "
        f"hierarchy {hierarchy!r}\nexpert domains:\n{expert_domains.format_table(domains)}"
    )
    return Upstream(source, hierarchy, domains)
