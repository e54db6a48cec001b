"""The same functions compiled by XLA, in TensorFlow graphs.

A TensorFlow graph without XLA (Keras's default `jit_compile="auto"` on a CPU)
runs each elementwise operation as its own pass over a weight: the penalty and
its gradient, and `ProximalOptimizer`'s update (the subtraction, the wrapped
optimizer's own update, the proximal step) would be dozens of passes per
weight and step. Compiled with XLA, the penalty is one loop and the whole
update a few. Nothing here changes a value: `kernel(f)` computes `f`, and the
tests check both agree (tests/test_regularizers.py's TestPenaltyInCompiledSteps
in eager and graph mode; tests/test_optimizers.py's step-by-step comparisons
with NumPy, run eagerly and in graphs). Eager code, other backends,
`tf.distribute` (whose update contexts compiled functions do not enter) and
sparse gradients (`tf.IndexedSlices`, which XLA would make dense) get the
plain functions.
"""

import keras


def _in_graph() -> bool:
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.inside_function() and not tf.distribute.has_strategy()


def kernel(function):
    """`function` as one XLA-compiled TensorFlow function inside a graph, else as is."""
    if not _in_graph():
        return function
    import tensorflow as tf

    compiled = tf.function(function, jit_compile=True, autograph=False)

    def call(*args):
        if any(isinstance(a, tf.IndexedSlices) for a in args):
            return function(*args)
        # A Keras variable is passed as its value: TensorFlow cannot trace the
        # variable object as an argument.
        return compiled(*(tf.convert_to_tensor(a) for a in args))

    return call


def penalty_with_gradient(penalty, gradient, w):
    """`penalty(w)` whose derivative is `gradient(w)`, each as one kernel in a graph.

    Returns None outside a TensorFlow graph: the caller then builds the same
    value from plain operations.
    """
    if not _in_graph():
        return None
    import tensorflow as tf

    value = kernel(penalty)
    backward = kernel(lambda w, upstream: upstream * gradient(w))

    @tf.custom_gradient
    def differentiable(w):
        return value(w), lambda upstream: backward(w, tf.cast(upstream, w.dtype))

    return differentiable(w)
