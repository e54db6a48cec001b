"""The `keras-l1` command line (also `python -m keras_l1`)."""

import argparse
import sys


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
    demo.add_argument("--log-dir", default="runs/demo", help="TensorBoard log directory")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    demo.add_argument("--l1", type=float, default=0.02, help="L1 strength (default 0.02)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


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
        demo.run(log_dir=args.log_dir, epochs=args.epochs, l1=args.l1, seed=args.seed)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
