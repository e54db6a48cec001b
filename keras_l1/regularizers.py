"""Weight regularizers whose penalty has a closed-form proximal operator.

Each regularizer is a stateless config, like Keras's own: its penalty, the
gradient plain optimizers follow and its proximal operator
`prox(w, step) = argmin_y ½‖y − w‖² + step · penalty(y)` are pure functions of
the weight, the step and the strengths given at construction. Used alone it
adds its penalty to the loss like any Keras regularizer. With
`keras_l1.ProximalOptimizer` the penalty's gradient is taken back out of the
update and `prox` is applied instead, which is what makes weights exactly zero;
plain (sub)gradient descent on `|w|` only makes them oscillate around it.
"""

import math
from typing import Any

import keras
from keras import ops

from keras_l1 import _tf_kernels
from keras_l1._validation import check_config_keys
from keras_l1._validation import check_float_in
from keras_l1._validation import check_int
from keras_l1._validation import check_non_negative_float

# Backend tensors, NumPy arrays or Python numbers: anything `keras.ops` takes.
ArrayLike = Any
Tensor = Any


def soft_threshold(x: ArrayLike, threshold: ArrayLike) -> Tensor:
    """Soft-thresholding: `sign(x) * max(|x| − threshold, 0)`.

    The proximal operator of `threshold · ‖x‖₁`, i.e. the solution of
    `argmin_y ½‖y − x‖² + threshold · ‖y‖₁`. Entries with `|x| <= threshold`
    become exactly zero; the others move `threshold` towards zero.

    Args:
        x: A tensor.
        threshold: A non-negative scalar or a tensor broadcastable to `x`
            (a per-coordinate threshold).

    Returns:
        A tensor of the dtype and shape of `x`.

    Example:

    >>> import numpy as np
    >>> np.asarray(soft_threshold(np.array([3.0, -0.5, -2.0]), 1.0)).tolist()
    [2.0, 0.0, -1.0]
    """
    x = ops.convert_to_tensor(x)
    threshold = ops.cast(threshold, x.dtype)
    # `x − clip(x, −t, t)` is `sign(x) · max(|x| − t, 0)` with the same single
    # rounding of `|x| − t`, in fewer elementwise operations.
    return x - ops.clip(x, -threshold, threshold)


def _accumulation_dtype(dtype) -> str:
    # bfloat16/float16 sums over millions of weights lose every digit or
    # overflow; float64 weights keep their own precision.
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


