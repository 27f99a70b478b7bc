"""Tests for bit_experts.expert_domains: slicing, selection, priors, controls, saved format."""

import json
import os
import time

import numpy as np
import pytest

from bit_experts import expert_domains as ed
from bit_experts.hierarchy import Hierarchy

# organism > animal > carnivore > felidae > {lion, cat}; carnivore > canidae > dog;
# animal > pet > {cat, dog}; organism > plant > tree. cat and dog have two parents.
EDGES = [
    ("organism", "animal"),
    ("animal", "carnivore"),
    ("carnivore", "felidae"),
    ("felidae", "lion"),
    ("felidae", "cat"),
    ("carnivore", "canidae"),
    ("canidae", "dog"),
    ("animal", "pet"),
    ("pet", "cat"),
    ("pet", "dog"),
    ("organism", "plant"),
    ("plant", "tree"),
]
LABELS = ["lion", "cat", "dog", "tree"]
IMAGES = [[0], [1], [2], [3], [0, 1], [1], [2, 3]]
LION, CAT, DOG, TREE = range(4)


def dataset():
    return Hierarchy.from_edges(EDGES), ed.LabelledImages(LABELS, IMAGES)


def by_name(domains):
    return {d.name: d for d in domains}


def test_images_belong_to_every_ancestor_once():
    h, ds = dataset()
    domains = by_name(ed.choose_expert_domains(h, ds, min_images=1, include_roots=False))
    # Image 4 (lion + cat) reaches felidae twice and image 1 (cat) reaches animal by two paths.
    expected = {
        "animal": [0, 1, 2, 4, 5, 6],
        "carnivore": [0, 1, 2, 4, 5, 6],
        "pet": [1, 2, 4, 5, 6],
        "felidae": [0, 1, 4, 5],
        "cat": [1, 4, 5],
        "canidae": [2, 6],
        "dog": [2, 6],
        "lion": [0, 4],
        "plant": [3, 6],
        "tree": [3, 6],
    }
    assert set(domains) == set(expected)  # include_roots=False: the root "organism" is left out.
    for name, images in expected.items():
        d = domains[name]
        assert d.image_indices.tolist() == images and d.image_count == len(images)
        assert d.image_indices.dtype == np.int64
        assert d.parents == list(h.parents(name))
    assert domains["cat"].parents == ["felidae", "pet"]


def test_top_k_orders_by_count_then_name():
    h, ds = dataset()
    names = [d.name for d in ed.choose_expert_domains(h, ds, top_k=7, include_roots=False)]
    # animal and carnivore tie at 6; canidae, dog, lion, plant and tree tie at 2.
    assert names == ["animal", "carnivore", "pet", "felidae", "cat", "canidae", "dog"]
    counts = [d.image_count for d in ed.choose_expert_domains(h, ds, top_k=10)]
    assert counts == sorted(counts, reverse=True)


def test_root_is_eligible_by_default_as_in_the_paper():
    # The paper's top-K ImageNet-21k nodes include the WordNet root: a generic expert whose slice
    # is every image. By default the root competes like any node; include_roots=False drops it.
    h, ds = dataset()
    default = ed.choose_expert_domains(h, ds, top_k=3)
    assert [d.name for d in default] == ["organism", "animal", "carnivore"]
    root = default[0]
    assert root.parents == [] and root.image_indices.tolist() == list(range(ds.num_images))
    np.testing.assert_allclose(root.label_prior, ds.label_prior(np.arange(ds.num_images)))
    without = ed.choose_expert_domains(h, ds, top_k=3, include_roots=False)
    assert [d.name for d in without] == ["animal", "carnivore", "pet"]
    # A root with fewer images than other nodes is ranked by its count like them (a second root).
    two_roots = Hierarchy.from_edges(EDGES + [("artifact", "tree")])
    names = [d.name for d in ed.choose_expert_domains(two_roots, ds, min_images=2)]
    assert names.index("artifact") > names.index("pet") and "organism" in names
    with pytest.raises(ValueError, match="include_roots must be a bool"):
        ed.choose_expert_domains(h, ds, top_k=3, include_roots="no")


