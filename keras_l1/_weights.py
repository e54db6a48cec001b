"""Finding regularized weights and measuring them, shared by every reader."""

import contextlib
import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_l1.regularizers import ElasticNetRegularizer
from keras_l1.regularizers import GroupLassoRegularizer
from keras_l1.regularizers import L1Regularizer
from keras_l1.regularizers import LogSumRegularizer


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
    # A non-negative multiple of sum(|w|), sum(w²) or sum(log(1 + |w|/ε)) is
    # NaN or infinite when any weight is (0 · inf is NaN too). Keras's L1L2
    # is left out: with both strengths 0 it returns a constant; group lasso
    # masks NaN groups.
    kinds = (L1Regularizer, ElasticNetRegularizer, LogSumRegularizer)
    return isinstance(regularizer, kinds) or type(regularizer) in (
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


def _non_finite_counts(weights, sums) -> np.ndarray:
    """The non-finite entries of each weight whose screening sum is not finite (rare)."""
    counts = np.zeros(len(weights))
    for index in np.flatnonzero(~np.isfinite(sums)):
        value = weights[index].variable.value
        count = ops.sum(ops.cast(ops.logical_not(ops.isfinite(value)), "int32"))
        counts[index] = float(keras.ops.convert_to_numpy(count))
    return counts


def _no_gradient():
    """A context without gradient recording, where the backend records eagerly."""
    if keras.backend.backend() == "torch":
        import torch

        # A weight is a `torch.nn.Parameter`: every operation on it would
        # otherwise record a graph for backpropagation.
        return torch.no_grad()
    return contextlib.nullcontext()


def _measure_on_device(weights, tolerance: float) -> np.ndarray:
    """`[penalty, zeros, non-finite count]` rows, by eager operations."""
    scalars = []
    zero_counts = []
    with _no_gradient():
        for weight in weights:
            value = weight.variable.value
            zero_counts.append(_zero_count(value, tolerance))
            scalars.extend(_penalty_and_screen(weight, value))
    scalars = keras.ops.convert_to_numpy(ops.stack(scalars)).astype(np.float64)
    zeros = keras.ops.convert_to_numpy(ops.stack(zero_counts)).astype(np.float64)
    sums = scalars[1::2]
    return np.column_stack([scalars[0::2], zeros, _non_finite_counts(weights, sums)])


def _host_view(value):
    """A NumPy view of a weight that lives in host memory, or None.

    No copy on any backend: TensorFlow's read of a variable shares its buffer
    (and the variable copies itself before its next update while the read is
    alive; only a variable TensorFlow keeps in copy-on-read mode is copied,
    one weight at a time), JAX and PyTorch arrays on the CPU expose theirs.
    Weights on an accelerator, or read inside a traced function, give None.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.inside_function() or "CPU" not in value.device:
            return None
        # The variable itself converts through `.numpy()`, a copy.
        return np.asarray(value.value() if isinstance(value, tf.Variable) else value)
    if backend == "jax":
        devices = value.devices()
        if len(devices) != 1 or next(iter(devices)).platform != "cpu":
            return None
        return np.asarray(value)
    if backend == "torch":
        if value.device.type != "cpu":
            return None
        return value.detach().numpy()
    if backend == "numpy":
        return np.asarray(value)
    return None


def _sum_strengths(regularizer):
    """`(l1, l2)` if the penalty is `l1 * sum(|w|) + l2 * sum(w²)` (times the
    a term whose strength is None being absent; else None."""
    kind = type(regularizer)
    # Keras's `L1` holds its strength as a float32 tensor (and multiplies by
    # it, so by the float32-rounded value): as Python floats.
    if kind in (L1Regularizer, keras.regularizers.L1):
        return float(regularizer.l1), None
    if kind is keras.regularizers.L2:
        return None, float(regularizer.l2)
    if kind is ElasticNetRegularizer:
        return float(regularizer.l1), float(regularizer.l2)
    if kind is keras.regularizers.L1L2:
        # Keras leaves out a term whose strength is 0: L1L2(0, 0) is 0 even
        # for a NaN weight, where `0 * sum` would be NaN.
        return float(regularizer.l1) or None, float(regularizer.l2) or None
    return None


# Entries per block of the host measurement: temporaries of 1 MiB (float32)
# that stay in the cache between the passes over a block.
_BLOCK = 1 << 18


def _measure_array(array, tolerance: float, l1, l2):
    """`(penalty, zeros, non-finite count)` of a host array.

    In blocks, so that the passes over a block (magnitudes, zero count, sums)
    read it from the cache and the temporaries stay small: about as fast as
    one `np.count_nonzero` over the weight.
    """
    flat = array.reshape(-1)
    magnitude = np.empty(min(_BLOCK, flat.size), flat.dtype)
    zeros = nonfinite = 0
    abs_sum = square_sum = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, flat.size, _BLOCK):
            block = flat[start : start + _BLOCK]
            part = np.abs(block, out=magnitude[: block.size])
            # `abs(w) <= 0` is `w == 0`; NaN counts as neither.
            zeros += np.count_nonzero(part <= tolerance)
            # The weight's own precision, as the regularizers accumulate.
            block_sum = float(part.sum())
            abs_sum += block_sum
            if l2 is not None:
                square_sum += float(np.dot(block, block))
            if not math.isfinite(block_sum):
                # Some entry is NaN or infinite, or finite ones overflow.
                nonfinite += np.count_nonzero(~np.isfinite(block))
    penalty = 0.0
    if l1 is not None:
        penalty += l1 * abs_sum
    if l2 is not None:
        penalty += l2 * square_sum
    return penalty, zeros, nonfinite


def _measure_on_host(weights, tolerance: float, on_host: bool = True):
    """Rows `[penalty, zeros, non-finite count, size]` of the weights that can
    be measured in host memory, and the indices of the others (left at 0).
    With `on_host=False`, every weight is left to the backend."""
    rows = np.zeros((len(weights), 4))
    rest = []
    for index, weight in enumerate(weights):
        rows[index, 3] = math.prod(weight.variable.shape)
        if not on_host:
            rest.append(index)
            continue
        strengths = _sum_strengths(weight.regularizer)
        # float16 and bfloat16 sums need a cast, and bfloat16 has no NumPy type.
        if strengths is None or weight.variable.dtype not in ("float32", "float64"):
            rest.append(index)
            continue
        array = _host_view(weight.variable.value)
        if array is None:
            rest.append(index)
            continue
        penalty, zeros, nonfinite = _measure_array(array, tolerance, *strengths)
        # float32, as the regularizers return it.
        with np.errstate(over="ignore", invalid="ignore"):
            penalty = np.float32(penalty)
        rows[index, :3] = penalty, zeros, nonfinite
    return rows, rest


def measure(weights, tolerance: float, on_host: bool = True):
    """Penalty, zero count, NaN count and size of each weight.

    A weight in host memory (on the CPU) whose regularizer is a multiple of
    `sum(|w|)` and/or `sum(w²)` (keras_l1's L1 and elastic net, Keras's `L1`,
    `L2`, `L1L2`) is measured by NumPy on a view of its memory, without a
    copy: in blocks that stay in the cache, each block read from memory
    once, so about as fast as one `np.count_nonzero` over the weights. The
    penalty is the regularizer's formula with its strengths, in float64 sums
    rounded to float32; the regularizer itself sums in float32, so the two
    agree to float32 rounding.

    Any other weight (on an accelerator, in float16 or bfloat16, or with
    another regularizer) is measured by the backend without being copied to
    the host, streaming: its work needs temporaries of about one weight (a
    boolean and an int32 mask). Per weight it runs the regularizer (what
    `fit` adds) and a zero count (one comparison, cast and sum). Non-finite
    entries are screened by a sum that a NaN or an infinity makes NaN or
    infinite (finite entries only by overflowing, near 1e38): the penalty
    itself for L1, L2 and elastic net, else a plain sum of the weight. Only a
    weight whose screening sum is not finite has its non-finite entries
    counted, in a second pass. The work for all weights is queued first and
    copied to the host together, so there is a single synchronization when
    all are finite. Each call runs those operations one by one (eagerly);
    `RepeatedMeasure` gives the same numbers (a compiled penalty may round
    differently) from one compiled call on TensorFlow and JAX.

    `on_host=False` measures every weight the second way, as on an
    accelerator (the tests compare the two ways).

    Returns:
        A float64 NumPy array of shape `(len(weights), 4)`: penalty, zeros,
        non-finite count, size.
    """
    rows, rest = _measure_on_host(weights, tolerance, on_host)
    if rest:
        rows[rest, :3] = _measure_on_device([weights[i] for i in rest], tolerance)
    return rows


# Regularizers whose penalty depends only on the weight and the constructor
# arguments (`get_config`), so a traced call stays right as long as those
# stay the same.
_TRACEABLE_REGULARIZERS = (
    L1Regularizer,
    ElasticNetRegularizer,
    GroupLassoRegularizer,
    LogSumRegularizer,
    keras.regularizers.L1,
    keras.regularizers.L2,
    keras.regularizers.L1L2,
)


def _trace_key(weights, tolerance: float):
    """What a compiled measurement of `weights` depends on, or None if unknown."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax") or not weights:
        return None
    key = [tolerance]
    for weight in weights:
        regularizer = weight.regularizer
        if type(regularizer) not in _TRACEABLE_REGULARIZERS:
            return None
        key.append(
            (
                id(weight.variable),
                # TensorFlow captures the variable's own `tf.Variable`; JAX
                # gets the current array at each call (a new one after each
                # update).
                id(weight.variable.value) if backend == "tensorflow" else None,
                id(regularizer),
                tuple(regularizer.get_config().items()),
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

    function = tf.function(run, autograph=False)

    def call():
        return np.asarray(function())

    call.tracing_count = function.experimental_get_tracing_count
    return call


def _jitted_measurement(weights, tolerance: float):
    """A `jax.jit` function returning `[penalty, zeros, screening sum]` rows."""
    import jax

    traces = []

    def run(values):
        traces.append(1)  # runs when JAX traces, not when it runs the compiled code
        penalties, screens, zeros = [], [], []
        for weight, value in zip(weights, values):
            penalty, screen = _penalty_and_screen(weight, value)
            penalties.append(penalty)
            screens.append(screen)
            zeros.append(_zero_count(value, tolerance))
        # Three vectors rather than a float64 matrix: without JAX's x64 mode
        # float64 is float32, which would round zero counts from 2**24.
        return ops.stack(penalties), ops.stack(zeros), ops.stack(screens)

    function = jax.jit(run)

    def call():
        values = [weight.variable.value for weight in weights]
        outputs = function(values)
        return np.column_stack([np.asarray(output, np.float64) for output in outputs])

    call.tracing_count = lambda: len(traces)
    return call


class RepeatedMeasure:
    """`measure`, for the same weights measured again and again (every epoch).

    Weights that `measure` reads in host memory are read so at every call.
    For the others, on TensorFlow and JAX, the second time it measures the
    same weights (the same variables, regularizers with the same arguments,
    and tolerance) it compiles their whole measurement
    into one function (`tf.function`, `jax.jit`), and runs that from then on:
    one call instead of several operations per weight, and the same numbers.
    The function reads the weights when it runs; a
    change of any other part gives a new function. Weights with another
    regularizer (a custom callable could read Python state a trace would
    freeze), and PyTorch, are measured by `measure` at every call.
    """

    def __init__(self, on_host: bool = True):
        self._on_host = on_host
        self._key = None
        self._weights = None
        self._function = None

    def __reduce__(self):
        # A cache, not state: copies and pickles start empty (a traced
        # function can be neither), as callbacks are deep-copied by
        # scikit-learn-style wrappers.
        return (RepeatedMeasure, (self._on_host,))

    def __call__(self, weights, tolerance: float):
        rows, rest = _measure_on_host(weights, tolerance, self._on_host)
        if rest:
            rows[rest, :3] = self._measure_on_device([weights[i] for i in rest], tolerance)
        return rows

    def _measure_on_device(self, weights, tolerance: float) -> np.ndarray:
        key = _trace_key(weights, tolerance)
        if key is None or key != self._key:
            # A trace costs tens of eager measurements: not for weights
            # that may be measured only once.
            self._key = key
            # Keeps the objects `key` names by `id` alive, so no other object
            # can take one of those ids while the key is in use.
            self._weights = list(weights)
            self._function = None
            return _measure_on_device(weights, tolerance)
        if self._function is None:
            if keras.backend.backend() == "jax":
                self._function = _jitted_measurement(weights, tolerance)
            else:
                self._function = _traced_measurement(weights, tolerance)
        rows = self._function()
        penalties, zeros, sums = rows[:, 0], rows[:, 1], rows[:, 2]
        return np.column_stack([penalties, zeros, _non_finite_counts(weights, sums)])


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
