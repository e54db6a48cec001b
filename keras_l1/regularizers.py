"""Weight regularizers whose penalty has a closed-form proximal operator.

Each regularizer adds its penalty to the loss like any Keras regularizer, and
also exposes `prox(w, step)`: the solution of
`argmin_y ½‖y − w‖² + step · penalty(y)`. `keras_l1.ProximalOptimizer` applies
that operator after each gradient step, which is what makes weights exactly
zero; plain (sub)gradient descent on `|w|` only makes them oscillate around it.
"""

import math
import sys
import weakref
from typing import Any

import keras
from keras import ops

from keras_l1 import _xla
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
    # The same value, with the same single rounding of `|x| − threshold`, in
    # fewer elementwise passes than `sign(x) * max(|x| − t, 0)`: this runs on
    # every weight at every step.
    return x - _clip(x, -threshold, threshold)


def _clip(x, low, high):
    # TensorFlow's `clip_by_value` (behind `ops.clip`) is a minimum then a
    # maximum, two passes over `x`; its ClipByValue kernel is one. The kernel
    # takes bounds of the shape of `x` or scalars, and has a gradient and an
    # XLA lowering.
    if keras.backend.backend() == "tensorflow" and tuple(low.shape) in ((), tuple(x.shape)):
        import tensorflow as tf

        return tf.raw_ops.ClipByValue(t=x, clip_value_min=low, clip_value_max=high)
    return ops.clip(x, low, high)


def _accumulation_dtype(dtype) -> str:
    # bfloat16/float16 sums over millions of weights lose every digit or
    # overflow; float64 weights keep their own precision.
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def _abs_sum(w):
    # Differentiated by the backends to `sign(w)`, 0 at 0, or under XLA
    # through `_penalty_before_update` (JAX's own `abs` derivative at 0 is 1).
    if keras.backend.backend() == "jax":
        # JAX's XLA reduces `|w|` without writing it out (a JAX step with
        # `L1Regularizer`: 1.03x none so, 1.06x as a product with ones).
        return ops.sum(ops.abs(w))
    return _sum_of_non_negative(ops.abs(w))


def _compiled_by_xla() -> bool:
    # JAX steps are always XLA-compiled; TensorFlow's only under `jit_compile`.
    backend = keras.backend.backend()
    return backend == "jax" or (backend == "tensorflow" and _xla.in_xla_function())


def _sum_of_non_negative(values):
    """`sum(values)` for values known to be non-negative (or NaN)."""
    rows = _sums_over_trailing_axes(values, 1)
    if rows is not None:
        return ops.sum(rows)
    return ops.sum(_non_negative(values))


def _sum_of_non_negative_over(values, axes):
    """`sum(values, axis=axes, keepdims=True)` for non-negative (or NaN) values."""
    if axes and axes == tuple(range(axes[0], len(values.shape))):
        sums = _sums_over_trailing_axes(values, axes[0])
        if sums is not None:
            return ops.reshape(sums, tuple(values.shape[: axes[0]]) + (1,) * len(axes))
    return ops.sum(_non_negative(values), axis=axes, keepdims=True)


# Rows longer than this are left to XLA's reduction (a dot product is one
# accumulation per row).
_MAX_ROW = 16384


def _sums_over_trailing_axes(values, first_axis):
    """Under XLA, the sums over the axes from `first_axis` on, or None.

    XLA on CPU reads the operand of a reduction from memory: whatever
    computes it (`|w|`, `w²`) is written out first, a whole extra pass over
    the weight. A product of the rows with a vector of ones computes the same
    sums with the operand fused into the product: 4% of a step of an MLP
    784-1024-1024-10 here, all of the penalty's cost. Returns None outside
    XLA and where that form does not apply (nothing to sum, or rows longer
    than `_MAX_ROW`).
    """
    shape = tuple(values.shape)
    if not _compiled_by_xla() or first_axis < 1 or len(shape) <= first_axis:
        return None
    row = math.prod(shape[first_axis:])
    if not 1 < row <= _MAX_ROW:
        return None
    rows = ops.reshape(values, (-1, row))
    return ops.matmul(rows, ops.ones((row,), values.dtype))


