"""`ProximalOptimizer`: a gradient step on the data loss, then a proximal step.

This is forward–backward splitting (FOBOS): for the objective
`data_loss(w) + penalty(w)` each update is `w ← prox(w − step·∇data_loss(w),
step)`, where `prox` is the regularizer's proximal operator. For L1 it is a
soft-threshold, so coordinates whose gradient cannot beat `l1` land exactly
on zero and stay there, which subgradient descent never achieves.
"""

import math
import warnings
import weakref

import keras
from keras import ops

from keras_l1 import _xla
from keras_l1._validation import check_bool
from keras_l1._validation import check_config_keys
from keras_l1._validation import check_float_in
from keras_l1._validation import check_non_negative_float
from keras_l1._validation import short_repr
from keras_l1.regularizers import GroupLassoRegularizer
from keras_l1.regularizers import _non_negative
from keras_l1.regularizers import _ProximalRegularizer
from keras_l1.regularizers import _sum_of_non_negative_over
from keras_l1.regularizers import as_proximal


def _sgd_step(optimizer, index, lr, dtype):
    # With momentum μ the steady-state displacement is lr·g/(1−μ), so the
    # threshold must scale the same way for the fixed point to be the optimum.
    return lr / (1.0 - float(optimizer.momentum))


def _adam_step(optimizer, index, lr, dtype):
    return _adam_alpha(optimizer, lr, dtype) / (_adam_root(optimizer, index) + optimizer.epsilon)


def _adam_alpha(optimizer, lr, dtype):
    t = ops.cast(optimizer.iterations + 1, dtype)
    return (
        lr
        * ops.sqrt(1 - ops.power(ops.cast(optimizer.beta_2, dtype), t))
        / (1 - ops.power(ops.cast(optimizer.beta_1, dtype), t))
    )


def _adam_velocity(optimizer, index):
    states = optimizer._velocity_hats if optimizer.amsgrad else optimizer._velocities
    return states[index]


def _adam_root(optimizer, index):
    return ops.sqrt(_adam_velocity(optimizer, index))


def _adam_group_step(optimizer, index, lr, dtype, axes, fused):
    # The harmonic mean within each group of Adam's step `alpha / (sqrt(v) + ε)`
    # (what `GroupLassoRegularizer.prox` takes of a per-coordinate step) is
    # `alpha / (mean(sqrt(v)) + ε)`. Said so, it reduces `sqrt(v)`, which the
    # update computes anyway, instead of a reciprocal of the step: under XLA
    # on CPU a reduction reads its input from memory, so that is a pass over
    # the weight's size written and read fewer.
    velocity = _adam_velocity(optimizer, index)
    # Next to the fused update, XLA would compute `sqrt(v)` once for the
    # update and this sum and write it out to share it: a pass over the
    # weight's size written and read back, 2-4% of an Adam step of an MLP
    # 784-1024-1024-10 on TensorFlow here. `_non_negative(v)` is the same `v`
    # (a mean of squares) in another expression, so each loop takes its own
    # square root. Not after Keras's own update (JAX, PyTorch), where sharing
    # it was 3% faster on JAX.
    root = ops.sqrt(_non_negative(velocity) if fused else velocity)
    count = math.prod(root.shape[a] for a in axes)
    root = _sum_of_non_negative_over(root, axes) / count
    return _adam_alpha(optimizer, lr, dtype) / (root + optimizer.epsilon)


def _adamax_step(optimizer, index, lr, dtype):
    t = ops.cast(optimizer.iterations + 1, dtype)
    bias = 1 - ops.power(ops.cast(optimizer.beta_1, dtype), t)
    return lr / (bias * (optimizer._u[index] + optimizer.epsilon))


def _rmsprop_step(optimizer, index, lr, dtype):
    velocity = optimizer._velocities[index]
    if optimizer.centered:
        denominator = velocity - ops.square(optimizer._average_gradients[index])
    else:
        denominator = velocity
    step = lr / ops.sqrt(denominator + optimizer.epsilon)
    return step / (1.0 - float(optimizer.momentum))


def _adagrad_step(optimizer, index, lr, dtype):
    return lr / ops.sqrt(optimizer._accumulators[index] + optimizer.epsilon)


# The fused updates below do the wrapped optimizer's own update of its state
# and return the weight it would write, `moved`, with the step it took, instead
# of writing it: the prox then reads `moved` from memory it just produced and
# the weight is written once. Unfused, the update writes the weight, the prox
# reads it back, recomputes the step from the state (for Adam four passes over
# the weight's size) and writes it again; each pass over every weight costs a
# few percent of a step. The arithmetic is the optimizer's own, operation for
# operation, except where the step is factored out (`m * step` for Adam's
# `m * alpha / (sqrt(v) + ε)`, a difference of one rounding).


