"""Faults injected into training: interruptions, kills, NaN, big tensors.

Each test injects one fault (KeyboardInterrupt or an exception from another
callback mid-epoch, SIGKILL of a real training process, NaN/Inf gradients,
tensors past float32's exact-integer range) and checks what survives: event
files read back with TensorBoard's own reader, weights and optimizer state
compared with an uninterrupted run.
"""

import gc
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import keras_l1
from keras_l1._weights import histogram
from keras_l1._weights import measure
from keras_l1._weights import regularized_weights


def data(n=32, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x[:, :1] - 0.5 * x[:, 1:2]).astype("float32")
    return x, y


def model_with_two_layers(features=6):
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(4, kernel_regularizer=keras_l1.L1Regularizer(0.05), name="hidden"),
            keras.layers.Dense(1, kernel_regularizer=keras_l1.L1Regularizer(0.01), name="out"),
        ]
    )
    model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.05)), "mse")
    return model


def read_events(run_dir, plugin="scalars") -> dict:
    """{tag: [(step, value), ...]} read with TensorBoard's EventAccumulator."""
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    found = {}
    for tag in accumulator.Tags()["tensors"]:
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == plugin:
            found[tag] = [
                (event.step, tensor_util.make_ndarray(event.tensor_proto))
                for event in accumulator.Tensors(tag)
            ]
    return found


def open_event_files() -> list:
    """Event files this process holds open (Linux: /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "tfevents" in target:
            found.append(target)
    return found


class RaiseAt(keras.callbacks.Callback):
    """Raises `error` at batch `batch` of epoch `epoch`, or at that epoch's end."""

    def __init__(self, error, epoch, batch=None):
        super().__init__()
        self.error, self.epoch, self.batch = error, epoch, batch
        self._current = None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.batch is not None and (self._current, batch) == (self.epoch, self.batch):
            raise self.error

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            raise self.error


@pytest.mark.tensorflow  # TensorBoard events
class TestSparsityLoggerInterrupted:
    TAGS = ["penalty", "penalty/hidden", "penalty/out"]
    TAGS += ["sparsity", "sparsity/hidden", "sparsity/out"]

    def test_keyboard_interrupt_then_second_fit_appends(self, tmp_path):
        x, y = data()
        model = model_with_two_layers()
        logger = keras_l1.SparsityLogger(log_dir=tmp_path)
        with pytest.raises(KeyboardInterrupt):
            model.fit(
                x,
                y,
                epochs=6,
                batch_size=8,
                verbose=0,
                callbacks=[logger, RaiseAt(KeyboardInterrupt(), epoch=3, batch=2)],
            )
        first = model.history.history
        events = read_events(tmp_path / "sparsity")
        # Epochs 0-2 finished: each tag has exactly steps 0, 1, 2, with the
        # values History got.
        assert sorted(events) == self.TAGS
        assert all([s for s, _ in events[tag]] == [0, 1, 2] for tag in self.TAGS)
        np.testing.assert_allclose(
            [v for _, v in events["penalty"]], first["l1_penalty"], rtol=1e-6
        )

        model.fit(x, y, epochs=6, initial_epoch=3, batch_size=8, verbose=0, callbacks=[logger])
        second = model.history.history
        events = read_events(tmp_path / "sparsity")
        assert all([s for s, _ in events[tag]] == [0, 1, 2, 3, 4, 5] for tag in self.TAGS)
        np.testing.assert_allclose(
            [v for _, v in events["sparsity"]],
            first["sparsity"] + second["sparsity"],
            rtol=1e-6,
        )
        # One file: the second fit appended to the writer left open.
        assert len(os.listdir(tmp_path / "sparsity")) == 1
        # ... and on_train_end closed it.
        assert not open_event_files()

    def test_interrupted_writer_is_closed_on_garbage_collection(self, tmp_path):
        x, y = data()
        model = model_with_two_layers()
        logger = keras_l1.SparsityLogger(log_dir=tmp_path)
        raiser = RaiseAt(RuntimeError("disk quota"), epoch=1, batch=1)
        with pytest.raises(RuntimeError, match="^disk quota$"):
            model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[logger, raiser])
        assert len(open_event_files()) == 1
        # Keras keeps the last callbacks in the traceback and on the model.
        del logger, raiser
        sys.last_traceback = None
        model.history = None
        gc.collect()
        assert not open_event_files()
        assert [s for s, _ in read_events(tmp_path / "sparsity")["penalty"]] == [0]

    @pytest.mark.parametrize("logger_first, logged_steps", [(True, [0, 1]), (False, [0])])
    def test_exception_in_another_callbacks_epoch_end(self, tmp_path, logger_first, logged_steps):
        # Callbacks run in list order: a callback after the logger fails once
        # epoch 1 is logged; one before it fails before the logger ran.
        x, y = data()
        model = model_with_two_layers()
        logger = keras_l1.SparsityLogger(log_dir=tmp_path)
        raiser = RaiseAt(ValueError("bad metric"), epoch=1)
        callbacks = [logger, raiser] if logger_first else [raiser, logger]
        with pytest.raises(ValueError, match="^bad metric$"):
            model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=callbacks)
        events = read_events(tmp_path / "sparsity")
        assert all([s for s, _ in events[tag]] == logged_steps for tag in self.TAGS)


