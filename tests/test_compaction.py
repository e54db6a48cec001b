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
        f"exactly: {reason}"
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

    @pytest.mark.parametrize("functional", [False, True])
    def test_a_layer_whose_every_unit_is_dead_keeps_one(self, functional):
        keras.utils.set_random_seed(0)
        model = chain(functional)
        model.get_layer("h2").kernel.assign(np.zeros((6, 5)))
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        # h2 outputs tanh(relu(0)) = 0, which "out" folds; h2 keeps unit 0,
        # whose zero kernel column leaves h1 unread but for its own unit 0.
        assert compaction.units_after == {"inputs": 8, "h1": 1, "h2": 1, "out": 3}
        assert kept_inputs == list(range(8))
        assert compaction.params_after == (8 + 1) + 1 + (1 + 1) * 3
        x = np.random.default_rng(1).normal(size=(5, 8)).astype("float32")
        assert_same_outputs(model, small, x, kept_inputs)

    @pytest.mark.parametrize(
        "round_to, h1, h2",
        # set_dead_parts leaves h1 4 of 6 units and h2 3 of 5; rounding keeps
        # the first dead ones: h1's constant unit 2 (then not folded into h2's
        # bias), h2's constant unit 0.
        [(1, 4, 3), (2, 4, 4), (3, 6, 3), (4, 4, 4), (5, 5, 5), (64, 6, 5)],
    )
    def test_round_to_keeps_a_multiple_of_units(self, round_to, h1, h2):
        rng = np.random.default_rng(0)
        model = chain(functional=True)
        set_dead_parts(model, rng)
        small, kept_inputs = compaction = keras_l1.compact_model(model, round_to=round_to)
        assert compaction.units_after == {"inputs": 6, "h1": h1, "h2": h2, "out": 3}
        h2_bias = h2 if h1 == 4 else 0  # the folded constant of h1's unit 2
        assert compaction.params_after == (6 + 1) * h1 + h1 * h2 + h2_bias + (h2 + 1) * 3
        x = rng.normal(size=(5, 8)).astype("float32")
        assert_same_outputs(model, small, x, kept_inputs)

    def test_round_to_is_validated(self):
        model = chain(functional=False)
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `round_to`: expected an integer >= 1. "
                "Received: round_to=0"
            ),
        ):
            keras_l1.compact_model(model, round_to=0)
        with pytest.raises(TypeError, match=re.escape("Received: round_to=8.0 of type float")):
            keras_l1.compact_model(model, round_to=8.0)

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


def assert_same_outputs(model, small, x, kept_inputs=None):
    expected = numpy(model(x, training=False))
    got = numpy(small(x if kept_inputs is None else x[:, kept_inputs], training=False))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def kill(layer, channels, bias=0.0, attribute="kernel"):
    """Zeroes the kernel slices of output `channels` of `layer` and sets their bias."""
    kernel = numpy(getattr(layer, attribute)).copy()
    kernel[..., channels] = 0
    getattr(layer, attribute).assign(kernel)
    if getattr(layer, "use_bias", False):
        values = numpy(layer.bias).copy()
        values[channels] = bias
        layer.bias.assign(values)


def randomize(model, rng):
    """Random biases and BatchNormalization statistics, so that no constant is 0 by chance."""
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(size=layer.bias.shape) * 0.1)
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, size))
            layer.beta.assign(rng.normal(size=size) * 0.1)
            layer.moving_mean.assign(rng.normal(size=size) * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size))


def images(shape, rng, batch=4):
    return rng.normal(size=(batch, *shape)).astype("float32")


