"""Choosing expert domains: the hierarchy nodes whose image slices the experts are trained on.

Every image belongs to its labels and all their ancestors, so slices overlap (the lion image is in
the organism, animal, carnivore, felidae and lion slices). Domains are the K largest nodes (the
paper's ImageNet-21k setting) or every node with at least N images (its JFT setting). Roots count
like any node, as in the paper: its released ImageNet-21k experts include the WordNet root `entity`
and the top nodes under it, which give the selector a generic member to fall back on
(`include_roots=False` leaves them out). Random "control" domains of the same sizes are the paper's
appendix G baseline.

Counting goes through label *sets*: images with the same set of labels share one ancestor closure,
so the hierarchy is walked once per distinct set, not once per image. The saved format is in
docs/hierarchy.md.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import itertools
import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from bit_experts import atomic_files
from bit_experts.hierarchy import Hierarchy

_INDEX_SUFFIX = ".indices.npz"


@dataclasses.dataclass(frozen=True, eq=False)
class ExpertDomain:
    """One expert's slice of the upstream data.

    Attributes:
      name: the hierarchy node (or `random_<node>` for a control).
      image_count: number of images in the slice.
      parents: the node's direct parents in the hierarchy (empty for a control).
      image_indices: sorted int64 indices of the slice's images in the upstream dataset.
      label_prior: float32 [num_labels], the distribution of the images' upstream labels.
      control_of: for a random control, the name of the domain whose size it copies.
    """

    name: str
    image_count: int
    parents: list[str]
    image_indices: np.ndarray
    label_prior: np.ndarray
    control_of: str | None = None

    def __post_init__(self):
        # Normalise types (JSON gives lists) without giving up immutability.
        object.__setattr__(self, "parents", list(self.parents))
        object.__setattr__(self, "image_indices", np.asarray(self.image_indices, dtype=np.int64))
        object.__setattr__(self, "label_prior", np.asarray(self.label_prior, dtype=np.float32))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"expert domain name must be a non-empty string, got {self.name!r}")
        if self.image_count < 1:
            raise ValueError(
                f"expert domain {self.name!r} is empty (image_count={self.image_count})"
            )
        if self.image_indices.ndim != 1 or len(self.image_indices) != self.image_count:
            raise ValueError(
                f"expert domain {self.name!r}: image_count={self.image_count} but "
                f"{self.image_indices.shape} image indices"
            )
        if self.image_indices[0] < 0 or np.any(np.diff(self.image_indices) <= 0):
            raise ValueError(
                f"expert domain {self.name!r}: image_indices must be sorted, distinct and >= 0"
            )
        if self.label_prior.ndim != 1 or not np.isclose(self.label_prior.sum(), 1.0, atol=1e-4):
            raise ValueError(
                f"expert domain {self.name!r}: label_prior must be a 1-D distribution summing to 1"
            )


class LabelledImages:
    """The upstream dataset's labels: a label vocabulary and each image's label ids.

    Args:
      label_names: label id i is hierarchy node `label_names[i]`.
      image_labels: for each image, a list of label ids (multi-label); or a 1-D integer array with
        one label id per image (the cheap form for single-label data such as ImageNet-21k).
    """

    def __init__(self, label_names: Sequence[str], image_labels):
        self.label_names = tuple(label_names)
        if not self.label_names:
            raise ValueError("label_names is empty")
        if len(set(self.label_names)) != len(self.label_names):
            dup = sorted(n for n, k in collections.Counter(self.label_names).items() if k > 1)
            raise ValueError(f"label_names has duplicates: {dup[:10]}")
        self._offsets, self._flat = _to_csr(image_labels)
        if len(self._offsets) == 1:
            raise ValueError("image_labels is empty: there are no images")
        empty = np.flatnonzero(np.diff(self._offsets) == 0)
        if len(empty):
            raise ValueError(f"image {empty[0]} has no labels ({len(empty)} such images)")
        bad = np.flatnonzero((self._flat < 0) | (self._flat >= len(self.label_names)))
        if len(bad):
            image = int(np.searchsorted(self._offsets, bad[0], side="right") - 1)
            raise ValueError(
                f"image {image} has unknown label id {self._flat[bad[0]]}; valid ids are "
                f"0..{len(self.label_names) - 1}"
            )
        self._groups: _LabelGroups | None = None

    @property
    def num_images(self) -> int:
        return len(self._offsets) - 1

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def label_prior(self, image_indices: np.ndarray) -> np.ndarray:
        """float32 [num_labels]: the distribution of labels over the given images.

        Each distinct label of an image counts once, so a two-label image adds to two entries.
        """
        image_indices = np.asarray(image_indices, dtype=np.int64)
        if len(image_indices) == 0:
            raise ValueError("label_prior of an empty set of images")
        if image_indices.min() < 0 or image_indices.max() >= self.num_images:
            raise ValueError(f"image indices must lie in 0..{self.num_images - 1}")
        groups = self._label_groups()
        counts = np.bincount(groups.inverse[image_indices], minlength=groups.size)
        group_ids = np.flatnonzero(counts)
        return groups.prior(group_ids, counts[group_ids])

    def _label_groups(self) -> _LabelGroups:
        """The images grouped by their set of labels (computed once)."""
        if self._groups is None:
            self._groups = _LabelGroups(self._offsets, self._flat, self.num_labels)
        return self._groups


class _LabelGroups:
    """Images grouped by distinct label set.

    Group g has the `set_lengths[g]` labels `set_labels[set_offsets[g]:set_offsets[g + 1]]` and
    `counts[g]` images; `inverse[image]` is the image's group.
    """

    def __init__(self, offsets: np.ndarray, flat: np.ndarray, num_labels: int):
        n = len(offsets) - 1
        single = np.diff(offsets) == 1
        # Single-label images (the common case) are grouped by their one label without a loop.
        present, single_inverse = np.unique(flat[offsets[:-1][single]], return_inverse=True)
        label_sets = [(label,) for label in present.tolist()]
        inverse = np.empty(n, dtype=np.int64)
        inverse[single] = single_inverse
        multi = np.flatnonzero(~single)
        if len(multi):
            key_to_group = {s: g for g, s in enumerate(label_sets)}
            off, labels = offsets.tolist(), flat.tolist()
            for i in multi.tolist():
                key = tuple(sorted(set(labels[off[i] : off[i + 1]])))
                g = key_to_group.setdefault(key, len(label_sets))
                if g == len(label_sets):
                    label_sets.append(key)
                inverse[i] = g
        self.size = len(label_sets)
        self.inverse = inverse
        self.counts = np.bincount(inverse, minlength=self.size)
        self.set_lengths = np.fromiter(map(len, label_sets), dtype=np.int64, count=self.size)
        self.set_offsets = np.concatenate([[0], np.cumsum(self.set_lengths)])
        self.set_labels = np.fromiter(itertools.chain.from_iterable(label_sets), dtype=np.int64)
        self._num_labels = num_labels
        self._image_order: np.ndarray | None = None  # Images sorted by group; built on demand.
        self._group_starts: np.ndarray | None = None

    def prior(self, group_ids: np.ndarray, group_counts: np.ndarray) -> np.ndarray:
        """Label distribution of `group_counts[i]` images from each group `group_ids[i]`."""
        lengths = self.set_lengths[group_ids]
        entries = _ranges(self.set_offsets[group_ids], lengths)
        weights = np.repeat(group_counts.astype(np.float64), lengths)
        counts = np.bincount(self.set_labels[entries], weights=weights, minlength=self._num_labels)
        return (counts / counts.sum()).astype(np.float32)

    def images_of(self, group_ids: np.ndarray) -> np.ndarray:
        """Sorted indices of the images in the given groups."""
        total = int(self.counts[group_ids].sum())
        if total * 16 > len(self.inverse):  # A large share of the data: one pass over all images.
            member = np.zeros(self.size, dtype=bool)
            member[group_ids] = True
            return np.flatnonzero(member[self.inverse])
        if self._image_order is None:
            self._image_order = np.argsort(self.inverse, kind="stable")
            self._group_starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        picked = self._image_order[_ranges(self._group_starts[group_ids], self.counts[group_ids])]
        return np.sort(picked, kind="stable")  # Each group's images are a sorted run.


def choose_expert_domains(
    hierarchy: Hierarchy,
    images: LabelledImages,
    *,
    top_k: int | None = None,
    min_images: int | None = None,
    include_roots: bool = True,
) -> list[ExpertDomain]:
    """Picks the expert domains: the `top_k` largest nodes, or every node with >= `min_images`.

    Give exactly one of `top_k`/`min_images`. A root (a node without parents) is eligible like any
    other node by default, as in the paper (Puigcerver et al., ICLR 2021): the top-K nodes of its
    ImageNet-21k collection include the WordNet root `entity`, a generic expert whose slice is
    every image. `include_roots=False` leaves roots out. Nodes without images are never chosen.

    Returns domains sorted by image count (largest first), ties by name. Raises ValueError when
    fewer than `top_k` eligible nodes have images, or when no eligible node reaches `min_images`.
    """
    if (top_k is None) == (min_images is None):
        raise ValueError(f"give exactly one of top_k or min_images, got {top_k=}, {min_images=}")
    for arg, value in (("top_k", top_k), ("min_images", min_images)):
        if value is not None and (not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    hierarchy.check_nodes(images.label_names, what="upstream label names")

    nodes = hierarchy.nodes
    groups = images._label_groups()
    pair_groups, pair_nodes = _group_node_pairs(hierarchy, images.label_names, groups)
    node_counts = np.bincount(
        pair_nodes, weights=groups.counts[pair_groups], minlength=len(nodes)
    ).astype(np.int64)

    if not isinstance(include_roots, bool | np.bool_):
        raise ValueError(f"include_roots must be a bool, got {include_roots!r}")
    eligible = "" if include_roots else "non-root "
    candidates = [
        i
        for i, n in enumerate(nodes)
        if node_counts[i] > 0 and (include_roots or hierarchy.parents(n))
    ]
    candidates.sort(key=lambda i: (-node_counts[i], nodes[i]))
    if top_k is not None:
        if top_k > len(candidates):
            raise ValueError(
                f"top_k={top_k} expert domains requested but only {len(candidates)} {eligible}"
                "hierarchy nodes have images"
            )
        chosen = candidates[:top_k]
    else:
        chosen = [i for i in candidates if node_counts[i] >= min_images]
        if not chosen:
            largest = int(node_counts[candidates[0]]) if candidates else 0
            raise ValueError(
                f"no {eligible}hierarchy node has min_images={min_images} images "
                f"(the largest has {largest})"
            )

    # The groups of each chosen node: keep the pairs that touch a chosen node and sort them by its
    # rank among the chosen (a small integer, so the stable sort is a linear-time radix sort).
    rank = np.full(len(nodes), -1, dtype=np.int64)
    rank[chosen] = np.arange(len(chosen))
    pair_ranks = rank[pair_nodes]
    keep = pair_ranks >= 0
    pair_groups, pair_ranks = pair_groups[keep], pair_ranks[keep]
    if len(chosen) <= np.iinfo(np.uint16).max:
        pair_ranks = pair_ranks.astype(np.uint16)
    order = np.argsort(pair_ranks, kind="stable")
    pair_groups = pair_groups[order]
    ends = np.cumsum(np.bincount(pair_ranks, minlength=len(chosen)))
    domains = []
    for i, end, start in zip(chosen, ends, np.concatenate([[0], ends[:-1]]), strict=True):
        group_ids = pair_groups[start:end]
        indices = groups.images_of(group_ids)
        domains.append(
            ExpertDomain(
                name=nodes[i],
                image_count=len(indices),
                parents=list(hierarchy.parents(nodes[i])),
                image_indices=indices.astype(np.int64, copy=False),
                label_prior=groups.prior(group_ids, groups.counts[group_ids]),
            )
        )
    return domains


def _group_node_pairs(
    hierarchy: Hierarchy, label_names: Sequence[str], groups: _LabelGroups
) -> tuple[np.ndarray, np.ndarray]:
    """(group, node) pairs, one per node that a group's images belong to.

    A node reached through two labels of one group, or by two paths, appears once, so each image
    is counted once per node.
    """
    node_id = {n: i for i, n in enumerate(hierarchy.nodes)}
    closures = [
        sorted([node_id[name], *(node_id[a] for a in hierarchy.ancestors(name))])
        for name in label_names
    ]
    closure_lengths = np.fromiter(map(len, closures), dtype=np.int64, count=len(closures))
    closure_offsets = np.concatenate([[0], np.cumsum(closure_lengths)])
    closure_nodes = np.fromiter(itertools.chain.from_iterable(closures), dtype=np.int64)

    # One entry per (group, label); expand each to the label's closure.
    set_lengths = groups.set_lengths
    entry_groups = np.repeat(np.arange(groups.size), set_lengths)
    entry_labels = groups.set_labels
    lengths = closure_lengths[entry_labels]
    pair_nodes = closure_nodes[_ranges(closure_offsets[entry_labels], lengths)]
    pair_groups = np.repeat(entry_groups, lengths)
    multi = set_lengths[pair_groups] > 1
    if multi.any():  # Only multi-label groups can repeat a node.
        # A stable sort, not np.unique: the keys come in sorted runs (group-major, each closure
        # sorted), which timsort merges quickly, while hashing 10^7 keys is very slow.
        keys = np.sort(pair_groups[multi] * len(node_id) + pair_nodes[multi], kind="stable")
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        pair_groups = np.concatenate([pair_groups[~multi], keys // len(node_id)])
        pair_nodes = np.concatenate([pair_nodes[~multi], keys % len(node_id)])
    return pair_groups, pair_nodes


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, start + length) for each pair, without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends_before = np.cumsum(lengths) - lengths
    return np.repeat(starts - ends_before, lengths) + np.arange(total, dtype=np.int64)


def random_control_domains(
    domains: Iterable[ExpertDomain], images: LabelledImages, seed: int
) -> list[ExpertDomain]:
    """One random-subset control per domain: same size, images drawn uniformly without replacement.

    Named `random_<name>`, with `control_of=<name>` and the subset's own label prior. The same
    seed gives the same subsets.
    """
    rng = np.random.default_rng(seed)
    controls = []
    for d in domains:
        if d.image_count > images.num_images:
            raise ValueError(
                f"domain {d.name!r} has {d.image_count} images but the dataset only "
                f"{images.num_images}"
            )
        indices = _random_subset(rng, images.num_images, d.image_count)
        controls.append(
            ExpertDomain(
                name=f"random_{d.name}",
                image_count=d.image_count,
                parents=[],
                image_indices=indices,
                label_prior=images.label_prior(indices),
                control_of=d.name,
            )
        )
    return controls


def _random_subset(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k sorted distinct indices from range(n), uniformly; linear time even when k is near n."""
    if k * 16 < n:
        return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    # The k smallest of n random keys are a uniform k-subset, and flatnonzero returns them sorted.
    keys = rng.random(n)
    threshold = np.partition(keys, k - 1)[k - 1]
    chosen = keys < threshold
    ties = np.flatnonzero(keys == threshold)  # Almost always just the k-th key itself.
    chosen[ties[: k - int(chosen.sum())]] = True
    return np.flatnonzero(chosen)


