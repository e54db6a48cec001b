"""Shared argument checks: one place, one message format."""

import math
import numbers


def check_non_negative_float(name: str, value) -> float:
    """Returns `value` as a Python float, or raises naming `name`.

    Accepts Python and NumPy real numbers; rejects `bool`, strings, `None`,
    NaN, infinities and negative values.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected a non-negative "
            f"finite float. Received: {name}={value!r} of type "
            f"{type(value).__name__}"
        )
    result = float(value)
    if not math.isfinite(result) or result < 0:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a non-negative "
            f"finite float. Received: {name}={value!r}"
        )
    return result


def check_int(name: str, value, minimum: int | None = None) -> int:
    """Returns `value` as a Python int, or raises naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected an integer. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    result = int(value)
    if minimum is not None and result < minimum:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected an integer "
            f">= {minimum}. Received: {name}={value!r}"
        )
    return result


def check_fraction(name: str, value) -> float:
    """Returns `value` as a float in [0, 1], or raises naming `name`."""
    result = check_non_negative_float(name, value)
    if result > 1:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a float in "
            f"[0, 1]. Received: {name}={value!r}"
        )
    return result


def check_config_keys(cls_name: str, config, allowed: set) -> dict:
    """Checks that `config` is a dict holding only `allowed` keys."""
    if not isinstance(config, dict):
        raise TypeError(
            f"Invalid type for argument `config` of {cls_name}.from_config: "
            f"expected a dict. Received: config={config!r}"
        )
    unknown = sorted(set(map(str, config)) - allowed)
    if unknown:
        raise ValueError(
            f"Invalid value for argument `config` of {cls_name}.from_config: "
            f"unexpected keys {unknown}; allowed keys are {sorted(allowed)}. "
            f"Received: config={config!r}"
        )
    return config