class TestGraphModels:
    def test_a_hidden_softmax_keeps_its_units(self):
        rng = np.random.default_rng(0)
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, activation="softmax", name="soft"),
                keras.layers.Dense(2, name="out"),
            ]
        )
        kill(model.get_layer("soft"), [1])
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        # Unit 1 of a softmax is not constant: it depends on the other units.
        assert compaction.units_after == {"inputs": 3, "soft": 4, "out": 2}
        assert_same_outputs(model, small, images((3,), rng), kept_inputs)

    def test_sequence_input_keeps_its_channels(self):
        rng = np.random.default_rng(0)
        model = keras.Sequential(
            [keras.Input((5, 4)), keras.layers.Dense(3, name="d"), keras.layers.Dense(2)]
        )
        model.get_layer("d").kernel.assign(np.r_[np.zeros((1, 3)), rng.normal(size=(3, 3))])
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert kept_inputs == [0, 1, 2, 3]
        assert compaction.params_after == compaction.params_before
        assert_same_outputs(model, small, images((5, 4), rng))


class TestConvolutions:
    @pytest.mark.parametrize(
        "conv, shape",
        [
            (keras.layers.Conv1D, (10, 3)),
            (keras.layers.Conv2D, (6, 6, 3)),
            (keras.layers.Conv3D, (4, 4, 4, 3)),
        ],
    )
    def test_a_dead_filter_is_removed(self, conv, shape):
        rng = np.random.default_rng(0)
        inputs = keras.Input(shape)
        x = conv(6, 3, padding="same", activation="relu", name="c1")(inputs)
        x = conv(4, 3, padding="same", name="c2")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        # relu(-1) = 0: the filter outputs exact zeros, which padding does not change.
        kill(model.get_layer("c1"), [2], bias=-1.0)
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        window = 3 ** (len(shape) - 1)
        assert kept_inputs == [0, 1, 2]
        assert compaction.units_after == {"inputs": 3, "c1": 5, "c2": 4}
        # The filter, its bias and its slice of c2's kernel.
        assert compaction.params_before - compaction.params_after == window * 3 + 1 + window * 4
        assert_same_outputs(model, small, images(shape, rng))

    @pytest.mark.parametrize(
        "bias, padding, removed",
        [(-1.0, "same", True), (0.5, "same", False), (0.5, "valid", True), (0.5, "1x1", True)],
    )
    def test_a_constant_channel_folds_only_where_no_padding_is_seen(self, bias, padding, removed):
        rng = np.random.default_rng(1)
        inputs = keras.Input((7, 7, 3))
        x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
        size = 1 if padding == "1x1" else 3
        x = keras.layers.Conv2D(4, size, padding="same" if size == 1 else padding, name="c2")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        # The filter's output is relu(bias) everywhere: 0, or 0.5. With "same"
        # padding, c2's windows at the borders see 0.5 and padding zeros, so the
        # channel is not constant there and must stay.
        kill(model.get_layer("c1"), [2], bias=bias)
        small, _ = compaction = keras_l1.compact_model(model)
        dropped = 27 + 1 + size * size * 4
        assert compaction.params_before - compaction.params_after == dropped * removed
        assert_same_outputs(model, small, images((7, 7, 3), rng))
        if removed and bias > 0:
            # The constant moved into c2's bias.
            assert not np.allclose(
                numpy(small.get_layer("c2").bias), numpy(model.get_layer("c2").bias)
            )