class TestNonFinite:
    @pytest.mark.tensorflow  # TensorBoard events
    def test_nan_gradients_terminate_on_nan_stops_and_logger_warns_once(self, tmp_path):
        x, y = data()
        x[5, 0] = np.nan  # the first batch's gradient is NaN
        model = model_with_two_layers()
        logger = keras_l1.SparsityLogger(log_dir=tmp_path, histogram_freq=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = model.fit(
                x,
                y,
                epochs=5,
                batch_size=8,
                shuffle=False,
                verbose=0,
                callbacks=[logger, keras.callbacks.TerminateOnNaN()],
            )
        # TerminateOnNaN stopped the first epoch; the logger still measured it.
        assert len(history.history["loss"]) == 1
        assert np.isnan(history.history["sparsity"][0])
        assert np.isnan(history.history["l1_penalty"][0])
        ours = [w for w in caught if "SparsityLogger" in str(w.message)]
        assert [str(w.message) for w in ours] == [
            "SparsityLogger: some regularized weights are NaN or infinite; "
            "their sparsity and penalty are logged as NaN."
        ]
        events = read_events(tmp_path / "sparsity")
        assert np.isnan(events["sparsity"][0][1])
        histograms = read_events(tmp_path / "sparsity", plugin="histograms")
        assert sorted(histograms) == ["hidden/kernel/histogram", "out/kernel/histogram"]

    def test_nan_without_terminate_on_nan_warns_once_over_epochs(self):
        x, y = data()
        model = model_with_two_layers()
        kernel = keras.ops.convert_to_numpy(model.get_layer("out").kernel)
        kernel[0, 0] = np.inf
        model.get_layer("out").kernel.assign(kernel)
        logger = keras_l1.SparsityLogger()
        with pytest.warns(UserWarning, match="NaN or infinite") as record:
            history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[logger])
        assert len([w for w in record if "SparsityLogger" in str(w.message)]) == 1
        assert np.isnan(history.history["sparsity"]).all()

    @pytest.mark.parametrize(
        "regularizer",
        [
            keras_l1.L1Regularizer(0.1),
            keras_l1.ElasticNetRegularizer(0.1, 0.1),
            keras_l1.GroupLassoRegularizer(0.1),
        ],
        ids=lambda r: type(r).__name__,
    )
    def test_prox_of_non_finite_weights_does_not_raise(self, regularizer):
        w = np.array([[np.nan, 1.0], [np.inf, -np.inf], [0.5, 0.0]], dtype="float32")
        result = keras.ops.convert_to_numpy(regularizer.prox(w, 0.1))
        assert result.shape == w.shape
        # Finite rows of an elementwise prox stay finite.
        if not isinstance(regularizer, keras_l1.GroupLassoRegularizer):
            assert np.isfinite(result[2]).all()


class TestLargeTensors:
    def test_zero_count_is_exact_past_float32_integers(self):
        # 2**24 + 3 zeros: a float32 sum of ones gives 2**24 + 4.
        size = 2**24 + 3
        model = keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(
                    size, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.1)
                ),
            ]
        )
        model.layers[0].kernel.assign(np.zeros((1, size), "float32"))
        penalty, zeros, nonfinite, total = measure(regularized_weights(model), 0.0)[0]
        assert (penalty, zeros, nonfinite, total) == (0.0, size, 0.0, size)

    def test_histogram_matches_tensorboard(self):
        from tensorboard.plugins.histogram.summary_v2 import histogram_pb

        rng = np.random.default_rng(0)
        for values in [rng.normal(size=(40, 9)), np.full(7, 2.5), np.zeros(0)]:
            reference = tensor_util.make_ndarray(histogram_pb("h", values).value[0].tensor)
            np.testing.assert_allclose(histogram(values.astype("float32")), reference, rtol=1e-6)

    def test_histogram_ignores_non_finite_values(self):
        values = np.array([1.0, np.nan, 2.0, np.inf, 3.0, -np.inf], dtype="float32")
        buckets = histogram(values, bucket_count=2)
        np.testing.assert_array_equal(buckets, [[1.0, 2.0, 1.0], [2.0, 3.0, 2.0]])

    @staticmethod
    def histogram_peak(layers, tmp_path):
        """Host memory peak of one histogram epoch of `layers` 1 MB kernels."""
        model = keras.Sequential(
            [keras.Input((512,))]
            + [
                keras.layers.Dense(512, kernel_regularizer=keras_l1.L1Regularizer(1e-3))
                for _ in range(layers)
            ]
        )
        logger = keras_l1.SparsityLogger(log_dir=tmp_path / str(layers), histogram_freq=1)
        logger.set_model(model)
        logger.on_train_begin()
        logger.on_epoch_end(0, {})  # warm-up: writer and summary ops
        tracemalloc.start()
        logger.on_epoch_end(1, {})
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        logger.on_train_end()
        histograms = read_events(tmp_path / str(layers) / "sparsity", plugin="histograms")
        assert len(histograms) == layers
        return peak

    @pytest.mark.tensorflow  # TensorBoard events
    def test_histograms_hold_one_weight_at_a_time(self, tmp_path):
        # Streaming: the peak does not grow with the number of weights. (A
        # dict of host copies, as before, made it grow 4x here.)
        assert self.histogram_peak(8, tmp_path) < 1.2 * self.histogram_peak(2, tmp_path)


