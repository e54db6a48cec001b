import json
import re

import keras
import numpy as np
import pytest

import keras_l1

ZEROS_X = np.zeros((4, 2), dtype="float32")
ZEROS_Y = np.zeros((4, 1), dtype="float32")


def ones_model(regularizer):
    """`w = [1, 1]` and zero data: only the penalty moves the weights."""
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(
                1, use_bias=False, kernel_initializer="ones", kernel_regularizer=regularizer
            ),
        ],
        name="ones",
    )


def expected_warmup(factors, l1=0.1, lr=0.1):
    """Loss per epoch and final weight for one full-batch step per epoch.

    With zero data the loss is the penalty at the configured strength,
    `l1 * (|w1| + |w2|)`, at the weights before the step, and each proximal
    step moves both weights `lr * f * l1` towards zero.
    """
    w, losses = 1.0, []
    for f in factors:
        losses.append(l1 * 2 * w)
        w -= lr * f * l1
    return losses, w


class TestL1Scheduler:
    @pytest.mark.parametrize("jit_compile", [False, True])
    @pytest.mark.parametrize("keras_builtin", [False, True], ids=["keras_l1_L1", "keras_L1"])
    def test_warmup_scales_the_proximal_step(self, jit_compile, keras_builtin):
        regularizer = keras.regularizers.L1(0.1) if keras_builtin else keras_l1.L1Regularizer(0.1)
        model = ones_model(regularizer)
        optimizer = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1))
        model.compile(optimizer, "mse", jit_compile=jit_compile)
        history = model.fit(
            ZEROS_X,
            ZEROS_Y,
            batch_size=4,
            epochs=6,
            verbose=0,
            callbacks=[keras_l1.L1Scheduler(warmup_epochs=4)],
        )
        factors = [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        losses, w = expected_warmup(factors)
        assert history.history["l1_factor"] == factors
        np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5, atol=1e-7)
        kernel = keras.ops.convert_to_numpy(model.layers[0].kernel).ravel()
        np.testing.assert_allclose(kernel, [w, w], rtol=1e-6)
        # The layer keeps the user's regularizer and strength.
        assert model.layers[0].kernel_regularizer is regularizer
        assert regularizer.get_config() == type(regularizer)(0.1).get_config()
        assert float(keras.ops.convert_to_numpy(optimizer.strength_factor)) == 1.0

    def test_needs_a_proximal_optimizer(self):
        model = ones_model(keras_l1.L1Regularizer(0.1))
        model.compile(keras.optimizers.SGD(0.1), "mse")
        with pytest.raises(ValueError, match="ProximalOptimizer.*optimizer=SGD"):
            model.fit(
                ZEROS_X, ZEROS_Y, verbose=0, callbacks=[keras_l1.L1Scheduler(warmup_epochs=2)]
            )
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.layers[0].kernel), 1.0)

    @pytest.mark.backends("tensorflow")
    def test_steps_traced_before_follow_the_factor(self):
        model = ones_model(keras_l1.L1Regularizer(0.1))
        model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        model.fit(ZEROS_X, ZEROS_Y, batch_size=4, epochs=1, verbose=0)
        assert model.evaluate(ZEROS_X, ZEROS_Y, verbose=0) == pytest.approx(0.1 * 2 * 0.99)
        history = model.fit(
            ZEROS_X,
            ZEROS_Y,
            batch_size=4,
            epochs=2,
            verbose=0,
            callbacks=[keras_l1.L1Scheduler(warmup_epochs=2)],
        )
        np.testing.assert_allclose(history.history["loss"], [0.1 * 2 * 0.99] * 2, rtol=1e-6)
        np.testing.assert_allclose(model.layers[0].kernel.numpy().ravel(), [0.985, 0.985])
        # Evaluation counts the penalty at the configured strength.
        assert model.evaluate(ZEROS_X, ZEROS_Y, verbose=0) == pytest.approx(0.1 * 2 * 0.985)

    def test_target_sparsity_settles_on_the_target(self):
        rng = np.random.default_rng(0)
        # Orthogonal columns: the Lasso solution soft-thresholds x'y / n, so
        # the survivors are the largest true coefficients.
        x = (np.linalg.qr(rng.normal(size=(256, 20)))[0] * 16).astype("float32")
        w = (0.7 ** np.arange(20) * rng.choice([-1, 1], 20)).astype("float32")
        y = (x @ w + 0.01 * rng.normal(size=256)).astype("float32")[:, None]
        model = keras.Sequential(
            [
                keras.Input((20,)),
                keras.layers.Dense(1, kernel_regularizer=keras_l1.L1Regularizer(0.01)),
            ]
        )
        model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        scheduler = keras_l1.L1Scheduler(target_sparsity=0.5)
        # Unshuffled: each backend shuffles with its own random stream.
        history = model.fit(
            x, y, epochs=20, batch_size=64, shuffle=False, verbose=0, callbacks=[scheduler]
        )
        # 20 weights: 0.5 is 10 exact zeros, held over the last epochs.
        assert history.history["sparsity"][-5:] == [0.5] * 5
        kernel = model.layers[0].kernel.numpy().ravel()
        assert np.sum(kernel == 0) == 10
        # The survivors are the 10 largest true coefficients.
        assert set(np.flatnonzero(kernel)) == set(range(10))
        assert scheduler.factor == history.history["l1_factor"][-1] > 1
        # Far from the target the factor doubles per epoch, never more.
        factors = history.history["l1_factor"]
        assert factors[:4] == [1.0, 2.0, 4.0, 8.0]
        assert np.all(np.diff(np.log(factors)) <= np.log(2) + 1e-12)

    def test_target_sparsity_steers_by_where_the_sparsity_is_heading(self):
        # Sparsity answers the strength with a lag: rising 0.2 per epoch
        # towards a 0.5 target, it will pass the target at the next epoch,
        # so at 0.4 the factor already goes down, where steering by the gap
        # alone (0.1) would still raise it. At 0.2 the factor doubles (the
        # most per epoch); at 0.4 the heading 0.6 overshoots, which halves
        # the gain: exp(2.5 * (0.5 - 0.6)).
        model = keras.Sequential(
            [
                keras.Input((20,)),
                keras.layers.Dense(
                    1, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.1)
                ),
            ]
        )
        model.compile(keras_l1.ProximalOptimizer("sgd"), "mse")
        scheduler = keras_l1.L1Scheduler(target_sparsity=0.5)
        scheduler.set_model(model)
        scheduler.on_train_begin()
        factors = []
        for epoch, zeros in enumerate((4, 8)):
            scheduler.on_epoch_begin(epoch)
            model.layers[0].kernel.assign(np.where(np.arange(20) < zeros, 0.0, 1.0)[:, None])
            logs = {}
            scheduler.on_epoch_end(epoch, logs)
            factors.append(logs["l1_factor"])
        scheduler.on_epoch_begin(2)
        factors.append(scheduler.factor)
        np.testing.assert_allclose(factors, [1.0, 2.0, 2.0 * np.exp(-0.25)], rtol=1e-6)

    @pytest.mark.parametrize(
        "make",
        [
            lambda: keras_l1.L1Regularizer(0.2),
            lambda: keras_l1.ElasticNetRegularizer(0.2, 0.1),
            lambda: keras_l1.GroupLassoRegularizer(0.2, group_axis=0),
        ],
        ids=["l1", "elastic_net", "group_lasso"],
    )
    def test_strength_factor_scales_the_proximal_step(self, make):
        rng = np.random.default_rng(0)
        w = rng.normal(size=(4, 3)).astype("float32")
        g = rng.normal(size=(4, 3)).astype("float32")
        regularizer = make()
        optimizer = keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.3))
        variable = keras.Variable(w)
        variable.regularizer = regularizer
        optimizer.build([variable])
        optimizer.strength_factor.assign(0.5)
        total = g + keras.ops.convert_to_numpy(regularizer.gradient(w))
        optimizer.apply([keras.ops.convert_to_tensor(total)], [variable])
        expected = keras.ops.convert_to_numpy(regularizer.prox(w - 0.3 * g, 0.5 * 0.3))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, atol=1e-6)
        assert any(v is optimizer.strength_factor for v in optimizer.variables)

    def test_saved_model_keeps_the_configured_strength(self, tmp_path, fresh_python):
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(
                    2, name="hidden", kernel_regularizer=keras_l1.L1Regularizer(0.1)
                ),
                keras.layers.Dense(1, name="out"),
            ]
        )
        model.compile(keras_l1.ProximalOptimizer("sgd"), "mse")
        x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
        model.fit(
            x,
            x[:, :1],
            epochs=3,
            verbose=0,
            callbacks=[keras_l1.L1Scheduler(warmup_epochs=2, target_sparsity=0.5)],
        )
        regularizer = model.get_layer("hidden").kernel_regularizer
        assert regularizer.get_config() == {"l1": 0.1}
        json.dumps(model.get_config())
        path = tmp_path / "scheduled.keras"
        model.save(path)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
        kernel = model.get_layer("hidden").kernel.numpy()
        np.save(tmp_path / "penalty.npy", np.float32(0.1) * np.abs(kernel).sum())
        result = fresh_python(
            f"""
            import numpy as np, keras, keras_l1
            model = keras.models.load_model({str(path)!r})
            hidden = model.get_layer("hidden")
            assert hidden.kernel_regularizer.get_config() == {{"l1": 0.1}}
            x = np.load({str(tmp_path / "x.npy")!r})
            np.testing.assert_allclose(model.predict(x, verbose=0),
                                       np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-6)
            penalty = float(sum(model.losses))
            np.testing.assert_allclose(penalty, np.load({str(tmp_path / "penalty.npy")!r}),
                                       rtol=1e-6)
            assert len(model.weights) == 4, [v.path for v in model.weights]
            print("ok")
            """
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == "ok"

    def test_invalid_arguments(self):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `warmup_epochs`: expected an integer >= 0. "
                "Received: warmup_epochs=-1"
            ),
        ):
            keras_l1.L1Scheduler(warmup_epochs=-1)
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `target_sparsity`: expected a float in [0, 1]. "
                "Received: target_sparsity=1.5"
            ),
        ):
            keras_l1.L1Scheduler(target_sparsity=1.5)
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `rate`: expected a positive finite float. "
                "Received: rate=0.0"
            ),
        ):
            keras_l1.L1Scheduler(rate=0.0)

    def test_model_without_l1_penalty_is_an_error(self):
        model = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(1, kernel_regularizer="l2")], name="l2_only"
        )
        model.compile(keras_l1.ProximalOptimizer("sgd"), "mse")
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `model`: expected a model with at least one L1-type "
                "regularizer (keras_l1's, or Keras's L1 / L1L2) on a trainable weight. "
                "Received: model='l2_only'"
            ),
        ):
            model.fit(ZEROS_X, ZEROS_Y, verbose=0, callbacks=[keras_l1.L1Scheduler()])