class TestBatchNormalization:
    @pytest.mark.parametrize("constant", ["zero", "non-zero"])
    @pytest.mark.parametrize("head", ["pooled dense", "same conv"])
    def test_a_dead_conv_channel_through_batch_normalization(self, constant, head):
        rng = np.random.default_rng(2)
        inputs = keras.Input((6, 6, 3))
        x = keras.layers.Conv2D(5, 3, use_bias=False, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU(6.0, name="relu6")(x)
        if head == "pooled dense":
            x = keras.layers.GlobalAveragePooling2D()(x)
            x = keras.layers.Dense(3, name="head")(x)
        else:
            x = keras.layers.Conv2D(3, 3, padding="same", name="head")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("conv"), [1])
        bn = model.get_layer("bn")
        # BN maps the dead channel's zeros to beta - gamma * mean / sqrt(var + eps).
        beta, mean = numpy(bn.beta).copy(), numpy(bn.moving_mean).copy()
        beta[1], mean[1] = (0.0, 0.0) if constant == "zero" else (0.7, 0.0)
        bn.beta.assign(beta)
        bn.moving_mean.assign(mean)
        small, _ = compaction = keras_l1.compact_model(model)
        removed = constant == "zero" or head == "pooled dense"
        head_row = 3 if head == "pooled dense" else 9 * 3
        dropped = 27 + 4 + head_row  # filter, gamma/beta/mean/variance, the head's row
        assert compaction.params_before - compaction.params_after == dropped * removed
        assert compaction.units_after["conv"] == 5 - removed
        assert_same_outputs(model, small, images((6, 6, 3), rng))

    @pytest.mark.parametrize("beta", [0.0, 0.7])
    def test_a_zero_scale_makes_the_channel_its_offset(self, beta):
        # The filter is alive, but gamma = 0: the channel is `beta` everywhere.
        rng = np.random.default_rng(4)
        inputs = keras.Input((6, 6, 3))
        x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU(6.0, name="relu6")(x)
        x = keras.layers.Conv2D(3, 3, padding="same", name="head")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        bn = model.get_layer("bn")
        for variable, value in ((bn.gamma, 0.0), (bn.beta, beta)):
            values = numpy(variable).copy()
            values[2] = value
            variable.assign(values)
        small, _ = compaction = keras_l1.compact_model(model)
        # A zero channel goes; 0.7 meets the head's padding and stays.
        removed = beta == 0
        assert compaction.units_after["conv"] == 5 - removed
        assert compaction.params_before - compaction.params_after == removed * (28 + 4 + 27)
        assert_same_outputs(model, small, images((6, 6, 3), rng))


class TestDepthwiseAndSeparable:
    def test_a_dead_channel_crosses_depthwise_and_separable_convolutions(self):
        rng = np.random.default_rng(3)
        inputs = keras.Input((6, 6, 3))
        x = keras.layers.Conv2D(6, 1, name="c1")(inputs)
        x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.SeparableConv2D(5, 3, padding="same", name="sep")(x)
        x = keras.layers.GlobalMaxPooling2D()(x)
        x = keras.layers.Dense(2, name="head")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("c1"), [4])
        dw = model.get_layer("dw")
        dw_bias = numpy(dw.bias).copy()
        dw_bias[[8, 9]] = 0  # the two depthwise channels of input channel 4
        dw.bias.assign(dw_bias)
        kill(model.get_layer("sep"), [3], attribute="pointwise_kernel")
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.units_after == {"inputs": 3, "c1": 5, "sep": 4, "head": 2}
        channel = (3 + 1) + 2 * (9 + 1) + 2 * (9 + 5)  # c1 filter; dw and sep slices
        sep_filter = 10 + 1 + 2  # pointwise column over the 10 kept inputs, bias, head row
        assert compaction.params_before - compaction.params_after == channel + sep_filter
        assert_same_outputs(model, small, images((6, 6, 3), rng))

    def test_a_constant_folds_through_a_valid_separable_convolution(self):
        rng = np.random.default_rng(3)
        inputs = keras.Input((6, 6, 3))
        x = keras.layers.Conv2D(4, 1, activation="sigmoid", name="c1")(inputs)
        x = keras.layers.SeparableConv2D(2, 3, depth_multiplier=2, name="sep")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("c1"), [0], bias=0.0)  # sigmoid(0) = 0.5 everywhere
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.units_after == {"inputs": 3, "c1": 3, "sep": 2}
        # c1's filter and bias; sep's two 3x3 depthwise slices and 2 x 2 pointwise rows.
        assert compaction.params_before - compaction.params_after == 4 + 2 * 9 + 2 * 2
        assert_same_outputs(model, small, images((6, 6, 3), rng))

    def test_a_depthwise_bias_keeps_the_channel(self):
        rng = np.random.default_rng(3)
        inputs = keras.Input((6, 6, 3))
        x = keras.layers.Conv2D(4, 1, name="c1")(inputs)
        x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
        x = keras.layers.Conv2D(2, 3, padding="same", name="head")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("c1"), [0])
        small, _ = compaction = keras_l1.compact_model(model)
        # dw adds a non-zero bias: a constant, which head's "same" padding cannot fold.
        assert compaction.params_after == compaction.params_before
        assert_same_outputs(model, small, images((6, 6, 3), rng))


