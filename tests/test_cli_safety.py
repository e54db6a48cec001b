"""`keras-l1 report` on files that are missing, broken or hostile.

Every case runs the command's `main` in a separate process (one for all the
files, plus the real `python -m keras_l1` for the lambda file) and must end
with exit status 1, nothing on stdout, no traceback, and exactly one line of
its own on stderr. Files that
carry code (a Python lambda, a config naming `os.system`) must be refused
without running it: the code would create a marker file.
"""

import json
import os
import re
import subprocess
import sys
import zipfile

import keras
import pytest

import keras_l1

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# TensorFlow 2.21 logs these at import whatever TF_CPP_MIN_LOG_LEVEL says
# (tensorflow/tensorflow#100442); they are not the command's output.
TENSORFLOW_IMPORT_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]"
    r"|To enable the following instructions:)"
)


def lambda_refused(path):
    # keras_l1's own check, before Keras reads the file: the same on every Keras version.
    return (
        f"keras-l1 report: error: refused to load {path}: its layer 'lambda' is a Lambda, whose "
        "function is code stored in the file, and this command never runs code from a file"
    )


def small_model():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(2, kernel_regularizer=keras_l1.L1Regularizer(0.1), name="dense"),
        ],
        name="small",
    )
    model.compile(keras_l1.ProximalOptimizer("adam"), "mse")
    return model


def rewrite_member(source, target, name, change):
    """Copies the zip `source` to `target`, passing member `name` through `change`."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            dst.writestr(item, change(content) if item.filename == name else content)


def rewrite_config(source, target, change):
    def edit(content):
        config = json.loads(content)
        change(config)
        return json.dumps(config).encode()

    rewrite_member(source, target, "config.json", edit)


def make_files(directory, marker):
    """name -> path of each input; none of them may create `marker`."""
    marker = str(marker)
    files = {name: str(directory / name) for name in ["missing.keras", "good.keras"]}
    small_model().save(files["good.keras"])
    good = open(files["good.keras"], "rb").read()

    files["directory.keras"] = str(directory / "directory.keras")
    os.mkdir(files["directory.keras"])
    for name, content in [
        ("text.keras", b"not a model\n"),
        ("truncated.keras", good[: len(good) // 2]),
        ("text.h5", b"not a model\n"),
    ]:
        files[name] = str(directory / name)
        open(files[name], "wb").write(content)

    files["corrupt_weights.keras"] = str(directory / "corrupt_weights.keras")
    rewrite_member(
        files["good.keras"],
        files["corrupt_weights.keras"],
        "model.weights.h5",
        lambda content: content[:8] + b"\x00" * 100,
    )
    files["no_config.keras"] = str(directory / "no_config.keras")
    with zipfile.ZipFile(files["no_config.keras"], "w") as archive:
        archive.writestr("readme.txt", "a zip archive, but no model")

    def negative_l1(config):
        dense = config["config"]["layers"][-1]
        dense["config"]["kernel_regularizer"]["config"]["l1"] = -1.0

    files["invalid_l1.keras"] = str(directory / "invalid_l1.keras")
    rewrite_config(files["good.keras"], files["invalid_l1.keras"], negative_l1)

    # Code in the file: a lambda that creates the marker when it runs (it
    # runs once here, when the model is built, so the marker is removed).
    hostile = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Lambda(lambda x: (open(marker, "w").close(), x)[1]),
            keras.layers.Dense(1),
        ]
    )
    for name in ["lambda.keras", "lambda.h5"]:
        files[name] = str(directory / name)
        hostile.save(files[name])

    def system_call(config):
        config["config"]["layers"][-1] = {
            "module": "os",
            "class_name": "system",
            "config": {"command": f"touch {marker}"},
            "registered_name": "system",
        }

    files["os_system.keras"] = str(directory / "os_system.keras")
    rewrite_config(files["good.keras"], files["os_system.keras"], system_call)
    os.remove(marker)
    return files


# Runs `keras_l1.cli.main(["report", path])` for every file in one process
# (each process pays the TensorFlow import, seconds on 2 cores). Output is
# captured at the file-descriptor level, so lines written by C code (h5py,
# TensorFlow) count too; an exception escaping `main` is recorded as "raised".
HARNESS = """
import json, os, sys, tempfile, traceback
from keras_l1 import cli

