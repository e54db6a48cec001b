import gc
import json
import re
import warnings

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
    # torch.compile spends ~20 s compiling each of these tiny models; eager is
    # faster there, and XLA (TensorFlow, JAX) is still tested with jit on.
    if keras.backend.backend() == "torch":
        jit_compile = False
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

    @pytest.mark.parametrize(
        "optimizer, steps, jit",
        [
            (lambda: keras.optimizers.SGD(0.1), 2000, True),
            (lambda: keras.optimizers.SGD(0.1), 2000, False),
            (lambda: keras.optimizers.Adam(0.01), 3000, True),
        ],
        ids=["sgd-jit", "sgd", "adam-jit"],
    )
    def test_log_sum_reaches_a_reweighted_lasso_fixed_point(self, diabetes, optimizer, steps, jit):
        # The log-sum problem is not convex, but its stationary points are
        # exactly the solutions of the Lasso each reweights: every weight's
        # strength l1·ε/(ε + |w_j|), taken at that point. scikit-learn solves
        # that weighted Lasso (columns divided by the weights) and must land
        # back on keras_l1's weights, zeros included.
        x, y = diabetes
        l1, epsilon = 0.1, 0.05
        model = linear_model(10, 1, keras_l1.LogSumRegularizer(l1, epsilon))
        kernel = fit_full_batch(
            model, x, y[:, None], steps, jit, keras_l1.ProximalOptimizer(optimizer())
        ).ravel()
        weights = epsilon / (epsilon + np.abs(kernel.astype(np.float64)))
        reweighted = Lasso(alpha=l1 / 2, fit_intercept=False, tol=1e-12, max_iter=100_000)
        reference = reweighted.fit(x.astype(np.float64) / weights, y).coef_ / weights
        assert (reference == 0).sum() >= 2
        assert_same_solution(kernel, reference, atol=5e-5)
        # Less biased than L1: the survivors are larger than the Lasso's.
        lasso = Lasso(alpha=l1 / 2, fit_intercept=False, tol=1e-12, max_iter=100_000)
        lasso = lasso.fit(x.astype(np.float64), y).coef_
        assert np.abs(kernel).sum() > np.abs(lasso).sum()


def regularized_variable(value, regularizer):
    variable = keras.Variable(np.asarray(value, "float32"))
    variable.regularizer = regularizer
    return variable


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def apply_gradients(optimizer, grads, variables, scale=1.0):
    """Applies data gradients `grads` as `fit` would: plus each penalty's gradient."""
    total = []
    for grad, variable in zip(grads, variables):
        regularizer = getattr(variable, "regularizer", None)
        if regularizer is not None:
            grad = grad + scale * numpy(regularizer.gradient(numpy(variable)))
        # Keras's PyTorch optimizers take tensors, not NumPy arrays.
        total.append(keras.ops.convert_to_tensor(np.asarray(grad, "float32")))
    optimizer.apply(total, variables)


