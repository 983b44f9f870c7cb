"""The model name a symbol's ensemble is stored and deployed under (no torch, no numpy)."""

from __future__ import annotations

__all__ = ["ensemble_name"]


def ensemble_name(symbol: str | None) -> str:
    """``ensemble-<symbol>`` (the symbol as given), or ``ensemble`` without one."""
    return f"ensemble-{symbol}" if symbol else "ensemble"
