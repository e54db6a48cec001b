import keras
import numpy as np
import pytest

import keras_l1

L1 = 0.01


def numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def group_lasso(weight, channel_axis, l1=L1):
    """`l1 * sum_g sqrt(size_g) * ||w_g||`, one group per index along `channel_axis`."""
    weight = np.asarray(weight, dtype="float64")
    columns = np.moveaxis(weight, channel_axis, -1).reshape(-1, weight.shape[channel_axis])
    return l1 * np.sqrt(columns.shape[0]) * np.linalg.norm(columns, axis=0).sum()


def functional(input_shape, layer, dtype="float32"):
    inputs = keras.Input(input_shape, dtype=dtype, name="inputs")
    return keras.Model(inputs, layer(inputs), name="single")


def randomize(model, rng):
    # Non-zero biases and random kernels, so equal outputs mean equal weights.
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])


def random_input(model, rng, batch=3):
    tensor = model.inputs[0]
    shape = (batch, *tensor.shape[1:])
    if "int" in str(tensor.dtype):
        return rng.integers(0, 10, size=shape)
    return rng.normal(size=shape).astype("float32")


# (model, [(layer name, weight attribute, axis of the output channels in that weight)])
LAYERS = {
    "Dense": (
        lambda: functional((5,), keras.layers.Dense(4, name="layer")),
        [("layer", "kernel", 1)],
    ),
    "EinsumDense": (
        lambda: functional(
            (3, 5), keras.layers.EinsumDense("abc,cd->abd", (3, 4), bias_axes="d", name="layer")
        ),
        [("layer", "kernel", 1)],
    ),
    "Conv1D": (
        lambda: functional((7, 3), keras.layers.Conv1D(4, 3, name="layer")),
        [("layer", "kernel", 2)],
    ),
    "Conv2D": (
        lambda: functional((6, 6, 3), keras.layers.Conv2D(4, 3, name="layer")),
        [("layer", "kernel", 3)],
    ),
    "Conv3D": (
        lambda: functional((4, 4, 4, 2), keras.layers.Conv3D(3, 2, name="layer")),
        [("layer", "kernel", 4)],
    ),
    "Conv2DTranspose": (
        lambda: functional((4, 4, 3), keras.layers.Conv2DTranspose(5, 3, name="layer")),
        [("layer", "kernel", 2)],  # (kh, kw, filters, in_channels)
    ),
    "DepthwiseConv2D": (
        lambda: functional((6, 6, 3), keras.layers.DepthwiseConv2D(3, name="layer")),
        [("layer", "kernel", 2)],  # (kh, kw, in_channels, depth_multiplier=1)
    ),
    "SeparableConv2D": (
        lambda: functional((6, 6, 3), keras.layers.SeparableConv2D(5, 3, name="layer")),
        [("layer", "depthwise_kernel", 2), ("layer", "pointwise_kernel", 3)],
    ),
    "Embedding": (
        lambda: functional((4,), keras.layers.Embedding(10, 6, name="layer"), dtype="int32"),
        [("layer", "embeddings", 1)],
    ),
    "LSTM": (
        lambda: functional((5, 3), keras.layers.LSTM(4, name="layer")),
        [("layer", "kernel", 1), ("layer", "recurrent_kernel", 1)],
    ),
    "GRU": (
        lambda: functional((5, 3), keras.layers.GRU(4, name="layer")),
        [("layer", "kernel", 1), ("layer", "recurrent_kernel", 1)],
    ),
}


def weight_of(layer, attribute):
    if isinstance(layer, keras.layers.RNN):
        return getattr(layer.cell, attribute)
    return getattr(layer, attribute)


