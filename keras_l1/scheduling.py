"""Changing the regularization strength during training, without recompiling.

The strength of every L1-type regularizer of a model is multiplied by one
scalar variable, the *strength factor*: `penalty = factor * l1 * sum(abs(w))`,
and its proximal step thresholds at `step * factor * l1`. Where that variable
lives decides whether a compiled training step sees its changes:

- a Python float, or a `keras.Variable` the model does not track, is read once
  when the step is traced; JAX bakes its value into the compiled step;
- a non-trainable variable owned by a layer of the model is part of the state
  Keras passes to every step, so an `assign` between steps takes effect.

So the factor lives in a tiny weightless-looking layer attached to the layer
that owns the first regularized weight. On JAX, `ProximalOptimizer`'s update
runs with the optimizer's own variables only, so while `fit` runs the factor is
also registered with the optimizer. The factor is training state, not part of
the model: it is neither saved nor loaded, and `get_config` of every
regularizer keeps the strength the user gave.
"""

import math

import keras

from keras_l1._validation import check_fraction
from keras_l1._validation import check_int
from keras_l1._validation import check_non_negative_float
from keras_l1._weights import RepeatedMeasure
from keras_l1._weights import regularized_weights
from keras_l1.regularizers import as_proximal

_ATTRIBUTE = "_keras_l1_strength"
_MAX_LOG_STEP = math.log(2.0)


class _StrengthFactor(keras.layers.Layer):
    """Holds the strength factor; saves and loads nothing (training state)."""

    def __init__(self, **kwargs):
        super().__init__(name="keras_l1_strength", **kwargs)
        self.factor = self.add_weight(
            shape=(), initializer="ones", dtype="float32", trainable=False, name="l1_factor"
        )
        self.built = True

    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass


def _owner(model, variable):
    # `_flatten_layers` also reaches layers nested in custom layers.
    for layer in model._flatten_layers(include_self=True):
        if any(v is variable for v in layer._trainable_variables):
            return layer
    return model


class StrengthFactor:
    """The strength factor of one model, shared by all its L1-type regularizers.

    Creating it attaches the factor variable to the model (once: a second
    `StrengthFactor` of the same model shares the variable). Keras's own `L1`
    / `L1L2` regularizers are replaced, on the variable only, by the
    equivalent keras_l1 regularizer (as `ProximalOptimizer` does), so they are
    scaled too; L2-only and custom regularizers are not scaled.

    Raises:
        ValueError: If the model has no L1-type regularizer.
    """

    def __init__(self, model):
        self.model = model
        scaled = []
        for weight in regularized_weights(model):
            regularizer = as_proximal(weight.regularizer)
            if regularizer is None:
                continue
            if regularizer is not weight.regularizer:
                weight.variable.regularizer = regularizer
            scaled.append((weight.variable, regularizer))
        if not scaled:
            raise ValueError(
                "Invalid value for argument `model`: expected a model with at least one "
                "L1-type regularizer (keras_l1's, or Keras's L1 / L1L2) on a trainable "
                f"weight. Received: model='{model.name}'"
            )
        self.regularizers = [regularizer for _, regularizer in scaled]
        holder = None
        for layer in model._flatten_layers(include_self=True):
            holder = layer.__dict__.get(_ATTRIBUTE)
            if holder is None:
                # On PyTorch a layer is a `torch.nn.Module`, which keeps layer
                # attributes in `_modules` instead.
                holder = layer.__dict__.get("_modules", {}).get(_ATTRIBUTE)
            if holder is not None:
                break
        # Whether compiled steps traced so far may lack the factor.
        self.attached = holder is None
        if holder is None:
            holder = _StrengthFactor()
            owner = _owner(model, scaled[0][0])
            # A built layer refuses new state; this state is not the model's
            # (it is never saved), so the lock protects nothing here.
            locked = owner._tracker.locked
            owner._tracker.unlock()
            try:
                setattr(owner, _ATTRIBUTE, holder)
            finally:
                if locked:
                    owner._tracker.lock()
        self._holder = holder
        self.variable = holder.factor
        for regularizer in self.regularizers:
            if regularizer._strength_factor is not self.variable:
                regularizer._strength_factor = self.variable
                self.attached = True

    @property
    def value(self) -> float:
        return float(keras.ops.convert_to_numpy(self.variable))

    def assign(self, value: float) -> None:
        self.variable.assign(value)
        mirror = self._holder.__dict__.get("_mirror")
        if mirror is not None:
            mirror.assign(value)

    def bind(self) -> None:
        """Prepares the model to train with the factor; call at train begin."""
        model = self.model
        if self.attached:
            # Steps traced before the factor existed would ignore it.
            if getattr(model, "train_function", None) is not None:
                model.make_train_function(force=True)
            if getattr(model, "test_function", None) is not None:
                model.make_test_function(force=True)
            self.attached = False
        optimizer = getattr(model, "optimizer", None)
        if keras.backend.backend() != "jax" or optimizer is None:
            return
        # JAX runs the optimizer update with the optimizer's variables only,
        # and cannot pass one buffer twice: the update reads a mirror.
        mirror = self._holder.__dict__.get("_mirror")
        if mirror is None:
            mirror = keras.Variable(
                self.value, dtype="float32", trainable=False, name="l1_factor_mirror"
            )
            object.__setattr__(self._holder, "_mirror", mirror)
        mirror.assign(self.value)
        for regularizer in self.regularizers:
            regularizer._proximal_strength_factor = mirror
        if not any(v is mirror for v in optimizer._variables):
            optimizer._track_variable(mirror)

    def unbind(self) -> None:
        """Undoes `bind`'s optimizer registration; call at train end."""
        mirror = self._holder.__dict__.get("_mirror")
        optimizer = getattr(self.model, "optimizer", None)
        if mirror is not None and optimizer is not None:
            if any(v is mirror for v in optimizer._variables):
                # Saved optimizer state keeps its usual variable count.
                optimizer._untrack_variable(mirror)


