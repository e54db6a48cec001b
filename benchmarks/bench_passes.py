"""What the passes of an XLA-compiled update cost: the floor under group lasso's proximal step.

`GroupLassoRegularizer`'s block soft-threshold scales each group of the
*updated* weight `z = w − lr·g` by `max(0, 1 − t / ‖z_g‖)`: the factor needs the
group norms of `z` before any group can be written, so an exact proximal step
reads the weight and its gradient once more than SGD's own update does (the
norms), and the reported loss reads the weight once for the penalty. L1's
soft-threshold needs nothing beyond the element itself and rides in SGD's pass.
This script times each piece alone, compiled with XLA, on the kernels of
`bench_step.py`'s MLP (784-1024-1024-10), against SGD's update measured in the
same run, in blocks of calls in a fresh random order each round:

- SGD update: `w ← w − lr·g`, what a step without regularization does per kernel;
- SGD update + L1 prox, SGD update + group lasso prox: keras_l1's proximal steps;
- group norms of `w − lr·g`: the read the block prox cannot do without;
- group lasso penalty and L1 penalty of `w`: the forward pass's read.

TensorFlow only (a `tf.function` with `jit_compile=True` per piece, updating
the weights in place as the training step does).

    python benchmarks/bench_passes.py            # ~1 min on 2 cores
    python benchmarks/bench_passes.py --quick    # small kernels, seconds
"""

import argparse
import statistics
import sys
import time

import _common
import keras
import numpy as np
from keras import ops

import keras_l1

L1 = 1e-4
LEARNING_RATE = 0.01
SHAPES = ((784, 1024), (1024, 1024), (1024, 10))


def _pieces(weights, gradients, group, l1):
    """name -> function of no arguments; each updates or reads every kernel once."""
    lr = ops.convert_to_tensor(LEARNING_RATE)

    def sgd():
        for w, g in zip(weights, gradients):
            w.assign(w - lr * g)

    def sgd_l1():
        for w, g in zip(weights, gradients):
            w.assign(l1.prox(w - lr * g, lr))

    def sgd_group():
        for w, g in zip(weights, gradients):
            w.assign(group.prox(w - lr * g, lr))

    def group_norms():
        # The squared norms only, as the block prox reduces them, kept alive
        # in a variable the size of the groups.
        for w, g, out in zip(weights, gradients, norms):
            out.assign(group._group_squares(w - lr * g)[0])

    def group_penalty():
        penalty.assign(sum(group(w) for w in weights))

    def l1_penalty():
        penalty.assign(sum(l1(w) for w in weights))

    norms = [keras.Variable(np.zeros((w.shape[0], 1), "float32")) for w in weights]
    penalty = keras.Variable(0.0)
    return {
        "SGD update": sgd,
        "SGD update + L1 prox": sgd_l1,
        "SGD update + group lasso prox": sgd_group,
        "group norms of w − lr·g": group_norms,
        "group lasso penalty of w": group_penalty,
        "L1 penalty of w": l1_penalty,
    }


def reference_group_step(w, g, l1):
    """The block soft-threshold of `w − lr·g`, rows as groups, in float64 NumPy."""
    z = w.astype(np.float64) - LEARNING_RATE * g.astype(np.float64)
    norms = np.sqrt(np.sum(z**2, axis=1, keepdims=True))
    threshold = LEARNING_RATE * l1 * np.sqrt(z.shape[1])
    factor = np.maximum(1 - threshold / np.where(norms > 0, norms, 1), 0)
    return z * np.where(norms > 0, factor, 0)


def run(shapes=SHAPES, calls: int = 20, repeats: int = 15, seed: int = 0, l1: float = L1):
    """Times every piece; returns `{"ms": {name: median ms per call}, "max_error": …}`.

    `max_error` is the largest relative difference, over all kernels, between
    one compiled group lasso step and `reference_group_step` (scaled by the
    largest magnitude of each kernel): the timed computation is the right one.
    `zero_groups` counts the groups that this step zeroes: the first four rows
    of the first kernel, made small enough to be.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    initial = [(rng.standard_normal(s) * 0.05).astype("float32") for s in shapes]
    # Rows of the first kernel small enough for the step to zero them, so the
    # check covers the dead zone too.
    initial[0][:4] *= 1e-6
    grads = [(rng.standard_normal(s) * 0.01).astype("float32") for s in shapes]
    grads[0][:4] *= 1e-6
    weights = [keras.Variable(w) for w in initial]
    gradients = [ops.convert_to_tensor(g) for g in grads]
    group = keras_l1.GroupLassoRegularizer(l1)
    pieces = {
        name: tf.function(function, jit_compile=True, autograph=False)
        for name, function in _pieces(weights, gradients, group, keras_l1.L1Regularizer(l1)).items()
    }
    pieces["SGD update + group lasso prox"]()
    errors, zero_groups = [], 0
    for w, w0, g in zip(weights, initial, grads):
        got = ops.convert_to_numpy(w).astype(np.float64)
        expected = reference_group_step(w0, g, group.l1)
        errors.append(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
        zero_groups += int(np.sum(np.all(got == 0, axis=1)))
    for function in pieces.values():
        for _ in range(3):
            function()
    times = {name: [] for name in pieces}
    names = list(pieces)
    for _ in range(repeats):
        for position in rng.permutation(len(names)):
            name = names[position]
            start = time.perf_counter()
            for _ in range(calls):
                pieces[name]()
            # The calls run in order; one read waits for the last.
            float(ops.convert_to_numpy(weights[0].value[0, 0]))
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {
        "ms": {name: statistics.median(blocks) for name, blocks in times.items()},
        "max_error": max(errors),
        "zero_groups": zero_groups,
    }


def table(results) -> str:
    """Markdown: each piece's median time per call and its ratio to SGD's update."""
    ms = results["ms"]
    base = ms["SGD update"]
    rows = [[name, f"{value:.3f} ms", f"{value / base:.2f}×"] for name, value in ms.items()]
    return _common.markdown_table(["piece (all kernels)", "time per call", "× SGD update"], rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small kernels, for a smoke run")
    parser.add_argument("--calls", type=int, default=20, help="calls per timed block")
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per piece")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        parser.error(f"needs the TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()}")
    options = {"calls": args.calls, "repeats": args.repeats}
    if args.quick:
        options.update(shapes=((64, 128), (128, 10)), calls=3, repeats=2)
    print(f"machine: {_common.machine()}; load average at start {_common.load_average()}")
    results = run(**options)
    print(table(results))
    ms = results["ms"]
    extra = ms["SGD update + group lasso prox"] - ms["SGD update"] + ms["group lasso penalty of w"]
    print(
        f"group lasso + prox over no regularization, per step: {extra:.3f} ms "
        f"(prox {ms['SGD update + group lasso prox'] - ms['SGD update']:.3f} ms, penalty "
        f"{ms['group lasso penalty of w']:.3f} ms); L1 + prox: "
        f"{ms['SGD update + L1 prox'] - ms['SGD update'] + ms['L1 penalty of w']:.3f} ms"
    )
    print(
        f"check: max relative error of the group step {results['max_error']:.1e}, "
        f"{results['zero_groups']} groups zeroed"
    )
    print(f"load average at end {_common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