class TestRegularize:
    @pytest.mark.parametrize("name", sorted(LAYERS))
    def test_group_lasso_groups_are_the_output_channels(self, name):
        build, kernels = LAYERS[name]
        rng = np.random.default_rng(0)
        model = build()
        randomize(model, rng)
        copy = keras_l1.regularize(model, keras_l1.GroupLassoRegularizer(L1))
        expected = sorted(
            group_lasso(numpy(weight_of(copy.get_layer(layer), attribute)), axis)
            for layer, attribute, axis in kernels
        )
        # One penalty per kernel, and each is that kernel's group lasso over its channels.
        assert sorted(float(numpy(loss)) for loss in copy.losses) == pytest.approx(
            expected, rel=1e-5
        )

    @pytest.mark.parametrize("name", sorted(LAYERS))
    def test_same_weights_and_outputs(self, name):
        build, _ = LAYERS[name]
        rng = np.random.default_rng(1)
        model = build()
        randomize(model, rng)
        copy = keras_l1.regularize(model, keras_l1.L1Regularizer(L1))
        x = random_input(model, rng)
        np.testing.assert_array_equal(numpy(copy(x)), numpy(model(x)))
        for before, after in zip(model.weights, copy.weights, strict=True):
            assert before is not after
            np.testing.assert_array_equal(numpy(after), numpy(before))

    @pytest.mark.parametrize("name", sorted(LAYERS))
    def test_element_wise_penalty_is_copied_as_is(self, name):
        build, kernels = LAYERS[name]
        model = build()
        randomize(model, np.random.default_rng(2))
        copy = keras_l1.regularize(model, keras_l1.L1Regularizer(L1))
        expected = sorted(
            L1 * np.abs(numpy(weight_of(copy.get_layer(layer), attribute))).sum()
            for layer, attribute, _ in kernels
        )
        assert sorted(float(numpy(loss)) for loss in copy.losses) == pytest.approx(
            expected, rel=1e-5
        )

    def test_each_kernel_gets_its_own_copy(self):
        regularizer = keras_l1.GroupLassoRegularizer(L1, group_axis=0)
        model = LAYERS["SeparableConv2D"][0]()
        copy = keras_l1.regularize(model, regularizer)
        layer = copy.get_layer("layer")
        assert layer.depthwise_regularizer is not regularizer
        assert layer.depthwise_regularizer is not layer.pointwise_regularizer
        assert layer.depthwise_regularizer.get_config() == {"l1": L1, "group_axis": -2}
        assert layer.pointwise_regularizer.get_config() == {"l1": L1, "group_axis": -1}
        # The argument itself is left alone.
        assert regularizer.group_axis == 0

    def test_the_original_is_left_alone(self):
        model = LAYERS["Dense"][0]()
        copy = keras_l1.regularize(model, keras_l1.L1Regularizer(L1))
        assert model.get_layer("layer").kernel_regularizer is None
        assert model.losses == []
        copy.get_layer("layer").kernel.assign(np.zeros((5, 4)))
        assert np.abs(numpy(model.get_layer("layer").kernel)).sum() > 0

    def test_replaces_a_kernel_regularizer_and_keeps_the_bias_one(self):
        inputs = keras.Input((5,))
        outputs = keras.layers.Dense(
            4,
            kernel_regularizer=keras.regularizers.L2(1.0),
            bias_regularizer=keras.regularizers.L2(0.5),
            bias_initializer="ones",
            name="layer",
        )(inputs)
        model = keras.Model(inputs, outputs)
        copy = keras_l1.regularize(model, keras_l1.L1Regularizer(L1))
        kernel = numpy(copy.get_layer("layer").kernel)
        assert sorted(float(numpy(loss)) for loss in copy.losses) == pytest.approx(
            sorted([L1 * np.abs(kernel).sum(), 0.5 * 4])
        )

    def test_a_compiled_model_gives_a_compiled_copy_with_its_own_optimizer(self):
        model = LAYERS["Dense"][0]()
        model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        copy = keras_l1.regularize(model, keras_l1.L1Regularizer(L1))
        assert isinstance(copy.optimizer, keras_l1.ProximalOptimizer)
        assert copy.optimizer is not model.optimizer
        x, y = np.ones((4, 5), "float32"), np.zeros((4, 4), "float32")
        kernel = numpy(copy.get_layer("layer").kernel)
        copy.fit(x, y, verbose=0)
        assert not np.array_equal(numpy(copy.get_layer("layer").kernel), kernel)
        np.testing.assert_array_equal(numpy(model.get_layer("layer").kernel), kernel)

    def test_sequential_stays_sequential_with_its_names(self):
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(5, activation="relu", name="hidden"),
                keras.layers.Dropout(0.2, name="drop"),
                keras.layers.Dense(2, name="out"),
            ],
            name="mlp",
        )
        copy = keras_l1.regularize(model, keras_l1.L1Regularizer(L1))
        assert isinstance(copy, keras.Sequential)
        assert copy.name == "mlp"
        assert [layer.name for layer in copy.layers] == ["hidden", "drop", "out"]
        assert len(copy.losses) == 2

    def test_nested_and_shared_layers(self):
        rng = np.random.default_rng(3)
        inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")])
        shared = keras.layers.Dense(4, name="shared")
        inputs = keras.Input((4,))
        outputs = inner(shared(shared(inputs)))
        model = keras.Model(inputs, outputs)
        randomize(model, rng)
        copy = keras_l1.regularize(model, keras_l1.L1Regularizer(L1))
        x = rng.normal(size=(5, 4)).astype("float32")
        np.testing.assert_array_equal(numpy(copy(x)), numpy(model(x)))
        # The shared layer is still one layer, with one penalty.
        inner_copy = next(layer for layer in copy.layers if isinstance(layer, keras.Sequential))
        expected = [
            L1 * np.abs(numpy(copy.get_layer("shared").kernel)).sum(),
            L1 * np.abs(numpy(inner_copy.get_layer("inner_dense").kernel)).sum(),
        ]
        assert sorted(float(numpy(loss)) for loss in copy.losses) == pytest.approx(sorted(expected))

    def test_saved_and_loaded_with_its_groups(self, tmp_path):
        rng = np.random.default_rng(4)
        model = LAYERS["SeparableConv2D"][0]()
        randomize(model, rng)
        copy = keras_l1.regularize(model, keras_l1.GroupLassoRegularizer(L1))
        copy.save(tmp_path / "copy.keras")
        loaded = keras.saving.load_model(tmp_path / "copy.keras")
        assert loaded.get_layer("layer").depthwise_regularizer.group_axis == -2
        x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
        np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))
        assert sorted(float(numpy(loss)) for loss in loaded.losses) == pytest.approx(
            sorted(float(numpy(loss)) for loss in copy.losses)
        )


