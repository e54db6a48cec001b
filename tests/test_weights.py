import copy
import pickle

import keras
import numpy as np
import pytest

import keras_l1
from keras_l1 import _weights
from keras_l1._weights import RepeatedMeasure
from keras_l1._weights import measure
from keras_l1._weights import regularized_weights


def _model(first, second):
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(3, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.5)),
            keras.layers.Dense(1, use_bias=False, kernel_regularizer=keras.regularizers.L2(0.25)),
        ]
    )
    model.layers[0].kernel.assign(np.array(first, "float32"))
    model.layers[1].kernel.assign(np.array(second, "float32"))
    return model


def _computes_float64(regularizer) -> bool:
    try:
        regularizer(keras.ops.ones((2, 2), "float64"))
    except Exception:
        return False
    return True


@pytest.fixture(params=[True, False], ids=["host", "device"])
def on_host(request, monkeypatch):
    """Measures in host memory (NumPy), or by the backend's operations."""
    if request.param:
        # Several blocks per weight, so that the sums and counts across blocks
        # are exercised too.
        monkeypatch.setattr(_weights, "_BLOCK", 2)
    return request.param


class TestMeasure:
    @pytest.mark.parametrize("tolerance, zeros", [(0.0, (2, 1)), (1.5, (4, 2))])
    def test_closed_form(self, tolerance, zeros, on_host):
        model = _model([[3.0, -0.0, 0.0], [-1.0, 1.0, 2.0]], [[0.0], [2.0], [-1.0]])
        stats = measure(regularized_weights(model), tolerance, on_host=on_host)
        # 0.5 * (3 + 1 + 1 + 2) and 0.25 * (4 + 1).
        np.testing.assert_array_equal(stats, [[3.5, zeros[0], 0, 6], [1.25, zeros[1], 0, 3]])

    def test_counts_each_non_finite_entry(self, on_host):
        # +inf and -inf cancel to NaN in a sum; NaN must not count as zero.
        model = _model([[np.inf, -np.inf, 0.0], [np.nan, 1.0, 0.0]], [[0.0], [2.0], [-1.0]])
        stats = measure(regularized_weights(model), 0.0, on_host=on_host)
        assert stats[0, 1:].tolist() == [2, 3, 6]
        assert stats[1].tolist() == [1.25, 1, 0, 3]

    def test_counts_non_finite_entries_a_penalty_hides(self):
        # Group lasso's penalty skips a group whose squared norm is NaN.
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(
                    2, use_bias=False, kernel_regularizer=keras_l1.GroupLassoRegularizer(0.5)
                ),
            ]
        )
        model.layers[0].kernel.assign(np.array([[np.nan, 0.0], [3.0, 4.0]], "float32"))
        stats = measure(regularized_weights(model), 0.0)
        assert stats[0, 1:].tolist() == [1, 1, 4]

    def test_log_sum_penalty_and_non_finite_entries(self, on_host):
        # Its penalty is NaN where a weight is: the entries are then counted.
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(
                    3,
                    use_bias=False,
                    kernel_regularizer=keras_l1.LogSumRegularizer(0.5, epsilon=0.1),
                ),
            ]
        )
        kernel = np.array([[1.0, 0.0, -3.0], [0.25, 0.0, 0.5]], "float32")
        model.layers[0].kernel.assign(kernel)
        stats = measure(regularized_weights(model), 0.0, on_host=on_host)
        penalty = 0.5 * 0.1 * np.log1p(np.abs(kernel.astype("float64")) / 0.1).sum()
        np.testing.assert_allclose(stats[0, 0], penalty, rtol=1e-6)
        assert stats[0, 1:].tolist() == [2, 0, 6]
        kernel[1, 0] = np.nan
        model.layers[0].kernel.assign(kernel)
        stats = measure(regularized_weights(model), 0.0, on_host=on_host)
        assert np.isnan(stats[0, 0]) and stats[0, 1:].tolist() == [2, 1, 6]

    def test_finite_weights_whose_sum_overflows_are_finite(self, on_host):
        model = _model([[3e38, 3e38, 0.0], [3e38, 0.0, 0.0]], [[0.0], [2.0], [-1.0]])
        stats = measure(regularized_weights(model), 0.0, on_host=on_host)
        assert stats[0, 1:].tolist() == [3, 0, 6]

    def test_no_weights(self):
        assert measure([], 0.0).shape == (0, 4)

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("tolerance", [0.0, 0.75])
    def test_host_equals_device_for_each_sum_regularizer(self, dtype, tolerance, monkeypatch):
        regularizers = [
            keras_l1.L1Regularizer(0.5),
            keras_l1.L1Regularizer(0.0),
            keras_l1.ElasticNetRegularizer(0.25, 0.125),
            keras.regularizers.L1(0.25),
            keras.regularizers.L2(0.5),
            keras.regularizers.L1L2(0.125, 0.25),
            keras.regularizers.L1L2(0.0, 0.25),
            keras.regularizers.L1L2(0.0, 0.0),
        ]
        values = [
            [[0.5, -0.0, 2.0], [-1.0, 0.0, 0.25], [0.0, 0.0, 4.0]],
            [[np.nan, 1.0, 0.0], [0.0, -np.inf, 0.5], [1.0, -2.0, 0.0]],
            [[3e38, 3e38, 0.0], [-0.5, 0.0, 1.0], [0.0, 0.0, 0.0]],
        ]
        if dtype == "float64":
            # Keras's own L1L2 before 3.11 multiplies a float64 sum by a float32
            # strength and fails; such a model cannot train either.
            regularizers = [r for r in regularizers if _computes_float64(r)]
        layers = [keras.Input((3,))]
        for regularizer in regularizers:
            for _ in values:
                layers.append(
                    keras.layers.Dense(
                        3, use_bias=False, kernel_regularizer=regularizer, dtype=dtype
                    )
                )
        model = keras.Sequential(layers)
        for index, layer in enumerate(model.layers):
            layer.kernel.assign(np.array(values[index % len(values)], dtype))
        weights = regularized_weights(model)
        monkeypatch.setattr(_weights, "_BLOCK", 4)
        # NumPy reads them all, unless told not to.
        assert _weights._measure_on_host(weights, tolerance)[1] == []
        everyone = list(range(len(weights)))
        assert _weights._measure_on_host(weights, tolerance, on_host=False)[1] == everyone
        on_host = measure(weights, tolerance)
        on_device = measure(weights, tolerance, on_host=False)
        # The sums are exact in float32 here (few terms, short mantissas),
        # so the two paths agree exactly, NaN and infinite penalties included.
        np.testing.assert_array_equal(on_host, on_device)
        l1_l2_zero = on_host[-3:]
        assert l1_l2_zero[:, 0].tolist() == [0.0, 0.0, 0.0]  # a constant, even for NaN
        assert np.isnan(on_host[4, 0])  # L1Regularizer(0.0) with a NaN weight: 0 * NaN

    def test_large_weight_equals_numpy(self):
        rng = np.random.default_rng(0)
        value = rng.standard_normal((700, 900)).astype("float32")
        value[rng.random(value.shape) < 0.6] = 0.0
        model = keras.Sequential(
            [
                keras.Input((700,)),
                keras.layers.Dense(
                    900,
                    use_bias=False,
                    kernel_regularizer=keras_l1.ElasticNetRegularizer(0.5, 0.25),
                ),
            ]
        )
        model.layers[0].kernel.assign(value)
        # Three blocks, the last one partial.
        assert 2 < value.size / _weights._BLOCK < 3
        stats = measure(regularized_weights(model), 0.0)
        exact = value.astype(np.float64)
        penalty = 0.5 * np.abs(exact).sum() + 0.25 * np.square(exact).sum()
        assert stats[0, 1:].tolist() == [np.count_nonzero(value == 0), 0, value.size]
        np.testing.assert_allclose(stats[0, 0], penalty, rtol=1e-6)

    def test_host_view_shares_the_weight_memory(self):
        model = _model([[3.0, -0.0, 0.0], [-1.0, 1.0, 2.0]], [[0.0], [2.0], [-1.0]])
        variable = model.layers[0].kernel
        first = _weights._host_view(variable.value)
        assert np.shares_memory(first, _weights._host_view(variable.value))
        np.testing.assert_array_equal(first, [[3.0, 0.0, 0.0], [-1.0, 1.0, 2.0]])