def _non_negative(values):
    # XLA on CPU turns `sum(a * b)` into a chain of fused multiply-adds, one
    # element after the other: 4.5x slower than `sum(a)` over a 784 x 1024
    # kernel (0.43 against 0.09 ms here), which it vectorizes. A `maximum`
    # with 0 between the product and the sum keeps it vectorized; the operand
    # is non-negative, so the value is the same, NaN stays NaN, and the
    # gradient differs only where it is 0 anyway. (XLA drops an `abs` of a
    # square, knowing it is non-negative.)
    return ops.maximum(values, 0) if _compiled_by_xla() else values


def _log1p(x):
    """`log(1 + x)` for x >= 0, accurate for small x."""
    if not _compiled_by_xla():
        return ops.log1p(x)
    # XLA's log1p evaluates a series and a logarithm and picks one: 1.6x the
    # time of a logarithm. `log(u) · x / (u − 1)`, u = 1 + x rounded, corrects
    # the rounding of `1 + x` with a division instead (Goldberg 1991): within a
    # few ulps. Under XLA the gradient is `_penalty_gradient`, not this form's.
    u = 1 + x
    return ops.where(u == 1, x, ops.log(u) * (x / (u - 1)))


def _elastic_net_sum(w, l1, l2):
    """`l1 * sum(|w|) + l2 * sum(w²)` in as few passes over `w` as the backend allows."""
    backend = keras.backend.backend()
    if _compiled_by_xla():
        # One reduction reading `w` once, where the two sums are two.
        magnitude = ops.abs(w)
        return _sum_of_non_negative(magnitude * (l1 + l2 * magnitude))
    if backend == "tensorflow":
        import tensorflow as tf

        # L2Loss (`sum(w²) / 2`) is one kernel reading `w` once, with no
        # temporary of its size; its gradient is one multiplication.
        return l1 * ops.sum(ops.abs(w)) + (2 * l2) * tf.nn.l2_loss(w)
    return l1 * _abs_sum(w) + l2 * ops.sum(ops.square(w))


def _chain(optimizer):
    # A LossScaleOptimizer wraps a ProximalOptimizer, which wraps the
    # optimizer doing the update; any of them is the model's `optimizer`.
    while optimizer is not None:
        yield optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)


def _optimizer_of_caller(frame):
    """The optimizer compiled into the model whose penalties are being summed.

    Keras sums weight penalties in `Layer._get_regularization_losses`, called
    on the model being trained (or evaluated) for its `losses`, whatever the
    backend and whether `fit` or a user's `train_step` asked. Returns
    `(found, optimizer)`; `found` is False for any other caller (a custom
    training loop calling the regularizer itself, a logger measuring it) and
    for a model that is not compiled.
    """
    if frame is None or frame.f_code.co_name != "_get_regularization_losses":
        return False, None
    owner = frame.f_locals.get("self")
    optimizer = getattr(owner, "optimizer", None) if isinstance(owner, keras.Model) else None
    return optimizer is not None, optimizer


# Each regularizer's penalty value and gradient as XLA-compiled TensorFlow
# functions, kept outside the object so that copying it copies no function.
_COMPILED_PENALTIES = weakref.WeakKeyDictionary()