def test_min_images_threshold():
    h, ds = dataset()
    chosen = ed.choose_expert_domains(h, ds, min_images=3)
    assert [d.name for d in chosen] == ["organism", "animal", "carnivore", "pet", "felidae", "cat"]
    assert all(d.image_count >= 3 for d in chosen)
    chosen = ed.choose_expert_domains(h, ds, min_images=3, include_roots=False)
    assert [d.name for d in chosen] == ["animal", "carnivore", "pet", "felidae", "cat"]


def test_selection_errors():
    h, ds = dataset()
    with pytest.raises(ValueError, match="exactly one of top_k or min_images"):
        ed.choose_expert_domains(h, ds)
    with pytest.raises(ValueError, match="exactly one of top_k or min_images"):
        ed.choose_expert_domains(h, ds, top_k=2, min_images=2)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        ed.choose_expert_domains(h, ds, top_k=0)
    with pytest.raises(ValueError, match="top_k=12 .* only 11 hierarchy nodes"):
        ed.choose_expert_domains(h, ds, top_k=12)
    with pytest.raises(ValueError, match="top_k=11 .* only 10 non-root"):
        ed.choose_expert_domains(h, ds, top_k=11, include_roots=False)
    with pytest.raises(ValueError, match=r"min_images=8 images \(the largest has 7\)"):
        ed.choose_expert_domains(h, ds, min_images=8)
    with pytest.raises(ValueError, match=r"non-root hierarchy node has min_images=7 .* has 6\)"):
        ed.choose_expert_domains(h, ds, min_images=7, include_roots=False)
    other = ed.LabelledImages(["lion", "zebra"], [[0], [1]])
    with pytest.raises(ValueError, match="upstream label names are not hierarchy nodes: 'zebra'"):
        ed.choose_expert_domains(h, other, top_k=1)


def test_label_priors_match_hand_computation():
    h, ds = dataset()
    domains = by_name(ed.choose_expert_domains(h, ds, min_images=1))
    # felidae: images 0 lion, 1 cat, 4 lion+cat, 5 cat -> lion 2, cat 3 of 5 label occurrences.
    felidae = np.zeros(4)
    felidae[[LION, CAT]] = [2 / 5, 3 / 5]
    # pet: 1 cat, 2 dog, 4 lion+cat, 5 cat, 6 dog+tree -> lion 1, cat 3, dog 2, tree 1 of 7.
    pet = np.array([1, 3, 2, 1]) / 7
    # Priors are counts / total (one float32 rounding, 6e-8 relative): rtol 1e-6 is 16x that.
    np.testing.assert_allclose(domains["felidae"].label_prior, felidae, rtol=1e-6)
    np.testing.assert_allclose(domains["pet"].label_prior, pet, rtol=1e-6)
    for d in domains.values():
        assert d.label_prior.dtype == np.float32 and d.label_prior.shape == (4,)
        # A float32 sum of <= 4 values each within 6e-8 relative: < 4 * 2 * 6e-8 = 5e-7 < 1e-6.
        assert abs(float(d.label_prior.sum()) - 1.0) < 1e-6


def test_repeated_label_in_one_image_counts_once():
    h = Hierarchy.from_edges(EDGES)
    ds = ed.LabelledImages(LABELS, [[CAT, CAT, LION], [CAT]])
    felidae = by_name(ed.choose_expert_domains(h, ds, min_images=1))["felidae"]
    # float32 of 1/3 against float64: 3e-8 relative < 1e-6; a wrong count moves it by 1/3.
    np.testing.assert_allclose(felidae.label_prior, [1 / 3, 2 / 3, 0, 0], rtol=1e-6)


def test_single_label_array_matches_lists():
    h = Hierarchy.from_edges(EDGES)
    ids = np.array([0, 1, 1, 2, 3, 2])
    a = ed.choose_expert_domains(h, ed.LabelledImages(LABELS, ids), top_k=6)
    b = ed.choose_expert_domains(h, ed.LabelledImages(LABELS, [[i] for i in ids]), top_k=6)
    assert [d.name for d in a] == [d.name for d in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image_indices, y.image_indices)
        np.testing.assert_array_equal(x.label_prior, y.label_prior)


