"""Reading a sparse model: which weights are zero, which input features survive."""

import math
from dataclasses import asdict
from dataclasses import dataclass

import keras
import numpy as np

from keras_l1 import _graph
from keras_l1._validation import check_non_negative_float
from keras_l1._weights import measure
from keras_l1._weights import regularized_weights


def _check_built(name: str, value) -> None:
    if not isinstance(value, keras.layers.Layer):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected a Keras model or layer. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not value.built:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a built model or layer (call "
            f"it on data or call `build()` first). Received: {name}='{value.name}', not built"
        )


def _table(header: tuple, rows: list, right: set) -> str:
    """Aligned plain-text columns; indices in `right` are right-aligned."""
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class WeightSparsity:
    """One regularized weight in a `SparsityReport`.

    Attributes:
        layer: The variable path without its last part (`"inner/dense"`).
        path: The variable path (`"inner/dense/kernel"`).
        shape: The weight's shape.
        size: Number of entries.
        zeros: Entries with `abs(w) <= tolerance`.
        sparsity: `zeros / size`; NaN if the weight holds NaN or infinities.
        penalty: The regularizer's value for the current weight.
    """

    layer: str
    path: str
    shape: tuple
    size: int
    zeros: int
    sparsity: float
    penalty: float


class SparsityReport:
    """Per-weight sparsity and penalty of a model: a printable table.

    Iterate over it (or index it) for the `WeightSparsity` rows; `total` holds
    the sums; `to_records()` gives plain dicts (`pandas.DataFrame(report.to_records())`)
    and `to_dict()` a JSON-ready summary. Built by `sparsity_report`.
    """

    def __init__(self, rows: list, tolerance: float):
        self.rows = tuple(rows)
        self.tolerance = tolerance
        size = sum(row.size for row in self.rows)
        zeros = sum(row.zeros for row in self.rows)
        finite = all(not math.isnan(row.sparsity) for row in self.rows)
        sparsity = (zeros / size if size else 0.0) if finite else math.nan
        self.total = {
            "size": size,
            "zeros": zeros,
            "sparsity": sparsity,
            "penalty": float(sum(row.penalty for row in self.rows)),
        }

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    def to_records(self) -> list:
        """One plain dict per weight (`shape` as a list), JSON- and pandas-ready."""
        return [{**asdict(row), "shape": list(row.shape)} for row in self.rows]

    def to_dict(self) -> dict:
        """`{"tolerance": ..., "weights": to_records(), "total": {...}}`."""
        return {"tolerance": self.tolerance, "weights": self.to_records(), "total": self.total}

    def __str__(self) -> str:
        header = ("layer", "weight", "shape", "size", "zeros", "sparsity", "penalty")

        def line(layer, path, shape, size, zeros, sparsity, penalty):
            return (
                layer,
                path,
                shape,
                f"{size:,}",
                f"{zeros:,}",
                "nan" if math.isnan(sparsity) else f"{sparsity:.1%}",
                f"{penalty:.4g}",
            )

        rows = [
            line(
                r.layer, r.path, "x".join(map(str, r.shape)), r.size, r.zeros, r.sparsity, r.penalty
            )
            for r in self.rows
        ]
        total = self.total
        rows.append(
            line(
                "total", "", "", total["size"], total["zeros"], total["sparsity"], total["penalty"]
            )
        )
        return _table(header, rows, right={3, 4, 5, 6})

    def __repr__(self) -> str:
        return f"SparsityReport(weights={len(self.rows)}, total={self.total!r})"


def sparsity_report(model: keras.Model, tolerance: float = 0.0) -> SparsityReport:
    """Zeros, sparsity and penalty of each regularized weight: `zeros = #{|w| <= tolerance}`.

    Covers exactly the weights whose penalty `fit` adds to the loss: every
    trainable weight with a regularizer (keras_l1's or Keras's own), each once,
    in Sequential, functional, subclassed and nested models and any layer type
    (Dense, Conv, Embedding, RNN cells, ...).

    Args:
        model: A built Keras model (or layer).
        tolerance: Non-negative float; entries with `abs(w) <= tolerance` count
            as zero. Defaults to `0.0` (exact zeros).

    Returns:
        A `SparsityReport`: `str(report)` is an aligned table, `report.total`
        the sums, `report.to_records()` one dict per weight.

    Raises:
        TypeError: If `model` is not a Keras layer or `tolerance` not a number.
        ValueError: If `model` is not built or `tolerance` is negative or not finite.

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
    ...     2, name="hidden", kernel_regularizer=keras_l1.L1Regularizer(0.1))])
    >>> _ = model.layers[0].kernel.assign(np.array([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]]))
    >>> print(keras_l1.sparsity_report(model))
    layer   weight         shape  size  zeros  sparsity  penalty
    hidden  hidden/kernel  3x2       6      4     66.7%      0.3
    total                            6      4     66.7%      0.3
    """
    _check_built("model", model)
    tolerance = check_non_negative_float("tolerance", tolerance)
    weights = regularized_weights(model)
    rows = []
    for weight, (penalty, zeros, nonfinite, size) in zip(weights, measure(weights, tolerance)):
        sparsity = math.nan if nonfinite else (zeros / size if size else 0.0)
        rows.append(
            WeightSparsity(
                layer=weight.layer,
                path=weight.path,
                shape=tuple(int(d) for d in weight.variable.shape),
                size=int(size),
                zeros=int(zeros),
                sparsity=float(sparsity),
                penalty=float(penalty),
            )
        )
    return SparsityReport(rows, tolerance)


