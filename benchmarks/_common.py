"""Helpers shared by the benchmark scripts: the machine, tables, timing."""

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def machine() -> str:
    """One line naming the CPU, the cores and the library versions."""
    import keras
    import numpy as np

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores", f"Python {platform.python_version()}"]
    parts.append(f"Keras {keras.__version__} ({keras.backend.backend()})")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        parts.append(f"TensorFlow {tf.__version__}")
    parts.append(f"NumPy {np.__version__}")
    try:
        import sklearn

        parts.append(f"scikit-learn {sklearn.__version__}")
    except ImportError:
        pass
    return "; ".join(parts)


def load_average() -> str:
    """The 1-minute load average, to say how quiet the machine was."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def markdown_table(headers, rows) -> str:
    """A GitHub-flavoured Markdown table; cells are converted with `str`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def median_time(function, repeats: int) -> float:
    """Median wall time of `function()` over `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mlp(sizes, regularizer=None, seed: int = 0):
    """A ReLU MLP of layer `sizes` (logits out), each kernel regularized by a
    fresh `regularizer()` when one is given."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((sizes[0],))]
    for index, units in enumerate(sizes[1:]):
        last = index == len(sizes) - 2
        layers.append(
            keras.layers.Dense(
                units,
                activation=None if last else "relu",
                kernel_regularizer=regularizer() if regularizer else None,
            )
        )
    return keras.Sequential(layers)
