"""Sparsity against accuracy on a real network: an MLP on scikit-learn's digits.

An MLP (64-256-128-10 by default, ReLU, Adam unless said otherwise, 60
epochs, batch 64) is trained on 75% of the bundled digits data and scored on
the other 25% (450 images: one image is 0.22 points); each number is the mean
(± standard deviation) over `--seeds` splits and initializations. Weight
sparsity is the fraction of exactly zero kernel weights over all layers; for
the regularized methods `l1` is searched (interpolating `log l1`) until the
sparsity lands in `[target, target + 1%]`. Methods:

- L1 + prox (Adam): `L1Regularizer` on every kernel,
  `ProximalOptimizer(Adam(1e-3))`.
- L1 + prox (Adam), fine-tuned: the same, then the zero pattern held and the
  survivors trained 20 more epochs with `Adam(1e-3)` and without the penalty:
  the relaxed lasso, and exactly the fine-tuning pruning gets, so both use 60
  + 20 epochs.
- L1 + prox (Adam), 10-epoch warm-up: the same with
  `keras_l1.L1Scheduler(warmup_epochs=10)`, which ramps the penalty up from 0
  over the first 10 epochs (what `L1Scheduler` is for: a weight is
  not zeroed before its gradient has had a chance to show it is useful).
- L1 + prox (SGD): the same as the first with `ProximalOptimizer(SGD(0.05, momentum=0.9))`,
  and fine-tuned as above.
- L1 + prox (SGD) from dense: `L1Regularizer` started from the dense
  network, with the recipe of "log-sum + prox (SGD) from dense" below
  unchanged, and fine-tuned as that row is.
- log-sum + prox (SGD): `LogSumRegularizer(l1, epsilon=EPSILON)` on every
  kernel (reweighted L1: each weight's strength `l1·ε/(ε + |w|)` from its
  current value, so large weights are hardly shrunk) with
  `ProximalOptimizer(SGD(0.05, momentum=0.9))`, and fine-tuned as above.
- log-sum + prox (SGD) from dense: the same penalty started from the dense
  network (the dense row's own 60 epochs), the adaptive lasso's recipe
  (Zou 2006): 15 epochs of `ProximalOptimizer(SGD(0.2, momentum=0.9))`
  from the dense weights, then fine-tuned as above for the 5 epochs left:
  60 + 15 + 5 epochs, pruning's budget. Its settings (learning rate,
  epochs) are those chosen on validation splits for the adaptive lasso
  this row replaces, and `EPSILON` was chosen on validation splits too,
  never on the test images.
- group lasso + prox (SGD): `GroupLassoRegularizer(group_axis=0)` on every
  kernel (whole input pixels and whole hidden units drop out), with
  `ProximalOptimizer(SGD(0.05, momentum=0.9))`.
- magnitude pruning + fine-tune: what users do without keras_l1: train
  dense, zero the globally smallest kernel weights to exactly the target
  sparsity, fine-tune 20 epochs with the mask held (re-applied after every
  batch).
- dense: no regularization.

A second table gives, at the middle target, each kernel's sparsity and the
hidden units still alive (a nonzero weight in and out): L1 on a ReLU network
removes whole units, since rescaling a unit's incoming weights by `c` and its
outgoing ones by `1/c` leaves the function unchanged while the penalty of that
unit, minimized over `c`, is `2·sqrt(|in|₁·|out|₁)` — concave in the two
norms, so cheaper at zero than spread thin.

    python benchmarks/bench_digits.py            # ~15 minutes on one core (3 seeds)
    python benchmarks/bench_digits.py --quick    # small network, one target
    # 10 seeds of one method against dense and pruning, ~15 minutes on one core:
    python benchmarks/bench_digits.py --seeds $(seq 0 9) --methods "log-sum + prox (SGD) from dense"
"""

import argparse
import math
import sys

import _common
import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_l1