class ProximalRegularizer(keras.regularizers.Regularizer):
    """Base class of a penalty with a closed-form proximal operator.

    Subclass it to add a penalty that `keras_l1.ProximalOptimizer` can make
    exact: implement `penalty(w)` (its value), `gradient(w)` (what a plain
    optimizer follows; pick 0 at kinks), `prox(w, step)` (the solution of
    `argmin_y ½‖y − w‖² + step · penalty(y)`, where `step` is a scalar or a
    per-coordinate tensor broadcastable to `w`) and `get_config()`; keep the
    object stateless, and register it with
    `@keras.saving.register_keras_serializable()` to save models that use it.

    Calling the regularizer on a weight returns `penalty(w)` as a float32
    scalar (summed in float32 whatever the weight dtype) whose gradient is
    exactly `gradient(w)`: the loss never differentiates the formula itself.
    So `ProximalOptimizer`, which subtracts `gradient(w)` from the gradient it
    receives and applies `prox` instead, counts the penalty exactly once.

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> from keras import ops
    >>> class NonNegativeL1(keras_l1.ProximalRegularizer):
    ...     '''`l1 * sum(w)` on `w >= 0` (and +inf elsewhere).'''
    ...     def __init__(self, l1=0.01):
    ...         self.l1 = l1
    ...     def penalty(self, w):
    ...         return self.l1 * ops.sum(w)
    ...     def gradient(self, w):
    ...         return ops.full_like(w, self.l1)
    ...     def prox(self, w, step):
    ...         return ops.maximum(w - ops.cast(step, w.dtype) * self.l1, 0)
    ...     def get_config(self):
    ...         return {"l1": self.l1}
    >>> w = ops.convert_to_tensor(np.array([2.0, 0.2, -1.0]))
    >>> ops.convert_to_numpy(NonNegativeL1(0.5).prox(w, 1.0)).tolist()
    [1.5, 0.0, 0.0]
    """

    # The constructor arguments `from_config` accepts (None: not checked).
    _config_keys: frozenset | None = None

    def __call__(self, x) -> Tensor:
        x = ops.convert_to_tensor(x)
        self.check_weight(x)
        w = ops.cast(x, _accumulation_dtype(x.dtype))
        value = _tf_kernels.penalty_with_gradient(self.penalty, self.gradient, w)
        if value is None:
            value = self._penalty_with_gradient(w)
        return ops.cast(value, "float32")

    def _penalty_with_gradient(self, w):
        """`penalty(w)` as a value whose derivative is `gradient(w)`.

        `penalty(c) + sum((w − c) · gradient(c))` with `c` the weight as a
        constant: the second term is exactly 0 and carries the gradient.
        Subclasses may override it with a cheaper form of the same value
        and gradient (tested equal).
        """
        constant = ops.stop_gradient(w)
        value = self.penalty(constant)
        slope = ops.stop_gradient(ops.cast(self.gradient(constant), w.dtype))
        return value + ops.sum((w - constant) * slope)

    def check_weight(self, w) -> None:
        """Raises a clear error for a weight this regularizer cannot take."""

    def penalty(self, w) -> Tensor:
        """The penalty's value at `w`: a scalar."""
        raise NotImplementedError

    def gradient(self, w) -> Tensor:
        """The penalty's gradient at `w` that plain optimizers follow (0 at kinks)."""
        raise NotImplementedError

    def prox(self, w, step) -> Tensor:
        """Proximal operator: `argmin_y ½‖y − w‖² + step · penalty(y)`."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        if cls._config_keys is not None:
            check_config_keys(cls.__name__, config, set(cls._config_keys))
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _sum_of_squares(w, axes):
    """`sum(w², axis=axes, keepdims=True)`, the group lasso's squared group norms.

    Where `axes` are the trailing ones, as the product of the rows of `w²` with
    a vector of ones: the same sums (in another order of additions), which XLA
    on a CPU computes reading `w` once, where it writes `w²` to memory before a
    reduction. tests/test_regularizers.py checks the two forms agree.
    """
    first = axes[0] if axes else 0
    if first >= 1 and axes == tuple(range(first, len(w.shape))):
        row = math.prod(w.shape[a] for a in axes)
        sums = ops.matmul(ops.reshape(ops.square(w), (-1, row)), ops.ones((row,), w.dtype))
        return ops.reshape(sums, tuple(w.shape[:first]) + (1,) * len(axes))
    return ops.sum(ops.square(w), axis=axes, keepdims=True)


@keras.saving.register_keras_serializable(package="keras_l1")
class L1Regularizer(ProximalRegularizer):
    """L1 (Lasso) penalty: `loss = l1 * sum(abs(w))`.

    Pass it as `kernel_regularizer=` (or any `*_regularizer=`) to a layer. The
    sum is accumulated in float32 whatever the weight dtype, and the gradient
    at `w == 0` is exactly 0 on every backend. With
    `keras_l1.ProximalOptimizer`, weights reach exact zeros: the proximal step
    is `soft_threshold(w, step * l1)`, which for plain gradient descent with
    step `lr` reaches the Lasso optimum.

    Args:
        l1: Non-negative finite float, the regularization strength.
            Defaults to `0.01`.

    Returns:
        Called on a weight tensor, a float32 scalar: the penalty.

    Raises:
        TypeError: If `l1` is not a real number (or is a bool).
        ValueError: If `l1` is negative, NaN or infinite.

    Example:

    >>> import numpy as np
    >>> reg = L1Regularizer(l1=0.1)
    >>> round(float(reg(np.array([[1.0, -2.0], [0.0, 3.0]]))), 6)
    0.6
    >>> reg.get_config()
    {'l1': 0.1}
    """

    _config_keys = frozenset({"l1"})

    def __init__(self, l1: float = 0.01):
        self.l1 = check_non_negative_float("l1", l1)

    def penalty(self, w):
        return self.l1 * ops.sum(ops.abs(w))

    def gradient(self, w):
        w = ops.convert_to_tensor(w)
        return ops.sign(w) * ops.cast(self.l1, w.dtype)

    def _penalty_with_gradient(self, w):
        # `w · sign(w)` is `|w|` exactly, and its derivative with the sign held
        # constant is `sign(w)`, 0 at 0 (JAX's own `abs` has derivative 1 there).
        return self.l1 * ops.sum(w * ops.stop_gradient(ops.sign(w)))

    def prox(self, w, step):
        """Soft-threshold `w` at `step * l1`, per coordinate when `step` is a tensor."""
        return soft_threshold(w, ops.multiply(step, self.l1))

    def get_config(self) -> dict:
        return {"l1": self.l1}


@keras.saving.register_keras_serializable(package="keras_l1")
class ElasticNetRegularizer(ProximalRegularizer):
    """Elastic net: `loss = l1 * sum(abs(w)) + l2 * sum(w ** 2)`.

    The penalty of Keras's `L1L2`, plus its proximal operator:
    `soft_threshold(w, step * l1) / (1 + 2 * step * l2)`.

    Args:
        l1: Non-negative finite float, the L1 strength. Defaults to `0.01`.
        l2: Non-negative finite float, the squared-L2 strength.
            Defaults to `0.01`.

    Returns:
        Called on a weight tensor, a float32 scalar: the penalty.

    Raises:
        TypeError: If `l1` or `l2` is not a real number (or is a bool).
        ValueError: If `l1` or `l2` is negative, NaN or infinite.

    Example:

    >>> import numpy as np
    >>> reg = ElasticNetRegularizer(l1=0.1, l2=0.5)
    >>> round(float(reg(np.array([1.0, -2.0]))), 6)
    2.8
    """

    _config_keys = frozenset({"l1", "l2"})

    def __init__(self, l1: float = 0.01, l2: float = 0.01):
        self.l1 = check_non_negative_float("l1", l1)
        self.l2 = check_non_negative_float("l2", l2)

    def penalty(self, w):
        # One sum of `|w|·(l1 + l2·|w|)`, not two sums: the same value in
        # one pass over the weight (the compiled penalty is memory-bound).
        magnitude = ops.abs(w)
        return ops.sum(magnitude * (self.l1 + self.l2 * magnitude))

    def gradient(self, w):
        w = ops.convert_to_tensor(w)
        return ops.sign(w) * ops.cast(self.l1, w.dtype) + w * ops.cast(2 * self.l2, w.dtype)

    def prox(self, w, step):
        """Soft-threshold at `step * l1`, then shrink by `1 + 2 * step * l2`."""
        w = ops.convert_to_tensor(w)
        shrink = ops.cast(1 + 2 * ops.multiply(step, self.l2), w.dtype)
        return soft_threshold(w, ops.multiply(step, self.l1)) / shrink

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


@keras.saving.register_keras_serializable(package="keras_l1")
class GroupLassoRegularizer(ProximalRegularizer):
    """Group lasso: `loss = l1 * sum_g sqrt(size_g) * ‖w_g‖₂`.

    Weights that share an index along `group_axis` form one group `w_g`. On a
    Dense kernel of shape `(inputs, units)`, `group_axis=0` makes each input
    feature's outgoing weights a group (whole features drop out) and
    `group_axis=-1` each unit's incoming weights (whole units drop out).
    The proximal operator is the block soft-threshold
    `w_g * max(0, 1 − step * l1 * sqrt(size_g) / ‖w_g‖₂)`; value and gradient
    are finite (the gradient 0) at `‖w_g‖₂ = 0`, and NaN weights give a NaN
    penalty.

    Args:
        l1: Non-negative finite float, the strength. Defaults to `0.01`.
        group_axis: Integer, the axis whose indices name the groups.
            Defaults to `0`.

    Returns:
        Called on a weight tensor, a float32 scalar: the penalty.

    Raises:
        TypeError: If `l1` is not a real number or `group_axis` not an int.
        ValueError: If `l1` is negative, NaN or infinite, or `group_axis` is
            out of range for the weight it is called on.

    Example:

    >>> import numpy as np
    >>> reg = GroupLassoRegularizer(l1=0.1, group_axis=0)
    >>> round(float(reg(np.array([[3.0, 4.0], [0.0, 0.0]]))), 6)
    0.707107
    """

    _config_keys = frozenset({"l1", "group_axis"})

    def __init__(self, l1: float = 0.01, group_axis: int = 0):
        self.l1 = check_non_negative_float("l1", l1)
        self.group_axis = check_int("group_axis", group_axis)

    def _reduce_axes(self, w):
        rank = len(w.shape)
        if not -rank <= self.group_axis < rank:
            raise ValueError(
                f"Invalid value for argument `group_axis`: expected an axis of "
                f"a weight of rank {rank}. Received: group_axis={self.group_axis}"
            )
        axis = self.group_axis % rank
        return tuple(a for a in range(rank) if a != axis)

    def check_weight(self, w):
        self._reduce_axes(w)

    def _group_norms(self, w):
        """Each group's `‖w_g‖₂` (kept dims), and the group's weighting `l1·sqrt(size_g)`."""
        axes = self._reduce_axes(w)
        squares = _sum_of_squares(w, axes)
        # sqrt has an infinite derivative at 0: feed it 1 there, then put the
        # 0 back. `== 0`, not `> 0`, so that a NaN stays NaN.
        empty = squares == 0
        norms = ops.where(empty, ops.zeros_like(squares), ops.sqrt(ops.where(empty, 1, squares)))
        size = math.prod(w.shape[a] for a in axes)
        return norms, self.l1 * math.sqrt(size)

    def penalty(self, w):
        norms, scale = self._group_norms(w)
        return scale * ops.sum(norms)

    def gradient(self, w):
        w = ops.convert_to_tensor(w)
        norms, scale = self._group_norms(w)
        safe = ops.where(norms == 0, ops.ones_like(norms), norms)
        return w * (ops.cast(scale, w.dtype) / safe)

    def prox(self, w, step):
        """Block soft-threshold each group at `step * l1 * sqrt(size_g)`.

        A per-coordinate `step` (adaptive optimizers) is replaced by its
        harmonic mean within each group: a heuristic, since the block prox
        under a non-uniform metric has no closed form. The harmonic mean is
        dominated by the small steps of the coordinates that move; an
        arithmetic mean would be dominated by the huge steps Adam gives
        coordinates with almost no gradient, and zero every group.
        """
        w = ops.convert_to_tensor(w)
        norms, scale = self._group_norms(w)
        step = ops.cast(step, w.dtype)
        axes = self._reduce_axes(w)
        padded = (1,) * (len(w.shape) - len(step.shape)) + tuple(step.shape)
        if any(padded[a] != 1 for a in axes):
            step = 1 / ops.mean(1 / ops.broadcast_to(step, w.shape), axis=axes, keepdims=True)
        threshold = step * ops.cast(scale, w.dtype)
        safe = ops.where(norms == 0, ops.ones_like(norms), norms)
        factor = ops.where(norms == 0, ops.zeros_like(norms), ops.maximum(1 - threshold / safe, 0))
        return w * factor

    def get_config(self) -> dict:
        return {"l1": self.l1, "group_axis": self.group_axis}


@keras.saving.register_keras_serializable(package="keras_l1")
class LogSumRegularizer(ProximalRegularizer):
    """Log-sum penalty: `loss = l1 * epsilon * sum(log(1 + abs(w) / epsilon))`.

    A penalty that pulls small weights to zero like L1 and leaves large ones
    almost alone, closer to counting the nonzero weights than `sum(|w|)` is.
    Its slope is `l1 * epsilon / (epsilon + |w|)`: `l1` at zero, as for
    `L1Regularizer(l1)`, falling off for weights much larger than `epsilon`.
    Minimizing it is iteratively reweighted L1 (Candès, Wakin and Boyd, 2008),
    each weight's strength `l1 * epsilon / (epsilon + |w|)` taken from its
    current value, so no reference weights need to be stored. As `epsilon`
    grows the penalty becomes `L1Regularizer(l1)`.

    The penalty is not convex. Its proximal operator, which
    `keras_l1.ProximalOptimizer` applies, is in closed form: where
    `|w| > step * l1` the problem has a single minimizer, the larger root of
    `y² + (epsilon − |w|)·y + (step·l1 − |w|)·epsilon = 0` with the sign of
    `w`; where `|w| <= step * l1`, 0 is a local minimizer and is returned,
    the soft-threshold's dead zone. So zeros are as stable as under L1, and
    the fixed points of the proximal gradient step are exactly the
    stationary points of the objective. A weight of size `|w| >> epsilon`
    moves by about `step * l1 * epsilon / |w|`, where L1 moves every
    survivor by `step * l1`: the weights kept are hardly biased.

    Args:
        l1: Non-negative finite float, the strength: the penalty's slope at
            zero. Defaults to `0.01`.
        epsilon: Positive finite float, the weight magnitude where the slope
            has fallen to half of `l1`. Defaults to `0.01`.

    Returns:
        Called on a weight tensor, a float32 scalar: the penalty.

    Raises:
        TypeError: If `l1` or `epsilon` is not a real number (or is a bool).
        ValueError: If `l1` is negative, `epsilon` is not positive, or either
            is NaN or infinite.

    Example:

    >>> import numpy as np
    >>> reg = LogSumRegularizer(l1=0.5, epsilon=1.0)
    >>> round(float(reg(np.array([0.0, 1.0, -3.0]))), 6)  # 0.5 * (log 2 + log 4)
    1.039721
    >>> # 0.25 is in the dead zone; roots of y² − y − 1.5 and y² − 3y − 3.5.
    >>> np.asarray(reg.prox(np.array([0.25, 2.0, -4.0]), 1.0), "float64").round(4).tolist()
    [0.0, 1.8229, -3.8979]
    """

    _config_keys = frozenset({"l1", "epsilon"})

    def __init__(self, l1: float = 0.01, epsilon: float = 0.01):
        self.l1 = check_non_negative_float("l1", l1)
        self.epsilon = check_float_in("epsilon", epsilon, 0.0, math.inf, "(0, inf)")

    def penalty(self, w):
        ratio = ops.abs(w) / ops.cast(self.epsilon, w.dtype)
        return (self.l1 * self.epsilon) * ops.sum(ops.log1p(ratio))

    def gradient(self, w):
        w = ops.convert_to_tensor(w)
        epsilon = ops.cast(self.epsilon, w.dtype)
        return ops.sign(w) * (ops.cast(self.l1, w.dtype) * epsilon / (epsilon + ops.abs(w)))

    def prox(self, w, step):
        """`argmin_y ½(y − w)² + step · l1 · epsilon · log(1 + |y| / epsilon)`, per coordinate.

        The unique minimizer where `|w| > step * l1`, and the local minimizer
        0 elsewhere (see the class docstring). `step` is a scalar or a
        tensor broadcastable to `w` (a per-coordinate step: with adaptive
        optimizers a heuristic, as for L1).
        """
        w = ops.convert_to_tensor(w)
        threshold = ops.cast(ops.multiply(step, self.l1), w.dtype)
        epsilon = ops.cast(self.epsilon, w.dtype)
        magnitude = ops.abs(w)
        # The stationary points for y > 0 solve y² − d·y − q/4 = 0, with
        # d = |w| − epsilon and q = 4·epsilon·(|w| − threshold), positive where
        # the weight is kept: one positive root. Written so that neither form
        # cancels: (d + √D)/2 for d >= 0 and q/(2(√D − d)) for d < 0, D = d² + q.
        # (Where epsilon dwarfs the weights, `(|w| + epsilon)² − 4·threshold·epsilon`
        # under the root would lose every digit of it in float32.)
        d = magnitude - epsilon
        q = 4 * epsilon * (magnitude - threshold)
        root_of_discriminant = ops.sqrt(ops.maximum(ops.square(d) + q, 0))
        large = (d + root_of_discriminant) / 2
        denominator = root_of_discriminant - d
        small = q / (2 * ops.where(denominator > 0, denominator, ops.ones_like(denominator)))
        root = ops.where(d >= 0, large, small)
        return ops.where(magnitude > threshold, ops.sign(w) * root, ops.zeros_like(w))

    def get_config(self) -> dict:
        return {"l1": self.l1, "epsilon": self.epsilon}


def _abs_derivative(w):
    """The derivative of `ops.abs` the backend's autodiff gives: `sign(w)`, but 1 at 0 on JAX."""
    if keras.backend.backend() == "jax":
        return ops.where(w < 0, -ops.ones_like(w), ops.ones_like(w))
    return ops.sign(w)


