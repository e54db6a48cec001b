"""Finding regularized weights and measuring them, shared by every reader."""

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops


@dataclass(frozen=True)
class RegularizedWeight:
    """A trainable variable that carries a regularizer."""

    layer: str
    variable: object
    regularizer: object

    path: str


def regularized_weights(model) -> list:
    """The variables whose penalty `fit` adds to the loss, each once.

    Keras penalizes exactly the regularized *trainable* weights of the model
    (shared layers count once), so that is the set reported here. The layer
    is named by the variable path without its last part (`"inner/dense"`).
    """
    found = []
    seen = set()
    for variable in model.trainable_weights:
        regularizer = getattr(variable, "regularizer", None)
        if regularizer is None or id(variable) in seen:
            continue
        seen.add(id(variable))
        # Sequential models put their own name in front of every path.
        path = variable.path.removeprefix(f"{model.name}/")
        layer = path.rsplit("/", 1)[0] if "/" in path else path
        found.append(RegularizedWeight(layer, variable, regularizer, path))
    return found


def measure(weights, tolerance: float):
    """Penalty, zero count, NaN count and size of each weight, one pass each.

    The device work for all weights is queued first and the results are
    copied to the host together, so there is a single synchronization.

    Returns:
        A float64 NumPy array of shape `(len(weights), 4)`: penalty, zeros,
        non-finite count, size.
    """
    rows = []
    for weight in weights:
        value = weight.variable.value
        magnitude = ops.abs(value)
        zeros = ops.sum(ops.cast(magnitude <= tolerance, "float32"))
        nonfinite = ops.sum(ops.cast(ops.logical_not(ops.isfinite(value)), "float32"))
        penalty = ops.cast(weight.regularizer(value), "float32")
        rows.append(ops.stack([penalty, zeros, nonfinite]))
    if not rows:
        return np.zeros((0, 4))
    stats = keras.ops.convert_to_numpy(ops.stack(rows)).astype(np.float64)
    sizes = np.array([[float(np.prod(w.variable.shape))] for w in weights])
    return np.concatenate([stats, sizes], axis=1)
