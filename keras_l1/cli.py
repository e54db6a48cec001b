"""The `keras-l1` command line (also `python -m keras_l1`)."""

import argparse
import json
import math
import os
import sys
import zipfile


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-l1",
        description="L1 regularization for Keras 3: exact sparsity and feature selection.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command")
    demo = commands.add_parser(
        "demo",
        help="train a sparse model on the breast cancer data and log it to TensorBoard",
        description="Train a small L1-regularized model on scikit-learn's breast cancer "
        "data (30 named biomarkers) with ProximalOptimizer, print the penalty and sparsity "
        "per epoch, the surviving features, and the TensorBoard command to view the run.",
    )
    demo.add_argument(
        "--log-dir",
        default="runs/demo",
        help="TensorBoard log directory ('' for none; needs TensorFlow)",
    )
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    demo.add_argument("--l1", type=float, default=0.02, help="L1 strength (default 0.02)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    report = commands.add_parser(
        "report",
        help="print the sparsity report and selected features of a saved model",
        description="Load a saved Keras model (compile=False, safe mode) and print, per "
        "regularized weight, its shape, size, zeros, sparsity and penalty, then the input "
        "features that keep a non-zero weight when the first regularized layer reads the inputs.",
    )
    report.add_argument("model", metavar="MODEL.keras", help="the saved model (.keras or .h5)")
    report.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        metavar="T",
        help="count weights with |w| <= T as zero (default 0: exact zeros)",
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


def _json_safe(value):
    # JSON has no NaN: a weight holding NaN reports its sparsity as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _report(path: str, tolerance: float, as_json: bool) -> int:
    def fail(message: str) -> int:
        print(f"keras-l1 report: error: {message}", file=sys.stderr)
        return 1

    if not os.path.isfile(path):
        return fail(f"no such file: {path}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        return fail(f"{path} is not a Keras model file (a .keras file is a zip archive)")
    import keras

    import keras_l1

    try:
        # safe_mode=True, explicitly: a file must never run code on loading
        # (a Lambda's bytecode is refused), whatever the global setting says.
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # whatever the file holds, the user needs one line
        # Keras wraps errors from nested objects in generic "could not be
        # deserialized" ones; the first error raised says what is wrong.
        while (error.__cause__ or error.__context__) is not None:
            error = error.__cause__ or error.__context__
        lines = str(error).strip().splitlines()
        return fail(f"cannot load {path} as a Keras model: {lines[0] if lines else repr(error)}")
    report = keras_l1.sparsity_report(model, tolerance)
    try:
        selected = keras_l1.selected_features(model, tolerance)
    except ValueError:
        selected = None
    if as_json:
        result = {
            "model": model.name,
            **report.to_dict(),
            "selected_features": None if selected is None else selected.to_dict(),
        }
        print(json.dumps(_json_safe(result), indent=2))
    else:
        print(f"model '{model.name}' ({path})")
        print(report)
        if selected is not None:
            print()
            print(selected)
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from keras_l1 import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        from keras_l1 import demo

        if args.epochs < 1:
            parser.error(f"argument --epochs: expected a positive integer, got {args.epochs}")
        if not args.l1 >= 0:
            parser.error(f"argument --l1: expected a non-negative float, got {args.l1}")
        if args.log_dir:
            from keras_l1 import _summary

            try:
                _summary.require_tensorflow()
            except ImportError:
                # JAX and PyTorch installs often have no TensorFlow.
                parser.error(
                    "argument --log-dir: writing TensorBoard logs needs TensorFlow, which is "
                    'not installed; install it with `pip install "keras_l1[tensorflow]"`, '
                    "or pass --log-dir '' to train without logs"
                )
        demo.run(log_dir=args.log_dir, epochs=args.epochs, l1=args.l1, seed=args.seed)
        return 0
    if args.command == "report":
        if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
            parser.error(
                f"argument --tolerance: expected a non-negative float, got {args.tolerance}"
            )
        return _report(args.model, args.tolerance, args.json)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
