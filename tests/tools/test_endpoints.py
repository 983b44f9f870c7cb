"""The endpoint table: one row per server endpoint, each one a method of both clients."""

from __future__ import annotations

import inspect
from typing import Any

from quantcrew.tools import endpoints
from quantcrew.tools.client import AsyncMLClient, MLClient
from quantcrew.tools.endpoints import Endpoint

ROWS: list[Endpoint[Any, Any]] = [getattr(endpoints, name) for name in endpoints.__all__ if name != "Endpoint"]


def test_table_rows_have_unique_names_and_routes() -> None:
    assert len({row.name for row in ROWS}) == len(ROWS)
    assert len({(row.method, row.path) for row in ROWS}) == len(ROWS)


def test_every_row_is_a_method_of_both_clients_under_its_name() -> None:
    for row in ROWS:
        assert hasattr(MLClient, row.name), row.name
        assert hasattr(AsyncMLClient, row.name), row.name


def test_post_rows_bind_to_methods_with_the_row_doc_and_async_ones_are_coroutines() -> None:
    client = MLClient.__new__(MLClient)
    aclient = AsyncMLClient.__new__(AsyncMLClient)
    # A POST with an id in its path (bandit_reset) is written by hand: it takes the id besides the body.
    for row in (r for r in ROWS if r.method == "POST" and "{id}" not in r.path):
        method, amethod = getattr(client, row.name), getattr(aclient, row.name)
        assert method.__name__ == amethod.__name__ == row.name
        assert method.__doc__ == amethod.__doc__ == row.doc != ""
        assert not inspect.iscoroutinefunction(method)
        assert inspect.iscoroutinefunction(amethod)


def test_only_probes_skip_the_breaker_and_creating_calls_are_not_retried() -> None:
    assert {row.name for row in ROWS if row.probe} == {"health", "ready"}
    assert endpoints.REGIME_FIT.idempotent is False
    assert endpoints.BANDIT_SELECT.idempotent is False  # each select records a decision
    assert endpoints.REGIME_LABEL.idempotent is True
