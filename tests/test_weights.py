import keras
import numpy as np
import pytest

import keras_l1
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


class TestMeasure:
    @pytest.mark.parametrize("tolerance, zeros", [(0.0, (2, 1)), (1.5, (4, 2))])
    def test_closed_form(self, tolerance, zeros):
        model = _model([[3.0, -0.0, 0.0], [-1.0, 1.0, 2.0]], [[0.0], [2.0], [-1.0]])
        stats = measure(regularized_weights(model), tolerance)
        # 0.5 * (3 + 1 + 1 + 2) and 0.25 * (4 + 1).
        np.testing.assert_array_equal(stats, [[3.5, zeros[0], 0, 6], [1.25, zeros[1], 0, 3]])

    def test_counts_each_non_finite_entry(self):
        # +inf and -inf cancel to NaN in a sum; NaN must not count as zero.
        model = _model([[np.inf, -np.inf, 0.0], [np.nan, 1.0, 0.0]], [[0.0], [2.0], [-1.0]])
        stats = measure(regularized_weights(model), 0.0)
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

    def test_finite_weights_whose_sum_overflows_are_finite(self):
        model = _model([[3e38, 3e38, 0.0], [3e38, 0.0, 0.0]], [[0.0], [2.0], [-1.0]])
        stats = measure(regularized_weights(model), 0.0)
        assert stats[0, 1:].tolist() == [3, 0, 6]

    def test_no_weights(self):
        assert measure([], 0.0).shape == (0, 4)
