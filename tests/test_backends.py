"""What differs between the TensorFlow, JAX and PyTorch backends.

The rest of the suite runs unchanged on every backend (CI runs it once per
backend, each in its own virtualenv). These tests cover the limits that do
differ, each with the clear error or the documented behaviour users get.
"""

import importlib.util
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_l1
from keras_l1 import cli
from tests._backend import autodiff_gradient


def lasso_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, :1] - 0.5 * x[:, 1:2] + 0.1 * rng.normal(size=(64, 1))).astype("float32")
    return x, y


def lasso_model(steps_per_execution):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(1, use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(0.1)),
        ]
    )
    model.compile(
        keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.05)),
        "mse",
        steps_per_execution=steps_per_execution,
    )
    return model


class TestProximalOptimizer:
    @pytest.mark.backends("tensorflow", "jax")
    def test_steps_per_execution_gives_the_same_steps(self):
        # Several steps run inside one compiled call; the proximal step must
        # still follow every one of them, exactly as with one step per call.
        x, y = lasso_problem()
        kernels = []
        for steps_per_execution in (1, 4):
            model = lasso_model(steps_per_execution)
            model.fit(x, y, batch_size=8, epochs=10, shuffle=False, verbose=0)
            kernels.append(keras.ops.convert_to_numpy(model.layers[0].kernel))
        np.testing.assert_allclose(kernels[1], kernels[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(kernels[1] == 0, kernels[0] == 0)
        assert np.sum(kernels[0] == 0) == 4

    @pytest.mark.backends("torch")
    def test_torch_needs_one_step_per_execution(self):
        # Keras's PyTorch trainer runs one step per call; it says so at fit.
        x, y = lasso_problem()
        model = lasso_model(steps_per_execution=4)
        message = (
            "`steps_per_execution` must be 1 with the PyTorch backend. "
            "Received: steps_per_execution=4"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            model.fit(x, y, batch_size=8, epochs=1, verbose=0)


class TestSparsityLogger:
    def test_log_dir_without_tensorflow_fails_at_construction(self, monkeypatch, tmp_path):
        block_tensorflow(monkeypatch)
        message = (
            "Writing TensorBoard events needs TensorFlow, which is not "
            'installed. Install it with `pip install "keras_l1[tensorflow]"` '
            "(or `pip install tensorflow-cpu`), or pass `log_dir=None` to log "
            "only into `logs`/History."
        )
        with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
            keras_l1.SparsityLogger(log_dir=tmp_path / "logs")
        assert list(tmp_path.iterdir()) == []


def block_tensorflow(monkeypatch):
    # The JAX and PyTorch CI environments have no TensorFlow at all;
    # elsewhere its absence is simulated.
    if importlib.util.find_spec("tensorflow") is not None:
        monkeypatch.setitem(sys.modules, "tensorflow", None)


class TestCommandLine:
    def test_demo_log_dir_without_tensorflow_is_one_clear_line(self, monkeypatch, capsys):
        block_tensorflow(monkeypatch)
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["demo", "--log-dir", "never-created"])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error == (
            "keras-l1 demo: error: argument --log-dir: writing TensorBoard logs needs "
            'TensorFlow, which is not installed; install it with `pip install "keras_l1'
            "[tensorflow]\"`, or pass --log-dir '' to train without logs"
        )
        assert not os.path.exists("never-created")

    def test_demo_without_log_dir_trains_on_every_backend(self, tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "keras_l1", "demo", "--epochs", "2", "--log-dir", ""],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(re.findall(r"^epoch\s+\d+ .*sparsity \d\.\d+$", result.stdout, re.M)) == 2
        assert "tensorboard --logdir" not in result.stdout
        assert list(tmp_path.iterdir()) == []


class TestL1Regularizer:
    def test_autodiff_gradient_is_exactly_zero_at_zero(self):
        # On every backend: 0 is a fixed point of the plain subgradient step,
        # so a weight already at zero stays exactly there.
        w = np.array([2.0, 0.0, -2.0, -0.0], "float32")
        gradient = autodiff_gradient(keras_l1.L1Regularizer(0.5), w)
        np.testing.assert_array_equal(gradient, [0.5, 0.0, -0.5, 0.0])


class TestElasticNetRegularizer:
    def test_autodiff_gradient_is_exactly_zero_at_zero(self):
        w = np.array([2.0, 0.0, -2.0, -0.0], "float32")
        gradient = autodiff_gradient(keras_l1.ElasticNetRegularizer(0.5, 0.25), w)
        np.testing.assert_array_equal(gradient, [1.5, 0.0, -1.5, 0.0])


class TestGroupLassoRegularizer:
    def test_autodiff_gradient_of_a_zero_group_is_zero(self):
        w = np.array([[3.0, 4.0], [0.0, 0.0]], "float32")
        gradient = autodiff_gradient(keras_l1.GroupLassoRegularizer(0.1, group_axis=0), w)
        np.testing.assert_allclose(gradient[0], 0.1 * np.sqrt(2.0) * np.array([0.6, 0.8]))
        np.testing.assert_array_equal(gradient[1], [0.0, 0.0])
