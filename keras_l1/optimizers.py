"""`ProximalOptimizer`: a gradient step on the data loss, then a proximal step.

This is forward–backward splitting (FOBOS): for the objective
`data_loss(w) + penalty(w)` each update is `w ← prox(w − step·∇data_loss(w),
step)`, where `prox` is the regularizer's proximal operator. For L1 it is a
soft-threshold, so coordinates whose gradient cannot beat `l1` land exactly
on zero and stay there, which subgradient descent never achieves.

The mechanism is local: the gradient `ProximalOptimizer` receives is the
gradient of Keras's loss, data loss plus `model.losses`, in which each
keras_l1 regularizer contributes exactly `regularizer.gradient(w)`. It
subtracts that, lets the wrapped optimizer update with what is left, and
applies `prox` with the step the optimizer took. Nothing is stored on the
regularizers, the layers or the wrapped optimizer.
"""

import warnings

import keras
from keras import ops

from keras_l1 import _step_rules
from keras_l1 import _tf_distribute
from keras_l1 import _tf_kernels
from keras_l1._validation import check_bool
from keras_l1._validation import check_config_keys
from keras_l1._validation import check_float_in
from keras_l1._validation import check_non_negative_float
from keras_l1._validation import short_repr
from keras_l1.regularizers import GroupLassoRegularizer
from keras_l1.regularizers import _accumulation_dtype
from keras_l1.regularizers import as_proximal

# Hyperparameters the step rules (or every update) read, with the range in
# which the proximal step is finite and the iteration does not diverge
# (momentum 1 divides by zero). Keras itself accepts NaN, infinite or
# out-of-range values for most of them.
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


def _check_optimizer(optimizer, received) -> None:
    """Refuses what the proximal step cannot make exact, naming the setting."""
    name = type(optimizer).__name__
    if optimizer.use_ema:
        raise ValueError(
            "Invalid value for argument `optimizer`: `use_ema=True` is not supported, since "
            "the moving averages Keras writes into the weights at the end of `fit` are not "
            "sparse (every exact zero would be lost). Average the weights yourself after "
            "training if you need it, and threshold them again. "
            f"Received: optimizer={short_repr(received)} with use_ema=True"
        )
    for cls, _ in _step_rules.STEP_RULES:
        if isinstance(optimizer, cls) and type(optimizer).update_step is not cls.update_step:
            raise ValueError(
                "Invalid value for argument `optimizer`: a subclass that overrides "
                f"`update_step` takes steps keras_l1 cannot read. Received: optimizer={name}"
            )
    learning_rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(learning_rate, keras.Variable):
        check_non_negative_float("learning_rate", float(keras.ops.convert_to_numpy(learning_rate)))
    for key, (low, high, interval) in _HYPERPARAMETER_RANGES.items():
        if hasattr(optimizer, key):
            check_float_in(key, _scalar(getattr(optimizer, key)), low, high, interval)
    if hasattr(optimizer, "initial_accumulator_value"):
        check_non_negative_float(
            "initial_accumulator_value", _scalar(optimizer.initial_accumulator_value)
        )
    for key in _NON_NEGATIVE_OR_NONE:
        value = getattr(optimizer, key, None)
        if value is not None:
            check_non_negative_float(key, _scalar(value))
    for key in _FLAGS:
        if hasattr(optimizer, key):
            check_bool(key, getattr(optimizer, key))


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


def _data_gradient(regularizer, scale):
    """`gradient, w -> gradient − scale · regularizer.gradient(w)`."""

    def subtract(gradient, value):
        slope = regularizer.gradient(ops.cast(value, _accumulation_dtype(value.dtype)))
        return gradient - ops.cast(slope * scale, gradient.dtype)

    return subtract


