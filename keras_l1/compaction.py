"""`compact_model`: a smaller model with the dead inputs, units and channels removed."""

import tempfile

import keras
import numpy as np

from keras_l1 import _channels
from keras_l1 import _graph
from keras_l1._validation import check_int

_SUPPORTED = "a built Sequential or functional model with one input"


def _refuse(model, reason: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `model`: compact_model supports {_SUPPORTED}. "
        f"Received: model='{model.name}', {reason}"
    )


def _refuse_layer(model, layer, reason: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `model`: compact_model cannot compact layer "
        f"'{layer.name}' ({type(layer).__name__}) exactly: {reason}. "
        f"Received: model='{model.name}'"
    )


def _nodes(model) -> list:
    """The model's call nodes in call order, after checking compact_model can read them."""
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
    if len(model.inputs) != 1:
        raise _refuse(model, f"with {len(model.inputs)} inputs")
    nodes = _graph.ordered_nodes(model)
    calls = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    for node in nodes:
        layer = node.operation
        if getattr(layer, "data_format", None) == "channels_first":
            raise _refuse_layer(
                model, layer, "it is channels_first (only channels_last is supported)"
            )
        if _channels.kind(node) == "linear" and (
            getattr(layer, "lora_enabled", False)
            or getattr(layer, "quantization_mode", None) is not None
        ):
            raise _refuse_layer(model, layer, "it uses LoRA or quantization")
        if getattr(layer, "weights", None) and calls[id(layer)] > 1:
            raise _refuse_layer(
                model, layer, f"it is called {calls[id(layer)]} times and shares its weights"
            )
    return nodes


