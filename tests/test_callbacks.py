import csv
import math
import os
import re
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_l1
from tests._events import read_descriptions
from tests._events import read_layout
from tests._events import read_scalars
from tests._events import read_tags


def data(n=32, features=6, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x[:, :outputs] * 2.0 + 0.1 * rng.normal(size=(n, outputs))).astype("float32")
    return x, y


def two_layer_model(optimizer="sgd"):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                4,
                name="hidden",
                kernel_regularizer=keras_l1.L1Regularizer(0.05),
                bias_regularizer=keras.regularizers.L1L2(0.01, 0.02),
            ),
            keras.layers.Dense(1, name="out", kernel_regularizer=keras.regularizers.L1(0.03)),
        ]
    )
    model.compile(keras_l1.ProximalOptimizer(optimizer), "mse")
    return model


def expected_values(model):
    """Penalty and sparsity recomputed by hand from the current weights."""
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    k1 = keras.ops.convert_to_numpy(hidden.kernel)
    b1 = keras.ops.convert_to_numpy(hidden.bias)
    k2 = keras.ops.convert_to_numpy(out.kernel)
    penalties = {
        "hidden": 0.05 * np.abs(k1).sum() + 0.01 * np.abs(b1).sum() + 0.02 * (b1**2).sum(),
        "out": np.float32(0.03) * np.abs(k2).sum(),
    }
    zeros = {"hidden": (k1 == 0).sum() + (b1 == 0).sum(), "out": (k2 == 0).sum()}
    sizes = {"hidden": k1.size + b1.size, "out": k2.size}
    return penalties, zeros, sizes


