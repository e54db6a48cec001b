"""From sparse to small: what `compact_model` buys after group lasso training.

Three models, each copied by `keras_l1.regularize(model,
GroupLassoRegularizer(l1))` (one group per output channel or unit of every
kernel) and trained with `ProximalOptimizer`, so whole units and channels
reach exactly zero; `keras_l1.compact_model` then removes them (once
exactly, once keeping multiples of 8 channels: `round_to=8`), and the
compact model is fine-tuned without the penalty (see `Recipe`):

- MLP: 64-256-128-10 ReLU on scikit-learn's digits (75/25 split);
- CNN: the digits as 8x8x1 images, Conv2D(32) -> Conv2D(64) -> MaxPool ->
  Conv2D(128) -> GlobalAveragePooling -> Dense(10), ReLU, "same" padding;
- MobileNetV2 (alpha 0.35, 32x32x3, `weights=None`, 10 classes) on the
  digits blown up to 32x32x3 (each pixel a 4x4 block, in 3 equal channels),
  with Adam, and BatchNormalization momentum 0.9 instead of the ImageNet
  0.999, which leaves the moving statistics of a few hundred steps far from
  the data's.

Reported per model, before and after compaction: parameters,
multiply-accumulates of one example (MACs: Dense in*out per position, Conv
kh*kw*cin/groups*cout per output position, depthwise kh*kw*cin*multiplier per
output position, separable both, transposed Conv kh*kw*cin*cout per input
position; normalization, pooling and activations not counted, as they fold
into the neighbouring layer or cost far less), the `.keras` file's bytes and
the test accuracy, next to that of the same model trained without a
penalty (the same optimizer and epochs). Then CPU latency of the
model's forward pass (see `forward`) at batch 1 and 32, with XLA off and
on: the median over rounds of the mean time of a block of calls, original
and compact model timed in alternating order within each round (paired,
same process), and its speed-up next to the MAC ratio; beside them, the
same call of a model that computes nothing (an `Identity` layer: the cost
of a call no compaction removes) and the rate of arithmetic of each model
(MACs of the batch per second of call).
A model `compact_model` refuses is reported as "refused: <message>".

    python benchmarks/bench_compact.py           # ~8 minutes on 2 cores
    python benchmarks/bench_compact.py --quick   # MLP and CNN, one epoch, seconds
"""

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

import _common
import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_l1

# The timed functions retrace once per batch size and jit setting, on purpose.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# The second compaction of each model keeps a multiple of this many channels.
ROUND_TO = 8


def digits(image: bool, scale: int = 1, colours: int = 1, seed: int = 0):
    """Digits in [0, 1], flat or as images (each pixel `scale` x `scale`, in
    `colours` equal channels), split 75/25 stratified."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    if image:
        x = x.reshape(-1, 8, 8, 1)
        x = np.repeat(np.repeat(np.repeat(x, scale, 1), scale, 2), colours, 3)
    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)


def build_mlp():
    return keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(256, activation="relu", name="hidden_1"),
            keras.layers.Dense(128, activation="relu", name="hidden_2"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="mlp",
    )


def build_cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_1"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv_2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="conv_3"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="cnn",
    )


def build_mobilenet():
    model = keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def sgd(lr: float):
    return keras.optimizers.SGD(lr, momentum=0.9)


class Recipe(NamedTuple):
    """How one model is trained: group lasso `l1`, reached linearly over
    `warmup` epochs (`keras_l1.L1Scheduler`), `epochs` in all with
    `ProximalOptimizer(optimizer(lr))`; then the compact model is fine-tuned
    for `finetune` epochs at `lr / 5` without the penalty (`strength_factor`
    0)."""

    build: Callable
    data: Callable
    l1: float
    lr: float
    epochs: int
    batch_size: int
    warmup: int
    finetune: int
    optimizer: Callable = sgd


MODELS = {
    "MLP": Recipe(build_mlp, lambda: digits(image=False), 1e-3, 0.05, 30, 64, 10, 10),
    "CNN": Recipe(build_cnn, lambda: digits(image=True), 1e-3, 0.05, 30, 64, 10, 10),
    "MobileNetV2": Recipe(
        build_mobilenet,
        lambda: digits(image=True, scale=4, colours=3),
        3e-3,
        2e-3,
        15,
        32,
        5,
        10,
        keras.optimizers.Adam,
    ),
}


def _spatial(shape) -> int:
    return int(np.prod([d for d in shape[1:-1]], dtype=np.int64))


def macs(model) -> int:
    """Multiply-accumulates of one example through the linear layers of `model`."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += macs(layer)
            continue
        out_shape = layer.output.shape
        if isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape)) * _spatial(out_shape)
        elif isinstance(layer, keras.layers.EinsumDense):
            total += int(np.prod(layer.kernel.shape)) * _spatial(out_shape)
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            total += int(np.prod(layer.kernel.shape)) * _spatial(out_shape)
        elif isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
            total += int(np.prod(layer.kernel.shape)) * _spatial(out_shape)
        elif isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
            total += int(np.prod(layer.depthwise_kernel.shape)) * _spatial(out_shape)
            total += int(np.prod(layer.pointwise_kernel.shape)) * _spatial(out_shape)
        elif isinstance(
            layer,
            (
                keras.layers.Conv1DTranspose,
                keras.layers.Conv2DTranspose,
                keras.layers.Conv3DTranspose,
            ),
        ):
            total += int(np.prod(layer.kernel.shape)) * _spatial(layer.input.shape)
    return total