def _mixed_model():
    """One kernel per traceable regularizer type, one of them bfloat16."""
    regularizers = [
        keras_l1.L1Regularizer(0.5),
        keras_l1.ElasticNetRegularizer(0.25, 0.125),
        keras_l1.GroupLassoRegularizer(0.5, group_axis=0),
        keras.regularizers.L1(0.25),
        keras.regularizers.L2(0.5),
        keras.regularizers.L1L2(0.125, 0.25),
        keras_l1.L1Regularizer(2.0),
    ]
    layers = [keras.Input((4,))]
    for index, regularizer in enumerate(regularizers):
        dtype = "bfloat16" if index == len(regularizers) - 1 else None
        layers.append(
            keras.layers.Dense(4, use_bias=False, kernel_regularizer=regularizer, dtype=dtype)
        )
    return keras.Sequential(layers)


def _assign_sparse(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        value = rng.standard_normal((4, 4))
        value[rng.random((4, 4)) < 0.4] = 0.0
        value[1] = 0.0  # a zero group for group lasso
        layer.kernel.assign(value.astype("float32"))


def _numpy_stats(model, tolerance, factor=1.0):
    """`measure` in float64 NumPy, from the regularizers' formulas."""
    rows = []
    for layer in model.layers:
        w = np.asarray(keras.ops.convert_to_numpy(layer.kernel), np.float64)
        config = layer.kernel_regularizer.get_config()
        l1, l2 = config.get("l1", 0.0), config.get("l2", 0.0)
        if isinstance(layer.kernel_regularizer, keras_l1.GroupLassoRegularizer):
            penalty = l1 * np.sqrt(4) * np.linalg.norm(w, axis=1).sum()
        else:
            penalty = l1 * np.abs(w).sum() + l2 * np.square(w).sum()
        # The strength factor scales L1-type penalties only.
        scaled = 1.0 if type(layer.kernel_regularizer) is keras.regularizers.L2 else factor
        zeros = np.count_nonzero(np.abs(w) <= tolerance)
        rows.append([scaled * penalty, zeros, 0, w.size])
    return np.array(rows)


class TestRepeatedMeasure:
    @pytest.mark.parametrize("tolerance", [0.0, 0.3])
    def test_equals_numpy_across_weight_changes(self, tolerance, on_host):
        model = _mixed_model()
        _assign_sparse(model, 0)
        repeated = RepeatedMeasure(on_host=on_host)
        weights = regularized_weights(model)
        for call, (seed, strength) in enumerate([(0, 1.0), (0, 1.0), (1, 1.0), (2, 1.0)]):
            _assign_sparse(model, seed)
            stats = repeated(weights, tolerance)
            expected = _numpy_stats(model, tolerance, strength)
            # Zeros, non-finite counts and sizes are exact; penalties are
            # float32 sums of 16 terms.
            np.testing.assert_array_equal(stats[:, 1:], expected[:, 1:], err_msg=f"call {call}")
            np.testing.assert_allclose(stats[:, 0], expected[:, 0], rtol=1e-6, atol=0)
            # The compiled penalties may round differently from the eager ones
            # (elastic net's is XLA-compiled inside a TensorFlow graph).
            eager = measure(weights, tolerance, on_host=on_host)
            np.testing.assert_array_equal(stats[:, 1:], eager[:, 1:])
            np.testing.assert_allclose(stats[:, 0], eager[:, 0], rtol=2e-7, atol=0)

    def test_a_changed_measurement_is_measured_anew(self):
        # Compiled on TensorFlow and JAX from the second call on (bench_logging
        # measures what that buys); a new tolerance or regularizer must give
        # the new numbers, not those of an earlier compilation.
        model = _mixed_model()
        weights = regularized_weights(model)
        repeated = RepeatedMeasure(on_host=False)

        def check(seed, strength, tolerance):
            _assign_sparse(model, seed)
            stats = repeated(weights, tolerance)
            expected = _numpy_stats(model, tolerance, strength)
            np.testing.assert_array_equal(stats[:, 1:], expected[:, 1:])
            np.testing.assert_allclose(stats[:, 0], expected[:, 0], rtol=1e-6, atol=0)

        for seed in (0, 0, 1, 2):
            check(seed, 1.0, 0.0)
        for seed in (3, 4, 5):
            check(seed, 1.0, 0.3)
        model.layers[2].kernel.regularizer = keras_l1.GroupLassoRegularizer(0.25, group_axis=0)
        weights = regularized_weights(model)
        for _ in range(3):
            stats = repeated(weights, 0.3)
            w = keras.ops.convert_to_numpy(model.layers[2].kernel).astype(np.float64)
            penalty = 0.25 * 2.0 * np.linalg.norm(w, axis=1).sum()
            np.testing.assert_allclose(stats[2, 0], penalty, rtol=1e-6)

    def test_counts_non_finite_entries(self):
        model = _model([[np.inf, -np.inf, 0.0], [np.nan, 1.0, 0.0]], [[0.0], [2.0], [-1.0]])
        repeated = RepeatedMeasure()
        weights = regularized_weights(model)
        for _ in range(3):
            stats = repeated(weights, 0.0)
            assert stats[0, 1:].tolist() == [2, 3, 6]
            assert stats[1].tolist() == [1.25, 1, 0, 3]

    def test_new_weights_are_measured_not_the_traced_ones(self):
        repeated = RepeatedMeasure()
        first = _model([[3.0, -0.0, 0.0], [-1.0, 1.0, 2.0]], [[0.0], [2.0], [-1.0]])
        for _ in range(2):
            stats = repeated(regularized_weights(first), 0.0)
        second = _model([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], [[0.0], [0.0], [4.0]])
        for _ in range(3):
            stats = repeated(regularized_weights(second), 0.0)
            # 0.5 * (1 + 1 + 1 + 1 + 2) and 0.25 * 16.
            np.testing.assert_array_equal(stats, [[3.0, 1, 0, 6], [4.0, 2, 0, 3]])
        # A changed strength is a changed regularizer, not a stale trace.
        second.layers[1].kernel.regularizer = keras.regularizers.L2(0.5)
        for _ in range(2):
            stats = repeated(regularized_weights(second), 0.0)
            assert stats[1, 0] == 8.0

    def test_copies_and_pickles_measure_alike(self):
        model = _model([[3.0, -0.0, 0.0], [-1.0, 1.0, 2.0]], [[0.0], [2.0], [-1.0]])
        repeated = RepeatedMeasure()
        for _ in range(2):
            repeated(regularized_weights(model), 0.0)
        for copied in (copy.deepcopy(repeated), pickle.loads(pickle.dumps(repeated))):
            for _ in range(2):
                stats = copied(regularized_weights(model), 0.0)
                np.testing.assert_array_equal(stats, [[3.5, 2, 0, 6], [1.25, 1, 0, 3]])

    def test_custom_regularizer_is_called_every_time(self):
        calls = []

        class Custom(keras.regularizers.Regularizer):
            def __call__(self, w):
                calls.append(1)
                return 2.0 * keras.ops.sum(w)

        custom = Custom()

        model = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_regularizer=custom)]
        )
        model.layers[0].kernel.assign(np.array([[1.5], [0.0]], "float32"))
        repeated = RepeatedMeasure()
        for _ in range(3):
            stats = repeated(regularized_weights(model), 0.0)
            assert stats.tolist() == [[3.0, 1, 0, 2]]
        assert len(calls) == 3