def load_data(seed: int = 0):
    """Digits scaled to [0, 1], split 75/25 stratified."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)


def build(sizes, regularizer=None, seed: int = 0):
    """An MLP of `sizes`, each kernel regularized by a fresh `regularizer()`."""
    return _common.mlp(sizes, regularizer, seed)


def kernels(model) -> list:
    return [w for w in model.trainable_weights if len(w.shape) == 2]


def sparsity(model) -> float:
    values = [w.numpy() for w in kernels(model)]
    return sum(int(np.sum(v == 0)) for v in values) / sum(v.size for v in values)


def layer_sparsities(model) -> list:
    """The fraction of exactly zero weights of each kernel, input layer first."""
    return [float(np.mean(w.numpy() == 0)) for w in kernels(model)]


def units_alive(model) -> list:
    """Hidden units of each layer with a nonzero incoming and a nonzero outgoing weight.

    A unit without either contributes at most a constant to the next layer:
    its share of the weight budget is spent on nothing.
    """
    values = [w.numpy() != 0 for w in kernels(model)]
    return [
        int(np.sum(incoming.any(axis=0) & outgoing.any(axis=1)))
        for incoming, outgoing in zip(values, values[1:])
    ]


def accuracy(model, x, y) -> float:
    return float(np.mean(model.predict(x, batch_size=512, verbose=0).argmax(axis=1) == y))


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class HoldMask(keras.callbacks.Callback):
    """Re-zeroes the pruned weights after every batch."""

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        for variable, mask in zip(kernels(self.model), self.masks):
            variable.assign(variable * mask)


def fine_tune(source, masks, data, sizes, epochs: int, batch_size: int, seed: int):
    """Copies `source`'s weights into an unregularized MLP, trains it with `masks` held."""
    x_train, _, y_train, _ = data
    model = build(sizes, seed=seed)
    # Trainable weights only: an L1Scheduler leaves its strength factor on the source.
    for variable, value in zip(model.trainable_weights, source.trainable_weights):
        variable.assign(value)
    for variable, mask in zip(kernels(model), masks):
        variable.assign(variable * mask)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[HoldMask(masks)],
        verbose=0,
    )
    return model


def train(
    sizes, regularizer, optimizer, data, epochs: int, batch_size: int, seed: int, callbacks=()
):
    x_train, _, y_train, _ = data
    model = build(sizes, regularizer, seed=seed)
    model.compile(optimizer, LOSS)
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=list(callbacks),
        verbose=0,
    )
    return model


def magnitude_masks(model, target: float) -> list:
    """Masks keeping the globally largest `1 − target` fraction of kernel weights."""
    values = [np.abs(w.numpy()) for w in kernels(model)]
    flat = np.sort(np.concatenate([v.ravel() for v in values]))
    pruned = int(round(target * flat.size))
    threshold = flat[pruned - 1] if pruned else -1.0
    masks = [(v > threshold).astype("float32") for v in values]
    # Ties at the threshold would prune more than asked; keep the count exact.
    return masks


# The log-sum penalty's `epsilon`, chosen on validation splits (80/20 of
# each seed's training data, seeds 0-9), never on the test images.
EPSILON = 1e-3


def from_dense(dense, regularizer, data, sizes, epochs: int, batch_size: int, seed: int):
    """`epochs` of `regularizer()` + prox (SGD) started from the weights of `dense`."""
    x_train, _, y_train, _ = data
    model = build(sizes, regularizer, seed=seed)
    for variable, value in zip(model.trainable_weights, dense.trainable_weights):
        variable.assign(value)
    optimizer = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.2, momentum=0.9))
    model.compile(optimizer, LOSS)
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def search_l1(fit, targets, tolerance: float, low: float, high: float, max_fits: int) -> dict:
    """For each target sparsity, the fitted model whose sparsity first reaches it.

    `fit(l1)` returns a trained model. Sparsity grows with `l1`; the search
    interpolates `log(l1)` linearly in sparsity between the closest points
    evaluated so far (shared by all targets) and stops at a model with
    sparsity in `[target, target + tolerance]` or after `max_fits` fits per
    target, keeping the least sparse model at or above the target.
    """
    points = {}  # l1 -> (sparsity, model)

    def evaluate(l1):
        if l1 not in points:
            model = fit(l1)
            points[l1] = (sparsity(model), model)
        return points[l1][0]

    evaluate(low)
    evaluate(high)
    chosen = {}
    for target in targets:
        for _ in range(max_fits):
            below = [(l1, s) for l1, (s, _) in points.items() if s < target]
            above = [(l1, s) for l1, (s, _) in points.items() if s >= target]
            best = min(above, key=lambda item: item[1], default=None)
            if best is not None and best[1] <= target + tolerance:
                break
            if not below or best is None:
                break
            l1_low, s_low = max(below, key=lambda item: item[0])
            l1_high, s_high = min(above, key=lambda item: item[0])
            # Interpolate in log(l1), but never closer than a quarter of the bracket.
            fraction = (target + tolerance / 2 - s_low) / max(s_high - s_low, 1e-12)
            fraction = min(max(fraction, 0.25), 0.75)
            log_l1 = math.log(l1_low) + fraction * (math.log(l1_high) - math.log(l1_low))
            evaluate(math.exp(log_l1))
        above = [(l1, s) for l1, (s, _) in points.items() if s >= target]
        if above:
            l1, _ = min(above, key=lambda item: item[1])
            chosen[target] = (l1, *points[l1])
    return chosen


