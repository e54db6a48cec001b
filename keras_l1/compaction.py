"""`compact_model`: a smaller model with the dead inputs and units removed."""

import keras
import numpy as np

from keras_l1 import _graph

_SUPPORTED = (
    "a Sequential or functional model with one rank-2 input and one output, made of a chain "
    "of Dense layers (elementwise activations on hidden layers, no LoRA or quantization) and "
    "weightless elementwise layers (Dropout, GaussianNoise, GaussianDropout, AlphaDropout, "
    "ActivityRegularization, Identity, elementwise Activation)"
)


def _refuse(model, reason: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `model`: compact_model supports {_SUPPORTED}. "
        f"Received: model='{model.name}', {reason}"
    )


def _chain(model) -> list:
    """The model's layers in call order, if the model is a single chain."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Invalid type for argument `model`: expected a Keras model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Invalid value for argument `model`: expected a built model (call it on data or "
            f"call `build()` first). Received: model='{model.name}', not built"
        )
    if not _graph.is_graph_model(model):
        raise _refuse(model, f"a {type(model).__name__}, whose layer graph is not recorded")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise _refuse(model, f"with {len(model.inputs)} inputs and {len(model.outputs)} outputs")
    if len(model.inputs[0].shape) != 2:
        raise _refuse(model, f"with an input of shape {tuple(model.inputs[0].shape)}")
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
    else:
        layers = []
        node = _graph.producer(model.outputs[0])[1]
        while not isinstance(node.operation, keras.layers.InputLayer):
            if len(node.input_tensors) != 1:
                raise _refuse(
                    model,
                    f"whose layer '{node.operation.name}' takes {len(node.input_tensors)} inputs",
                )
            layers.append(node.operation)
            node = _graph.producer(node.input_tensors[0])[1]
        layers.reverse()
    for layer in layers:
        if type(layer) is keras.layers.Dense:
            if layer.lora_enabled or layer.quantization_mode is not None:
                raise _refuse(model, f"whose Dense layer '{layer.name}' uses LoRA or quantization")
        elif not _graph.is_elementwise(layer):
            raise _refuse(model, f"with layer '{layer.name}' of type {type(layer).__name__}")
    if len({id(layer) for layer in layers}) != len(layers):
        raise _refuse(model, "which calls a layer more than once")
    if not any(type(layer) is keras.layers.Dense for layer in layers):
        raise _refuse(model, "which has no Dense layer")
    return layers


class Compaction(tuple):
    """`(small_model, kept_inputs)`, plus what `compact_model` removed.

    Unpacks as a pair; `str()` summarizes the removal.

    Attributes:
        model: The compact model.
        kept_inputs: Sorted column indices the compact model takes (list of int).
        params_before: `count_params()` of the original model.
        params_after: `count_params()` of the compact model.
        units_before: `{layer name: units}` of each Dense layer, before.
        units_after: The same, after (the input under the key `"inputs"` in both).
    """

    def __new__(cls, model, kept_inputs, params_before, units_before, units_after):
        self = super().__new__(cls, (model, kept_inputs))
        self.params_before = params_before
        self.params_after = model.count_params()
        self.units_before = units_before
        self.units_after = units_after
        return self

    @property
    def model(self):
        return self[0]

    @property
    def kept_inputs(self) -> list:
        return self[1]

    def __str__(self) -> str:
        lines = [
            f"compact_model '{self.model.name}': {self.params_before:,} -> "
            f"{self.params_after:,} parameters ({self.params_after / self.params_before:.1%})"
        ]
        for name, before in self.units_before.items():
            lines.append(f"  {name}: {before} -> {self.units_after[name]}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Compaction(params_before={self.params_before}, params_after={self.params_after}, "
            f"kept_inputs={self.kept_inputs!r})"
        )


def _constant_output(value, layers) -> np.ndarray:
    """`value` pushed through the elementwise layers that follow a Dense layer."""
    value = keras.ops.convert_to_tensor(value[None, :])
    for layer in layers:
        value = layer(value, training=False)
    return keras.ops.convert_to_numpy(value)[0]


def compact_model(model) -> Compaction:
    """Removes inputs and hidden units with all-zero weights: same outputs, fewer parameters.

    For `y = f_L(W_L·…f_1(W_1·x + b_1)… + b_L)` with elementwise `f_k`:

    - input column `i` is dropped when row `i` of `W_1` is zero: it never
      reaches the output;
    - hidden unit `j` of layer `k` is dropped when its outgoing weights (row `j`
      of `W_{k+1}`) are zero, for the same reason;
    - a hidden unit whose incoming weights (column `j` of `W_k`) are zero
      outputs the constant `f_k(b_k[j])`; it is dropped and its contribution
      `f_k(b_k[j]) · W_{k+1}[j, :]` is added to `b_{k+1}` (the next layer gets a
      bias if it had none and the contribution is non-zero).

    The rules are applied until nothing changes, so removals propagate through
    the network. The result satisfies
    `small(x[:, kept_inputs]) == model(x)` up to floating-point summation order.
    Layers keep their names and configs (regularizers, constraints, dtype
    policies), so the small model can be compiled and trained further; the
    output layer keeps all its units and may use any activation (`softmax`).

    Supported: Sequential and functional models with one rank-2 input and one
    output that are a chain of `Dense` layers and weightless elementwise
    layers (Dropout, GaussianNoise, GaussianDropout, AlphaDropout,
    ActivityRegularization, Identity, Activation with an elementwise
    function). Anything else (subclassed or nested models, branches,
    normalization or convolution layers, softmax on a hidden layer, LoRA or
    quantized Dense layers) raises a `ValueError` naming the obstacle.

    Args:
        model: A built Keras model as described above.

    Returns:
        A `Compaction`, which unpacks as `(small_model, kept_inputs)`:
        `kept_inputs` is the sorted list of input columns the small model
        takes. It also has `params_before`, `params_after`, `units_before`,
        `units_after`, and `str()` summarizes them.

    Raises:
        TypeError: If `model` is not a Keras model.
        ValueError: If `model` is not built or not supported, or if all its
            inputs or all units of a hidden layer are dead (the output is
            then constant).

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> model = keras.Sequential([keras.Input((3,)),
    ...     keras.layers.Dense(2, activation="relu"), keras.layers.Dense(1)])
    >>> _ = model.layers[0].kernel.assign([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    >>> small, kept_inputs = keras_l1.compact_model(model)
    >>> kept_inputs, small.count_params(), model.count_params()
    ([0, 2], 5, 11)
    >>> x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    >>> numpy = keras.ops.convert_to_numpy
    >>> bool(np.allclose(numpy(small(x[:, kept_inputs])), numpy(model(x))))
    True
    """
    layers = _chain(model)
    dense_positions = [i for i, layer in enumerate(layers) if type(layer) is keras.layers.Dense]
    for k in dense_positions[:-1]:
        layer = layers[k]
        if layer.activation not in _graph.ELEMENTWISE_ACTIVATIONS:
            raise _refuse(
                model, f"whose hidden Dense layer '{layer.name}' has a non-elementwise activation"
            )
    dense = [layers[i] for i in dense_positions]
    # The elementwise layers between Dense layer k and k + 1.
    between = [layers[i + 1 : j] for i, j in zip(dense_positions, dense_positions[1:])]
    kernels = [keras.ops.convert_to_numpy(layer.kernel).copy() for layer in dense]
    biases = [
        keras.ops.convert_to_numpy(layer.bias).copy()
        if layer.use_bias
        else np.zeros(layer.units, kernels[k].dtype)
        for k, layer in enumerate(dense)
    ]
    needs_bias = [layer.use_bias for layer in dense]
    # keep[0] marks input columns, keep[k + 1] the units of dense[k].
    keep = [np.ones(kernels[0].shape[0], bool)] + [np.ones(layer.units, bool) for layer in dense]

    changed = True
    while changed:
        changed = False
        # Dead outgoing: a row of the next kernel (restricted to kept units) is zero.
        for k in range(len(dense)):
            rows = kernels[k][:, keep[k + 1]]
            dead = keep[k] & ~np.any(rows != 0, axis=1)
            if dead.any():
                keep[k] &= ~dead
                changed = True
        # Dead incoming: a hidden unit's column (restricted to kept inputs) is zero,
        # so it outputs a constant, which moves into the next layer's bias.
        for k in range(len(dense) - 1):
            columns = kernels[k][keep[k], :]
            dead = keep[k + 1] & ~np.any(columns != 0, axis=0)
            if not dead.any():
                continue
            activation = dense[k].activation(keras.ops.convert_to_tensor(biases[k][dead]))
            constant = _constant_output(keras.ops.convert_to_numpy(activation), between[k])
            contribution = constant @ kernels[k + 1][dead, :]
            if np.any(contribution != 0):
                biases[k + 1] = biases[k + 1] + contribution.astype(biases[k + 1].dtype)
                needs_bias[k + 1] = True
            keep[k + 1] &= ~dead
            changed = True

    if not keep[0].any():
        raise ValueError(
            f"Invalid value for argument `model`: every input of model '{model.name}' has "
            "all-zero outgoing weights, so its output is constant and there is no input to "
            f"keep. Received: model='{model.name}'"
        )
    for k, layer in enumerate(dense[:-1]):
        if not keep[k + 1].any():
            raise ValueError(
                f"Invalid value for argument `model`: every unit of layer '{layer.name}' is "
                f"dead, so the output of model '{model.name}' is constant. "
                f"Received: model='{model.name}'"
            )

    kept_inputs = [int(i) for i in np.flatnonzero(keep[0])]
    input_layer = _graph.producer(model.inputs[0])[0]
    inputs = keras.Input(
        shape=(len(kept_inputs),), dtype=model.inputs[0].dtype, name=input_layer.name
    )
    new_layers = []
    for layer in layers:
        config = layer.get_config()
        if type(layer) is keras.layers.Dense:
            k = dense.index(layer)
            config["units"] = int(keep[k + 1].sum())
            config["use_bias"] = needs_bias[k]
        new_layers.append(type(layer).from_config(config))
    if isinstance(model, keras.Sequential):
        small = keras.Sequential([inputs, *new_layers], name=model.name)
    else:
        outputs = inputs
        for layer in new_layers:
            outputs = layer(outputs)
        small = keras.Model(inputs, outputs, name=model.name)
    for k, layer in enumerate(new_layers[i] for i in dense_positions):
        layer.kernel.assign(kernels[k][np.ix_(keep[k], keep[k + 1])])
        if layer.use_bias:
            layer.bias.assign(biases[k][keep[k + 1]])

    units_before = {"inputs": len(keep[0])}
    units_before.update({layer.name: layer.units for layer in dense})
    units_after = {"inputs": len(kept_inputs)}
    units_after.update({layer.name: int(keep[k + 1].sum()) for k, layer in enumerate(dense)})
    return Compaction(small, kept_inputs, model.count_params(), units_before, units_after)
