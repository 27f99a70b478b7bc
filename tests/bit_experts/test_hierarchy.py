"""Tests for bit_experts.hierarchy: building, querying, file formats and errors."""

import json
import os

import pytest

from bit_experts import hierarchy

LION_EDGES = [
    ("organism", "animal"),
    ("animal", "carnivore"),
    ("carnivore", "felidae"),
    ("felidae", "lion"),
    ("felidae", "cat"),
    ("animal", "pet"),
    ("pet", "cat"),  # cat has two parents: felidae and pet.
    ("organism", "plant"),
    ("plant", "tree"),
]


def lion_hierarchy():
    return hierarchy.Hierarchy.from_edges(LION_EDGES)


def test_lion_expands_to_all_its_ancestors():
    h = lion_hierarchy()
    assert h.expand(["lion"]) == {"organism", "animal", "carnivore", "felidae", "lion"}
    assert h.ancestors("lion") == {"organism", "animal", "carnivore", "felidae"}
    assert h.expand(["lion", "tree"]) == h.expand(["lion"]) | {"plant", "tree"}
    assert h.expand([]) == frozenset()


def test_structure_queries():
    h = lion_hierarchy()
    assert h.roots == ("organism",)
    assert len(h) == 9 and "lion" in h and "dog" not in h
    assert h.depth == 5  # organism, animal, carnivore, felidae, lion.
    assert h.children("felidae") == ("cat", "lion")
    assert h.parents("organism") == ()
    position = {n: i for i, n in enumerate(h.nodes)}
    assert all(position[p] < position[c] for p, c in LION_EDGES)
    # Same edges in another order give the same node order.
    assert hierarchy.Hierarchy.from_edges(reversed(LION_EDGES)).nodes == h.nodes


def test_dag_with_several_parents():
    h = lion_hierarchy()
    assert h.parents("cat") == ("felidae", "pet")
    assert h.ancestors("cat") == {"felidae", "carnivore", "pet", "animal", "organism"}
    assert h.depth == 5


def test_duplicate_edges_are_merged():
    h = hierarchy.Hierarchy.from_edges(LION_EDGES + LION_EDGES[:3])
    assert h.edges == tuple(sorted(LION_EDGES))


def test_several_roots_and_isolated_nodes():
    h = hierarchy.Hierarchy.from_edges([("a", "b"), ("c", "b")], nodes=["lonely"])
    assert h.roots == ("a", "c", "lonely")
    assert h.ancestors("b") == {"a", "c"}
    assert h.depth == 2


def test_cycle_is_reported_with_its_nodes():
    edges = [("root", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "leaf")]
    with pytest.raises(ValueError, match="cycle") as err:
        hierarchy.Hierarchy.from_edges(edges)
    cycle = str(err.value).split("cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]
    # Consecutive names are real parent -> child edges.
    assert all(pair in edges for pair in zip(cycle, cycle[1:], strict=False))


def test_self_edge_and_bad_edges_are_rejected():
    with pytest.raises(ValueError, match="self-edge.*'x'"):
        hierarchy.Hierarchy.from_edges([("a", "x"), ("x", "x")])
    with pytest.raises(ValueError, match="edge 0"):
        hierarchy.Hierarchy.from_edges([("a", "b", "c")])
    with pytest.raises(ValueError, match="edge 1: expected a .parent, child. pair, got 'ab'"):
        hierarchy.Hierarchy.from_edges([("a", "b"), "ab"])
    with pytest.raises(ValueError, match="non-empty strings"):
        hierarchy.Hierarchy.from_edges([("a", "")])
    with pytest.raises(ValueError, match="no nodes"):
        hierarchy.Hierarchy.from_edges([])


def test_unknown_node_names_it_and_suggests_close_names():
    h = lion_hierarchy()
    with pytest.raises(ValueError, match=r"'lino'.*did you mean 'lion'"):
        h.ancestors("lino")
    with pytest.raises(ValueError, match="'zebra'"):
        h.expand(["lion", "zebra"])
    with pytest.raises(ValueError, match="2 labels are not hierarchy nodes"):
        h.check_nodes(["lion", "zebra", "felid"], what="labels")


def test_is_a_file_round_trip(tmp_path):
    path = tmp_path / "wordnet.is_a.txt"
    lines = ["# parent child", ""] + [f"{p} {c}" for p, c in LION_EDGES] + ["plant\tshrub  # tab"]
    path.write_text("\n".join(lines) + "\n")
    h = hierarchy.Hierarchy.from_is_a_file(str(path))
    assert h.edges == tuple(sorted(LION_EDGES + [("plant", "shrub")]))


def test_is_a_file_errors(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a b\nb c d\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 'parent child'"):
        hierarchy.Hierarchy.from_is_a_file(str(path))
    path.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="no 'parent child' edges"):
        hierarchy.Hierarchy.from_is_a_file(str(path))
    with pytest.raises(FileNotFoundError):
        hierarchy.Hierarchy.from_is_a_file(str(tmp_path / "missing.txt"))


def test_json_edges_round_trip_keeps_isolated_nodes(tmp_path):
    h = hierarchy.Hierarchy.from_edges(LION_EDGES, nodes=["lonely"])
    path = tmp_path / "sub" / "h.json"
    h.to_json(str(path))
    assert os.listdir(path.parent) == ["h.json"]  # No temporary file left behind.
    data = json.loads(path.read_text())
    assert sorted(map(tuple, data["edges"])) == sorted(LION_EDGES)
    back = hierarchy.Hierarchy.from_json(str(path))
    assert back.nodes == h.nodes and back.edges == h.edges and "lonely" in back.roots


def test_json_parents_form(tmp_path):
    parents = {}
    for p, c in LION_EDGES:
        parents.setdefault(c, []).append(p)
    parents["organism"] = []
    path = tmp_path / "parents.json"
    path.write_text(json.dumps({"parents": parents}))
    h = hierarchy.Hierarchy.from_json(str(path))
    assert h.edges == tuple(sorted(LION_EDGES))
    assert h.roots == ("organism",)


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "'edges' or a 'parents' key"),
        ('{"edges": [], "parents": {}}', "not both"),
        ('{"parents": {"a": "b"}}', "parents of 'a' must be a list"),
        ('{"edges": [["a", "a"]]}', "self-edge"),
        ("{not json", "not valid JSON"),
    ],
)
def test_json_errors(tmp_path, content, message):
    path = tmp_path / "h.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        hierarchy.Hierarchy.from_json(str(path))