def format_table(domains: Sequence[ExpertDomain]) -> str:
    """An aligned text table: rank, name, image count, parents (or what a control copies)."""
    rows = [("#", "name", "images", "parents")]
    for rank, d in enumerate(domains, start=1):
        parents = f"(control of {d.control_of})" if d.control_of else ", ".join(d.parents) or "-"
        rows.append((str(rank), d.name, str(d.image_count), parents))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join(
        f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    )


def index_file_path(json_path: str) -> str:
    """Where save_domains puts the image indices next to `json_path`."""
    root, ext = os.path.splitext(json_path)
    return (root if ext == ".json" else json_path) + _INDEX_SUFFIX


def save_domains(domains: Sequence[ExpertDomain], path: str) -> None:
    """Writes the domains to `path` (JSON) and their image indices to index_file_path(path) (npz).

    Both writes are atomic; the indices are written first so the JSON never names missing data.
    """
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise ValueError(f"expert domain names must be unique, got {names}")
    index_path = index_file_path(path)
    # int32 halves the file for any dataset under 2**31 images; load_domains widens to int64.
    small = all(d.image_indices.max(initial=0) < 2**31 for d in domains)
    dtype = np.int32 if small else np.int64
    arrays = {f"d{i}": d.image_indices.astype(dtype) for i, d in enumerate(domains)}
    atomic_files.write_atomic(index_path, lambda f: np.savez(f, **arrays))
    entries = [
        {
            "name": d.name,
            "image_count": int(d.image_count),
            "parents": list(d.parents),
            "control_of": d.control_of,
            "label_prior": [float(p) for p in d.label_prior.astype(np.float32)],
            "image_indices": {"file": os.path.basename(index_path), "key": f"d{i}"},
        }
        for i, d in enumerate(domains)
    ]
    # One domain per line: diffable, and still plain JSON.
    atomic_files.write_text(path, "[\n" + ",\n".join(map(json.dumps, entries)) + "\n]\n")


