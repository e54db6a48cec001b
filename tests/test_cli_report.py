import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_l1
from keras_l1.cli import IMPORTANCE
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
            f"importance: {IMPORTANCE}\n"
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
        error = capsys.readouterr().err
        # The report command's own usage, then what is wrong.
        assert error.startswith("usage: keras-l1 report ")
        assert error.splitlines()[-1] == (
            "keras-l1 report: error: argument --tolerance: expected a non-negative float, got -1"
        )

    def test_help(self, capsys):
        with pytest.raises(SystemExit) as exit_info:
            main(["report", "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(
            "usage: keras-l1 report [-h] [--tolerance T] [--feature-names NAMES] [--json]"
        )
        # What "importance" means is in the help.
        assert "Importance is the L2 norm of the feature's outgoing weights" in " ".join(
            out.split()
        )

    def test_directory_says_what_to_pass(self, saved_model, tmp_path, capsys):
        assert main(["report", str(tmp_path)]) == 1
        assert capsys.readouterr().err == (
            f"keras-l1 report: error: {tmp_path} is a directory; pass a saved model file, "
            f"e.g. keras-l1 report {saved_model}\n"
        )
        empty = tmp_path / "empty"
        empty.mkdir()
        assert main(["report", str(empty)]) == 1
        assert capsys.readouterr().err == (
            f"keras-l1 report: error: {empty} is a directory, with no .keras or .h5 file in it; "
            "pass a saved model file\n"
        )

    def test_directory_of_demo_runs_points_at_the_latest_model(self, saved_model, tmp_path):
        runs = tmp_path / "runs"
        for name in ["20260101-000000", "20260102-000000"]:
            (runs / name).mkdir(parents=True)
            (runs / name / "model.keras").write_bytes(saved_model.read_bytes())
        result = run_report(str(runs))
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.splitlines()[-1].endswith(
            f"e.g. keras-l1 report {runs / '20260102-000000' / 'model.keras'}"
        )

    def test_model_without_regularizers_says_so(self, tmp_path, capsys):
        path = tmp_path / "plain.keras"
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="plain").save(path)
        assert main(["report", str(path)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == f"model 'plain' ({path})"
        assert "has no regularized weights" in out
        assert "total" not in out and "0.0%" not in out

    @pytest.mark.parametrize("as_file", [False, True])
    def test_feature_names(self, saved_model, tmp_path, capsys, as_file):
        names = "age,bmi,blood pressure"
        if as_file:
            path = tmp_path / "names.txt"
            path.write_text("age\nbmi\nblood pressure\n")
            names = str(path)
        assert main(["report", str(saved_model), "--feature-names", names]) == 0
        out = capsys.readouterr().out
        assert "   1  blood pressure           2\n" in out
        assert "   2  age                      1\n" in out
        assert main(["report", str(saved_model), "--json", "--feature-names", names]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["selected_features"]["names"] == ["age", "bmi", "blood pressure"]

    @pytest.mark.parametrize(
        "names, message",
        [
            (
                "a,b",
                "argument --feature-names: expected 3 names, one per input feature of "
                "layer 'hidden'; got 2",
            ),
            ("a,,c", "argument --feature-names: expected non-empty names"),
        ],
    )
    def test_bad_feature_names_print_the_report_usage(self, saved_model, capsys, names, message):
        with pytest.raises(SystemExit) as exit_info:
            main(["report", str(saved_model), "--feature-names", names])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert error.startswith("usage: keras-l1 report ")
        assert error.splitlines()[-1].startswith(f"keras-l1 report: error: {message}")

    def test_feature_names_for_a_model_whose_features_cannot_be_mapped(self, tmp_path, capsys):
        path = tmp_path / "conv.keras"
        keras.Sequential(
            [
                keras.Input((4, 1)),
                keras.layers.Conv1D(2, 2, name="conv", kernel_regularizer=keras_l1.L1Regularizer()),
            ]
        ).save(path)
        with pytest.raises(SystemExit):
            main(["report", str(path), "--feature-names", "a,b,c,d"])
        error = capsys.readouterr().err.splitlines()[-1]
        assert error.startswith(
            "keras-l1 report: error: argument --feature-names: the model's input features "
            "cannot be named: "
        )
        assert "'conv'" in error

    def test_unregistered_class_is_named_first(self, saved_model, tmp_path):
        # A class the file needs but no imported module registered (here, a
        # keras_l1 class name this version does not have).
        import zipfile

        renamed = tmp_path / "renamed.keras"
        with zipfile.ZipFile(saved_model) as src, zipfile.ZipFile(renamed, "w") as dst:
            for item in src.infolist():
                content = src.read(item.filename)
                if item.filename == "config.json":
                    content = content.replace(b"L1Regularizer", b"OldL1")
                dst.writestr(item, content)
        result = run_report(str(renamed))
        assert result.returncode == 1 and result.stdout == ""
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("keras-l1")]
        assert line.startswith(
            f"keras-l1 report: error: cannot load {renamed} as a Keras model: it needs the class "
            "'keras_l1>OldL1', which is not registered with Keras. In Python, import the module "
            "that defines it before loading (for keras_l1's classes, `import keras_l1`)"
        )
        assert len(line) < 400

    def test_custom_class_is_named_first(self, tmp_path):
        @keras.saving.register_keras_serializable(package="test_cli")
        class HalfL1(keras.regularizers.Regularizer):
            def __call__(self, x):
                return 0.5 * keras.ops.sum(keras.ops.abs(x))

            def get_config(self):
                return {}

        path = tmp_path / "custom.keras"
        keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(1, kernel_regularizer=HalfL1())]
        ).save(path)
        result = run_report(str(path))
        assert result.returncode == 1 and result.stdout == ""
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("keras-l1")]
        assert line.startswith(
            f"keras-l1 report: error: cannot load {path} as a Keras model: it needs the class "
            "'test_cli>HalfL1', which is not registered with Keras."
        )