class _KerasL1(L1Regularizer):
    """Keras's own `L1`, for `ProximalOptimizer`: its gradient is what autodiff
    gives Keras's formula, which the optimizer takes back out."""

    def gradient(self, w):
        w = ops.convert_to_tensor(w)
        return _abs_derivative(w) * ops.cast(self.l1, w.dtype)


class _KerasL1L2(ElasticNetRegularizer):
    """Keras's own `L1L2`, likewise."""

    def gradient(self, w):
        w = ops.convert_to_tensor(w)
        return _abs_derivative(w) * ops.cast(self.l1, w.dtype) + w * ops.cast(2 * self.l2, w.dtype)


def as_proximal(regularizer):
    """Returns the keras_l1 regularizer equivalent to `regularizer`, or None.

    keras_l1 regularizers (any `ProximalRegularizer`) map to themselves;
    Keras's own `L1` and `L1L2` map to an `L1Regularizer` /
    `ElasticNetRegularizer` with the same penalty, whose `gradient` is the one
    autodiff gives Keras's formula on the current backend. Anything else (L2
    alone, custom callables) has no proximal operator here.
    """
    if isinstance(regularizer, ProximalRegularizer):
        return regularizer
    if type(regularizer) is keras.regularizers.L1:
        return _KerasL1(float(regularizer.l1))
    if type(regularizer) is keras.regularizers.L1L2:
        config = regularizer.get_config()
        if config["l1"] == 0:
            return None
        return _KerasL1L2(config["l1"], config["l2"])
    return None
