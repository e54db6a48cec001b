"""Changing the regularization strength during training, without recompiling.

`keras_l1.ProximalOptimizer` multiplies every proximal step by its
`strength_factor`, a non-trainable variable of the optimizer: with it, the
strength that acts on the weights is `strength_factor * l1`. `L1Scheduler`
assigns that variable between epochs; a compiled training step reads it at
every step, on every backend, so nothing is retraced. The regularizers stay
the stateless configs the user built, and the loss `fit` reports keeps
counting the penalty at the strength they were given.
"""

import math

import keras

from keras_l1._validation import check_fraction
from keras_l1._validation import check_int
from keras_l1._validation import check_non_negative_float
from keras_l1._weights import RepeatedMeasure
from keras_l1._weights import regularized_weights
from keras_l1.optimizers import ProximalOptimizer
from keras_l1.regularizers import as_proximal

_MAX_LOG_STEP = math.log(2.0)


def proximal_optimizer_of(model) -> ProximalOptimizer:
    """The `ProximalOptimizer` `model` is compiled with (maybe inside a loss scaler).

    Raises:
        ValueError: If there is none.
    """
    optimizer = getattr(model, "optimizer", None)
    found = optimizer
    while found is not None and not isinstance(found, ProximalOptimizer):
        found = getattr(found, "inner_optimizer", None)
    if found is None:
        raise ValueError(
            "Invalid value for argument `model`: expected a model compiled with "
            "keras_l1.ProximalOptimizer, whose `strength_factor` scales the L1 strength. "
            f"Received: model='{model.name}' compiled with optimizer={type(optimizer).__name__}"
        )
    return found


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

    The factor is the `strength_factor` of the model's
    `keras_l1.ProximalOptimizer`, which scales every proximal step: the
    compiled training step follows each change without recompiling, on every
    backend. It scales keras_l1's regularizers and Keras's `L1` / `L1L2` (the
    whole penalty, both terms for elastic net) where they act, in the
    proximal step; L2-only and custom regularizers are left alone. The
    regularizers themselves, their `get_config`, and so the `loss` that `fit`
    reports, keep the strength you gave. To keep a strength the scheduler
    found, rebuild with `l1 = scheduler.factor * l1`.

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
        ValueError: At train begin, if the model has no L1-type regularizer
            or is not compiled with `keras_l1.ProximalOptimizer`.

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1,
    ...     use_bias=False, kernel_initializer="ones",
    ...     kernel_regularizer=keras_l1.L1Regularizer(0.5))])
    >>> model.compile(keras_l1.ProximalOptimizer("sgd"), "mse")
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
        self._optimizer = None
        self._adaptive = 1.0
        self.factor = 1.0
        self._measure = RepeatedMeasure()

    def on_train_begin(self, logs=None):
        self._optimizer = proximal_optimizer_of(self.model)
        if not any(as_proximal(w.regularizer) for w in regularized_weights(self.model)):
            raise ValueError(
                "Invalid value for argument `model`: expected a model with at least one "
                "L1-type regularizer (keras_l1's, or Keras's L1 / L1L2) on a trainable "
                f"weight. Received: model='{self.model.name}'"
            )
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
        self._optimizer.strength_factor.assign(self.factor)

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
