import re

import keras
import numpy as np
import pytest

import keras_l1
from keras_l1.path import RegularizationPath
from keras_l1.path import l1_max

REPEATS = 100  # full-batch steps per epoch: the data set tiled, one batch per copy


@pytest.fixture(scope="module")
def diabetes():
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x, y = data.data[:342], data.target[:342]
    x_val, y_val = data.data[342:], data.target[342:]
    # Standardized with the training statistics, so the optimal intercept is
    # 0 and scikit-learn's intercept-free `lasso_path` solves the same problem.
    mean, std, y_mean, y_std = x.mean(0), x.std(0), y.mean(), y.std()
    x, x_val = (x - mean) / std, (x_val - mean) / std
    y, y_val = (y - y_mean) / y_std, (y_val - y_mean) / y_std
    return x, y, x_val, y_val, list(data.feature_names)


def linear_builder(x):
    # Step 1/L, L the Lipschitz constant of the gradient of mean((y - xw)^2):
    # proximal gradient descent then converges to the Lasso solution.
    lipschitz = 2 * np.linalg.eigvalsh(x.T @ x / len(x)).max()

    def build_model(l1):
        model = keras.Sequential(
            [
                keras.Input((x.shape[1],)),
                keras.layers.Dense(1, name="linear", kernel_regularizer=keras_l1.L1Regularizer(l1)),
            ]
        )
        model.compile(
            keras_l1.ProximalOptimizer(keras.optimizers.SGD(1 / lipschitz)),
            "mse",
            # Keras's PyTorch trainer runs one step per call and refuses more.
            steps_per_execution=1 if keras.backend.backend() == "torch" else REPEATS,
        )
        return model

    return build_model


@pytest.fixture(scope="module")
def lasso(diabetes):
    x, y, x_val, y_val, names = diabetes
    keras.utils.set_random_seed(0)
    path = keras_l1.regularization_path(
        linear_builder(x),
        np.tile(x, (REPEATS, 1)).astype("float32"),
        np.tile(y, REPEATS).astype("float32")[:, None],
        n_values=8,
        min_ratio=0.08,
        validation_data=(x_val.astype("float32"), y_val.astype("float32")[:, None]),
        epochs=1,
        batch_size=len(x),
        feature_names=names,
        fit_kwargs={"shuffle": False},
    )
    keras.backend.clear_session()
    return path


class TestL1Max:
    def test_is_where_the_lasso_solution_becomes_zero(self, diabetes):
        from sklearn.linear_model import lasso_path

        x, y = diabetes[0], diabetes[1]
        value = l1_max(x, y)
        assert value == pytest.approx(2 / len(x) * np.abs(x.T @ (y - y.mean())).max())
        # scikit-learn's alpha is l1 / 2: its loss is half of Keras's MSE.
        options = {"tol": 1e-12, "max_iter": 100_000}
        _, above, _ = lasso_path(x, y, alphas=[value / 2 * (1 + 1e-6)], **options)
        _, below, _ = lasso_path(x, y, alphas=[value / 2 * (1 - 1e-3)], **options)
        assert not above.any() and np.count_nonzero(below) == 1

    def test_without_intercept_and_several_outputs(self):
        x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        y = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]])
        # max |x'y| = |1*2 + 0*(-1) + 1*0| ... = 3 (feature 1, output 0), n*k = 6.
        assert l1_max(x, y, fit_intercept=False) == pytest.approx(2 / 6 * 3)


