"""Leave-one-out kNN against a brute-force float64 reference.

The search screens tiles of the upper triangle of the distance matrix and updates rows and columns
at once (`vtab_eval/knn.py`), so the tests vary the tile size (`chunk_size`: tiles that cross the
diagonal, tiles of one row, tiles larger than N) and the number of worker threads.
"""

import numpy as np
import pytest
import tensorflow as tf

from vtab_eval import knn


def brute_force_nearest(features):
    """Nearest other row by exact float64 distance; np.argmin breaks ties to the lowest index."""
    x = np.asarray(features, dtype=np.float64)
    nearest = np.empty(len(x), dtype=np.int64)
    for i, row in enumerate(x):
        distances = np.sum((x - row) ** 2, axis=1)
        distances[i] = np.inf
        nearest[i] = np.argmin(distances)
    return nearest


def brute_force_accuracy(features, labels):
    labels = np.asarray(labels)
    return float(np.mean(labels[brute_force_nearest(features)] == labels))


def _offset_gaussian_with_duplicates(rng, n, d):
    # A large common offset makes the expansion ||a||^2 - 2ab + ||b||^2 cancel badly in float32.
    x = (rng.normal(size=(n, d)) + 300.0).astype(np.float32)
    sources = rng.choice(n, size=n // 4, replace=False)
    targets = rng.choice(n, size=n // 4, replace=False)
    x[targets] = x[sources]
    return x


def _integer_grid_with_ties(rng, n, d):
    # Few distinct small-integer values in few dimensions: many exactly equal distances.
    return rng.integers(-2, 3, size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("make", [_offset_gaussian_with_duplicates, _integer_grid_with_ties])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_for_every_chunk_size(make, seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(20, 150)), int(rng.integers(2, 24))
    x = make(rng, n, d)
    expected = brute_force_nearest(x)
    for chunk_size, num_threads in ((1, 1), (7, 2), (9, 3), (n, 2), (n + 13, 1)):
        got = knn.loo_nearest_neighbors(x, chunk_size=chunk_size, num_threads=num_threads)
        assert got.dtype == tf.int64
        np.testing.assert_array_equal(
            got.numpy(), expected, err_msg=f"chunk_size={chunk_size}, num_threads={num_threads}"
        )


def test_multi_chunk_default_size_matches_brute_force():
    rng = np.random.default_rng(7)
    x = _offset_gaussian_with_duplicates(rng, 1300, 96)
    np.testing.assert_array_equal(knn.loo_nearest_neighbors(x).numpy(), brute_force_nearest(x))


def test_many_tiles_and_threads_match_brute_force():
    # 1100 rows in 64 x 256 tiles: tiles on and off the diagonal, a ragged last row block and
    # column tile, and two threads sharing the running minima of the same rows.
    rng = np.random.default_rng(8)
    x = _offset_gaussian_with_duplicates(rng, 1100, 40)
    expected = brute_force_nearest(x)
    for num_threads in (1, 2):
        got = knn.loo_nearest_neighbors(x, chunk_size=256, num_threads=num_threads)
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"num_threads={num_threads}")


def test_ties_are_broken_in_exact_arithmetic():
    # Both candidates of row 0 are at float32 distance 1.0 (1 + 2^-24 rounds to 1), but row 2 is
    # nearer in exact arithmetic; the float64 exact pass sees it, the lowest-index rule does not
    # apply.
    x = np.array([[0.0, 0.0], [2.0**-12, 1.0], [1.0, 0.0]], np.float32)
    assert np.float32(x[1, 0]) ** 2 + np.float32(1.0) == np.float32(1.0)
    assert knn.loo_nearest_neighbors(x).numpy()[0] == 2 == brute_force_nearest(x)[0]


def test_all_rows_equal_stay_within_the_pair_budget(monkeypatch):
    # Every pair ties at distance 0, so every pair is a candidate: the workers must compact and
    # resolve them as they go instead of holding all N^2 / 2 of them.
    n, chunk_size = 300, 32
    x = np.full((n, 5), 3.5, np.float32)
    most = []
    tile = knn._Worker.tile

    def recording_tile(self, *bounds):
        tile(self, *bounds)
        most.append((self.num_pairs, self.budget))

    monkeypatch.setattr(knn._Worker, "tile", recording_tile)
    nearest = knn.loo_nearest_neighbors(x, chunk_size=chunk_size, num_threads=2).numpy()
    assert nearest[0] == 1
    assert np.all(nearest[1:] == 0)
    assert max(pairs for pairs, _ in most) <= most[0][1]  # never above the budget
    assert most[0][1] < n * (n - 1) // 2  # and the budget is far below all pairs


def test_small_pair_budget_gives_the_same_answer(monkeypatch):
    # With no room for candidate pairs the workers compact and resolve after every tile; the
    # answer must not change (many exact ties on the integer grid).
    monkeypatch.setattr(knn, "_PAIRS_PER_ROW", 0)
    rng = np.random.default_rng(9)
    x = _integer_grid_with_ties(rng, 200, 3)
    for num_threads in (1, 2):
        got = knn.loo_nearest_neighbors(x, chunk_size=12, num_threads=num_threads)
        np.testing.assert_array_equal(got.numpy(), brute_force_nearest(x))


def test_duplicate_wins_despite_cancellation():
    rng = np.random.default_rng(3)
    # Norms around 1e5 squared per dimension; nearest distinct neighbours at ~1e-3.
    x = (1e4 + 1e-3 * rng.normal(size=(50, 64))).astype(np.float32)
    x[40] = x[10]
    nearest = knn.loo_nearest_neighbors(x, chunk_size=16).numpy()
    assert nearest[10] == 40
    assert nearest[40] == 10


def test_many_identical_rows_tie_to_lowest_index():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 32)).astype(np.float32) * 5 + 50
    copies = [3, 11, 17, 20, 25, 31, 38, 44, 47, 52, 55, 59]  # more copies than any small K
    x[copies] = x[copies[0]]
    nearest = knn.loo_nearest_neighbors(x, chunk_size=8).numpy()
    assert nearest[3] == 11
    for row in copies[1:]:
        assert nearest[row] == 3