def _sgd_fused(optimizer, gradient, variable, learning_rate):
    gradient = ops.cast(gradient, variable.dtype)
    if optimizer.momentum == 0:
        moved = ops.subtract(variable, ops.multiply(gradient, learning_rate))
        return moved, learning_rate
    m = optimizer.momentums[optimizer._get_variable_index(variable)]
    momentum = ops.cast(optimizer.momentum, variable.dtype)
    optimizer.assign(
        m, ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate))
    )
    if optimizer.nesterov:
        displacement = ops.subtract(
            ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)
        )
    else:
        displacement = m
    moved = ops.add(variable, displacement)
    return moved, _sgd_step(optimizer, None, learning_rate, variable.dtype)


def _adam_fused(optimizer, gradient, variable, learning_rate):
    index = optimizer._get_variable_index(variable)
    gradient = ops.cast(gradient, variable.dtype)
    m = optimizer._momentums[index]
    v = optimizer._velocities[index]
    optimizer.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - optimizer.beta_1))
    optimizer.assign_add(
        v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - optimizer.beta_2)
    )
    if optimizer.amsgrad:
        v_hat = optimizer._velocity_hats[index]
        optimizer.assign(v_hat, ops.maximum(v_hat, v))
    step = _adam_step(optimizer, index, learning_rate, variable.dtype)
    return ops.subtract(variable, ops.multiply(m, step)), step


# Per optimizer class: the step it really takes, per coordinate, read from
# its state right after its own update; and its fused update, if any. Order
# matters: AdamW is an Adam subclass (its weight decay is applied before
# `update_step`, so the fused update serves it too).
_STEP_RULES = (
    (keras.optimizers.SGD, _sgd_step, _sgd_fused),
    (keras.optimizers.Adam, _adam_step, _adam_fused),
    (keras.optimizers.Adamax, _adamax_step, None),
    (keras.optimizers.RMSprop, _rmsprop_step, None),
    (keras.optimizers.Adagrad, _adagrad_step, None),
)
SUPPORTED_OPTIMIZERS = ("SGD", "Adam", "AdamW", "Adamax", "RMSprop", "Adagrad")


def _step_rule(optimizer):
    for cls, rule, _ in _STEP_RULES:
        if isinstance(optimizer, cls):
            return rule
    return None


def _fused_update(optimizer):
    # Only where the update is Keras's own: a subclass that overrides
    # `update_step` gets its override, then the separate prox.
    for cls, _, fused in _STEP_RULES:
        if isinstance(optimizer, cls):
            if fused is not None and type(optimizer).update_step is cls.update_step:
                return fused
            return None
    return None


# Hyperparameters the step rules above (or every update) read, with the range
# in which the proximal step is finite and the iteration does not diverge
# (momentum 1 divides by zero in `_sgd_step`). Keras itself accepts NaN,
# infinite or out-of-range values for most of them.
_UNIT_INTERVAL = (0.0, 1.0, "[0, 1)")
_POSITIVE = (0.0, float("inf"), "(0, inf)")
_HYPERPARAMETER_RANGES = {
    "momentum": _UNIT_INTERVAL,
    "beta_1": _UNIT_INTERVAL,
    "beta_2": _UNIT_INTERVAL,
    "rho": _UNIT_INTERVAL,
    "epsilon": _POSITIVE,
}
_NON_NEGATIVE_OR_NONE = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm")
_FLAGS = ("nesterov", "amsgrad", "centered")


def _scalar(value):
    # A 0-d tensor is a legitimate hyperparameter; check its value.
    if keras.ops.is_tensor(value) and len(value.shape) == 0:
        return float(keras.ops.convert_to_numpy(value))
    return value


def _check_hyperparameters(optimizer) -> None:
    learning_rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(learning_rate, keras.Variable):
        check_non_negative_float("learning_rate", float(keras.ops.convert_to_numpy(learning_rate)))
    for name, (low, high, interval) in _HYPERPARAMETER_RANGES.items():
        if hasattr(optimizer, name):
            check_float_in(name, _scalar(getattr(optimizer, name)), low, high, interval)
    if hasattr(optimizer, "initial_accumulator_value"):
        check_non_negative_float(
            "initial_accumulator_value", _scalar(optimizer.initial_accumulator_value)
        )
    for name in _NON_NEGATIVE_OR_NONE:
        value = getattr(optimizer, name, None)
        if value is not None:
            check_non_negative_float(name, _scalar(value))
    for name in _FLAGS:
        if hasattr(optimizer, name):
            check_bool(name, getattr(optimizer, name))


