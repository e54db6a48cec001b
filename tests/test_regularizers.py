import json
import math
import re

import keras
import numpy as np
import pytest
from keras import ops

import keras_l1
from keras_l1.regularizers import as_proximal
from tests._backend import autodiff_gradient

ALL = [
    (keras_l1.L1Regularizer, {"l1": 0.01}),
    (keras_l1.ElasticNetRegularizer, {"l1": 0.01, "l2": 0.02}),
    (keras_l1.GroupLassoRegularizer, {"l1": 0.01, "group_axis": -1}),
    (keras_l1.LogSumRegularizer, {"l1": 0.01, "epsilon": 0.001}),
]


def grad_of(regularizer, w):
    """The autodiff gradient of the penalty, by the current backend."""
    return autodiff_gradient(regularizer, w)


class TestSoftThreshold:
    def test_closed_form(self):
        result = keras_l1.soft_threshold(np.array([3.0, -0.5, -2.0, 0.0, 1.0]), 1.0)
        np.testing.assert_array_equal(ops.convert_to_numpy(result), [2.0, 0.0, -1.0, 0.0, 0.0])

    def test_per_coordinate_threshold(self):
        result = keras_l1.soft_threshold(np.array([3.0, -3.0, 3.0]), np.array([1.0, 2.0, 4.0]))
        np.testing.assert_array_equal(ops.convert_to_numpy(result), [2.0, -1.0, 0.0])

    def test_zero_threshold_is_identity(self):
        x = np.random.default_rng(0).normal(size=20).astype("float32")
        np.testing.assert_array_equal(ops.convert_to_numpy(keras_l1.soft_threshold(x, 0.0)), x)