class TestProximalOptimizer:
    def test_sgd_step_follows_the_schedule(self):
        schedule = keras.optimizers.schedules.ExponentialDecay(0.5, decay_steps=1, decay_rate=0.5)
        optimizer = keras_l1.ProximalOptimizer(keras.optimizers.SGD(schedule))
        w0 = np.array([1.0, -0.25, 0.2, -2.0], "float32")
        g = np.array([0.2, 0.0, -0.4, 1.0], "float32")
        variable = regularized_variable(w0, keras_l1.L1Regularizer(0.4))
        expected = w0
        for lr in (0.5, 0.25):
            apply_gradients(optimizer, [g], [variable])
            moved = expected - lr * g
            expected = np.sign(moved) * np.maximum(np.abs(moved) - lr * 0.4, 0)
            np.testing.assert_allclose(numpy(variable), expected, rtol=1e-6)
        assert (numpy(variable) == 0).sum() == 1

    def test_adam_threshold_is_per_coordinate(self):
        optimizer = keras_l1.ProximalOptimizer(keras.optimizers.Adam(0.1, epsilon=1e-7))
        w0 = np.array([1.0, -0.05, 0.5], "float32")
        g = np.array([0.5, 0.01, -2.0], "float32")
        variable = regularized_variable(w0, keras_l1.L1Regularizer(0.3))
        apply_gradients(optimizer, [g], [variable])
        # One Adam step from zero state: m = 0.1 g, v = 0.001 g², bias-corrected
        # alpha = lr·sqrt(1 − β₂)/(1 − β₁), step = alpha/(sqrt(v) + ε).
        m, v = 0.1 * g, 0.001 * g.astype(np.float64) ** 2
        alpha = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)
        step = alpha / (np.sqrt(v) + 1e-7)
        moved = w0 - step * m
        expected = np.sign(moved) * np.maximum(np.abs(moved) - step * 0.3, 0)
        # float32 rounds 1 − β₂ to 9.99987e-4, hence the tolerance.
        np.testing.assert_allclose(numpy(variable), expected, rtol=1e-4, atol=1e-7)

    def test_momentum_scales_the_threshold(self, diabetes):
        x, y = diabetes
        reference = Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100_000)
        reference = reference.fit(x.astype(np.float64), y).coef_
        model = linear_model(10, 1, keras_l1.L1Regularizer(0.1))
        inner = keras.optimizers.SGD(0.02, momentum=0.8)
        kernel = fit_full_batch(model, x, y[:, None], 1500, True, keras_l1.ProximalOptimizer(inner))
        assert_same_solution(kernel, reference, atol=2e-5)

    @pytest.mark.parametrize("name", ["rmsprop", "adagrad", "adamax", "adamw"])
    def test_other_adaptive_optimizers_reach_the_optimum(self, diabetes, name):
        x, y = diabetes
        reference = Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100_000)
        reference = reference.fit(x.astype(np.float64), y).coef_
        inner = {
            "rmsprop": keras.optimizers.RMSprop(0.003),
            "adagrad": keras.optimizers.Adagrad(0.3),
            "adamax": keras.optimizers.Adamax(0.02),
            "adamw": keras.optimizers.AdamW(0.01, weight_decay=0.0),
        }[name]
        model = linear_model(10, 1, keras_l1.L1Regularizer(0.1))
        kernel = fit_full_batch(model, x, y[:, None], 3000, True, keras_l1.ProximalOptimizer(inner))
        assert_same_solution(kernel, reference, atol=1e-4)

    def test_prox_runs_only_on_real_updates_with_gradient_accumulation(self):
        inner = keras.optimizers.SGD(0.5, gradient_accumulation_steps=2)
        optimizer = keras_l1.ProximalOptimizer(inner)
        w0 = np.array([0.1, -1.0], "float32")
        variable = regularized_variable(w0, keras_l1.L1Regularizer(0.4))
        apply_gradients(optimizer, [np.array([0.0, 0.2], "float32")], [variable])
        np.testing.assert_array_equal(numpy(variable), w0)
        apply_gradients(optimizer, [np.array([0.0, 0.4], "float32")], [variable])
        moved = w0 - 0.5 * np.array([0.0, 0.3], "float32")
        expected = np.sign(moved) * np.maximum(np.abs(moved) - 0.5 * 0.4, 0)
        np.testing.assert_allclose(numpy(variable), expected, rtol=1e-6)
        assert numpy(variable)[0] == 0

    # Keras's LossScaleOptimizer cannot `apply` eagerly on JAX (its stateful
    # `cond` leaks tracers, with or without keras_l1); on JAX the same skip
    # is tested through `fit` in tests/test_mixed_precision.py.
    @pytest.mark.backends("tensorflow", "torch")
    def test_loss_scale_optimizer_skips_prox_on_non_finite_gradients(self):
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.5))
        )
        w0 = np.array([0.1, -1.0], "float32")
        variable = regularized_variable(w0, keras_l1.L1Regularizer(0.4))
        apply_gradients(optimizer, [np.array([np.inf, 0.0], "float32")], [variable])
        np.testing.assert_array_equal(numpy(variable), w0)
        scale = float(numpy(optimizer.dynamic_scale))
        apply_gradients(optimizer, [np.array([0.0, 0.0], "float32")], [variable], scale)
        np.testing.assert_allclose(numpy(variable), [0.0, -0.8], rtol=1e-6)

    def test_unregularized_variables_are_plain_updates(self):
        optimizer = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.5))
        variable = keras.Variable(np.array([0.1, -1.0], "float32"))
        apply_gradients(optimizer, [np.array([0.1, 0.1], "float32")], [variable])
        np.testing.assert_allclose(numpy(variable), [0.05, -1.05], rtol=1e-6)

    @pytest.mark.parametrize("run_eagerly", [True, False])
    def test_penalty_counted_once_and_reported_in_loss(self, run_eagerly):
        # One full-batch step from known weights: w1 = prox(w0 − lr·∇data),
        # whether the loss was traced before the optimizer was built or not.
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 3)).astype("float32")
        y = rng.normal(size=(16, 1)).astype("float32")
        w0 = np.array([[0.5], [-0.02], [0.3]], "float32")
        model = linear_model(3, 1, keras_l1.L1Regularizer(0.2))
        model.layers[0].kernel.assign(w0)
        model.compile(
            keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse", run_eagerly=run_eagerly
        )
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        w = w0.astype(np.float64)
        losses = []
        for _ in range(2):
            residual = x @ w - y
            losses.append(np.mean(residual**2) + 0.2 * np.abs(w).sum())
            moved = w - 0.1 * (2 / 16) * x.T @ residual
            w = np.sign(moved) * np.maximum(np.abs(moved) - 0.1 * 0.2, 0)
        np.testing.assert_allclose(numpy(model.layers[0].kernel), w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)

    def test_unsupported_optimizer_is_rejected(self):
        message = (
            "Invalid value for argument `optimizer`: expected one of SGD, Adam, AdamW, "
            "Adamax, RMSprop, Adagrad (no exact proximal step is known for others). "
            "Received: optimizer='nadam'"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            keras_l1.ProximalOptimizer("nadam")

    def test_accepts_name_instance_and_config(self):
        by_name = keras_l1.ProximalOptimizer("adam")
        by_config = keras_l1.ProximalOptimizer({"class_name": "SGD", "config": {"momentum": 0.5}})
        # On PyTorch Keras returns its torch subclass of Adam.
        assert isinstance(by_name.inner_optimizer, keras.optimizers.Adam)
        assert type(by_name.inner_optimizer).__name__ == "Adam"
        assert by_config.inner_optimizer.momentum == 0.5
        by_name.learning_rate = 0.25
        assert float(numpy(by_name.inner_optimizer.learning_rate)) == 0.25

    def test_config_round_trip(self):
        optimizer = keras_l1.ProximalOptimizer(keras.optimizers.Adam(0.003, beta_1=0.8))
        config = json.loads(json.dumps(optimizer.get_config()))
        again = keras_l1.ProximalOptimizer.from_config(config)
        assert again.get_config() == optimizer.get_config()
        serialized = keras.optimizers.serialize(optimizer)
        assert serialized["registered_name"] == "keras_l1>ProximalOptimizer"
        restored = keras.optimizers.deserialize(json.loads(json.dumps(serialized)))
        assert restored.inner_optimizer.get_config() == optimizer.inner_optimizer.get_config()

    def test_resumes_identically_in_a_fresh_process(self, tmp_path, fresh_python):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 5)).astype("float32")
        y = (x[:, :1] - 0.5 * x[:, 1:2]).astype("float32")
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        model = linear_model(5, 1, keras_l1.L1Regularizer(0.05))
        model.compile(keras_l1.ProximalOptimizer(keras.optimizers.Adam(0.05)), "mse")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        model.save(tmp_path / "model.keras")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        expected = numpy(model.layers[0].kernel)
        result = fresh_python(
            f"""
            import numpy as np, keras, keras_l1
            model = keras.saving.load_model({str(tmp_path / "model.keras")!r})
            x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
            model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
            np.save({str(tmp_path / "resumed.npy")!r}, keras.ops.convert_to_numpy(
                model.layers[0].kernel))
            """
        )
        assert result.returncode == 0, result.stderr[-3000:]
        resumed = np.load(tmp_path / "resumed.npy")
        np.testing.assert_allclose(resumed, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(resumed == 0, expected == 0)


def overriding(cls):
    """A subclass of `cls` whose `update_step` is its own (calling Keras's)."""

    def update_step(self, gradient, variable, learning_rate):
        cls.update_step(self, gradient, variable, learning_rate)

    return type(f"Overriding{cls.__name__}", (cls,), {"update_step": update_step})


class TestRefusals:
    def test_an_overridden_update_step_is_refused(self):
        with pytest.raises(ValueError, match="overrides `update_step`.*OverridingAdam"):
            keras_l1.ProximalOptimizer(overriding(keras.optimizers.Adam)(0.1))

    @pytest.mark.parametrize("name", ["sgd", "adam"])
    def test_use_ema_is_refused(self, name):
        inner = keras.optimizers.get({"class_name": name, "config": {"use_ema": True}})
        with pytest.raises(ValueError, match="use_ema=True.*not sparse"):
            keras_l1.ProximalOptimizer(inner)


def sgd_reference(x, y, w, lr, l1, steps, proximal):
    """Full-batch SGD on `mse + l1·‖w‖₁`: proximal, or with the subgradient."""
    w = w.astype(np.float64)
    for _ in range(steps):
        data_gradient = (2 / len(x)) * x.T @ (x @ w - y)
        if proximal:
            moved = w - lr * data_gradient
            w = np.sign(moved) * np.maximum(np.abs(moved) - lr * l1, 0)
        else:
            w = w - lr * (data_gradient + l1 * np.sign(w))
    return w


@pytest.fixture
def small_problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    return x, y


class TestCountedOnceAcrossRecompiles:
    # The penalty's gradient is left out of the loss only for the optimizer
    # that claimed the regularizer, and only while it is the one compiled.
    @pytest.mark.parametrize("jit_compile", [False, True])
    def test_plain_optimizer_after_recompile_sees_the_penalty(self, small_problem, jit_compile):
        x, y = small_problem
        model = linear_model(3, 1, keras_l1.L1Regularizer(0.2))
        proximal = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1))
        model.compile(proximal, "mse", jit_compile=jit_compile)
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        w0 = numpy(model.layers[0].kernel)
        # `proximal` is still referenced: its claim must not reach the plain SGD.
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
        model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0)
        expected = sgd_reference(x, y, w0, 0.1, 0.2, 4, proximal=False)
        np.testing.assert_allclose(numpy(model.layers[0].kernel), expected, rtol=1e-5, atol=1e-6)
        assert proximal.built

    def test_new_proximal_optimizer_keeps_its_claim_when_the_old_one_dies(self, small_problem):
        x, y = small_problem
        model = linear_model(3, 1, keras_l1.L1Regularizer(0.2))
        first = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1))
        model.compile(first, "mse")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        second = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1))
        model.compile(second, "mse")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        del first
        gc.collect()
        w0 = numpy(model.layers[0].kernel)
        model.compile(second, "mse")  # traced again, after the first one died
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        expected = sgd_reference(x, y, w0, 0.1, 0.2, 3, proximal=True)
        np.testing.assert_allclose(numpy(model.layers[0].kernel), expected, rtol=1e-5, atol=1e-7)

    @pytest.mark.backends("tensorflow")
    @pytest.mark.parametrize("traced", [False, True])
    def test_custom_training_loop_counts_the_penalty_once_with_any_optimizer(
        self, small_problem, traced
    ):
        import tensorflow as tf

        x, y = small_problem
        model = linear_model(3, 1, keras_l1.L1Regularizer(0.2))
        proximal = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1))
        plain = keras.optimizers.SGD(0.1)

        def step(optimizer):
            with tf.GradientTape() as tape:
                residual = model(x) - y
                loss = tf.reduce_mean(residual**2) + tf.add_n(model.losses)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)

        steps = {
            o: (tf.function(lambda o=o: step(o)) if traced else (lambda o=o: step(o)))
            for o in (proximal, plain)
        }
        w0 = numpy(model.layers[0].kernel)
        for _ in range(3):
            steps[proximal]()
        expected = sgd_reference(x, y, w0, 0.1, 0.2, 3, proximal=True)
        np.testing.assert_allclose(numpy(model.layers[0].kernel), expected, rtol=1e-5, atol=1e-7)
        # The same loop with a plain optimizer, `proximal` still alive.
        w1 = numpy(model.layers[0].kernel)
        for _ in range(3):
            steps[plain]()
        expected = sgd_reference(x, y, w1, 0.1, 0.2, 3, proximal=False)
        np.testing.assert_allclose(numpy(model.layers[0].kernel), expected, rtol=1e-5, atol=1e-6)

    def test_shared_layer_trained_by_another_model_sees_the_penalty(self, small_problem):
        x, y = small_problem
        layer = keras.layers.Dense(
            1, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.2)
        )
        inputs = keras.Input((3,))
        sparse = keras.Model(inputs, layer(inputs))
        plain = keras.Model(inputs, layer(inputs))
        sparse.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        plain.compile(keras.optimizers.SGD(0.1), "mse")
        sparse.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        w0 = numpy(layer.kernel)
        plain.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        expected = sgd_reference(x, y, w0, 0.1, 0.2, 3, proximal=False)
        np.testing.assert_allclose(numpy(layer.kernel), expected, rtol=1e-5, atol=1e-6)
        w1 = numpy(layer.kernel)
        sparse.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        expected = sgd_reference(x, y, w1, 0.1, 0.2, 3, proximal=True)
        np.testing.assert_allclose(numpy(layer.kernel), expected, rtol=1e-5, atol=1e-7)


