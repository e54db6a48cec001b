"""The README's set-up commands are what CI runs, and the package metadata agrees."""

import re
from importlib import metadata
from pathlib import Path

import keras_l1

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)


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
