"""Reading a model's layer graph: which layer sees the input features, nodes in call order.

Keras 3 records each layer call as a node; a symbolic tensor's `_keras_history`
names the layer and node that produced it. Both `selected_features` and
`compact_model` walk that record, so the rules on which layers keep the
meaning of an input column live here once.
"""

import keras

# Activations applied coordinate by coordinate: removing a unit leaves the
# others unchanged. softmax, log_softmax, sparsemax and glu mix units.
_ELEMENTWISE_NAMES = (
    "celu",
    "elu",
    "exponential",
    "gelu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "squareplus",
    "tanh",
    "tanh_shrink",
    "threshold",
)
ELEMENTWISE_ACTIVATIONS = frozenset(
    fn for fn in (getattr(keras.activations, name, None) for name in _ELEMENTWISE_NAMES) if fn
)

# Layers without weights that act on each coordinate alone (or are the
# identity at inference): column i of their output is column i of the input.
_ELEMENTWISE_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)


def is_elementwise(layer) -> bool:
    """Whether column i of `layer`'s output depends on column i of its input only."""
    if isinstance(layer, keras.layers.Activation):
        return layer.activation in ELEMENTWISE_ACTIVATIONS
    return isinstance(layer, _ELEMENTWISE_LAYERS)


def keeps_feature_identity(layer) -> bool:
    """Whether a zero kernel row after `layer` still means "input column unused".

    True for elementwise layers, per-feature rescaling and normalization along
    the last axis, and `Flatten` (columns become the flat, C-order indices).
    """
    if is_elementwise(layer) or isinstance(layer, (keras.layers.Rescaling, keras.layers.Flatten)):
        return True
    if isinstance(layer, (keras.layers.Normalization, keras.layers.BatchNormalization)):
        axis = layer.axis
        return tuple(axis) == (-1,) if isinstance(axis, (list, tuple)) else axis == -1
    return False


def is_graph_model(model) -> bool:
    """Sequential or functional: models whose layer graph Keras recorded."""
    from keras.src.models.functional import Functional  # no public alias in Keras 3

    return isinstance(model, (keras.Sequential, Functional))


def contains(model, layer) -> bool:
    """Whether `layer` is `model` or one of its (nested) layers."""
    if model is layer:
        return True
    return any(contains(child, layer) for child in getattr(model, "layers", ()))


def graph_nodes(model) -> list:
    """The call nodes of a functional model, walking back from its outputs."""
    nodes, seen = [], set()
    stack = list(model.outputs)
    while stack:
        operation, node_index, _ = stack.pop()._keras_history
        node = operation._inbound_nodes[node_index]
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(node.input_tensors)
    return nodes


def producer(tensor):
    """The layer that produced a symbolic tensor, and the node of that call."""
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def ordered_nodes(model) -> list:
    """The call nodes of a functional model, each after the nodes that produce its inputs."""
    ordered, done = [], set()
    for node in reversed(graph_nodes(model)):
        stack = [(node, False)]
        while stack:
            current, expanded = stack.pop()
            if id(current) in done:
                continue
            if expanded:
                done.add(id(current))
                ordered.append(current)
                continue
            stack.append((current, True))
            stack.extend((producer(tensor)[1], False) for tensor in current.input_tensors)
    return ordered
