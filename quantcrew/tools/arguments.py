"""Parsing what an LLM says into tool arguments: lists written as text, weights, levels.

LLMs (and the offline planner, which copies kickoff inputs) pass lists either as JSON
arrays or as text such as ``"SP500, NASDAQ"`` or ``"0.6,0.4"``; these helpers accept both
and raise :class:`ToolInputError` with a sentence the agent can act on.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence

__all__ = ["ToolInputError", "check_weights", "iso_date", "parse_floats", "parse_names"]

_MAX_SYMBOLS = 32


class ToolInputError(ValueError):
    """An argument the tool cannot use; the message says which and what to send instead."""


def parse_names(value: str | Sequence[str] | None, *, field: str, max_items: int = _MAX_SYMBOLS) -> list[str]:
    """``"SP500, NASDAQ"`` or ``["SP500", "NASDAQ"]`` -> ``["SP500", "NASDAQ"]`` (unique, order kept)."""
    items = _split(value)
    names = [str(item).strip() for item in items if str(item).strip()]
    if not names:
        raise ToolInputError(f"{field} is empty: give one or more names separated by commas, e.g. 'SP500,NASDAQ'")
    if len(names) > max_items:
        raise ToolInputError(f"{field} has {len(names)} names; at most {max_items} are allowed")
    seen: set[str] = set()
    for name in names:
        if name.upper() in seen:
            raise ToolInputError(f"{field} names '{name}' twice")
        seen.add(name.upper())
    return names


def parse_floats(value: str | float | Sequence[float | str] | None, *, field: str) -> list[float] | None:
    """``"0.6, 0.4"``, ``[0.6, 0.4]`` or ``"60%,40%"`` -> ``[0.6, 0.4]``; None or empty -> None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    items = [value] if isinstance(value, int | float) else _split(value)
    out: list[float] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        scale = 0.01 if text.endswith("%") else 1.0
        try:
            number = float(text.rstrip("%")) * scale
        except ValueError as exc:
            raise ToolInputError(f"{field}: '{text}' is not a number") from exc
        if not math.isfinite(number):
            raise ToolInputError(f"{field}: '{text}' is not a finite number")
        out.append(number)
    return out or None


def check_weights(weights: list[float] | None, n_assets: int, *, normalize: bool) -> list[float]:
    """Equal weights when none are given; else the same rules as the server (sum to one unless normalising).

    Raises:
        ToolInputError: wrong count, all zero, or a sum other than one without ``normalize``.
    """
    if weights is None:
        return [1.0 / n_assets] * n_assets
    if len(weights) != n_assets:
        raise ToolInputError(f"weights has {len(weights)} numbers for {n_assets} symbols: give one weight per symbol")
    total = sum(weights)
    if all(w == 0 for w in weights) or abs(total) < 1e-12:
        raise ToolInputError(f"weights sum to {total:g}: they must sum to one")
    if abs(total - 1.0) > 1e-6:
        if not normalize:
            raise ToolInputError(
                f"weights sum to {total:.6g}, not 1: fix them, or pass normalize_weights=true to rescale them"
            )
        return [w / total for w in weights]
    return list(weights)


def _split(value: str | Sequence[object] | None) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return [part.strip().strip("'\"") for part in text.replace(";", ",").split(",")]
    return list(value)


def iso_date(value: str | None, *, field: str = "end_date") -> str | None:
    """``"2018-06-29"`` (or a longer ISO time) -> the same string; empty -> None.

    Raises:
        ValueError: not an ISO date (pydantic turns it into the tool's argument error).
    """
    if value is None or not value.strip():
        return None
    try:
        _dt.date.fromisoformat(value.strip()[:10])
    except ValueError as exc:
        raise ValueError(f"{field} must be YYYY-MM-DD, got {value!r}") from exc
    return value.strip()
