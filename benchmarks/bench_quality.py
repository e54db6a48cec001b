"""Quality of the optimum on a synthetic sparse regression, against scikit-learn's Lasso.

Data: `n` samples, `p` standardized Gaussian features, `k` of them with true
coefficients ±U(1, 3), Gaussian noise. Every method minimizes the same
objective, `(1/(2n))‖y − Xw − b‖² + alpha·‖w‖₁` (scikit-learn's scaling;
Keras's mean squared error is `(1/n)‖·‖²`, so the Keras models use
`l1 = 2·alpha`). Reported per method: the selected set (exact non-zeros)
against the true support (precision, recall, F1), whether it equals Lasso's
support, the largest coefficient difference to Lasso, the relative error to
the true coefficients, and the objective relative to Lasso's.

    python benchmarks/bench_quality.py            # n=500, p=1000, k=20
    python benchmarks/bench_quality.py --quick    # small problem, seconds
"""

import argparse
import sys
import time

import _common
import keras
import numpy as np
import tensorflow as tf
from sklearn.linear_model import Lasso
from threadpoolctl import threadpool_limits

import keras_l1


def make_data(n: int = 500, p: int = 1000, k: int = 20, noise: float = 0.5, seed: int = 0):
    """Returns `(x, y, true_coef)`; `x` is standardized, float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    coef = np.zeros(p)
    support = rng.choice(p, size=k, replace=False)
    coef[support] = rng.choice([-1.0, 1.0], size=k) * rng.uniform(1.0, 3.0, size=k)
    y = x @ coef + noise * rng.standard_normal(n)
    return x, y, coef


def objective(x, y, coef, intercept, alpha: float) -> float:
    """scikit-learn's Lasso objective, in float64."""
    residual = y - x @ coef - intercept
    return float(residual @ residual / (2 * len(y)) + alpha * np.abs(coef).sum())


def sgd_learning_rate(x) -> float:
    """`1/L` for the Keras loss `(1/n)‖y − Xw‖²`, whose gradient is `L`-Lipschitz."""
    # The bias is a feature of ones; on centred data it adds 1 to the spectrum.
    return 1.0 / (2.0 * max(np.linalg.eigvalsh(x.T @ x / len(x)).max(), 1.0))


def linear_model(regularizer, optimizer, p: int, steps_per_execution: int):
    """A compiled `Dense(1)` on `p` inputs, kernel regularized, zero-initialized."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((p,)),
            keras.layers.Dense(1, kernel_initializer="zeros", kernel_regularizer=regularizer),
        ]
    )
    model.compile(optimizer, "mse", steps_per_execution=steps_per_execution)
    return model


def full_batch(x, y):
    """An endless dataset of the whole training set as one batch."""
    batch = (x.astype("float32"), y.astype("float32")[:, None])
    return tf.data.Dataset.from_tensors(batch).repeat()


def fit_full_batch(model, x, y, steps: int) -> None:
    """`steps` full-batch gradient steps."""
    model.fit(full_batch(x, y), steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)


def methods(x, alpha: float, steps: int, adam_steps: int, adam_learning_rate: float) -> dict:
    """name -> (regularizer factory, optimizer factory, steps) for each Keras method."""
    l1 = 2 * alpha
    lr = sgd_learning_rate(x)
    return {
        "Keras L1 + Adam": (
            lambda: keras.regularizers.L1(l1),
            lambda: keras.optimizers.Adam(adam_learning_rate),
            adam_steps,
        ),
        "L1Regularizer + ProximalOptimizer(SGD)": (
            lambda: keras_l1.L1Regularizer(l1),
            lambda: keras_l1.ProximalOptimizer(keras.optimizers.SGD(lr)),
            steps,
        ),
        "L1Regularizer + ProximalOptimizer(Adam)": (
            lambda: keras_l1.L1Regularizer(l1),
            lambda: keras_l1.ProximalOptimizer(keras.optimizers.Adam(adam_learning_rate)),
            adam_steps,
        ),
    }


def scores(coef, intercept, true_coef, reference, x, y, alpha: float) -> dict:
    """Support recovery and errors of one solution."""
    selected = set(np.flatnonzero(coef).tolist())
    truth = set(np.flatnonzero(true_coef).tolist())
    hits = len(selected & truth)
    precision = hits / len(selected) if selected else 0.0
    recall = hits / len(truth)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    reference_objective = objective(x, y, reference.coef_, reference.intercept_, alpha)
    return {
        "selected": len(selected),
        "exact_zeros": int(np.sum(coef == 0)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "same_support_as_lasso": selected == set(np.flatnonzero(reference.coef_).tolist()),
        "max_diff_to_lasso": float(np.abs(coef - reference.coef_).max()),
        "relative_coef_error": float(np.linalg.norm(coef - true_coef) / np.linalg.norm(true_coef)),
        "objective_vs_lasso": objective(x, y, coef, intercept, alpha) / reference_objective - 1,
    }


def run(
    n: int = 500,
    p: int = 1000,
    k: int = 20,
    noise: float = 0.5,
    alpha: float = 0.1,
    steps: int = 2000,
    adam_steps: int = 4000,
    adam_learning_rate: float = 0.01,
    seed: int = 0,
) -> list:
    """Fits every method on one data set; returns one dict of scores each."""
    x, y, true_coef = make_data(n, p, k, noise, seed)
    start = time.perf_counter()
    # With TensorFlow loaded, multithreaded OpenBLAS slows scikit-learn's
    # coordinate descent down ~300-fold here (see bench_walltime.py).
    with threadpool_limits(limits=1, user_api="blas"):
        reference = Lasso(alpha=alpha, tol=1e-12, max_iter=1_000_000).fit(x, y)
    results = [
        {
            "method": "scikit-learn Lasso",
            "steps": int(reference.n_iter_),
            "seconds": time.perf_counter() - start,
            **scores(reference.coef_, reference.intercept_, true_coef, reference, x, y, alpha),
        }
    ]
    for name, (regularizer, optimizer, method_steps) in methods(
        x, alpha, steps, adam_steps, adam_learning_rate
    ).items():
        start = time.perf_counter()
        model = linear_model(regularizer(), optimizer(), p, steps_per_execution=100)
        fit_full_batch(model, x, y, method_steps)
        kernel, bias = (w.numpy().astype(np.float64) for w in model.layers[0].weights)
        results.append(
            {
                "method": name,
                "steps": method_steps,
                "seconds": time.perf_counter() - start,
                **scores(kernel.ravel(), float(bias[0]), true_coef, reference, x, y, alpha),
            }
        )
    return results


def table(results) -> str:
    headers = [
        "method",
        "selected",
        "exact zeros",
        "precision",
        "recall",
        "F1",
        "same support as Lasso",
        "max abs diff to Lasso",
        "‖w − w_true‖/‖w_true‖",
        "objective / Lasso's − 1",
        "steps (Lasso: CD epochs)",
    ]
    rows = [
        [
            r["method"],
            r["selected"],
            r["exact_zeros"],
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            f"{r['f1']:.3f}",
            "yes" if r["same_support_as_lasso"] else "no",
            f"{r['max_diff_to_lasso']:.1e}",
            f"{r['relative_coef_error']:.4f}",
            f"{r['objective_vs_lasso']:.1e}",
            r["steps"],
        ]
        for r in results
    ]
    return _common.markdown_table(headers, rows)


QUICK = {"n": 100, "p": 50, "k": 5, "alpha": 0.1, "steps": 500, "adam_steps": 1500}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problem, for a smoke run")
    args = parser.parse_args(argv)
    print(f"machine: {_common.machine()}")
    results = run(**(QUICK if args.quick else {}))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
