"""Plain JSON out of what jobs take and return: numpy values, times, NaN.

A job's params, result and error are stored as JSON text and served as JSON; job functions
often return numpy scalars or arrays, which the standard ``json`` module refuses.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

__all__ = ["dumps", "jsonable"]


def jsonable(value: Any, *, strict: bool = True) -> Any:
    """Plain JSON types: numpy values unwrapped, times as ISO text, NaN and infinity as None.

    Args:
        value: Anything built from dicts, lists, tuples, scalars, times and numpy values.
        strict: Refuse what has no JSON form; when False, such a value becomes its ``str()``.

    Returns:
        The value as dicts, lists, strings, numbers, booleans and None.

    Raises:
        TypeError: ``strict`` and a value (or a dict key) has no JSON form.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k, strict): jsonable(v, strict=strict) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, strict=strict) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return jsonable(value.tolist(), strict=strict)
    if strict:
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
    return str(value)


def dumps(value: Any, *, what: str = "value") -> str:
    """JSON text of ``value`` as :func:`jsonable` makes it (strictly).

    Args:
        value: What to store.
        what: How the error message names the value.

    Returns:
        The JSON text.

    Raises:
        ValueError: ``value`` has no JSON form (the message starts with ``what``).
    """
    try:
        return json.dumps(jsonable(value), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} cannot be stored as JSON: {exc}") from exc


def _key(key: Any, strict: bool) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) or not strict:
        return str(key)
    raise TypeError(f"dict key {key!r} ({type(key).__name__}) is not a string")
