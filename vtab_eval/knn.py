"""Exact leave-one-out 1-nearest-neighbour search and accuracy: the core of the `knn` expert
selector (Puigcerver et al., "Scalable Transfer Learning with Expert Models", ICLR 2021, section 5).

Only the upper triangle (i < j) of the squared distances is computed, in tiles that update the
running minima of their rows and columns: float32 screening keeps every pair within the error bound
of a row's minimum, and an exact float64 pass decides among them, so the answer is a float64
brute-force search's (ties: the lowest index) whatever `chunk_size` and `num_threads`. The method
and its bound: docs/selection.md, "Leave-one-out nearest neighbours"; speed: `benchmarks/knn.py`.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np
from threadpoolctl import threadpool_limits

from bit_experts import lazy_api

tf = lazy_api.module("tensorflow")  # imported on first use: commands check flags first

# Tile rows per `chunk_size` columns: a 256 x 1024 float32 tile (1 MiB) stays in L2 cache.
_TILE_ROWS_PER_CHUNK = 4
# Candidate pairs per row a worker keeps before it compacts them or, if many rows tie, resolves
# them exactly: O(N + tile) memory even when all rows are equal.
_PAIRS_PER_ROW = 8
_EXACT_BLOCK = 512  # candidate pairs whose exact distances are computed at once
_CENTER_BLOCK = 1024  # rows centred at once in `_center`


def _as_features(features) -> np.ndarray:
    """`features` as C-contiguous float32 [N, d], N >= 2, or ValueError (finite: `_center`)."""
    array = np.asarray(features)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"features must be a numeric [N, d] array; got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(
            f"features must be 2-D with at least 2 rows and 1 column; got {array.shape}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _center(features: np.ndarray):
    """(float32 [d] column mean, float32 [N] squared norms of the centred rows), or ValueError if
    a value is not finite or its square overflows float32. Centres `_CENTER_BLOCK` rows at a time,
    never a copy of all (fresh memory is slow on some VMs: benchmarks/RESULTS.md, kNN)."""
    n = len(features)
    mean = features.mean(axis=0, dtype=np.float64).astype(np.float32)
    sq_norms = np.empty(n, np.float32)
    block = np.empty((min(n, _CENTER_BLOCK), features.shape[1]), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # reported below, as one ValueError
        for lo in range(0, n, _CENTER_BLOCK):
            hi = min(lo + _CENTER_BLOCK, n)
            centered = np.subtract(features[lo:hi], mean, out=block[: hi - lo])
            sq_norms[lo:hi] = np.einsum("ij,ij->i", centered, centered)
    # The screened distances add two norms: keep them (and their sum) finite.
    if not np.isfinite(sq_norms.max()) or sq_norms.max() > np.finfo(np.float32).max / 4:
        raise ValueError("features contain NaN or infinite values, or values too large for float32")
    return mean, sq_norms


def _exact_sq_distances(features: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float64 sum((features[rows[k]] - features[cols[k]])^2), in blocks of `_EXACT_BLOCK` pairs."""
    out = np.empty(len(rows), np.float64)
    for lo in range(0, len(rows), _EXACT_BLOCK):
        hi = lo + _EXACT_BLOCK
        diffs = features[rows[lo:hi]].astype(np.float64)
        diffs -= features[cols[lo:hi]]
        out[lo:hi] = np.einsum("ij,ij->i", diffs, diffs)
    return out


def _nonzero(mask: np.ndarray):
    """np.nonzero of a C-contiguous 2-D bool `mask` that is almost all False, 8 bytes at a time."""
    flat = mask.reshape(-1)
    if flat.size % 8:
        return np.nonzero(mask)
    words = np.flatnonzero(flat.view(np.uint64))
    offsets, bits = np.nonzero(flat.reshape(-1, 8)[words])
    return np.divmod(words[offsets] * 8 + bits, mask.shape[1])


def _first_per_index(index, neighbour, distance):
    """Per distinct `index`, the entry of smallest `distance`, then lowest `neighbour`."""
    order = np.lexsort((neighbour, distance, index))
    index, neighbour, distance = index[order], neighbour[order], distance[order]
    first = np.ones(len(index), bool)
    first[1:] = index[1:] != index[:-1]
    return index[first], neighbour[first], distance[first]


