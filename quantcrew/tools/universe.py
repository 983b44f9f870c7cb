"""What the multi-asset tools share: the symbols an agent names, loaded as one aligned panel."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from quantcrew.config.settings import Settings
from quantcrew.data.errors import DataError
from quantcrew.data.panel import Panel
from quantcrew.data.panel_loaders import load_panel
from quantcrew.tools.arguments import ToolInputError, iso_date, parse_names

__all__ = ["UniverseInput", "load_universe"]

_SYMBOLS_HELP = (
    "Comma-separated markets, e.g. 'SP500,NASDAQ': bundled series (SP500, NASDAQ, VIX, CRUDE), symbols with a "
    "CSV/Parquet file in the data folder, or file paths."
)


class UniverseInput(BaseModel):
    """The symbols, history length and as-of date every multi-asset tool takes."""

    symbols: str | list[str] = Field(default="SP500,NASDAQ", description=_SYMBOLS_HELP)
    lookback: int = Field(default=1000, ge=60, le=20_000, description="Number of most recent daily returns to use.")
    end_date: str | None = Field(default=None, description="As of this date (YYYY-MM-DD); empty means the latest.")

    @field_validator("end_date")
    @classmethod
    def _end_date(cls, v: str | None) -> str | None:
        return iso_date(v)


def load_universe(settings: Settings, arguments: dict[str, Any], *, min_assets: int = 1) -> Panel:
    """The symbols of ``arguments`` aligned on common dates, cut at ``end_date``, last ``lookback`` returns.

    Raises:
        ToolInputError: no symbols, a repeated one, or fewer than ``min_assets``.
        DataError: a symbol cannot be loaded, or the series share too few dates.
    """
    names = parse_names(arguments.get("symbols"), field="symbols")
    if len(names) < min_assets:
        raise ToolInputError(f"symbols names {len(names)} market(s); this tool needs at least {min_assets}")
    data = settings.data
    panel = load_panel(names, data_dir=data.data_dir, max_gap_days=data.max_gap_days, end=arguments.get("end_date"))
    panel = panel.tail(int(arguments.get("lookback") or 1000) + 1)  # +1: the first date only seeds a return
    if len(panel) < 3:
        raise DataError(None, f"{', '.join(names)}: only {len(panel)} common dates up to the end date")
    return panel
