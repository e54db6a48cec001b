import json
import math
import re

import keras
import numpy as np
import pytest

import keras_l1

KERNEL = np.array([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]], dtype="float32")


def small_model(kernel=KERNEL):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                2,
                name="hidden",
                kernel_regularizer=keras_l1.L1Regularizer(0.1),
                bias_regularizer=keras.regularizers.L1L2(0.01, 0.02),
            ),
            keras.layers.Dense(1, name="out"),
        ],
        name="small",
    )
    model.get_layer("hidden").kernel.assign(kernel)
    model.get_layer("hidden").bias.assign(np.array([0.5, 0.0], dtype="float32"))
    return model


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.first = keras.layers.Dense(
            2, name="first", kernel_regularizer=keras_l1.L1Regularizer(0.1)
        )
        self.second = keras.layers.Dense(1, name="second")

    def call(self, x):
        return self.second(self.first(x))


class TestSparsityReport:
    def test_rows_match_closed_forms(self):
        report = keras_l1.sparsity_report(small_model())
        kernel_row, bias_row = report.rows
        assert (kernel_row.layer, kernel_row.path, kernel_row.shape) == (
            "hidden",
            "hidden/kernel",
            (3, 2),
        )
        assert (kernel_row.size, kernel_row.zeros) == (6, 4)
        assert kernel_row.sparsity == pytest.approx(4 / 6)
        assert kernel_row.penalty == pytest.approx(0.1 * 3.0)
        assert (bias_row.path, bias_row.size, bias_row.zeros) == ("hidden/bias", 2, 1)
        assert bias_row.penalty == pytest.approx(0.01 * 0.5 + 0.02 * 0.25)
        assert report.total == {
            "size": 8,
            "zeros": 5,
            "sparsity": pytest.approx(5 / 8),
            "penalty": pytest.approx(0.31),
        }

    def test_prints_an_aligned_table(self):
        text = str(keras_l1.sparsity_report(small_model()))
        assert text == (
            "layer   weight         shape  size  zeros  sparsity  penalty\n"
            "hidden  hidden/kernel  3x2       6      4     66.7%      0.3\n"
            "hidden  hidden/bias    2         2      1     50.0%     0.01\n"
            "total                            8      5     62.5%     0.31"
        )

    def test_records_and_dict_are_plain_json(self):
        report = keras_l1.sparsity_report(small_model())
        records = report.to_records()
        assert records[0] == {
            "layer": "hidden",
            "path": "hidden/kernel",
            "shape": [3, 2],
            "size": 6,
            "zeros": 4,
            "sparsity": pytest.approx(4 / 6),
            "penalty": pytest.approx(0.3),
        }
        payload = json.loads(json.dumps(report.to_dict()))
        assert payload["tolerance"] == 0.0
        assert payload["total"]["zeros"] == 5
        assert [r["path"] for r in payload["weights"]] == ["hidden/kernel", "hidden/bias"]

    def test_tolerance_counts_small_weights_as_zero(self):
        kernel = np.array([[1e-4, 0.5], [0.0, -2e-4], [0.3, 0.0]], dtype="float32")
        report = keras_l1.sparsity_report(small_model(kernel), tolerance=1e-3)
        assert report.rows[0].zeros == 4
        assert keras_l1.sparsity_report(small_model(kernel)).rows[0].zeros == 2

    def test_every_model_kind_and_weight_kind(self):
        l1 = keras_l1.L1Regularizer
        inner = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(3, name="inner_dense", kernel_regularizer=l1(0.1)),
            ],
            name="inner",
        )
        tokens = keras.Input((5,), dtype="int32")
        x = keras.layers.Embedding(20, 8, name="embed", embeddings_regularizer=l1(0.1))(tokens)
        x = keras.layers.Conv1D(8, 2, name="conv", kernel_regularizer=l1(0.1))(x)
        x = keras.layers.LSTM(
            8, name="lstm", kernel_regularizer=l1(0.1), recurrent_regularizer=l1(0.1)
        )(x)
        outputs = inner(x)
        model = keras.Model(tokens, outputs)
        report = keras_l1.sparsity_report(model)
        paths = {row.path: row for row in report}
        assert set(paths) == {
            "embed/embeddings",
            "conv/kernel",
            "lstm/lstm_cell/kernel",
            "lstm/lstm_cell/recurrent_kernel",
            "inner/inner_dense/kernel",
        }
        assert paths["inner/inner_dense/kernel"].layer == "inner/inner_dense"
        assert paths["lstm/lstm_cell/kernel"].shape == (8, 32)
        assert paths["conv/kernel"].size == 2 * 8 * 8
        for row in report:
            variable = next(v for v in model.trainable_weights if v.path == row.path)
            assert row.penalty == pytest.approx(0.1 * np.abs(np.asarray(variable)).sum(), rel=1e-5)

        subclassed = Subclassed()
        subclassed(np.zeros((1, 4), "float32"))
        assert [row.path for row in keras_l1.sparsity_report(subclassed)] == ["first/kernel"]

    def test_non_finite_weight_makes_sparsity_nan(self):
        kernel = KERNEL.copy()
        kernel[0, 0] = np.nan
        report = keras_l1.sparsity_report(small_model(kernel))
        assert math.isnan(report.rows[0].sparsity)
        assert math.isnan(report.total["sparsity"])
        assert "nan" in str(report)

    def test_invalid_arguments(self):
        with pytest.raises(
            TypeError,
            match=re.escape(
                "Invalid type for argument `model`: expected a Keras model or layer. "
                "Received: model='model' of type str"
            ),
        ):
            keras_l1.sparsity_report("model")
        unbuilt = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `model`: expected a built model or layer (call it on "
                "data or call `build()` first). Received: model='unbuilt', not built"
            ),
        ):
            keras_l1.sparsity_report(unbuilt)
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `tolerance`: expected a non-negative finite float. "
                "Received: tolerance=-1.0"
            ),
        ):
            keras_l1.sparsity_report(small_model(), tolerance=-1.0)


