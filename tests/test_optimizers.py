
import keras
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
from sklearn.linear_model import Lasso
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model import MultiTaskLasso

import keras_l1


def standardized(x, y):
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype("float32"), y.astype("float32")


@pytest.fixture(scope="module")
def diabetes():
    x, y = load_diabetes(return_X_y=True)
    return standardized(x, (y - y.mean()) / y.std())


def fit_full_batch(model, x, y, steps, jit_compile=True, optimizer=None, loss="mse"):
    """Full-batch training for `steps` steps in few `fit` epochs (fast)."""
    model.compile(optimizer, loss, jit_compile=jit_compile)
    repeats = 250
    tiled_x = np.tile(x, (repeats, 1))
    tiled_y = np.tile(y, (repeats, 1))
    model.fit(
        tiled_x,
        tiled_y,
        batch_size=len(x),
        epochs=steps // repeats,
        shuffle=False,
        verbose=0,
    )
    return keras.ops.convert_to_numpy(model.layers[-1].kernel)


def linear_model(features, outputs, regularizer):
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(outputs, use_bias=False, kernel_regularizer=regularizer),
        ]
    )


def assert_same_solution(kernel, reference, atol):
    kernel, reference = np.ravel(kernel), np.ravel(reference)
    np.testing.assert_array_equal(kernel == 0, reference == 0)
    np.testing.assert_allclose(kernel, reference, atol=atol)


class TestAgainstScikitLearn:
    """ProximalOptimizer reaches the exact optima that scikit-learn computes."""

    @pytest.mark.parametrize(
        "alpha, optimizer, steps, jit",
        [
            (0.02, lambda: keras.optimizers.SGD(0.1), 2000, True),
            (0.05, lambda: keras.optimizers.SGD(0.1), 2000, False),
            (0.2, lambda: keras.optimizers.SGD(0.1), 1000, True),
            (0.05, lambda: keras.optimizers.Adam(0.01), 3000, True),
            (0.2, lambda: keras.optimizers.Adam(0.01), 3000, True),
        ],
    )
    def test_lasso(self, diabetes, alpha, optimizer, steps, jit):
        # Keras's MSE is (1/n)‖y − Xw‖², scikit-learn's Lasso (1/(2n))‖y − Xw‖²
        # + alpha‖w‖₁: the same objective when l1 = 2 · alpha.
        x, y = diabetes
        reference = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000)
        reference = reference.fit(x.astype(np.float64), y).coef_
        model = linear_model(10, 1, keras_l1.L1Regularizer(2 * alpha))
        kernel = fit_full_batch(
            model, x, y[:, None], steps, jit, keras_l1.ProximalOptimizer(optimizer())
        )
        assert (reference == 0).sum() >= 2
        assert_same_solution(kernel, reference, atol=2e-5)

    def test_keras_own_l1_becomes_exact(self, diabetes):
        x, y = diabetes
        reference = Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100_000)
        reference = reference.fit(x.astype(np.float64), y).coef_
        model = linear_model(10, 1, keras.regularizers.L1(0.1))
        kernel = fit_full_batch(
            model, x, y[:, None], 2000, True, keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1))
        )
        assert_same_solution(kernel, reference, atol=2e-5)
        # The layer keeps Keras's own regularizer (and so its saved config).
        assert type(model.layers[0].kernel_regularizer) is keras.regularizers.L1

    def test_plain_keras_l1_finds_no_zeros(self, diabetes):
        x, y = diabetes
        model = linear_model(10, 1, keras.regularizers.L1(0.1))
        kernel = fit_full_batch(model, x, y[:, None], 2000, True, keras.optimizers.SGD(0.1))
        assert (kernel == 0).sum() == 0

    @pytest.mark.parametrize("l1, optimizer", [(0.01, "adam"), (0.05, "sgd")], ids=["adam", "sgd"])
    def test_logistic_regression(self, l1, optimizer):
        # Keras's binary cross-entropy is the mean loss, scikit-learn minimizes
        # C·Σ loss + ‖w‖₁: the same argmin when C = 1 / (n · l1). Ten weakly
        # correlated columns keep the problem well conditioned (fast to solve).
        x, y = load_breast_cancer(return_X_y=True)
        x, y = standardized(x[:, [0, 1, 4, 8, 9, 11, 14, 18, 19, 21]], y)
        reference = LogisticRegression(
            l1_ratio=1.0,
            C=1 / (len(x) * l1),
            solver="liblinear",
            fit_intercept=False,
            tol=1e-10,
            max_iter=100_000,
        ).fit(x.astype(np.float64), y)
        inner = keras.optimizers.Adam(0.02) if optimizer == "adam" else keras.optimizers.SGD(0.5)
        model = linear_model(10, 1, keras_l1.L1Regularizer(l1))
        kernel = fit_full_batch(
            model,
            x,
            y[:, None],
            4000,
            True,
            keras_l1.ProximalOptimizer(inner),
            keras.losses.BinaryCrossentropy(from_logits=True),
        )
        assert (reference.coef_ == 0).sum() >= 3
        assert_same_solution(kernel, reference.coef_, atol=5e-5)

    @pytest.mark.parametrize("alpha, l1_ratio", [(0.05, 0.5), (0.2, 0.8)])
    def test_elastic_net(self, diabetes, alpha, l1_ratio):
        # scikit-learn: (1/(2n))‖y − Xw‖² + α·ρ‖w‖₁ + ½α(1 − ρ)‖w‖²; times 2 this
        # is Keras's MSE with l1 = 2αρ and l2 = α(1 − ρ).
        x, y = diabetes
        reference = ElasticNet(
            alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False, tol=1e-12, max_iter=100_000
        ).fit(x.astype(np.float64), y)
        regularizer = keras_l1.ElasticNetRegularizer(
            l1=2 * alpha * l1_ratio, l2=alpha * (1 - l1_ratio)
        )
        model = linear_model(10, 1, regularizer)
        kernel = fit_full_batch(
            model, x, y[:, None], 2000, True, keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1))
        )
        assert_same_solution(kernel, reference.coef_, atol=2e-5)

    @pytest.mark.parametrize("alpha", [0.05, 0.15])
    def test_group_lasso_is_multitask_lasso(self, diabetes, alpha):
        # scikit-learn: (1/(2n))‖Y − XW‖²_F + α Σ_j ‖W_j‖₂ over features j. Keras's
        # MSE averages over n·k entries, so times 2/k: l1·sqrt(k) = 2α/k.
        x, y = diabetes
        rng = np.random.default_rng(0)
        targets = np.stack([y, y * 0.5 + 0.3 * rng.normal(size=len(y)), x[:, 2]], axis=1)
        targets = targets.astype("float32")
        k = targets.shape[1]
        reference = MultiTaskLasso(
            alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000
        ).fit(x.astype(np.float64), targets)
        model = linear_model(10, k, keras_l1.GroupLassoRegularizer(2 * alpha / k**1.5, 0))
        kernel = fit_full_batch(
            model, x, targets, 3000, True, keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.2))
        )
        reference_kernel = reference.coef_.T
        assert (np.all(reference_kernel == 0, axis=1)).sum() >= 1
        assert_same_solution(kernel, reference_kernel, atol=5e-5)