def _wraps_proximal(config) -> bool:
    # Checked before deserializing: a config nesting ProximalOptimizer in
    # itself a thousand times would otherwise build them all, recursively.
    if not isinstance(config, dict):
        return False
    names = (config.get("class_name"), config.get("registered_name"))
    return any(isinstance(n, str) and n.endswith("ProximalOptimizer") for n in names)


# A malformed config fails inside Keras's deserializer with whatever it
# tripped on; the user needs to know which argument was wrong.
_DESERIALIZATION_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def _invalid_optimizer(optimizer) -> ValueError:
    return ValueError(
        "Invalid value for argument `optimizer`: expected a Keras optimizer "
        f"instance, name or config. Received: optimizer={short_repr(optimizer)}"
    )


def _replica_scale():
    # Under tf.distribute Keras divides the regularization loss by the number
    # of replicas before each replica differentiates it.
    if keras.backend.backend() != "tensorflow":
        return 1.0
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1.0
    return 1.0 / context.num_replicas_in_sync


def _compiled_update(cache, update_and_prox, variable, regularizer):
    """`update_and_prox` for one variable, as one XLA-compiled function.

    Without XLA, TensorFlow runs each elementwise operation of the update
    and of the prox as its own pass over the weight (about 0.3 ms per pass
    for 1.9M weights on one core here: Adam's update alone is a dozen).
    Compiled, they run as one loop that reads the gradient, the state and the
    weight once and writes each once. Traced again when the strength factor
    attached to the regularizer changes (`L1Scheduler`), since the trace
    reads it.
    """

    key = (regularizer._strength_factor, regularizer._proximal_strength_factor)
    entry = cache.get(id(variable))
    if entry is None or entry[0] is not variable or any(a is not b for a, b in zip(entry[1], key)):

        def update(gradient, learning_rate):
            update_and_prox(gradient, variable, learning_rate)

        compiled = _xla.compile(update)
        entry = (variable, key, compiled)
        cache[id(variable)] = entry
    return entry[2]


# Keeps each optimizer's retrace trigger (below) alive with the optimizer,
# outside its state: not in `variables`, checkpoints or saved files.
_RETRACE_TRIGGERS = weakref.WeakKeyDictionary()


def _retrace_without_penalty_gradient(optimizer, claimed):
    # Keras on TensorFlow builds the optimizer inside the first trace of the
    # train step, after the loss, and so the penalty's gradient, was traced.
    # Run as traced, every step would take that gradient out again
    # (`_data_gradients`): six extra elementwise passes over each weight.
    # A variable created inside a `tf.function` on its first call makes
    # TensorFlow trace it once more and run that trace from then on; it sees
    # the regularizers claimed, stops their gradient and subtracts nothing.
    if keras.backend.backend() != "tensorflow":
        return
    if not any(regularizer._gradient_in_last_call for regularizer in claimed):
        return
    import tensorflow as tf

    if not tf.inside_function() or tf.distribute.has_strategy():
        return
    try:
        trigger = tf.Variable(0, trainable=False, name="proximal_retrace")
    except ValueError:
        # Not the function's first call, where TensorFlow refuses new
        # variables: the step keeps the subtraction, slower but the same.
        return
    _RETRACE_TRIGGERS[optimizer] = trigger


