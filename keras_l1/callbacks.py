"""`SparsityLogger`: penalty and sparsity per epoch, in `logs` and TensorBoard."""

import math
import os
import warnings
import weakref

import keras
import numpy as np

from keras_l1 import _summary
from keras_l1._validation import check_int
from keras_l1._validation import check_non_negative_float
from keras_l1._validation import check_path
from keras_l1._weights import RepeatedMeasure
from keras_l1._weights import histogram
from keras_l1._weights import regularized_weights
from keras_l1.inspection import check_feature_names
from keras_l1.inspection import selected_features


def _is_chief(model) -> bool:
    """Whether this process writes the shared TensorBoard events.

    Under `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the
    same callbacks on the same (synchronized) weights; only the chief writes,
    so the run holds one copy of each event. The chief is the `"chief"` task,
    or worker 0 in a cluster without one. Any other setup has one writer.
    """
    strategy = getattr(model, "distribute_strategy", None)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    jobs = resolver.cluster_spec().jobs
    if not jobs or resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in jobs


class SparsityLogger(keras.callbacks.Callback):
    """Logs the weight penalty and the weight sparsity at each epoch end.

    At each epoch end it measures every regularized trainable weight once
    (no per-batch work) and adds to `logs`:

    - `l1_penalty`: the sum of every weight regularizer's value, keras_l1's and
      Keras's own (`L1`, `L1L2`, …): exactly what `fit` adds to the data loss
      for the current weights;
    - `sparsity`: the fraction of regularized weights with
      `abs(w) <= tolerance` (with `tolerance=0`, exact zeros);
    - `val_data_loss`: `val_loss - l1_penalty`, when validation ran. It is
      exact: evaluation adds the penalty of the same final weights. No
      training counterpart is logged: the training `loss` averages penalties
      of weights that changed during the epoch, so `loss - l1_penalty` would
      only be an approximation.

    List it **before** `History`-reading callbacks you pass yourself
    (`CSVLogger`, `EarlyStopping`, `keras.callbacks.TensorBoard`): callbacks
    run in list order and see what earlier ones added to `logs`. The progress
    bar and `model.history` always come after it.

    With `log_dir`, it also writes TensorBoard scalars to
    `<log_dir>/sparsity`: `<layer>/sparsity` and `<layer>/penalty` per
    layer, and `total/sparsity`, `total/penalty`; with `histogram_freq`, a
    histogram `<weight path>/histogram` of each regularized weight. Events are
    flushed at every epoch end and the writer is closed at train end. If an
    exception or Ctrl-C interrupts `fit`, every finished epoch is on disk;
    the next `fit` with the same logger appends to the same file (pass
    `initial_epoch` to continue the steps), and the writer is closed when the
    logger is garbage-collected or the interpreter exits.

    Args:
        log_dir: Directory for TensorBoard events, or `None` to log only into
            `logs`. Needs TensorFlow installed. Under
            `MultiWorkerMirroredStrategy` only the chief writes there; every
            worker still adds the values to `logs`. Defaults to `None`.
        tolerance: Non-negative float; weights with `abs(w) <= tolerance`
            count as zero. Defaults to `0.0` (exact zeros).
        histogram_freq: Non-negative int; write weight histograms every
            `histogram_freq` epochs (0 disables). Defaults to `0`.
        image_freq: Non-negative int; every `image_freq` epochs (0 disables)
            write, under `<log_dir>/sparsity`, an image `<weight path>/nonzero`
            of each regularized 2-D weight (one pixel per entry: rows are
            inputs, columns units; white where `abs(w) > tolerance`, black
            where it counts as zero), so features dropping out show as black
            rows, and a Markdown text `selected_features` ranking the input
            features that survive (when `keras_l1.selected_features` can map
            the model's inputs). Needs `log_dir`. Defaults to `0`.
        feature_names: Optional sequence of input feature names for the
            `selected_features` text. Defaults to `None` (column indices).

    Raises:
        TypeError, ValueError: For invalid arguments, at construction.
        ImportError: If `log_dir` is given and TensorFlow is not installed.

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, kernel_initializer=keras.initializers.Constant([[0.0], [2.0]]),
    ...     kernel_regularizer=keras_l1.L1Regularizer(0.5))])
    >>> model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    >>> history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0,
    ...                     callbacks=[keras_l1.SparsityLogger()])
    >>> round(history.history["l1_penalty"][0], 6), history.history["sparsity"]
    (0.975, [0.5])
    """

    def __init__(
        self,
        log_dir: "str | os.PathLike | None" = None,
        tolerance: float = 0.0,
        histogram_freq: int = 0,
        image_freq: int = 0,
        feature_names: "list[str] | None" = None,
    ):
        super().__init__()
        self.log_dir = check_path("log_dir", log_dir)
        self.tolerance = check_non_negative_float("tolerance", tolerance)
        self.histogram_freq = check_int("histogram_freq", histogram_freq, minimum=0)
        self.image_freq = check_int("image_freq", image_freq, minimum=0)
        if self.image_freq and self.log_dir is None:
            raise ValueError(
                "Invalid value for argument `image_freq`: images are written to TensorBoard, "
                f"which needs `log_dir`. Received: image_freq={image_freq!r} with log_dir=None"
            )
        self.feature_names = check_feature_names(feature_names)
        if self.log_dir is not None:
            _summary.require_tensorflow()
        self._writer = None
        self._warned_empty = False
        self._warned_nonfinite = False
        self._measure = RepeatedMeasure()

    def on_train_begin(self, logs=None):
        if self.log_dir is not None and self._writer is None and _is_chief(self.model):
            self._writer = _summary.EventWriter(os.path.join(self.log_dir, "sparsity"))
            # Keras skips `on_train_end` when an exception (Ctrl-C, another
            # callback) leaves `fit`. Every finished epoch is flushed already;
            # the open writer is reused by this logger's next `fit`, which
            # appends to the same file, and closed when the logger is
            # garbage-collected or the interpreter exits.
            self._close_writer = weakref.finalize(self, self._writer.close)
        if not regularized_weights(self.model) and not self._warned_empty:
            self._warned_empty = True
            warnings.warn(
                "SparsityLogger: the model has no regularized trainable weight; "
                "`l1_penalty` and `sparsity` will be logged as 0.",
                stacklevel=2,
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        weights = regularized_weights(self.model)
        stats = self._measure(weights, self.tolerance)
        totals, per_layer = self._summarize(weights, stats)
        logs["l1_penalty"] = totals["penalty"]
        logs["sparsity"] = totals["sparsity"]
        if "val_loss" in logs:
            logs["val_data_loss"] = float(logs["val_loss"]) - totals["penalty"]
        if self._writer is not None:
            self._write_events(epoch, weights, totals, per_layer)
            if self.image_freq and epoch % self.image_freq == 0:
                self._write_pictures(epoch, weights)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._close_writer()
            self._writer = None

    def _summarize(self, weights, stats):
        per_layer = {}
        for weight, (penalty, zeros, nonfinite, size) in zip(weights, stats):
            entry = per_layer.setdefault(weight.layer, np.zeros(4))
            entry += (penalty, zeros, nonfinite, size)
        total = stats.sum(axis=0) if len(stats) else np.zeros(4)
        if total[2] > 0 and not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                "SparsityLogger: some regularized weights are NaN or infinite; "
                "their sparsity and penalty are logged as NaN.",
                stacklevel=2,
            )

        def values(row):
            penalty, zeros, nonfinite, size = row
            sparsity = zeros / size if size else 0.0
            if nonfinite:
                sparsity = math.nan
            return {"penalty": float(penalty), "sparsity": float(sparsity)}

        return values(total), {layer: values(row) for layer, row in per_layer.items()}

    def _write_events(self, epoch, weights, totals, per_layer):
        scalars = {"total/sparsity": totals["sparsity"], "total/penalty": totals["penalty"]}
        for layer, values in per_layer.items():
            scalars[f"{layer}/sparsity"] = values["sparsity"]
            scalars[f"{layer}/penalty"] = values["penalty"]
        histograms = ()
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            # Lazily, one weight at a time: a dict of host copies would hold
            # every weight of the model at once.
            histograms = ((f"{w.path}/histogram", histogram(w.variable.value)) for w in weights)
        self._writer.write(epoch, scalars, histograms)

    def _write_pictures(self, epoch, weights):
        images = {}
        for weight in weights:
            if len(weight.variable.shape) == 2:
                value = keras.ops.convert_to_numpy(weight.variable.value)
                nonzero = np.abs(value) > self.tolerance
                images[f"{weight.path}/nonzero"] = np.where(nonzero, 255, 0).astype(np.uint8)
        texts = {}
        try:
            selected = selected_features(self.model, self.tolerance, self.feature_names)
        except ValueError:
            # Named features are a promise to the user; unnamed ones are a bonus.
            if self.feature_names is not None:
                raise
        else:
            texts["selected_features"] = selected.to_markdown()
        self._writer.write_pictures(epoch, images, texts)
