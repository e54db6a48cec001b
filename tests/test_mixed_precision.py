"""Mixed precision and low-precision models: training, penalty, exact zeros.

Under `mixed_float16` / `mixed_bfloat16` the weights stay float32 and the
math runs in 16 bits; under `bfloat16` / `float16` the weights themselves
are 16-bit. In each, `ProximalOptimizer` must still reach the Lasso optimum
with the same zeros, the penalty must be float32-accurate, and under
`mixed_float16` (where Keras wraps the optimizer in `LossScaleOptimizer`) a
step skipped for non-finite gradients must skip the proximal step too.
"""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso

import keras_l1

POLICIES = ["mixed_float16", "mixed_bfloat16", "bfloat16", "float16"]
# Distance to scikit-learn's optimum measured on TensorFlow, JAX and PyTorch
# (largest of the three), times about 2: 16-bit arithmetic, not the method,
# limits it. Float32 training reaches 1e-7.
TOLERANCE = {
    "mixed_float16": 2e-4,
    "mixed_bfloat16": 2e-3,
    "float16": 3e-3,
    "bfloat16": 2.5e-2,
}
STEPS = 300


@pytest.fixture
def policy(request):
    keras.config.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="module")
def diabetes():
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32")
    y = ((y - y.mean()) / y.std()).astype("float32")[:, None]
    # Keras's MSE is (1/n)‖y − Xw‖², scikit-learn's (1/(2n))‖y − Xw‖²: l1 = 2·alpha.
    lasso = Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100_000)
    return x, y, lasso.fit(x, y.ravel()).coef_


def kernel_of(model) -> np.ndarray:
    kernel = model.layers[0].kernel
    return keras.ops.convert_to_numpy(keras.ops.cast(kernel, "float32")).ravel()


def linear_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(1, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.1)),
        ]
    )
    model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    return model


def full_batch_steps(model, x, y, steps):
    # One epoch of `steps` full batches: per-epoch overhead would dominate.
    repeated = (np.tile(x, (steps, 1)), np.tile(y, (steps, 1)))
    return model.fit(*repeated, batch_size=len(x), epochs=1, shuffle=False, verbose=0)


class TestProximalOptimizer:
    @pytest.mark.parametrize("policy", POLICIES, indirect=True)
    def test_reaches_the_lasso_optimum_with_exact_zeros(self, policy, diabetes):
        x, y, reference = diabetes
        model = linear_model()
        full_batch_steps(model, x, y, STEPS)
        first = kernel_of(model)
        history = full_batch_steps(model, x, y, 50)
        kernel = kernel_of(model)
        assert np.all(np.isfinite(history.history["loss"]))
        np.testing.assert_allclose(kernel, reference, rtol=0, atol=TOLERANCE[policy])
        np.testing.assert_array_equal(kernel == 0, reference == 0)
        # Zeros are exact and stay exact: 50 more steps move none of them.
        assert np.sum(first == 0) == np.sum(reference == 0) == 4
        assert np.all(kernel[first == 0] == 0)

    @pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
    def test_skipped_loss_scale_step_skips_the_prox(self, policy, diabetes):
        x, y, _ = diabetes
        model = linear_model()
        # Keras wraps the optimizer itself under mixed_float16.
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.optimizer.inner_optimizer, keras_l1.ProximalOptimizer)
        full_batch_steps(model, x, y, 20)
        before = kernel_of(model)
        assert 0 < np.sum(before == 0) < 10
        iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        scale = float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))

        # 1e30 overflows float16: the loss and every gradient are non-finite.
        poisoned = np.full_like(x, 1e30)
        model.train_on_batch(poisoned, y)
        # Neither the gradient step nor the shrinkage of the prox happened.
        np.testing.assert_array_equal(kernel_of(model), before)
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == iterations
        assert float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale)) == scale / 2

        # The next finite step is a full proximal step again.
        model.train_on_batch(x, y)
        after = kernel_of(model)
        assert not np.array_equal(after, before)
        assert np.all(after[before == 0] == 0)


class TestSparsityLogger:
    @pytest.mark.parametrize("policy", POLICIES, indirect=True)
    def test_penalty_of_two_million_weights_is_float32_accurate(self, policy):
        # 2M weights of ±0.05: a float16 sum overflows, a bfloat16 sum loses
        # every digit; keras_l1 accumulates in float32 whatever the policy.
        model = keras.Sequential(
            [
                keras.Input((2000,)),
                keras.layers.Dense(
                    1000, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.01)
                ),
            ]
        )
        signs = np.where(np.random.default_rng(0).random((2000, 1000)) < 0.5, -1.0, 1.0)
        model.layers[0].kernel.assign(0.05 * signs)
        stored = keras.ops.convert_to_numpy(keras.ops.cast(model.layers[0].kernel, "float32"))
        exact = 0.01 * np.abs(stored.astype(np.float64)).sum()

        # A float32 sum of 2M terms is good to a few 1e-6 (2.3e-6 measured on
        # TensorFlow); a 16-bit one would be off by orders of magnitude.
        logs = {}
        logger = keras_l1.SparsityLogger()
        logger.set_model(model)
        logger.on_epoch_end(0, logs)
        assert logs["l1_penalty"] == pytest.approx(exact, rel=1e-5)
        assert logs["sparsity"] == 0.0
        penalty = model.losses[0]
        assert keras.backend.standardize_dtype(penalty.dtype) == "float32"
        assert float(keras.ops.convert_to_numpy(penalty)) == pytest.approx(exact, rel=1e-5)