class TestFlatten:
    def test_a_dead_channel_removes_its_flat_positions(self):
        rng = np.random.default_rng(4)
        model = keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(3, name="head"),
            ],
            name="flat",
        )
        randomize(model, rng)
        kill(model.get_layer("conv"), [1])
        # Channel 2 is computed but unused: zero rows at its flat positions 2, 6, 10, 14.
        head = model.get_layer("head")
        kernel = numpy(head.kernel).copy()
        kernel[2::4] = 0
        head.kernel.assign(kernel)
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert type(small) is keras.Sequential and small.name == "flat"
        assert compaction.units_after == {"inputs": 2, "conv": 2, "head": 3}
        # Per channel: 18 kernel weights and a bias; 4 positions x 3 head units.
        assert compaction.params_before - compaction.params_after == 2 * (19 + 12)
        np.testing.assert_array_equal(
            numpy(small.get_layer("head").kernel), kernel[[i for i in range(16) if i % 4 in (0, 3)]]
        )
        assert_same_outputs(model, small, images((6, 6, 2), rng))


class TestMergeLayers:
    @pytest.mark.parametrize("merge", [keras.layers.Add, keras.layers.Multiply])
    def test_a_channel_goes_only_when_dead_on_every_branch(self, merge):
        rng = np.random.default_rng(5)
        inputs = keras.Input((6, 6, 3))
        a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
        b = keras.layers.Conv2D(4, 1, name="b")(inputs)
        x = merge(name="merge")([a, b])
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(3, 3, padding="same", name="head")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("a"), [1, 2])  # channel 1 dead on branch a only: kept
        kill(model.get_layer("b"), [2])
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.units_after == {"inputs": 3, "a": 3, "b": 3, "head": 3}
        assert compaction.params_before - compaction.params_after == (27 + 1) + (3 + 1) + 27
        assert_same_outputs(model, small, images((6, 6, 3), rng))

    def test_concatenate_maps_channels_to_offsets(self):
        rng = np.random.default_rng(6)
        inputs = keras.Input((5, 5, 3))
        a = keras.layers.Conv2D(2, 1, name="a")(inputs)
        b = keras.layers.Conv2D(3, 1, name="b")(inputs)
        x = keras.layers.Concatenate()([a, b])
        x = keras.layers.Conv2D(2, 1, name="head")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("b"), [0])  # channel 2 of the concatenation
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.params_before - compaction.params_after == 3 + 1 + 2
        np.testing.assert_array_equal(
            numpy(small.get_layer("head").kernel),
            numpy(model.get_layer("head").kernel)[:, :, [0, 1, 3, 4]],
        )
        assert_same_outputs(model, small, images((5, 5, 3), rng))

    def test_residual_block_on_a_table(self):
        rng = np.random.default_rng(7)
        inputs = keras.Input((6,))
        x = keras.layers.Dense(4, activation="relu", name="d1")(inputs)
        y = keras.layers.Dense(4, name="d2")(x)
        x = keras.layers.Add()([x, y])
        x = keras.layers.Dense(2, name="out")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("d1"), [3])  # zero into d2 and into the Add
        kill(model.get_layer("d2"), [3])
        kernel = numpy(model.get_layer("d1").kernel).copy()
        kernel[5] = 0
        model.get_layer("d1").kernel.assign(kernel)
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert kept_inputs == [0, 1, 2, 3, 4]
        assert compaction.units_after == {"inputs": 5, "d1": 3, "d2": 3, "out": 2}
        assert_same_outputs(model, small, images((6,), rng, batch=16), kept_inputs)