class TestSparsityLogger:
    def test_logs_match_hand_computation(self):
        x, y = data()
        model = two_layer_model(keras.optimizers.SGD(0.1))
        history = model.fit(
            x, y, epochs=3, batch_size=8, verbose=0, callbacks=[keras_l1.SparsityLogger()]
        )
        penalties, zeros, sizes = expected_values(model)
        np.testing.assert_allclose(
            history.history["penalty"][-1], sum(penalties.values()), rtol=1e-5
        )
        np.testing.assert_allclose(
            history.history["penalty"][-1],
            sum(float(v) for v in model.losses),
            rtol=1e-6,
        )
        assert history.history["sparsity"][-1] == sum(zeros.values()) / sum(sizes.values())
        assert len(history.history["sparsity"]) == 3

    def test_tolerance_counts_small_weights(self):
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(
                    1,
                    use_bias=False,
                    kernel_regularizer=keras_l1.L1Regularizer(0.1),
                    kernel_initializer=keras.initializers.Constant([[0.0], [1e-4], [0.5], [-2.0]]),
                ),
            ]
        )
        model.compile("sgd", "mse")
        logs = {}
        logger = keras_l1.SparsityLogger(tolerance=1e-3)
        logger.set_model(model)
        logger.on_epoch_end(0, logs)
        assert logs["sparsity"] == 0.5
        np.testing.assert_allclose(logs["penalty"], 0.1 * 2.5001, rtol=1e-6)

    def test_val_data_loss_is_exact(self):
        x, y = data(40)
        model = two_layer_model(keras.optimizers.SGD(0.05))
        history = model.fit(
            x,
            y,
            epochs=2,
            batch_size=8,
            validation_data=(x[:16], y[:16]),
            verbose=0,
            callbacks=[keras_l1.SparsityLogger()],
        )
        prediction = keras.ops.convert_to_numpy(model(x[:16]))
        mse = np.mean((prediction - y[:16]) ** 2)
        np.testing.assert_allclose(history.history["val_data_loss"][-1], mse, rtol=1e-4)

    @pytest.mark.tensorflow  # TensorBoard events
    def test_csv_logger_early_stopping_and_keras_tensorboard_see_totals(self, tmp_path):
        x, y = data()
        model = two_layer_model(keras.optimizers.SGD(0.1))
        csv_path = tmp_path / "log.csv"
        tb_dir = tmp_path / "tb"
        stopper = keras.callbacks.EarlyStopping(monitor="sparsity", mode="max", patience=100)
        history = model.fit(
            x,
            y,
            epochs=2,
            batch_size=8,
            verbose=0,
            callbacks=[
                keras_l1.SparsityLogger(),
                keras.callbacks.CSVLogger(str(csv_path)),
                stopper,
                keras.callbacks.TensorBoard(str(tb_dir)),
            ],
        )
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
        assert [float(r["sparsity"]) for r in rows] == history.history["sparsity"]
        np.testing.assert_allclose(
            [float(r["penalty"]) for r in rows], history.history["penalty"], rtol=1e-6
        )
        assert stopper.best == max(history.history["sparsity"])
        scalars = read_scalars(str(tb_dir / "train"))
        np.testing.assert_allclose(
            [v for _, v in scalars["epoch_penalty"]], history.history["penalty"], rtol=1e-6
        )

    def test_progress_bar_shows_values(self, capsys):
        x, y = data()
        model = two_layer_model()
        model.fit(x, y, epochs=1, verbose=2, callbacks=[keras_l1.SparsityLogger()])
        printed = capsys.readouterr().out
        assert re.search(r" penalty: \d+\.\d+", printed)
        assert re.search(r"sparsity: \d+\.\d+", printed)

    @pytest.mark.tensorflow  # TensorBoard events
    def test_event_files_hold_per_layer_and_total_values(self, tmp_path):
        x, y = data()
        model = two_layer_model(keras.optimizers.SGD(0.1))
        logger = keras_l1.SparsityLogger(log_dir=str(tmp_path), histogram_freq=1)
        history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[logger])
        scalars = read_scalars(str(tmp_path / "sparsity"))
        penalties, zeros, sizes = expected_values(model)
        assert sorted(scalars) == [
            "penalty",
            "penalty/hidden",
            "penalty/out",
            "sparsity",
            "sparsity/hidden",
            "sparsity/out",
        ]
        for name in ("hidden", "out"):
            assert [step for step, _ in scalars[f"sparsity/{name}"]] == [0, 1, 2]
            np.testing.assert_allclose(scalars[f"penalty/{name}"][-1][1], penalties[name], 1e-5)
            assert scalars[f"sparsity/{name}"][-1][1] == pytest.approx(
                zeros[name] / sizes[name], abs=1e-7
            )
        np.testing.assert_allclose(
            [v for _, v in scalars["penalty"]], history.history["penalty"], rtol=1e-6
        )
        assert [v for _, v in scalars["sparsity"]] == pytest.approx(
            history.history["sparsity"], abs=1e-7
        )
        histograms = read_tags(str(tmp_path / "sparsity"), "histograms")
        assert sorted(histograms) == [
            "hidden/bias/histogram",
            "hidden/kernel/histogram",
            "out/kernel/histogram",
        ]
        assert [step for step, _ in histograms["out/kernel/histogram"]] == [0, 1, 2]

    @pytest.mark.tensorflow  # TensorBoard events
    def test_reuse_across_fits_continues_steps(self, tmp_path):
        x, y = data()
        model = two_layer_model()
        logger = keras_l1.SparsityLogger(log_dir=str(tmp_path))
        model.fit(x, y, epochs=2, verbose=0, callbacks=[logger])
        model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[logger])
        steps = [s for s, _ in read_scalars(str(tmp_path / "sparsity"))["sparsity"]]
        assert steps == [0, 1, 2, 3]

    @pytest.mark.tensorflow  # TensorBoard events
    def test_events_readable_after_interrupt(self, tmp_path):
        x, y = data()
        model = two_layer_model()

        class Interrupt(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if self.params and batch == 1 and self._epoch == 2:
                    raise KeyboardInterrupt

            def on_epoch_begin(self, epoch, logs=None):
                self._epoch = epoch

        # Keep the logger alive: only an explicit flush, not a finalizer, may
        # have put the finished epochs on disk.
        logger = keras_l1.SparsityLogger(log_dir=str(tmp_path))
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[logger, Interrupt()])
        steps = [s for s, _ in read_scalars(str(tmp_path / "sparsity"))["penalty"]]
        assert steps == [0, 1]

    def test_nested_model_shared_layer_and_embedding(self):
        shared = keras.layers.Dense(
            3, name="shared", kernel_regularizer=keras_l1.L1Regularizer(0.1)
        )
        inner = keras.Sequential([keras.Input((5,)), shared], name="inner")
        tokens = keras.Input((2,), dtype="int32")
        features = keras.Input((5,))
        embedded = keras.layers.Embedding(
            7, 3, name="embed", embeddings_regularizer=keras_l1.L1Regularizer(0.2)
        )(tokens)
        merged = keras.layers.Concatenate()(
            [keras.layers.Flatten()(embedded), inner(features), shared(features)]
        )
        model = keras.Model([tokens, features], keras.layers.Dense(1)(merged))
        logs = {}
        logger = keras_l1.SparsityLogger()
        logger.set_model(model)
        logger.on_epoch_end(0, logs)
        kernel = keras.ops.convert_to_numpy(shared.kernel)
        table = keras.ops.convert_to_numpy(model.get_layer("embed").embeddings)
        expected = 0.1 * np.abs(kernel).sum() + 0.2 * np.abs(table).sum()
        np.testing.assert_allclose(logs["penalty"], expected, rtol=1e-6)
        np.testing.assert_allclose(logs["penalty"], sum(float(v) for v in model.losses), 1e-6)

    def test_recurrent_weights(self):
        model = keras.Sequential(
            [
                keras.Input((3, 2)),
                keras.layers.LSTM(
                    2,
                    kernel_regularizer=keras_l1.L1Regularizer(0.1),
                    recurrent_regularizer=keras_l1.L1Regularizer(0.2),
                ),
            ]
        )
        logs = {}
        logger = keras_l1.SparsityLogger()
        logger.set_model(model)
        logger.on_epoch_end(0, logs)
        cell = model.layers[0].cell
        expected = (
            0.1 * np.abs(keras.ops.convert_to_numpy(cell.kernel)).sum()
            + 0.2 * np.abs(keras.ops.convert_to_numpy(cell.recurrent_kernel)).sum()
        )
        np.testing.assert_allclose(logs["penalty"], expected, rtol=1e-6)

    def test_no_regularizer_warns_once(self):
        x, y = data()
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        logger = keras_l1.SparsityLogger()
        with pytest.warns(UserWarning, match="no regularized trainable weight") as record:
            history = model.fit(x, y, epochs=2, verbose=0, callbacks=[logger])
            model.fit(x, y, epochs=1, verbose=0, callbacks=[logger])
        assert len([w for w in record if "no regularized" in str(w.message)]) == 1
        assert history.history["penalty"] == [0.0, 0.0]
        assert history.history["sparsity"] == [0.0, 0.0]

    def test_nan_weights_logged_as_nan(self):
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(1, kernel_regularizer=keras_l1.L1Regularizer(0.1)),
            ]
        )
        model.layers[0].kernel.assign(np.array([[np.nan], [1.0]], "float32"))
        logger = keras_l1.SparsityLogger()
        logger.set_model(model)
        logs = {}
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            logger.on_epoch_end(0, logs)
            logger.on_epoch_end(1, {})
        assert math.isnan(logs["sparsity"]) and math.isnan(logs["penalty"])
        assert len([w for w in record if "NaN" in str(w.message)]) == 1

    @pytest.mark.parametrize(
        "kwargs, error, message",
        [
            (
                {"tolerance": -1.0},
                ValueError,
                "Invalid value for argument `tolerance`: expected a non-negative finite float. "
                "Received: tolerance=-1.0",
            ),
            (
                {"histogram_freq": 1.5},
                TypeError,
                "Invalid type for argument `histogram_freq`: expected an integer. "
                "Received: histogram_freq=1.5 of type float",
            ),
            (
                {"log_dir": 3},
                TypeError,
                "Invalid type for argument `log_dir`: expected a path (str or os.PathLike) "
                "or None. Received: log_dir=3",
            ),
        ],
    )
    def test_invalid_arguments(self, kwargs, error, message):
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            keras_l1.SparsityLogger(**kwargs)

    @pytest.mark.tensorflow  # TensorBoard events
    def test_path_like_log_dir(self, tmp_path):
        logger = keras_l1.SparsityLogger(log_dir=tmp_path)
        assert logger.log_dir == os.fspath(tmp_path)