class Compaction(tuple):
    """`(small_model, kept_inputs)`, plus what `compact_model` removed.

    Unpacks as a pair; `str()` summarizes the removal.

    Attributes:
        model: The compact model.
        kept_inputs: Sorted column indices the compact model takes (list of int).
        params_before: `count_params()` of the original model.
        params_after: `count_params()` of the compact model.
        units_before: `{layer name: units}` of each Dense, convolution,
            Embedding, LSTM and GRU layer (filters, output dimensions), before.
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


class _Graph:
    """Every channel of every tensor of the model, grouped into classes removed together.

    A per-channel layer links each output channel to the input channel(s) it
    is computed from; linked channels form one class (union-find), which is
    removed as a whole or kept as a whole.
    """

    def __init__(self, model, nodes):
        self.index = {}  # id(tensor) -> global indices of its channels
        self.constants = {}  # id(tensor) -> value of each channel if constant, else NaN
        self.linear = []  # (node, _channels.Linear) of the layers that read channels
        self.creators = []  # linear layers, in call order
        self._parent = []
        blocked = []
        for node in nodes:
            layer = node.operation
            tensors = [*node.input_tensors, *node.outputs]
            for tensor in tensors:
                self.channels(tensor)
            output = node.outputs[0]
            kind = _channels.kind(node)
            if isinstance(layer, keras.layers.InputLayer):
                self.constants[id(output)] = np.full(_channels.channels(output), np.nan)
                if len(output.shape) != 2:
                    # Image and sequence inputs keep their channels: kept_inputs
                    # selects columns of a table.
                    blocked.append(self.channels(output))
            elif kind in ("linear", "recurrent"):
                parts = (_channels.Linear if kind == "linear" else _channels.Recurrent)(layer)
                self.creators.append(layer)
                (inputs,) = node.input_tensors
                if parts.links is None:
                    blocked.append(self.channels(inputs))  # token ids, not channels
                else:
                    self.linear.append((node, parts))
                self.constants[id(output)] = parts.constants(
                    self.constants.get(id(inputs)), output.dtype
                )
                if not _channels.is_elementwise_activation(layer):
                    blocked.append(self.channels(output))
            elif kind == "per_channel":
                for tensor, (outs, ins) in zip(node.input_tensors, _channels.sources(node)):
                    for a, b in zip(self.channels(output)[outs], self.channels(tensor)[ins]):
                        self._union(int(a), int(b))
                self.constants[id(output)] = _channels.per_channel_constants(
                    node, [self.constants[id(tensor)] for tensor in node.input_tensors]
                )
            else:
                for tensor in tensors:
                    blocked.append(self.channels(tensor))
                for tensor in node.outputs:
                    self.constants[id(tensor)] = np.full(_channels.channels(tensor), np.nan)
        blocked.extend(self.channels(tensor) for tensor in model.outputs)
        roots = np.array([self._find(i) for i in range(len(self._parent))], dtype=np.int64)
        _, self.classes = np.unique(roots, return_inverse=True)
        self.blocked = np.zeros(self.classes.max() + 1, bool)
        for indices in blocked:
            self.blocked[self.classes[indices]] = True

    def channels(self, tensor) -> np.ndarray:
        key = id(tensor)
        if key not in self.index:
            start = len(self._parent)
            size = _channels.channels(tensor)
            self.index[key] = np.arange(start, start + size)
            self._parent.extend(range(start, start + size))
        return self.index[key]

    def _find(self, i: int) -> int:
        root = i
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[i] != root:
            self._parent[i], i = root, self._parent[i]
        return root

    def _union(self, a: int, b: int) -> None:
        self._parent[self._find(a)] = self._find(b)

    def removed_classes(self, blocked) -> np.ndarray:
        """The classes whose every reader ignores them or folds their constant into its bias.

        `blocked` marks the classes that stay whatever their readers do.
        Removing the outputs of a layer can make its inputs unused, so the rule
        is applied until nothing changes (removals only grow).
        """
        removed = np.zeros_like(blocked)
        while True:
            kept = blocked.copy()
            for node, parts in self.linear:
                (inputs,) = node.input_tensors
                keep_out = ~removed[self.classes[self.channels(node.outputs[0])]]
                unused = ~np.any(parts.links[:, keep_out], axis=1)
                fine = unused | parts.absorbs(self.constants[id(inputs)])
                kept[self.classes[self.channels(inputs)][~fine]] = True
                if isinstance(parts, _channels.Recurrent):
                    # The layer reads its own units at the next step.
                    read = np.any(parts.self_links[:, keep_out], axis=1)
                    fine = ~read | (self.constants[id(node.outputs[0])] == 0)
                    kept[self.classes[self.channels(node.outputs[0])][~fine]] = True
            if np.array_equal(~kept, removed):
                return removed
            removed = ~kept

    def kept_channels(self, nodes, round_to: int) -> dict:
        """`{id(tensor): mask of the channels that stay}`.

        A layer output whose every channel could go keeps its first one: the
        model has no layer to route around it, and that channel, kept like a
        model output's, is computed exactly as in the original. The output of
        a layer that makes channels (`self.creators`) keeps a multiple of
        `round_to` of them, or all. Each channel kept this way (the first ones
        that would go) is added to the blocked ones and the removal
        recomputed, until every layer output has its count.
        """
        blocked = self.blocked.copy()
        creators = {id(layer) for layer in self.creators}
        while True:
            removed = self.removed_classes(blocked)
            keep = {key: ~removed[self.classes[indices]] for key, indices in self.index.items()}
            short = False
            for node in nodes:
                if isinstance(node.operation, keras.layers.InputLayer):
                    continue
                multiple = round_to if id(node.operation) in creators else 1
                for tensor in node.outputs:
                    mask = keep[id(tensor)]
                    kept = int(mask.sum())
                    wanted = min(-(-max(kept, 1) // multiple) * multiple, len(mask))
                    missing = wanted - kept
                    if missing > 0:
                        short = True
                        blocked[self.classes[self.channels(tensor)[~mask][:missing]]] = True
            if not short:
                return keep


def _rebuild(model, nodes, graph, keep):
    """The layers of the compact model: `{id(old layer): (new layer, weights)}`."""
    layers = {}
    for node in nodes:
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer) or id(layer) in layers:
            continue
        if not isinstance(layer, keras.layers.Layer):
            # An operation on symbolic tensors (`x + 3`, `keras.ops.mean`): no
            # state, and it keeps every channel it touches.
            layers[id(layer)] = (layer, layer, {})
            continue
        kind = _channels.kind(node)
        config, weights = layer.get_config(), None
        if kind == "linear":
            (inputs,) = node.input_tensors
            keep_in = keep[id(inputs)]
            constants = graph.constants[id(inputs)]
            delta = np.zeros(_channels.layer_units(layer))
            parts = dict(graph.linear).get(node)
            if parts is not None and parts.sums is not None:
                fold = ~keep_in & np.isfinite(constants) & (constants != 0)
                delta = constants[fold] @ parts.sums[fold]
            config, weights = _channels.rebuild_linear(
                layer, keep_in, keep[id(node.outputs[0])], delta
            )
        elif kind == "recurrent":
            config, weights = _channels.rebuild_recurrent(
                layer, keep[id(node.input_tensors[0])], keep[id(node.outputs[0])]
            )
        elif kind == "per_channel":
            weights = _channels.rebuild_per_channel(layer, keep[id(node.input_tensors[0])])
        try:
            new = type(layer).from_config(config)
        except Exception as error:
            if layer.variables:
                raise _refuse_layer(
                    model, layer, f"it cannot be rebuilt from its config ({error})"
                ) from error
            # A layer without state (a Lambda of a Python lambda, which safe
            # mode will not deserialize) can serve both models.
            new, weights = layer, {}
        layers[id(layer)] = (layer, new, weights)
    return layers


def _copy_state(layer, new) -> None:
    """Everything Keras saves of `layer` into its copy `new`, which has its config.

    Its variables, then Keras's own loading hooks on the layer and on every
    layer of a nested model: `load_own_variables` (an adapted Normalization
    recomputes its mean and variance there) and `load_assets` (an adapted
    lookup layer's vocabulary, which is in neither the config nor the
    variables).
    """
    new.set_weights(layer.get_weights())
    pairs = [(layer, new)]
    while pairs:
        old, copy = pairs.pop()
        store = {}
        old.save_own_variables(store)
        copy.load_own_variables(store)
        if hasattr(old, "save_assets"):
            with tempfile.TemporaryDirectory() as directory:
                old.save_assets(directory)
                copy.load_assets(directory)
        if isinstance(old, keras.Model) and isinstance(copy, keras.Model):
            pairs.extend(zip(old.layers, copy.layers))


def compact_model(model, round_to: int = 1) -> Compaction:
    """Removes dead inputs, units and channels: same outputs, fewer parameters.

    Works on the layer graph of a Sequential or functional model. A channel
    (a unit of a Dense layer, a filter of a convolution, an output dimension
    of an Embedding, a column of a rank-2 input) is removed, from the layer
    that makes it and from every layer it goes through, when every layer that
    reads it (Dense, Conv1D/2D/3D, SeparableConv1D/2D, LSTM, GRU) either

    - ignores it: its kernel slice for the channel is exactly zero (on the
      channels that remain), or
    - can fold it: the channel is the same constant `c` at every position
      (its own kernel slice is zero, so it outputs `activation(bias)`, pushed
      through BatchNormalization and the other layers on its way; or a
      BatchNormalization's scale for it is 0, so it is that layer's offset), and `c`
      times the reader's kernel slice moves into the reader's bias. A zero
      constant always folds; a non-zero one only into a Dense layer or a
      convolution whose windows never cover padding (`padding="valid"` or a
      1x1 kernel), since with `padding="same"` the borders see `c` next to
      padding zeros. Otherwise the channel stays.

    An LSTM or GRU unit goes when no later layer and no other unit's gates
    read it, or when its candidate's kernel, recurrent kernel and bias columns
    are zero (its state then stays 0, so it outputs 0); LSTM and GRU read
    only zero constants.

    Layers that carry channels one to one remove them together: elementwise
    activations (Activation, ReLU, LeakyReLU, ELU), Dropout-like layers,
    BatchNormalization, DepthwiseConv1D/2D, pooling, ZeroPadding, UpSampling,
    Cropping, Flatten (a channel's flat positions), global pooling, `Add`,
    `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum` (a channel goes
    only when it can go on every input) and `Concatenate` on the channel axis.
    Any other layer (Reshape, Lambda, attention, stateful RNNs, grouped
    convolutions, a softmax activation, nested models, and any layer that
    receives a mask) keeps every channel it reads or writes, so it is copied
    unchanged, with all Keras saves of it (an adapted Normalization's
    statistics, a lookup layer's vocabulary). The model's outputs, and the
    channels of an image or sequence input, are always kept. A layer whose
    every unit or channel could go keeps its first one (whole layers are not
    removed), computed as in the original. With `round_to=n`, every layer
    that makes units or channels keeps a multiple of `n` of them (or all),
    adding back the first dead ones, computed as in the original too: CPU
    and GPU kernels run faster on widths that fill their vector registers.

    The result satisfies `small(x[:, kept_inputs]) == model(x)` for a rank-2
    input and `small(x) == model(x)` otherwise, in inference mode, up to
    floating-point summation order. Layers keep their names and configs
    (regularizers, constraints, dtype policies), so the small model can be
    compiled and trained further.

    Args:
        model: A built Sequential or functional Keras model with one input.
        round_to: The multiple of units or channels each Dense, convolution,
            Embedding and recurrent layer keeps (all of them if fewer). 1,
            the default, removes every channel that can go; 8 or 16 trade a
            few of them for widths that compute faster.

    Returns:
        A `Compaction`, which unpacks as `(small_model, kept_inputs)`:
        `kept_inputs` is the sorted list of input columns the small model
        takes (all channels for an input of rank above 2). It also has
        `params_before`, `params_after`, `units_before` and `units_after`
        (units or filters of each Dense, convolution, Embedding and
        recurrent layer),
        and `str()` summarizes them.

    Raises:
        TypeError: If `model` is not a Keras model, or `round_to` not an
            integer.
        ValueError: If `round_to` is below 1; if `model` is not built, is
            subclassed, has several inputs, or has a layer compact_model
            cannot handle exactly (channels_first, LoRA or quantized, a layer
            with weights called more than once, one that cannot be rebuilt
            from its config; the message names the layer); or if every input
            is dead (the output is then constant).

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

    A convolution's dead filter leaves with its row in the next layer:

    >>> cnn = keras.Sequential([keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> kernel = numpy(cnn.get_layer("conv").kernel)
    >>> kernel[..., 1] = 0.0
    >>> _ = cnn.get_layer("conv").kernel.assign(kernel)
    >>> compaction = keras_l1.compact_model(cnn)
    >>> compaction.units_after["conv"], cnn.count_params() - compaction.params_after
    (3, 12)
    >>> keras_l1.compact_model(cnn, round_to=2).units_after["conv"]
    4
    """
    round_to = check_int("round_to", round_to, minimum=1)
    nodes = _nodes(model)
    graph = _Graph(model, nodes)
    keep = graph.kept_channels(nodes, round_to)

    (input_tensor,) = model.inputs
    if not keep[id(input_tensor)].any():
        raise ValueError(
            f"Invalid value for argument `model`: every input of model '{model.name}' has "
            "all-zero outgoing weights, so its output is constant and there is no input to "
            f"keep. Received: model='{model.name}'"
        )

    layers = _rebuild(model, nodes, graph, keep)
    kept_inputs = [int(i) for i in np.flatnonzero(keep[id(input_tensor)])]
    shape = list(input_tensor.shape)
    if len(shape) == 2:
        shape[-1] = len(kept_inputs)
    inputs = keras.Input(
        batch_shape=tuple(shape),
        dtype=input_tensor.dtype,
        name=_graph.producer(input_tensor)[0].name,
    )
    if isinstance(model, keras.Sequential):
        small = keras.Sequential(
            [inputs, *(layers[id(layer)][1] for layer in model.layers)], name=model.name
        )
    else:
        tensors = {id(input_tensor): inputs}

        def new_tensor(value):
            return tensors[id(value)] if isinstance(value, keras.KerasTensor) else value

        for node in nodes:
            if isinstance(node.operation, keras.layers.InputLayer):
                continue
            new = layers[id(node.operation)][1]
            args = keras.tree.map_structure(new_tensor, node.arguments.args)
            kwargs = keras.tree.map_structure(new_tensor, node.arguments.kwargs)
            outputs = keras.tree.flatten(new(*args, **kwargs))
            tensors.update({id(old): out for old, out in zip(node.outputs, outputs)})
        # The outputs' structure (a dict, a list, one tensor) as the model's.
        outputs = keras.tree.map_structure(lambda tensor: tensors[id(tensor)], model.output)
        small = keras.Model(inputs, outputs, name=model.name)
    for layer, new, weights in layers.values():
        if weights is None:
            _copy_state(layer, new)
        for path, value in (weights or {}).items():
            owner, _, name = path.rpartition(".")
            getattr(getattr(new, owner) if owner else new, name).assign(value)

    units_before = {"inputs": len(keep[id(input_tensor)])}
    units_after = {"inputs": len(kept_inputs)}
    for node in nodes:
        if node.operation in graph.creators:
            name = node.operation.name
            units_before[name] = _channels.layer_units(node.operation)
            units_after[name] = int(keep[id(node.outputs[0])].sum())
    return Compaction(small, kept_inputs, model.count_params(), units_before, units_after)