class L1Scheduler(keras.callbacks.Callback):
    """Scales every L1 strength during training: `l1_t = factor_t * l1`.

    Two schedules, usable together:

    - **warm-up**: during the first `warmup_epochs` epochs the factor grows
      linearly, `epoch / warmup_epochs` (0 at the first epoch, no
      regularization), then stays at 1. The network first learns the data,
      then the penalty prunes it, which avoids killing features before they
      had a chance to be useful.
    - **target sparsity**: after the warm-up, at each epoch end the factor is
      multiplied by `exp(rate * (target_sparsity - heading))`, at most
      doubled or halved, where `heading` is the sparsity one epoch ahead at
      its last rate of change (`2 * sparsity - previous sparsity`): raised
      while the model is heading denser than the target, lowered while it
      is heading sparser. Steering by where the sparsity is going rather
      than where it is keeps the lag between strength and sparsity from
      overshooting the target (weights of units that died do not come back).
      Each time the heading crosses the target the gain is halved, so the
      factor settles (a bisection on `log l1`) instead of cycling when the
      target lies between two reachable sparsities.

    The factor is a non-trainable variable of the model read by every
    regularizer's penalty *and* by its proximal step, so the compiled training
    step follows each change without recompiling, on every backend. It scales
    keras_l1's regularizers and Keras's `L1` / `L1L2` (the whole penalty, both
    terms for elastic net); L2-only and custom regularizers are left alone.
    `get_config` of the regularizers, and so a saved model, keeps the strength
    you gave: the factor is training state, not saved. To keep a strength the
    scheduler found, rebuild with `l1 = scheduler.factor * l1`.

    At each epoch end `l1_factor` (the factor used during that epoch) and,
    with `target_sparsity`, `sparsity` are put into `logs`; list it before
    callbacks that read `logs`.

    Args:
        warmup_epochs: Non-negative int, epochs of linear warm-up.
            Defaults to `0` (none).
        target_sparsity: Float in [0, 1], the fraction of regularized weights
            to drive to zero, or `None` to keep the factor at 1 after the
            warm-up. Defaults to `None`.
        rate: Positive float, the initial controller gain: a sparsity gap of
            0.1 changes the factor by `exp(0.1 * rate)` per epoch. Defaults to
            `5.0`.
        tolerance: Non-negative float; weights with `abs(w) <= tolerance`
            count as zero when measuring sparsity. Defaults to `0.0`.
        verbose: `0` (silent) or `1` (print the factor at each epoch end).
            Defaults to `0`.

    Raises:
        TypeError, ValueError: For invalid arguments, at construction.
        ValueError: At train begin, if the model has no L1-type regularizer.

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1,
    ...     use_bias=False, kernel_initializer="ones",
    ...     kernel_regularizer=keras_l1.L1Regularizer(0.5))])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=3, verbose=0,
    ...     callbacks=[keras_l1.L1Scheduler(warmup_epochs=2)])
    >>> history.history["l1_factor"]
    [0.0, 0.5, 1.0]
    >>> model.layers[0].kernel_regularizer.get_config()
    {'l1': 0.5}
    """

    def __init__(
        self,
        warmup_epochs: int = 0,
        target_sparsity: float | None = None,
        rate: float = 5.0,
        tolerance: float = 0.0,
        verbose: int = 0,
    ):
        super().__init__()
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)
        self.target_sparsity = (
            None if target_sparsity is None else check_fraction("target_sparsity", target_sparsity)
        )
        self.rate = check_non_negative_float("rate", rate)
        if self.rate == 0:
            raise ValueError(
                f"Invalid value for argument `rate`: expected a positive finite float. "
                f"Received: rate={rate!r}"
            )
        self.tolerance = check_non_negative_float("tolerance", tolerance)
        self.verbose = check_int("verbose", verbose, minimum=0)
        self._factor = None
        self._adaptive = 1.0
        self.factor = 1.0
        self._measure = RepeatedMeasure()

    def on_train_begin(self, logs=None):
        self._factor = StrengthFactor(self.model)
        self._factor.bind()
        self._adaptive = 1.0
        self._gain = self.rate
        self._last_error = 0.0
        self._last_sparsity = None

    def _ramp(self, epoch: int) -> float:
        if epoch >= self.warmup_epochs:
            return 1.0
        return epoch / self.warmup_epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.factor = self._ramp(epoch) * self._adaptive
        self._factor.assign(self.factor)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["l1_factor"] = self.factor
        message = f"L1Scheduler: epoch {epoch + 1}: factor {self.factor:.4g}"
        if self.target_sparsity is not None:
            stats = self._measure(regularized_weights(self.model), self.tolerance)
            size = stats[:, 3].sum()
            sparsity = float(stats[:, 1].sum() / size) if size else 0.0
            logs["sparsity"] = sparsity
            # Only epochs trained at full strength say how far it is from right.
            if epoch >= self.warmup_epochs and math.isfinite(sparsity):
                # The sparsity answers a change of strength over several
                # epochs; steer by where it is heading (one epoch ahead at
                # its last rate of change), or it overshoots, and weights
                # of dead units do not come back.
                heading = sparsity
                if self._last_sparsity is not None:
                    heading += sparsity - self._last_sparsity
                self._last_sparsity = sparsity
                error = self.target_sparsity - heading
                if error * self._last_error < 0:
                    # Overshot: halve the gain, a bisection on log(l1) that
                    # settles instead of cycling around a target between
                    # two reachable sparsities.
                    self._gain /= 2
                if error:
                    self._last_error = error
                # At most doubled or halved per epoch: the sparsity lags the
                # strength, and a jump to all-zero weights is hard to undo.
                step = min(max(self._gain * error, -_MAX_LOG_STEP), _MAX_LOG_STEP)
                self._adaptive *= math.exp(step)
            message += f", sparsity {sparsity:.3f} (target {self.target_sparsity:.3f})"
        if self.verbose:
            print(message)

    def on_train_end(self, logs=None):
        if self._factor is not None:
            self._factor.unbind()
