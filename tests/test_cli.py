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


def run_cli(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "keras_l1", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


class TestCommandLine:
    def test_console_script_prints_version(self):
        script = Path(sys.executable).parent / "keras-l1"
        result = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=ENV)
        assert result.returncode == 0
        assert result.stdout.strip() == keras_l1.__version__

    def test_help_for_every_command(self):
        for args in (["--help"], ["demo", "--help"]):
            result = run_cli(*args)
            assert result.returncode == 0 and "usage: keras-l1" in result.stdout

    def test_invalid_demo_argument_is_one_clear_line(self):
        result = run_cli("demo", "--epochs", "0")
        assert result.returncode == 2
        assert "argument --epochs: expected a positive integer, got 0" in result.stderr
        assert "Traceback" not in result.stderr

    @pytest.mark.tensorflow  # TensorBoard events
    def test_demo_prints_and_logs_real_zeros(self, tmp_path):
        log_dir = tmp_path / "demo"
        result = run_cli("demo", "--epochs", "4", "--l1", "0.05", "--log-dir", str(log_dir))
        assert result.returncode == 0, result.stderr[-3000:]
        out = result.stdout
        epochs = re.findall(r"^epoch\s+(\d+) .*sparsity (\d\.\d+)$", out, flags=re.M)
        assert [int(e) for e, _ in epochs] == [1, 2, 3, 4]
        assert f"tensorboard --logdir {log_dir}" in out
        logged = read_scalars(str(log_dir / "sparsity"))
        assert [s for s, _ in logged["total/sparsity"]] == [0, 1, 2, 3]
        printed = [float(s) for _, s in epochs]
        np.testing.assert_allclose(printed, [v for _, v in logged["total/sparsity"]], atol=5e-4)
        # ProximalOptimizer makes the demo's zeros exact: sparsity grows past 0.
        assert printed[-1] > 0.2
        kept = re.search(r"(\d+) of 30", out)
        assert kept and 0 < int(kept.group(1)) < 30
