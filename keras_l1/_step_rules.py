"""The step each supported optimizer really takes, read from its state.

The one place in keras_l1 that reads an optimizer's slots. Keras offers no
public accessor for them; the names read here (`momentums`, `_momentums`,
`_velocities`, `_velocity_hats`, `_u`, `_average_gradients`,
`_accumulators`, `_get_variable_index`, `_iterations`) are the same from Keras 3.0 on, and
tests/test_optimizers.py checks each rule against the update the optimizer
makes (closed forms and scikit-learn's optima), in CI on the oldest Keras the
package declares and on the newest.

Each rule returns the per-coordinate (or scalar) step `s` such that the
optimizer's update was `w ← w − s · m`, where `m` is the gradient or its
running average; the proximal step is then taken with that `s`.
"""

import keras
from keras import ops


def variable_index(optimizer, variable) -> int:
    """The position of `variable` in the lists of `optimizer`'s slots."""
    return optimizer._get_variable_index(variable)


def is_update_step(optimizer):
    """Whether the next `apply` updates the weights, or None if every one does.

    Under `gradient_accumulation_steps=n` only every n-th call updates. Keras
    counts the calls in `iterations` before 3.5 and in `_iterations` after,
    where `iterations` counts the updates.
    """
    steps = getattr(optimizer, "gradient_accumulation_steps", None)
    if not steps:
        return None
    calls = getattr(optimizer, "_iterations", None)
    if calls is None:
        calls = optimizer.iterations
    return (calls + 1) % steps == 0


def _slot(optimizer, name, variable):
    return getattr(optimizer, name)[variable_index(optimizer, variable)]


def _bias_corrected_rate(optimizer, learning_rate, dtype, second_moment=True):
    # The optimizer's update at step t = iterations after the update.
    t = ops.cast(optimizer.iterations, dtype)
    rate = learning_rate / (1 - ops.power(ops.cast(optimizer.beta_1, dtype), t))
    if second_moment:
        rate = rate * ops.sqrt(1 - ops.power(ops.cast(optimizer.beta_2, dtype), t))
    return rate


def _sgd(optimizer, variable, learning_rate):
    # With momentum μ the steady-state displacement is lr·g/(1−μ), so the
    # threshold scales the same way for the fixed point to be the optimum.
    return learning_rate / (1.0 - float(optimizer.momentum))


def _adam(optimizer, variable, learning_rate):
    name = "_velocity_hats" if optimizer.amsgrad else "_velocities"
    velocity = _slot(optimizer, name, variable)
    rate = _bias_corrected_rate(optimizer, learning_rate, variable.dtype)
    return rate / (ops.sqrt(velocity) + optimizer.epsilon)


def _adamax(optimizer, variable, learning_rate):
    rate = _bias_corrected_rate(optimizer, learning_rate, variable.dtype, second_moment=False)
    return rate / (_slot(optimizer, "_u", variable) + optimizer.epsilon)


def _rmsprop(optimizer, variable, learning_rate):
    denominator = _slot(optimizer, "_velocities", variable)
    if optimizer.centered:
        denominator = denominator - ops.square(_slot(optimizer, "_average_gradients", variable))
    step = learning_rate / ops.sqrt(denominator + optimizer.epsilon)
    return step / (1.0 - float(optimizer.momentum))


def _adagrad(optimizer, variable, learning_rate):
    accumulator = _slot(optimizer, "_accumulators", variable)
    return learning_rate / ops.sqrt(accumulator + optimizer.epsilon)


# Order matters: AdamW is an Adam subclass (its decoupled weight decay is
# applied before the update and changes nothing here).
STEP_RULES = (
    (keras.optimizers.SGD, _sgd),
    (keras.optimizers.Adam, _adam),
    (keras.optimizers.Adamax, _adamax),
    (keras.optimizers.RMSprop, _rmsprop),
    (keras.optimizers.Adagrad, _adagrad),
)
SUPPORTED = ("SGD", "Adam", "AdamW", "Adamax", "RMSprop", "Adagrad")


def step_rule(optimizer):
    """The rule for `optimizer`'s class, or None if it has none."""
    for cls, rule in STEP_RULES:
        if isinstance(optimizer, cls):
            return rule
    return None
