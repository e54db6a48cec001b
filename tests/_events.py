"""Reading TensorBoard event files back, for assertions."""

import glob
import os
from collections import defaultdict


def read_scalars(run_dir: str) -> dict:
    """Returns {tag: [(step, value), ...]} from every event file in `run_dir`."""
    import tensorflow as tf

    scalars = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars" or value.HasField(
                    "simple_value"
                ):
                    number = (
                        value.simple_value
                        if value.HasField("simple_value")
                        else float(tf.make_ndarray(value.tensor))
                    )
                    scalars[value.tag].append((event.step, number))
    return dict(scalars)


def read_tags(run_dir: str, plugin: str) -> dict:
    """Returns {tag: [(step, tensor_proto), ...]} for one summary plugin."""
    import tensorflow as tf

    found = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == plugin:
                    found[value.tag].append((event.step, value.tensor))
    return dict(found)


def read_descriptions(run_dir: str) -> dict:
    """Returns {tag: [description of each event, in order]}; TensorBoard shows the first."""
    import tensorflow as tf

    found = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found[value.tag].append(value.metadata.summary_description)
    return dict(found)


def read_layout(run_dir: str):
    """The Custom Scalars layout (a `layout_pb2.Layout`) written in `run_dir`, or None."""
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import metadata

    tags = read_tags(run_dir, metadata.PLUGIN_NAME)
    events = tags.get(metadata.CONFIG_SUMMARY_TAG)
    if not events:
        return None
    assert len(events) == 1, "one layout per run"
    return layout_pb2.Layout.FromString(events[0][1].string_val[0])