@keras.saving.register_keras_serializable(package="keras_l1")
class ProximalOptimizer(keras.optimizers.Optimizer):
    """Wraps a Keras optimizer so that L1-type penalties give exact zeros.

    At each step, for every variable whose regularizer has a proximal
    operator (any `keras_l1.ProximalRegularizer`, and Keras's own `L1` /
    `L1L2`, treated as their keras_l1 equivalents):

    1. the penalty's gradient `regularizer.gradient(w)` is subtracted from the
       gradient received, leaving the data loss's;
    2. the wrapped optimizer updates with it, as usual;
    3. `w ← regularizer.prox(w, strength_factor · step)`, with the step the
       optimizer really took: `lr` for plain SGD (`lr / (1 − momentum)` with
       momentum, the learning rate of *this* step under a schedule), and the
       per-coordinate `lr_t / (sqrt(v) + ε)` for Adam, AdamW, Adamax,
       RMSprop and Adagrad.

    With plain SGD this is proximal gradient descent and converges to the
    Lasso optimum; with the diagonal preconditioners its fixed points are the
    same optimum. For `GroupLassoRegularizer` under an adaptive optimizer the
    per-coordinate step is averaged within each group, a heuristic.

    The gradient it receives must be that of Keras's loss including
    `model.losses`, as `fit`, `train_on_batch` and `Model.compute_loss`
    compute it; in a custom training loop add `sum(model.losses)` to the
    loss. The penalty enters the loss *value* (`fit` reports the true
    objective) but acts through the proximal step only, exactly once.
    Checked settings of the wrapped optimizer: learning-rate schedules,
    momentum and Nesterov, AMSGrad, centered RMSprop, weight decay (AdamW's
    and `weight_decay=`, applied before the step), gradient clipping (it
    clips the data gradient), `gradient_accumulation_steps` (the proximal
    step runs on the real updates only), `loss_scale_factor`, and a
    `keras.optimizers.LossScaleOptimizer` around this one (mixed precision).
    `use_ema=True` is refused: the averaged weights Keras writes at the end of
    `fit` are not sparse.

    `strength_factor` is a non-trainable variable (1 by default) that scales
    every proximal step: `keras_l1.L1Scheduler` changes it during training.
    It is part of the optimizer's state, saved with it.

    Args:
        optimizer: The optimizer to wrap: an instance, a name such as
            `"adam"`, or a serialized config. One of SGD, Adam, AdamW,
            Adamax, RMSprop, Adagrad; others raise a `ValueError`, since no
            exact proximal step is known for them.
        name: Optional name. Defaults to `"proximal_optimizer"`.

    Raises:
        ValueError: If `optimizer` is not a supported optimizer, or uses a
            setting that would lose exact zeros (`use_ema=True`).

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
        supported = ", ".join(_step_rules.SUPPORTED)
        if isinstance(optimizer, ProximalOptimizer) or _wraps_proximal(optimizer):
            raise ValueError(
                f"Invalid value for argument `optimizer`: expected one of {supported}; a "
                "ProximalOptimizer cannot wrap another one. "
                f"Received: optimizer={short_repr(optimizer)}"
            )
        try:
            inner = keras.optimizers.get(optimizer)
        except _DESERIALIZATION_ERRORS as error:
            raise _invalid_optimizer(optimizer) from error
        if _step_rules.step_rule(inner) is None:
            raise ValueError(
                f"Invalid value for argument `optimizer`: expected one of {supported} (no "
                "exact proximal step is known for others). "
                f"Received: optimizer={short_repr(optimizer)}"
            )
        _check_optimizer(inner, optimizer)
        super().__init__(learning_rate=0.0, name=name or "proximal_optimizer")
        self.inner_optimizer = inner
        self._step_rule = _step_rules.step_rule(inner)
        with keras.name_scope(self.name, caller=self):
            self.strength_factor = keras.Variable(
                1.0, dtype="float32", trainable=False, name="strength_factor"
            )

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        # Pure functions of each variable's regularizer, looked up once.
        self._regularizers = [
            as_proximal(getattr(variable, "regularizer", None)) for variable in var_list
        ]
        if self._step_rule is not _step_rules.STEP_RULES[0][1] and any(
            isinstance(r, GroupLassoRegularizer) for r in self._regularizers
        ):
            warnings.warn(
                "ProximalOptimizer: GroupLassoRegularizer with "
                f"{type(self.inner_optimizer).__name__} uses a heuristic group step (the "
                "harmonic mean of the per-coordinate steps); it gives group sparsity but "
                "not the exact group-lasso optimum. Wrap keras.optimizers.SGD for the "
                "exact optimum.",
                stacklevel=2,
            )

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        variables = self._trainable_variables
        if trainable_variables is not None:
            variables = list(trainable_variables)
        grads = list(grads)
        present = [i for i, grad in enumerate(grads) if grad is not None]

        # The whole update as one function of the gradients, which a
        # TensorFlow graph compiles with XLA (see _tf_kernels).
        def update(*values):
            for i, value in zip(present, values):
                grads[i] = value
            self._update(grads, variables)

        _tf_kernels.kernel(update)(*(grads[i] for i in present))

    def _update(self, grads, variables):
        inner = self.inner_optimizer
        regularizers = [self._regularizer_of(v) for v in variables]
        # Keras divides the loss by the replicas of tf.distribute, and by
        # `loss_scale_factor` in `apply`, after this subtraction.
        scale = _tf_distribute.replica_fraction() * (inner.loss_scale_factor or 1.0)
        for i, (grad, variable, regularizer) in enumerate(zip(grads, variables, regularizers)):
            if grad is not None and regularizer is not None:
                data_gradient = _data_gradient(regularizer, scale)
                grads[i] = data_gradient(grad, ops.convert_to_tensor(variable))
        # What the update reads before it changes: this step's learning rate
        # (under a schedule) and whether it is a real update.
        learning_rate = inner.learning_rate
        real_update = _step_rules.is_update_step(inner)
        inner.apply(grads, variables)
        moved = [
            (variable, regularizer)
            for grad, variable, regularizer in zip(grads, variables, regularizers)
            if grad is not None and regularizer is not None
        ]
        _tf_distribute.assign_each(
            [variable for variable, _ in moved],
            [self._proximal_step(learning_rate, real_update, *pair) for pair in moved],
        )

    def _proximal_step(self, learning_rate, real_update, variable, regularizer):
        def step(value):
            lr = ops.cast(learning_rate, variable.dtype)
            steps = self._step_rule(self.inner_optimizer, variable, lr)
            factor = ops.cast(self.strength_factor, variable.dtype)
            new = regularizer.prox(value, steps * factor)
            if real_update is not None:
                new = ops.where(real_update, new, value)
            return new

        return step

    def _regularizer_of(self, variable):
        return self._regularizers[_step_rules.variable_index(self.inner_optimizer, variable)]

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        # Keras's constructor sets a learning rate of its own on the wrapper;
        # the wrapped optimizer's is the one in use.
        if hasattr(self, "inner_optimizer"):
            self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        if hasattr(self, "inner_optimizer"):
            return self.inner_optimizer.iterations
        return self._own_iterations

    @iterations.setter
    def iterations(self, value):
        # Keras before 3.5 sets `iterations` in the constructor.
        self._own_iterations = value

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

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