class TestEmbedding:
    def test_dead_and_constant_output_dimensions(self):
        rng = np.random.default_rng(8)
        inputs = keras.Input((5,), dtype="int32")
        x = keras.layers.Embedding(10, 4, name="emb")(inputs)
        x = keras.layers.GlobalAveragePooling1D()(x)
        x = keras.layers.Dense(2, name="head")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        table = numpy(model.get_layer("emb").embeddings).copy()
        table[:, 1] = 0
        table[:, 3] = 0.5  # a constant, folded into head's bias
        model.get_layer("emb").embeddings.assign(table)
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert kept_inputs == [0, 1, 2, 3, 4]
        assert compaction.units_after == {"inputs": 5, "emb": 2, "head": 2}
        assert compaction.params_before - compaction.params_after == 2 * (10 + 2)
        tokens = rng.integers(0, 10, size=(8, 5)).astype("int32")
        assert_same_outputs(model, small, tokens, kept_inputs)


class TestDigitsCNN:
    def test_group_lasso_on_filters_then_compaction(self):
        from sklearn.datasets import load_digits

        keras.utils.set_random_seed(0)
        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)

        def filters():
            # Groups along the last kernel axis: whole filters.
            return keras_l1.GroupLassoRegularizer(1e-2, group_axis=-1)

        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(
                    16,
                    3,
                    padding="same",
                    activation="relu",
                    name="conv1",
                    kernel_regularizer=filters(),
                ),
                keras.layers.BatchNormalization(name="bn"),
                keras.layers.Conv2D(
                    32, 3, activation="relu", name="conv2", kernel_regularizer=filters()
                ),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(10, activation="softmax", name="out"),
            ]
        )
        model.compile(
            keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.05, momentum=0.9)),
            "sparse_categorical_crossentropy",
        )
        model.fit(x, y, epochs=4, batch_size=64, verbose=0)
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert kept_inputs == [0]
        # Every filter the group lasso zeroed goes (conv1's constant ones are
        # folded through bn into conv2's bias: conv2 pads nothing).
        for name, filters in (("conv1", 16), ("conv2", 32)):
            kernel = numpy(model.get_layer(name).kernel)
            zero = int(np.sum(~np.any(kernel != 0, axis=(0, 1, 2))))
            assert zero > 0
            assert compaction.units_after[name] == filters - zero
        assert compaction.params_after < compaction.params_before
        assert_same_outputs(model, small, x)


class TestMobileNetV2:
    @staticmethod
    def model(rng):
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(
            alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=10
        )
        randomize(model, rng)
        return model

    @staticmethod
    def kill_expansion(model, block, dead):
        """Zeroes filters `dead` of the expansion, and after both its BatchNormalizations."""
        kill(model.get_layer(f"block_{block}_expand"), dead)
        for name in ("expand_BN", "depthwise_BN"):
            bn = model.get_layer(f"block_{block}_{name}")
            for variable in (bn.beta, bn.moving_mean):
                values = numpy(variable).copy()
                values[dead] = 0
                variable.assign(values)

    def test_dead_expansion_channels_are_removed(self):
        rng = np.random.default_rng(9)
        model = self.model(rng)
        expected = 0
        for block, dead in [(1, [0, 5]), (2, [3]), (5, [1, 2, 7]), (13, [10]), (4, [4])]:
            expand = model.get_layer(f"block_{block}_expand")
            self.kill_expansion(model, block, dead)
            if block == 4:
                # A non-zero constant after expand_BN meets the 3x3 depthwise
                # convolution's padding: the channel stays.
                beta = numpy(model.get_layer("block_4_expand_BN").beta).copy()
                beta[dead] = 0.5
                model.get_layer("block_4_expand_BN").beta.assign(beta)
                continue
            inputs = expand.kernel.shape[-2]
            outputs = model.get_layer(f"block_{block}_project").kernel.shape[-1]
            # expand filter, 2 BNs, 3x3 depthwise filter, project row.
            expected += len(dead) * (inputs + 4 + 9 + 4 + outputs)
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert kept_inputs == [0, 1, 2]
        assert compaction.params_before - compaction.params_after == expected
        assert compaction.units_after["block_4_expand"] == compaction.units_before["block_4_expand"]
        assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]
        assert_same_outputs(model, small, images((32, 32, 3), rng, batch=2))

    def test_round_to_keeps_multiples_of_eight(self):
        # Block 5 expands 16 channels to 96; 11 dead ones leave 85, and
        # round_to=8 keeps 88 (the first 3 dead ones too), in the expansion,
        # its two BatchNormalizations and the depthwise convolution.
        rng = np.random.default_rng(5)
        model = self.model(rng)
        self.kill_expansion(model, 5, list(range(0, 33, 3)))
        exact = keras_l1.compact_model(model)
        assert exact.units_after["block_5_expand"] == 85
        small, _ = compaction = keras_l1.compact_model(model, round_to=8)
        assert compaction.units_after["block_5_expand"] == 88
        assert small.get_layer("block_5_depthwise").kernel.shape[-2] == 88
        assert all(
            after % 8 == 0 or after == compaction.units_before[name]
            for name, after in compaction.units_after.items()
        )
        assert_same_outputs(model, small, images((32, 32, 3), rng, batch=2))

    def test_a_dead_expansion_keeps_one_channel(self):
        # Every expansion channel of block 15 is dead: zero filters, and zero
        # after both BatchNormalizations. The block adds its projection's
        # constant to the residual, so the projection stays whole, and the
        # expansion and depthwise layers keep one channel each.
        rng = np.random.default_rng(3)
        model = self.model(rng)
        expand = model.get_layer("block_15_expand")
        expand.kernel.assign(np.zeros(expand.kernel.shape))
        for name in ("expand_BN", "depthwise_BN"):
            bn = model.get_layer(f"block_15_{name}")
            for variable in (bn.beta, bn.moving_mean):
                variable.assign(np.zeros(variable.shape))
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.units_after["block_15_expand"] == 1
        assert small.get_layer("block_15_depthwise").kernel.shape[-2] == 1
        for name in ("block_15_project", "block_16_expand", "Conv_1"):
            assert compaction.units_after[name] == compaction.units_before[name]
        assert_same_outputs(model, small, images((32, 32, 3), rng, batch=2))


