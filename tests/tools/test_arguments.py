"""What an LLM says, parsed into tool arguments."""

from __future__ import annotations

import pytest

from quantcrew.tools.arguments import ToolInputError, check_weights, iso_date, parse_floats, parse_names


def test_parse_names_accepts_text_and_lists() -> None:
    assert parse_names("SP500, NASDAQ", field="symbols") == ["SP500", "NASDAQ"]
    assert parse_names(["SP500", "NASDAQ"], field="symbols") == ["SP500", "NASDAQ"]
    assert parse_names("['SP500', 'VIX']", field="symbols") == ["SP500", "VIX"]


def test_parse_names_refuses_empty_and_repeated() -> None:
    with pytest.raises(ToolInputError, match="symbols is empty"):
        parse_names(" , ", field="symbols")
    with pytest.raises(ToolInputError, match="twice"):
        parse_names("SP500,sp500", field="symbols")


def test_parse_floats_reads_percent_and_lists() -> None:
    assert parse_floats("60%, 40%", field="weights") == pytest.approx([0.6, 0.4])
    assert parse_floats([0.5, "0.5"], field="weights") == [0.5, 0.5]
    assert parse_floats("", field="weights") is None
    with pytest.raises(ToolInputError, match="'abc' is not a number"):
        parse_floats("0.5,abc", field="weights")
    with pytest.raises(ToolInputError, match="finite"):
        parse_floats("nan", field="weights")


def test_check_weights_equal_when_none_and_refuses_bad_sums() -> None:
    assert check_weights(None, 4, normalize=False) == [0.25] * 4
    assert check_weights([0.6, 0.4], 2, normalize=False) == [0.6, 0.4]
    with pytest.raises(ToolInputError, match=r"sum to 1.2.*normalize_weights"):
        check_weights([0.6, 0.6], 2, normalize=False)
    assert check_weights([0.6, 0.6], 2, normalize=True) == pytest.approx([0.5, 0.5])
    with pytest.raises(ToolInputError, match="one weight per symbol"):
        check_weights([1.0], 2, normalize=False)
    with pytest.raises(ToolInputError, match="must sum to one"):
        check_weights([0.0, 0.0], 2, normalize=True)


def test_iso_date_keeps_dates_and_refuses_others() -> None:
    assert iso_date(" 2018-06-29 ") == "2018-06-29"
    assert iso_date("") is None
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        iso_date("29/06/2018")
