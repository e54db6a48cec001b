import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras_l1
from tests._events import read_scalars

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_cli(*args, timeout=240, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "keras_l1", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV if env is None else env,
        cwd=cwd,
    )


class TestCommandLine:
    def test_console_script_prints_version(self):
        script = Path(sys.executable).parent / "keras-l1"
        result = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=ENV)
        assert result.returncode == 0
        assert result.stdout.strip() == keras_l1.__version__

    def test_help_for_every_command(self):
        for args in (["--help"], ["demo", "--help"], ["report", "--help"]):
            result = run_cli(*args)
            assert result.returncode == 0 and "usage: keras-l1" in result.stdout

    def test_invalid_demo_argument_is_one_clear_line(self):
        result = run_cli("demo", "--epochs", "0")
        assert result.returncode == 2
        assert "argument --epochs: expected a positive integer, got 0" in result.stderr
        assert "Traceback" not in result.stderr

    def test_invalid_argument_prints_the_subcommands_usage(self):
        result = run_cli("demo", "--l1", "-1")
        assert result.returncode == 2
        assert result.stderr.startswith("usage: keras-l1 demo ")
        assert result.stderr.splitlines()[-1] == (
            "keras-l1 demo: error: argument --l1: expected a non-negative float, got -1"
        )

    @pytest.mark.tensorflow  # TensorBoard events
    def test_demo_prints_logs_and_saves_a_model_to_report_on(self, tmp_path):
        log_dir = tmp_path / "demo"
        # No TF_CPP_MIN_LOG_LEVEL from the caller: the command silences TensorFlow itself.
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        result = run_cli(
            "demo", "--epochs", "4", "--l1", "0.05", "--log-dir", str(log_dir), env=env
        )
        assert result.returncode == 0, result.stderr[-3000:]
        # TensorFlow before 2.17 logs its first XLA compilation from C++, whatever
        # TF_CPP_MIN_LOG_LEVEL says; anything else on stderr is the command's.
        noise = re.compile(
            r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
            r"|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\])"
        )
        assert [line for line in result.stderr.splitlines() if not noise.match(line)] == []
        out = result.stdout
        epochs = re.findall(r"^epoch\s+(\d+) .*penalty (\d\.\d+)  sparsity (\d\.\d+)$", out, re.M)
        assert [int(e) for e, _, _ in epochs] == [1, 2, 3, 4]
        (run_dir,) = log_dir.iterdir()
        assert re.fullmatch(r"\d{8}-\d{6}", run_dir.name)
        assert sorted(p.name for p in run_dir.iterdir()) == [
            "feature_names.txt",
            "model.keras",
            "sparsity",
            "train",
            "validation",
        ]
        assert f"tensorboard --logdir {log_dir}\n" in out
        logged = read_scalars(str(run_dir / "sparsity"))
        assert [s for s, _ in logged["sparsity"]] == [0, 1, 2, 3]
        printed = [float(s) for _, _, s in epochs]
        np.testing.assert_allclose(printed, [v for _, v in logged["sparsity"]], atol=5e-4)
        printed_penalty = [float(p) for _, p, _ in epochs]
        np.testing.assert_allclose(printed_penalty, [v for _, v in logged["penalty"]], atol=5e-5)
        # TensorBoard runs first: its runs hold no copies of the logger's values.
        assert not {"epoch_sparsity", "epoch_penalty"} & set(read_scalars(str(run_dir / "train")))
        # ProximalOptimizer makes the demo's zeros exact: sparsity grows past 0.
        assert printed[-1] > 0.2
        kept = re.search(r"(\d+) of 30", out)
        assert kept and 0 < int(kept.group(1)) < 30

        # The printed report command works as printed, and names the features.
        command = out.strip().splitlines()[-1].split()
        assert command[:2] == ["keras-l1", "report"]
        report = run_cli(*command[1:], env=env)
        assert report.returncode == 0 and report.stderr == ""
        assert f"{kept.group(1)} of 30 input features selected" in report.stdout
        assert "mean radius" in (run_dir / "feature_names.txt").read_text()
        assert re.search(r"^   1  (mean|worst|\w+ error)", report.stdout, re.M)

        # A second run gets its own directory: TensorBoard shows two runs, not one mixed.
        again = run_cli("demo", "--epochs", "1", "--log-dir", str(log_dir))
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(list(log_dir.iterdir())) == 2

    def test_demo_without_log_dir_writes_nothing(self, tmp_path):
        result = run_cli("demo", "--epochs", "1", "--log-dir", "", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert list(tmp_path.iterdir()) == []
        assert "No file written (--log-dir '')" in result.stdout
        assert "keras-l1 report" not in result.stdout


FRAMEWORKS = {"keras", "tensorflow", "jax", "torch"}


class TestFastStart:
    """Help and version answer from the standard library: no framework is imported."""

    @pytest.mark.parametrize(
        "args", [["--help"], ["--version"], ["demo", "--help"], ["report", "--help"]]
    )
    def test_python_m_imports_no_framework(self, args):
        # -X importtime lists every module the process imports, on stderr.
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "keras_l1", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=ENV,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        imported = {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "keras_l1" in imported
        assert imported & FRAMEWORKS == set()
        assert result.stdout.startswith("usage: keras-l1") or result.stdout.strip() == (
            keras_l1.__version__
        )

    def test_console_script_imports_no_framework(self):
        script = Path(sys.executable).parent / "keras-l1"
        result = subprocess.run(
            [sys.executable, "-X", "importtime", str(script), "--help"],
            capture_output=True,
            text=True,
            env=ENV,
        )
        assert result.returncode == 0
        assert not any(
            line.rsplit("|", 1)[-1].strip().split(".")[0] in FRAMEWORKS
            for line in result.stderr.splitlines()
        )

    def test_import_keras_l1_still_loads_everything(self):
        # Any other import registers the serializable classes with Keras.
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, keras_l1; import keras; "
                "print(keras.saving.get_registered_object('keras_l1>L1Regularizer') "
                "is keras_l1.L1Regularizer, 'keras_l1.callbacks' in sys.modules)",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env=ENV,
        )
        assert result.stdout.split() == ["True", "True"], result.stderr[-3000:]
