"""Checks every route test makes of a reply: the 422 error body, and no non-finite number."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["assert_finite", "invalid_input"]


def invalid_input(resp: Any) -> dict[str, Any]:
    """The error of a 422 ``invalid_input`` reply (asserting that is what it is)."""
    assert resp.status_code == 422, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert err["code"] == "invalid_input"
    return err


def assert_finite(obj: Any) -> None:
    """Every number in a JSON reply is finite, and no numeric list hides a null."""
    if isinstance(obj, dict):
        for v in obj.values():
            assert_finite(v)
    elif isinstance(obj, list):
        assert not (any(v is None for v in obj) and any(isinstance(v, float) for v in obj))
        for v in obj:
            assert_finite(v)
    elif isinstance(obj, float):
        assert math.isfinite(obj)