def unmappable(name, reason):
    return re.escape(
        f"Cannot map the weights of '{name}' to input features: {reason}. Pass the Dense "
        "layer that reads the input features instead: `selected_features(layer)`."
    )


class TestSelectedFeatures:
    def test_indices_names_and_importance(self):
        model = small_model(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -1.0]], dtype="float32"))
        selected = keras_l1.selected_features(model, feature_names=["age", "bmi", "bp"])
        assert selected.indices == (0, 2)
        assert selected.names == ("age", "bp")
        assert list(selected) == ["age", "bp"] and len(selected) == 2 and "bp" in selected
        np.testing.assert_allclose(selected.importance, [5.0, 0.0, 1.0])
        assert selected.ranking() == [("age", 5.0), ("bp", 1.0)]
        assert selected.layer == "hidden" and selected.n_features == 3
        assert str(selected) == (
            "2 of 3 input features selected (layer 'hidden', tolerance 0)\n"
            "rank  feature  importance\n"
            "   1  age               5\n"
            "   2  bp                1"
        )
        assert selected.to_markdown() == (
            "**2 of 3** input features selected (layer `hidden`, tolerance 0)\n\n"
            "| rank | feature | importance |\n| ---: | --- | ---: |\n"
            "| 1 | age | 5 |\n| 2 | bp | 1 |"
        )
        assert json.loads(json.dumps(selected.to_dict()))["indices"] == [0, 2]

    def test_without_names_iterates_indices(self):
        selected = keras_l1.selected_features(small_model())
        assert list(selected) == [0, 2] and selected.names is None

    def test_tolerance(self):
        kernel = np.array([[1e-4, -1e-4], [0.0, 0.5], [0.2, 0.0]], dtype="float32")
        assert keras_l1.selected_features(small_model(kernel)).indices == (0, 1, 2)
        assert keras_l1.selected_features(small_model(kernel), tolerance=1e-3).indices == (1, 2)

    def test_maps_through_feature_preserving_layers(self):
        inputs = keras.Input((4,))
        x = keras.layers.Normalization(mean=0.0, variance=1.0)(inputs)
        x = keras.layers.Dropout(0.5)(x)
        x = keras.layers.Activation("tanh")(x)
        dense = keras.layers.Dense(2, kernel_regularizer=keras_l1.L1Regularizer(0.1))
        model = keras.Model(inputs, keras.layers.Dense(1)(dense(x)))
        dense.kernel.assign(np.array([[0, 0], [1, 0], [0, 0], [0, 2]], dtype="float32"))
        assert keras_l1.selected_features(model).indices == (1, 3)

        # Nested: the first regularized layer is inside an inner Sequential.
        inner = keras.Sequential([keras.Input((4,)), dense], name="inner")
        outer = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.1), inner])
        assert keras_l1.selected_features(outer).indices == (1, 3)

        # Flatten: features are the flat C-order indices of the image.
        images = keras.Sequential(
            [
                keras.Input((2, 2)),
                keras.layers.Flatten(),
                keras.layers.Dense(1, kernel_regularizer=keras_l1.L1Regularizer(0.1)),
            ]
        )
        images.layers[1].kernel.assign(np.array([[0], [1], [1], [0]], dtype="float32"))
        assert keras_l1.selected_features(images).indices == (1, 2)

    def test_a_layer_directly_for_subclassed_models(self):
        model = Subclassed()
        model(np.zeros((1, 4), "float32"))
        model.first.kernel.assign(np.array([[0, 0], [1, 0], [0, 0], [0, 1]], dtype="float32"))
        assert keras_l1.selected_features(model.first).indices == (1, 3)
        with pytest.raises(
            ValueError,
            match=unmappable(
                model.name,
                "Keras does not record which layer of a subclassed model reads its inputs (the "
                "first regularized layer is 'first')",
            ),
        ):
            keras_l1.selected_features(model)

    def test_unmappable_models_raise_clear_errors(self):
        l1 = keras_l1.L1Regularizer
        after_dense = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, name="plain"),
                keras.layers.Dense(1, name="sparse", kernel_regularizer=l1(0.1)),
            ],
            name="after_dense",
        )
        with pytest.raises(
            ValueError,
            match=unmappable(
                "after_dense",
                "the first regularized layer 'sparse' reads the output of layer 'plain' (Dense), "
                "not the input features",
            ),
        ):
            keras_l1.selected_features(after_dense)

        inputs = keras.Input((3,))
        x = keras.layers.LayerNormalization(name="mixing")(inputs)
        functional = keras.Model(
            inputs, keras.layers.Dense(1, name="sparse", kernel_regularizer=l1(0.1))(x)
        )
        with pytest.raises(
            ValueError,
            match=unmappable(
                functional.name,
                "the first regularized layer 'sparse' reads the output of layer 'mixing' "
                "(LayerNormalization), not the input features",
            ),
        ):
            keras_l1.selected_features(functional)

        conv = keras.Sequential(
            [
                keras.Input((5, 1)),
                keras.layers.Conv1D(2, 2, name="conv", kernel_regularizer=l1(0.1)),
            ],
            name="conv_model",
        )
        with pytest.raises(
            ValueError,
            match=unmappable(
                "conv", "it is a Conv1D, and only the rows of a Dense kernel are input features"
            ),
        ):
            keras_l1.selected_features(conv)

        a, b = keras.Input((2,)), keras.Input((2,))
        joined = keras.layers.Concatenate()([a, b])
        two = keras.Model([a, b], keras.layers.Dense(1, kernel_regularizer=l1(0.1))(joined))
        with pytest.raises(ValueError, match=unmappable(two.name, "the model has 2 inputs")):
            keras_l1.selected_features(two)

        plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="plain_model")
        with pytest.raises(
            ValueError,
            match=unmappable("plain_model", "the model has no regularized trainable weight"),
        ):
            keras_l1.selected_features(plain)

        bias_only = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(1, name="d", bias_regularizer=l1(0.1))],
            name="bias_only",
        )
        with pytest.raises(
            ValueError,
            match=unmappable(
                "bias_only",
                "its first regularized weight 'd/bias' is not the kernel of a Dense layer",
            ),
        ):
            keras_l1.selected_features(bias_only)

    def test_feature_names_are_checked(self):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `feature_names`: expected 3 names, one per input "
                "feature of layer 'hidden'. Received: 2 names"
            ),
        ):
            keras_l1.selected_features(small_model(), feature_names=["a", "b"])
        with pytest.raises(
            TypeError,
            match=re.escape(
                "Invalid type for argument `feature_names`: expected a sequence of names. "
                "Received: feature_names='abc' of type str"
            ),
        ):
            keras_l1.selected_features(small_model(), feature_names="abc")
        names = np.array(["a", "b", "c"])  # scikit-learn's `feature_names` is an array
        assert keras_l1.selected_features(small_model(), feature_names=names).names == ("a", "c")