TRAIN_SCRIPT = """
import os, sys, time
import keras, numpy as np, keras_l1

mode, work = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8)).astype("float32")
y = (x[:, :2] @ np.array([[1.5], [-2.0]], "float32")).astype("float32")


def build():
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(4, kernel_regularizer=keras_l1.L1Regularizer(0.05), name="hidden"),
        keras.layers.Dense(1, kernel_regularizer=keras_l1.L1Regularizer(0.01), name="out"),
    ])
    model.compile(keras_l1.ProximalOptimizer(keras.optimizers.Adam(0.05)), "mse")
    return model


class WaitForKill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            open(os.path.join(work, "epoch_2_done"), "w").close()
            time.sleep(600)


def fit(model, callbacks, initial_epoch=0):
    model.fit(x, y, epochs=6, batch_size=8, shuffle=False, verbose=0,
              callbacks=callbacks, initial_epoch=initial_epoch)


def save_state(model, name):
    # Weights and every optimizer variable (iterations, Adam moments), by position.
    state = [keras.ops.convert_to_numpy(v) for v in model.weights + model.optimizer.variables]
    np.savez(os.path.join(work, name), *state)


def resumable():
    return [
        keras.callbacks.BackupAndRestore(os.path.join(work, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(work, "checkpoint.keras")),
        keras_l1.SparsityLogger(log_dir=os.path.join(work, "logs")),
    ]


if mode == "uninterrupted":
    model = build()
    fit(model, [keras_l1.SparsityLogger()])
    save_state(model, "uninterrupted.npz")
elif mode == "killed":
    fit(build(), resumable() + [WaitForKill()])
elif mode == "resume":
    # As a user would: rerun the same script; BackupAndRestore resumes at epoch 3.
    model = build()
    fit(model, resumable())
    save_state(model, "backup_and_restore.npz")
    # Or: load the last ModelCheckpoint (epoch 2) and continue from epoch 3.
    model = keras.saving.load_model(os.path.join(work, "checkpoint_at_kill.keras"))
    fit(model, [], initial_epoch=3)
    save_state(model, "model_checkpoint.npz")
"""


class TestResumeAfterSigkill:
    @pytest.mark.tensorflow  # TensorBoard events
    def test_backup_and_restore_and_model_checkpoint_match_uninterrupted(self, tmp_path):
        script = tmp_path / "train.py"
        script.write_text(TRAIN_SCRIPT)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

        def start(mode):
            return subprocess.Popen(
                [sys.executable, str(script), mode, str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        # The reference run and the run to kill, side by side.
        reference, victim = start("uninterrupted"), start("killed")
        deadline = time.monotonic() + 240
        while not (tmp_path / "epoch_2_done").exists():
            assert victim.poll() is None, victim.stdout.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
        victim.stdout.close()
        os.replace(tmp_path / "checkpoint.keras", tmp_path / "checkpoint_at_kill.keras")
        output = reference.communicate(timeout=240)[0]
        assert reference.returncode == 0, output[-3000:]

        resumed = start("resume")
        output = resumed.communicate(timeout=240)[0]
        assert resumed.returncode == 0, output[-3000:]

        expected = np.load(tmp_path / "uninterrupted.npz")
        # Four weights, then iterations, learning rates, the strength factor and
        # Adam's moments.
        assert len(expected.files) == 4 + 5 + 8
        assert 0 < sum(int((expected[k] == 0).sum()) for k in expected.files[:4])
        for name in ["backup_and_restore.npz", "model_checkpoint.npz"]:
            result = np.load(tmp_path / name)
            for key in expected.files:
                # Bitwise: same CPU, same order of operations.
                np.testing.assert_array_equal(result[key], expected[key], err_msg=f"{name} {key}")

        # The killed process logged epochs 0-2, the resumed one 3-5: each once.
        events = read_events(tmp_path / "logs" / "sparsity")
        assert [step for step, _ in events["sparsity"]] == [0, 1, 2, 3, 4, 5]


def plain_model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")], name="plain")


def unbuilt_model():
    layer = keras.layers.Dense(2, kernel_regularizer=keras_l1.L1Regularizer(0.1))
    return keras.Sequential([layer], name="unbuilt")


def regularized_model():
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(2, kernel_regularizer=keras_l1.L1Regularizer(0.1), name="first"),
        ],
        name="regularized",
    )