class TestRefusals:
    def test_channels_first(self):
        model = keras.Sequential(
            [
                keras.Input((3, 6, 6)),
                keras.layers.Conv2D(2, 3, data_format="channels_first", name="cf"),
            ]
        )
        with pytest.raises(
            ValueError, match=refused_layer("'cf' (Conv2D)", "it is channels_first")
        ):
            keras_l1.compact_model(model)

    def test_a_shared_layer(self):
        inputs = keras.Input((3,))
        shared = keras.layers.Dense(3, name="shared")
        model = keras.Model(inputs, shared(shared(inputs)))
        with pytest.raises(ValueError, match=refused_layer("'shared' (Dense)", "it is called 2")):
            keras_l1.compact_model(model)

    def test_unknown_layers_keep_the_channels_they_touch(self):
        rng = np.random.default_rng(10)
        inputs = keras.Input((4, 4, 2))
        x = keras.layers.Conv2D(4, 1, name="c0")(inputs)
        x = keras.layers.Conv2D(4, 1, name="c1")(x)
        x = keras.layers.Reshape((32, 2))(x)  # mixes c1's channels: no rule applies
        x = keras.layers.Lambda(lambda t: 2.0 * t)(x)
        x = keras.layers.Dense(3, name="d")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("c0"), [1])
        kill(model.get_layer("c1"), [2])
        small, _ = compaction = keras_l1.compact_model(model)
        # c0's dead filter goes (with c1's row); c1's stays, as Reshape reads it.
        assert compaction.units_after == {"inputs": 2, "c0": 3, "c1": 4, "d": 3}
        assert compaction.params_before - compaction.params_after == 2 + 1 + 4
        assert_same_outputs(model, small, images((4, 4, 2), rng))


