"""Cost of SparsityLogger at epoch end, against the physical floor, and inside fit.

Epoch end: models of `L` square Dense kernels (1M, 10M, 100M parameters by
default), each with an `L1Regularizer` and half of its weights exactly zero.
The floor is one NumPy pass that reads every weight once,
`sum(np.count_nonzero(w) for w in host_copies)` on copies made beforehand
(so it includes no device-to-host copy). `SparsityLogger.on_epoch_end` is
timed as `fit` calls it, with `log_dir=None` and with a TensorBoard
`log_dir`; each time is the median of `--repeats` calls after one warm-up
call, the logger and floor calls alternating.

Inside fit: the MLP 784-1024-1024-10 (all kernels `L1Regularizer`,
`ProximalOptimizer(SGD)`) trained for one epoch of `--fit-samples` samples
(batch 256), with and without the logger, alternating, median of
`--fit-repeats` epochs each. On a shared machine two epochs differ by more
than the logger costs, so the logger's `on_epoch_end` is also timed inside
those `fit` calls, as a fraction of the epoch.

    python benchmarks/bench_logging.py            # needs ~1.5 GB RAM, a few minutes
    python benchmarks/bench_logging.py --quick    # 1M parameters only, seconds
    KERAS_BACKEND=jax python benchmarks/bench_logging.py --quick

On JAX and PyTorch without TensorFlow installed, the `log_dir` column is
left empty (TensorBoard events are written through TensorFlow).
"""

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time

import _common
import keras
import numpy as np

import keras_l1

# parameters -> (kernels, width); kernels * width**2 parameters.
SIZES = {
    "1M": (4, 500),
    "10M": (10, 1000),
    "100M": (25, 2000),
}


def sparse_model(kernels: int, width: int, seed: int = 0):
    """`kernels` Dense(width) layers without bias, half the weights exactly zero."""
    rng = np.random.default_rng(seed)
    model = keras.Sequential(
        [keras.Input((width,))]
        + [
            keras.layers.Dense(
                width, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(1e-4)
            )
            for _ in range(kernels)
        ]
    )
    for layer in model.layers:
        value = rng.standard_normal((width, width), dtype=np.float32)
        value[rng.random((width, width)) < 0.5] = 0.0
        layer.kernel.assign(value)
    return model


def can_write_events() -> bool:
    """Whether `SparsityLogger(log_dir=...)` works here (TensorFlow and TensorBoard)."""
    return all(importlib.util.find_spec(name) for name in ("tensorflow", "tensorboard"))


def epoch_end_times(model, repeats: int) -> dict:
    """Median seconds of the floor and of `on_epoch_end` with and without `log_dir`.

    Also returns the `sparsity` the logger reported.
    """
    host_copies = [np.array(w.numpy()) for w in model.trainable_weights]

    def floor():
        return sum(np.count_nonzero(w) for w in host_copies)

    with tempfile.TemporaryDirectory() as log_dir:
        loggers = {"logger": keras_l1.SparsityLogger()}
        if can_write_events():
            loggers["logger + log_dir"] = keras_l1.SparsityLogger(log_dir=log_dir)
        calls = {"floor": floor}
        for name, logger in loggers.items():
            logger.set_model(model)
            logger.on_train_begin()
            calls[name] = lambda logger=logger: logger.on_epoch_end(0, {})
        times = {name: [] for name in calls}
        for call in calls.values():
            call()  # warm-up: kernel registration, the event writer's first write
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        logs = {}
        loggers["logger"].on_epoch_end(0, logs)
        for logger in loggers.values():
            logger.on_train_end()
    result = {name: statistics.median(values) for name, values in times.items()}
    result["sparsity"] = logs["sparsity"]
    return result


def fit_times(samples: int, repeats: int, sizes=(784, 1024, 1024, 10), seed: int = 0):
    """Median seconds of one `fit` epoch with and without a SparsityLogger, and
    the median seconds of the logger's `on_epoch_end` inside those epochs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, sizes[0])).astype("float32")
    y = rng.integers(0, sizes[-1], size=samples)
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((sizes[0],))]
    for index, units in enumerate(sizes[1:]):
        layers.append(
            keras.layers.Dense(
                units,
                activation=None if index == len(sizes) - 2 else "relu",
                kernel_regularizer=keras_l1.L1Regularizer(1e-5),
            )
        )
    model = keras.Sequential(layers)
    model.compile(
        keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.01)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    logger = TimedLogger()
    callbacks = {"without logger": [], "with logger": [logger]}
    times = {name: [] for name in callbacks}
    model.fit(x, y, batch_size=256, epochs=1, verbose=0)  # warm-up: tracing
    for _ in range(repeats):
        for name, extra in callbacks.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=extra)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return medians, statistics.median(logger.seconds)


class TimedLogger(keras_l1.SparsityLogger):
    """A SparsityLogger that records how long each `on_epoch_end` takes."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.seconds.append(time.perf_counter() - start)


def run(
    sizes=tuple(SIZES), repeats: int = 9, fit_samples: int = 25600, fit_repeats: int = 7
) -> dict:
    """Returns `{"epoch_end": {size: times}, "fit": times, "on_epoch_end_inside_fit":
    seconds}`."""
    epoch_end = {}
    for size in sizes:
        model = sparse_model(*SIZES[size])
        epoch_end[size] = epoch_end_times(model, repeats)
        del model
        keras.backend.clear_session()
    fit, inside_fit = fit_times(fit_samples, fit_repeats) if fit_samples else (None, None)
    return {"epoch_end": epoch_end, "fit": fit, "on_epoch_end_inside_fit": inside_fit}


def tables(results) -> str:
    rows = []
    for size, times in results["epoch_end"].items():
        floor = times["floor"]
        row = [size, f"{floor * 1e3:.1f} ms"]
        for name in ("logger", "logger + log_dir"):
            if name in times:
                row += [f"{times[name] * 1e3:.1f} ms", f"{times[name] / floor:.2f}×"]
            else:
                row += ["n/a", "n/a"]
        rows.append(row)
    text = _common.markdown_table(
        [
            "parameters",
            "floor (np.count_nonzero)",
            "on_epoch_end",
            "× floor",
            "on_epoch_end with log_dir",
            "× floor",
        ],
        rows,
    )
    fit = results["fit"]
    if fit:
        without, with_logger = fit["without logger"], fit["with logger"]
        text += "\n\n" + _common.markdown_table(
            ["fit, one epoch", "seconds", "ratio"],
            [
                ["without logger", f"{without:.3f}", "1.000"],
                ["with SparsityLogger", f"{with_logger:.3f}", f"{with_logger / without:.3f}"],
            ],
        )
        inside = results["on_epoch_end_inside_fit"]
        text += (
            f"\n\nThe logger's `on_epoch_end` inside those epochs: {inside * 1e3:.2f} ms"
            f" (median), {inside / with_logger:.2%} of an epoch with it."
        )
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M parameters only, short fit")
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--fit-samples", type=int, default=25600, help="0 skips the fit part")
    parser.add_argument("--fit-repeats", type=int, default=7)
    args = parser.parse_args(argv)
    options = {
        "sizes": tuple(args.sizes),
        "repeats": args.repeats,
        "fit_samples": args.fit_samples,
        "fit_repeats": args.fit_repeats,
    }
    if args.quick:
        options.update(sizes=("1M",), repeats=3, fit_samples=0)
    print(f"machine: {_common.machine()}; load average at start {_common.load_average()}")
    print(tables(run(**options)))
    print(f"load average at end {_common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