class _Worker:
    """One thread's share of the tiles: its running minima, candidate pairs and resolved rows."""

    def __init__(self, features, mean, half_sq_norms, width, tile_rows, tile_cols):
        n, d = features.shape
        self.features, self.mean = features, mean
        self.half_sq_norms, self.width = half_sq_norms, width
        self.row_block = np.empty((tile_rows, d), np.float32)  # the tile's centred rows
        self.col_block = np.empty((tile_cols, d), np.float32)  # and columns
        self.row_block_start = None
        # Running minimum of each row's screened distances over this worker's tiles: never below
        # the final minimum, so windows around it hold the final window.
        self.running = np.full(n, np.inf, np.float32)
        self.buffer = np.empty(tile_rows * tile_cols, np.float32)
        self.pairs = []  # (rows int64, cols int64, screened float32), rows < cols
        self.num_pairs = 0
        self.budget = max(_PAIRS_PER_ROW * n, tile_rows * tile_cols)
        # Rows resolved exactly when too many pairs tie (`_resolve`): neighbour (n: none), distance.
        self.resolved_nbr = np.full(n, n, np.int64)
        self.resolved_dist = np.full(n, np.inf, np.float64)

    def tile(self, r0, r1, c0, c1):
        """Screens rows [r0, r1) against columns [c0, c1), c0 >= r0; keeps pairs row < column."""
        mean, half_sq_norms, running = self.mean, self.half_sq_norms, self.running
        screened = self.buffer[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
        if self.row_block_start != r0:  # the same rows serve every tile of one tile row
            np.subtract(self.features[r0:r1], mean, out=self.row_block[: r1 - r0])
            self.row_block_start = r0
        cols = np.subtract(self.features[c0:c1], mean, out=self.col_block[: c1 - c0])
        # Half the squared distance, ||a||^2 / 2 + ||b||^2 / 2 - a.b (halving is exact in binary).
        np.matmul(self.row_block[: r1 - r0], cols.T, out=screened)
        np.subtract(half_sq_norms[c0:c1], screened, out=screened)
        screened += half_sq_norms[r0:r1, np.newaxis]
        lower = None
        if c0 < r1:  # the tile crosses the diagonal: pairs with column <= row belong elsewhere
            lower = np.arange(c0, c1)[np.newaxis, :] <= np.arange(r0, r1)[:, np.newaxis]
            screened[lower] = np.inf
        row_min, col_min = running[r0:r1], running[c0:c1]  # views: updated in place
        np.minimum(row_min, screened.min(axis=1), out=row_min)
        np.minimum(col_min, screened.min(axis=0), out=col_min)
        keep = screened <= (row_min + self.width[r0:r1])[:, np.newaxis]
        keep |= screened <= (col_min + self.width[c0:c1])[np.newaxis, :]
        if lower is not None:
            keep[lower] = False  # an inf threshold (no finite pair seen yet) keeps inf entries
        rows, cols = _nonzero(keep)
        if len(rows):
            self.pairs.append((rows + r0, cols + c0, screened[rows, cols]))
            self.num_pairs += len(rows)
            if self.num_pairs > self.budget:
                self._compact()

    def merged_pairs(self):
        if not self.pairs:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.float32)
        return tuple(np.concatenate(part) for part in zip(*self.pairs))

    def _compact(self):
        rows, cols, screened = self.merged_pairs()
        running, width = self.running, self.width
        inside = screened <= running[rows] + width[rows]
        inside |= screened <= running[cols] + width[cols]
        rows, cols, screened = rows[inside], cols[inside], screened[inside]
        self.pairs, self.num_pairs = [(rows, cols, screened)], len(rows)
        if self.num_pairs > self.budget // 2:
            self._resolve()

    def _resolve(self):
        """Folds every kept pair, both ways, into the exactly resolved neighbours: bounds memory
        when many rows tie (a pair outside the final window cannot change the answer)."""
        rows, cols, _ = self.merged_pairs()
        exact = _exact_sq_distances(self.features, rows, cols)
        n = len(self.running)
        had = np.flatnonzero(self.resolved_nbr < n)
        index, nbr, dist = _first_per_index(
            np.concatenate([rows, cols, had]),
            np.concatenate([cols, rows, self.resolved_nbr[had]]),
            np.concatenate([exact, exact, self.resolved_dist[had]]),
        )
        self.resolved_nbr[index], self.resolved_dist[index] = nbr, dist
        self.pairs, self.num_pairs = [], 0


def _tiles(n, tile_rows, tile_cols):
    for r0 in range(0, n, tile_rows):
        r1 = min(r0 + tile_rows, n)
        for c0 in range(r0, n, tile_cols):
            yield r0, r1, c0, min(c0 + tile_cols, n)


