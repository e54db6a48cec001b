"""XLA-compiled pieces of the training step, on TensorFlow only.

Without XLA, TensorFlow runs every elementwise operation as its own pass over
a weight (about 0.3 ms per pass over 1.9M float32 weights on one core here).
A weight's update and proximal step are a dozen such operations per step;
compiled with XLA they become one loop. Nothing here is used on other
backends, whose training steps are compiled whole anyway.
"""

import keras


def in_xla_function() -> bool:
    """Whether TensorFlow is tracing a function compiled with XLA."""
    import tensorflow as tf

    try:
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:  # a private module; without it, compiling twice is still right
        return False
    return tf.inside_function() and GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def has_strategy() -> bool:
    """Whether a `tf.distribute` strategy is in scope (never on other backends)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def should_compile() -> bool:
    """Whether to run a piece of the step as its own XLA-compiled function.

    Only on TensorFlow; not under tf.distribute, where updates run per
    replica inside the strategy's own machinery; and not inside a step
    compiled with XLA (`jit_compile=True`), which fuses everything already.
    """
    if keras.backend.backend() != "tensorflow" or has_strategy():
        return False
    return not in_xla_function()


def compile(function):
    """`function` as an XLA-compiled TensorFlow function.

    Keras variables among the arguments are passed as their values: a
    TensorFlow function would otherwise trace one of them as a constant.
    """
    import tensorflow as tf

    compiled = tf.function(function, jit_compile=True, autograph=False)

    def call(*args):
        return compiled(
            *(tf.convert_to_tensor(a) if isinstance(a, keras.Variable) else a for a in args)
        )

    return call


def in_function() -> bool:
    """Whether TensorFlow is tracing a function (not running eagerly)."""
    import tensorflow as tf

    return tf.inside_function()
