"""Finding regularized weights and measuring them, shared by every reader."""

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_l1.regularizers import ElasticNetRegularizer
from keras_l1.regularizers import L1Regularizer


@dataclass(frozen=True)
class RegularizedWeight:
    """A trainable variable that carries a regularizer."""

    layer: str
    variable: object
    regularizer: object

    path: str


def regularized_weights(model) -> list:
    """The variables whose penalty `fit` adds to the loss, each once.

    Keras penalizes exactly the regularized *trainable* weights of the model
    (shared layers count once), so that is the set reported here. The layer
    is named by the variable path without its last part (`"inner/dense"`).
    """
    found = []
    seen = set()
    for variable in model.trainable_weights:
        regularizer = getattr(variable, "regularizer", None)
        if regularizer is None or id(variable) in seen:
            continue
        seen.add(id(variable))
        # Sequential models put their own name in front of every path.
        path = variable.path.removeprefix(f"{model.name}/")
        layer = path.rsplit("/", 1)[0] if "/" in path else path
        found.append(RegularizedWeight(layer, variable, regularizer, path))
    return found


def _penalty_reveals_non_finite(regularizer) -> bool:
    # A non-negative multiple of sum(|w|) and/or sum(w²) is NaN or infinite
    # when any weight is (0 · inf is NaN too). Keras's L1L2 is left out: with
    # both strengths 0 it returns a constant; group lasso masks NaN groups.
    return isinstance(regularizer, (L1Regularizer, ElasticNetRegularizer)) or type(regularizer) in (
        keras.regularizers.L1,
        keras.regularizers.L2,
    )


def measure(weights, tolerance: float):
    """Penalty, zero count, NaN count and size of each weight.

    Streams: the work for one weight needs temporaries of about one weight
    (a boolean and an int32 mask), and no weight is copied to the host. Per
    weight it runs the regularizer (what `fit` adds) and a zero count (one
    comparison, cast and sum). Non-finite entries are screened by a sum that
    a NaN or an infinity makes NaN or infinite (finite entries only by
    overflowing, near 1e38): the penalty itself for L1, L2 and elastic net,
    else a plain sum of the weight. Only a weight whose screening sum is not
    finite has its non-finite entries counted, in a second pass. The work for
    all weights is queued first and copied to the host together, so there is
    a single synchronization when all are finite.

    Returns:
        A float64 NumPy array of shape `(len(weights), 4)`: penalty, zeros,
        non-finite count, size.
    """
    if not weights:
        return np.zeros((0, 4))
    scalars = []
    zero_counts = []
    for weight in weights:
        value = weight.variable.value
        # `abs(w) <= 0` is `w == 0` (NaN is neither), one pass fewer.
        is_zero = value == 0 if tolerance == 0 else ops.abs(value) <= tolerance
        # Counted in int32: a float32 sum of ones stops being exact at 2**24
        # entries (a 4097 x 4096 kernel), which would misreport exact zeros.
        zero_counts.append(ops.sum(ops.cast(is_zero, "int32")))
        del is_zero
        penalty = ops.cast(weight.regularizer(value), "float32")
        scalars.append(penalty)
        if _penalty_reveals_non_finite(weight.regularizer):
            scalars.append(penalty)
        else:
            # float32: a float16 sum of finite weights overflows from 65504.
            scalars.append(ops.sum(ops.cast(value, "float32")))
    scalars = keras.ops.convert_to_numpy(ops.stack(scalars)).astype(np.float64)
    penalties, sums = scalars[0::2], scalars[1::2]
    zeros = keras.ops.convert_to_numpy(ops.stack(zero_counts)).astype(np.float64)
    nonfinite = np.zeros(len(weights))
    for index in np.flatnonzero(~np.isfinite(sums)):
        value = weights[index].variable.value
        count = ops.sum(ops.cast(ops.logical_not(ops.isfinite(value)), "int32"))
        nonfinite[index] = float(keras.ops.convert_to_numpy(count))
    sizes = np.array([float(np.prod(w.variable.shape)) for w in weights])
    return np.column_stack([penalties, zeros, nonfinite, sizes])


def histogram(value, bucket_count: int = 30) -> np.ndarray:
    """TensorBoard histogram buckets of the finite entries of one weight.

    The format of `tf.summary.histogram`: rows `[left edge, right edge,
    count]`, `bucket_count` equal-width buckets from the smallest to the
    largest finite value (the last one closed); all edges equal to the value
    with the whole count in the last bucket if there is only one distinct
    value; all zeros if there is no finite value. Unlike
    `tf.summary.histogram`, which builds a `(size, bucket_count)` float64
    one-hot matrix (240 bytes per weight), this needs memory for about one
    host copy of the weight (plus a boolean mask): NumPy's uniform-bin
    histogram works in blocks.

    Returns:
        A float64 NumPy array of shape `(bucket_count, 3)`.
    """
    if keras.backend.backend() == "tensorflow":
        # `keras.ops.convert_to_numpy` copies twice there (`.numpy()`, then
        # `np.array` of the result); `np.asarray` copies once.
        array = np.ravel(np.asarray(value))
    else:
        array = np.ravel(keras.ops.convert_to_numpy(value))
    if array.dtype not in (np.float32, np.float64):
        # bfloat16 (an ml_dtypes type) has no NumPy histogram; float16 bins
        # would round the edges.
        array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        array = array[finite]
    del finite
    if array.size == 0:
        return np.zeros((bucket_count, 3))
    low, high = float(array.min()), float(array.max())
    if low == high:
        counts = np.zeros(bucket_count)
        counts[-1] = array.size
        return np.column_stack([np.full(bucket_count, low), np.full(bucket_count, low), counts])
    counts, edges = np.histogram(array, bins=bucket_count, range=(low, high))
    return np.column_stack([edges[:-1], edges[1:], counts.astype(np.float64)])