NOT_BUILT = (
    "Invalid value for argument `{arg}`: expected a built model or layer (call it on data or "
    "call `build()` first). Received: {arg}='unbuilt', not built"
)
NO_FEATURES = (
    "Cannot map the weights of '{name}' to input features: {reason}. Pass the Dense layer "
    "that reads the input features instead: `selected_features(layer)`."
)


class TestBadModelsAndArguments:
    """What each reader does with a model it cannot read: these are documented
    in docs/reliability.md, one row per case."""

    @pytest.mark.parametrize(
        "call, error, message",
        [
            (
                lambda: keras_l1.sparsity_report(unbuilt_model()),
                ValueError,
                NOT_BUILT.format(arg="model"),
            ),
            (
                lambda: keras_l1.sparsity_report(None),
                TypeError,
                "Invalid type for argument `model`: expected a Keras model or layer. "
                "Received: model=None of type NoneType",
            ),
            (
                lambda: keras_l1.sparsity_report(regularized_model(), tolerance=-1),
                ValueError,
                "Invalid value for argument `tolerance`: expected a non-negative finite float. "
                "Received: tolerance=-1",
            ),
            (
                lambda: keras_l1.sparsity_report(regularized_model(), tolerance="0.1"),
                TypeError,
                "Invalid type for argument `tolerance`: expected a non-negative finite float. "
                "Received: tolerance='0.1' of type str",
            ),
            (
                lambda: keras_l1.selected_features(unbuilt_model()),
                ValueError,
                NOT_BUILT.format(arg="model_or_layer"),
            ),
            (
                lambda: keras_l1.selected_features(plain_model()),
                ValueError,
                NO_FEATURES.format(
                    name="plain", reason="the model has no regularized trainable weight"
                ),
            ),
            (
                lambda: keras_l1.selected_features(keras.layers.Dropout(0.5, name="drop")),
                ValueError,
                NO_FEATURES.format(
                    name="drop",
                    reason="it is a Dropout, and only the rows of a Dense kernel are input "
                    "features",
                ),
            ),
            (
                lambda: keras_l1.selected_features(regularized_model(), feature_names=["a"]),
                ValueError,
                "Invalid value for argument `feature_names`: expected 3 names, one per input "
                "feature of layer 'first'. Received: 1 names",
            ),
            (
                lambda: keras_l1.selected_features(regularized_model(), tolerance=float("nan")),
                ValueError,
                "Invalid value for argument `tolerance`: expected a non-negative finite float. "
                "Received: tolerance=nan",
            ),
            (
                lambda: keras_l1.compact_model(None),
                TypeError,
                "Invalid type for argument `model`: expected a Keras model. "
                "Received: model=None of type NoneType",
            ),
        ],
    )
    def test_clear_error(self, call, error, message):
        with pytest.raises(error) as info:
            call()
        assert str(info.value) == message

    @pytest.mark.parametrize(
        "model", [plain_model, lambda: keras.layers.Dropout(0.5)], ids=["no_regularizer", "dropout"]
    )
    def test_sparsity_report_of_nothing_regularized_is_empty(self, model):
        report = keras_l1.sparsity_report(model())
        assert list(report) == []
        assert report.to_dict()["total"] == {"size": 0, "zeros": 0, "sparsity": 0.0, "penalty": 0.0}

    def test_l1_scheduler_without_l1_refuses_at_train_begin(self):
        model = plain_model()
        model.compile(keras_l1.ProximalOptimizer("sgd"), "mse")
        with pytest.raises(ValueError) as info:
            model.fit(
                np.zeros((4, 3)), np.zeros((4, 2)), verbose=0, callbacks=[keras_l1.L1Scheduler()]
            )
        assert str(info.value) == (
            "Invalid value for argument `model`: expected a model with at least one L1-type "
            "regularizer (keras_l1's, or Keras's L1 / L1L2) on a trainable weight. "
            "Received: model='plain'"
        )
