"""The `keras-l1` command line (also `python -m keras_l1`).

Only the standard library is imported at start-up, so `--help` and
`--version` answer at once; a command imports Keras (and its backend) when it
runs, with the backend's start-up log lines silenced.
"""

import argparse
import contextlib
import json
import math
import os
import re
import sys
import zipfile

IMPORTANCE = (
    "the L2 norm of the feature's outgoing weights in the first regularized layer, "
    "||W[i, :]||_2; 0 means the feature is unused. Comparable across features when the inputs "
    "are on the same scale (standardized)."
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a non-negative float, got {text}")
    return value


def _version() -> str:
    from keras_l1 import __version__  # keras_l1/__init__ defers Keras for the command

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-l1",
        description="L1 regularization for Keras 3: exact sparsity and feature selection.",
    )
    parser.add_argument(
        "--version", action="version", version=_version(), help="print the version and exit"
    )
    commands = parser.add_subparsers(dest="command", metavar="{demo,report}")
    demo = commands.add_parser(
        "demo",
        help="train a sparse model on the breast cancer data and log it to TensorBoard",
        description="Train a small L1-regularized model on scikit-learn's breast cancer "
        "data (30 named biomarkers) with ProximalOptimizer, print the penalty and sparsity "
        "per epoch and the surviving features. Each run writes to a fresh directory "
        "LOG_DIR/<date>-<time>: TensorBoard logs, the trained model (model.keras) and its "
        "feature names (feature_names.txt); the demo prints the commands to view them.",
    )
    demo.add_argument(
        "--log-dir",
        default=os.path.join("runs", "demo"),
        metavar="LOG_DIR",
        help="where each run gets its own subdirectory (default runs/demo; TensorBoard logs "
        "need TensorFlow); '' to train without writing any file",
    )
    demo.add_argument(
        "--epochs", type=_positive_int, default=30, help="training epochs (default 30)"
    )
    demo.add_argument(
        "--l1", type=_non_negative_float, default=0.02, help="L1 strength (default 0.02)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    report = commands.add_parser(
        "report",
        help="print the sparsity report and selected features of a saved model",
        description="Load a saved Keras model (compile=False, safe mode: no code from the file "
        "runs) and print, per regularized weight, its shape, size, zeros, sparsity and penalty, "
        "then the input features that keep a non-zero weight in the first regularized layer, "
        "ranked by importance. Importance is " + IMPORTANCE,
    )
    report.add_argument("model", metavar="MODEL.keras", help="the saved model (.keras or .h5)")
    report.add_argument(
        "--tolerance",
        type=_non_negative_float,
        default=0.0,
        metavar="T",
        help="count weights with |w| <= T as zero (default 0: exact zeros)",
    )
    report.add_argument(
        "--feature-names",
        metavar="NAMES",
        help="names of the input features, in column order: a comma-separated list "
        "(age,bmi,bp) or a file with one name per line",
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.subcommands = {"demo": demo, "report": report}
    return parser


@contextlib.contextmanager
def _quiet_start_up():
    """Mutes file descriptor 2 while a framework loads.

    TensorFlow prints C++ log lines when it loads (some whatever
    `TF_CPP_MIN_LOG_LEVEL` says); they are not the command's output. Python
    exceptions still surface: they are printed after the block, by Python.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _import_keras():
    """Imports Keras, and keras_l1's public names (registering its classes), quietly."""
    with _quiet_start_up():
        import keras

        from keras_l1 import _launch

        _launch.import_public_names()
    if "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")
    return keras


def _json_safe(value):
    # JSON has no NaN: a weight holding NaN reports its sparsity as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


class _Failure(Exception):
    """A one-line error of `keras-l1 report` (exit status 1)."""


def _read_feature_names(text: str) -> list:
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as file:
            names = [line.strip() for line in file.read().splitlines()]
        while names and not names[-1]:
            names.pop()
    else:
        names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ValueError(
            f"argument --feature-names: expected non-empty names, got {text!r} (an empty name; "
            "pass a comma-separated list or a file with one name per line)"
        )
    return names


def _unregistered_class(error: BaseException) -> "str | None":
    """The registered name of the class whose absence made loading fail, if that is what did."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    # Keras says it in one of three ways, depending on the kind of object.
    interpreted = re.search(
        r"Could not interpret \w+ identifier: .*'registered_name': '([^']*>[^']*)'", messages[-1]
    )
    if interpreted:
        return interpreted.group(1)
    found = re.search(r"Cannot deserialize object of type `([^`]+)`", messages[-1]) or re.search(
        r"Could not locate class '([^']+)'", messages[-1]
    )
    if found is None:
        return None
    name = found.group(1)
    # Keras names the class; its config says under which package it was registered.
    for message in messages:
        registered = re.search(rf"'registered_name': '([^']*>{re.escape(name)})'", message)
        if registered:
            return registered.group(1)
    return None


def _directory_message(path: str) -> str:
    def models(directory):
        return sorted(
            os.path.join(directory, name)
            for name in os.listdir(directory)
            if name.endswith((".keras", ".h5", ".hdf5"))
        )

    found = models(path)
    if not found:
        # `keras-l1 demo` keeps each run in a subdirectory; the last sorts latest.
        for entry in sorted(os.listdir(path), reverse=True):
            if os.path.isdir(os.path.join(path, entry)):
                found = models(os.path.join(path, entry))
                if found:
                    break
    if not found:
        return f"{path} is a directory, with no .keras or .h5 file in it; pass a saved model file"
    return f"{path} is a directory; pass a saved model file, e.g. keras-l1 report {found[-1]}"


def _stored_config(path: str):
    """The model config a saved file holds, read without Keras, or None."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as file:
            config = file.attrs.get("model_config")
        return json.loads(config) if config is not None else None
    except Exception:  # unreadable: Keras's own loading says why, in one line
        return None


