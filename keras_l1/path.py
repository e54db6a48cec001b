"""`regularization_path`: fits over decreasing L1 strengths, with warm starts."""

import math

import keras
import numpy as np

from keras_l1._validation import check_int
from keras_l1._validation import check_non_negative_float
from keras_l1._weights import measure
from keras_l1._weights import regularized_weights
from keras_l1.inspection import feature_layer
from keras_l1.inspection import selected_features
from keras_l1.regularizers import ElasticNetRegularizer
from keras_l1.regularizers import L1Regularizer
from keras_l1.regularizers import as_proximal
from keras_l1.scheduling import proximal_optimizer_of

# float32 rounding can leave a coefficient at ±1e-8 exactly at l1_max; the
# default grid starts this much above it, so its first fit is all zeros.
_L1_MAX_MARGIN = 1e-3
_MSE_NAMES = ("mse", "mean_squared_error", "MeanSquaredError")


def l1_max(x, y, fit_intercept: bool = True) -> float:
    """The smallest `l1` whose Lasso solution is all zeros, for a linear model.

    For the Keras objective `mean((y − x·W − b)²) + l1 · sum(|W|)` over `n`
    samples and `k` outputs, `W = 0` is optimal exactly when
    `l1 >= (2 / (n·k)) · max|xᵀ(y − ȳ)|` (with `ȳ`, the optimal intercept at
    `W = 0`, replaced by 0 without intercept). This is scikit-learn's
    `alpha_max = max|xᵀy| / n` times 2, since its Lasso objective is half of
    Keras's mean squared error.

    Args:
        x: Array of shape `(n, features)`.
        y: Array of shape `(n,)` or `(n, k)`.
        fit_intercept: Whether the model has a free (unregularized) bias.
            Defaults to `True`.

    Returns:
        A Python float.

    Example:

    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> l1_max(x, np.array([2.0, 1.0, -2.0, -1.0]))
    2.0
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    y = y.reshape(len(y), -1)
    if fit_intercept:
        y = y - y.mean(axis=0)
    return float(2.0 / y.size * np.max(np.abs(x.reshape(len(x), -1).T @ y)))


class RegularizationPath:
    """The result of `regularization_path`: one entry per `l1`, largest first.

    Attributes:
        l1_values: float64 array of the strengths, decreasing.
        loss: Training objective (data loss + penalty) after each fit.
        data_loss: Training data loss, `loss - penalty`.
        val_data_loss: Validation data loss, or `None` without validation data.
        penalty: The weight penalty after each fit.
        sparsity: Fraction of regularized weights at zero.
        selected: Per `l1`, the tuple of selected feature indices (or names),
            or `None` if the model's features cannot be mapped (see
            `keras_l1.selected_features`).
        n_selected: int array of how many features are selected, or `None`.
        coefs: For a linear model (one Dense layer, linear activation), the
            kernels, shape `(len(l1_values), features)` (or `(…, outputs)`);
            otherwise `None`.
        metrics: Per `l1`, the dict `model.evaluate` returned on the
            training data; `val_metrics` the same on validation data (or `None`).
        feature_names: The names given, or `None`.
        l1_max: The data's `l1_max` when the grid was computed from it, else `None`.
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __len__(self) -> int:
        return len(self.l1_values)

    @property
    def best_index(self) -> int | None:
        """Index of the lowest validation data loss, or `None` without validation."""
        if self.val_data_loss is None:
            return None
        return int(np.nanargmin(self.val_data_loss))

    @property
    def best_l1(self) -> float | None:
        """The `l1` with the lowest validation data loss, or `None` without validation."""
        index = self.best_index
        return None if index is None else float(self.l1_values[index])

    def to_records(self) -> list:
        """One plain dict per `l1` (for `pandas.DataFrame(path.to_records())`)."""
        records = []
        for i, l1 in enumerate(self.l1_values):
            record = {
                "l1": float(l1),
                "loss": float(self.loss[i]),
                "data_loss": float(self.data_loss[i]),
                "penalty": float(self.penalty[i]),
                "sparsity": float(self.sparsity[i]),
            }
            if self.val_data_loss is not None:
                record["val_data_loss"] = float(self.val_data_loss[i])
            if self.selected is not None:
                record["n_selected"] = int(self.n_selected[i])
                record["selected"] = list(self.selected[i])
            records.append(record)
        return records

    def __str__(self) -> str:
        header = ["l1", "data_loss"]
        if self.val_data_loss is not None:
            header.append("val_data_loss")
        header.append("sparsity")
        if self.selected is not None:
            header.append("selected")
        lines = ["  ".join(f"{h:>13}" for h in header)]
        for i, l1 in enumerate(self.l1_values):
            cells = [f"{l1:13.5g}", f"{self.data_loss[i]:13.5g}"]
            if self.val_data_loss is not None:
                cells.append(f"{self.val_data_loss[i]:13.5g}")
            cells.append(f"{self.sparsity[i]:13.1%}")
            if self.selected is not None:
                cells.append(f"{self.n_selected[i]:13d}")
            lines.append("  ".join(cells))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"RegularizationPath(l1_values={np.round(self.l1_values, 6).tolist()!r})"

    def plot(self, figure=None):
        """Plots the path: loss and selected features vs `l1`, and coefficient paths.

        The left panel shows the validation data loss (the training data loss
        without validation data) against `l1` on a log axis, the number of
        selected features on a second axis, and a dotted line at `best_l1`.
        For a linear model a right panel shows each coefficient against `l1`.

        Args:
            figure: A `matplotlib.figure.Figure` to draw into, or `None` for a
                new one (no pyplot state is touched). Defaults to `None`.

        Returns:
            The `matplotlib.figure.Figure`.

        Raises:
            ImportError: If matplotlib is not installed.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                "RegularizationPath.plot needs matplotlib, which is not installed. Install it "
                'with `pip install "keras_l1[plot]"` (or `pip install matplotlib`).'
            ) from error
        panels = 2 if self.coefs is not None else 1
        if figure is None:
            figure = Figure(figsize=(5.5 * panels, 4.0), layout="constrained")
        axes = figure.subplots(1, panels, squeeze=False)[0]
        loss_axis = axes[0]
        if self.val_data_loss is not None:
            loss, label = self.val_data_loss, "validation data loss"
        else:
            loss, label = self.data_loss, "training data loss"
        loss_axis.semilogx(self.l1_values, loss, "o-", color="C0", label=label)
        loss_axis.set_xlabel("l1")
        loss_axis.set_ylabel(label, color="C0")
        if self.best_l1 is not None:
            loss_axis.axvline(self.best_l1, color="0.5", linestyle=":")
        if self.n_selected is not None:
            count_axis = loss_axis.twinx()
            count_axis.semilogx(self.l1_values, self.n_selected, "s--", color="C1")
            count_axis.set_ylabel("selected features", color="C1")
        loss_axis.set_title("loss and selected features")
        if self.coefs is not None:
            coef_axis = axes[1]
            coefs = self.coefs.reshape(len(self.l1_values), -1)
            for j in range(coefs.shape[1]):
                name = self._coefficient_name(j)
                coef_axis.semilogx(self.l1_values, coefs[:, j], label=name)
            coef_axis.axhline(0.0, color="0.5", linewidth=0.8)
            coef_axis.set_xlabel("l1")
            coef_axis.set_ylabel("coefficient")
            coef_axis.set_title("coefficient paths")
            if coefs.shape[1] <= 12:
                coef_axis.legend(fontsize="small")
        return figure

    def _coefficient_name(self, column: int) -> str:
        outputs = 1 if self.coefs.ndim == 2 else self.coefs.shape[2]
        feature, output = divmod(column, outputs)
        name = str(feature) if self.feature_names is None else self.feature_names[feature]
        return name if outputs == 1 else f"{name}[{output}]"


def _check_l1_values(l1_values) -> np.ndarray:
    if isinstance(l1_values, (str, bytes)) or not hasattr(l1_values, "__len__"):
        raise TypeError(
            "Invalid type for argument `l1_values`: expected a sequence of non-negative "
            f"floats or None. Received: l1_values={l1_values!r}"
        )
    values = [check_non_negative_float("l1_values", value) for value in l1_values]
    if not values or max(values) == 0:
        raise ValueError(
            "Invalid value for argument `l1_values`: expected at least one positive "
            f"value. Received: l1_values={l1_values!r}"
        )
    return np.sort(np.asarray(values, dtype=np.float64))[::-1]


def _check_min_ratio(min_ratio) -> float:
    value = check_non_negative_float("min_ratio", min_ratio)
    if not 0 < value < 1:
        raise ValueError(
            "Invalid value for argument `min_ratio`: expected a float in (0, 1). "
            f"Received: min_ratio={min_ratio!r}"
        )
    return value


def _linear_layer(model):
    """The model's only Dense layer if the model is `x·W + b`, else None."""
    layers = [layer for layer in model._flatten_layers(include_self=False) if layer.weights]
    if len(layers) != 1 or not isinstance(layers[0], keras.layers.Dense):
        return None
    layer = layers[0]
    if layer.activation is not keras.activations.linear:
        return None
    try:
        if feature_layer(model) is not layer:
            return None
    except ValueError:
        return None
    return layer


