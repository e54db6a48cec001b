"""How each layer type loses a channel: the one table `compact_model` reads.

Channels are the last axis (channels-last). A layer is one of:

- *linear*: Dense, Conv1D/2D/3D, SeparableConv1D/2D, Embedding. Output
  channel `o` is `activation(bias[o] + sum_c kernel[..., c, o] * x_c)`; it
  creates its output channels (a removed one is a dropped kernel column) and
  consumes its input channels (a removed one is a dropped kernel row, its
  constant value, if any, folded into the bias).
- *per-channel*: output channel `j` depends on input channel `source[j]` only
  (activations, BatchNormalization, depthwise convolutions, pooling, padding,
  Flatten, `Add`, `Concatenate`, ...); a channel is removed from input and
  output together.
- *recurrent*: LSTM, GRU; like linear, and a unit also reads the others
  through the recurrent kernel.
- anything else: *unknown*. `compact_model` keeps every channel it touches.
"""

import keras
import numpy as np

from keras_l1 import _graph

L = keras.layers

_CONVOLUTIONS = (L.Conv1D, L.Conv2D, L.Conv3D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_LINEAR = (L.Dense, L.Embedding, *_CONVOLUTIONS, *_SEPARABLE)

# Identity at inference: constants pass unchanged.
_IDENTITY = (
    L.InputLayer,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Identity,
)
# Weightless layers applied value by value: constants go through the layer.
_VALUEWISE = (L.ReLU, L.LeakyReLU, L.ELU)
# Spatial layers that move or pick values of one channel: a constant channel
# stays constant, a zero one stays zero.
_KEEP_CONSTANT = (
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.Flatten,
)
_AVERAGE_POOLING = (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D)
# Spatial layers that bring in zeros: only a zero channel stays constant.
_KEEP_ZERO = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
_RECURRENT = (L.LSTM, L.GRU)
_MERGE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)


def channels(tensor) -> int:
    """The size of a symbolic tensor's last axis (1 when it has none)."""
    shape = tensor.shape
    return int(shape[-1]) if len(shape) >= 2 and shape[-1] is not None else 1


def _numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def _apply(function, constants: np.ndarray, dtype) -> np.ndarray:
    """`function` of a constant per channel (NaN: not constant), as the model computes it."""
    varying = np.isnan(constants)
    values = keras.ops.convert_to_tensor(np.where(varying, 0, constants)[None, :], dtype=dtype)
    out = _numpy(function(values)).astype(np.float64)[0]
    return np.where(varying, np.nan, out)


def is_elementwise_activation(layer) -> bool:
    activation = getattr(layer, "activation", None)
    return activation is None or activation in _graph.ELEMENTWISE_ACTIVATIONS


def kind(node) -> str:
    """How the layer of `node` treats channels: linear, recurrent, per_channel or unknown."""
    layer = node.operation
    rank = len(node.outputs[0].shape)
    mask = node.arguments.kwargs.get("mask")
    if any(isinstance(tensor, keras.KerasTensor) for tensor in keras.tree.flatten(mask)):
        # A mask (from Embedding(mask_zero=True) or Masking) changes what the
        # layer computes at each position: its channels stay as they are.
        return "unknown"
    if type(layer) in _LINEAR:
        # Grouped convolutions read a slice of the input channels per group.
        return "linear" if getattr(layer, "groups", 1) == 1 else "unknown"
    if type(layer) in _DEPTHWISE:
        return "per_channel" if is_elementwise_activation(layer) else "unknown"
    if type(layer) in _RECURRENT:
        # One output (no states), as many units in and out of every step.
        simple = not (layer.return_state or layer.stateful)
        return "recurrent" if simple and len(node.outputs) == 1 else "unknown"
    if type(layer) is L.Activation:
        return "per_channel" if _graph.is_elementwise(layer) else "unknown"
    if type(layer) is L.BatchNormalization:
        axis = layer.axis
        axis = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
        return "per_channel" if axis in ((-1,), (rank - 1,)) else "unknown"
    if type(layer) is L.Concatenate:
        return "per_channel" if layer.axis in (-1, rank - 1) else "unknown"
    if type(layer) in _MERGE and not merges_equal_shapes(node):
        return "unknown"
    if type(layer) in (
        *_IDENTITY,
        *_VALUEWISE,
        *_KEEP_CONSTANT,
        *_AVERAGE_POOLING,
        *_KEEP_ZERO,
        *_MERGE,
    ):
        return "per_channel"
    return "unknown"


