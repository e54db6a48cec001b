"""Models using keras_l1 save and load in every format, checked in fresh processes."""

import importlib.util
import json

import keras
import numpy as np
import pytest

import keras_l1


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("saved")
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(
                4,
                activation="relu",
                kernel_regularizer=keras_l1.L1Regularizer(0.01),
                bias_regularizer=keras_l1.ElasticNetRegularizer(0.02, 0.03),
            ),
            keras.layers.Dense(
                2,
                kernel_regularizer=keras_l1.GroupLassoRegularizer(0.05, group_axis=0),
                bias_regularizer=keras_l1.LogSumRegularizer(0.04, epsilon=0.1),
            ),
        ]
    )
    model.compile(keras_l1.ProximalOptimizer(keras.optimizers.Adam(0.01)), "mse")
    x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
    model.fit(x, x[:, :2], epochs=2, verbose=0)
    np.save(folder / "x.npy", x)
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    model.save_weights(folder / "model.weights.h5")
    # A SavedModel export needs TensorFlow, on every backend.
    if importlib.util.find_spec("tensorflow") is not None:
        model.export(str(folder / "exported"), verbose=False)
    expected = {
        "prediction": keras.ops.convert_to_numpy(model(x)).tolist(),
        "losses": [float(v) for v in model.losses],
    }
    return folder, expected


def load_and_report(fresh_python, folder, body):
    result = fresh_python(
        f"""
        import json, numpy as np, keras
        x = np.load({str(folder / "x.npy")!r})
        out = {{}}
        {body}
        print("RESULT" + json.dumps(out))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [s for s in result.stdout.splitlines() if s.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


class TestSaving:
    def test_keras_format_after_import_and_with_custom_objects(self, fresh_python, saved):
        folder, expected = saved
        path = str(folder / "model.keras")
        out = load_and_report(
            fresh_python,
            folder,
            f"""
        import keras_l1
        model = keras.saving.load_model({path!r})
        out["prediction"] = keras.ops.convert_to_numpy(model(x)).tolist()
        out["losses"] = [float(v) for v in model.losses]
        out["optimizer"] = type(model.optimizer).__name__
        out["inner"] = type(model.optimizer.inner_optimizer).__name__
        out["regularizer"] = model.layers[0].kernel_regularizer.get_config()
        out["log_sum"] = model.layers[1].bias_regularizer.get_config()
        custom = keras.saving.load_model(
            {path!r},
            custom_objects={{"L1Regularizer": keras_l1.L1Regularizer,
                            "ElasticNetRegularizer": keras_l1.ElasticNetRegularizer,
                            "GroupLassoRegularizer": keras_l1.GroupLassoRegularizer,
                            "LogSumRegularizer": keras_l1.LogSumRegularizer,
                            "ProximalOptimizer": keras_l1.ProximalOptimizer}},
            safe_mode=True,
        )
        out["custom_prediction"] = keras.ops.convert_to_numpy(custom(x)).tolist()
        """,
        )
        assert out["prediction"] == expected["prediction"]
        assert out["custom_prediction"] == expected["prediction"]
        assert out["losses"] == expected["losses"]
        assert (out["optimizer"], out["inner"]) == ("ProximalOptimizer", "Adam")
        assert out["regularizer"] == {"l1": 0.01}
        assert out["log_sum"] == {"l1": 0.04, "epsilon": 0.1}

    def test_loading_without_import_fails_loudly(self, fresh_python, saved):
        folder, _ = saved
        result = fresh_python(
            f"""
            import keras
            keras.saving.load_model({str(folder / "model.keras")!r})
            """
        )
        assert result.returncode != 0
        assert "L1Regularizer" in result.stderr or "ProximalOptimizer" in result.stderr

    @pytest.mark.tensorflow  # SavedModel export
    def test_legacy_h5_weights_and_export(self, fresh_python, saved):
        folder, expected = saved
        out = load_and_report(
            fresh_python,
            folder,
            f"""
        import keras_l1, tensorflow as tf
        legacy = keras.saving.load_model({str(folder / "model.h5")!r}, compile=False)
        out["h5"] = keras.ops.convert_to_numpy(legacy(x)).tolist()
        out["h5_losses"] = [float(v) for v in legacy.losses]
        rebuilt = keras.models.clone_model(legacy)
        rebuilt.load_weights({str(folder / "model.weights.h5")!r})
        out["weights"] = keras.ops.convert_to_numpy(rebuilt(x)).tolist()
        served = tf.saved_model.load({str(folder / "exported")!r})
        out["export"] = served.serve(tf.constant(x)).numpy().tolist()
        """,
        )
        assert out["h5"] == expected["prediction"]
        assert out["h5_losses"] == expected["losses"]
        assert out["weights"] == expected["prediction"]
        np.testing.assert_allclose(out["export"], expected["prediction"], rtol=1e-6, atol=1e-7)
