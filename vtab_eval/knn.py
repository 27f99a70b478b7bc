"""Leave-one-out 1-nearest-neighbour search and accuracy, computed with TensorFlow.

This is the core of the `knn` expert selector (paper section 5): for every training image of a task,
find its nearest *other* image in an expert's feature space and check whether the labels agree.
Everything runs in TensorFlow ops, so it uses whatever device TensorFlow places them on.

The search goes over the rows in chunks, so memory is O(N x chunk), never N x N:

1. Screening pass: squared Euclidean distances through the expansion
   ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2, one matrix product per chunk. In float32 the expansion
   suffers cancellation when a distance is small next to the norms (an exact duplicate can come
   out at +-1e-3 instead of 0), so it is only used to screen: the features are centred first (a
   translation leaves distances unchanged and shrinks the norms), the row itself is masked out,
   and every row whose screened distance lies within a rounding-error bound of the row's smallest
   screened distance is kept as a candidate. The bound (`_screening_slack`) assumes the worst
   case of the matrix product, including TensorFloat-32 inputs when TF32 is enabled and a GPU
   is visible, so the true nearest neighbour is always among the candidates.
2. Exact pass: for the candidates only (usually one to a few per row), the distance is computed
   directly as sum((a - b)^2) from the original features, which has no cancellation: an exact
   duplicate is at distance exactly 0 and wins, and equal distances compare equal, so ties go to
   the lowest row index.

So the answer is the argmin, lowest index first, of the directly computed float32 distance; the
screening only decides how much of that has to be computed.
"""

import numpy as np
import tensorflow as tf

# Candidate pairs whose exact distance is computed at once, per row of the chunk: bounds the
# exact pass's memory to chunk_size * this * d floats.
_PAIRS_PER_ROW_BLOCK = 8


def _as_features(features) -> tf.Tensor:
    """Converts `features` to a float32 [N, d] tensor with N >= 2, or raises ValueError.

    Finiteness is checked inside the search itself (see `_loo_nearest`), saving a pass.
    """
    try:
        tensor = tf.convert_to_tensor(features)
    except (TypeError, ValueError) as err:
        raise ValueError(f"features must be a numeric [N, d] array; got {type(features)}") from err
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise ValueError(f"features must be a numeric [N, d] array; got dtype {tensor.dtype.name}")
    if tensor.shape.rank != 2:
        raise ValueError(f"features must be a 2-D [N, d] array; got shape {tensor.shape}")
    n, d = tensor.shape
    if n < 2:
        raise ValueError(f"leave-one-out search needs at least 2 rows in features; got {n}")
    if d < 1:
        raise ValueError(f"features must have at least one column; got shape {tensor.shape}")
    return tf.cast(tensor, tf.float32)


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size}")
    return int(chunk_size)


def _screening_slack(dim: int) -> float:
    """Relative error bound of a screened squared distance, as a fraction of ||a||^2 + ||b||^2.

    A float32 dot product of length d is off by at most about d * 2^-24 times sum |a_k b_k|; with
    TensorFloat-32 (TensorFlow's default on recent GPUs) each input is also rounded to 10 mantissa
    bits, adding 2 * 2^-10. The norms, the centring and the direct distance add a few more units
    of rounding; a factor of 4 covers those with room to spare. (|a| + |b|)^2 <= 2(|a|^2 + |b|^2)
    gives the final factor of 2.
    """
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    input_rounding = 2.0**-10 if tf32 and tf.config.list_logical_devices("GPU") else 0.0
    return 2.0 * 4.0 * (2.0 * input_rounding + (dim + 4) * 2.0**-24)


def _exact_pair_distances(features, rows, cols, block):
    """Direct squared distances between features[rows[k]] and features[cols[k]], in blocks."""
    num_pairs = tf.shape(cols)[0]
    num_blocks = (num_pairs + block - 1) // block
    distances = tf.TensorArray(
        tf.float32, size=num_blocks, infer_shape=False, element_shape=tf.TensorShape([None])
    )
    for b in tf.range(num_blocks):
        lo = b * block
        hi = tf.minimum(lo + block, num_pairs)
        diffs = tf.gather(features, rows[lo:hi]) - tf.gather(features, cols[lo:hi])
        distances = distances.write(b, tf.reduce_sum(tf.square(diffs), axis=1))
    return distances.concat()


