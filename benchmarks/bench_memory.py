"""Peak extra memory of SparsityLogger and sparsity_report on a 100M-parameter model.

Both read every regularized weight once per call. They must stream: hold
temporaries for about one weight tensor at a time, never a copy of all the
weights. This script builds an MLP of `--layers` square Dense layers of
`--width` units (default 10 x 3163 x 3163 = 100M parameters, 400 MB of
float32, so one kernel is 40 MB) with an `L1Regularizer` on every kernel, and
for each reader reports, relative to the resident memory just before the
call:

- the peak extra resident memory (RSS sampled every ~0.2 ms by a thread:
  TensorFlow's kernels release the GIL, so the sampler runs during them);
- the peak of Python-tracked allocations (`tracemalloc`: NumPy arrays, i.e.
  host copies; TensorFlow's own buffers are not tracked).

Each reader runs once on a small model first, so one-off costs (kernel
registration, tracing, the event-file writer) are not counted, then once on
the big model (the first call may grow TensorFlow's allocator pools: shown
apart, it is the worst case) and `--repeats` more times (largest peak
shown). Sizes are also given in units of the largest weight tensor.
"Copy all weights" is the reference a non-streaming reader would pay.

    python benchmarks/bench_memory.py            # 100M parameters, ~2 GB RAM, ~1 min
    python benchmarks/bench_memory.py --quick    # 4M parameters, seconds
"""

import argparse
import os
import sys
import tempfile
import threading
import time
import tracemalloc

import _common
import keras
import numpy as np

import keras_l1
from keras_l1._weights import measure
from keras_l1._weights import regularized_weights

MB = 2**20


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak RSS above the level at entry, and the tracemalloc peak, of a block."""

    def __enter__(self):
        self._stop = threading.Event()
        self.baseline = resident_bytes()
        self._peak = self.baseline
        self._thread = threading.Thread(target=self._sample, daemon=True)
        tracemalloc.start()
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, resident_bytes())
            time.sleep(0.0002)

    def __exit__(self, *exc):
        self._peak = max(self._peak, resident_bytes())
        self._stop.set()
        self._thread.join()
        self.traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.extra = self._peak - self.baseline
        return False


def build(layers: int, width: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((width,))]
        + [
            keras.layers.Dense(width, kernel_regularizer=keras_l1.L1Regularizer(1e-6))
            for _ in range(layers)
        ]
    )
    # A realistic sparse state: about half of each kernel exactly zero.
    for layer in model.layers:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        kernel[:, ::2] = 0
        layer.kernel.assign(kernel)
        del kernel
    return model


def logger_call(model, log_dir, histogram_freq):
    logger = keras_l1.SparsityLogger(log_dir=log_dir, histogram_freq=histogram_freq)
    logger.set_model(model)
    logger.on_train_begin()

    def call():
        logs = {}
        logger.on_epoch_end(0, logs)
        return logs

    return call, logger


def readers(model, log_dir):
    """name -> (function to measure, cleanup)."""
    plain, _ = logger_call(model, None, 0)
    events, events_logger = logger_call(model, os.path.join(log_dir, "scalars"), 0)
    histograms, histogram_logger = logger_call(model, os.path.join(log_dir, "histograms"), 1)
    result = {
        "measure() (shared by all)": lambda: measure(regularized_weights(model), 0.0),
        "SparsityLogger, logs only": plain,
        "SparsityLogger + event file": events,
        "SparsityLogger + histograms": histograms,
    }
    if hasattr(keras_l1, "sparsity_report"):
        result["sparsity_report"] = lambda: str(keras_l1.sparsity_report(model))
    result["copy all weights (reference)"] = lambda: [
        np.array(keras.ops.convert_to_numpy(w), copy=True) for w in model.weights
    ]
    return result, [events_logger, histogram_logger]


def main(argv=None) -> int:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # glibc raises its mmap threshold after large frees and then keeps
        # freed blocks in the heap, hiding later allocations from RSS. A fixed
        # threshold makes every block over 128 KB its own mapping, returned
        # to the system when freed, so RSS tracks live memory.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--width", type=int, default=3163)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10 x 632 x 632 (4M parameters)")
    args = parser.parse_args(argv)
    if args.quick:
        args.width = 632

    print(_common.machine())
    with tempfile.TemporaryDirectory() as log_dir:
        # Warm-up on a small model: tracing, kernel registration, writers.
        small = build(2, 16)
        warm, warm_loggers = readers(small, os.path.join(log_dir, "warm"))
        for function in warm.values():
            function()

        model = build(args.layers, args.width)
        parameters = model.count_params()
        largest = max(int(np.prod(w.shape)) * 4 for w in model.weights)
        total = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
        print(
            f"model: {args.layers} x Dense({args.width}), {parameters / 1e6:.1f}M parameters, "
            f"{total / MB:.0f} MB of weights, largest tensor {largest / MB:.1f} MB; "
            f"load average {_common.load_average()}\n"
        )
        functions, loggers = readers(model, log_dir)
        rows = []
        for name, function in functions.items():
            peaks = []
            for _ in range(1 + args.repeats):
                with PeakMemory() as peak:
                    result = function()
                del result
                peaks.append(peak)
            # The first call on the big model may grow allocator pools that
            # later calls reuse: it is the honest worst case, shown apart.
            later = max(p.extra for p in peaks[1:])
            traced = max(p.traced_peak for p in peaks)
            rows.append(
                [
                    name,
                    f"{peaks[0].extra / MB:.1f} ({peaks[0].extra / largest:.2f})",
                    f"{later / MB:.1f} ({later / largest:.2f})",
                    f"{traced / MB:.2f}",
                ]
            )
        for logger in loggers + warm_loggers:
            logger.on_train_end()
    print(
        _common.markdown_table(
            [
                "reader",
                "peak extra RSS, first call: MB (largest tensors)",
                "later calls",
                "tracemalloc peak (MB)",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
