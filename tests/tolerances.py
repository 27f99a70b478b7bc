"""Float32 comparison tolerances derived from the computation, so that no test depends on one CPU.

Two float32 evaluations of the same mathematics may add in different orders (oneDNN picks its
blocking per CPU model, per batch size and per graph), so they agree only up to rounding. The
model used here (Higham and Mary, "A new approach to probabilistic rounding error analysis", SIAM J.
Sci. Comput. 2019): a reduction of n terms whose result has size m carries a rounding error of
about sqrt(n) * u * m, u = 2**-24 the float32 unit roundoff; its worst case is n * u * m. Errors of
successive reductions add (normalisations rescale activations and their errors alike), and two
evaluations can err in opposite directions.

A real bug (wrong expert, wrong epsilon, wrong kernel, lost weights) changes results by 1e-2 to 1 of
their size: each test that uses these bounds also checks that its bound is far below that.
"""

import math

import numpy as np

U32 = 2.0**-24  # float32 unit roundoff (np.finfo(np.float32).eps / 2).


def reduction_error(n, magnitude, layers=1, evaluations=2):
    """Bound on |a - b| for `evaluations` float32 evaluations of `layers` chained reductions.

    Each reduction sums at most `n` terms; `magnitude` is the size of the compared values.
    """
    return evaluations * layers * math.sqrt(n) * U32 * float(magnitude)


def _reduction_size(kernel_shape):
    # HWIO conv kernels and [in, out] dense kernels reduce over all but the last axis; expert
    # adapter kernels [experts, in, out] reduce over `in` only.
    shape = tuple(int(d) for d in kernel_shape)
    return shape[-2] if len(shape) == 3 else math.prod(shape[:-1])


def model_atol(model, images, output):
    """Tolerance for two float32 evaluations of a BiT `model` on `images` giving about `output`."""
    kernels = [w.shape for w in model.weights if w.path.endswith("kernel")]
    return network_atol(kernels, images.shape, output)


def network_atol(kernel_shapes, image_shape, output):
    """Tolerance for two float32 evaluations of a BiT network with these kernels.

    layers = 2 per kernel: in a pre-activation ResNet every convolution (and every adapter
    convolution) is preceded by a GroupNorm, whose moments are a reduction too. n = the largest
    reduction: a kernel's fan-in, or a GroupNorm's H * W / 16 positions (the first block's, after
    the stride-2 root conv and stride-2 pool). Using layers * sqrt(n_max) rather than the sum of
    sqrt(n) over layers leaves a factor of about 2.5 for the tails of the rounding-error
    distribution and for the cancellation in GroupNorm's mean subtraction. Against a float64
    reference only one evaluation errs, which leaves another factor of 2.
    """
    positions = int(image_shape[1]) * int(image_shape[2]) // 16
    n_max = max([positions] + [_reduction_size(shape) for shape in kernel_shapes])
    magnitude = np.abs(np.asarray(output)).max()
    return reduction_error(n_max, magnitude, layers=2 * len(kernel_shapes))
