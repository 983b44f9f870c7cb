"""Bars as the services see them: built once from the wire payload, hashed, dated."""

from __future__ import annotations

import pytest

from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.services.bars import bars_from_payload


def _payload(n: int) -> OHLCVPayload:
    return OHLCVPayload.model_validate(to_payload_dict(load_sample("SP500").tail(n)))


def test_provenance_names_hash_span_and_count() -> None:
    bars = bars_from_payload(_payload(50))
    prov = bars.provenance()
    assert prov == {"data_hash": bars.data_hash, "data_start": bars.iso()[0], "data_end": bars.iso()[-1],
                    "n_bars": 50}
    assert prov["data_end"] == "2018-12-31"


def test_same_bars_hash_the_same_and_other_bars_differently() -> None:
    assert bars_from_payload(_payload(50)).data_hash == bars_from_payload(_payload(50)).data_hash
    assert bars_from_payload(_payload(50)).data_hash != bars_from_payload(_payload(51)).data_hash


def test_too_few_bars_is_invalid_input_naming_the_field() -> None:
    with pytest.raises(InvalidInputError) as err:
        bars_from_payload(_payload(5), min_rows=10)
    assert err.value.details[0]["loc"][0] == "data"