@pytest.mark.parametrize(
    "labels, images, message",
    [
        (LABELS, [[0], [1, 4]], "image 1 has unknown label id 4; valid ids are 0..3"),
        (LABELS, [[0], [-1]], "image 1 has unknown label id -1"),
        (LABELS, [[0], []], "image 1 has no labels"),
        (LABELS, [], "no images"),
        (LABELS, [0, 1], "list of label-id lists"),
        (LABELS, [[0.5]], "type float64"),
        (LABELS, np.array([0.0, 1.0]), "integer ids"),
        (["a", "b", "a"], [[0]], r"duplicates: \['a'\]"),
        ([], [[0]], "label_names is empty"),
    ],
)
def test_bad_labelled_images(labels, images, message):
    with pytest.raises(ValueError, match=message):
        ed.LabelledImages(labels, images)


def test_matches_per_image_expansion_on_skewed_data():
    # Rare labels give slices far smaller than the dataset, which take a different code path.
    rng = np.random.default_rng(1)
    h = Hierarchy.from_edges(EDGES)
    probs = [0.01, 0.02, 0.07, 0.9]
    images = [
        sorted(set(rng.choice(4, size=rng.integers(1, 3), p=probs).tolist())) for _ in range(2000)
    ]
    ds = ed.LabelledImages(LABELS, images)
    domains = ed.choose_expert_domains(h, ds, min_images=1)
    assert min(d.image_count for d in domains) * 16 < ds.num_images
    for d in domains:
        members = [i for i, ls in enumerate(images) if d.name in h.expand(LABELS[x] for x in ls)]
        np.testing.assert_array_equal(d.image_indices, members)
        counts = np.bincount([x for i in members for x in images[i]], minlength=4)
        # One float32 rounding of counts / total (6e-8 relative) < 1e-6.
        np.testing.assert_allclose(d.label_prior, counts / counts.sum(), rtol=1e-6)


def test_small_random_controls():
    big = ed.LabelledImages(LABELS, np.arange(5000) % 4)
    small = ed.ExpertDomain(
        "lion", 3, ["felidae"], np.array([0, 4, 8]), np.eye(4, dtype=np.float32)[0]
    )
    a, b = (ed.random_control_domains([small], big, seed=s)[0] for s in (5, 5))
    c = ed.random_control_domains([small], big, seed=6)[0]
    assert a.image_count == 3 and len(np.unique(a.image_indices)) == 3
    assert np.all(np.diff(a.image_indices) > 0) and a.image_indices.max() < 5000
    np.testing.assert_array_equal(a.image_indices, b.image_indices)
    assert not np.array_equal(a.image_indices, c.image_indices)
    np.testing.assert_allclose(a.label_prior, np.bincount(a.image_indices % 4, minlength=4) / 3)
    with pytest.raises(ValueError, match="has 3 images but the dataset only 2"):
        ed.random_control_domains([small], ed.LabelledImages(LABELS, [[0], [1]]), seed=0)


def test_random_controls():
    h, ds = dataset()
    domains = ed.choose_expert_domains(h, ds, top_k=5)
    controls = ed.random_control_domains(domains, ds, seed=3)
    assert [c.name for c in controls] == [f"random_{d.name}" for d in domains]
    assert [c.control_of for c in controls] == [d.name for d in domains]
    for c, d in zip(controls, domains, strict=True):
        assert c.image_count == d.image_count == len(c.image_indices)
        assert np.all(np.diff(c.image_indices) > 0)  # Sorted, no repeats.
        assert c.image_indices.min() >= 0 and c.image_indices.max() < ds.num_images
        np.testing.assert_allclose(c.label_prior, ds.label_prior(c.image_indices))
        assert c.parents == []
    again = ed.random_control_domains(domains, ds, seed=3)
    assert all(
        np.array_equal(a.image_indices, b.image_indices)
        for a, b in zip(controls, again, strict=True)
    )