@tf.function(
    input_signature=[
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.float32),
    ],
    reduce_retracing=True,
)
def _loo_nearest(features, chunk_size, slack):
    """Returns (nearest int64 [N], finite bool): `finite` is False for NaN, inf or overflow."""
    n = tf.shape(features)[0]
    centered = features - tf.reduce_mean(features, axis=0, keepdims=True)
    sq_norms = tf.reduce_sum(tf.square(centered), axis=1)
    max_sq_norm = tf.reduce_max(sq_norms)
    # Any NaN or infinity, or a value whose square overflows, reaches the norms; skip the work then.
    finite = tf.math.is_finite(max_sq_norm)
    num_chunks = tf.where(finite, (n + chunk_size - 1) // chunk_size, 0)
    # Ranking key (||b||^2 - 2 a.b) / 2, i.e. the squared distance minus the row's own ||a||^2
    # (the same for all b), halved; the halving is exact and saves a pass over the chunk x N block.
    half_sq_norms = 0.5 * sq_norms
    pair_block = chunk_size * _PAIRS_PER_ROW_BLOCK
    nearest = tf.TensorArray(
        tf.int64, size=num_chunks, infer_shape=False, element_shape=tf.TensorShape([None])
    )
    for i in tf.range(num_chunks):
        start = i * chunk_size
        stop = tf.minimum(start + chunk_size, n)
        size = stop - start
        keys = half_sq_norms[tf.newaxis, :] - tf.matmul(
            centered[start:stop], centered, transpose_b=True
        )
        own = tf.stack([tf.range(size), tf.range(start, stop)], axis=1)
        keys = tf.tensor_scatter_nd_update(keys, own, tf.fill([size], np.float32(np.inf)))
        # A row whose true distance could be the smallest lies within twice the error bound of
        # the smallest screened distance (halved like the keys).
        width = slack * (sq_norms[start:stop] + max_sq_norm)
        window = keys <= (tf.reduce_min(keys, axis=1) + width)[:, tf.newaxis]
        pairs = tf.cast(tf.where(window), tf.int32)
        local, cols = pairs[:, 0], pairs[:, 1]
        exact = _exact_pair_distances(features, local + start, cols, pair_block)
        row_min = tf.math.unsorted_segment_min(exact, local, size)
        is_min = tf.equal(exact, tf.gather(row_min, local))
        best = tf.math.unsorted_segment_min(tf.where(is_min, cols, n), local, size)
        nearest = nearest.write(i, tf.cast(best, tf.int64))
    return nearest.concat(), finite


def loo_nearest_neighbors(features, chunk_size: int = 1024) -> tf.Tensor:
    """Returns, for every row of `features`, the index of its nearest other row.

    Args:
      features: numeric [N, d] array or tensor (N >= 2), cast to float32; must be finite.
      chunk_size: query rows per matrix product; peak memory is about chunk_size x N floats.
        The result does not depend on it.

    Returns:
      int64 tensor [N]. Distance is Euclidean; a row is never its own neighbour, but a duplicate
      row (distance 0) is a legitimate one; ties go to the lowest index. The module docstring
      explains how float32 cancellation is kept from changing the answer.

    Raises:
      ValueError: if `features` is not a finite 2-D array with at least 2 rows, or `chunk_size`
        is not a positive integer.
    """
    tensor = _as_features(features)
    chunk_size = min(_check_chunk_size(chunk_size), int(tensor.shape[0]))
    slack = _screening_slack(int(tensor.shape[1]))
    nearest, finite = _loo_nearest(
        tensor, tf.constant(chunk_size, tf.int32), tf.constant(slack, tf.float32)
    )
    if not bool(finite):
        raise ValueError("features contain NaN or infinite values, or values too large for float32")
    return nearest


def loo_1nn_correct(features, labels, chunk_size: int = 1024) -> np.ndarray:
    """Per-row leave-one-out 1-nearest-neighbour hits of `labels` under `features`.

    Args:
      features: numeric [N, d] array or tensor (see `loo_nearest_neighbors`).
      labels: integer [N] class labels.
      chunk_size: query rows per matrix product; does not change the result.

    Returns:
      bool numpy array [N]: True where the row's nearest other row has the same label. Its mean
      is `loo_1nn_accuracy`.

    Raises:
      ValueError: on malformed features, or labels that are not an integer vector of length N.
    """
    tensor = _as_features(features)
    labels_np = np.asarray(labels.numpy() if isinstance(labels, tf.Tensor) else labels)
    if labels_np.ndim != 1 or labels_np.shape[0] != tensor.shape[0]:
        raise ValueError(
            f"labels must be a 1-D array with one label per feature row ({tensor.shape[0]}); "
            f"got shape {labels_np.shape}"
        )
    if not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {labels_np.dtype}")
    nearest = loo_nearest_neighbors(tensor, chunk_size=chunk_size).numpy()
    return labels_np[nearest] == labels_np


def loo_1nn_accuracy(features, labels, chunk_size: int = 1024) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy of `labels` under `features`.

    Args:
      features: numeric [N, d] array or tensor (see `loo_nearest_neighbors`).
      labels: integer [N] class labels.
      chunk_size: query rows per matrix product; does not change the result.

    Returns:
      The fraction of rows whose nearest other row has the same label, in [0, 1].

    Raises:
      ValueError: on malformed features, or labels that are not an integer vector of length N.
    """
    # The mean of 0/1 values in float64 is exact up to the one division, as in TF.
    return float(np.mean(loo_1nn_correct(features, labels, chunk_size=chunk_size)))
