"""The outcome store: idempotent per id, a conflicting value refused naming its field, batches atomic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quantcrew.ml_server.errors import ConflictError
from quantcrew.ml_server.schemas.monitor import Outcome
from quantcrew.ml_server.services.monitor.outcomes import OutcomeStore


def _o(i: int, **over: Any) -> Outcome:
    return Outcome.model_validate({"outcome_id": f"d{i}:SPY", "subject": "SPY", "as_of": f"2024-01-{i + 1:02d}",
                                   "realised_return": 0.001 * i, **over})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutcomeStore]:
    s = OutcomeStore(tmp_path / "r.db")
    yield s
    s.close()


def test_the_same_outcome_posted_again_is_known_not_inserted(store: OutcomeStore) -> None:
    assert store.add([_o(1), _o(2)]) == (2, 0)
    assert store.add([_o(1), _o(2), _o(3)]) == (1, 2)
    assert store.add([_o(4), _o(4)]) == (1, 1)  # twice in one batch
    stored = store.get("d1:SPY")
    assert stored is not None and stored.as_of == "2024-01-02" and stored.realised_return == pytest.approx(0.001)
    assert [o.outcome_id for o in store.recent(10)][0] == "d4:SPY" and len(store.recent(10, "SPY")) == 4


@pytest.mark.parametrize(("field", "value"), [("realised_return", 0.5), ("subject", "QQQ"), ("as_of", "2023-01-02"),
                                              ("position", 1.0), ("regime", "bull"), ("horizon_bars", 5)])
def test_the_same_id_with_another_value_is_a_conflict_naming_the_field(store: OutcomeStore, field: str,
                                                                       value: Any) -> None:
    store.add([_o(1)])
    with pytest.raises(ConflictError) as err:
        store.add([_o(2), _o(1, **{field: value})])
    assert field in err.value.message and err.value.details[0]["loc"] == ["body", "outcomes", 1, field]
    assert store.get("d2:SPY") is None  # the batch is refused whole


def test_an_aware_as_of_is_stored_in_the_canonical_form(store: OutcomeStore) -> None:
    store.add([_o(1, as_of="2024-01-02T00:00:00+00:00"), _o(2, as_of="2024-01-02T15:30:00-05:00")])
    assert store.get("d1:SPY").as_of == "2024-01-02"  # type: ignore[union-attr]
    assert store.get("d2:SPY").as_of == "2024-01-02T20:30:00"  # type: ignore[union-attr]
    assert store.add([_o(1, as_of="2024-01-02")]) == (0, 1)  # the same bar, written another way
