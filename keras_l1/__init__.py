"""keras_l1: L1 regularization for Keras 3 that delivers exact sparsity."""

from keras_l1.callbacks import SparsityLogger
from keras_l1.optimizers import ProximalOptimizer
from keras_l1.regularizers import ElasticNetRegularizer
from keras_l1.regularizers import GroupLassoRegularizer
from keras_l1.regularizers import L1Regularizer
from keras_l1.regularizers import soft_threshold

__version__ = "0.1.0"

__all__ = [
    "ElasticNetRegularizer",
    "GroupLassoRegularizer",
    "L1Regularizer",
    "ProximalOptimizer",
    "SparsityLogger",
    "soft_threshold",
]