def _loo_nearest(features: np.ndarray, chunk_size, num_threads) -> np.ndarray:
    """int64 [N] nearest other row of each row of float32 [N, d] `features` (see module doc)."""
    chunk_size = _positive_int("chunk_size", chunk_size)
    if num_threads is None:  # the cores this process may run on (`taskset`), where the OS says
        affinity = getattr(os, "sched_getaffinity", None)
        num_threads = len(affinity(0)) if affinity else os.cpu_count() or 1
    num_threads = _positive_int("num_threads", num_threads)
    n, d = features.shape
    mean, sq_norms = _center(features)
    # Tiles screen half squared distances (exact halving), so a row's window, twice the screening
    # error bound, is delta_i: a float32 dot product of length d errs by at most d 2^-24 (||a||^2 +
    # ||b||^2) / 2 (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, 3.1); with the
    # norms, centring and additions about 2 (d + 4) 2^-24 (||a||^2 + ||b||^2), times 4 to spare.
    half_sq_norms = 0.5 * sq_norms
    slack = 4.0 * 2.0 * (d + 4) * 2.0**-24
    width = (slack * (sq_norms.astype(np.float64) + sq_norms.max())).astype(np.float32)
    tile_cols = min(chunk_size, n)
    tile_rows = max(1, tile_cols // _TILE_ROWS_PER_CHUNK)
    tiles, lock = _tiles(n, tile_rows, tile_cols), threading.Lock()
    num_tiles = sum(-(-(n - r0) // tile_cols) for r0 in range(0, n, tile_rows))
    workers = [
        _Worker(features, mean, half_sq_norms, width, tile_rows, tile_cols)
        for _ in range(min(num_threads, num_tiles))
    ]

    def work(worker):
        while True:
            with lock:
                tile = next(tiles, None)
            if tile is None:
                return
            worker.tile(*tile)

    with threadpool_limits(limits=1, user_api="blas"):
        if len(workers) == 1:  # no thread to start
            work(workers[0])
        else:
            with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
                list(pool.map(work, workers))  # re-raises a worker's exception

    # Final windows: around the minimum over all workers.
    running = np.minimum.reduce([w.running for w in workers])
    rows, cols, screened = (
        np.concatenate(part) for part in zip(*(w.merged_pairs() for w in workers))
    )
    by_row = screened <= running[rows] + width[rows]
    by_col = screened <= running[cols] + width[cols]
    index = np.concatenate([rows[by_row], cols[by_col]])
    nbr = np.concatenate([cols[by_row], rows[by_col]])
    dist = np.full(len(index), np.nan)
    for w in workers:
        had = np.flatnonzero(w.resolved_nbr < n)
        index = np.concatenate([index, had])
        nbr = np.concatenate([nbr, w.resolved_nbr[had]])
        dist = np.concatenate([dist, w.resolved_dist[had]])
    counts = np.bincount(index, minlength=n)
    # Only rows with several candidates need exact distances; a lone candidate is the answer.
    need = (counts[index] > 1) & np.isnan(dist)
    dist[need] = _exact_sq_distances(features, index[need], nbr[need])
    dist[counts[index] == 1] = 0.0
    index, nbr, _ = _first_per_index(index, nbr, dist)
    if len(index) != n:  # every row's true nearest neighbour is always a candidate
        raise AssertionError(f"kNN search lost rows: {n - len(index)} without a candidate")
    nearest = np.empty(n, np.int64)
    nearest[index] = nbr
    return nearest


def loo_nearest_neighbors(features, chunk_size: int = 1024, num_threads=None) -> tf.Tensor:
    """int64 tensor [N]: for every row of `features`, the index of its nearest other row.

    Euclidean distance; a duplicate row (distance 0) is a neighbour, and among rows equally near in
    exact arithmetic the lowest index wins. `chunk_size` and `num_threads` do not change the result.

    Args:
      features: finite numeric [N, d] array or tensor (N >= 2), cast to float32.
      chunk_size: columns of a distance tile (chunk_size^2 / 4 float32 per worker thread).
      num_threads: worker threads (None: the cores this process may run on).

    Raises:
      ValueError: `features` not a finite 2-D array with at least 2 rows, or `chunk_size` or
        `num_threads` not a positive integer.
    """
    return tf.convert_to_tensor(_loo_nearest(_as_features(features), chunk_size, num_threads))


def loo_1nn_correct(features, labels, chunk_size: int = 1024, num_threads=None) -> np.ndarray:
    """Per-row leave-one-out 1-nearest-neighbour hits of `labels` under `features`.

    Returns bool numpy [N], True where the row's nearest other row has the same label. Arguments
    and errors as `loo_nearest_neighbors`, plus integer [N] `labels` (else ValueError).
    """
    array = _as_features(features)
    labels = np.asarray(labels)
    if labels.shape != array.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers, one label per feature row ({array.shape[0]}); "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    return labels[_loo_nearest(array, chunk_size, num_threads)] == labels


def loo_1nn_accuracy(features, labels, chunk_size: int = 1024, num_threads=None) -> float:
    """The mean of `loo_1nn_correct` (same arguments and errors): the fraction of rows, in [0, 1],
    whose nearest other row has the same label (exact in float64 up to the one division)."""
    return float(np.mean(loo_1nn_correct(features, labels, chunk_size, num_threads)))