LOG_SUM = "log-sum + prox (SGD)"
FROM_DENSE = "log-sum + prox (SGD) from dense"
L1_FROM_DENSE = "L1 + prox (SGD) from dense"
METHODS = (
    "L1 + prox (Adam)",
    "L1 + prox (Adam), 10-epoch warm-up",
    "L1 + prox (SGD)",
    L1_FROM_DENSE,
    LOG_SUM,
    FROM_DENSE,
    "group lasso + prox (SGD)",
)
# Also refit on their support without the penalty, as pruning is (the relaxed lasso).
FINE_TUNED = ("L1 + prox (Adam)", "L1 + prox (SGD)", L1_FROM_DENSE, LOG_SUM, FROM_DENSE)
# Started from the dense network, which spent part of the fine-tuning budget.
STARTED_FROM_DENSE = (L1_FROM_DENSE, FROM_DENSE)
# Where the search for `l1` starts: the log-sum slope `l1·ε/(ε + |w|)` is a
# fraction of `l1` for a typical weight.
BRACKETS = {LOG_SUM: (1e-4, 1e-1), FROM_DENSE: (1e-4, 1e-1)}


def _fitters(
    sizes, data, dense, epochs: int, from_dense_epochs: int, batch_size: int, seed: int
) -> dict:
    """method -> `fit(l1)` returning a trained model."""

    def fit(regularizer, optimizer, callbacks=lambda: ()):
        return lambda l1: train(
            sizes,
            lambda: regularizer(l1),
            optimizer(),
            data,
            epochs,
            batch_size,
            seed,
            callbacks(),
        )

    def fit_from_dense(regularizer):
        return lambda l1: from_dense(
            dense, lambda: regularizer(l1), data, sizes, from_dense_epochs, batch_size, seed
        )

    return {
        "L1 + prox (Adam)": fit(
            keras_l1.L1Regularizer,
            lambda: keras_l1.ProximalOptimizer(keras.optimizers.Adam(1e-3)),
        ),
        "L1 + prox (Adam), 10-epoch warm-up": fit(
            keras_l1.L1Regularizer,
            lambda: keras_l1.ProximalOptimizer(keras.optimizers.Adam(1e-3)),
            lambda: [keras_l1.L1Scheduler(warmup_epochs=10)],
        ),
        "L1 + prox (SGD)": fit(
            keras_l1.L1Regularizer,
            lambda: keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.05, momentum=0.9)),
        ),
        LOG_SUM: fit(
            lambda l1: keras_l1.LogSumRegularizer(l1, EPSILON),
            lambda: keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.05, momentum=0.9)),
        ),
        L1_FROM_DENSE: fit_from_dense(keras_l1.L1Regularizer),
        FROM_DENSE: fit_from_dense(lambda l1: keras_l1.LogSumRegularizer(l1, EPSILON)),
        "group lasso + prox (SGD)": fit(
            lambda l1: keras_l1.GroupLassoRegularizer(l1, group_axis=0),
            lambda: keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.05, momentum=0.9)),
        ),
    }


def run_seed(
    sizes,
    targets,
    epochs: int,
    fine_tune_epochs: int,
    from_dense_epochs: int,
    batch_size: int,
    tolerance: float,
    max_fits: int,
    methods,
    seed: int,
) -> list:
    """One dict per (method, target) for one seed (split and initialization)."""
    data = load_data(seed)
    _, x_test, _, y_test = data

    def record(method, target, model, l1=None):
        row = {
            "method": method,
            "target": target,
            "seed": seed,
            "sparsity": sparsity(model),
            "accuracy": accuracy(model, x_test, y_test),
            "l1": l1,
            "layers": layer_sparsities(model),
            "units": units_alive(model),
        }
        # Progress on stderr: a long run that is stopped still says something.
        print(
            f"seed {seed}: {method} at {target:.0%}: accuracy {row['accuracy']:.4f}, "
            f"sparsity {row['sparsity']:.4f}",
            file=sys.stderr,
            flush=True,
        )
        return row

    dense = train(sizes, None, keras.optimizers.Adam(1e-3), data, epochs, batch_size, seed)
    results = [record("dense", 0.0, dense)]
    fitters = _fitters(sizes, data, dense, epochs, from_dense_epochs, batch_size, seed)
    for method in methods:
        low, high = BRACKETS.get(method, (1e-5, 1e-2))
        found = search_l1(fitters[method], targets, tolerance, low, high, max_fits)
        # Every fine-tuned row trains as long as pruning: the row started from
        # the dense network spent `from_dense_epochs` of that budget.
        refit_epochs = fine_tune_epochs - (from_dense_epochs if method in STARTED_FROM_DENSE else 0)
        for target, (l1, _, model) in found.items():
            results.append(record(method, target, model, l1))
            if method in FINE_TUNED:
                # The relaxed lasso: L1 picks the support, the refit removes its shrinkage.
                masks = [(w.numpy() != 0).astype("float32") for w in kernels(model)]
                tuned = fine_tune(model, masks, data, sizes, refit_epochs, batch_size, seed)
                results.append(record(f"{method}, fine-tuned", target, tuned, l1))
    for target in targets:
        masks = magnitude_masks(dense, target)
        pruned = fine_tune(dense, masks, data, sizes, fine_tune_epochs, batch_size, seed)
        results.append(record("magnitude pruning + fine-tune", target, pruned))
    return results