results = {}
for name, path in json.loads(sys.argv[1]).items():
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            try:
                status = cli.main(["report", path])
            except SystemExit as exit:
                status = exit.code
            except BaseException:
                status = "raised"
                traceback.print_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        out.seek(0); err.seek(0)
        results[name] = [status, out.read(), err.read()]
print(json.dumps(results))
"""


def without_noise(stderr: str) -> list:
    return [line for line in stderr.splitlines() if not TENSORFLOW_IMPORT_NOISE.match(line)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> (exit status, stdout, stderr lines without TensorFlow's noise)."""
    directory = tmp_path_factory.mktemp("cli_safety")
    marker = directory / "CODE_FROM_THE_FILE_RAN"
    files = make_files(directory, marker)

    def start(*args):
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=directory,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # The hostile file also through the real command, end to end, alongside.
    harness = start("-c", HARNESS, json.dumps(files))
    command = start("-m", "keras_l1", "report", files["lambda.keras"])
    stdout, stderr = harness.communicate(timeout=300)
    assert harness.returncode == 0, stderr[-3000:]
    results = {
        name: (status, out, without_noise(err))
        for name, (status, out, err) in json.loads(stdout.splitlines()[-1]).items()
    }
    stdout, stderr = command.communicate(timeout=300)
    results["command: lambda.keras"] = (command.returncode, stdout, without_noise(stderr))
    results["marker"] = marker.exists()
    return results, files


def cannot_load(path, reason):
    return f"keras-l1 report: error: cannot load {path} as a Keras model: {reason}"


EXPECTED = {
    "missing.keras": lambda path: f"keras-l1 report: error: no such file: {path}",
    "directory.keras": lambda path: (
        f"keras-l1 report: error: {path} is a directory, with no .keras or .h5 file in it; "
        "pass a saved model file"
    ),
    "text.keras": lambda path: (
        f"keras-l1 report: error: {path} is not a Keras model file (a .keras file is a zip archive)"
    ),
    "truncated.keras": lambda path: (
        f"keras-l1 report: error: {path} is not a Keras model file (a .keras file is a zip archive)"
    ),
    "text.h5": lambda path: cannot_load(
        path, "Unable to synchronously open file (file signature not found)"
    ),
    "corrupt_weights.keras": lambda path: cannot_load(
        path, "Unable to synchronously open file (bad byte number in an address)"
    ),
    "no_config.keras": lambda path: cannot_load(
        path, "\"There is no item named 'config.json' in the archive\""
    ),
    "lambda.keras": lambda path: lambda_refused(path),
    "lambda.h5": lambda path: lambda_refused(path),
    # Keras wraps this in "Sequential could not be deserialized"; the report
    # shows the error that started it.
    "invalid_l1.keras": lambda path: cannot_load(
        path,
        "Invalid value for argument `l1`: expected a non-negative finite float. Received: l1=-1.0",
    ),
}


class TestReportRefusesBadFiles:
    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_one_line_and_exit_status_1(self, runs, name):
        results, files = runs
        status, stdout, stderr = results[name]
        assert (status, stdout) == (1, ""), stderr
        assert stderr == [EXPECTED[name](files[name])]

    def test_real_command_refuses_lambda(self, runs):
        results, files = runs
        status, stdout, stderr = results["command: lambda.keras"]
        assert (status, stdout) == (1, ""), stderr
        assert stderr == [lambda_refused(files["lambda.keras"])]

    def test_config_naming_os_system_is_refused(self, runs):
        results, files = runs
        status, stdout, stderr = results["os_system.keras"]
        assert (status, stdout, len(stderr)) == (1, "", 1), stderr
        assert stderr[0].startswith(
            cannot_load(files["os_system.keras"], "Could not locate class 'system'.")
        )

    def test_no_code_from_any_file_ran(self, runs):
        results, _ = runs
        assert results["marker"] is False

    def test_good_file_is_reported(self, runs):
        # The control: the same command on the file the others were made from.
        results, _ = runs
        status, stdout, stderr = results["good.keras"]
        assert (status, stderr) == (0, []), stderr
        assert "small/dense/kernel" in stdout or "dense/kernel" in stdout