def keras_bytes(model) -> int:
    """Bytes of `model` saved as `.keras` (weights and config, no optimizer state)."""
    # Not `clone_model`: it compiles the copy as the original was, optimizer state included.
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        copy.save(path)
        return os.path.getsize(path)


def accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(logits.argmax(axis=1) == y))


def forward(model, jit: bool):
    """A function running `model` on a batch in inference mode, compiled once.

    On TensorFlow, the model's call as a `tf.function` (with XLA when `jit`),
    as a served SavedModel runs it: the Python work `predict_on_batch` does
    per call outweighs what these small models compute.
    Other backends use `predict_on_batch` with the jit setting compiled in.
    """
    if keras.backend.backend() != "tensorflow":
        model.compile(jit_compile=jit)
        return model.predict_on_batch
    import tensorflow as tf

    compiled = tf.function(lambda x: model(x, training=False), jit_compile=jit)
    return lambda x: compiled(tf.constant(x)).numpy()


def latencies(models, x, batches, jit_modes, rounds: int, calls: int) -> dict:
    """`{(batch, jit): [ms per call of each model]}`, timed in alternating order."""
    results = {}
    for jit in jit_modes:
        functions = [forward(model, jit) for model in models]
        for batch in batches:
            inputs = [keras.ops.convert_to_numpy(xi[:batch]) for xi in x]
            for function, xi in zip(functions, inputs):
                for _ in range(3):  # trace, compile, warm caches
                    function(xi)
            times = [[] for _ in models]
            for index in range(rounds):
                order = list(range(len(models)))
                if index % 2:
                    order.reverse()
                for m in order:
                    start = time.perf_counter()
                    for _ in range(calls):
                        functions[m](inputs[m])
                    times[m].append((time.perf_counter() - start) / calls * 1e3)
            results[(batch, jit)] = [statistics.median(t) for t in times]
    return results


def run(
    models=tuple(MODELS),
    epochs: int | None = None,
    batches=(1, 32),
    jit_modes=(False, True),
    rounds: int = 7,
    calls: int = 20,
    seed: int = 0,
) -> list:
    """Trains, compacts and measures each of `models`; one dict per model."""
    results = []
    for name in models:
        recipe = MODELS[name]
        epochs = epochs or recipe.epochs
        keras.utils.set_random_seed(seed)
        x_train, x_test, y_train, y_test = recipe.data()
        model = keras_l1.regularize(recipe.build(), keras_l1.GroupLassoRegularizer(recipe.l1))
        model.compile(keras_l1.ProximalOptimizer(recipe.optimizer(recipe.lr)), LOSS)
        warmup = [keras_l1.L1Scheduler(warmup_epochs=recipe.warmup)] if recipe.warmup else []
        start = time.perf_counter()
        model.fit(
            x_train,
            y_train,
            batch_size=recipe.batch_size,
            epochs=epochs,
            callbacks=warmup,
            verbose=0,
        )
        keras.utils.set_random_seed(seed)
        dense = recipe.build()
        dense.compile(recipe.optimizer(recipe.lr), LOSS)
        dense.fit(x_train, y_train, batch_size=recipe.batch_size, epochs=epochs, verbose=0)
        row = {
            "model": name,
            "dense_accuracy": accuracy(dense, x_test, y_test),
            "train_s": time.perf_counter() - start,
            "params": [model.count_params()],
            "macs": [macs(model)],
            "bytes": [keras_bytes(model)],
            "accuracy": [accuracy(model, x_test, y_test)],
            "refused": None,
        }
        try:
            small, kept = keras_l1.compact_model(model)
        except ValueError as error:
            row["refused"] = str(error)
            pairs, inputs = [model], [x_test]
        else:
            # Rank-2 inputs lose dead columns; image inputs keep every channel.
            x_small = x_test[..., kept]
            row["params"].append(small.count_params())
            row["macs"].append(macs(small))
            row["bytes"].append(keras_bytes(small))
            row["max_output_diff"] = float(
                np.abs(small.predict(x_small, verbose=0) - model.predict(x_test, verbose=0)).max()
            )
            row["accuracy"].append(accuracy(small, x_small, y_test))
            if recipe.finetune:
                tuned = keras_l1.ProximalOptimizer(recipe.optimizer(recipe.lr / 5))
                tuned.strength_factor.assign(0.0)
                small.compile(tuned, LOSS)
                small.fit(
                    x_train[..., kept],
                    y_train,
                    batch_size=recipe.batch_size,
                    epochs=min(epochs, recipe.finetune),
                    verbose=0,
                )
                row["finetuned_accuracy"] = accuracy(small, x_small, y_test)
            rounded, _ = keras_l1.compact_model(model, round_to=ROUND_TO)
            row["rounded_macs"] = macs(rounded)
            pairs, inputs = [model, small, rounded], [x_test, x_small, x_small]
        # The same call with nothing to compute: what no compaction can remove.
        empty = keras.Sequential([keras.Input(x_test.shape[1:]), keras.layers.Identity()])
        timed = latencies(pairs + [empty], inputs + [x_test], batches, jit_modes, rounds, calls)
        row["latency_ms"] = {key: ms[:-1] for key, ms in timed.items()}
        row["empty_call_ms"] = {key: ms[-1] for key, ms in timed.items()}
        results.append(row)
    return results


