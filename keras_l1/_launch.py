"""Whether this process is the `keras-l1` command, which loads Keras only when it must.

`keras-l1 --help` and `python -m keras_l1 --version` answer from the
standard library alone: importing Keras takes seconds (TensorFlow's start-up,
and its log lines). Every other `import keras_l1` imports the whole package at
once, so that the serializable classes are registered with Keras.
"""

import importlib
import os
import sys

_COMMAND_NAMES = ("keras-l1", "keras-l1.exe", "keras-l1-script.py")


def _started_as_command() -> bool:
    if sys.argv[:1] == ["-m"]:
        # `python -m keras_l1`: while Python locates the module it imports the
        # package with `sys.argv[0] == "-m"`; `sys.orig_argv` names the module.
        arguments = list(getattr(sys, "orig_argv", []))
        if "-m" not in arguments:
            return False
        module = arguments[arguments.index("-m") + 1 :][:1]
        return module in (["keras_l1"], ["keras_l1.__main__"])
    # The console script `keras-l1` that pip generates.
    return bool(sys.argv) and os.path.basename(sys.argv[0] or "") in _COMMAND_NAMES


_deferred = _started_as_command()


def deferred() -> bool:
    """Whether `keras_l1/__init__.py` should leave its public names for later."""
    return _deferred


def import_public_names() -> None:
    """Imports every public name of `keras_l1` now (a command that needs Keras)."""
    global _deferred
    if _deferred:
        _deferred = False
        importlib.reload(sys.modules["keras_l1"])