class TestSparsityLoggerWithoutTensorBoard:
    @pytest.mark.tensorflow
    def test_missing_tensorboard_fails_at_construction(self, monkeypatch, tmp_path):
        # TensorFlow does not depend on tensorboard, and tf.summary needs it.
        monkeypatch.setitem(sys.modules, "tensorboard", None)
        message = (
            "Writing TensorBoard events needs the tensorboard package, which is not "
            'installed. Install it with `pip install "keras_l1[tensorflow]"` (or '
            "`pip install tensorboard`), or pass `log_dir=None` to log only into "
            "`logs`/History."
        )
        with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
            keras_l1.SparsityLogger(log_dir=str(tmp_path))
        assert keras_l1.SparsityLogger().log_dir is None


class BatchCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


class TestPenaltyKey:
    def test_l2_only_model_logs_its_penalty_under_both_names(self):
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(
                    1,
                    use_bias=False,
                    kernel_initializer=keras.initializers.Constant([[1.0], [-2.0]]),
                    kernel_regularizer=keras.regularizers.L2(0.1),
                ),
            ]
        )
        logger = keras_l1.SparsityLogger()
        logger.set_model(model)
        logs = {}
        logger.on_epoch_end(0, logs)
        # L2: 0.1 * (1 + 4); the key does not claim it is an L1 term.
        assert logs["penalty"] == pytest.approx(0.5, rel=1e-6)
        assert logs["l1_penalty"] == logs["penalty"]
        assert logs["sparsity"] == 0.0


