"""Draws docs/img/regularization_path.png: the Lasso path of the diabetes data.

The snippet of docs/choosing-lambda.md: a linear model, `keras_l1.regularization_path`
over 15 strengths from `l1_max` down to `l1_max / 100`, each fit 300 full-batch proximal
gradient steps warm-started from the previous one, validated on the last 100 patients.

Run from the repository root:

    python docs/scripts/plot_regularization_path.py     # writes docs/img/regularization_path.png
    python docs/scripts/plot_regularization_path.py -o out.png
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402

import keras_l1  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument(
        "-o", "--output", default=os.path.join(here, "..", "img", "regularization_path.png")
    )
    args = parser.parse_args()

    data = load_diabetes()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    y = (data.target - data.target.mean()) / data.target.std()
    x_train, y_train, x_val, y_val = x[:342], y[:342], x[342:], y[342:]

    # Proximal gradient descent converges to the Lasso solution for a step 1/L.
    lipschitz = 2 * np.linalg.eigvalsh(x_train.T @ x_train / len(x_train)).max()
    repeats = 300  # full-batch steps per fit: the data tiled, one batch per copy

    def build_model(l1):
        model = keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(1, kernel_regularizer=keras_l1.L1Regularizer(l1)),
            ]
        )
        model.compile(
            keras_l1.ProximalOptimizer(keras.optimizers.SGD(1 / lipschitz)),
            "mse",
            steps_per_execution=repeats,  # one compiled call runs all the steps
        )
        return model

    keras.utils.set_random_seed(0)
    path = keras_l1.regularization_path(
        build_model,
        np.tile(x_train, (repeats, 1)),
        np.tile(y_train, repeats),
        n_values=15,
        min_ratio=0.01,
        validation_data=(x_val, y_val),
        epochs=1,
        batch_size=len(x_train),
        fit_kwargs={"shuffle": False},
        feature_names=data.feature_names,
    )
    print(path)
    path.plot().savefig(args.output, dpi=100)
    print(f"wrote {os.path.normpath(args.output)}")


if __name__ == "__main__":
    main()
