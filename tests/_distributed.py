"""Distributed training runs for tests/test_distributed.py.

Each distributed setup has to be made before its framework starts (logical
CPU devices, XLA flags, `TF_CONFIG`), so each runs in a fresh process:
`python tests/_distributed.py MODE OUT_DIR [...]` writes its results as JSON
into `OUT_DIR`. The single-device reference runs the same code without a
strategy; the test compares the two.
"""

import json
import os
import sys

# Runnable as a script from any working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

L1 = 0.01
EPOCHS = 20
# 440 of the 442 diabetes rows: 5 global batches of 88, 44 per replica.
ROWS = 440
BATCH_SIZE = 88


def diabetes():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32")[:ROWS]
    y = ((y - y.mean()) / y.std()).astype("float32")[:ROWS, None]
    return x, y


def build_model(optimizer: str):
    import keras

    import keras_l1

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(
                8, activation="tanh", kernel_regularizer=keras_l1.L1Regularizer(L1), name="hidden"
            ),
            keras.layers.Dense(1, kernel_regularizer=keras_l1.L1Regularizer(L1), name="output"),
        ]
    )
    inner = keras.optimizers.SGD(0.1) if optimizer == "sgd" else keras.optimizers.Adam(0.01)
    model.compile(keras_l1.ProximalOptimizer(inner), "mse")
    return model


def fit(model, data, callbacks=()) -> dict:
    """Trains `model` and returns what the tests compare, as plain JSON."""
    import keras

    import keras_l1

    if isinstance(data, tuple):
        x, y = data
        history = model.fit(
            x,
            y,
            batch_size=BATCH_SIZE,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[keras_l1.SparsityLogger(), *callbacks],
        )
    else:
        history = model.fit(
            data,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[keras_l1.SparsityLogger(), *callbacks],
        )
    return {
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "weights": [keras.ops.convert_to_numpy(w).tolist() for w in model.weights],
    }


def objective(model, x, y) -> float:
    """Mean squared error plus every L1 penalty, in float64 NumPy."""
    import keras
    import numpy as np

    prediction = keras.ops.convert_to_numpy(model.predict(x, batch_size=BATCH_SIZE, verbose=0))
    penalty = sum(
        L1 * np.abs(keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)).sum()
        for layer in model.layers
    )
    return float(np.mean((prediction.astype(np.float64) - y) ** 2) + penalty)


def tf_dataset(x, y):
    """The global batches, sharded by element across workers."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH_SIZE).with_options(options)


def mirrored(out_dir: str) -> None:
    """Single device and MirroredStrategy over 2 logical CPUs, SGD and Adam."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import numpy as np

    x, y = diabetes()
    results = {}
    for optimizer in ("sgd", "adam"):
        single = fit(build_model(optimizer), (x, y))
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = build_model(optimizer)
        distributed = fit(model, (x, y))
        replicas = [[v.numpy() for v in w.value.values] for w in model.weights]
        distributed["replicas"] = len(replicas[0])
        distributed["replicas_identical"] = all(
            np.array_equal(copies[0], copy) for copies in replicas for copy in copies
        )
        distributed["evaluate"] = float(model.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0))
        distributed["objective"] = objective(model, x, y)
        results[optimizer] = {"single": single, "distributed": distributed}
    with open(os.path.join(out_dir, "mirrored.json"), "w") as file:
        json.dump(results, file)


def multi_worker_strategy():
    """`MultiWorkerMirroredStrategy` with a fix for Keras 3's `fit`.

    Keras 3 (up to at least 3.15) calls `strategy.reduce` on nested batches
    and with `axis=0` on scalar losses, which `MultiWorkerMirroredStrategy`
    rejects (tensorflow/tensorflow#72388). Reducing each value on its own,
    along axis 0 only where there is one, is what Keras means.
    """
    import tensorflow as tf

    class Strategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def reduce_one(v):
                rank = self.experimental_local_results(v)[0].shape.rank
                return super(Strategy, self).reduce(reduce_op, v, axis if rank else None)

            return tf.nest.map_structure(reduce_one, value)

    return Strategy()


def worker(out_dir: str, log_dir: str, checkpoint_dir: str) -> None:
    """One worker of a MultiWorkerMirroredStrategy cluster (from TF_CONFIG)."""
    import keras

    import keras_l1

    strategy = multi_worker_strategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    x, y = diabetes()
    with strategy.scope():
        model = build_model("sgd")
    callbacks = [keras_l1.SparsityLogger(log_dir=log_dir)]
    # Keras's own callbacks write on every worker: give them to the chief only.
    if strategy.cluster_resolver.task_id == 0:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(os.path.join(checkpoint_dir, "model.keras"))
        )
    result = fit(model, tf_dataset(x, y), callbacks)
    with open(os.path.join(out_dir, f"worker{task['index']}.json"), "w") as file:
        json.dump(result, file)


def data_parallel(out_dir: str) -> None:
    """Single device and `keras.distribution.DataParallel` over 2 JAX CPUs."""
    import keras
    import numpy as np

    x, y = diabetes()
    results = {}
    for optimizer in ("sgd", "adam"):
        keras.distribution.set_distribution(None)
        single = fit(build_model(optimizer), (x, y))
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        )
        model = build_model(optimizer)
        distributed = fit(model, (x, y))
        shards = [[np.asarray(s.data) for s in w.value.addressable_shards] for w in model.weights]
        distributed["replicas"] = len(shards[0])
        distributed["replicas_identical"] = all(
            np.array_equal(copies[0], copy) for copies in shards for copy in copies
        )
        distributed["evaluate"] = float(model.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0))
        distributed["objective"] = objective(model, x, y)
        results[optimizer] = {"single": single, "distributed": distributed}
    with open(os.path.join(out_dir, "data_parallel.json"), "w") as file:
        json.dump(results, file)


if __name__ == "__main__":
    modes = {"mirrored": mirrored, "worker": worker, "data_parallel": data_parallel}
    modes[sys.argv[1]](*sys.argv[2:])