class SelectedFeatures:
    """The input features a model still uses, with an importance per feature.

    Iterating gives the selected features (names if `feature_names` was given,
    else column indices) in input order; `len()` is how many survive.

    Attributes:
        indices: Sorted column indices of the selected features (a tuple of int):
            feed `x[:, selected.indices]`.
        names: Their names, or `None` without `feature_names`.
        importance: float64 array, one value per input feature: the L2 norm of
            its outgoing weights in `layer` (0 for a dropped feature).
        layer: Name of the layer whose kernel rows are the features.
        n_features: Number of input features.
        feature_names: All feature names, or `None`.
        tolerance: The tolerance used.
    """

    def __init__(self, kernel, layer: str, tolerance: float, feature_names=None):
        kernel = np.asarray(kernel, dtype=np.float64)
        self.layer = layer
        self.tolerance = tolerance
        self.n_features = kernel.shape[0]
        self.importance = np.sqrt(np.sum(np.square(kernel), axis=1))
        kept = np.any(np.abs(kernel) > tolerance, axis=1)
        self.indices = tuple(int(i) for i in np.flatnonzero(kept))
        self.feature_names = feature_names
        self.names = (
            None if feature_names is None else tuple(feature_names[i] for i in self.indices)
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices if self.names is None else self.names)

    def __contains__(self, item) -> bool:
        return item in (self.indices if self.names is None else self.names)

    def ranking(self) -> list:
        """`(feature, importance)` pairs of the selected features, most important first."""
        labels = self.indices if self.names is None else self.names
        pairs = [(label, float(self.importance[i])) for label, i in zip(labels, self.indices)]
        return sorted(pairs, key=lambda pair: -pair[1])

    def to_dict(self) -> dict:
        """JSON-ready: indices, names, per-feature importance, layer, counts."""
        return {
            "layer": self.layer,
            "n_features": self.n_features,
            "n_selected": len(self),
            "indices": list(self.indices),
            "names": None if self.names is None else list(self.names),
            "importance": [float(v) for v in self.importance],
            "tolerance": self.tolerance,
        }

    def to_markdown(self) -> str:
        """The ranking as a Markdown table (TensorBoard's text dashboard renders it)."""
        lines = [
            f"**{len(self)} of {self.n_features}** input features selected "
            f"(layer `{self.layer}`, tolerance {self.tolerance:g})",
        ]
        if len(self):
            lines += ["", "| rank | feature | importance |", "| ---: | --- | ---: |"]
            for rank, (label, value) in enumerate(self.ranking(), start=1):
                lines.append(f"| {rank} | {label} | {value:.4g} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        title = (
            f"{len(self)} of {self.n_features} input features selected "
            f"(layer '{self.layer}', tolerance {self.tolerance:g})"
        )
        if not len(self):
            return title
        rows = [
            (str(rank), str(label), f"{value:.4g}")
            for rank, (label, value) in enumerate(self.ranking(), start=1)
        ]
        return title + "\n" + _table(("rank", "feature", "importance"), rows, right={0, 2})

    def __repr__(self) -> str:
        return f"SelectedFeatures({list(self)!r}, layer={self.layer!r})"


def _unmappable(name: str, reason: str) -> ValueError:
    return ValueError(
        f"Cannot map the weights of '{name}' to input features: {reason}. Pass the Dense "
        "layer that reads the input features instead: `selected_features(layer)`."
    )


def _owner(model, variable):
    """The innermost layer of `model` that owns `variable`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found = _owner(layer, variable)
            if found is not None:
                return found
        elif any(v is variable for v in layer.trainable_weights):
            return layer
    return None


def _check_reads_inputs(model, owner) -> None:
    """Raises unless `owner` sees `model`'s input columns, feature by feature."""
    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            if layer is owner:
                return
            if _graph.contains(layer, owner):
                if not _graph.is_graph_model(layer):
                    raise _unmappable(
                        model.name,
                        f"layer '{owner.name}' sits inside '{layer.name}', whose "
                        "layer graph Keras does not record (a subclassed layer or model)",
                    )
                _check_reads_inputs(layer, owner)
                return
            if not _graph.keeps_feature_identity(layer):
                raise _unmappable(
                    model.name,
                    f"the first regularized layer '{owner.name}' reads the output "
                    f"of layer '{layer.name}' ({type(layer).__name__}), not the input features",
                )
        return
    if not _graph.is_graph_model(model):
        raise _unmappable(
            model.name,
            "Keras does not record which layer of a subclassed model reads its "
            f"inputs (the first regularized layer is '{owner.name}')",
        )
    if len(model.inputs) != 1:
        raise _unmappable(model.name, f"the model has {len(model.inputs)} inputs")
    nodes = [node for node in _graph.graph_nodes(model) if _graph.contains(node.operation, owner)]
    if len(nodes) != 1:
        raise _unmappable(model.name, f"layer '{owner.name}' is called {len(nodes)} times")
    node = nodes[0]
    if node.operation is not owner:
        _check_reads_inputs(node.operation, owner)
    while True:
        if len(node.input_tensors) != 1:
            raise _unmappable(
                model.name, f"layer '{node.operation.name}' takes {len(node.input_tensors)} inputs"
            )
        layer, node = _graph.producer(node.input_tensors[0])
        if isinstance(layer, keras.layers.InputLayer):
            return
        if not _graph.keeps_feature_identity(layer):
            raise _unmappable(
                model.name,
                f"the first regularized layer '{owner.name}' reads the output of "
                f"layer '{layer.name}' ({type(layer).__name__}), not the input features",
            )


