"""keras_l1: L1 regularization for Keras 3 that delivers exact sparsity."""

from keras_l1 import _launch

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

if not _launch.deferred():
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
else:
    # `keras-l1 --help` must not wait for Keras (see keras_l1/_launch.py).

    def __getattr__(name: str):
        if name in __all__:
            _launch.import_public_names()
            return globals()[name]
        raise AttributeError(f"module 'keras_l1' has no attribute {name!r}")
