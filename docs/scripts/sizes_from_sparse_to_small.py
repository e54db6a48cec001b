"""Prints the table of sizes in docs/from-sparse-to-small.md: one MLP, stage by stage.

The MLP of `benchmarks/bench_compact.py` (64-256-128-10 ReLU on scikit-learn's
digits, `regularize` with `GroupLassoRegularizer(1e-3)`, 30 epochs of
`ProximalOptimizer(SGD(0.05, momentum=0.9))`), then each stage of the chain:
`compact_model`, `.keras` file, `model.export()` (a TensorFlow SavedModel; needs
TensorFlow), `model.quantize("int8")`. Bytes are file sizes on disk; a
SavedModel is a directory, its bytes are those of every file in it.

Run from the repository root:

    python docs/scripts/sizes_from_sparse_to_small.py
"""

import contextlib
import io
import os
import pathlib
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l1  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_compact  # noqa: E402


def size(path: pathlib.Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def plain_copy(model):
    """`model` without optimizer state, so that files hold weights and config only."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def main() -> None:
    build, data, l1, lr, epochs, batch_size, _ = bench_compact.MODELS["MLP"]
    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = data()
    model = keras_l1.regularize(build(), keras_l1.GroupLassoRegularizer(l1))
    model.compile(
        keras_l1.ProximalOptimizer(keras.optimizers.SGD(lr, momentum=0.9)), bench_compact.LOSS
    )
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    small, kept = keras_l1.compact_model(model)
    x_small = x_test[:, kept]

    rows = []
    with tempfile.TemporaryDirectory() as directory:
        root = pathlib.Path(directory)

        def stage(name, m, x, export=False):
            path = root / f"{len(rows)}.keras"
            m.save(path)
            exported = "–"
            if export:
                with contextlib.redirect_stdout(io.StringIO()):
                    m.export(root / f"{len(rows)}_saved_model")
                exported = f"{size(root / f'{len(rows)}_saved_model'):,}"
            accuracy = bench_compact.accuracy(m, x, y_test)
            rows.append(
                [name, f"{m.count_params():,}", f"{size(path):,}", exported, f"{accuracy:.1%}"]
            )

        stage("trained with group lasso + prox", plain_copy(model), x_test, export=True)
        stage(f"compact_model ({len(kept)} of 64 inputs)", plain_copy(small), x_small, export=True)
        quantized = plain_copy(small)
        with warnings.catch_warnings():  # "InputLayer does not have a `quantize` method"
            warnings.simplefilter("ignore", UserWarning)
            quantized.quantize("int8")
        stage('compact, quantize("int8")', quantized, x_small, export=True)
    print(
        bench_compact._common.markdown_table(
            ["stage", "parameters", ".keras bytes", "SavedModel bytes", "test accuracy"], rows
        )
    )
    np.testing.assert_allclose(
        small.predict(x_small, verbose=0), model.predict(x_test, verbose=0), atol=1e-5
    )


if __name__ == "__main__":
    main()