class TestRecurrent:
    @pytest.mark.parametrize(
        "layer, gates",
        [
            (lambda: keras.layers.LSTM(5, return_sequences=True, name="rnn"), 4),
            (lambda: keras.layers.GRU(5, return_sequences=True, name="rnn"), 3),
            (lambda: keras.layers.GRU(5, reset_after=False, name="rnn"), 3),
        ],
    )
    def test_units_with_a_dead_candidate_and_unused_units_go(self, layer, gates):
        rng = np.random.default_rng(11)
        inputs = keras.Input((6, 4))
        x = keras.layers.Dense(3, name="embed")(inputs)
        x = layer()(x)
        x = keras.layers.Dense(2, name="head")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        cell = model.get_layer("rnn").cell
        candidate = 2 * 5 + 1  # unit 1's candidate column (gate 2)
        for variable in (cell.kernel, cell.recurrent_kernel, cell.bias):
            values = numpy(variable).copy()
            values[..., candidate] = 0
            variable.assign(values)
        # Unit 3 is read by nothing: neither head nor the other units' gates.
        recurrent = numpy(cell.recurrent_kernel).copy()
        recurrent[3] = 0
        cell.recurrent_kernel.assign(recurrent)
        head = numpy(model.get_layer("head").kernel).copy()
        head[[3, 4]] = 0  # unit 4 stays: the other units' gates read it
        model.get_layer("head").kernel.assign(head)
        # embed's unit 0 is read by no gate: it goes too.
        kernel = numpy(cell.kernel).copy()
        kernel[0] = 0
        cell.kernel.assign(kernel)
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.units_after == {"inputs": 4, "embed": 2, "rnn": 3, "head": 2}
        bias_rows = numpy(cell.bias).size // (gates * 5)
        # A unit's gate columns: kernel (over embed's 2 kept units), recurrent, bias.
        rnn_unit = gates * (2 + 5 + bias_rows)
        rnn_rows = gates * 3  # a unit's recurrent row over the 3 kept units
        embed_unit = 4 + 1 + gates * 5  # embed's column and bias, the rnn's kernel row
        expected = 2 * rnn_unit + 2 * rnn_rows + 2 * 2 + embed_unit
        assert compaction.params_before - compaction.params_after == expected
        assert_same_outputs(model, small, images((6, 4), rng))


class TestOperations:
    def test_an_operation_on_symbolic_tensors_keeps_its_channels(self):
        rng = np.random.default_rng(13)
        inputs = keras.Input((5,))
        x = keras.layers.Dense(4, name="d0")(inputs)
        x = keras.layers.Dense(4, name="d1")(x)
        x = keras.ops.tanh(x) + 1.0  # operations, not layers: no channel rule
        x = keras.layers.Dense(2, name="out")(x)
        model = keras.Model(inputs, x)
        randomize(model, rng)
        kill(model.get_layer("d0"), [1])
        kill(model.get_layer("d1"), [2])  # tanh(0) + 1 = 1, through an operation: stays
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert compaction.units_after == {"inputs": 5, "d0": 3, "d1": 4, "out": 2}
        assert_same_outputs(model, small, images((5,), rng, batch=8), kept_inputs)


class TestOutputs:
    def test_two_outputs_keep_their_channels(self):
        rng = np.random.default_rng(12)
        inputs = keras.Input((5,))
        x = keras.layers.Dense(4, activation="relu", name="shared")(inputs)
        first = keras.layers.Dense(2, name="first")(x)
        second = keras.layers.Dense(3, name="second")(x)
        model = keras.Model(inputs, [first, second])
        randomize(model, rng)
        kill(model.get_layer("shared"), [2])
        kill(model.get_layer("first"), [0])  # an output: it stays
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert compaction.units_after == {"inputs": 5, "shared": 3, "first": 2, "second": 3}
        x = images((5,), rng, batch=8)
        for got, expected in zip(small(x), model(x)):
            np.testing.assert_allclose(numpy(got), numpy(expected), rtol=0, atol=1e-5)

    def test_a_dict_of_outputs_stays_a_dict(self):
        rng = np.random.default_rng(13)
        inputs = keras.Input((5,))
        x = keras.layers.Dense(4, activation="relu", name="shared")(inputs)
        outputs = {"b": keras.layers.Dense(1, name="b")(x), "a": keras.layers.Dense(2, name="a")(x)}
        model = keras.Model(inputs, outputs)
        kill(model.get_layer("shared"), [1])
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.units_after["shared"] == 3
        x = images((5,), rng, batch=8)
        got, expected = small(x), model(x)
        assert isinstance(got, dict) and sorted(got) == ["a", "b"]
        for key in ("a", "b"):
            np.testing.assert_allclose(numpy(got[key]), numpy(expected[key]), rtol=0, atol=1e-5)


