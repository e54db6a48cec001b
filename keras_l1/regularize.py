"""`regularize`: a copy of a model with a penalty on every prunable kernel."""

from collections.abc import Callable
from collections.abc import Iterable

import keras

from keras_l1 import _graph
from keras_l1._validation import short_repr
from keras_l1.regularizers import GroupLassoRegularizer
from keras_l1.regularizers import L1Regularizer


def _einsum_output_axis(config: dict) -> int:
    """The last kernel axis that survives into the output of an EinsumDense."""
    inputs, output = config["equation"].split("->")
    kernel = inputs.split(",")[1].strip()
    axes = [index for index, letter in enumerate(kernel) if letter in output]
    return axes[-1] - len(kernel) if axes else -1


# How each layer type loses an output channel: per regularizer argument of its
# constructor, the kernel axis whose indices are the channels. Conv and Dense
# kernels end with (..., in, out). A depthwise kernel is (..., in, multiplier):
# output channel c * multiplier + m reads slice [..., c, m], so axis -2 makes one
# group per input channel, which is one group per output channel when
# multiplier == 1 (and the `multiplier` channels of one input otherwise).
# Transposed convolutions store (..., out, in). Recurrent kernels are
# (in or units, gates * units): one group per gate column.
_PRUNABLE = (
    (keras.layers.Dense, {"kernel_regularizer": -1}),
    (keras.layers.EinsumDense, {"kernel_regularizer": _einsum_output_axis}),
    (keras.layers.Conv1D, {"kernel_regularizer": -1}),
    (keras.layers.Conv2D, {"kernel_regularizer": -1}),
    (keras.layers.Conv3D, {"kernel_regularizer": -1}),
    (keras.layers.Conv1DTranspose, {"kernel_regularizer": -2}),
    (keras.layers.Conv2DTranspose, {"kernel_regularizer": -2}),
    (keras.layers.Conv3DTranspose, {"kernel_regularizer": -2}),
    (keras.layers.DepthwiseConv1D, {"depthwise_regularizer": -2}),
    (keras.layers.DepthwiseConv2D, {"depthwise_regularizer": -2}),
    (
        keras.layers.SeparableConv1D,
        {"depthwise_regularizer": -2, "pointwise_regularizer": -1},
    ),
    (
        keras.layers.SeparableConv2D,
        {"depthwise_regularizer": -2, "pointwise_regularizer": -1},
    ),
    (keras.layers.Embedding, {"embeddings_regularizer": -1}),
    (keras.layers.SimpleRNN, {"kernel_regularizer": -1, "recurrent_regularizer": -1}),
    (keras.layers.LSTM, {"kernel_regularizer": -1, "recurrent_regularizer": -1}),
    (keras.layers.GRU, {"kernel_regularizer": -1, "recurrent_regularizer": -1}),
    # A channel whose scale and offset are both 0 outputs exactly 0 whatever
    # its input, which every reader can drop: one group per weight (None).
    (keras.layers.BatchNormalization, {"gamma_regularizer": None, "beta_regularizer": None}),
)


def _prunable_arguments(layer) -> dict:
    """`{constructor argument: group axis}` for `layer`, empty if it has no prunable kernel."""
    for layer_type, arguments in _PRUNABLE:
        if isinstance(layer, layer_type):
            return arguments
    return {}


def _all_layers(model) -> list:
    """Every layer of `model`, nested models' layers included, each once."""
    found, seen, stack = [], set(), list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        if _graph.is_graph_model(layer):
            stack.extend(reversed(layer.layers))
    return found


def _copy(regularizer, group_axis: int | None):
    config = regularizer.get_config()
    if isinstance(regularizer, GroupLassoRegularizer):
        if group_axis is None:
            # Groups of one weight: the group lasso is the L1 penalty.
            return L1Regularizer(config["l1"])
        config = {**config, "group_axis": group_axis}
    return type(regularizer).from_config(config)


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid type for argument `model`: expected a Keras model. "
            f"Received: model={short_repr(model)} of type {type(model).__name__}"
        )
    if not _graph.is_graph_model(model):
        raise ValueError(
            "Invalid value for argument `model`: expected a Sequential or functional model "
            "(a subclassed model's layer graph is not recorded, so it cannot be copied). "
            f"Received: model='{model.name}' of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Invalid value for argument `model`: expected a built model (give it an `Input` "
            f"or call `build()` first). Received: model='{model.name}', not built"
        )


def _check_regularizer(regularizer) -> None:
    if not isinstance(regularizer, keras.regularizers.Regularizer):
        raise TypeError(
            "Invalid type for argument `regularizer`: expected a "
            "`keras.regularizers.Regularizer` instance such as "
            "`keras_l1.L1Regularizer(0.01)`. "
            f"Received: regularizer={short_repr(regularizer)} of type "
            f"{type(regularizer).__name__}"
        )