class TestLayersArgument:
    @staticmethod
    def model():
        return keras.Sequential(
            [
                keras.Input((6, 6, 3)),
                keras.layers.Conv2D(4, 3, name="conv"),
                keras.layers.BatchNormalization(name="bn"),
                keras.layers.DepthwiseConv2D(3, name="depthwise"),
                keras.layers.GlobalAveragePooling2D(name="pool"),
                keras.layers.Dense(2, name="out"),
            ]
        )

    @staticmethod
    def regularized(copy):
        return sorted(
            layer.name
            for layer in copy.layers
            if getattr(layer, "kernel_regularizer", None) is not None
            or getattr(layer, "depthwise_regularizer", None) is not None
            or getattr(layer, "gamma_regularizer", None) is not None
        )

    def test_none_is_every_prunable_layer(self):
        copy = keras_l1.regularize(self.model(), keras_l1.L1Regularizer(L1))
        assert self.regularized(copy) == ["bn", "conv", "depthwise", "out"]

    def test_names(self):
        copy = keras_l1.regularize(
            self.model(), keras_l1.L1Regularizer(L1), layers=["depthwise", "out"]
        )
        assert self.regularized(copy) == ["depthwise", "out"]
        assert len(copy.losses) == 2

    def test_predicate(self):
        copy = keras_l1.regularize(
            self.model(),
            keras_l1.L1Regularizer(L1),
            layers=lambda layer: isinstance(layer, keras.layers.Conv2D),
        )
        assert self.regularized(copy) == ["conv"]

    def test_unknown_name(self):
        with pytest.raises(ValueError, match=r"`layers`.*'dense_9'"):
            keras_l1.regularize(
                self.model(), keras_l1.L1Regularizer(L1), layers=["conv", "dense_9"]
            )

    def test_name_without_a_kernel(self):
        with pytest.raises(ValueError, match=r"`layers`.*'pool'.*GlobalAveragePooling2D"):
            keras_l1.regularize(self.model(), keras_l1.L1Regularizer(L1), layers=["pool"])

    def test_batch_normalization_gets_one_group_per_channel(self):
        copy = keras_l1.regularize(self.model(), keras_l1.GroupLassoRegularizer(L1))
        bn = copy.get_layer("bn")
        for regularizer in (bn.gamma_regularizer, bn.beta_regularizer):
            assert type(regularizer) is keras_l1.L1Regularizer
            assert regularizer.get_config() == {"l1": L1}
        # |gamma| + |beta| summed: 4 ones and 4 zeros.
        assert float(bn.gamma_regularizer(bn.gamma)) == pytest.approx(4 * L1)
        assert float(bn.beta_regularizer(bn.beta)) == 0.0

    @pytest.mark.parametrize("layers", ["conv", 3])
    def test_neither_names_nor_callable(self, layers):
        with pytest.raises(TypeError, match=r"`layers`.*list of layer names.*callable"):
            keras_l1.regularize(self.model(), keras_l1.L1Regularizer(L1), layers=layers)