def test_random_controls_differ_across_seeds_and_have_own_priors():
    rng = np.random.default_rng(0)
    h = Hierarchy.from_edges(EDGES)
    ds = ed.LabelledImages(LABELS, rng.integers(0, 4, size=1000))
    domains = ed.choose_expert_domains(h, ds, min_images=1)
    a = ed.random_control_domains(domains, ds, seed=0)
    b = ed.random_control_domains(domains, ds, seed=1)
    # The root's control is every image whatever the seed; a smaller domain's control is not.
    assert np.array_equal(a[0].image_indices, b[0].image_indices) and a[0].control_of == "organism"
    assert not np.array_equal(a[1].image_indices, b[1].image_indices)
    # A random "felidae" is not all cats and lions, unlike the real one.
    felidae = by_name(domains)["felidae"]
    control = by_name(a)["random_felidae"]
    assert felidae.label_prior[[DOG, TREE]].sum() == 0
    assert control.label_prior[[DOG, TREE]].sum() > 0.2


def test_label_prior_hand_computed():
    _, ds = dataset()
    np.testing.assert_allclose(ds.label_prior([4, 6]), [0.25, 0.25, 0.25, 0.25])
    # float32 of thirds against float64: 3e-8 relative < 1e-6.
    np.testing.assert_allclose(ds.label_prior([1, 5, 0]), [1 / 3, 2 / 3, 0, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="0..6"):
        ds.label_prior([7])


def test_format_table():
    h, ds = dataset()
    domains = ed.choose_expert_domains(h, ds, top_k=5, include_roots=False)
    table = ed.format_table(domains + ed.random_control_domains(domains[:1], ds, 0))
    lines = table.splitlines()
    assert lines[0].split() == ["#", "name", "images", "parents"]
    assert lines[4].split() == ["4", "felidae", "4", "carnivore"]
    assert lines[5].split() == ["5", "cat", "3", "felidae,", "pet"]
    assert lines[6].split() == ["6", "random_animal", "6", "(control", "of", "animal)"]
    # The image counts are right-aligned under their header.
    end = lines[0].index("images") + len("images")
    for line, d in zip(lines[1:], domains, strict=False):
        assert line[:end].endswith(f" {d.image_count}") and line[end] == " "


def test_save_load_round_trip(tmp_path):
    h, ds = dataset()
    domains = ed.choose_expert_domains(h, ds, top_k=4)
    domains += ed.random_control_domains(domains, ds, seed=0)
    path = str(tmp_path / "out" / "experts.json")
    ed.save_domains(domains, path)
    assert sorted(os.listdir(tmp_path / "out")) == ["experts.indices.npz", "experts.json"]
    entries = json.loads(open(path).read())
    assert entries[0]["name"] == "organism" and entries[0]["parents"] == []
    assert entries[1]["name"] == "animal" and entries[1]["parents"] == ["organism"]
    assert entries[0]["image_indices"] == {"file": "experts.indices.npz", "key": "d0"}
    loaded = ed.load_domains(path)
    assert len(loaded) == len(domains)
    for a, b in zip(domains, loaded, strict=True):
        assert (a.name, a.image_count, a.parents, a.control_of) == (
            b.name,
            b.image_count,
            b.parents,
            b.control_of,
        )
        np.testing.assert_array_equal(a.image_indices, b.image_indices)
        np.testing.assert_array_equal(a.label_prior, b.label_prior)  # float32 survives JSON.


def test_save_load_errors(tmp_path):
    h, ds = dataset()
    domains = ed.choose_expert_domains(h, ds, top_k=2)
    with pytest.raises(ValueError, match="unique"):
        ed.save_domains(domains + domains[:1], str(tmp_path / "dup.json"))
    path = tmp_path / "experts.json"
    ed.save_domains(domains, str(path))
    os.remove(tmp_path / "experts.indices.npz")
    with pytest.raises(FileNotFoundError, match="experts.indices.npz"):
        ed.load_domains(str(path))
    path.write_text('[{"name": "x"}]')
    with pytest.raises(ValueError, match="entry 0 is missing"):
        ed.load_domains(str(path))
    path.write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="JSON list"):
        ed.load_domains(str(path))


