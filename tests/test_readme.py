"""The README's set-up commands are what CI runs, its Python runs as written, and the package
metadata agrees."""

import re
from importlib import metadata
from pathlib import Path

import pytest

import keras_l1

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?%?")


def readme_commands():
    return re.findall(r"```bash\n(python3 -m venv .*)\n```", README)


def readme_blocks(language: str) -> list:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def shape(line: str) -> str:
    """A printed line with its numbers masked: what every machine and backend agree on."""
    return " ".join(_NUMBER.sub("#", line).split())


class TestReadme:
    def test_two_setup_commands(self):
        demo, tests = readme_commands()
        assert demo.endswith("keras-l1 demo")
        assert tests.endswith("-m pytest")

    def test_ci_runs_the_readme_test_command_verbatim(self):
        _, tests = readme_commands()
        ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
        assert tests in ci_lines

    def test_version_and_typed_marker(self):
        assert metadata.version("keras_l1") == keras_l1.__version__
        assert (Path(keras_l1.__file__).parent / "py.typed").exists()

    def test_ci_tests_the_oldest_declared_keras_and_tensorflow(self):
        setup = (ROOT / "setup.cfg").read_text()
        keras_minimum = re.search(r"^\s*keras>=([\d.]+)$", setup, re.M).group(1)
        tensorflow_minimum = re.search(r"^\s*tensorflow-cpu>=([\d.]+)$", setup, re.M).group(1)
        ci = (ROOT / ".ci" / "run").read_text()
        assert f'"keras=={keras_minimum}" "tensorflow-cpu=={tensorflow_minimum}"' in ci


@pytest.mark.tensorflow  # the Quickstart writes TensorBoard logs
class TestReadmePython:
    def test_python_blocks_run_in_order_and_print_the_documented_output(
        self, tmp_path, fresh_python
    ):
        blocks = readme_blocks("python")
        assert len(blocks) == 3
        # Run as a user would: one fresh process, every block in order, logs and plots
        # written to a scratch directory. The end checks what the prose claims.
        code = "\n".join(blocks) + (
            "\nassert history.history['sparsity'][-1] > 0.5"
            "\nassert history.history['val_accuracy'][-1] > 0.9"
            "\nassert 0 < len(selected) < 30"
            "\nassert small.count_params() < model.count_params()"
            "\nassert path.sparsity[0] == 1.0 and path.n_selected[-1] > path.n_selected[0]"
        )
        result = fresh_python(code, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "logs" / "sparsity").is_dir()
        assert (tmp_path / "path.png").read_bytes().startswith(b"\x89PNG")

        # The documented output, number for number up to rounding on another machine.
        documented = [line for block in readme_blocks("text") for line in block.splitlines()]
        printed = result.stdout.splitlines()
        assert len(printed) == len(documented)
        for got, expected in zip(printed, documented):
            if expected.endswith("..."):  # a list shortened for the page
                got, expected = got.split(":")[0], expected.split(":")[0]
            assert shape(got) == shape(expected)
        # The compact model's outputs equal the original's.
        assert float(printed[documented.index("5.9604645e-08")]) < 1e-5