def sources(node) -> list:
    """For each input of a per-channel node, `(out_channels, in_channels)` it links."""
    layer = node.operation
    out = channels(node.outputs[0])
    if type(layer) is L.Concatenate:
        links, start = [], 0
        for tensor in node.input_tensors:
            size = channels(tensor)
            links.append((np.arange(start, start + size), np.arange(size)))
            start += size
        return links
    if type(layer) in _DEPTHWISE:
        return [(np.arange(out), np.arange(out) // layer.depth_multiplier)]
    links = []
    for tensor in node.input_tensors:
        size = channels(tensor)
        # Flatten (channels-last): flat index j holds channel j % size.
        links.append((np.arange(out), np.arange(out) % size))
    return links


def merges_equal_shapes(node) -> bool:
    """Whether a merge node's inputs all have the output's channel count (no broadcasting)."""
    out = channels(node.outputs[0])
    return all(channels(tensor) == out for tensor in node.input_tensors)


def per_channel_constants(node, constants: list) -> np.ndarray:
    """The constant per output channel of a per-channel node (NaN: not constant)."""
    layer = node.operation
    dtype = node.outputs[0].dtype
    if type(layer) is L.Concatenate:
        return np.concatenate(constants)
    if type(layer) in _MERGE:
        varying = np.any([np.isnan(c) for c in constants], axis=0)
        values = [
            keras.ops.convert_to_tensor(np.nan_to_num(c)[None, :], dtype=dtype) for c in constants
        ]
        out = _numpy(layer(values)).astype(np.float64)[0]
        return np.where(varying, np.nan, out)
    (x,) = constants
    out_size = channels(node.outputs[0])
    if type(layer) in _IDENTITY or type(layer) in _KEEP_CONSTANT:
        return x[np.arange(out_size) % x.size]
    if type(layer) in _AVERAGE_POOLING:
        # "same" pooling averages fewer values at the borders; backends differ
        # on whether the padding counts, so only a zero channel is trusted.
        return x if layer.padding == "valid" else np.where(x == 0, x, np.nan)
    if type(layer) in _KEEP_ZERO:
        return np.where(x == 0, x, np.nan)
    if type(layer) in _VALUEWISE:
        return _apply(layer, x, dtype)
    if type(layer) is L.Activation:
        return _apply(layer.activation, x, dtype)
    if type(layer) is L.BatchNormalization:
        out = _apply(lambda v: _batch_normalization(layer, v), np.nan_to_num(x), dtype)
        # A zero scale multiplies the (finite) input by 0: the channel is its offset.
        silent = _numpy(layer.gamma) == 0 if layer.scale else np.zeros(x.shape, bool)
        return np.where(np.isnan(x) & ~silent, np.nan, out)
    if type(layer) in _DEPTHWISE:
        kernel = _numpy(layer.kernel).astype(np.float64)  # (*window, in, multiplier)
        spatial = tuple(range(kernel.ndim - 2))
        sums = kernel.sum(axis=spatial).reshape(-1)
        touched = np.any(kernel != 0, axis=spatial).reshape(-1)
        source = x[np.arange(out_size) // layer.depth_multiplier]
        out = np.where(touched, source * sums, 0.0)
        if pads(layer):
            out[touched & (source != 0)] = np.nan
        out[touched & np.isnan(source)] = np.nan
        if layer.use_bias:
            out = out + _numpy(layer.bias)
        return _apply(layer.activation, out, dtype)
    raise AssertionError(f"no constant rule for {type(layer).__name__}")


def _batch_normalization(layer, values):
    """Inference-mode BatchNormalization of `values` [1, channels], the op the layer uses."""

    def cast(variable):
        return keras.ops.cast(variable, values.dtype)

    return keras.ops.batch_normalization(
        values,
        cast(layer.moving_mean),
        cast(layer.moving_variance),
        axis=-1,
        offset=cast(layer.beta) if layer.center else None,
        scale=cast(layer.gamma) if layer.scale else None,
        epsilon=layer.epsilon,
    )


def pads(layer) -> bool:
    """Whether a window of `layer` can cover padding zeros (so a constant input is not constant)."""
    if type(layer) is L.Dense or type(layer) is L.Embedding:
        return False
    kernel_size = layer.kernel_size
    return layer.padding != "valid" and any(size > 1 for size in kernel_size)


class Linear:
    """A linear layer's kernel, seen as `links`, `sums` ([in, out]) and `bias` ([out])."""

    def __init__(self, layer):
        self.layer = layer
        if type(layer) is L.Embedding:
            table = _numpy(layer.embeddings).astype(np.float64)
            self.links = self.sums = None  # ids are not channels
            self.bias = np.zeros(table.shape[1])
            # A column equal over the whole vocabulary is a constant output.
            self.output_constants = np.where(np.all(table == table[:1], axis=0), table[0], np.nan)
            return
        if type(layer) in _SEPARABLE:
            depthwise = _numpy(layer.depthwise_kernel).astype(np.float64)
            pointwise = _numpy(layer.pointwise_kernel).astype(np.float64)
            spatial = tuple(range(depthwise.ndim - 2))
            inputs, multiplier = depthwise.shape[-2:]
            pointwise = pointwise.reshape(inputs, multiplier, -1)
            touched = np.any(depthwise != 0, axis=spatial)  # [in, multiplier]
            self.links = np.any(touched[:, :, None] & (pointwise != 0), axis=1)
            self.sums = np.einsum("im,imo->io", depthwise.sum(axis=spatial), pointwise)
        else:
            kernel = _numpy(layer.kernel).astype(np.float64)
            spatial = tuple(range(kernel.ndim - 2))
            self.links = np.any(kernel != 0, axis=spatial)
            self.sums = kernel.sum(axis=spatial)
        self.bias = (
            _numpy(layer.bias).astype(np.float64)
            if layer.use_bias
            else np.zeros(layer_units(layer))
        )
        self.pads = pads(layer)
        self.output_constants = None

    def constants(self, x: np.ndarray, dtype) -> np.ndarray:
        """Output constants (NaN: not constant) given the input's."""
        if self.output_constants is not None:
            return self.output_constants
        varying = np.isnan(x) | ((x != 0) & self.pads)
        out = self.bias + np.nan_to_num(x) @ np.where(self.links, self.sums, 0.0)
        out[np.any(self.links[varying], axis=0)] = np.nan
        if not is_elementwise_activation(self.layer):
            return np.full_like(out, np.nan)
        return _apply(self.layer.activation, out, dtype)

    def absorbs(self, x: np.ndarray) -> np.ndarray:
        """Which constant input channels can be removed, their value folded into the bias."""
        return (x == 0) | (np.isfinite(x) & (not self.pads))


class Recurrent:
    """An LSTM or GRU's gate kernels, seen as `links` [in, units] and `self_links` [units, units].

    Unit `j` reads input channel `c` when a gate's kernel column for `j` has a
    non-zero in row `c`, and unit `o` when a recurrent kernel column does. A
    unit whose candidate kernel, recurrent kernel and bias columns are zero
    has a candidate of `activation(0)`; when that is 0 (tanh, relu), its cell
    (LSTM) or state (GRU) stays at its initial 0, and so does its output.
    """

    pads = False
    sums = None

    def __init__(self, layer):
        self.layer = layer
        cell = layer.cell
        units = cell.units
        self.gates = 4 if type(layer) is L.LSTM else 3
        kernel = _numpy(cell.kernel).reshape(-1, self.gates, units)
        recurrent = _numpy(cell.recurrent_kernel).reshape(units, self.gates, units)
        self.links = np.any(kernel != 0, axis=1)
        self.self_links = np.any(recurrent != 0, axis=1)
        np.fill_diagonal(self.self_links, False)  # a removed unit does not read itself
        # The candidate is gate 2 in both: LSTM's (i, f, c, o), GRU's (z, r, h).
        candidate = ~np.any(kernel[:, 2] != 0, axis=0) & ~np.any(recurrent[:, 2] != 0, axis=0)
        if cell.use_bias:
            bias = _numpy(cell.bias).reshape(-1, self.gates, units)[:, 2]
            candidate &= ~np.any(bias != 0, axis=0)
        at_zero = _numpy(cell.activation(keras.ops.zeros((1,), dtype=layer.compute_dtype)))
        self.output_constants = np.where(candidate & (at_zero[0] == 0), 0.0, np.nan)

    def constants(self, x: np.ndarray, dtype) -> np.ndarray:
        return self.output_constants

    def absorbs(self, x: np.ndarray) -> np.ndarray:
        return x == 0


def rebuild_recurrent(layer, keep_in, keep_out):
    """A config and `{attribute path: value}` weights of an LSTM or GRU for the kept units."""
    cell = layer.cell
    gates = 4 if type(layer) is L.LSTM else 3
    config = layer.get_config()
    config["units"] = int(keep_out.sum())
    columns = (np.arange(gates)[:, None] * cell.units + np.flatnonzero(keep_out)).ravel()
    weights = {
        "cell.kernel": _numpy(cell.kernel)[keep_in][:, columns],
        "cell.recurrent_kernel": _numpy(cell.recurrent_kernel)[keep_out][:, columns],
    }
    if cell.use_bias:
        weights["cell.bias"] = _numpy(cell.bias)[..., columns]
    return config, weights


def layer_units(layer) -> int:
    if type(layer) is L.Dense:
        return layer.units
    if type(layer) is L.Embedding:
        return layer.output_dim
    if type(layer) in _RECURRENT:
        return layer.units
    return layer.filters


def rebuild_linear(layer, keep_in, keep_out, bias_delta):
    """A config and `{attribute: value}` weights of `layer` without the removed channels."""
    config = layer.get_config()
    key = {L.Dense: "units", L.Embedding: "output_dim"}.get(type(layer), "filters")
    config[key] = int(keep_out.sum())
    if type(layer) is L.Embedding:
        return config, {"embeddings": _numpy(layer.embeddings)[:, keep_out]}
    weights = {}
    if type(layer) in _SEPARABLE:
        multiplier = layer.depth_multiplier
        weights["depthwise_kernel"] = _numpy(layer.depthwise_kernel)[..., keep_in, :]
        rows = np.repeat(keep_in, multiplier)
        weights["pointwise_kernel"] = _numpy(layer.pointwise_kernel)[..., rows, :][..., keep_out]
    else:
        weights["kernel"] = _numpy(layer.kernel)[..., keep_in, :][..., keep_out]
    bias = bias_delta[keep_out]
    if layer.use_bias:
        bias = _numpy(layer.bias)[keep_out] + bias
    if layer.use_bias or np.any(bias != 0):
        config["use_bias"] = True
        weights["bias"] = bias.astype(weights.get("kernel", weights.get("pointwise_kernel")).dtype)
    return config, weights


def rebuild_per_channel(layer, keep_in: np.ndarray):
    """`{attribute: value}` weights of a per-channel `layer` for the kept input channels."""
    if type(layer) in _DEPTHWISE:
        weights = {"kernel": _numpy(layer.kernel)[..., keep_in, :]}
        if layer.use_bias:
            weights["bias"] = _numpy(layer.bias)[np.repeat(keep_in, layer.depth_multiplier)]
        return weights
    if type(layer) is L.BatchNormalization:
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return {
            name: _numpy(getattr(layer, name))[keep_in]
            for name in names
            if getattr(layer, name, None) is not None
        }
    return {}