def adapted_normalization(rng):
    layer = keras.layers.Normalization(name="norm")
    layer.adapt(rng.normal(2.0, 3.0, size=(100, 4)).astype("float32"))
    return layer, 4


def adapted_discretization(rng):
    layer = keras.layers.Discretization(num_bins=4, name="bins")
    layer.adapt(rng.normal(size=(200, 3)).astype("float32"))
    return layer, 3


class TestPreprocessingLayers:
    @pytest.mark.parametrize(
        "adapted, seed, dead",
        [
            (adapted_normalization, 14, 0),
            # Keras's Discretization.adapt needs TensorFlow.
            pytest.param(adapted_discretization, 16, 2, marks=pytest.mark.backends("tensorflow")),
        ],
    )
    def test_an_adapted_layer_keeps_its_state(self, adapted, seed, dead):
        # Normalization's mean and Discretization's bins are neither config nor
        # variables alone: Keras's own loading hooks rebuild them.
        rng = np.random.default_rng(seed)
        preprocessing, features = adapted(rng)
        inputs = keras.Input((features,))
        x = keras.layers.Dense(3, activation="relu", name="hidden")(preprocessing(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        randomize(model, rng)
        kill(model.get_layer("hidden"), [dead])
        small, kept_inputs = compaction = keras_l1.compact_model(model)
        assert compaction.units_after["hidden"] == 2
        assert_same_outputs(model, small, images((features,), rng, batch=16), kept_inputs)

    # Keras's lookup layers need TensorFlow.
    @pytest.mark.backends("tensorflow")
    def test_an_adapted_lookup_keeps_its_vocabulary(self):
        lookup = keras.layers.IntegerLookup(name="lookup")
        lookup.adapt(np.array([[10, 20, 30, 40, 10, 20]]))
        inputs = keras.Input((4,), dtype="int64")
        x = keras.layers.Embedding(6, 3, name="embedding")(lookup(inputs))
        x = keras.layers.Dense(3, activation="relu", name="hidden")(keras.layers.Flatten()(x))
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        kill(model.get_layer("hidden"), [2])
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.units_after["hidden"] == 2
        ids = np.array([[10, 20, 30, 40], [40, 30, 99, 10]], dtype="int64")
        np.testing.assert_allclose(numpy(small(ids)), numpy(model(ids)), rtol=0, atol=1e-5)


class TestMasks:
    # A layer that receives a mask keeps its channels; the rest of the model
    # is compacted as usual.
    @pytest.mark.parametrize("masking", ["embedding", "masking"])
    @pytest.mark.parametrize("reader", ["lstm", "pooling"])
    def test_a_masked_layer_keeps_its_channels(self, masking, reader):
        rng = np.random.default_rng(15)
        if masking == "embedding":
            inputs = keras.Input((6,), dtype="int32")
            x = keras.layers.Embedding(5, 3, mask_zero=True, name="embedding")(inputs)
            data = np.array([[1, 2, 0, 0, 3, 4], [4, 4, 4, 0, 0, 0]], dtype="int32")
        else:
            inputs = keras.Input((6, 3))
            x = keras.layers.Masking(name="mask")(inputs)
            data = images((6, 3), rng, batch=2)
            data[0, 2:4] = 0.0
        if reader == "lstm":
            x = keras.layers.LSTM(4, name="reader")(x)
        else:
            x = keras.layers.GlobalAveragePooling1D(name="reader")(x)
        x = keras.layers.Dense(3, activation="relu", name="hidden")(x)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
        randomize(model, rng)
        kill(model.get_layer("hidden"), [1])
        small, _ = compaction = keras_l1.compact_model(model)
        assert compaction.units_after["hidden"] == 2
        if reader == "lstm":
            assert small.get_layer("reader").units == 4
        np.testing.assert_allclose(numpy(small(data)), numpy(model(data)), rtol=0, atol=1e-5)
