"""keras_l1: L1 regularization for Keras 3 that delivers exact sparsity."""

from keras_l1.callbacks import SparsityLogger
from keras_l1.compaction import compact_model
from keras_l1.inspection import selected_features
from keras_l1.inspection import sparsity_report
from keras_l1.optimizers import ProximalOptimizer
from keras_l1.path import regularization_path
from keras_l1.regularize import regularize
from keras_l1.regularizers import ElasticNetRegularizer
from keras_l1.regularizers import GroupLassoRegularizer
from keras_l1.regularizers import L1Regularizer
from keras_l1.regularizers import LogSumRegularizer
from keras_l1.regularizers import ProximalRegularizer
from keras_l1.regularizers import soft_threshold
from keras_l1.scheduling import L1Scheduler

__version__ = "0.1.0"

__all__ = [
    "ElasticNetRegularizer",
    "GroupLassoRegularizer",
    "L1Regularizer",
    "L1Scheduler",
    "LogSumRegularizer",
    "ProximalOptimizer",
    "ProximalRegularizer",
    "SparsityLogger",
    "compact_model",
    "regularization_path",
    "regularize",
    "selected_features",
    "soft_threshold",
    "sparsity_report",
]