def test_two_rows_point_at_each_other():
    nearest = knn.loo_nearest_neighbors(np.array([[0.0, 1.0], [5.0, 5.0]]))
    np.testing.assert_array_equal(nearest.numpy(), [1, 0])


def test_accepts_tensors_float64_and_integers():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(40, 3))
    expected = brute_force_nearest(x)
    for variant in (x, x.astype(np.float64), tf.constant(x, tf.float32)):
        np.testing.assert_array_equal(knn.loo_nearest_neighbors(variant).numpy(), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    x = _integer_grid_with_ties(rng, 90, 4)
    labels = rng.integers(0, 3, size=90)
    expected = brute_force_accuracy(x, labels)
    for chunk_size in (1, 7, 90, 200):
        # A ratio of counts in float64 on both sides; one wrong neighbour moves it by 1/90.
        assert knn.loo_1nn_accuracy(x, labels, chunk_size=chunk_size) == pytest.approx(expected)


def test_per_row_hits_match_brute_force_and_average_to_the_accuracy():
    rng = np.random.default_rng(6)
    x = _integer_grid_with_ties(rng, 70, 3)
    labels = rng.integers(0, 3, size=70)
    labels_np = np.asarray(labels)
    expected = labels_np[brute_force_nearest(x)] == labels_np
    got = knn.loo_1nn_correct(x, labels, chunk_size=9)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected)
    assert float(np.mean(got)) == knn.loo_1nn_accuracy(x, labels)
    with pytest.raises(ValueError, match="one label per feature row"):
        knn.loo_1nn_correct(x, labels[:-1])


def test_accuracy_separates_clustered_from_mixed_labels():
    x = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    assert knn.loo_1nn_accuracy(x, [0, 0, 0, 1, 1, 1]) == 1.0
    assert knn.loo_1nn_accuracy(x, [0, 1, 0, 1, 0, 1]) == 0.0


@pytest.mark.parametrize(
    "features, message",
    [
        (np.zeros(5), "2-D"),
        (np.zeros((1, 3)), "at least 2 rows"),
        (np.zeros((4, 0)), "1 column"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 1.0]]), "NaN"),
        (np.array([["a"], ["b"]]), "numeric"),
    ],
)
def test_rejects_bad_features(features, message):
    with pytest.raises(ValueError, match=message):
        knn.loo_nearest_neighbors(features)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
def test_rejects_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        knn.loo_nearest_neighbors(np.zeros((3, 2)), chunk_size=chunk_size)


@pytest.mark.parametrize("num_threads", [0, -1, 1.5, True])
def test_rejects_bad_num_threads(num_threads):
    with pytest.raises(ValueError, match="num_threads"):
        knn.loo_nearest_neighbors(np.zeros((3, 2)), num_threads=num_threads)


def test_accuracy_rejects_bad_labels():
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    with pytest.raises(ValueError, match="one label per feature row"):
        knn.loo_1nn_accuracy(x, [0, 1, 1])
    with pytest.raises(ValueError, match="integers"):
        knn.loo_1nn_accuracy(x, [0.0, 1.0, 0.5, 1.0])
