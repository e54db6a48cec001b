"""TensorBoard event writing: the only module that imports TensorFlow."""


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "Writing TensorBoard events needs TensorFlow, which is not "
            'installed. Install it with `pip install "keras_l1[tensorflow]"` '
            "(or `pip install tensorflow-cpu`), or pass `log_dir=None` to log "
            "only into `logs`/History."
        ) from error
    try:
        # tf.summary only records events when the tensorboard package is
        # there; TensorFlow does not depend on it, and without it fails at the
        # first epoch end instead of here.
        import tensorboard  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Writing TensorBoard events needs the tensorboard package, which is "
            'not installed. Install it with `pip install "keras_l1[tensorflow]"` '
            "(or `pip install tensorboard`), or pass `log_dir=None` to log only "
            "into `logs`/History."
        ) from error
    return tf


def require_tensorflow() -> None:
    """Raises a clear ImportError now if TensorFlow is missing."""
    _tensorflow()


class EventWriter:
    """Writes scalars and histograms to one TensorBoard run directory."""

    def __init__(self, log_dir: str):
        tf = _tensorflow()
        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(log_dir))
        # What `tf.summary.histogram` attaches, so that TensorBoard shows the
        # buckets as a histogram: the plugin name, and plugin data at version
        # 0 (which serializes to empty bytes).
        self._histogram_metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="histograms")
        )

    def write(self, step: int, scalars: dict, histograms=()) -> None:
        """Writes `scalars` ({tag: float}) and `histograms`, then flushes.

        `histograms` is an iterable of `(tag, buckets)` pairs, `buckets` as
        returned by `keras_l1._weights.histogram`; pass a generator so that
        only one weight's buckets are computed at a time.
        """
        tf = self._tf
        with self._writer.as_default(step=int(step)):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, float(value))
            for tag, buckets in histograms:
                tf.summary.write(
                    tag, tf.constant(buckets, tf.float64), metadata=self._histogram_metadata
                )
        # Flush every epoch: a crash or Ctrl-C later must not lose this one.
        self._writer.flush()

    def write_pictures(self, step: int, images: dict, texts: dict) -> None:
        """Writes images (`{tag: uint8 array (height, width)}`, as PNG) and
        Markdown texts (`{tag: str}`), then flushes."""
        tf = self._tf
        with self._writer.as_default(step=int(step)):
            for tag, image in images.items():
                tf.summary.image(tag, image[None, :, :, None])
            for tag, text in texts.items():
                tf.summary.text(tag, text)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
