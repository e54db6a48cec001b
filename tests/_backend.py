"""The current backend's own autodiff, for gradient assertions on every backend."""

import keras
import numpy as np


def autodiff_gradient(function, w) -> np.ndarray:
    """The gradient of the scalar `function(w)` at `w`, by the backend's autodiff.

    Each backend differentiates its own way (a tape, a transform, a graph of
    tensors), so a kink such as `|w|` at 0 must come out right on each.
    """
    w = np.asarray(w)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(w)
        with tf.GradientTape() as tape:
            value = function(variable)
        return tape.gradient(value, variable).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(function)(jax.numpy.asarray(w)))
    if backend == "torch":
        import torch

        tensor = torch.tensor(w, requires_grad=True)
        function(tensor).backward()
        return tensor.grad.numpy()
    raise NotImplementedError(f"No autodiff helper for backend {backend!r}")
