"""TensorBoard event writing, through TensorFlow's `tf.summary`."""


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
        # Likewise for `tf.summary.scalar`: the scalars plugin, version 0.
        self._scalar_metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        # The protobuf class of a tensor (TensorFlow's `TensorProto`), taken
        # from a public function rather than an internal module.
        self._tensor_proto = type(tf.make_tensor_proto(0.0))

    def _scalars_proto(self, scalars: dict) -> bytes:
        """One serialized `Summary` holding every scalar, as `tf.summary.scalar` writes each.

        Each eager `tf.summary.scalar` costs about 0.1 ms, all of an epoch's
        scalars more than measuring a million weights; one protobuf built here
        is written by one operation.
        """
        tf = self._tf
        float32 = tf.float32.as_datatype_enum
        values = [
            tf.compat.v1.Summary.Value(
                tag=tag,
                metadata=self._scalar_metadata,
                # float32, as `tf.summary.scalar` stores it.
                tensor=self._tensor_proto(dtype=float32, tensor_shape={}, float_val=[float(v)]),
            )
            for tag, v in scalars.items()
        ]
        return tf.compat.v1.Summary(value=values).SerializeToString()

    def write(self, step: int, scalars: dict, histograms=()) -> None:
        """Writes `scalars` ({tag: float}) and `histograms`, then flushes.

        `histograms` is an iterable of `(tag, buckets)` pairs, `buckets` as
        returned by `keras_l1._weights.histogram`; pass a generator so that
        only one weight's buckets are computed at a time.
        """
        tf = self._tf
        with self._writer.as_default(step=int(step)):
            if scalars:
                tf.summary.experimental.write_raw_pb(self._scalars_proto(scalars))
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