def _lambda_layer(path: str):
    """The name of a Lambda layer in the file's config, or None.

    Checked before Keras reads the file: Keras before 3.11.3 ran the code of
    a Lambda in a legacy `.h5` file whatever `safe_mode` said.
    """
    pending = [_stored_config(path)]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if item.get("class_name") == "Lambda":
                return (item.get("config") or {}).get("name", "?")
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _load(path: str):
    if os.path.isdir(path):
        raise _Failure(_directory_message(path))
    if not os.path.isfile(path):
        raise _Failure(f"no such file: {path}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise _Failure(f"{path} is not a Keras model file (a .keras file is a zip archive)")
    lambda_layer = _lambda_layer(path)
    if lambda_layer is not None:
        raise _Failure(
            f"refused to load {path}: its layer '{lambda_layer}' is a Lambda, whose function is "
            "code stored in the file, and this command never runs code from a file"
        )
    keras = _import_keras()
    try:
        # safe_mode=True, explicitly: a file must never run code on loading
        # (a Lambda's bytecode is refused), whatever the global setting says.
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # whatever the file holds, the user needs one line
        name = _unregistered_class(error)
        if name is not None:
            raise _Failure(
                f"cannot load {path} as a Keras model: it needs the class '{name}', which is "
                "not registered with Keras. In Python, import the module that defines it "
                "before loading (for keras_l1's classes, `import keras_l1`); this command "
                "knows only Keras's and keras_l1's own classes."
            ) from None
        # Keras wraps errors from nested objects in generic "could not be
        # deserialized" ones; the first error raised says what is wrong.
        while (error.__cause__ or error.__context__) is not None:
            error = error.__cause__ or error.__context__
        lines = str(error).strip().splitlines()
        raise _Failure(
            f"cannot load {path} as a Keras model: {lines[0] if lines else repr(error)}"
        ) from None


def _report(args, usage: argparse.ArgumentParser) -> int:
    names = None
    if args.feature_names is not None:
        try:
            names = _read_feature_names(args.feature_names)
        except (OSError, ValueError) as error:
            usage.error(str(error))
    try:
        model = _load(args.model)
    except _Failure as failure:
        print(f"keras-l1 report: error: {failure}", file=sys.stderr)
        return 1
    from keras_l1.inspection import selected_features
    from keras_l1.inspection import sparsity_report

    report = sparsity_report(model, args.tolerance)
    try:
        selected = selected_features(model, args.tolerance)
    except ValueError as error:
        if names is not None:
            usage.error(
                f"argument --feature-names: the model's input features cannot be named: {error}"
            )
        selected = None
    if names is not None:
        if len(names) != selected.n_features:
            usage.error(
                f"argument --feature-names: expected {selected.n_features} names, one per input "
                f"feature of layer '{selected.layer}'; got {len(names)}"
            )
        selected = selected_features(model, args.tolerance, names)
    if args.json:
        result = {
            "model": model.name,
            **report.to_dict(),
            "selected_features": None if selected is None else selected.to_dict(),
        }
        print(json.dumps(_json_safe(result), indent=2))
        return 0
    print(f"model '{model.name}' ({args.model})")
    if not report.to_dict()["weights"]:
        print(
            "The model has no regularized weights (no trainable weight has a regularizer): "
            "there is no sparsity or penalty to report."
        )
        return 0
    print(report)
    if selected is not None:
        print()
        print(selected)
        print(f"importance: {IMPORTANCE}")
    return 0


def _demo(args, usage: argparse.ArgumentParser) -> int:
    _import_keras()
    run_dir = None
    if args.log_dir:
        from keras_l1 import _summary

        try:
            with _quiet_start_up():
                _summary.require_tensorflow()
        except ImportError:
            # JAX and PyTorch installs often have no TensorFlow.
            usage.error(
                "argument --log-dir: writing TensorBoard logs needs TensorFlow, which is "
                'not installed; install it with `pip install "keras_l1[tensorflow]"`, '
                "or pass --log-dir '' to train without logs"
            )
        run_dir = _fresh_run_directory(args.log_dir)
    from keras_l1 import demo

    demo.run(log_dir=run_dir, epochs=args.epochs, l1=args.l1, seed=args.seed)
    if run_dir is None:
        print("\nNo file written (--log-dir ''): pass --log-dir to keep the model and logs.")
        return 0
    print(
        f"\nThe model and its logs are in {run_dir}. View every demo run in TensorBoard:\n"
        f"  tensorboard --logdir {args.log_dir}\n"
        "Report on the saved model:\n"
        f"  keras-l1 report {os.path.join(run_dir, 'model.keras')} "
        f"--feature-names {os.path.join(run_dir, 'feature_names.txt')}"
    )
    return 0


def _fresh_run_directory(log_dir: str) -> str:
    """`<log_dir>/<date>-<time>`, new: a second run never appends to the first one's events."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, count = os.path.join(log_dir, stamp), 1
    while os.path.exists(candidate):
        count += 1
        candidate = os.path.join(log_dir, f"{stamp}-{count}")
    os.makedirs(candidate)
    return candidate


def main(argv: "list[str] | None" = None) -> int:
    """Runs the `keras-l1` command line.

    Args:
        argv: The arguments, without the program name. Defaults to `None`
            (`sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 1 when `report` cannot read its file,
        2 without a command. Invalid arguments exit with status 2 through
        `SystemExit`, after printing the command's usage and what is wrong.

    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args, parser.subcommands["demo"])
    if args.command == "report":
        return _report(args, parser.subcommands["report"])
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