class TestL1Regularizer:
    def test_penalty_closed_form(self):
        w = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")
        value = keras_l1.L1Regularizer(0.1)(w)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        np.testing.assert_allclose(float(value), 0.1 * np.abs(w).sum(), rtol=1e-6)

    def test_get_config_keeps_exact_float(self):
        assert keras_l1.L1Regularizer(0.01).get_config() == {"l1": 0.01}
        config = keras_l1.L1Regularizer(np.float32(0.25)).get_config()
        assert config == {"l1": 0.25} and type(config["l1"]) is float

    @pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
    def test_low_precision_penalty_is_float32_accurate(self, dtype):
        # 2M weights of ±0.05: float16 overflows and bfloat16 loses all digits
        # if the sum is accumulated in the weight dtype.
        signs = np.where(np.random.default_rng(0).random(2_000_000) < 0.5, -1.0, 1.0)
        w = ops.cast(0.05 * signs, dtype)
        exact = 0.01 * np.abs(ops.convert_to_numpy(ops.cast(w, "float32"))).astype(np.float64).sum()
        value = keras_l1.L1Regularizer(0.01)(w)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert abs(float(value) - exact) / exact < 1e-5

    @pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
    def test_low_precision_model_fits(self, dtype):
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(3, dtype=dtype, kernel_regularizer=keras_l1.L1Regularizer(0.01)),
            ]
        )
        model.compile("sgd", "mse")
        x = np.ones((8, 4), "float32")
        history = model.fit(x, np.zeros((8, 3), "float32"), epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        kernel = ops.convert_to_numpy(ops.cast(model.layers[0].kernel, "float32"))
        np.testing.assert_allclose(float(model.losses[0]), 0.01 * np.abs(kernel).sum(), rtol=1e-6)

    def test_gradient_is_sign_and_zero_at_zero(self):
        w = np.array([[0.0, 2.0], [-3.0, 0.0]], "float32")
        np.testing.assert_array_equal(
            grad_of(keras_l1.L1Regularizer(0.5), w), [[0.0, 0.5], [-0.5, 0.0]]
        )

    def test_prox_closed_form(self):
        reg = keras_l1.L1Regularizer(0.5)
        result = reg.prox(np.array([3.0, -0.5, -2.0]), 2.0)
        np.testing.assert_array_equal(ops.convert_to_numpy(result), [2.0, 0.0, -1.0])

    @pytest.mark.parametrize(
        "value, error, received",
        [
            (-0.1, ValueError, "l1=-0.1"),
            (float("nan"), ValueError, "l1=nan"),
            (float("inf"), ValueError, "l1=inf"),
            (-float("inf"), ValueError, "l1=-inf"),
            (True, TypeError, "l1=True of type bool"),
            ("0.1", TypeError, "l1='0.1' of type str"),
            (None, TypeError, "l1=None of type NoneType"),
        ],
    )
    def test_invalid_l1(self, value, error, received):
        kind = "type" if error is TypeError else "value"
        message = (
            f"Invalid {kind} for argument `l1`: expected a non-negative finite float. "
            f"Received: {received}"
        )
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            keras_l1.L1Regularizer(value)

    def test_numpy_scalars_accepted(self):
        assert keras_l1.L1Regularizer(np.float64(0.5)).l1 == 0.5
        assert keras_l1.L1Regularizer(np.int64(2)).l1 == 2.0

    def test_resolves_by_registered_name(self):
        reg = keras.regularizers.get(
            {"class_name": "keras_l1>L1Regularizer", "config": {"l1": 0.1}}
        )
        assert isinstance(reg, keras_l1.L1Regularizer) and reg.l1 == 0.1


class TestElasticNetRegularizer:
    def test_penalty_closed_form(self):
        w = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
        value = keras_l1.ElasticNetRegularizer(0.1, 0.3)(w)
        expected = 0.1 * np.abs(w).sum() + 0.3 * np.square(w).sum()
        np.testing.assert_allclose(float(value), expected, rtol=1e-6)

    def test_prox_closed_form(self):
        reg = keras_l1.ElasticNetRegularizer(l1=0.5, l2=0.25)
        result = ops.convert_to_numpy(reg.prox(np.array([3.0, -0.5, -2.0]), 2.0))
        # soft-threshold at 1, then divide by 1 + 2 * 2 * 0.25 = 2.
        np.testing.assert_array_equal(result, [1.0, 0.0, -0.5])

    def test_prox_solves_its_problem(self):
        # argmin_y ½(y − x)² + t(l1|y| + l2 y²), checked by brute force.
        reg = keras_l1.ElasticNetRegularizer(l1=0.3, l2=0.7)
        grid = np.linspace(-3, 3, 600001)
        for x in (-2.0, -0.1, 0.0, 0.5, 2.5):
            objective = 0.5 * (grid - x) ** 2 + 0.4 * (0.3 * np.abs(grid) + 0.7 * grid**2)
            expected = grid[np.argmin(objective)]
            got = float(ops.convert_to_numpy(reg.prox(np.array([x]), 0.4))[0])
            assert abs(got - expected) < 2e-5

    def test_gradient_matches_autodiff(self):
        reg = keras_l1.ElasticNetRegularizer(0.2, 0.3)
        w = np.array([[0.0, 1.5], [-2.0, 0.25]], "float32")
        np.testing.assert_allclose(
            grad_of(reg, w), ops.convert_to_numpy(reg.gradient(w)), rtol=1e-6
        )
        np.testing.assert_allclose(grad_of(reg, w)[0, 0], 0.0)

    def test_invalid_l2(self):
        message = (
            "Invalid value for argument `l2`: expected a non-negative finite float. Received: l2=-1"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            keras_l1.ElasticNetRegularizer(0.1, -1)


class TestGroupLassoRegularizer:
    def test_penalty_closed_form_rows_and_columns(self):
        w = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
        rows = keras_l1.GroupLassoRegularizer(0.1, group_axis=0)(w)
        np.testing.assert_allclose(
            float(rows), 0.1 * math.sqrt(3) * np.linalg.norm(w, axis=1).sum(), rtol=1e-6
        )
        cols = keras_l1.GroupLassoRegularizer(0.1, group_axis=-1)(w)
        np.testing.assert_allclose(
            float(cols), 0.1 * math.sqrt(5) * np.linalg.norm(w, axis=0).sum(), rtol=1e-6
        )

    def test_conv_kernel_groups_by_output_channel(self):
        w = np.random.default_rng(3).normal(size=(3, 3, 2, 4)).astype("float32")
        value = keras_l1.GroupLassoRegularizer(0.1, group_axis=-1)(w)
        norms = np.sqrt((w**2).sum(axis=(0, 1, 2)))
        np.testing.assert_allclose(float(value), 0.1 * math.sqrt(18) * norms.sum(), rtol=1e-6)

    def test_zero_group_has_finite_value_and_zero_gradient(self):
        w = np.array([[0.0, 0.0], [3.0, 4.0]], "float32")
        reg = keras_l1.GroupLassoRegularizer(1.0, group_axis=0)
        np.testing.assert_allclose(float(reg(w)), math.sqrt(2) * 5.0, rtol=1e-6)
        grad = grad_of(reg, w)
        assert np.all(np.isfinite(grad))
        np.testing.assert_array_equal(grad[0], [0.0, 0.0])
        np.testing.assert_allclose(grad[1], math.sqrt(2) * np.array([0.6, 0.8]), rtol=1e-6)
        np.testing.assert_allclose(grad, ops.convert_to_numpy(reg.gradient(w)), rtol=1e-6)

    def test_prox_block_soft_threshold(self):
        reg = keras_l1.GroupLassoRegularizer(1.0, group_axis=0)
        w = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
        # threshold = step * l1 * sqrt(2); row 1 (norm 5) shrinks, row 2 (norm 0.5) dies.
        step = 1.0 / math.sqrt(2)
        result = ops.convert_to_numpy(reg.prox(w, step))
        np.testing.assert_allclose(result[0], [3.0 * 0.8, 4.0 * 0.8], rtol=1e-6)
        np.testing.assert_array_equal(result[1:], 0.0)

    def test_group_axis_out_of_range(self):
        message = (
            "Invalid value for argument `group_axis`: expected an axis of a weight of "
            "rank 2. Received: group_axis=2"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            keras_l1.GroupLassoRegularizer(0.1, group_axis=2)(np.ones((2, 2)))

    def test_group_axis_type(self):
        message = (
            "Invalid type for argument `group_axis`: expected an integer. "
            "Received: group_axis=0.5 of type float"
        )
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            keras_l1.GroupLassoRegularizer(0.1, group_axis=0.5)


def log_sum_prox_by_search(x, threshold, epsilon):
    """`argmin_y ½(y − x)² + threshold · epsilon · log(1 + |y|/epsilon)` on a fine grid."""
    grid = np.linspace(-4, 4, 800001)
    objective = 0.5 * (grid - x) ** 2 + threshold * epsilon * np.log1p(np.abs(grid) / epsilon)
    return grid[np.argmin(objective)]


class TestLogSumRegularizer:
    def test_penalty_closed_form(self):
        w = np.random.default_rng(4).normal(size=(6, 4)).astype("float32")
        value = keras_l1.LogSumRegularizer(0.3, epsilon=0.05)(w)
        expected = 0.3 * 0.05 * np.log1p(np.abs(w.astype("float64")) / 0.05).sum()
        np.testing.assert_allclose(float(value), expected, rtol=1e-6)

    @pytest.mark.parametrize("epsilon", [0.01, 0.5, 2.0])
    def test_prox_solves_its_problem_beyond_the_threshold(self, epsilon):
        # Beyond |x| = step·l1 (0.4 here) the problem has one minimizer,
        # found here by a search over a grid.
        reg = keras_l1.LogSumRegularizer(l1=0.5, epsilon=epsilon)
        step = 0.8
        points = np.array([-3.0, -0.9, -0.41, 0.401, 0.45, 0.6, 1.0, 2.5])
        got = ops.convert_to_numpy(reg.prox(points, step))
        for x, y in zip(points, got):
            expected = log_sum_prox_by_search(x, step * 0.5, epsilon)
            assert abs(y - expected) < 2e-5, (x, y, expected)
            assert y != 0

    @pytest.mark.parametrize("epsilon", [0.01, 0.5, 2.0])
    def test_prox_dead_zone_is_the_soft_thresholds(self, epsilon):
        # Within |x| <= step·l1, 0 is a local minimizer (the objective's slope
        # at 0⁺ is step·l1 − |x| >= 0), returned as L1's soft-threshold does.
        reg = keras_l1.LogSumRegularizer(l1=1.0, epsilon=epsilon)
        points = np.array([0.0, 0.1, -0.3, 0.5, -0.5])
        np.testing.assert_array_equal(ops.convert_to_numpy(reg.prox(points, 0.5)), 0.0)
        grid = np.linspace(0, 1e-4, 1001)
        for x in np.abs(points[np.abs(points) < 0.5]):
            objective = 0.5 * (grid - x) ** 2 + 0.5 * epsilon * np.log1p(grid / epsilon)
            assert np.argmin(objective) == 0

    def test_prox_per_coordinate_step(self):
        reg = keras_l1.LogSumRegularizer(l1=0.5, epsilon=0.2)
        x, steps = np.array([1.0, 1.0, -2.0]), np.array([0.1, 3.0, 1.0])
        got = ops.convert_to_numpy(reg.prox(x, steps))
        expected = [log_sum_prox_by_search(x[0], 0.05, 0.2), 0.0]
        expected.append(log_sum_prox_by_search(x[2], 0.5, 0.2))
        np.testing.assert_allclose(got, expected, atol=2e-5)

    def test_fixed_point_is_stationary(self):
        # w = prox(w − step·g, step) exactly where g + l1·ε·sign(w)/(ε + |w|) = 0
        # for w ≠ 0 and |g| <= l1 for w = 0: the stationarity conditions.
        reg = keras_l1.LogSumRegularizer(l1=0.5, epsilon=0.1)
        w = np.array([0.0, 0.0, 0.7, -1.3])
        g = np.array([0.3, -0.5, -0.5 * 0.1 / 0.8, 0.5 * 0.1 / 1.4])
        result = ops.convert_to_numpy(reg.prox(w - 0.2 * g, 0.2))
        np.testing.assert_allclose(result, w, atol=1e-6)

    def test_large_epsilon_is_l1(self):
        # In float32: where epsilon dwarfs the weights, the root must not be
        # computed as a difference of two numbers near epsilon².
        w = np.array([[0.0, 1.5, -0.25], [-2.0, 0.5, 3.0]], "float32")
        log_sum = keras_l1.LogSumRegularizer(0.2, epsilon=1e7)
        l1 = keras_l1.L1Regularizer(0.2)
        np.testing.assert_allclose(float(log_sum(w)), float(l1(w)), rtol=1e-6)
        np.testing.assert_allclose(
            ops.convert_to_numpy(log_sum.prox(w, 2.0)),
            ops.convert_to_numpy(l1.prox(w, 2.0)),
            atol=1e-6,
        )

    def test_large_weights_are_hardly_shrunk(self):
        # The bias of L1 (every survivor moves by the threshold, 0.5 here)
        # is gone: the move is the slope at the result, 0.5·epsilon/(epsilon + y).
        reg = keras_l1.LogSumRegularizer(l1=1.0, epsilon=0.01)
        result = float(ops.convert_to_numpy(reg.prox(np.array([1.0]), 0.5))[0])
        np.testing.assert_allclose(1.0 - result, 0.5 * 0.01 / (0.01 + result), rtol=1e-4)
        assert 1.0 - result < 0.5 / 100

    def test_gradient_matches_autodiff(self):
        reg = keras_l1.LogSumRegularizer(0.2, epsilon=0.5)
        w = np.array([[0.0, 1.5], [-2.0, 0.25]], "float32")
        expected = 0.2 * 0.5 * np.sign(w) / (0.5 + np.abs(w))
        np.testing.assert_allclose(grad_of(reg, w), expected, rtol=1e-6)
        np.testing.assert_allclose(ops.convert_to_numpy(reg.gradient(w)), expected, rtol=1e-6)
        assert grad_of(reg, w)[0, 0] == 0.0

    @pytest.mark.parametrize(
        "value, error, received",
        [
            (0.0, ValueError, "epsilon=0.0"),
            (-1e-3, ValueError, "epsilon=-0.001"),
            (float("inf"), ValueError, "epsilon=inf"),
            (float("nan"), ValueError, "epsilon=nan"),
            (True, TypeError, "epsilon=True of type bool"),
            ("0.1", TypeError, "epsilon='0.1' of type str"),
        ],
    )
    def test_invalid_epsilon(self, value, error, received):
        kind = "type" if error is TypeError else "value"
        message = (
            f"Invalid {kind} for argument `epsilon`: expected a float in (0, inf). "
            f"Received: {received}"
        )
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            keras_l1.LogSumRegularizer(0.1, epsilon=value)

    def test_resolves_by_registered_name(self):
        reg = keras.regularizers.get(
            {"class_name": "keras_l1>LogSumRegularizer", "config": {"l1": 0.1, "epsilon": 0.5}}
        )
        assert isinstance(reg, keras_l1.LogSumRegularizer)
        assert reg.get_config() == {"l1": 0.1, "epsilon": 0.5}


def compiled_value_and_gradient(regularizer, w, mode):
    """The penalty and its autodiff gradient, computed as a compiled step would.

    `mode` is `"eager"`, `"graph"` (a TensorFlow function without XLA, where
    elastic net, group lasso and log-sum run as XLA-compiled pieces) or
    `"xla"` (`jit_compile=True` on TensorFlow, `jax.jit` on JAX), where the
    penalties take other forms.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow" and mode != "eager":
        import tensorflow as tf

        variable = tf.Variable(w)

        @tf.function(jit_compile=mode == "xla")
        def step():
            with tf.GradientTape() as tape:
                value = regularizer(variable)
            return value, tape.gradient(value, variable)

        value, gradient = step()
        return float(value), gradient.numpy()
    if backend == "jax" and mode == "xla":
        import jax

        value, gradient = jax.jit(jax.value_and_grad(regularizer))(jax.numpy.asarray(w))
        return float(value), np.asarray(gradient)
    return float(regularizer(w)), autodiff_gradient(regularizer, w)


# The ways each backend computes a penalty in training.
MODES = {"tensorflow": ["eager", "graph", "xla"], "jax": ["eager", "xla"]}.get(
    keras.backend.backend(), ["eager"]
)


class TestPenaltyInCompiledSteps:
    W = np.array([[0.0, 1.5, -0.25], [-2.0, 0.0, 3.0]], "float32")

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize(
        "regularizer, value, gradient",
        [
            (
                keras_l1.L1Regularizer(0.2),
                lambda w: 0.2 * np.abs(w).sum(),
                lambda w: 0.2 * np.sign(w),
            ),
            (
                keras_l1.ElasticNetRegularizer(0.2, 0.3),
                lambda w: 0.2 * np.abs(w).sum() + 0.3 * (w**2).sum(),
                lambda w: 0.2 * np.sign(w) + 0.6 * w,
            ),
            (
                keras_l1.GroupLassoRegularizer(0.2, group_axis=0),
                lambda w: 0.2 * math.sqrt(3) * np.linalg.norm(w, axis=1).sum(),
                lambda w: 0.2 * math.sqrt(3) * w / np.linalg.norm(w, axis=1, keepdims=True),
            ),
            (
                keras_l1.LogSumRegularizer(0.2, epsilon=0.5),
                lambda w: 0.1 * np.log1p(np.abs(w) / 0.5).sum(),
                lambda w: 0.1 * np.sign(w) / (0.5 + np.abs(w)),
            ),
        ],
        ids=["l1", "elastic_net", "group_lasso", "log_sum"],
    )
    def test_value_and_gradient_match_closed_form(self, mode, regularizer, value, gradient):
        got_value, got_gradient = compiled_value_and_gradient(regularizer, self.W, mode)
        np.testing.assert_allclose(got_value, value(self.W), rtol=1e-6)
        np.testing.assert_allclose(got_gradient, gradient(self.W), rtol=1e-6, atol=1e-7)
        # Exact zeros stay where they are: the gradient there is exactly 0.
        assert got_gradient[0, 0] == 0.0 and got_gradient[1, 1] == 0.0

    @pytest.mark.parametrize("mode", MODES)
    def test_strengths_changed_after_a_compiled_call_are_used(self, mode):
        regularizer = keras_l1.ElasticNetRegularizer(0.2, 0.3)
        compiled_value_and_gradient(regularizer, self.W, mode)
        regularizer.l1, regularizer.l2 = 0.5, 0.1
        value, gradient = compiled_value_and_gradient(regularizer, self.W, mode)
        np.testing.assert_allclose(
            value, 0.5 * np.abs(self.W).sum() + 0.1 * (self.W**2).sum(), rtol=1e-6
        )
        np.testing.assert_allclose(gradient, 0.5 * np.sign(self.W) + 0.2 * self.W, rtol=1e-6)

    @pytest.mark.parametrize("mode", MODES)
    def test_non_finite_weight_gives_non_finite_penalty(self, mode):
        # SparsityLogger screens weights for NaN through the penalty.
        w = self.W.copy()
        w[0, 1] = np.nan
        for regularizer in (
            keras_l1.L1Regularizer(0.2),
            keras_l1.ElasticNetRegularizer(0.2, 0.3),
            keras_l1.LogSumRegularizer(0.2, 0.1),
            keras_l1.GroupLassoRegularizer(0.2, 0),
            keras_l1.GroupLassoRegularizer(0.2, 1),
        ):
            assert np.isnan(compiled_value_and_gradient(regularizer, w, mode)[0])


@pytest.mark.parametrize("cls, config", ALL)
class TestSerialization:
    def test_config_round_trip(self, cls, config):
        reg = cls(**config)
        assert reg.get_config() == config
        again = cls.from_config(json.loads(json.dumps(reg.get_config())))
        assert again.get_config() == config

    def test_keras_serialize_round_trip(self, cls, config):
        serialized = keras.regularizers.serialize(cls(**config))
        assert serialized["registered_name"] == f"keras_l1>{cls.__name__}"
        again = keras.regularizers.deserialize(json.loads(json.dumps(serialized)))
        assert type(again) is cls and again.get_config() == config

    def test_from_config_rejects_unknown_keys(self, cls, config):
        message = (
            f"Invalid value for argument `config` of {cls.__name__}.from_config: "
            f"unexpected keys ['bogus']; allowed keys are {sorted(config)}. "
            f"Received: config={ {**config, 'bogus': 1}!r}"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            cls.from_config({**config, "bogus": 1})


class TestAsProximal:
    def test_keras_l1_maps_to_same_penalty(self):
        mapped = as_proximal(keras.regularizers.L1(0.01))
        assert isinstance(mapped, keras_l1.L1Regularizer)
        w = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
        np.testing.assert_allclose(
            float(mapped(w)), float(keras.regularizers.L1(0.01)(w)), rtol=1e-7
        )

    def test_keras_l1l2_maps_to_elastic_net(self):
        mapped = as_proximal(keras.regularizers.L1L2(0.01, 0.02))
        assert isinstance(mapped, keras_l1.ElasticNetRegularizer)

    def test_l2_alone_has_no_prox(self):
        assert as_proximal(keras.regularizers.L2(0.01)) is None
        assert as_proximal(keras.regularizers.L1L2(0.0, 0.01)) is None


class TestGroupSumsOfSquares:
    @pytest.mark.parametrize(
        "shape, axes",
        [((5, 7), (1,)), ((3, 3, 4, 6), (1, 2, 3)), ((3, 3, 4, 6), (3,)), ((5, 7), (0,))],
    )
    def test_equal_to_the_plain_sum(self, shape, axes):
        from keras_l1.regularizers import _sum_of_squares

        w = np.random.default_rng(0).normal(size=shape).astype("float32")
        expected = np.sum(w.astype(np.float64) ** 2, axis=axes, keepdims=True)
        result = keras.ops.convert_to_numpy(_sum_of_squares(keras.ops.convert_to_tensor(w), axes))
        assert result.shape == expected.shape
        np.testing.assert_allclose(result, expected, rtol=1e-6)