def _is_mse(loss) -> bool:
    if isinstance(loss, str):
        return loss in _MSE_NAMES
    return (
        isinstance(loss, keras.losses.MeanSquaredError) or loss is keras.losses.mean_squared_error
    )


def regularization_path(
    build_model,
    x,
    y,
    l1_values=None,
    *,
    n_values: int = 20,
    min_ratio: float = 1e-3,
    validation_data=None,
    epochs: int = 50,
    batch_size: int | None = None,
    tolerance: float = 0.0,
    feature_names=None,
    fit_kwargs: dict | None = None,
    verbose: int = 0,
) -> RegularizationPath:
    """Fits one model over decreasing strengths `l1_0 > l1_1 > …`, each from the last.

    The glmnet recipe: start where the penalty zeroes everything and go down a
    log grid, each fit warm-started from the previous solution, so each one
    is short and the whole path costs little more than a single fit. The
    model is built **once**, by `build_model(l1_0)` with the largest strength;
    each later strength is set through its `ProximalOptimizer`'s
    `strength_factor` as `l1 / l1_0`, so the compiled training step is
    reused and the weights and optimizer state carry over. Every L1-type
    regularizer of the model is scaled by the same factor: build them with
    strengths proportional to `l1`.

    With `l1_values=None` the grid is `n_values` values from just above
    `l1_max(x, y)` (see `keras_l1.path.l1_max`) down to `min_ratio · l1_max`,
    evenly spaced in log scale. That needs a model whose `l1_max` is known
    from the data: a linear model (one Dense layer with linear activation and
    an `L1Regularizer` / `ElasticNetRegularizer` of strength `l1` on its
    kernel) compiled with mean squared error. For other models pass
    `l1_values`.

    For a linear model compiled with `ProximalOptimizer(SGD(lr))`, `lr` at
    most `1 / L` (`L = 2·λ_max(xᵀx)/n`) and full batches, each fit converges
    to the Lasso solution: the path is scikit-learn's
    `lasso_path(x, y, alphas=l1_values / 2)`.

    Args:
        build_model: Callable `build_model(l1) -> keras.Model` returning a
            model **compiled with `keras_l1.ProximalOptimizer`** whose
            regularizers use strength `l1`.
        x: Training inputs, as accepted by `model.fit`.
        y: Training targets.
        l1_values: Sequence of non-negative strengths (sorted decreasing
            here), or `None` for the automatic grid. Defaults to `None`.
        n_values: Positive int, the size of the automatic grid. Defaults to `20`.
        min_ratio: Float in (0, 1), the automatic grid's smallest strength as
            a fraction of `l1_max`. Defaults to `1e-3`.
        validation_data: Optional `(x_val, y_val)` to record the validation
            data loss and pick `best_l1`. Defaults to `None`.
        epochs: Positive int, epochs per strength. Defaults to `50`.
        batch_size: Batch size for `fit` and `evaluate`, or `None` for Keras's
            default. Defaults to `None`.
        tolerance: Non-negative float; weights with `abs(w) <= tolerance` count
            as zero. Defaults to `0.0`.
        feature_names: Optional names of the input features. Defaults to `None`.
        fit_kwargs: Optional dict of extra `model.fit` arguments (`shuffle`,
            `callbacks`, …). Defaults to `None`.
        verbose: `0` (silent) or `1` (a line per strength). Defaults to `0`.

    Returns:
        A `RegularizationPath` (with `.plot()`, `.best_l1`, `.to_records()`).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has an invalid value, `build_model` does not
            return a compiled model with an L1-type regularizer, or
            `l1_values=None` is used with a model whose `l1_max` is unknown.

    Example:

    >>> import keras, numpy as np, keras_l1
    >>> x = np.eye(3, dtype="float32"); y = np.array([[3.0], [0.6], [-2.0]])
    >>> def build_model(l1):
    ...     model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1,
    ...         use_bias=False, kernel_regularizer=keras_l1.L1Regularizer(l1))])
    ...     model.compile(keras_l1.ProximalOptimizer(keras.optimizers.SGD(0.5)), "mse")
    ...     return model
    >>> path = keras_l1.regularization_path(build_model, np.tile(x, (20, 1)),
    ...     np.tile(y, (20, 1)), l1_values=[1.0, 0.5, 0.1], epochs=1, batch_size=3,
    ...     fit_kwargs={"shuffle": False})
    >>> [list(s) for s in path.selected]
    [[0, 2], [0, 2], [0, 1, 2]]
    """
    if not callable(build_model):
        raise TypeError(
            "Invalid type for argument `build_model`: expected a callable "
            f"`build_model(l1) -> keras.Model`. Received: build_model={build_model!r}"
        )
    n_values = check_int("n_values", n_values, minimum=1)
    min_ratio = _check_min_ratio(min_ratio)
    epochs = check_int("epochs", epochs, minimum=1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    tolerance = check_non_negative_float("tolerance", tolerance)
    verbose = check_int("verbose", verbose, minimum=0)
    if fit_kwargs is not None and not isinstance(fit_kwargs, dict):
        raise TypeError(
            "Invalid type for argument `fit_kwargs`: expected a dict or None. "
            f"Received: fit_kwargs={fit_kwargs!r}"
        )
    fit_kwargs = dict(fit_kwargs or {})
    clash = sorted({"x", "y", "epochs", "batch_size", "validation_data"} & set(fit_kwargs))
    if clash:
        raise ValueError(
            f"Invalid value for argument `fit_kwargs`: {clash} are arguments of "
            f"regularization_path itself. Received: fit_kwargs={fit_kwargs!r}"
        )
    if validation_data is not None and (
        not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2
    ):
        raise TypeError(
            "Invalid type for argument `validation_data`: expected a tuple (x_val, y_val) "
            f"or None. Received: validation_data of type {type(validation_data).__name__}"
        )

    data_l1_max = None
    if l1_values is None:
        data_l1_max = l1_max(x, y)
        start = data_l1_max * (1 + _L1_MAX_MARGIN)
        grid = np.geomspace(start, data_l1_max * min_ratio, n_values)
    else:
        grid = _check_l1_values(l1_values)

    model = build_model(float(grid[0]))
    if not isinstance(model, keras.Model) or not getattr(model, "compiled", False):
        raise ValueError(
            "Invalid value for argument `build_model`: expected it to return a compiled "
            f"keras.Model. Received: build_model({float(grid[0])!r}) returned {model!r}"
        )
    linear = _linear_layer(model)
    if l1_values is None:
        _check_closed_form(model, linear, float(grid[0]))
        if linear.use_bias is False:
            data_l1_max = l1_max(x, y, fit_intercept=False)
            grid = np.geomspace(
                data_l1_max * (1 + _L1_MAX_MARGIN), data_l1_max * min_ratio, n_values
            )
            model = build_model(float(grid[0]))
            linear = _linear_layer(model)
    strength_factor = proximal_optimizer_of(model).strength_factor
    fit_kwargs.setdefault("verbose", 0)

    names = None
    try:
        selected_features(model, tolerance, feature_names)
        mappable = True
    except ValueError:
        if feature_names is not None:
            raise
        mappable = False

    rows = {key: [] for key in ("loss", "data_loss", "val", "penalty", "sparsity")}
    selected, metrics, val_metrics, coefs = [], [], [], []
    for l1 in grid:
        factor = float(l1 / grid[0])
        strength_factor.assign(factor)
        model.fit(x, y, epochs=epochs, batch_size=batch_size, **fit_kwargs)
        stats = measure(regularized_weights(model), tolerance)
        # The regularizers keep the strength `l1_0` they were built with, and
        # the loss Keras reports counts that penalty; the one acting is
        # `factor` times it.
        built_penalty = float(stats[:, 0].sum())
        penalty = factor * built_penalty
        size = stats[:, 3].sum()
        sparsity = float(stats[:, 1].sum() / size) if size else 0.0
        result = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        metrics.append(result)
        data_loss = result["loss"] - built_penalty
        rows["loss"].append(data_loss + penalty)
        rows["data_loss"].append(data_loss)
        rows["penalty"].append(penalty)
        rows["sparsity"].append(sparsity)
        if validation_data is not None:
            val = model.evaluate(
                *validation_data, batch_size=batch_size, verbose=0, return_dict=True
            )
            val_metrics.append(val)
            rows["val"].append(val["loss"] - built_penalty)
        if mappable:
            chosen = selected_features(model, tolerance, feature_names)
            names = chosen.feature_names
            selected.append(tuple(chosen))
        if linear is not None:
            coefs.append(keras.ops.convert_to_numpy(linear.kernel).astype(np.float64))
        if verbose:
            line = f"l1 {l1:.5g}: data_loss {rows['data_loss'][-1]:.5g}"
            if validation_data is not None:
                line += f", val_data_loss {rows['val'][-1]:.5g}"
            line += f", sparsity {sparsity:.1%}"
            if mappable:
                line += f", {len(selected[-1])} features"
            print(line)

    def array(values):
        return np.asarray(values, dtype=np.float64)

    if coefs:
        coefs = np.stack(coefs)
        if coefs.shape[-1] == 1:
            coefs = coefs[..., 0]
    return RegularizationPath(
        l1_values=grid,
        loss=array(rows["loss"]),
        data_loss=array(rows["data_loss"]),
        val_data_loss=array(rows["val"]) if validation_data is not None else None,
        penalty=array(rows["penalty"]),
        sparsity=array(rows["sparsity"]),
        selected=selected if mappable else None,
        n_selected=np.array([len(s) for s in selected]) if mappable else None,
        coefs=coefs if linear is not None else None,
        metrics=metrics,
        val_metrics=val_metrics if validation_data is not None else None,
        feature_names=list(names) if names is not None else None,
        l1_max=data_l1_max,
    )


def _check_closed_form(model, linear, l1: float) -> None:
    """Raises unless `l1_max(x, y)` is the model's all-zero threshold."""
    reason = None
    if linear is None:
        reason = "it is not a linear model (a single Dense layer with linear activation)"
    elif not _is_mse(model.loss):
        reason = f"it is compiled with loss={model.loss!r}, not mean squared error"
    else:
        regularizer = as_proximal(linear.kernel.regularizer)
        if not isinstance(regularizer, (L1Regularizer, ElasticNetRegularizer)) or not math.isclose(
            regularizer.l1, l1, rel_tol=1e-6
        ):
            reason = (
                f"its kernel regularizer is {linear.kernel.regularizer!r}, not an L1 "
                "penalty of strength `l1`"
            )
    if reason is not None:
        raise ValueError(
            "Invalid value for argument `l1_values`: the automatic grid needs l1_max, known "
            "only for a linear model with an L1 penalty of strength `l1` on its kernel and "
            f"mean squared error; pass l1_values for model '{model.name}': {reason}. "
            "Received: l1_values=None"
        )
