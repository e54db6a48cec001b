import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_l1
from keras_l1.cli import main

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture
def saved_model(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(2, name="hidden", kernel_regularizer=keras_l1.L1Regularizer(0.1)),
            keras.layers.Dense(1, name="out"),
        ],
        name="saved",
    )
    model.get_layer("hidden").kernel.assign(
        np.array([[1.0, 0.0], [0.0, 1e-3], [-2.0, 0.0]], dtype="float32")
    )
    path = tmp_path / "saved.keras"
    model.save(path)
    return path


def run_report(*args):
    return subprocess.run(
        [sys.executable, "-m", "keras_l1", "report", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
    )


class TestReportCommand:
    def test_prints_the_report_and_selected_features(self, saved_model, capsys):
        assert main(["report", str(saved_model)]) == 0
        assert capsys.readouterr().out == (
            f"model 'saved' ({saved_model})\n"
            "layer   weight         shape  size  zeros  sparsity  penalty\n"
            "hidden  hidden/kernel  3x2       6      3     50.0%   0.3001\n"
            "total                            6      3     50.0%   0.3001\n"
            "\n"
            "3 of 3 input features selected (layer 'hidden', tolerance 0)\n"
            "rank  feature  importance\n"
            "   1  2                 2\n"
            "   2  0                 1\n"
            "   3  1             0.001\n"
        )

    def test_json_with_tolerance(self, saved_model, capsys):
        assert main(["report", str(saved_model), "--json", "--tolerance", "0.01"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["model"] == "saved" and result["tolerance"] == 0.01
        assert result["weights"][0]["zeros"] == 4 and result["total"]["zeros"] == 4
        assert result["weights"][0]["shape"] == [3, 2]
        assert result["selected_features"]["indices"] == [0, 2]
        assert result["selected_features"]["importance"] == pytest.approx([1.0, 1e-3, 2.0])

    def test_missing_and_non_keras_files_fail_in_one_line(self, tmp_path):
        missing = tmp_path / "missing.keras"
        result = run_report(str(missing))
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == (
            f"keras-l1 report: error: no such file: {missing}"
        )
        assert "Traceback" not in result.stderr and result.stdout == ""

        text = tmp_path / "notes.keras"
        text.write_text("not a model")
        result = run_report(str(text))
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == (
            f"keras-l1 report: error: {text} is not a Keras model file (a .keras file is a "
            "zip archive)"
        )
        assert "Traceback" not in result.stderr

    def test_unloadable_files_and_bad_tolerance(self, tmp_path, capsys):
        other = tmp_path / "weights.npy"
        np.save(other, np.zeros(3))
        assert main(["report", str(other)]) == 1
        error = capsys.readouterr().err
        assert error.startswith(f"keras-l1 report: error: cannot load {other} as a Keras model: ")
        assert error.count("\n") == 1
        with pytest.raises(SystemExit) as exit_info:
            main(["report", str(other), "--tolerance", "-1"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            "keras-l1: error: argument --tolerance: expected a non-negative float, got -1.0"
        )

    def test_help(self, capsys):
        with pytest.raises(SystemExit) as exit_info:
            main(["report", "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: keras-l1 report [-h] [--tolerance T] [--json] MODEL.keras")