class TestCallbackOrder:
    """The logger among Keras's own callbacks, listed as the docs say."""

    def fit(self, *callbacks, epochs=1, validation=False):
        x, y = data(40)
        model = two_layer_model(keras.optimizers.SGD(0.05))
        counter = BatchCounter()
        try:
            return model.fit(
                x,
                y,
                epochs=epochs,
                batch_size=8,
                validation_data=(x[:16], y[:16]) if validation else None,
                verbose=0,
                callbacks=[*callbacks, counter],
            )
        finally:
            self.batches = counter.batches

    def test_csv_logger_after_the_logger_gets_the_columns_silently(self, tmp_path):
        path = tmp_path / "log.csv"
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            self.fit(keras_l1.SparsityLogger(), keras.callbacks.CSVLogger(str(path)))
        with open(path) as file:
            header = next(csv.reader(file))
        assert {"penalty", "sparsity", "l1_penalty"} <= set(header)

    def test_early_stopping_on_val_data_loss_with_mode_min(self):
        stopper = keras.callbacks.EarlyStopping(monitor="val_data_loss", mode="min", patience=100)
        history = self.fit(keras_l1.SparsityLogger(), stopper, epochs=3, validation=True)
        assert stopper.best == min(history.history["val_data_loss"])

    @pytest.mark.tensorflow  # keras.callbacks.TensorBoard
    def test_tensorboard_before_the_logger_is_fine(self, tmp_path):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            self.fit(keras.callbacks.TensorBoard(str(tmp_path)), keras_l1.SparsityLogger())


class TestChecksBeforeTraining:
    @pytest.mark.tensorflow  # image_freq needs log_dir
    def test_unmappable_feature_names_fail_before_the_first_batch(self, tmp_path):
        # The first regularized layer is not the one reading the inputs.
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(3, name="plain"),
                keras.layers.Dense(1, kernel_regularizer=keras_l1.L1Regularizer(0.1)),
            ]
        )
        model.compile("sgd", "mse")
        counter = BatchCounter()
        logger = keras_l1.SparsityLogger(log_dir=tmp_path, image_freq=1, feature_names=list("abcd"))
        with pytest.raises(ValueError):
            model.fit(np.zeros((8, 4)), np.zeros((8, 1)), verbose=0, callbacks=[logger, counter])
        assert counter.batches == 0

    @pytest.mark.tensorflow  # image_freq needs log_dir
    def test_wrong_number_of_feature_names_fails_before_the_first_batch(self, tmp_path):
        x, y = data()
        model = two_layer_model()
        counter = BatchCounter()
        logger = keras_l1.SparsityLogger(log_dir=tmp_path, image_freq=1, feature_names=["a"])
        with pytest.raises(ValueError, match="expected 6 names") as error:
            model.fit(x, y, verbose=0, callbacks=[logger, counter])
        assert "Received: 1 names" in str(error.value)
        assert counter.batches == 0

    @pytest.mark.parametrize(
        "kwargs, argument",
        [
            ({"histogram_freq": 1}, "histogram_freq"),
            ({"feature_names": ["a", "b"]}, "feature_names"),
        ],
    )
    def test_arguments_that_would_be_ignored_are_refused(self, kwargs, argument):
        with pytest.raises(ValueError, match=f"^Invalid value for argument `{argument}`") as error:
            keras_l1.SparsityLogger(**kwargs)
        assert "Received:" in str(error.value)


