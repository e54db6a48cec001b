"""`keras-l1 demo`: sparse biomarker selection on the breast cancer data."""

import os

import keras
import numpy as np

from keras_l1.callbacks import SparsityLogger
from keras_l1.inspection import selected_features
from keras_l1.inspection import sparsity_report
from keras_l1.optimizers import ProximalOptimizer
from keras_l1.regularizers import L1Regularizer


def _load_data(seed: int):
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as error:
        raise SystemExit(
            'keras-l1 demo needs scikit-learn for its data: pip install "keras_l1[demo]"'
        ) from error
    data = load_breast_cancer()
    x = data.data.astype("float32")
    y = data.target.astype("float32")[:, None]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x, y, list(data.feature_names)


class _EpochPrinter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(
            f"epoch {epoch + 1:3d}  loss {logs['loss']:.4f}  "
            f"val_accuracy {logs.get('val_accuracy', float('nan')):.3f}  "
            f"penalty {logs['penalty']:.4f}  sparsity {logs['sparsity']:.3f}"
        )


def build_model(l1: float) -> keras.Model:
    """The demo's model: one L1-regularized hidden layer on 30 biomarkers."""
    return keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(
                16, activation="relu", kernel_regularizer=L1Regularizer(l1), name="hidden"
            ),
            keras.layers.Dense(1, activation="sigmoid", name="output"),
        ],
        name="demo",
    )


def run(log_dir: "str | None" = None, epochs: int = 30, l1: float = 0.02, seed: int = 0) -> dict:
    """Trains the demo model, prints its progress and result, and returns a summary.

    Args:
        log_dir: Directory for this run's files, or `None` to write none:
            TensorBoard events (`train`, `validation` from
            `keras.callbacks.TensorBoard`, `sparsity` from `SparsityLogger`),
            the trained model `model.keras` and `feature_names.txt` (one name
            per line, for `keras-l1 report --feature-names`). Give each run its
            own directory: events appended to an earlier run's are drawn as
            one run. Defaults to `None`.
        epochs: Training epochs. Defaults to `30`.
        l1: L1 strength of the hidden layer. Defaults to `0.02`.
        seed: Random seed of the data split and the weights. Defaults to `0`.

    Returns:
        A dict: `history` (`History.history`), `kept_features` (names),
        `model`, and `model_path` (`None` without `log_dir`).

    Raises:
        SystemExit: If scikit-learn (the data) is not installed.
    """
    keras.utils.set_random_seed(seed)
    x, y, names = _load_data(seed)
    model = build_model(l1)
    model.compile(
        optimizer=ProximalOptimizer(keras.optimizers.Adam(0.01)),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = [SparsityLogger(), _EpochPrinter()]
    if log_dir:
        # TensorBoard first: SparsityLogger's own run holds its values, so
        # TensorBoard's runs need no copies of them.
        callbacks = [
            keras.callbacks.TensorBoard(log_dir),
            SparsityLogger(log_dir=log_dir),
            _EpochPrinter(),
        ]
    history = model.fit(
        x, y, epochs=epochs, batch_size=64, validation_split=0.2, verbose=0, callbacks=callbacks
    )
    selected = selected_features(model, feature_names=names)
    print()
    print(sparsity_report(model))
    print()
    print(selected)
    model_path = None
    if log_dir:
        model_path = os.path.join(log_dir, "model.keras")
        model.save(model_path)
        with open(os.path.join(log_dir, "feature_names.txt"), "w", encoding="utf-8") as file:
            file.write("".join(f"{name}\n" for name in names))
    return {
        "history": history.history,
        "kept_features": list(selected),
        "model": model,
        "model_path": model_path,
    }