@keras.saving.register_keras_serializable(package="keras_l1")
class ProximalOptimizer(keras.optimizers.Optimizer):
    """Wraps a Keras optimizer so that L1-type penalties give exact zeros.

    After each real update of the wrapped optimizer, every variable whose
    regularizer has a proximal operator (`L1Regularizer`,
    `ElasticNetRegularizer`, `GroupLassoRegularizer`, and Keras's own `L1` /
    `L1L2`, which are treated as their keras_l1 equivalents) gets
    `w ← regularizer.prox(w, step)`, with the step the optimizer really took:
    `lr` for plain SGD (`lr / (1 − momentum)` with momentum, the learning rate
    of *this* step under a schedule), and the per-coordinate
    `lr_t / (sqrt(v) + ε)` for Adam, AdamW, Adamax, RMSprop and Adagrad. With
    plain SGD this is proximal gradient descent and converges to the Lasso
    optimum; with the diagonal preconditioners its fixed points are the same
    optimum. For `GroupLassoRegularizer` under an adaptive optimizer the
    per-coordinate step is averaged within each group, a heuristic.

    The penalty still enters the loss *value* (`fit` reports the true
    objective), but its gradient no longer enters the update: the proximal
    step accounts for it, exactly once. Nothing else changes for the user:
    swap the optimizer, keep the model.

    On TensorFlow the update of each regularized variable and its proximal
    step run as one XLA-compiled function (compiled on the first step, about
    40 ms per regularized variable on a CPU core; not
    under `tf.distribute` and not inside a step already compiled with
    `jit_compile=True`, which fuses them anyway). For SGD and Adam/AdamW the
    proximal step reuses the step the update computed and the weight is
    written once. The result is the same update, and a regularized
    variable's update then costs less than Keras's own, unfused one.

    Args:
        optimizer: The optimizer to wrap: an instance, a name such as
            `"adam"`, or a serialized config. One of SGD, Adam, AdamW,
            Adamax, RMSprop, Adagrad; others raise a `ValueError`, since no
            exact proximal step is known for them.
        name: Optional name. Defaults to `"proximal_optimizer"`.

    Raises:
        ValueError: If `optimizer` is not a supported optimizer.

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
    ...     1, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.5))])
    >>> model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(1.5)), "mse")
    >>> x = np.eye(3, dtype="float32"); y = np.array([[3.0], [0.1], [-2.0]])
    >>> # MSE on the identity design: one SGD step of lr 1.5 lands on y, the prox
    >>> # then soft-thresholds it at lr * l1 = 0.75, which is the Lasso solution.
    >>> _ = model.fit(x, y, epochs=5, batch_size=3, verbose=0)
    >>> np.round(model.layers[0].kernel.numpy().ravel(), 3).tolist()
    [2.25, 0.0, -1.25]
    """

    def __init__(
        self,
        optimizer: "str | dict | keras.optimizers.Optimizer",
        name: str | None = None,
        **kwargs,
    ):
        if kwargs:
            raise ValueError(
                "Invalid keyword arguments for ProximalOptimizer: "
                f"{sorted(kwargs)}; set them on the wrapped optimizer instead. "
                f"Received: {kwargs!r}"
            )
        if isinstance(optimizer, ProximalOptimizer) or _wraps_proximal(optimizer):
            raise ValueError(
                "Invalid value for argument `optimizer`: expected one of "
                f"{', '.join(SUPPORTED_OPTIMIZERS)}; a ProximalOptimizer cannot wrap "
                f"another one. Received: optimizer={short_repr(optimizer)}"
            )
        try:
            inner = keras.optimizers.get(optimizer)
        except _DESERIALIZATION_ERRORS as error:
            raise _invalid_optimizer(optimizer) from error
        rule = _step_rule(inner)
        if rule is None:
            raise ValueError(
                "Invalid value for argument `optimizer`: expected one of "
                f"{', '.join(SUPPORTED_OPTIMIZERS)} (no exact proximal step is "
                f"known for others). Received: optimizer={short_repr(optimizer)}"
            )
        _check_hyperparameters(inner)
        super().__init__(learning_rate=0.0, name=name or "proximal_optimizer")
        self.inner_optimizer = inner
        self._step_rule = rule
        self._regularizers = []
        self._hook_inner_update()

    def _hook_inner_update(self):
        inner = self.inner_optimizer
        if keras.backend.backend() == "tensorflow":
            # `update_step` runs inside tf.distribute's per-variable update,
            # so the proximal assignment is mirrored like the update itself.
            update_step = inner.update_step
            fused = _fused_update(inner)
            compiled = {}

            def update_and_prox(gradient, variable, learning_rate):
                if fused is None:
                    update_step(gradient, variable, learning_rate)
                    self._prox(variable, learning_rate)
                else:
                    lr = ops.cast(learning_rate, variable.dtype)
                    moved, step = fused(inner, gradient, variable, lr)
                    regularizer = self._regularizer_of(variable)
                    step = self._group_step(variable, lr, step, fused=True)
                    inner.assign(variable, regularizer.prox(moved, step))

            def proximal_update_step(gradient, variable, learning_rate):
                regularizer = self._regularizer_of(variable)
                if regularizer is None:
                    update_step(gradient, variable, learning_rate)
                elif _xla.should_compile():
                    update = _compiled_update(compiled, update_and_prox, variable, regularizer)
                    update(gradient, learning_rate)
                else:
                    update_and_prox(gradient, variable, learning_rate)

            inner.update_step = proximal_update_step
        else:
            # The torch optimizers update all variables at once in
            # `_backend_update_step`; JAX selects its result under gradient
            # accumulation. Either way it runs only on real update steps.
            backend_update_step = inner._backend_update_step

            def proximal_backend_update_step(grads, variables, learning_rate):
                backend_update_step(grads, variables, learning_rate)
                for variable in variables:
                    self._prox(variable, learning_rate)

            inner._backend_update_step = proximal_backend_update_step

    def _group_step(self, variable, lr, step, fused=False):
        """Adam's step as `GroupLassoRegularizer` takes it, one per group; else `step`."""
        regularizer = self._regularizer_of(variable)
        if self._step_rule is not _adam_step or not isinstance(regularizer, GroupLassoRegularizer):
            return step
        index = self.inner_optimizer._get_variable_index(variable)
        axes = regularizer._reduce_axes(variable)
        return _adam_group_step(self.inner_optimizer, index, lr, variable.dtype, axes, fused)

    def _regularizer_of(self, variable):
        return self._regularizers[self.inner_optimizer._get_variable_index(variable)]

    def _prox(self, variable, learning_rate):
        index = self.inner_optimizer._get_variable_index(variable)
        regularizer = self._regularizers[index]
        if regularizer is None:
            return
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        step = self._group_step(variable, lr, None)
        if step is None:
            step = self._step_rule(self.inner_optimizer, index, lr, dtype)
        value = ops.convert_to_tensor(variable)
        self.inner_optimizer.assign(variable, regularizer.prox(value, step))

    def build(self, var_list):
        regularizers = []
        for variable in var_list:
            regularizer = as_proximal(getattr(variable, "regularizer", None))
            if regularizer is not None:
                if regularizer is not variable.regularizer:
                    # Keras's L1/L1L2 become the equivalent keras_l1 regularizer
                    # on the variable only; the layer (and so its config) keeps
                    # its own. A loss computed before now had its gradient.
                    regularizer._gradient_in_last_call = True
                    variable.regularizer = regularizer
                regularizer._claim(self)
            regularizers.append(regularizer)
        self._regularizers = regularizers
        claimed = [r for r in regularizers if r is not None]
        if self._step_rule is not _sgd_step and any(
            isinstance(r, GroupLassoRegularizer) for r in claimed
        ):
            warnings.warn(
                "ProximalOptimizer: GroupLassoRegularizer with "
                f"{type(self.inner_optimizer).__name__} uses a heuristic group step (the "
                "harmonic mean of the per-coordinate steps); it gives group sparsity but "
                "not the exact group-lasso optimum. Wrap keras.optimizers.SGD for the "
                "exact optimum.",
                stacklevel=2,
            )
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        _retrace_without_penalty_gradient(self, claimed)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        variables = trainable_variables
        if variables is None:
            variables = self._trainable_variables
        grads = self._data_gradients(grads, variables)
        self.inner_optimizer.apply(grads, trainable_variables)

    def _data_gradients(self, grads, variables):
        # If the loss kept the penalty's gradient (it was traced before this
        # optimizer claimed the regularizers, as TensorFlow builds optimizers
        # lazily, on the first step; or a custom training loop computed it),
        # take it out, so the proximal step stays the only place the penalty
        # acts.
        result = []
        for grad, variable in zip(grads, variables):
            regularizer = getattr(variable, "regularizer", None)
            if (
                grad is not None
                and regularizer is not None
                and isinstance(regularizer, _ProximalRegularizer)
                and regularizer._claiming_optimizer() is self
                and regularizer._gradient_in_last_call
            ):
                value = ops.convert_to_tensor(variable)
                penalty_grad = regularizer.gradient(ops.cast(value, "float32"))
                grad = grad - ops.cast(penalty_grad * _replica_scale(), grad.dtype)
            result.append(grad)
        return result

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if not isinstance(config, dict) or "optimizer" not in config:
            raise ValueError(
                "Invalid value for argument `config` of "
                "ProximalOptimizer.from_config: expected a dict with key "
                f"'optimizer'. Received: config={short_repr(config)}"
            )
        config = dict(check_config_keys(cls.__name__, config, {"name", "optimizer"}))
        inner = config.pop("optimizer")
        # A nested ProximalOptimizer is left to `__init__` to refuse, unbuilt.
        if isinstance(inner, dict) and not _wraps_proximal(inner):
            try:
                inner = keras.saving.deserialize_keras_object(inner, custom_objects=custom_objects)
            except _DESERIALIZATION_ERRORS as error:
                raise _invalid_optimizer(inner) from error
        return cls(inner, **config)