def feature_layer(model_or_layer):
    """The Dense layer whose kernel rows are the input features (see `selected_features`)."""
    _check_built("model_or_layer", model_or_layer)
    if isinstance(model_or_layer, keras.Model):
        model = model_or_layer
        weights = regularized_weights(model)
        if not weights:
            raise _unmappable(model.name, "the model has no regularized trainable weight")
        owner = _owner(model, weights[0].variable)
        if owner is None:
            raise _unmappable(
                model.name,
                f"no layer of the model owns its first regularized weight '{weights[0].path}'",
            )
        _check_reads_inputs(model, owner)
        if weights[0].variable is not getattr(owner, "kernel", None):
            raise _unmappable(
                model.name,
                f"its first regularized weight '{weights[0].path}' is not the "
                "kernel of a Dense layer",
            )
        layer = owner
    else:
        layer = model_or_layer
    if not isinstance(layer, keras.layers.Dense):
        raise _unmappable(
            layer.name,
            f"it is a {type(layer).__name__}, and only the rows of a Dense kernel "
            "are input features",
        )
    return layer


def check_feature_names(feature_names, n_features: int | None = None, layer: str = ""):
    """Returns `feature_names` as a tuple of str (or None), or raises naming the argument."""
    if feature_names is None:
        return None
    if isinstance(feature_names, (str, bytes)) or not hasattr(feature_names, "__len__"):
        raise TypeError(
            "Invalid type for argument `feature_names`: expected a sequence of names. "
            f"Received: feature_names={feature_names!r} of type {type(feature_names).__name__}"
        )
    if n_features is not None and len(feature_names) != n_features:
        raise ValueError(
            f"Invalid value for argument `feature_names`: expected {n_features} names, one per "
            f"input feature of layer '{layer}'. Received: {len(feature_names)} names"
        )
    return tuple(str(name) for name in feature_names)


def selected_features(
    model_or_layer: "keras.Model | keras.layers.Layer",
    tolerance: float = 0.0,
    feature_names: "list[str] | None" = None,
) -> SelectedFeatures:
    """The input features with a non-zero outgoing weight: `any(|W[i, :]| > tolerance)`.

    Feature `i` is row `i` of the kernel of the first regularized layer: a Dense
    layer that must read the model's (single) input directly or through layers
    that keep each column's identity (Dropout, noise, elementwise Activation,
    Rescaling, Normalization and BatchNormalization on the last axis, Flatten,
    whose columns are the flat C-order indices). A feature whose whole row is
    zero no longer affects the output. Its importance is the row's L2 norm,
    `‖W[i, :]‖₂`, comparable across features when the inputs are standardized.

    Args:
        model_or_layer: A built Sequential or functional model, or the Dense
            layer whose kernel rows are the features (for subclassed models).
        tolerance: Non-negative float; weights with `abs(w) <= tolerance` count
            as zero. Defaults to `0.0` (exact zeros).
        feature_names: Optional sequence of one name per input feature.
            Defaults to `None` (features are named by their column index).

    Returns:
        A `SelectedFeatures`: iterable of the selected indices (or names), with
        `.indices`, `.names`, `.importance` (per input feature) and a
        printable ranking.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the model is not built, `tolerance` is invalid,
            `feature_names` has the wrong length, or the first regularized
            layer cannot be mapped to input features (it is not a Dense
            layer, or other layers transform the inputs before it, or the
            model is subclassed or has several inputs).

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
    ...     2, name="hidden", kernel_regularizer=keras_l1.L1Regularizer(0.1))])
    >>> _ = model.layers[0].kernel.assign(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -1.0]]))
    >>> selected = keras_l1.selected_features(model, feature_names=["age", "bmi", "bp"])
    >>> list(selected), selected.indices, selected.importance.tolist()
    (['age', 'bp'], (0, 2), [5.0, 0.0, 1.0])
    """
    layer = feature_layer(model_or_layer)
    tolerance = check_non_negative_float("tolerance", tolerance)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    names = check_feature_names(feature_names, kernel.shape[0], layer.name)
    return SelectedFeatures(kernel, layer.name, tolerance, names)