class TestGroupLassoWithAdaptiveSteps:
    def test_heuristic_warns_and_keeps_the_reference_support(self, diabetes):
        # Adam's steps differ per coordinate, so the block prox is a heuristic:
        # warned about, yet it must not zero every group (an arithmetic mean of
        # the steps did, dominated by coordinates with almost no gradient).
        x, y = diabetes
        rng = np.random.default_rng(0)
        # The all-zero fourth target soon has no gradient: its coordinates get
        # Adam steps near lr/ε in every group.
        targets = np.stack(
            [y, y * 0.5 + 0.3 * rng.normal(size=len(y)), x[:, 2], np.zeros_like(y)], axis=1
        ).astype("float32")
        reference = MultiTaskLasso(
            alpha=0.15, fit_intercept=False, tol=1e-12, max_iter=100_000
        ).fit(x.astype(np.float64), targets)
        model = linear_model(10, 4, keras_l1.GroupLassoRegularizer(0.3 / 4**1.5, 0))
        with pytest.warns(UserWarning, match="uses a heuristic group step"):
            kernel = fit_full_batch(
                model,
                x,
                targets,
                4000,
                True,
                keras_l1.ProximalOptimizer(keras.optimizers.Adam(0.01)),
            )
        kept = np.any(kernel != 0, axis=1)
        reference_kept = np.any(reference.coef_.T != 0, axis=1)
        assert reference_kept.sum() == 4
        # Not exact (one small group may drop), but never a group the optimum
        # drops, and never all of them.
        assert kept.sum() >= 3 and not np.any(kept & ~reference_kept)

    @pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
    def test_adam_group_step_is_the_harmonic_mean_of_adam_steps(self, amsgrad):
        # Adam's per-coordinate step `alpha / (sqrt(v) + ε)`, replaced within
        # each group (rows here) by its harmonic mean, the threshold of the
        # block soft-threshold; against NumPy over a few steps. With AMSGrad,
        # `v` is the running maximum: a short memory and shrinking gradients
        # make it differ from `v`.
        lr, l1, beta_1, beta_2, epsilon = 0.1, 0.05, 0.9, 0.5 if amsgrad else 0.999, 1e-7
        optimizer = keras_l1.ProximalOptimizer(
            keras.optimizers.Adam(lr, beta_1, beta_2, epsilon, amsgrad=amsgrad)
        )
        rng = np.random.default_rng(3)
        w = rng.normal(size=(4, 3)).astype("float32")
        variable = regularized_variable(w, keras_l1.GroupLassoRegularizer(l1, group_axis=0))
        m = np.zeros((4, 3))
        v = np.zeros((4, 3))
        v_max = np.zeros((4, 3))
        w = w.astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for t in range(1, 4):
                # Column scales 0.1 to 10: very different steps within a group.
                g = rng.normal(size=(4, 3)) * np.array([[0.1, 1.0, 10.0]])
                if amsgrad:
                    g /= 10.0 ** (t - 1)
                apply_gradients(optimizer, [g.astype("float32")], [variable])
                m += (g - m) * (1 - beta_1)
                v += (g**2 - v) * (1 - beta_2)
                v_max = np.maximum(v_max, v)
                alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
                step = alpha / (np.sqrt(v_max if amsgrad else v) + epsilon)
                moved = w - m * step
                group_step = 1 / np.mean(1 / step, axis=1, keepdims=True)
                norms = np.linalg.norm(moved, axis=1, keepdims=True)
                w = moved * np.maximum(0, 1 - group_step * l1 * np.sqrt(3) / norms)
        # float32 against float64 over three steps: a few ulps of 1e-5.
        np.testing.assert_allclose(numpy(variable), w, rtol=1e-4, atol=1e-6)