def load_domains(path: str) -> list[ExpertDomain]:
    """Reads domains written by save_domains (the indices file must sit next to the JSON).

    `path` may be a URL of a `tf.io.gfile` filesystem (`gs://...`, a remote work directory)."""
    entries = atomic_files.read_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of expert domains")
    required = {"name", "image_count", "parents", "label_prior", "image_indices"}
    loaded = {}  # Index file path -> open NpzFile.
    domains = []
    try:
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not required <= e.keys():
                missing = sorted(required - (e.keys() if isinstance(e, dict) else set()))
                raise ValueError(f"{path}: entry {i} is missing {missing}")
            ref = e["image_indices"]
            if not isinstance(ref, dict) or not {"file", "key"} <= ref.keys():
                raise ValueError(f"{path}: entry {i} image_indices must be {{'file', 'key'}}")
            name = ref["file"]
            if (
                not isinstance(name, str)
                or name in ("", ".", "..")
                or name != os.path.basename(name)
            ):
                raise ValueError(
                    f"{path}: entry {i} image_indices file {name!r} leaves the folder of "
                    "expert_domains.json (expected a file name beside it)"
                )
            file = os.path.join(os.path.dirname(atomic_files.abspath(path)), name)
            if file not in loaded:
                if not atomic_files.exists(file):
                    raise FileNotFoundError(f"{path}: image index file {file} does not exist")
                local = not atomic_files.is_url(file)
                try:
                    loaded[file] = np.load(
                        file if local else io.BytesIO(atomic_files.read_bytes(file))
                    )
                except (OSError, ValueError, zipfile.BadZipFile) as err:
                    raise ValueError(f"image index file {file} cannot be read ({err})") from None
            if ref["key"] not in loaded[file].files:
                raise ValueError(f"{path}: entry {i} key {ref['key']!r} is not in {file}")
            try:
                indices = loaded[file][ref["key"]].astype(np.int64)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                raise ValueError(f"image index file {file} cannot be read ({err})") from None
            domains.append(
                ExpertDomain(
                    name=e["name"],
                    image_count=int(e["image_count"]),
                    parents=list(e["parents"]),
                    image_indices=indices,
                    label_prior=np.asarray(e["label_prior"], dtype=np.float32),
                    control_of=e.get("control_of"),
                )
            )
    finally:
        for npz in loaded.values():
            npz.close()
    return domains


def _to_csr(image_labels) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat label ids) from a list of label-id lists or a 1-D array of single labels."""
    if isinstance(image_labels, np.ndarray) and image_labels.ndim == 1:
        if not np.issubdtype(image_labels.dtype, np.integer):
            raise ValueError(f"image_labels array must hold integer ids, got {image_labels.dtype}")
        return np.arange(len(image_labels) + 1, dtype=np.int64), image_labels.astype(np.int64)
    expected = (
        "image_labels must be a list of label-id lists, one per image, or a 1-D integer array "
        "for single-label data"
    )
    try:
        lengths = np.fromiter(map(len, image_labels), dtype=np.int64)
        # np.array, not np.fromiter(dtype=int64): the latter would quietly turn 1.5 or "3" into ids.
        flat = np.array(list(itertools.chain.from_iterable(image_labels)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{expected} ({e})") from None
    if flat.size == 0:
        flat = flat.astype(np.int64)
    elif not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"{expected}; got label ids of type {flat.dtype}")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, flat.astype(np.int64, copy=False)