@pytest.mark.parametrize("outside", ["../experts.indices.npz", "/tmp/x.npz", "sub/x.npz", ".."])
def test_index_file_reference_stays_beside_the_json(tmp_path, outside):
    h, ds = dataset()
    path = tmp_path / "d" / "experts.json"
    path.parent.mkdir()
    ed.save_domains(ed.choose_expert_domains(h, ds, top_k=2), str(path))
    (tmp_path / "experts.indices.npz").write_bytes(
        (path.parent / "experts.indices.npz").read_bytes()
    )
    entries = json.loads(path.read_text())
    entries[0]["image_indices"]["file"] = outside
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"entry 0 image_indices file .* leaves the folder"):
        ed.load_domains(str(path))


def test_empty_or_inconsistent_domain_is_rejected():
    prior = np.array([1.0], np.float32)
    with pytest.raises(ValueError, match="'x' is empty"):
        ed.ExpertDomain("x", 0, [], np.zeros(0, np.int64), prior)
    with pytest.raises(ValueError, match="image_count=2"):
        ed.ExpertDomain("x", 2, [], np.zeros(3, np.int64), prior)
    with pytest.raises(ValueError, match="sorted, distinct"):
        ed.ExpertDomain("x", 2, [], [3, 3], prior)
    with pytest.raises(ValueError, match="sorted, distinct"):
        ed.ExpertDomain("x", 1, [], [-1], prior)
    with pytest.raises(ValueError, match="summing to 1"):
        ed.ExpertDomain("x", 1, [], np.zeros(1, np.int64), prior * 2)


def synthetic(num_nodes, num_images, seed):
    """A random DAG (some nodes with two parents) and mostly single-label images on its nodes."""
    rng = np.random.default_rng(seed)
    names = [f"n{i:05d}" for i in range(num_nodes)]
    # Parents come from a window of earlier nodes, giving a hierarchy about a dozen levels deep.
    first = np.maximum(0, np.arange(num_nodes) - rng.integers(1, 2000, num_nodes))
    edges = [
        (names[first[i] + rng.integers(0, i - first[i])], names[i]) for i in range(1, num_nodes)
    ]
    extra = rng.choice(np.arange(10, num_nodes), size=num_nodes // 10, replace=False)
    edges += [(names[rng.integers(1, i)], names[i]) for i in extra]
    h = Hierarchy.from_edges(edges)
    labels = names[1:]
    first = rng.integers(0, len(labels), num_images)
    second = np.full(num_images, -1)  # -1: no second label.
    two = rng.choice(num_images, num_images // 5, replace=False)
    second[two] = rng.integers(0, len(labels), len(two))
    image_labels = [
        [a] if b < 0 else [a, b] for a, b in zip(first.tolist(), second.tolist(), strict=True)
    ]
    return h, ed.LabelledImages(labels, image_labels), first, second


def test_large_synthetic_hierarchy_is_fast_and_correct():
    h, ds, first, second = synthetic(num_nodes=20_000, num_images=200_000, seed=0)
    start = time.perf_counter()
    domains = ed.choose_expert_domains(h, ds, top_k=50)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"choose_expert_domains took {elapsed:.1f}s"
    assert len(domains) == 50 and h.depth > 5
    # Check three slices the other way round: an image is in a node's slice iff one of its labels
    # is the node or below it.
    label_id = {n: i for i, n in enumerate(ds.label_names)}
    for d in (domains[0], domains[25], domains[49]):
        below = {d.name}
        frontier = [d.name]
        while frontier:
            kids = [c for n in frontier for c in h.children(n) if c not in below]
            below.update(kids)
            frontier = kids
        ids = np.array([label_id[n] for n in below if n in label_id])  # The root is no label.
        hit = np.flatnonzero(np.isin(first, ids) | np.isin(second, ids))
        np.testing.assert_array_equal(d.image_indices, hit)
        assert d.image_count == len(hit)
