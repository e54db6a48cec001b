"""`SparsityLogger`: penalty and sparsity per epoch, in `logs` and TensorBoard."""

import glob
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

    - `penalty`: the sum of every weight regularizer's value, keras_l1's and
      Keras's own (`L1`, `L2`, `L1L2`, …): exactly what `fit` adds to the
      data loss for the current weights. L2 terms count too, hence the name;
    - `l1_penalty`: the same value under its former name, **deprecated**
      (still logged for now; read `penalty`);
    - `sparsity`: the fraction of regularized weights with
      `abs(w) <= tolerance` (with `tolerance=0`, exact zeros);
    - `val_data_loss`: `val_loss - penalty`, when validation ran. It is
      exact: evaluation adds the penalty of the same final weights. No
      training counterpart is logged: the training `loss` averages penalties
      of weights that changed during the epoch, so `loss - penalty` would
      only be an approximation.

    Callbacks run in list order and see what earlier ones added to `logs`, so
    list it **before** `CSVLogger` and before any callback that monitors one
    of these keys (`EarlyStopping`, `ModelCheckpoint`, `ReduceLROnPlateau`);
    Keras gives a callback no public view of the others, so this cannot be
    checked for you. Such a monitor needs `mode="min"` (`"max"` for
    `sparsity`): Keras infers a direction only for metrics it knows. Where it
    sits relative to `keras.callbacks.TensorBoard`
    does not matter: its own TensorBoard run holds all its values (listed
    before it, TensorBoard also copies them as `epoch_penalty`, … into its
    `train` and `validation` runs). The progress bar and `model.history`
    always come after it.

    With `log_dir`, it also writes one TensorBoard run, `<log_dir>/sparsity`,
    each tag with a description: the scalars `sparsity`, `penalty` (the
    totals) and `val_data_loss`; per layer `sparsity/<layer>` and
    `penalty/<layer>` when more than one layer is regularized (with one
    they would repeat the totals); with `histogram_freq`, a histogram
    `<weight path>/histogram` of each regularized weight; and a layout for
    the Custom Scalars dashboard, category `keras_l1`, with the charts
    `sparsity`, `penalty` (one line per layer and the total) and `loss`
    (`epoch_loss` of TensorBoard's runs against `val_data_loss`). Events are
    flushed at every epoch end and the writer is closed at train end. If an
    exception or Ctrl-C interrupts `fit`, every finished epoch is on disk;
    the next `fit` with the same logger appends to the same file (pass
    `initial_epoch` to continue the steps), and the writer is closed when the
    logger is garbage-collected or the interpreter exits. Like
    `keras.callbacks.TensorBoard`, a new logger appends to the events
    already in `log_dir`, which TensorBoard then draws as one run: give each
    run its own `log_dir` (it warns when it finds another run's events and
    starts again at epoch 0; resuming with `initial_epoch` or
    `BackupAndRestore` continues the steps and is fine).

    Args:
        log_dir: Directory for TensorBoard events, or `None` to log only into
            `logs`. Needs TensorFlow installed. Under
            `MultiWorkerMirroredStrategy` only the chief writes there; every
            worker still adds the values to `logs`. Defaults to `None`.
        tolerance: Non-negative float; weights with `abs(w) <= tolerance`
            count as zero. Defaults to `0.0` (exact zeros).
        histogram_freq: Non-negative int; write weight histograms every
            `histogram_freq` epochs (0 disables). Needs `log_dir`. Defaults
            to `0`.
        image_freq: Non-negative int; every `image_freq` epochs (0 disables)
            write, under `<log_dir>/sparsity`, an image `<weight path>/nonzero`
            of each regularized 2-D weight (one pixel per entry: rows are
            inputs, columns units; white where `abs(w) > tolerance`, black
            where it counts as zero), so features dropping out show as black
            rows, and a Markdown text `selected_features` ranking the input
            features that survive (when `keras_l1.selected_features` can map
            the model's inputs). Needs `log_dir`. Defaults to `0`.
        feature_names: Optional sequence of input feature names for the
            `selected_features` text. Needs `image_freq`. Checked against the
            model at the start of `fit`. Defaults to `None` (column indices).

    Raises:
        TypeError, ValueError: For invalid arguments, at construction.
        ImportError: If `log_dir` is given and TensorFlow is not installed.
        ValueError: At the start of `fit`, before any batch: if
            `feature_names` cannot name the model's input features (wrong
            count, or a model whose first regularized layer does not read the
            inputs), or if another callback monitors one of the logged keys
            from before this logger or with `mode="auto"`.

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, kernel_initializer=keras.initializers.Constant([[0.0], [2.0]]),
    ...     kernel_regularizer=keras_l1.L1Regularizer(0.5))])
    >>> model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    >>> history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0,
    ...                     callbacks=[keras_l1.SparsityLogger()])
    >>> round(history.history["penalty"][0], 6), history.history["sparsity"]
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
        for name, value, what in (
            ("histogram_freq", histogram_freq, "histograms"),
            ("image_freq", image_freq, "images"),
        ):
            if value and self.log_dir is None:
                raise ValueError(
                    f"Invalid value for argument `{name}`: {what} are written to TensorBoard, "
                    f"which needs `log_dir`. Received: {name}={value!r} with log_dir=None"
                )
        self.feature_names = check_feature_names(feature_names)
        if self.feature_names is not None and not self.image_freq:
            raise ValueError(
                "Invalid value for argument `feature_names`: the names label the "
                "`selected_features` text, written only with `image_freq`. Received: "
                f"feature_names={feature_names!r} with image_freq={image_freq!r}"
            )
        if self.log_dir is not None:
            _summary.require_tensorflow()
        self._writer = None
        self._wrote = False
        self._earlier_events = False
        self._warned_empty = False
        self._warned_nonfinite = False
        self._measure = RepeatedMeasure()

    def on_train_begin(self, logs=None):
        # Everything that can be checked is checked here, before any batch:
        # an error at the first epoch end would cost an epoch of training.
        if self.feature_names is not None:
            selected_features(self.model, self.tolerance, self.feature_names)
        if self.log_dir is not None and self._writer is None and _is_chief(self.model):
            run_dir = os.path.join(self.log_dir, "sparsity")
            # Events of another run, unless this logger wrote them (its own
            # earlier `fit`, continued on purpose). Judged at the first epoch.
            self._earlier_events = not self._wrote and bool(
                glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
            )
            self._writer = _summary.EventWriter(run_dir)
            self._wrote = True
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
                "`penalty` and `sparsity` will be logged as 0.",
                stacklevel=2,
            )

    def on_epoch_begin(self, epoch, logs=None):
        if self._earlier_events:
            self._earlier_events = False
            # Resuming (BackupAndRestore, `initial_epoch`) continues the steps;
            # a run that starts again at 0 would be drawn over the earlier one.
            if epoch == 0:
                warnings.warn(
                    f"SparsityLogger: {os.path.join(self.log_dir, 'sparsity')} already holds "
                    "TensorBoard events of an earlier run, and this one starts again at epoch "
                    "0: TensorBoard would draw both as one run. Give each run its own `log_dir`.",
                    stacklevel=2,
                )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        weights = regularized_weights(self.model)
        stats = self._measure(weights, self.tolerance)
        totals, per_layer = self._summarize(weights, stats)
        logs["penalty"] = totals["penalty"]
        logs["sparsity"] = totals["sparsity"]
        # Deprecated name of `penalty`, kept so that existing code still reads it.
        logs["l1_penalty"] = totals["penalty"]
        if "val_loss" in logs:
            logs["val_data_loss"] = float(logs["val_loss"]) - totals["penalty"]
        if self._writer is not None:
            self._write_events(epoch, weights, totals, per_layer, logs.get("val_data_loss"))
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

    def _write_events(self, epoch, weights, totals, per_layer, val_data_loss):
        zero = f"abs(w) <= {self.tolerance:g}" if self.tolerance else "exactly zero"
        scalars = {
            "sparsity": (
                totals["sparsity"],
                f"Fraction of the model's regularized trainable weights that are {zero} at "
                "the end of the epoch (logs['sparsity']).",
            ),
            "penalty": (
                totals["penalty"],
                "Sum of every weight regularizer's value (L1 and L2 terms, keras_l1's and "
                "Keras's) for the end-of-epoch weights: what fit adds to the data loss "
                "(logs['penalty']).",
            ),
        }
        if val_data_loss is not None:
            scalars["val_data_loss"] = (
                val_data_loss,
                "Validation loss minus the penalty: the validation data loss alone, exact "
                "(logs['val_data_loss']). Compare it across values of l1.",
            )
        if len(per_layer) > 1:
            for layer, values in per_layer.items():
                scalars[f"sparsity/{layer}"] = (
                    values["sparsity"],
                    f"Fraction of layer '{layer}'s regularized weights that are {zero}.",
                )
                scalars[f"penalty/{layer}"] = (
                    values["penalty"],
                    f"Layer '{layer}'s share of the penalty.",
                )
        histograms = ()
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            # Lazily, one weight at a time: a dict of host copies would hold
            # every weight of the model at once.
            histograms = (
                (
                    f"{w.path}/histogram",
                    histogram(w.variable.value),
                    f"Values of the regularized weight '{w.path}'; exact zeros show as a "
                    "spike at 0.",
                )
                for w in weights
            )
        self._writer.write(epoch, scalars, histograms)

    def _write_pictures(self, epoch, weights):
        images = {}
        for weight in weights:
            if len(weight.variable.shape) == 2:
                value = keras.ops.convert_to_numpy(weight.variable.value)
                nonzero = np.abs(value) > self.tolerance
                images[f"{weight.path}/nonzero"] = (
                    np.where(nonzero, 255, 0).astype(np.uint8),
                    f"Non-zero entries of '{weight.path}': one pixel per entry, rows are "
                    f"inputs, columns units; white where abs(w) > {self.tolerance:g}, black "
                    "where it counts as zero.",
                )
        texts = {}
        try:
            selected = selected_features(self.model, self.tolerance, self.feature_names)
        except ValueError:
            # Named features were checked at train begin; unnamed ones are a bonus.
            if self.feature_names is not None:
                raise
        else:
            texts["selected_features"] = (
                selected.to_markdown(),
                "Input features with a non-zero outgoing weight in the first regularized "
                "layer, ranked by importance (the L2 norm of the feature's weights).",
            )
        self._writer.write_pictures(epoch, images, texts)
