"""Leave-one-out 1-nearest-neighbour search and accuracy.

This is the core of the `knn` expert selector (Puigcerver et al., "Scalable Transfer Learning with
Expert Models", ICLR 2021, section 5): for every training image of a task, find its nearest *other*
image in an expert's feature space and check whether the labels agree.

The search is exact and symmetric. Distance is symmetric, so the N x N matrix of squared distances
is computed in tiles of its upper triangle only (pairs i < j), each tile once, and every tile
updates the running minimum of its rows *and* of its columns: N^2 d / 2 multiply-adds instead of
the N^2 d of a general k-NN search (faiss, scikit-learn), which must treat queries and database
as different sets. Memory is O(N) beyond the features themselves, plus per thread one tile and
the centred rows and columns it multiplies (chunk x d each), never N x N: the features are centred
block by block as tiles need them, not copied whole (fresh memory is slow to touch on some VMs,
see benchmarks/RESULTS.md, kNN).

1. Screening, per tile: squared Euclidean distances through the expansion
   ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2, one float32 matrix product per tile. In float32 the
   expansion suffers cancellation when a distance is small next to the norms (an exact duplicate
   can come out at +-1e-3 instead of 0), so it is only used to screen: the features are centred
   first (a translation leaves distances unchanged and shrinks the norms), and with `delta_i`, a
   worst-case bound on the error of a screened distance of row i (`_screening_slack`), every pair
   whose screened distance lies within `2 delta_i` of the running minimum of row i (or
   `2 delta_j` of that of its column j) is kept as a candidate. A running minimum only decreases,
   so this keeps a superset of the final window, which contains the true nearest neighbour and
   every row tied with it. Usually one to a few pairs per row survive; they are filtered again
   against the final minima at the end.
2. Exact pass: a row with a single candidate has found its neighbour. For rows with several, the
   distance to each is computed directly as sum((a - b)^2) in float64 from the original float32
   features (a difference of two float32 values is exact in float64 unless their magnitudes
   differ by more than 2^29), which has no cancellation:
   an exact duplicate is at distance 0 and wins, and rows at equal distance compare equal, so
   ties go to the lowest row index.

So the answer is the exact-arithmetic nearest neighbour, lowest index first among equally near
rows, i.e. that of a float64 brute-force search; the screening only decides how much of the exact
distance has to be computed. It does not depend on `chunk_size` or `num_threads`.

Backend: NumPy's float32 matrix product (OpenBLAS `sgemm`), with one BLAS thread per worker thread
(`threadpoolctl`), the worker threads taking tiles from a shared queue. Each worker also does the
minimum and window passes over its own tile while it is still in cache; BLAS and these NumPy
passes release the GIL. With a multi-threaded BLAS instead, those passes would run on one core
while the others wait; the TensorFlow implementation this replaces ran each op over a whole
chunk x N block and reached about half the FMA peak (issue 12). `benchmarks/knn.py` measures this
one against faiss-cpu and against a plain matrix product (the FMA peak).
"""

import concurrent.futures
import os
import threading

import numpy as np
import tensorflow as tf
from threadpoolctl import threadpool_limits

# Rows of one distance tile, per `chunk_size` columns: a 256 x 1024 float32 tile (1 MiB) stays in
# a core's L2 cache for the passes that follow its matrix product.
_TILE_ROWS_PER_CHUNK = 4
# Candidate pairs a worker keeps per feature row before it compacts (drops pairs outside the
# window of its current minima) or, if many rows are tied, resolves them exactly: bounds the
# candidates' memory to O(N + tile) even when all rows are equal.
_PAIRS_PER_ROW = 8
# Candidate pairs whose exact distance is computed at once: bounds that pass to 512 x d floats.
_EXACT_BLOCK = 512
# Rows centred at once while computing the squared norms (`_center`).
_CENTER_BLOCK = 1024


