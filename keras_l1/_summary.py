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


# The Custom Scalars dashboard's layout: (chart title, tag regular expressions).
# A regular expression matches a tag in every run, so `loss` shows the
# `epoch_loss` of `keras.callbacks.TensorBoard`'s runs beside `val_data_loss`.
LAYOUT_CHARTS = (
    ("sparsity", (r"^sparsity(/.*)?$",)),
    ("penalty", (r"^penalty(/.*)?$",)),
    ("loss", (r"^epoch_loss$", r"^val_data_loss$")),
)
LAYOUT_CATEGORY = "keras_l1"


class EventWriter:
    """Writes scalars, histograms, images and texts to one TensorBoard run directory.

    Every tag carries a description (shown by TensorBoard beside its chart),
    written with the tag's first value only: TensorBoard reads a tag's
    metadata from its first event. The first `write` also writes the Custom
    Scalars layout, `LAYOUT_CHARTS` under the open category `keras_l1`.
    """

    def __init__(self, log_dir: str):
        tf = _tensorflow()
        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(log_dir))
        # The protobuf class of a tensor (TensorFlow's `TensorProto`), taken
        # from a public function rather than an internal module.
        self._tensor_proto = type(tf.make_tensor_proto(0.0))
        self._described = set()
        self._layout_written = False

    def _metadata(self, plugin: str, tag: str, description: str):
        """What `tf.summary.<plugin>` attaches: the plugin name, plugin data at
        version 0 (empty bytes), and the description on the tag's first event."""
        tf = self._tf
        metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name=plugin)
        )
        if tag not in self._described:
            self._described.add(tag)
            metadata.summary_description = description
        return metadata

    def _description(self, tag: str, description: str) -> str:
        if tag in self._described:
            return None
        self._described.add(tag)
        return description

    def _scalars_proto(self, scalars: dict) -> bytes:
        """One serialized `Summary` holding every scalar, as `tf.summary.scalar` writes each.

        Each eager `tf.summary.scalar` is an operation of its own, and all of an
        epoch's scalars would cost more than measuring a million weights; one
        protobuf built here is written by one operation.
        """
        tf = self._tf
        float32 = tf.float32.as_datatype_enum
        values = [
            tf.compat.v1.Summary.Value(
                tag=tag,
                metadata=self._metadata("scalars", tag, description),
                # float32, as `tf.summary.scalar` stores it.
                tensor=self._tensor_proto(dtype=float32, tensor_shape={}, float_val=[float(v)]),
            )
            for tag, (v, description) in scalars.items()
        ]
        return tf.compat.v1.Summary(value=values).SerializeToString()

    def _layout_proto(self) -> bytes:
        """The Custom Scalars layout, as `tensorboard.plugins.custom_scalar.summary.pb` makes it."""
        from tensorboard.plugins.custom_scalar import layout_pb2
        from tensorboard.plugins.custom_scalar import metadata

        tf = self._tf
        layout = layout_pb2.Layout(
            category=[
                layout_pb2.Category(
                    title=LAYOUT_CATEGORY,
                    closed=False,
                    chart=[
                        layout_pb2.Chart(
                            title=title, multiline=layout_pb2.MultilineChartContent(tag=tags)
                        )
                        for title, tags in LAYOUT_CHARTS
                    ],
                )
            ]
        )
        value = tf.compat.v1.Summary.Value(
            tag=metadata.CONFIG_SUMMARY_TAG,
            metadata=tf.compat.v1.SummaryMetadata.FromString(
                metadata.create_summary_metadata().SerializeToString()
            ),
            tensor=tf.make_tensor_proto(layout.SerializeToString(), dtype=tf.string),
        )
        return tf.compat.v1.Summary(value=[value]).SerializeToString()

    def write(self, step: int, scalars: dict, histograms=()) -> None:
        """Writes `scalars` and `histograms`, then flushes.

        Args:
            step: The step (keras_l1 uses the epoch index).
            scalars: `{tag: (value, description)}`.
            histograms: An iterable of `(tag, buckets, description)`, `buckets`
                as returned by `keras_l1._weights.histogram`; pass a generator
                so that only one weight's buckets are computed at a time.
        """
        tf = self._tf
        with self._writer.as_default(step=int(step)):
            if not self._layout_written:
                self._layout_written = True
                tf.summary.experimental.write_raw_pb(self._layout_proto())
            if scalars:
                tf.summary.experimental.write_raw_pb(self._scalars_proto(scalars))
            for tag, buckets, description in histograms:
                tf.summary.write(
                    tag,
                    tf.constant(buckets, tf.float64),
                    metadata=self._metadata("histograms", tag, description),
                )
        # Flush every epoch: a crash or Ctrl-C later must not lose this one.
        self._writer.flush()

    def write_pictures(self, step: int, images: dict, texts: dict) -> None:
        """Writes images (`{tag: (uint8 array (height, width), description)}`, as
        PNG) and Markdown texts (`{tag: (str, description)}`), then flushes."""
        tf = self._tf
        with self._writer.as_default(step=int(step)):
            for tag, (image, description) in images.items():
                tf.summary.image(
                    tag, image[None, :, :, None], description=self._description(tag, description)
                )
            for tag, (text, description) in texts.items():
                tf.summary.text(tag, text, description=self._description(tag, description))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
