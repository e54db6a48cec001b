"""Finding regularized weights and measuring them, shared by every reader."""

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_l1.regularizers import ElasticNetRegularizer
from keras_l1.regularizers import GroupLassoRegularizer
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


def _zero_count(value, tolerance: float):
    # `abs(w) <= 0` is `w == 0` (NaN is neither), one pass fewer.
    is_zero = value == 0 if tolerance == 0 else ops.abs(value) <= tolerance
    # Counted in int32: a float32 sum of ones stops being exact at 2**24
    # entries (a 4097 x 4096 kernel), which would misreport exact zeros.
    return ops.sum(ops.cast(is_zero, "int32"))


def _penalty_and_screen(weight, value):
    """The penalty and a sum that is not finite if a weight entry is not."""
    penalty = ops.cast(weight.regularizer(value), "float32")
    if _penalty_reveals_non_finite(weight.regularizer):
        return penalty, penalty
    # float32: a float16 sum of finite weights overflows from 65504.
    return penalty, ops.sum(ops.cast(value, "float32"))


def _complete(weights, penalties, zeros, sums) -> np.ndarray:
    """Adds the non-finite counts (second pass, rare) and the sizes."""
    nonfinite = np.zeros(len(weights))
    for index in np.flatnonzero(~np.isfinite(sums)):
        value = weights[index].variable.value
        count = ops.sum(ops.cast(ops.logical_not(ops.isfinite(value)), "int32"))
        nonfinite[index] = float(keras.ops.convert_to_numpy(count))
    sizes = np.array([float(np.prod(w.variable.shape)) for w in weights])
    return np.column_stack([penalties, zeros, nonfinite, sizes])


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

    Each call runs the operations one by one (eagerly); `RepeatedMeasure`
    gives the same numbers from one compiled call on TensorFlow.

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
        zero_counts.append(_zero_count(value, tolerance))
        scalars.extend(_penalty_and_screen(weight, value))
    scalars = keras.ops.convert_to_numpy(ops.stack(scalars)).astype(np.float64)
    zeros = keras.ops.convert_to_numpy(ops.stack(zero_counts)).astype(np.float64)
    return _complete(weights, scalars[0::2], zeros, scalars[1::2])


# Regularizers whose penalty depends only on the weight, the constructor
# arguments (`get_config`) and keras_l1's strength factor variable, so a
# traced call stays right as long as those three stay the same.
_TRACEABLE_REGULARIZERS = (
    L1Regularizer,
    ElasticNetRegularizer,
    GroupLassoRegularizer,
    keras.regularizers.L1,
    keras.regularizers.L2,
    keras.regularizers.L1L2,
)


def _trace_key(weights, tolerance: float):
    """What a traced measurement of `weights` depends on, or None if unknown."""
    if keras.backend.backend() != "tensorflow" or not weights:
        return None
    key = [tolerance]
    for weight in weights:
        regularizer = weight.regularizer
        if type(regularizer) not in _TRACEABLE_REGULARIZERS:
            return None
        factor = getattr(regularizer, "_strength_factor", None)
        key.append(
            (
                id(weight.variable),
                id(weight.variable.value),
                id(regularizer),
                tuple(regularizer.get_config().items()),
                # The factor is a variable, read at each call; anything else
                # would be frozen into the trace.
                factor if isinstance(factor, (int, float)) else id(factor),
            )
        )
    return tuple(key)


def _traced_measurement(weights, tolerance: float):
    """A TensorFlow function returning `[penalty, zeros, screening sum]` rows."""
    import tensorflow as tf

    # Captured, not passed: no per-call argument matching, and a captured
    # variable is read when the function runs, so no new values need a trace.
    values = [weight.variable.value for weight in weights]

    def run():
        rows = []
        previous = []
        for weight, value in zip(weights, values):
            # One weight after the other: the graph runtime would otherwise
            # run independent weights side by side, with the temporaries of
            # several weights alive at once.
            with tf.control_dependencies(previous):
                zeros = _zero_count(value, tolerance)
                penalty, screen = _penalty_and_screen(weight, value)
            previous = [zeros, penalty, screen]
            rows.append(ops.stack([ops.cast(x, "float64") for x in (penalty, zeros, screen)]))
        # One host copy for all weights.
        return ops.stack(rows)

    return tf.function(run, autograph=False)


class RepeatedMeasure:
    """`measure`, for the same weights measured again and again (every epoch).

    On TensorFlow, the second time it measures the same weights (the same
    variables, regularizers with the same arguments and strength factor, and
    tolerance) it traces the whole measurement into one function, and runs
    that from then on: one call instead of several operations per weight,
    the same streaming and the same numbers. The function reads the variables
    (weights and strength factor) when it runs; a change of any other part
    gives a new trace. Weights with another regularizer (a custom callable
    could read Python state a trace would freeze), and the other backends,
    are measured by `measure` at every call.
    """

    def __init__(self):
        self._key = None
        self._weights = None
        self._function = None

    def __reduce__(self):
        # A cache, not state: copies and pickles start empty (a traced
        # function can be neither), as callbacks are deep-copied by
        # scikit-learn-style wrappers.
        return (RepeatedMeasure, ())

    def __call__(self, weights, tolerance: float):
        key = _trace_key(weights, tolerance)
        if key is None or key != self._key:
            # A trace costs tens of eager measurements (35 ms for four
            # weights): not for weights that may be measured only once.
            self._key = key
            # Keeps the objects `key` names by `id` alive, so no other object
            # can take one of those ids while the key is in use.
            self._weights = list(weights)
            self._function = None
            return measure(weights, tolerance)
        if self._function is None:
            self._function = _traced_measurement(weights, tolerance)
        rows = np.asarray(self._function())
        return _complete(weights, rows[:, 0], rows[:, 1], rows[:, 2])


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
