import importlib.util
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    # Tests of what exists only on some backends (tf.distribute, JAX device
    # meshes) or needs TensorFlow installed (TensorBoard writing) are
    # deselected elsewhere, and listed as deselected: each such limit has its
    # own test of the clear error users get instead (tests/test_backends.py).
    backend = keras.backend.backend()
    has_tensorflow = importlib.util.find_spec("tensorflow") is not None
    kept, dropped = [], []
    for item in items:
        backends = item.get_closest_marker("backends")
        wrong_backend = backends is not None and backend not in backends.args
        no_tensorflow = item.get_closest_marker("tensorflow") is not None and not has_tensorflow
        (dropped if wrong_backend or no_tensorflow else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def run_python(code: str, cwd=None, timeout: float = 240, env=None) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh Python process; fails the test on a non-zero exit."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    return result


@pytest.fixture
def fresh_python():
    return run_python