def lasso_steps(x, y, w, batches, lr, l1, accumulate=1):
    """Mini-batch proximal SGD on `mse + l1·‖w‖₁` in float64, batch after batch."""
    w = w.astype(np.float64)
    pending = []
    for batch in batches:
        xb, yb = x[batch], y[batch]
        pending.append((2 / len(batch)) * xb.T @ (xb @ w - yb))
        if len(pending) == accumulate:
            moved = w - lr * np.mean(pending, axis=0)
            w = np.sign(moved) * np.maximum(np.abs(moved) - lr * l1, 0)
            pending = []
    return w


def epoch_batches(n, batch_size):
    return [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


@pytest.fixture
def problem_20():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 4)).astype("float32")
    y = x @ np.array([[1.0], [0.05], [-0.8], [0.0]]) + 0.1 * rng.normal(size=(20, 1))
    return x, y.astype("float32")


def jit_settings():
    # torch.compile is slow to compile these tiny models; eager covers PyTorch.
    return [False] if keras.backend.backend() == "torch" else [False, True]


class TestCountedOnceEverywhere:
    """Every step equals `prox(w − lr·∇data, lr·l1)`, whatever shares the weights."""

    @pytest.mark.parametrize("jit_compile", jit_settings())
    def test_layer_shared_by_two_models_each_with_a_proximal_optimizer(
        self, problem_20, jit_compile
    ):
        # The shared encoder of multi-task training: two models, two optimizers,
        # trained alternately, with a partial last batch (20 = 16 + 4) and a
        # recompile in the middle.
        x, y = problem_20
        layer = keras.layers.Dense(
            1,
            use_bias=False,
            kernel_initializer="zeros",
            kernel_regularizer=keras_l1.L1Regularizer(0.6),
        )
        inputs = keras.Input((4,))
        first = keras.Model(inputs, layer(inputs))
        second = keras.Model(inputs, layer(inputs))
        for model in (first, second):
            model.compile(
                keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)),
                "mse",
                jit_compile=jit_compile,
            )
        w = numpy(layer.kernel)
        batches = epoch_batches(20, 16)
        for round_ in range(3):
            for model in (first, second):
                model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
                w = lasso_steps(x, y, w, batches, 0.1, 0.6)
                np.testing.assert_allclose(numpy(layer.kernel), w, rtol=1e-5, atol=1e-6)
                np.testing.assert_array_equal(numpy(layer.kernel) == 0, w == 0)
            if round_ == 0:
                first.compile(
                    keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)),
                    "mse",
                    jit_compile=jit_compile,
                )

    @pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
    def test_graph_steps_equal_eager_steps_with_sparse_gradients(self, optimizer):
        # TensorFlow compiles the whole update in a graph (a speed trick, see
        # keras_l1/_tf_kernels.py); an Embedding's gradient is tf.IndexedSlices.
        rng = np.random.default_rng(3)
        ids = rng.integers(0, 10, size=(32, 3)).astype("int32")
        y = rng.normal(size=(32, 1)).astype("float32")
        weights = []
        for run_eagerly in (True, False):
            keras.utils.set_random_seed(0)
            inputs = keras.Input((3,), dtype="int32")
            x = keras.layers.Flatten()(keras.layers.Embedding(10, 4)(inputs))
            regularizer = keras_l1.L1Regularizer(0.5)
            outputs = keras.layers.Dense(1, kernel_regularizer=regularizer)(x)
            model = keras.Model(inputs, outputs)
            inner = getattr(keras.optimizers, optimizer)(0.05)
            model.compile(keras_l1.ProximalOptimizer(inner), "mse", run_eagerly=run_eagerly)
            model.fit(ids, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
            weights.append([numpy(w) for w in model.weights])
        assert np.count_nonzero(weights[0][1] == 0) > 0
        for eager, graph in zip(*weights):
            np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(graph == 0, eager == 0)

    def test_one_regularizer_instance_on_layers_of_two_models(self, problem_20):
        x, y = problem_20
        shared = keras_l1.L1Regularizer(0.3)
        models = [linear_model(4, 1, shared) for _ in range(2)]
        for model in models:
            model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        expected = [numpy(model.layers[0].kernel) for model in models]
        for _ in range(2):
            for i, model in enumerate(models):
                model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
                expected[i] = lasso_steps(x, y, expected[i], epoch_batches(20, 16), 0.1, 0.3)
        for model, w in zip(models, expected):
            np.testing.assert_allclose(numpy(model.layers[0].kernel), w, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("jit_compile", jit_settings())
    def test_gradient_accumulation_in_fit(self, problem_20, jit_compile):
        x, y = problem_20
        model = linear_model(4, 1, keras_l1.L1Regularizer(0.3))
        inner = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
        model.compile(keras_l1.ProximalOptimizer(inner), "mse", jit_compile=jit_compile)
        w = numpy(model.layers[0].kernel)
        model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
        batches = epoch_batches(20, 5) * 2
        expected = lasso_steps(x, y, w, batches, 0.1, 0.3, accumulate=2)
        np.testing.assert_allclose(numpy(model.layers[0].kernel), expected, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("jit_compile", jit_settings())
    def test_loss_scale_optimizer_around_it(self, problem_20, jit_compile):
        x, y = problem_20
        model = linear_model(4, 1, keras_l1.L1Regularizer(0.3))
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), initial_scale=2.0**10
        )
        model.compile(optimizer, "mse", jit_compile=jit_compile)
        w = numpy(model.layers[0].kernel)
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        expected = lasso_steps(x, y, w, epoch_batches(20, 16) * 3, 0.1, 0.3)
        np.testing.assert_allclose(numpy(model.layers[0].kernel), expected, rtol=1e-5, atol=1e-6)

    @pytest.mark.backends("tensorflow")
    def test_overridden_train_step(self, problem_20):
        import tensorflow as tf

        class Custom(keras.Model):
            def train_step(self, data):
                x, y = data
                with tf.GradientTape() as tape:
                    y_pred = self(x, training=True)
                    loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
                grads = tape.gradient(loss, self.trainable_variables)
                self.optimizer.apply(grads, self.trainable_variables)
                return {"loss": loss}

        x, y = problem_20
        inputs = keras.Input((4,))
        layer = keras.layers.Dense(
            1, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.3)
        )
        model = Custom(inputs, layer(inputs))
        model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        w = numpy(layer.kernel)
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        expected = lasso_steps(x, y, w, epoch_batches(20, 16) * 3, 0.1, 0.3)
        np.testing.assert_allclose(numpy(layer.kernel), expected, rtol=1e-5, atol=1e-6)


@keras.saving.register_keras_serializable(package="keras_l1_tests")
class NonNegativeL1(keras_l1.ProximalRegularizer):
    """A user's penalty: `l1 * sum(w)` on `w >= 0`, +inf elsewhere (non-negative lasso)."""

    def __init__(self, l1=0.01):
        self.l1 = l1

    def penalty(self, w):
        return self.l1 * keras.ops.sum(w)

    def gradient(self, w):
        return keras.ops.full_like(w, self.l1)

    def prox(self, w, step):
        return keras.ops.maximum(w - keras.ops.cast(step, w.dtype) * self.l1, 0)

    def get_config(self):
        return {"l1": self.l1}


class TestUserDefinedPenalty:
    def test_non_negative_lasso_reaches_scikit_learn(self, diabetes):
        x, y = diabetes
        reference = Lasso(alpha=0.05, positive=True, fit_intercept=False, tol=1e-12)
        reference = reference.fit(x.astype(np.float64), y).coef_
        model = linear_model(10, 1, NonNegativeL1(0.1))
        optimizer = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1))
        kernel = fit_full_batch(model, x, y[:, None], 1500, True, optimizer)
        assert (reference == 0).sum() >= 3
        assert_same_solution(kernel, reference, atol=2e-5)