def _chosen(model, layers) -> set:
    """The ids of the layers to regularize."""
    prunable = [layer for layer in _all_layers(model) if _prunable_arguments(layer)]
    if layers is None:
        return {id(layer) for layer in prunable}
    if callable(layers):
        return {id(layer) for layer in prunable if layers(layer)}
    if isinstance(layers, str) or not isinstance(layers, Iterable):
        raise TypeError(
            "Invalid type for argument `layers`: expected None, a list of layer names or a "
            f"callable `layer -> bool`. Received: layers={short_repr(layers)} of type "
            f"{type(layers).__name__}"
        )
    names = list(layers)
    by_name = {layer.name: layer for layer in _all_layers(model)}
    for name in names:
        if name not in by_name:
            raise ValueError(
                f"Invalid value for argument `layers`: expected names of layers of model "
                f"'{model.name}'. Received: layers={short_repr(names)}, and there is no "
                f"layer named {name!r}"
            )
        if not _prunable_arguments(by_name[name]):
            raise ValueError(
                f"Invalid value for argument `layers`: expected names of layers with "
                f"prunable weights (a kernel, or BatchNormalization's scale and offset). "
                f"Received: layers={short_repr(names)}, and layer {name!r} "
                f"of type {type(by_name[name]).__name__} has none"
            )
    return {id(by_name[name]) for name in names}


def regularize(
    model: keras.Model,
    regularizer: keras.regularizers.Regularizer,
    layers: Iterable[str] | Callable[[keras.layers.Layer], bool] | None = None,
) -> keras.Model:
    """A copy of `model` with a copy of `regularizer` on every prunable kernel.

    The prunable kernels are those of Dense, EinsumDense, Conv1D/2D/3D (and
    their transposes), DepthwiseConv1D/2D, SeparableConv1D/2D (depthwise and
    pointwise kernels), Embedding, SimpleRNN, LSTM and GRU (kernel and
    recurrent kernel) layers, nested models' layers included (not layers
    inside wrappers such as Bidirectional or TimeDistributed). Each kernel
    gets its own copy of `regularizer`, replacing any regularizer it had;
    every other setting, the weights and so the outputs are the original's.

    A `GroupLassoRegularizer` is copied with `group_axis` set so that each
    group is one output channel (unit, filter, embedding dimension) of the
    layer: the last axis of a Dense or Conv kernel, the channel axis (-2) of a
    depthwise kernel (one group per output channel when `depth_multiplier`
    is 1), the output axis (-2) of a transposed convolution's kernel, the
    last output axis of an EinsumDense kernel, and each gate column of a
    recurrent kernel. Zeroed groups are then whole channels, which
    `compact_model` can remove. Element-wise penalties are copied as they are.
    BatchNormalization's scale and offset (`gamma`, `beta`) get the penalty
    too, one group per channel (the group lasso of one weight is
    `L1Regularizer` of the same `l1`): a channel whose scale and offset reach
    0 outputs exactly 0, and `compact_model` removes it with the filter
    before it.

    The copy is compiled as the original was, if it was (as
    `keras.models.clone_model` does); compile it with a
    `keras_l1.ProximalOptimizer` to train it to exact zeros.

    Args:
        model: A built Sequential or functional model, such as a
            `keras.applications` model.
        regularizer: The penalty to copy onto the kernels, a
            `keras.regularizers.Regularizer` instance.
        layers: Which layers to regularize: `None` for every layer with a
            prunable kernel, a list of layer names, or a callable taking a
            layer and returning whether to regularize it (called on the
            layers with a prunable kernel). Defaults to `None`.

    Returns:
        A new model with the same layer names, weights and outputs.

    Raises:
        TypeError: If `model` is not a Keras model, `regularizer` is not a
            regularizer instance, or `layers` is not a list or a callable.
        ValueError: If `model` is subclassed or not built, or `layers` names a
            layer `model` does not have or one without prunable weights.

    Example:

    >>> import keras, keras_l1
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1, name="out"),
    ... ])
    >>> sparse = keras_l1.regularize(model, keras_l1.GroupLassoRegularizer(0.01))
    >>> sparse.get_layer("hidden").kernel_regularizer.get_config()
    {'l1': 0.01, 'group_axis': -1}
    >>> len(sparse.losses)
    2
    """
    _check_regularizer(regularizer)
    _check_model(model)
    chosen = _chosen(model, layers)

    def clone(layer):
        config = layer.get_config()
        if id(layer) in chosen:
            for argument, axis in _prunable_arguments(layer).items():
                group_axis = axis(config) if callable(axis) else axis
                config[argument] = _copy(regularizer, group_axis)
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
