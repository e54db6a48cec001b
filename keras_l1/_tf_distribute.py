"""tf.distribute's rules for updating variables; plain assignments elsewhere.

Under a `tf.distribute` strategy, Keras divides the loss by the number of
replicas and sums the gradients across them, and a mirrored variable may be
assigned only in the strategy's update context. Nothing here does anything on
JAX or PyTorch, or on TensorFlow without a strategy.
"""

import keras


def _replica_context():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_replica_context()


def replica_fraction() -> float:
    """The share of the loss one replica differentiates: 1 / replicas."""
    context = _replica_context()
    return 1.0 if context is None else 1.0 / context.num_replicas_in_sync


def assign_each(variables, functions) -> None:
    """`variable.assign(function(variable's value))` for each pair, in order."""
    context = _replica_context()
    if context is None:
        for variable, function in zip(variables, functions):
            variable.assign(function(keras.ops.convert_to_tensor(variable)))
        return

    def update(strategy):
        for variable, function in zip(variables, functions):
            strategy.extended.update(
                variable.value,
                lambda v, function=function: v.assign(function(v.read_value())),
                group=False,
            )

    context.merge_call(update)
