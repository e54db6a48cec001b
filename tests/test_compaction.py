import re

import keras
import numpy as np
import pytest

import keras_l1


def chain(functional, use_bias=True):
    layers = [
        keras.layers.Dense(6, activation="sigmoid", name="h1", use_bias=use_bias),
        keras.layers.Dropout(0.1, name="drop"),
        keras.layers.Dense(5, activation="relu", name="h2", use_bias=False),
        keras.layers.Activation("tanh", name="squash"),
        keras.layers.Dense(3, activation="softmax", name="out", use_bias=use_bias),
    ]
    if not functional:
        return keras.Sequential([keras.Input((8,), name="features"), *layers], name="chain")
    inputs = keras.Input((8,), name="features")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="chain")


def numpy(tensor):
    # A PyTorch output that requires grad has no implicit NumPy conversion.
    return keras.ops.convert_to_numpy(tensor)


def set_dead_parts(model, rng):
    """Inputs 1 and 4 dead; h1 unit 2 constant, unit 3 unused; h2 unit 0 constant, unit 4 unused."""
    w1 = rng.normal(size=(8, 6))
    w1[[1, 4], :] = 0
    w1[:, 2] = 0
    w2 = rng.normal(size=(6, 5))
    w2[3, :] = 0
    w2[:, 0] = 0
    w3 = rng.normal(size=(5, 3))
    w3[4, :] = 0
    model.get_layer("h1").kernel.assign(w1)
    model.get_layer("h2").kernel.assign(w2)
    model.get_layer("out").kernel.assign(w3)
    if model.get_layer("h1").use_bias:
        model.get_layer("h1").bias.assign(rng.normal(size=6))
        model.get_layer("out").bias.assign(rng.normal(size=3))


def refused(reason):
    return re.escape(
        "Invalid value for argument `model`: compact_model supports a built Sequential or "
        f"functional model with one input. Received: {reason}"
    )


def refused_layer(layer, reason):
    return re.escape(
        f"Invalid value for argument `model`: compact_model cannot compact layer {layer} "
        f"exactly: {reason}."
    )


class TestCompactModel:
    @pytest.mark.parametrize("functional", [False, True])
    @pytest.mark.parametrize("use_bias", [True, False])
    def test_removes_dead_inputs_and_units_exactly(self, functional, use_bias):
        rng = np.random.default_rng(0)
        model = chain(functional, use_bias)
        set_dead_parts(model, rng)
        compaction = keras_l1.compact_model(model)
        small, kept_inputs = compaction
        assert kept_inputs == [0, 2, 3, 5, 6, 7]
        assert type(small) is type(model) and small.name == "chain"
        assert [layer.name for layer in small.layers if layer.weights] == ["h1", "h2", "out"]
        assert compaction.units_after == {"inputs": 6, "h1": 4, "h2": 3, "out": 3}
        assert compaction.units_before == {"inputs": 8, "h1": 6, "h2": 5, "out": 3}
        # h1's constant unit 2 (sigmoid(b) != 0) moves into h2's bias, which h2
        # gains; h2's constant unit 0 gives tanh(relu(0)) = 0, so `out` gets no
        # bias it did not have.
        assert small.get_layer("h2").use_bias
        assert small.get_layer("out").use_bias is use_bias
        bias = int(use_bias)
        assert compaction.params_after == (6 * 4 + 4 * bias) + (4 * 3 + 3) + (3 * 3 + 3 * bias)
        assert compaction.params_before == model.count_params()
        x = rng.normal(size=(64, 8)).astype("float32")
        np.testing.assert_allclose(
            numpy(small(x[:, kept_inputs])), numpy(model(x)), rtol=1e-5, atol=1e-6
        )

    def test_digits_mlp_with_group_lasso(self):
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype("float32")
        group = keras_l1.GroupLassoRegularizer
        model = keras.Sequential(
            [
                keras.Input((64,)),
                # Rows of a kernel are the groups: whole inputs, then whole hidden units.
                keras.layers.Dense(
                    64, activation="relu", name="hidden", kernel_regularizer=group(3e-3, 0)
                ),
                keras.layers.Dense(
                    10, activation="softmax", name="output", kernel_regularizer=group(3e-3, 0)
                ),
            ]
        )
        model.compile(
            keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1, momentum=0.9)),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(x, y, epochs=10, batch_size=64, verbose=0)
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert kept_inputs == list(keras_l1.selected_features(model).indices)
        assert 0 < len(kept_inputs) < 64
        assert 0 < compaction.units_after["hidden"] < 64
        assert compaction.params_after < compaction.params_before / 3
        np.testing.assert_allclose(numpy(small(x[:, kept_inputs])), numpy(model(x)), atol=1e-6)
        noise = np.random.default_rng(0).uniform(size=(100, 64)).astype("float32")
        np.testing.assert_allclose(
            numpy(small(noise[:, kept_inputs])), numpy(model(noise)), atol=1e-6
        )
        # The compact model keeps the configs: it compiles and trains on.
        small.compile(keras_l1.ProximalOptimizer("sgd"), "sparse_categorical_crossentropy")
        small.fit(x[:, kept_inputs], y, epochs=1, verbose=0)
        summary = str(compaction)
        assert summary.startswith(
            f"compact_model '{model.name}': {compaction.params_before:,} -> "
            f"{compaction.params_after:,} parameters"
        )
        assert f"  inputs: 64 -> {len(kept_inputs)}" in summary

    def test_refuses_what_it_cannot_compact_exactly(self):
        class Subclassed(keras.Model):
            def __init__(self):
                super().__init__(name="sub")
                self.dense = keras.layers.Dense(1)

            def call(self, x):
                return self.dense(x)

        model = Subclassed()
        model(np.zeros((1, 2)))
        with pytest.raises(
            ValueError,
            match=refused("model='sub', a Subclassed, whose layer graph is not recorded"),
        ):
            keras_l1.compact_model(model)

        lora = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="lora")
        lora.layers[0].enable_lora(1)
        with pytest.raises(
            ValueError, match=refused_layer("'d' (Dense)", "it uses LoRA or quantization")
        ):
            keras_l1.compact_model(lora)

        with pytest.raises(
            TypeError,
            match=re.escape(
                "Invalid type for argument `model`: expected a Keras model. "
                "Received: model=3 of type int"
            ),
        ):
            keras_l1.compact_model(3)

    def test_a_constant_model_is_an_error(self):
        model = chain(functional=False)
        model.get_layer("h1").kernel.assign(np.zeros((8, 6)))
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `model`: every input of model 'chain' has all-zero "
                "outgoing weights, so its output is constant and there is no input to keep. "
                "Received: model='chain'"
            ),
        ):
            keras_l1.compact_model(model)
