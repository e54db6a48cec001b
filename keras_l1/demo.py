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
            f"l1_penalty {logs['l1_penalty']:.4f}  sparsity {logs['sparsity']:.3f}"
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


def run(log_dir: str = "runs/demo", epochs: int = 30, l1: float = 0.02, seed: int = 0) -> dict:
    """Trains the demo model, prints its progress, and returns a summary."""
    keras.utils.set_random_seed(seed)
    x, y, names = _load_data(seed)
    model = build_model(l1)
    model.compile(
        optimizer=ProximalOptimizer(keras.optimizers.Adam(0.01)),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = [_EpochPrinter()]
    if log_dir:
        callbacks = [
            SparsityLogger(log_dir=log_dir),
            keras.callbacks.TensorBoard(log_dir),
            *callbacks,
        ]
    else:
        callbacks = [SparsityLogger(), *callbacks]
    history = model.fit(
        x, y, epochs=epochs, batch_size=64, validation_split=0.2, verbose=0, callbacks=callbacks
    )
    selected = selected_features(model, feature_names=names)
    kept = list(selected)
    print()
    print(sparsity_report(model))
    print()
    print(selected)
    if log_dir:
        print(f"\nView it in TensorBoard:\n  tensorboard --logdir {os.path.abspath(log_dir)}")
    return {"history": history.history, "kept_features": kept, "model": model}