def test_two_level():
    fine = ["maple", "oak", "bus", "kite"]
    coarse = ["trees", "vehicles"]
    h = hierarchy.Hierarchy.from_two_level(fine, coarse, [0, 0, 1], root="all")
    assert h.roots == ("all",)
    assert h.children("all") == ("kite", "trees", "vehicles")  # kite has no coarse label.
    assert h.children("trees") == ("maple", "oak")
    assert h.expand(["bus"]) == {"all", "vehicles", "bus"}
    assert h.depth == 3
    h2 = hierarchy.Hierarchy.from_two_level(fine, coarse, {0: [0, 1]})
    assert h2.parents("maple") == ("trees", "vehicles")


def test_two_level_errors():
    with pytest.raises(ValueError, match=r"more than one level: \['trees'\]"):
        hierarchy.Hierarchy.from_two_level(["trees"], ["trees"], [0])
    with pytest.raises(ValueError, match="maps to coarse id 3, expected 0..1"):
        hierarchy.Hierarchy.from_two_level(["a"], ["x", "y"], [3])
    with pytest.raises(ValueError, match=r"fine ids \[5\]"):
        hierarchy.Hierarchy.from_two_level(["a"], ["x"], {5: 0})


def test_two_level_from_mock_cifar100():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=200):
        h = hierarchy.two_level_from_tfds("cifar100", split="train")
        # Mock values depend on which features are decoded, so read them the way the code does.
        labels_only = tfds.decode.PartialDecoding({"label": True, "coarse_label": True})
        ds = tfds.builder("cifar100").as_dataset(split="train", decoders=labels_only)
        pairs = {(int(x["label"]), int(x["coarse_label"])) for x in ds.as_numpy_iterator()}
    assert h.roots == ("root",) and h.depth == 3
    # Mock names are digits at both levels, so the coarse ones are qualified.
    fine_nodes = {str(i) for i in range(100)}
    coarse_nodes = {f"coarse_label:{i}" for i in range(20)}
    assert set(h.nodes) == fine_nodes | coarse_nodes | {"root"}
    assert set(h.children("root")) >= coarse_nodes
    expected_edges = {(f"coarse_label:{c}", str(f)) for f, c in pairs}
    assert {e for e in h.edges if e[0] != "root"} == expected_edges
    unseen = fine_nodes - {str(f) for f, _ in pairs}
    assert {c for c in h.children("root") if c in fine_nodes} == unseen


def test_two_level_from_tfds_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared"):
        hierarchy.two_level_from_tfds("cifar100", data_dir=str(tmp_path))
