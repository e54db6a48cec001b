import glob
import os
import re

import keras
import numpy as np
import pytest

import keras_l1


def read_tensors(run_dir):
    """{tag: [(step, numpy value)]} read with TensorBoard's own event reader."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    (path,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    accumulator = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: [
            (event.step, tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)
        ]
        for tag in accumulator.Tags()["tensors"]
    }


def decode_png(data):
    import tensorflow as tf

    return tf.io.decode_png(data).numpy()


class MaskRecorder(keras.callbacks.Callback):
    """Records each 2-D kernel's non-zero mask when the logger writes it."""

    def __init__(self):
        super().__init__()
        self.masks = {}
        self.selected = {}

    def on_epoch_end(self, epoch, logs=None):
        for layer in self.model.layers:
            self.masks[(epoch, layer.name)] = keras.ops.convert_to_numpy(layer.kernel) != 0
        self.selected[epoch] = keras_l1.selected_features(
            self.model, feature_names=list("abcde")
        ).to_markdown()


@pytest.mark.tensorflow
class TestSparsityLoggerImages:
    def test_images_and_text_match_the_zero_masks(self, tmp_path):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 5)).astype("float32")
        y = (x[:, :1] * 2.0).astype("float32")
        model = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(
                    3, name="hidden", kernel_regularizer=keras_l1.L1Regularizer(0.05)
                ),
                keras.layers.Dense(1, name="out", kernel_regularizer=keras_l1.L1Regularizer(0.05)),
            ]
        )
        model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        recorder = MaskRecorder()
        logger = keras_l1.SparsityLogger(
            log_dir=tmp_path, image_freq=2, feature_names=list("abcde")
        )
        model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[logger, recorder])
        tensors = read_tensors(str(tmp_path / "sparsity"))
        for layer, shape in (("hidden", (5, 3)), ("out", (3, 1))):
            events = tensors[f"{layer}/kernel/nonzero"]
            assert [step for step, _ in events] == [0, 2, 4]
            for step, value in events:
                # The image plugin's tensor: width, height, then the PNG.
                assert value[:2].tolist() == [str(shape[1]).encode(), str(shape[0]).encode()]
                image = decode_png(value[2])
                assert image.shape == (*shape, 1)
                mask = recorder.masks[(step, layer)]
                assert np.count_nonzero(image == 255) == np.count_nonzero(mask)
                assert np.count_nonzero(image == 0) == mask.size - np.count_nonzero(mask)
                np.testing.assert_array_equal(image[..., 0], np.where(mask, 255, 0))
        # Training made real zeros, so the pictures are not all white.
        assert not recorder.masks[(4, "hidden")].all()
        texts = tensors["selected_features"]
        assert [step for step, _ in texts] == [0, 2, 4]
        for step, value in texts:
            assert value.item().decode() == recorder.selected[step]

    def test_only_2d_weights_and_mappable_features(self, tmp_path):
        model = keras.Sequential(
            [
                keras.Input((6, 1)),
                keras.layers.Conv1D(
                    2, 2, name="conv", kernel_regularizer=keras_l1.L1Regularizer(0.1)
                ),
                keras.layers.Flatten(),
                keras.layers.Dense(1, name="dense", kernel_regularizer=keras_l1.L1Regularizer(0.1)),
            ]
        )
        model.compile("sgd", "mse")
        x, y = np.zeros((4, 6, 1), "float32"), np.zeros((4, 1), "float32")
        model.fit(
            x, y, verbose=0, callbacks=[keras_l1.SparsityLogger(log_dir=tmp_path, image_freq=1)]
        )
        tensors = read_tensors(str(tmp_path / "sparsity"))
        assert "dense/kernel/nonzero" in tensors
        assert "conv/kernel/nonzero" not in tensors
        assert "selected_features" not in tensors

        logger = keras_l1.SparsityLogger(
            log_dir=tmp_path / "named", image_freq=1, feature_names=list("abcdef")
        )
        with pytest.raises(ValueError, match=re.escape("Cannot map the weights of 'conv'")):
            model.fit(x, y, verbose=0, callbacks=[logger])

    def test_invalid_arguments(self, tmp_path):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `image_freq`: images are written to TensorBoard, which "
                "needs `log_dir`. Received: image_freq=1 with log_dir=None"
            ),
        ):
            keras_l1.SparsityLogger(image_freq=1)
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Invalid value for argument `image_freq`: expected an integer >= 0. "
                "Received: image_freq=-1"
            ),
        ):
            keras_l1.SparsityLogger(log_dir=tmp_path, image_freq=-1)
        with pytest.raises(
            TypeError,
            match=re.escape(
                "Invalid type for argument `feature_names`: expected a sequence of names. "
                "Received: feature_names='abc' of type str"
            ),
        ):
            keras_l1.SparsityLogger(feature_names="abc")