class TestRegularizationPath:
    def test_matches_scikit_learn_lasso_path(self, diabetes, lasso):
        from sklearn.linear_model import lasso_path

        x, y, x_val, y_val, names = diabetes
        assert lasso.l1_max == pytest.approx(l1_max(x, y))
        np.testing.assert_allclose(
            lasso.l1_values, np.geomspace(lasso.l1_max * 1.001, lasso.l1_max * 0.08, 8)
        )
        _, reference, _ = lasso_path(x, y, alphas=lasso.l1_values / 2, tol=1e-12, max_iter=100_000)
        reference = reference.T
        assert lasso.coefs.shape == reference.shape == (8, 10)
        for coefs, expected in zip(lasso.coefs, reference):
            np.testing.assert_array_equal(coefs != 0, expected != 0)
        np.testing.assert_allclose(lasso.coefs, reference, atol=1e-5)
        assert lasso.n_selected.tolist() == [int(np.count_nonzero(c)) for c in reference]
        assert lasso.n_selected[0] == 0 and lasso.n_selected[-1] >= 5
        assert lasso.selected[3] == tuple(names[i] for i in np.flatnonzero(reference[3]))
        assert lasso.feature_names == names

    def test_records_losses_penalty_and_best_l1(self, diabetes, lasso):
        x, y, x_val, y_val, _ = diabetes
        np.testing.assert_allclose(
            lasso.penalty, lasso.l1_values * np.abs(lasso.coefs).sum(axis=1), rtol=1e-4
        )
        np.testing.assert_allclose(lasso.sparsity, 1 - lasso.n_selected / 10)
        np.testing.assert_allclose(lasso.data_loss, lasso.loss - lasso.penalty)
        residuals = y[None, :] - lasso.coefs @ x.T
        np.testing.assert_allclose(lasso.data_loss, (residuals**2).mean(axis=1), atol=1e-4)
        val_residuals = y_val[None, :] - lasso.coefs @ x_val.T
        np.testing.assert_allclose(lasso.val_data_loss, (val_residuals**2).mean(axis=1), atol=1e-3)
        assert lasso.best_index == int(np.argmin(lasso.val_data_loss))
        assert lasso.best_l1 == lasso.l1_values[lasso.best_index]
        records = lasso.to_records()
        assert records[0]["n_selected"] == 0 and records[0]["selected"] == []
        assert set(records[-1]) == {
            "l1",
            "loss",
            "data_loss",
            "penalty",
            "sparsity",
            "val_data_loss",
            "n_selected",
            "selected",
        }
        assert len(str(lasso).splitlines()) == 9

    def test_plot(self, lasso):
        figure = lasso.plot()
        loss_axis, coef_axis, count_axis = figure.axes
        (loss_line,) = loss_axis.get_lines()[:1]
        np.testing.assert_allclose(loss_line.get_xdata(), lasso.l1_values)
        np.testing.assert_allclose(loss_line.get_ydata(), lasso.val_data_loss)
        assert loss_axis.get_ylabel() == "validation data loss"
        np.testing.assert_array_equal(count_axis.get_lines()[0].get_ydata(), lasso.n_selected)
        coefficient_lines = [line for line in coef_axis.get_lines() if line.get_label()[0] != "_"]
        assert [line.get_label() for line in coefficient_lines] == lasso.feature_names
        np.testing.assert_allclose(coefficient_lines[2].get_ydata(), lasso.coefs[:, 2])

    def test_plot_without_matplotlib_says_how_to_install_it(self, lasso, monkeypatch):
        monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
        monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
        with pytest.raises(
            ImportError,
            match=re.escape(
                "RegularizationPath.plot needs matplotlib, which is not installed. Install it "
                'with `pip install "keras_l1[plot]"` (or `pip install matplotlib`).'
            ),
        ):
            lasso.plot()

    def test_network_with_given_l1_values(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(128, 6)).astype("float32")
        y = (x[:, :2] @ np.array([[2.0], [-1.0]])).astype("float32")

        def build_model(l1):
            model = keras.Sequential(
                [
                    keras.Input((6,)),
                    keras.layers.Dense(
                        8, activation="tanh", kernel_regularizer=keras_l1.L1Regularizer(l1)
                    ),
                    keras.layers.Dense(1),
                ],
                name="mlp",
            )
            model.compile(keras_l1.ProximalOptimizer(keras.optimizers.Adam(0.02)), "mse")
            return model

        path = keras_l1.regularization_path(
            build_model, x, y, l1_values=[0.001, 0.1], epochs=15, batch_size=32
        )
        np.testing.assert_array_equal(path.l1_values, [0.1, 0.001])
        assert path.coefs is None and path.val_data_loss is None and path.best_l1 is None
        assert path.sparsity[0] > path.sparsity[1]
        # Only the two informative inputs survive the strong penalty.
        assert set(path.selected[0]) <= {0, 1}
        assert len(path.plot().axes) == 2
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `l1_values`: the automatic grid needs l1_max, known "
                "only for a linear model with an L1 penalty of strength `l1` on its kernel and "
                "mean squared error; pass l1_values for model 'mlp': it is not a linear "
                "model (a single Dense layer with linear activation). Received: l1_values=None"
            ),
        ):
            keras_l1.regularization_path(build_model, x, y)

    def test_invalid_arguments(self):
        x, y = np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32")

        def uncompiled(l1):
            return keras.Sequential(
                [keras.Input((2,)), keras.layers.Dense(1, kernel_regularizer="l1")]
            )

        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `build_model`: expected it to return a compiled "
                "keras.Model. Received: build_model(1.0) returned <Sequential name=sequential, "
                "built=True>"
            ),
        ):
            keras_l1.regularization_path(uncompiled, x, y, l1_values=[1.0])
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `l1_values`: expected a non-negative finite float. "
                "Received: l1_values=-1.0"
            ),
        ):
            keras_l1.regularization_path(uncompiled, x, y, l1_values=[1.0, -1.0])
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `l1_values`: expected at least one positive value. "
                "Received: l1_values=[0.0]"
            ),
        ):
            keras_l1.regularization_path(uncompiled, x, y, l1_values=[0.0])
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `min_ratio`: expected a float in (0, 1). "
                "Received: min_ratio=1.0"
            ),
        ):
            keras_l1.regularization_path(uncompiled, x, y, min_ratio=1.0)
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `fit_kwargs`: ['epochs'] are arguments of "
                "regularization_path itself. Received: fit_kwargs={'epochs': 3}"
            ),
        ):
            keras_l1.regularization_path(uncompiled, x, y, fit_kwargs={"epochs": 3})
        with pytest.raises(
            TypeError,
            match=re.escape(
                "Invalid type for argument `build_model`: expected a callable "
                "`build_model(l1) -> keras.Model`. Received: build_model=3"
            ),
        ):
            keras_l1.regularization_path(3, x, y)

    def test_result_without_features_or_validation(self):
        path = RegularizationPath(
            l1_values=np.array([1.0, 0.1]),
            loss=np.array([2.0, 1.0]),
            data_loss=np.array([2.0, 0.9]),
            val_data_loss=None,
            penalty=np.array([0.0, 0.1]),
            sparsity=np.array([1.0, 0.5]),
            selected=None,
            n_selected=None,
            coefs=None,
            metrics=[],
            val_metrics=None,
            feature_names=None,
            l1_max=None,
        )
        figure = path.plot()
        assert len(figure.axes) == 1
        assert figure.axes[0].get_ylabel() == "training data loss"
        assert path.to_records()[1] == {
            "l1": 0.1,
            "loss": 1.0,
            "data_loss": 0.9,
            "penalty": 0.1,
            "sparsity": 0.5,
        }