@pytest.mark.tensorflow  # TensorBoard events
class TestTensorBoardRun:
    def test_one_layer_writes_totals_only_each_described_once(self, tmp_path):
        x, y = data(40)
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(1, name="only", kernel_regularizer=keras_l1.L1Regularizer(0.1)),
            ]
        )
        model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        history = model.fit(
            x,
            y,
            epochs=3,
            batch_size=8,
            validation_data=(x[:16], y[:16]),
            verbose=0,
            callbacks=[keras_l1.SparsityLogger(log_dir=tmp_path, histogram_freq=1)],
        )
        run = str(tmp_path / "sparsity")
        scalars = read_scalars(run)
        # With one regularized layer, per-layer curves would repeat the totals.
        assert sorted(scalars) == ["penalty", "sparsity", "val_data_loss"]
        for key in scalars:
            np.testing.assert_allclose(
                [v for _, v in scalars[key]], history.history[key], rtol=1e-6, atol=1e-7
            )
        descriptions = read_descriptions(run)
        for tag in ["penalty", "sparsity", "val_data_loss", "only/kernel/histogram"]:
            first, *later = descriptions[tag]
            assert len(later) == 2 and set(later) == {""}
            assert len(first) > 20
        assert "exactly zero" in descriptions["sparsity"][0]
        assert "L2" in descriptions["penalty"][0]
        assert "minus the penalty" in descriptions["val_data_loss"][0]

    def test_layout_has_one_open_category_with_three_charts(self, tmp_path):
        import re as regex

        x, y = data()
        model = two_layer_model()
        model.fit(x, y, epochs=2, verbose=0, callbacks=[keras_l1.SparsityLogger(log_dir=tmp_path)])
        layout = read_layout(str(tmp_path / "sparsity"))
        (category,) = layout.category
        assert (category.title, category.closed) == ("keras_l1", False)
        charts = {chart.title: list(chart.multiline.tag) for chart in category.chart}
        assert list(charts) == ["sparsity", "penalty", "loss"]
        tags = sorted(read_scalars(str(tmp_path / "sparsity")))

        def matched(chart, candidates):
            return [t for t in candidates if any(regex.search(p, t) for p in charts[chart])]

        assert matched("sparsity", tags) == ["sparsity", "sparsity/hidden", "sparsity/out"]
        assert matched("penalty", tags) == ["penalty", "penalty/hidden", "penalty/out"]
        assert matched("loss", ["epoch_loss", "val_data_loss", "epoch_sparsity"]) == [
            "epoch_loss",
            "val_data_loss",
        ]

    def test_a_second_logger_on_the_same_directory_warns(self, tmp_path):
        x, y = data()
        model = two_layer_model()
        model.fit(x, y, verbose=0, callbacks=[keras_l1.SparsityLogger(log_dir=tmp_path)])
        with pytest.warns(UserWarning, match="already holds TensorBoard events"):
            model.fit(x, y, verbose=0, callbacks=[keras_l1.SparsityLogger(log_dir=tmp_path)])
        # Resuming continues the steps: no warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            model.fit(
                x,
                y,
                epochs=2,
                initial_epoch=1,
                verbose=0,
                callbacks=[keras_l1.SparsityLogger(log_dir=tmp_path)],
            )