def _before_after(values, fmt="{:,}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(values[0])} → {fmt.format(values[1])}"


def table(results) -> str:
    """Sizes and accuracy, then latencies: two Markdown tables."""
    rows = []
    for r in results:
        mac_ratio = f" ({r['macs'][0] / r['macs'][1]:.1f}×)" if len(r["macs"]) == 2 else ""
        rows.append(
            [
                r["model"],
                _before_after(r["params"]),
                _before_after(r["macs"]) + mac_ratio,
                _before_after(r["bytes"]),
                f"{r['dense_accuracy']:.1%}",
                _before_after(r["accuracy"], "{:.1%}"),
                f"{r['finetuned_accuracy']:.1%}" if "finetuned_accuracy" in r else "–",
                # compact_model's message names what it supports, then what it received.
                f"refused: {r['refused'].split('Received: ', 1)[-1]}"
                if r["refused"]
                else "compacted",
            ]
        )
    sizes = _common.markdown_table(
        [
            "model",
            "parameters",
            "MACs / example",
            ".keras bytes",
            "accuracy, no penalty",
            "accuracy, sparse → compact",
            "compact, fine-tuned",
            "compact_model",
        ],
        rows,
    )
    rows = []
    for r in results:
        variants = ["exact", f"round_to={ROUND_TO}"] if len(r["macs"]) == 2 else ["–"]
        all_macs = [*r["macs"], r.get("rounded_macs")]
        for (batch, jit), ms in r["latency_ms"].items():
            for index, variant in enumerate(variants, start=1):
                compact = ms[index] if len(ms) > 1 else None
                # Arithmetic done per second of call, in billions of MACs.
                pair = (0, index) if compact else (0,)
                rates = [all_macs[i] * batch / (ms[i] * 1e6) for i in pair]
                rows.append(
                    [
                        r["model"],
                        variant,
                        batch,
                        "on" if jit else "off",
                        f"{ms[0]:.3f}",
                        f"{compact:.3f}" if compact else "–",
                        f"{ms[0] / compact:.2f}×" if compact else "–",
                        f"{all_macs[0] / all_macs[index]:.1f}×" if compact else "–",
                        f"{r['empty_call_ms'][(batch, jit)]:.3f}",
                        _before_after(rates, "{:.1f}"),
                    ]
                )
    latency = _common.markdown_table(
        [
            "model",
            "compaction",
            "batch",
            "jit",
            "original ms",
            "compact ms",
            "speed-up",
            "MAC reduction",
            "empty call ms",
            "GMAC/s",
        ],
        rows,
    )
    return f"{sizes}\n\n{latency}"


QUICK = {"models": ("MLP", "CNN"), "epochs": 1, "batches": (1,), "rounds": 1, "calls": 2}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MLP and CNN, one epoch, seconds")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    print(f"machine: {_common.machine()}")
    print(f"load average at start: {_common.load_average()}")
    start = time.perf_counter()
    results = run(**QUICK) if args.quick else run(models=tuple(args.models))
    print(table(results))
    for r in results:
        if "max_output_diff" in r:
            print(f"{r['model']}: max |compact - original| output = {r['max_output_diff']:.2e}")
    print(f"load average at end: {_common.load_average()}; {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