def _as_features(features) -> np.ndarray:
    """Returns `features` as a C-contiguous float32 [N, d] array with N >= 2, or raises ValueError.

    Finiteness is checked by the search itself (see `_center`), saving a pass.
    """
    if isinstance(features, tf.Tensor):
        features = features.numpy()
    try:
        array = np.asarray(features)
    except (TypeError, ValueError) as err:
        raise ValueError(f"features must be a numeric [N, d] array; got {type(features)}") from err
    if array.dtype.kind not in "fiu":
        raise ValueError(f"features must be a numeric [N, d] array; got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"features must be a 2-D [N, d] array; got shape {array.shape}")
    n, d = array.shape
    if n < 2:
        raise ValueError(f"leave-one-out search needs at least 2 rows in features; got {n}")
    if d < 1:
        raise ValueError(f"features must have at least one column; got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size}")
    return int(chunk_size)


def _check_num_threads(num_threads) -> int:
    if num_threads is None:
        try:
            return len(os.sched_getaffinity(0))  # the cores `taskset` allows, where supported
        except AttributeError:
            return os.cpu_count() or 1
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise ValueError(f"num_threads must be a positive integer or None; got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer or None; got {num_threads}")
    return int(num_threads)


def _screening_slack(dim: int) -> float:
    """Error bound of a screened squared distance, as a fraction of ||a||^2 + max ||b||^2.

    A float32 dot product of length d is off by at most about d * 2^-24 * sum |a_k b_k|, whatever
    the summation order (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, section
    3.1), and sum |a_k b_k| <= (||a||^2 + ||b||^2) / 2, so 2 a.b is off by at most
    d * 2^-24 * (||a||^2 + ||b||^2); each float32 norm by d * 2^-24 of itself; the centring and
    the two additions by a few units of rounding of ||a||^2 + ||b||^2. That is about
    2 (d + 4) 2^-24 (||a||^2 + ||b||^2) in all; the factor 4 on top is room to spare (kept from
    the earlier TensorFlow implementation's bound).
    """
    return 4.0 * 2.0 * (dim + 4) * 2.0**-24


def _center(features: np.ndarray):
    """Returns (float32 [d] column mean, float32 [N] squared norms of the centred rows), or raises
    ValueError. The centred rows are formed block by block (`_CENTER_BLOCK` rows), never all at once.

    Any NaN or infinity, or a value whose square overflows float32, reaches the norms.
    """
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
        tile_size = tile_rows * tile_cols
        self.features, self.mean, self.half_sq_norms, self.width = (
            features,
            mean,
            half_sq_norms,
            width,
        )
        # The centred rows and columns of the current tile (see `_center`).
        self.row_block = np.empty((tile_rows, d), np.float32)
        self.col_block = np.empty((tile_cols, d), np.float32)
        self.row_block_start = None
        # Running minimum of each row's screened distances over the tiles this worker has seen:
        # never below the final minimum, so windows around it hold the final window.
        self.running = np.full(n, np.inf, np.float32)
        self.buffer = np.empty(tile_size, np.float32)
        self.pairs = []  # (rows int64, cols int64, screened float32), rows < cols
        self.num_pairs = 0
        self.budget = max(_PAIRS_PER_ROW * n, tile_size)
        # Rows resolved exactly when too many pairs tie (see `_resolve`): neighbour (n: none)
        # and float64 squared distance.
        self.resolved_nbr = np.full(n, n, np.int64)
        self.resolved_dist = np.full(n, np.inf, np.float64)

    def tile(self, r0, r1, c0, c1):
        """Screens rows [r0, r1) against columns [c0, c1), c0 >= r0; keeps pairs row < column."""
        features, mean, half_sq_norms, width, running = (
            self.features,
            self.mean,
            self.half_sq_norms,
            self.width,
            self.running,
        )
        screened = self.buffer[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
        if self.row_block_start != r0:  # the same rows serve every tile of one tile row
            np.subtract(features[r0:r1], mean, out=self.row_block[: r1 - r0])
            self.row_block_start = r0
        cols = np.subtract(features[c0:c1], mean, out=self.col_block[: c1 - c0])
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
        keep = screened <= (row_min + width[r0:r1])[:, np.newaxis]
        keep |= screened <= (col_min + width[c0:c1])[np.newaxis, :]
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
        rows, cols, screened = (np.concatenate(part) for part in zip(*self.pairs))
        return rows, cols, screened

    def _compact(self):
        rows, cols, screened = self.merged_pairs()
        running, width = self.running, self.width
        inside = (screened <= running[rows] + width[rows]) | (
            screened <= running[cols] + width[cols]
        )
        rows, cols, screened = rows[inside], cols[inside], screened[inside]
        self.pairs, self.num_pairs = [(rows, cols, screened)], len(rows)
        if self.num_pairs > self.budget // 2:
            self._resolve()

    def _resolve(self):
        """Folds every kept pair, in both directions, into the exactly resolved neighbours.

        A pair outside the final window is farther than the true nearest neighbour, so keeping it
        among a row's candidates cannot change the answer; this only bounds memory when many
        rows tie (for example, all rows equal).
        """
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


def _loo_nearest(features: np.ndarray, chunk_size: int, num_threads: int) -> np.ndarray:
    """int64 [N] nearest other row of each row of float32 [N, d] `features` (see module doc)."""
    n, d = features.shape
    mean, sq_norms = _center(features)
    # The tiles screen half squared distances (exact halving); the window around each row's
    # minimum is twice the screening error bound delta_i, so in those units delta_i itself.
    half_sq_norms = 0.5 * sq_norms
    width = (_screening_slack(d) * (sq_norms.astype(np.float64) + sq_norms.max())).astype(
        np.float32
    )
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
        if len(workers) == 1:
            work(workers[0])
        else:
            with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
                for future in [pool.submit(work, w) for w in workers]:
                    future.result()

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
    """Returns, for every row of `features`, the index of its nearest other row.

    Args:
      features: numeric [N, d] array or tensor (N >= 2), cast to float32; must be finite.
      chunk_size: columns of one distance tile (its rows: chunk_size // 4); each worker thread
        holds one tile of chunk_size^2 / 4 float32. The result does not depend on it.
      num_threads: worker threads, each running single-threaded BLAS; None: the cores this
        process may run on (`os.sched_getaffinity`). The result does not depend on it.

    Returns:
      int64 tensor [N]. Distance is Euclidean; a row is never its own neighbour, but a duplicate
      row (distance 0) is a legitimate one; among equally near rows (in exact arithmetic) the
      lowest index wins. The module docstring explains how float32 cancellation is kept from
      changing the answer.

    Raises:
      ValueError: if `features` is not a finite 2-D array with at least 2 rows, or `chunk_size`
        or `num_threads` is not a positive integer.
    """
    array = _as_features(features)
    chunk_size = _check_chunk_size(chunk_size)
    num_threads = _check_num_threads(num_threads)
    return tf.convert_to_tensor(_loo_nearest(array, chunk_size, num_threads))


def loo_1nn_correct(features, labels, chunk_size: int = 1024, num_threads=None) -> np.ndarray:
    """Per-row leave-one-out 1-nearest-neighbour hits of `labels` under `features`.

    Args:
      features: numeric [N, d] array or tensor (see `loo_nearest_neighbors`).
      labels: integer [N] class labels.
      chunk_size: distance tile size (see `loo_nearest_neighbors`); does not change the result.
      num_threads: worker threads (see `loo_nearest_neighbors`); does not change the result.

    Returns:
      bool numpy array [N]: True where the row's nearest other row has the same label. Its mean
      is `loo_1nn_accuracy`.

    Raises:
      ValueError: on malformed features, or labels that are not an integer vector of length N.
    """
    array = _as_features(features)
    labels_np = np.asarray(labels.numpy() if isinstance(labels, tf.Tensor) else labels)
    if labels_np.ndim != 1 or labels_np.shape[0] != array.shape[0]:
        raise ValueError(
            f"labels must be a 1-D array with one label per feature row ({array.shape[0]}); "
            f"got shape {labels_np.shape}"
        )
    if not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {labels_np.dtype}")
    nearest = _loo_nearest(array, _check_chunk_size(chunk_size), _check_num_threads(num_threads))
    return labels_np[nearest] == labels_np


def loo_1nn_accuracy(features, labels, chunk_size: int = 1024, num_threads=None) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy of `labels` under `features`.

    Args:
      features: numeric [N, d] array or tensor (see `loo_nearest_neighbors`).
      labels: integer [N] class labels.
      chunk_size: distance tile size (see `loo_nearest_neighbors`); does not change the result.
      num_threads: worker threads (see `loo_nearest_neighbors`); does not change the result.

    Returns:
      The fraction of rows whose nearest other row has the same label, in [0, 1].

    Raises:
      ValueError: on malformed features, or labels that are not an integer vector of length N.
    """
    # The mean of 0/1 values in float64 is exact up to the one division.
    hits = loo_1nn_correct(features, labels, chunk_size=chunk_size, num_threads=num_threads)
    return float(np.mean(hits))
