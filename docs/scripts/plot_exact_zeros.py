"""Draws docs/img/exact_zeros.png: plain Keras L1 vs keras_l1 on the diabetes data.

Both runs fit the same linear model, `(1/n)‖y − Xw‖² + l1‖w‖₁` on the standardized
diabetes data, by full-batch gradient descent with the same learning rate, starting
from the least-squares fit (every weight non-zero). The only
difference is the optimizer: plain `SGD` with Keras's `L1` (a subgradient step) vs
`keras_l1.ProximalOptimizer(SGD)` with `keras_l1.L1Regularizer` (a proximal step).
The reference is scikit-learn's `Lasso(alpha=l1 / 2)`, the same objective halved.

Run from the repository root:

    python docs/scripts/plot_exact_zeros.py            # writes docs/img/exact_zeros.png
    python docs/scripts/plot_exact_zeros.py -o out.png
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.linear_model import Lasso  # noqa: E402

import keras_l1  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

L1 = 0.1
LEARNING_RATE = 0.1
STEPS = 300
DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), os.pardir, "img", "exact_zeros.png")


def load_data():
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = (y - y.mean()) / y.std()
    return x.astype("float32"), y.astype("float32")[:, None]


class _KernelRecorder(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.kernels = []

    def on_train_batch_end(self, batch, logs=None):
        self.kernels.append(keras.ops.convert_to_numpy(self.model.layers[0].kernel).ravel())


def trajectory(x, y, proximal: bool) -> np.ndarray:
    """Kernel after each full-batch gradient step, shape `(STEPS, features)`."""
    keras.utils.set_random_seed(0)
    if proximal:
        regularizer = keras_l1.L1Regularizer(L1)
        optimizer = keras_l1.ProximalOptimizer(keras.optimizers.SGD(LEARNING_RATE))
    else:
        regularizer = keras.regularizers.L1(L1)
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            keras.layers.Dense(1, kernel_regularizer=regularizer),
        ]
    )
    least_squares = np.linalg.lstsq(x, y, rcond=None)[0]
    model.layers[0].kernel.assign(least_squares)
    model.compile(optimizer, "mse")
    recorder = _KernelRecorder()
    # One epoch of STEPS copies of the data, one copy per batch: STEPS full-batch
    # gradient steps without paying Keras's per-epoch overhead STEPS times.
    n = len(x)
    model.fit(
        np.tile(x, (STEPS, 1)),
        np.tile(y, (STEPS, 1)),
        batch_size=n,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[recorder],
    )
    return np.array(recorder.kernels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help="PNG file to write")
    args = parser.parse_args(argv)

    x, y = load_data()
    lasso = Lasso(alpha=L1 / 2, tol=1e-12, max_iter=100_000).fit(x, y.ravel())
    zero_at_optimum = np.flatnonzero(lasso.coef_ == 0)
    plain = trajectory(x, y, proximal=False)
    proximal = trajectory(x, y, proximal=True)
    steps = np.arange(1, STEPS + 1)

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    # The largest |w_j| among the weights the optimum sets to zero: 0 means all are.
    plain_largest = np.abs(plain[:, zero_at_optimum]).max(axis=1)
    proximal_largest = np.abs(proximal[:, zero_at_optimum]).max(axis=1)
    left.plot(steps, plain_largest, "--", lw=1.5, label="Keras L1 + SGD (subgradient)")
    alive = proximal_largest > 0
    left.plot(
        steps[alive], proximal_largest[alive], "-", lw=2, label="keras_l1 ProximalOptimizer(SGD)"
    )
    if not alive.all():
        last = int(np.argmin(alive)) - 1
        left.plot(steps[last], proximal_largest[last], "x", color="C1", ms=10, mew=2)
        left.annotate(
            f"exactly 0 from step {last + 2} on",
            (steps[last], proximal_largest[last]),
            xytext=(12, -4),
            textcoords="offset points",
            color="C1",
        )
    left.set_yscale("log")
    left.set_xlabel("gradient step")
    left.set_ylabel("max |w_j| over those weights")
    left.set_title(
        f"the {len(zero_at_optimum)} weights that are 0 at the Lasso optimum", fontsize=10
    )
    left.legend(loc="upper right")

    right.plot(steps, (plain == 0).sum(axis=1), "--", lw=2, label="Keras L1 + SGD (subgradient)")
    right.plot(
        steps, (proximal == 0).sum(axis=1), "-", lw=2, label="keras_l1 ProximalOptimizer(SGD)"
    )
    right.axhline(
        len(zero_at_optimum), color="gray", ls=":", label="scikit-learn Lasso(alpha=l1/2)"
    )
    right.set_ylim(-0.3, x.shape[1] + 0.3)
    right.set_xlabel("gradient step")
    right.set_ylabel("weights exactly == 0")
    right.set_title(f"exact zeros among {x.shape[1]} weights (diabetes, l1={L1})", fontsize=10)
    right.legend(loc="center right")

    output = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    figure.savefig(output, dpi=110)
    gap = np.abs(proximal[-1] - lasso.coef_).max()
    print(
        f"wrote {output}: exact zeros plain={int((plain[-1] == 0).sum())} "
        f"proximal={int((proximal[-1] == 0).sum())} lasso={len(zero_at_optimum)}; "
        f"max |w_proximal - w_lasso| = {gap:.1e}"
    )


if __name__ == "__main__":
    main()