def run(
    sizes=(64, 256, 128, 10),
    targets=(0.8, 0.9, 0.95),
    epochs: int = 60,
    fine_tune_epochs: int = 20,
    from_dense_epochs: int = 15,
    batch_size: int = 64,
    tolerance: float = 0.01,
    max_fits: int = 6,
    methods=METHODS,
    seeds=(0, 1, 2),
) -> list:
    """One dict per (method, target, seed): sparsity, accuracy, l1."""
    results = []
    for seed in seeds:
        results += run_seed(
            sizes,
            targets,
            epochs,
            fine_tune_epochs,
            from_dense_epochs,
            batch_size,
            tolerance,
            max_fits,
            methods,
            seed,
        )
    return results


def summary(results) -> dict:
    """(method, target) -> mean/std accuracy, mean sparsity and seeds reached."""
    groups = {}
    for r in results:
        groups.setdefault((r["method"], r["target"]), []).append(r)
    out = {}
    for key, rows in groups.items():
        accuracies = np.array([r["accuracy"] for r in rows])
        out[key] = {
            "accuracy": float(accuracies.mean()),
            "std": float(accuracies.std()),
            "sparsity": float(np.mean([r["sparsity"] for r in rows])),
            "seeds": len(rows),
        }
    return out


def table(results) -> str:
    stats = summary(results)
    seeds = len({r["seed"] for r in results})
    dense = stats[("dense", 0.0)]
    targets = sorted({r["target"] for r in results if r["method"] != "dense"})
    methods = list(dict.fromkeys(r["method"] for r in results if r["method"] != "dense"))
    headers = ["method"] + [f"{t:.0%} sparsity target" for t in targets]
    rows = [["dense", f"{dense['accuracy']:.2%} ± {dense['std']:.2%}"] + [""] * (len(targets) - 1)]
    for method in methods:
        cells = [method]
        for target in targets:
            entry = stats.get((method, target))
            if entry is None:
                cells.append("not reached")
                continue
            delta = 100 * (entry["accuracy"] - dense["accuracy"])
            cell = (
                f"{entry['accuracy']:.2%} ± {entry['std']:.2%} ({delta:+.2f} pt; "
                f"sparsity {entry['sparsity']:.1%}"
            )
            if entry["seeds"] < seeds:
                cell += f"; reached in {entry['seeds']}/{seeds} seeds"
            cells.append(cell + ")")
        rows.append(cells)
    return _common.markdown_table(headers, rows)


def layer_table(results, target: float) -> str:
    """Per-layer sparsity and hidden units alive at `target`, means over seeds."""
    rows = []
    methods = dict.fromkeys(r["method"] for r in results)
    for method in methods:
        group = [r for r in results if r["method"] == method and r["target"] in (target, 0.0)]
        if not group:
            continue
        layers = np.mean([r["layers"] for r in group], axis=0)
        units = np.mean([r["units"] for r in group], axis=0)
        rows.append(
            [
                method,
                " / ".join(f"{value:.1%}" for value in layers),
                " / ".join(f"{value:.0f}" for value in units),
            ]
        )
    return _common.markdown_table(
        ["method", f"kernel sparsity by layer at {target:.0%}", "hidden units alive"], rows
    )


QUICK = {
    "sizes": (64, 32, 10),
    "targets": (0.5,),
    "epochs": 6,
    "fine_tune_epochs": 2,
    "from_dense_epochs": 1,
    "tolerance": 0.1,
    "max_fits": 2,
    "methods": ("L1 + prox (Adam)", FROM_DENSE),
    "seeds": (0,),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small network, for a smoke run")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="*",
        default=list(METHODS),
        choices=list(METHODS),
        help="regularized methods to run (dense and pruning always run)",
    )
    args = parser.parse_args(argv)
    print(f"machine: {_common.machine()}")
    print(f"load average at start: {_common.load_average()}")
    options = (
        dict(QUICK) if args.quick else {"seeds": tuple(args.seeds), "methods": tuple(args.methods)}
    )
    results = run(**options)
    print(table(results))
    targets = sorted({r["target"] for r in results if r["method"] != "dense"})
    print()
    print(layer_table(results, targets[len(targets) // 2]))
    print(f"load average at end: {_common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
