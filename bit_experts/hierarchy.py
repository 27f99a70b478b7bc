"""The "is-a" label hierarchy that expert domains are cut from.

A hierarchy is a DAG of named nodes: an edge goes from a parent to a child, and a class may have
several parents (WordNet does this). It is read from an edge list (ImageNet-21k's `is_a` file), from
JSON, or from a dataset with two label levels (CIFAR-100's `coarse_label` over `label`). The file
formats are documented in docs/hierarchy.md.
"""

from __future__ import annotations

import difflib
import heapq
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

from bit_experts import atomic_files

_log = logging.getLogger(__name__)


class Hierarchy:
    """An immutable is-a DAG over string node names.

    Construction checks the graph (no self-edges, no cycles, no empty names); duplicate edges are
    merged. `nodes` is a topological order (every parent before its children) with ties broken by
    name, so it is deterministic for a given set of edges.
    """

    def __init__(self, edges: Iterable[tuple[str, str]], nodes: Iterable[str] = ()):
        parents: dict[str, set[str]] = {}
        children: dict[str, set[str]] = {}

        def add_node(name, where):
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}: node names must be non-empty strings, got {name!r}")
            parents.setdefault(name, set())
            children.setdefault(name, set())

        for node in nodes:
            add_node(node, "nodes")
        for i, edge in enumerate(edges):
            try:
                if isinstance(edge, str):  # "ab" would otherwise unpack to a -> b.
                    raise TypeError
                parent, child = edge
            except (TypeError, ValueError):
                raise ValueError(
                    f"edge {i}: expected a (parent, child) pair, got {edge!r}"
                ) from None
            add_node(parent, f"edge {i}")
            add_node(child, f"edge {i}")
            if parent == child:
                raise ValueError(
                    f"edge {i}: self-edge on node {parent!r} (a node cannot be its own parent)"
                )
            parents[child].add(parent)
            children[parent].add(child)
        if not parents:
            raise ValueError("the hierarchy has no nodes")

        self._nodes = _topological_order(parents, children)
        self._parents = {n: tuple(sorted(ps)) for n, ps in parents.items()}
        self._children = {n: tuple(sorted(cs)) for n, cs in children.items()}
        self._ancestors: dict[str, frozenset[str]] | None = None  # Filled on first use.

    # --- Constructors for the supported formats. ---

    @classmethod
    def from_edges(cls, edges: Iterable[tuple[str, str]], nodes: Iterable[str] = ()) -> Hierarchy:
        """Builds a hierarchy from (parent, child) pairs, plus optional nodes without edges."""
        return cls(edges, nodes)

    @classmethod
    def from_is_a_file(cls, path: str) -> Hierarchy:
        """Reads a WordNet-style edge list: one `parent child` pair per line, whitespace separated.

        Blank lines and `#` comments are ignored (ImageNet-21k's `wordnet.is_a.txt` is this format).
        """
        edges = []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                fields = line.split("#", 1)[0].split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise ValueError(
                        f"{path}:{line_no}: expected 'parent child' (two names), "
                        f"got {line.strip()!r}"
                    )
                edges.append((fields[0], fields[1]))
        if not edges:
            raise ValueError(f"{path}: no 'parent child' edges found")
        return cls(edges)

    @classmethod
    def from_json(cls, path: str) -> Hierarchy:
        """Reads a hierarchy from JSON in the edge form or the parents form.

        Edge form: `{"edges": [[parent, child], ...], "nodes": [...]}`; parents form:
        `{"parents": {child: [parent, ...], ...}}`. `nodes` is optional (it adds nodes without
        edges); in the parents form a node mapped to an empty list is a root. See docs/hierarchy.md.
        """
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or not ({"edges", "parents"} & data.keys()):
            raise ValueError(f"{path}: expected a JSON object with an 'edges' or a 'parents' key")
        if "edges" in data and "parents" in data:
            raise ValueError(f"{path}: give either 'edges' or 'parents', not both")
        if "edges" in data:
            edges, nodes = data["edges"], data.get("nodes", [])
            if not isinstance(edges, list) or not isinstance(nodes, list):
                raise ValueError(f"{path}: 'edges' and 'nodes' must be lists")
            return cls([tuple(e) if isinstance(e, list) else e for e in edges], nodes)
        parents = data["parents"]
        if not isinstance(parents, dict):
            raise ValueError(f"{path}: 'parents' must map each child to a list of parents")
        edges = []
        for child, ps in parents.items():
            if not isinstance(ps, list):
                raise ValueError(f"{path}: parents of {child!r} must be a list, got {ps!r}")
            edges.extend((p, child) for p in ps)
        return cls(edges, parents.keys())

    @classmethod
    def from_two_level(
        cls,
        fine_names: Sequence[str],
        coarse_names: Sequence[str],
        fine_to_coarse: Sequence[int] | Mapping[int, int | Iterable[int]],
        root: str = "root",
    ) -> Hierarchy:
        """Builds root -> coarse -> fine from a dataset with two label levels.

        `fine_to_coarse[i]` is the coarse id (or ids) of fine label i. A fine label with no coarse
        label hangs directly under the root.
        """
        fine_names, coarse_names = list(fine_names), list(coarse_names)
        clash = (set(fine_names) & set(coarse_names)) | ({root} & set(fine_names + coarse_names))
        if clash:
            raise ValueError(
                f"two-level hierarchy: names used at more than one level: {sorted(clash)}"
            )
        if not isinstance(fine_to_coarse, Mapping):
            fine_to_coarse = dict(enumerate(fine_to_coarse))
        edges = [(root, c) for c in coarse_names]
        for fine_id, fine in enumerate(fine_names):
            coarse_ids = fine_to_coarse.get(fine_id, ())
            if hasattr(coarse_ids, "__index__"):  # An int, numpy ints included.
                coarse_ids = (coarse_ids,)
            coarse_ids = list(coarse_ids)
            for c in coarse_ids:
                if not 0 <= c < len(coarse_names):
                    raise ValueError(
                        f"two-level hierarchy: fine label {fine_id} ({fine!r}) maps to coarse id "
                        f"{c}, expected 0..{len(coarse_names) - 1}"
                    )
                edges.append((coarse_names[c], fine))
            if not coarse_ids:
                edges.append((root, fine))
        unknown = set(fine_to_coarse) - set(range(len(fine_names)))
        if unknown:
            raise ValueError(
                f"two-level hierarchy: fine ids {sorted(unknown)[:10]} are outside "
                f"0..{len(fine_names) - 1}"
            )
        return cls(edges)

    # --- Queries. ---

    @property
    def nodes(self) -> tuple[str, ...]:
        """All nodes, parents before children, ties broken by name."""
        return self._nodes

    @property
    def roots(self) -> tuple[str, ...]:
        """Nodes without parents, sorted by name."""
        return tuple(sorted(n for n in self._nodes if not self._parents[n]))

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """All (parent, child) pairs, sorted."""
        return tuple(sorted((p, c) for c, ps in self._parents.items() for p in ps))

    @property
    def depth(self) -> int:
        """Number of nodes on the longest root-to-leaf path."""
        depth: dict[str, int] = {}
        for n in self._nodes:  # Topological order: parents are already done.
            depth[n] = 1 + max((depth[p] for p in self._parents[n]), default=0)
        return max(depth.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._parents

    def parents(self, node: str) -> tuple[str, ...]:
        """Direct parents of `node`, sorted."""
        return self._parents[self.check_node(node)]

    def children(self, node: str) -> tuple[str, ...]:
        """Direct children of `node`, sorted."""
        return self._children[self.check_node(node)]

    def ancestors(self, node: str) -> frozenset[str]:
        """Every node above `node` (not `node` itself)."""
        self.check_node(node)
        if self._ancestors is None:
            # One pass in topological order, so each set is built once from its parents' sets.
            anc: dict[str, frozenset[str]] = {}
            for n in self._nodes:
                ps = self._parents[n]
                if not ps:
                    anc[n] = frozenset()
                elif len(ps) == 1:
                    anc[n] = anc[ps[0]] | {ps[0]}
                else:
                    anc[n] = frozenset(ps).union(*(anc[p] for p in ps))
            self._ancestors = anc
        return self._ancestors[node]

    def expand(self, labels: Iterable[str]) -> frozenset[str]:
        """The given labels plus all their ancestors."""
        out: set[str] = set()
        for label in labels:
            out.add(label)
            out |= self.ancestors(label)
        return frozenset(out)

    def check_node(self, node: str) -> str:
        """Returns `node` if it is a node, else raises a ValueError that suggests close names."""
        if node in self._parents:
            return node
        raise ValueError(f"unknown hierarchy node {node!r}{self._suggest(node)}")

    def check_nodes(self, names: Iterable[str], what: str = "names") -> None:
        """Raises one ValueError listing every name in `names` that is not a node."""
        missing = [n for n in names if n not in self._parents]
        if missing:
            shown = ", ".join(f"{n!r}{self._suggest(n)}" for n in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValueError(f"{len(missing)} {what} are not hierarchy nodes: {shown}{more}")

    def _suggest(self, node: object) -> str:
        close = difflib.get_close_matches(str(node), self._nodes, n=3)
        return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""

    # --- Output. ---

    def to_json(self, path: str) -> None:
        """Writes `{"nodes": [...], "edges": [[parent, child], ...]}` atomically."""
        data = {"nodes": list(self._nodes), "edges": [list(e) for e in self.edges]}
        atomic_files.write_text(path, json.dumps(data, indent=1) + "\n")

    def __repr__(self) -> str:
        return f"Hierarchy({len(self)} nodes, roots={list(self.roots)[:5]}, depth={self.depth})"


def two_level_from_tfds(
    name: str = "cifar100",
    data_dir: str | None = None,
    split: str = "train",
    fine_key: str = "label",
    coarse_key: str = "coarse_label",
    root: str = "root",
) -> Hierarchy:
    """Learns root -> coarse -> fine from a prepared TFDS dataset with two ClassLabel features.

    Scans `split` for the (fine, coarse) pairs that occur; never downloads. Fine labels never seen
    in the split hang under the root (with a warning). Fine names are kept as they are (they are
    the label vocabulary); if a coarse name clashes with one, every coarse name becomes
    `<coarse_key>:<name>`.
    """
    import numpy as np
    import tensorflow_datasets as tfds  # Lazy: the rest of this module needs no TensorFlow.

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # TFDS raises its own types for unknown names.
        raise ValueError(f"TFDS dataset {name!r} could not be opened: {e}") from None
    features = builder.info.features
    for key in (fine_key, coarse_key):
        if key not in features or not hasattr(features[key], "names"):
            raise ValueError(
                f"TFDS dataset {name!r} has no ClassLabel feature {key!r} "
                f"(features: {sorted(features.keys())})"
            )
    fine_names, coarse_names = list(features[fine_key].names), list(features[coarse_key].names)
    if set(coarse_names) & set(fine_names + [root]):
        # Unprepared names are digits at both levels ("0", "1", ...); keep the fine names, which
        # are the upstream label vocabulary, and qualify the coarse ones.
        coarse_names = [f"{coarse_key}:{c}" for c in coarse_names]
    try:
        ds = builder.as_dataset(
            split=split,
            decoders=tfds.decode.PartialDecoding({fine_key: True, coarse_key: True}),
        )
    except (AssertionError, FileNotFoundError) as e:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} split {split!r} is not prepared under "
            f"{data_dir or 'the default data_dir'} (this code never downloads): {e}"
        ) from None
    pairs = set()
    for batch in ds.batch(8192).as_numpy_iterator():
        stacked = np.stack([batch[fine_key], batch[coarse_key]], axis=1)
        pairs.update(map(tuple, np.unique(stacked, axis=0).tolist()))
    if not pairs:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} has no examples")
    fine_to_coarse: dict[int, list[int]] = {}
    for fine, coarse in sorted(pairs):
        fine_to_coarse.setdefault(fine, []).append(coarse)
    unseen = len(fine_names) - len(fine_to_coarse)
    if unseen:
        _log.warning(
            "%d fine labels of %s[%s] never occur; they hang under the root", unseen, name, split
        )
    return Hierarchy.from_two_level(fine_names, coarse_names, fine_to_coarse, root=root)


def _topological_order(parents: dict[str, set[str]], children: dict[str, set[str]]) -> tuple:
    """Kahn's algorithm, smallest name first; a leftover node means a cycle, which is reported."""
    pending = {n: len(ps) for n, ps in parents.items()}
    ready = [n for n, k in pending.items() if k == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for c in children[n]:
            pending[c] -= 1
            if pending[c] == 0:
                heapq.heappush(ready, c)
    if len(order) < len(parents):
        raise ValueError(f"the hierarchy has a cycle: {' -> '.join(_find_cycle(parents, pending))}")
    return tuple(order)


def _find_cycle(parents: dict[str, set[str]], pending: dict[str, int]) -> list[str]:
    """Walks parent edges among the nodes Kahn's algorithm left over; each has a leftover parent."""
    left = {n for n, k in pending.items() if k > 0}
    path, seen = [], {}
    node = min(left)
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(p for p in parents[node] if p in left)
    cycle = path[seen[node] :] + [node]
    return cycle[::-1]  # Parent -> child order reads naturally.