class TestErrors:
    @pytest.mark.parametrize(
        "regularizer",
        [keras_l1.L1Regularizer, "l1", 0.01, lambda w: keras.ops.sum(w), None],
        ids=["class", "string", "float", "function", "None"],
    )
    def test_not_a_regularizer(self, regularizer):
        model = LAYERS["Dense"][0]()
        with pytest.raises(TypeError, match=r"`regularizer`.*Regularizer.*Received: regularizer="):
            keras_l1.regularize(model, regularizer)

    def test_subclassed_model(self):
        class Subclassed(keras.Model):
            def __init__(self):
                super().__init__(name="custom")
                self.dense = keras.layers.Dense(2)

            def call(self, x):
                return self.dense(x)

        model = Subclassed()
        model(np.zeros((1, 3), "float32"))
        with pytest.raises(ValueError, match=r"`model`.*Sequential or functional.*'custom'"):
            keras_l1.regularize(model, keras_l1.L1Regularizer(L1))

    def test_not_a_model(self):
        with pytest.raises(TypeError, match=r"`model`.*Keras model.*Dense"):
            keras_l1.regularize(keras.layers.Dense(2), keras_l1.L1Regularizer(L1))

    def test_unbuilt_sequential(self):
        model = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
        with pytest.raises(ValueError, match=r"`model`.*built.*'unbuilt'"):
            keras_l1.regularize(model, keras_l1.L1Regularizer(L1))


class TestApplications:
    def test_mobilenet_v2(self):
        rng = np.random.default_rng(5)
        model = keras.applications.MobileNetV2(
            alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=10
        )
        copy = keras_l1.regularize(model, keras_l1.GroupLassoRegularizer(L1))
        convs = [layer for layer in copy.layers if type(layer) is keras.layers.Conv2D]
        depthwise = [layer for layer in copy.layers if type(layer) is keras.layers.DepthwiseConv2D]
        dense = [layer for layer in copy.layers if type(layer) is keras.layers.Dense]
        norms = [layer for layer in copy.layers if type(layer) is keras.layers.BatchNormalization]
        assert (len(convs), len(depthwise), len(dense), len(norms)) == (35, 17, 1, 52)
        assert len(copy.losses) == 35 + 17 + 1 + 2 * 52
        expected = sorted(
            [group_lasso(numpy(layer.kernel), -1) for layer in convs + dense]
            + [group_lasso(numpy(layer.kernel), -2) for layer in depthwise]
            # Scale and offset: L1 of ones and of zeros.
            + [L1 * layer.gamma.shape[0] for layer in norms]
            + [0.0] * len(norms)
        )
        assert sorted(float(numpy(loss)) for loss in copy.losses) == pytest.approx(
            expected, rel=1e-4
        )
        x = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
        np.testing.assert_array_equal(numpy(copy(x)), numpy(model(x)))


class TestTraining:
    def test_group_lasso_and_prox_zero_whole_units(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 8)).astype("float32")
        y = (x[:, :2] @ np.array([[1.0], [-2.0]])).astype("float32")
        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu", name="hidden"),
                keras.layers.Dense(1, name="out"),
            ]
        )
        copy = keras_l1.regularize(model, keras_l1.GroupLassoRegularizer(0.05), layers=["hidden"])
        copy.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.05)), loss="mse")
        copy.fit(x, y, batch_size=32, epochs=20, verbose=0)
        kernel = numpy(copy.get_layer("hidden").kernel)
        dead = (kernel == 0).all(axis=0)
        assert dead.sum() >= 4
        # Zeros come in whole units: a living unit keeps every incoming weight.
        assert (kernel[:, ~dead] != 0).all()