class _ProximalRegularizer(keras.regularizers.Regularizer):
    """Shared machinery: float32 accumulation and the proximal mode.

    In proximal mode the penalty still enters the loss value, so `fit`
    reports the true objective, but not its gradient: the proximal step
    accounts for it instead, exactly once. The regularizer is in proximal
    mode when the `ProximalOptimizer` that claimed it (at its build) is the
    optimizer compiled into the model computing the loss. A loss computed
    otherwise (a custom training loop) keeps the penalty's gradient, which
    the claiming optimizer takes out again; under tf.distribute such a loss
    is in proximal mode while the claiming optimizer exists.
    """

    _config_keys: frozenset = frozenset()

    def __init__(self):
        # A weak reference to the ProximalOptimizer that claimed this
        # regularizer: a claim ends with its optimizer, and a newer
        # optimizer's claim replaces it.
        self._claimant = None
        # Whether the penalty gradient reached the most recent loss computed
        # with this regularizer; `ProximalOptimizer` takes it out if so.
        self._gradient_in_last_call = False
        # A scalar variable multiplying the strength, attached by
        # `L1Scheduler` / `regularization_path`. It belongs to a layer of the
        # model, so compiled steps read its current value (a Python float, or
        # a variable the model does not track, is frozen into the step on
        # JAX). Never part of the config: `get_config` keeps the user's value.
        self._strength_factor = None
        # The same factor for the optimizer update (prox, gradient): on JAX that
        # update sees only optimizer variables, so it reads a mirror they hold.
        self._proximal_strength_factor = None

    def _claim(self, optimizer):
        self._claimant = weakref.ref(optimizer)

    def _claiming_optimizer(self):
        """The live `ProximalOptimizer` that claimed this regularizer, or None."""
        return self._claimant() if self._claimant is not None else None

    def _proximal_in_call(self, caller) -> bool:
        claimant = self._claiming_optimizer()
        if claimant is None:
            return False
        # A model recompiled with another optimizer (plain, or a new
        # ProximalOptimizer not yet built) must see the penalty's gradient,
        # even while the optimizer that claimed it is still referenced.
        found, optimizer = _optimizer_of_caller(caller)
        if found:
            return any(o is claimant for o in _chain(optimizer))
        # No compiled model computes this loss (a custom training loop): the
        # gradient stays, and the claiming optimizer takes it out again, so
        # any optimizer the loop uses counts the penalty once. Except under
        # tf.distribute, where how the loop scales the penalty per replica is
        # its own choice: there the claim decides.
        return _xla.has_strategy()

    def __call__(self, x):
        proximal = self._proximal_in_call(sys._getframe(1))
        self._gradient_in_last_call = not proximal
        x = ops.convert_to_tensor(x)
        self._check_weight(x)
        w = ops.cast(x, _accumulation_dtype(x.dtype))
        if _compiled_by_xla():
            return self._scaled(ops.cast(self._penalty_before_update(w, proximal), "float32"))
        if proximal:
            w = ops.stop_gradient(w)
        if self._compile_in_graphs and _xla.should_compile() and _xla.in_function():
            penalty = self._compiled_penalty(w, proximal)
        else:
            penalty = self._penalty(w)
        return self._scaled(ops.cast(penalty, "float32"))

    def _penalty_before_update(self, w, proximal):
        """The penalty in a step compiled with XLA (TensorFlow's `jit_compile`, JAX).

        XLA updates a weight in place, but only once it can prove that every
        read of the old value came first. The penalty's sum feeds the
        reported loss and nothing the update needs, so XLA cannot, and
        copies the whole weight at the start of every step instead (3.2 MB
        for a 784 x 1024 kernel, a 1-2% slower step here). The gradient
        defined here depends on the penalty's value through a term that is
        exactly 0, which orders the sum before the update and saves the copy.
        In proximal mode that gradient is all the weight receives: zeros.
        """

        def gradient(w, value, upstream):
            # 0 whatever the value: a comparison with NaN is False.
            zero = ops.cast(value >= 0, upstream.dtype) * 0
            if proximal:
                return ops.broadcast_to(ops.cast(zero, w.dtype), ops.shape(w))
            return (upstream + zero) * self._penalty_gradient(w)

        if keras.backend.backend() == "jax":
            import jax

            @jax.custom_vjp
            def penalty(w):
                return self._penalty(w)

            def forward(w):
                value = self._penalty(w)
                return value, (w, value)

            def backward(saved, upstream):
                return (gradient(*saved, upstream),)

            penalty.defvjp(forward, backward)
            return penalty(w)

        import tensorflow as tf

        @tf.custom_gradient
        def tf_penalty(w):
            value = self._penalty(w)
            return value, lambda upstream: gradient(w, value, upstream)

        return tf_penalty(w)

    def _compiled_penalty(self, w, proximal):
        """The penalty in a TensorFlow graph, as XLA-compiled functions.

        Without XLA, TensorFlow runs each operation as its own pass over the
        weight: for elastic net, three for the value and five for its
        gradient (the sum's gradient broadcast to the weight's shape, the
        sign, the products). Compiled, the value is one pass and the
        gradient `upstream * _penalty_gradient(w)` one more.
        """
        import tensorflow as tf

        # The strengths are traced in as constants: compiled again if a user
        # changed them since.
        config = self.get_config()
        compiled = _COMPILED_PENALTIES.get(self)
        if compiled is None or compiled[0] != config:
            compiled = (
                config,
                _xla.compile(self._penalty),
                _xla.compile(lambda w, upstream: upstream * self._penalty_gradient(w)),
            )
            _COMPILED_PENALTIES[self] = compiled
        _, value, gradient = compiled
        if proximal:
            return value(w)

        @tf.custom_gradient
        def penalty(w):
            return value(w), lambda upstream: gradient(w, upstream)

        return penalty(w)

    def _scaled(self, value, proximal=False):
        """`value` times the strength factor, if one is attached."""
        factor = self._strength_factor
        if proximal and self._proximal_strength_factor is not None:
            factor = self._proximal_strength_factor
        if factor is None:
            return value
        value = ops.convert_to_tensor(value)
        return value * ops.cast(factor, value.dtype)

    def _penalty(self, w):
        raise NotImplementedError

    def _check_weight(self, w):
        """Raises a clear error for a weight this regularizer cannot take."""

    # Whether a TensorFlow graph without XLA computes the penalty through
    # `_compiled_penalty`, which needs `_penalty_gradient(w)`, the gradient
    # of `_penalty` (0 at kinks). Worth it only where the penalty is more
    # operations than TensorFlow runs well one by one.
    _compile_in_graphs = False

    def prox(self, w, step):
        """Proximal operator: `argmin_y ½‖y − w‖² + step · penalty(y)`."""
        raise NotImplementedError

    def gradient(self, w):
        """The gradient of the penalty that autodiff gives (0 at kinks)."""
        return self._scaled(self._penalty_gradient(ops.convert_to_tensor(w)), proximal=True)

    def _penalty_gradient(self, w):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        check_config_keys(cls.__name__, config, set(cls._config_keys))
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_l1")
class L1Regularizer(_ProximalRegularizer):
    """L1 (Lasso) penalty: `loss = l1 * sum(abs(w))`.

    Pass it as `kernel_regularizer=` (or any `*_regularizer=`) to a layer. The
    sum is accumulated in float32 whatever the weight dtype, and the gradient
    at `w == 0` is exactly 0. With `keras_l1.ProximalOptimizer`, weights
    reach exact zeros: the proximal step is `soft_threshold(w, step * l1)`,
    which for plain gradient descent with step `lr` reaches the Lasso optimum.

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
        super().__init__()
        self.l1 = check_non_negative_float("l1", l1)

    def _penalty(self, w):
        return self.l1 * _abs_sum(w)

    def prox(self, w, step):
        """Soft-threshold `w` at `step * l1` (per coordinate if `step` is)."""
        return soft_threshold(w, ops.multiply(self._scaled(step, proximal=True), self.l1))

    def _penalty_gradient(self, w):
        return ops.sign(w) * ops.cast(self.l1, w.dtype)

    def get_config(self) -> dict:
        return {"l1": self.l1}


@keras.saving.register_keras_serializable(package="keras_l1")
class ElasticNetRegularizer(_ProximalRegularizer):
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
    # Two sums and a gradient of two parts: compiled, 0.97–0.99x the cost
    # of a step with Keras's `L1` against 1.02–1.09x (one thread, MLP
    # 784-1024-1024-10, SGD or Adam). `L1Regularizer` gained nothing from it.
    _compile_in_graphs = True

    def __init__(self, l1: float = 0.01, l2: float = 0.01):
        super().__init__()
        self.l1 = check_non_negative_float("l1", l1)
        self.l2 = check_non_negative_float("l2", l2)

    def _penalty(self, w):
        return _elastic_net_sum(w, self.l1, self.l2)

    def prox(self, w, step):
        """Soft-threshold at `step * l1`, then shrink by `1 + 2 * step * l2`."""
        step = self._scaled(step, proximal=True)
        shrink = ops.cast(1 + 2 * ops.multiply(step, self.l2), w.dtype)
        return soft_threshold(w, ops.multiply(step, self.l1)) / shrink

    def _penalty_gradient(self, w):
        return ops.sign(w) * ops.cast(self.l1, w.dtype) + w * ops.cast(2 * self.l2, w.dtype)

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


@keras.saving.register_keras_serializable(package="keras_l1")
class GroupLassoRegularizer(_ProximalRegularizer):
    """Group lasso: `loss = l1 * sum_g sqrt(size_g) * ‖w_g‖₂`.

    Weights that share an index along `group_axis` form one group `w_g`. On a
    Dense kernel of shape `(inputs, units)`, `group_axis=0` makes each input
    feature's outgoing weights a group (whole features drop out) and
    `group_axis=-1` each unit's incoming weights (whole units drop out).
    The proximal operator is the block soft-threshold
    `w_g * max(0, 1 − step * l1 * sqrt(size_g) / ‖w_g‖₂)`; value and gradient
    are finite (the gradient 0) at `‖w_g‖₂ = 0`.

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
    # Squares, a sum per group, roots and their gradient: run one by one,
    # TensorFlow's kernels made a graph step (SGD) 1.100x the time of one
    # without a penalty, Keras's `L1` 1.094x; compiled, 1.068x (same process).
    _compile_in_graphs = True

    def __init__(self, l1: float = 0.01, group_axis: int = 0):
        super().__init__()
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

    def _check_weight(self, w):
        self._reduce_axes(w)

    def _group_squares(self, w):
        axes = self._reduce_axes(w)
        return _sum_of_non_negative_over(ops.square(w), axes), axes

    def _group_norms(self, w):
        squares, axes = self._group_squares(w)
        # sqrt has an infinite derivative at 0; feed it 1 there instead and
        # mask the result, so both the value and the gradient are 0.
        nonzero = squares > 0
        norms = ops.sqrt(ops.where(nonzero, squares, ops.ones_like(squares)))
        return ops.where(nonzero, norms, ops.zeros_like(norms)), axes

    def _scale(self, w, axes):
        size = math.prod(w.shape[a] for a in axes)
        return self.l1 * math.sqrt(size)

    def _penalty(self, w):
        norms, axes = self._group_norms(w)
        return self._scale(w, axes) * ops.sum(norms)

    def prox(self, w, step):
        """Block soft-threshold each group at `step * l1 * sqrt(size_g)`.

        A per-coordinate `step` (adaptive optimizers) is replaced by its
        harmonic mean within each group: a heuristic, since the block prox
        under a non-uniform metric has no closed form. The harmonic mean is
        dominated by the small steps of the coordinates that move; an
        arithmetic mean would be dominated by the huge steps Adam gives
        coordinates with almost no gradient, and zero every group.
        """
        # A NumPy `w` times a torch tensor fails; a tensor times one works.
        w = ops.convert_to_tensor(w)
        squares, axes = self._group_squares(w)
        step = ops.cast(self._scaled(step, proximal=True), w.dtype)
        # A step already shared within each group (an optimizer may give one)
        # is its own harmonic mean.
        padded = (1,) * (len(w.shape) - len(step.shape)) + tuple(step.shape)
        if any(padded[a] != 1 for a in axes):
            inverse = ops.mean(1 / ops.broadcast_to(step, w.shape), axis=axes, keepdims=True)
            step = 1 / inverse
        threshold = step * ops.cast(self._scale(w, axes), w.dtype)
        if _compiled_by_xla():
            # Under XLA each operation on the per-group values is a small
            # computation of its own, dispatched between the passes over the
            # weight; on the broadcast values the same arithmetic fuses into
            # the pass that scales the weight. Same values; an SGD step of
            # bench_step's MLP took 0.4-0.9% less time in each of four
            # same-process A/B runs (Adam: within the noise).
            squares = ops.broadcast_to(squares, w.shape)
        nonzero = squares > 0
        norms = ops.sqrt(ops.where(nonzero, squares, ops.ones_like(squares)))
        factor = ops.maximum(1 - threshold / norms, 0)
        return w * ops.where(nonzero, factor, ops.zeros_like(factor))

    def _penalty_gradient(self, w):
        norms, axes = self._group_norms(w)
        safe = ops.where(norms > 0, norms, ops.ones_like(norms))
        # One multiplication per weight by a factor per group: XLA recomputes
        # it in each consumer (Adam has two) rather than writing it out.
        return w * (ops.cast(self._scale(w, axes), w.dtype) / safe)

    def get_config(self) -> dict:
        return {"l1": self.l1, "group_axis": self.group_axis}


