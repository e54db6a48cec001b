"""Shared argument checks: one place, one message format."""

import math
import numbers
import os
import reprlib


def check_non_negative_float(name: str, value) -> float:
    """Returns `value` as a Python float, or raises naming `name`.

    Accepts Python and NumPy real numbers; rejects `bool`, strings, `None`,
    NaN, infinities and negative values.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected a non-negative "
            f"finite float. Received: {name}={short_repr(value)} of type "
            f"{type(value).__name__}"
        )
    result = _to_float(value)
    if not math.isfinite(result) or result < 0:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a non-negative "
            f"finite float. Received: {name}={short_repr(value)}"
        )
    return result


def _to_float(value) -> float:
    # An int beyond float range (JSON allows 10**400) is out of range, not a
    # crash: report it as infinite so the caller's ValueError names it.
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _message_repr() -> reprlib.Repr:
    # Received values come from untrusted configs: a dict nested 2000 deep
    # breaks the plain repr (RecursionError), so elide below a few levels.
    shortener = reprlib.Repr()
    shortener.maxlevel = 4
    shortener.maxdict = shortener.maxlist = shortener.maxtuple = shortener.maxset = 10
    shortener.maxstring = shortener.maxother = shortener.maxlong = 200
    return shortener


_MESSAGE_REPR = _message_repr()


def short_repr(value, limit: int = 200) -> str:
    """`repr(value)` for an error message: bounded in depth and length."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = None
    if text is not None and len(text) <= limit:
        return text
    try:
        # Elided, but keeping the start and end of a long number or string.
        text = _MESSAGE_REPR.repr(value)
    except ValueError:
        # Python refuses to print ints of more than 4300 digits.
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def check_float_in(name: str, value, low: float, high: float, interval: str) -> float:
    """Returns `value` as a float in the interval `interval`, or raises.

    `interval` is written like `"[0, 1)"` or `"(0, inf)"`: a square bracket
    includes the bound `low`/`high`, a parenthesis excludes it.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected a float in {interval}. "
            f"Received: {name}={short_repr(value)} of type {type(value).__name__}"
        )
    result = _to_float(value)
    above = result > low if interval[0] == "(" else result >= low
    below = result < high if interval[-1] == ")" else result <= high
    if not (above and below and math.isfinite(result)):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a float in {interval}. "
            f"Received: {name}={short_repr(value)}"
        )
    return result


def check_bool(name: str, value) -> bool:
    """Returns `value` if it is a bool, or raises naming `name`."""
    if not isinstance(value, bool):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected a bool. "
            f"Received: {name}={short_repr(value)} of type {type(value).__name__}"
        )
    return value


def check_path(name: str, value, allow_none: bool = True):
    """Returns `value` as a `str` path (or None), or raises naming `name`."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)):
        expected = "a path (str or os.PathLike) or None" if allow_none else "a path"
        raise TypeError(
            f"Invalid type for argument `{name}`: expected {expected}. "
            f"Received: {name}={short_repr(value)}"
        )
    path = os.fspath(value)
    # An empty path silently means the working directory, and a NUL byte
    # only fails later, deep inside the file system call.
    if not isinstance(path, str) or not path or "\0" in path:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a non-empty path "
            f"without NUL characters. Received: {name}={short_repr(value)}"
        )
    return path


def check_int(name: str, value, minimum: int | None = None) -> int:
    """Returns `value` as a Python int, or raises naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Invalid type for argument `{name}`: expected an integer. "
            f"Received: {name}={short_repr(value)} of type {type(value).__name__}"
        )
    result = int(value)
    if minimum is not None and result < minimum:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected an integer "
            f">= {minimum}. Received: {name}={short_repr(value)}"
        )
    return result


def check_fraction(name: str, value) -> float:
    """Returns `value` as a float in [0, 1], or raises naming `name`."""
    result = check_non_negative_float(name, value)
    if result > 1:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a float in "
            f"[0, 1]. Received: {name}={short_repr(value)}"
        )
    return result


def check_config_keys(cls_name: str, config, allowed: set) -> dict:
    """Checks that `config` is a dict holding only `allowed` keys."""
    if not isinstance(config, dict):
        raise TypeError(
            f"Invalid type for argument `config` of {cls_name}.from_config: "
            f"expected a dict. Received: config={short_repr(config)}"
        )
    unknown = sorted(set(map(str, config)) - allowed)
    if unknown:
        raise ValueError(
            f"Invalid value for argument `config` of {cls_name}.from_config: "
            f"unexpected keys {unknown}; allowed keys are {sorted(allowed)}. "
            f"Received: config={short_repr(config)}"
        )
    return config