@keras.saving.register_keras_serializable(package="keras_l1")
class LogSumRegularizer(_ProximalRegularizer):
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
    # A logarithm, a division and their gradient: run one by one, TensorFlow's
    # kernels made a graph step 1.26x (SGD) the time of one without a penalty.
    _compile_in_graphs = True

    def __init__(self, l1: float = 0.01, epsilon: float = 0.01):
        super().__init__()
        self.l1 = check_non_negative_float("l1", l1)
        self.epsilon = check_float_in("epsilon", epsilon, 0.0, math.inf, "(0, inf)")

    def _penalty(self, w):
        ratio = ops.abs(w) / ops.cast(self.epsilon, w.dtype)
        return (self.l1 * self.epsilon) * _sum_of_non_negative(_log1p(ratio))

    def prox(self, w, step):
        """`argmin_y ½(y − w)² + step · l1 · epsilon · log(1 + |y| / epsilon)`, per coordinate.

        The unique minimizer where `|w| > step * l1`, and the local minimizer
        0 elsewhere (see the class docstring). `step` is a scalar or a
        tensor broadcastable to `w` (a per-coordinate step: with adaptive
        optimizers a heuristic, as for L1).
        """
        w = ops.convert_to_tensor(w)
        threshold = ops.cast(ops.multiply(self._scaled(step, proximal=True), self.l1), w.dtype)
        epsilon = ops.cast(self.epsilon, w.dtype)
        magnitude = ops.abs(w)
        # The stationary points for y > 0 solve y² − d·y − q/4 = 0, with
        # d = |w| − epsilon and q = 4·epsilon·(|w| − threshold), positive where
        # the weight is kept: one positive root. Written so that neither form
        # cancels: (d + √D)/2 for d >= 0 and q/(2(√D − d)) for d < 0, D = d² + q.
        # (Where epsilon dwarfs the weights, `(|w| + epsilon)² − 4·threshold·epsilon`
        # under the root would lose every digit of it in float32.) No
        # comparison of costs with 0 and so no logarithm: the global minimizer
        # would need one per weight, 5x the time of this whole operator.
        d = magnitude - epsilon
        q = 4 * epsilon * (magnitude - threshold)
        root_of_discriminant = ops.sqrt(ops.maximum(ops.square(d) + q, 0))
        large = (d + root_of_discriminant) / 2
        denominator = root_of_discriminant - d
        small = q / (2 * ops.where(denominator > 0, denominator, ops.ones_like(denominator)))
        root = ops.where(d >= 0, large, small)
        return ops.where(magnitude > threshold, ops.sign(w) * root, ops.zeros_like(w))

    def _penalty_gradient(self, w):
        epsilon = ops.cast(self.epsilon, w.dtype)
        return ops.sign(w) * (ops.cast(self.l1, w.dtype) * epsilon / (epsilon + ops.abs(w)))

    def get_config(self) -> dict:
        return {"l1": self.l1, "epsilon": self.epsilon}


def as_proximal(regularizer):
    """Returns the keras_l1 regularizer equivalent to `regularizer`, or None.

    keras_l1 regularizers map to themselves; Keras's own `L1` and `L1L2` map
    to an `L1Regularizer` / `ElasticNetRegularizer` with the same penalty.
    Anything else (L2 alone, custom callables) has no proximal operator here.
    """
    if isinstance(regularizer, _ProximalRegularizer):
        return regularizer
    if type(regularizer) is keras.regularizers.L1:
        return L1Regularizer(float(regularizer.l1))
    if type(regularizer) is keras.regularizers.L1L2:
        config = regularizer.get_config()
        if config["l1"] == 0:
            return None
        return ElasticNetRegularizer(config["l1"], config["l2"])
    return None
