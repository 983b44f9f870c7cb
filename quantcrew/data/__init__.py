"""Market data for the agent side: OHLCV loaders, validation and the bundled real samples.

Numpy, the standard library and pyarrow only: no pandas, no ML library.
"""

from quantcrew.data.errors import DataError, UnknownSymbolError
from quantcrew.data.loaders import load_csv, load_file, load_parquet, to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.panel import AlignmentError, Panel, align
from quantcrew.data.panel_loaders import load_panel, load_panel_dir
from quantcrew.data.samples import SAMPLES, load_sample
from quantcrew.data.symbols import load_symbol
from quantcrew.data.synthetic import PARAM_SETS, RegimeParams, SyntheticMarket, generate_regime_market, oracle_filter
from quantcrew.data.synthetic_assets import (
    AssetMarket,
    GarchSeries,
    generate_correlated_market,
    generate_factor_market,
    generate_garch_series,
)
from quantcrew.data.validate import validate_ohlcv

__all__ = [
    "OHLCV",
    "AlignmentError",
    "AssetMarket",
    "GarchSeries",
    "Panel",
    "align",
    "generate_correlated_market",
    "generate_factor_market",
    "generate_garch_series",
    "load_panel",
    "load_panel_dir",
    "PARAM_SETS",
    "SAMPLES",
    "DataError",
    "RegimeParams",
    "SyntheticMarket",
    "UnknownSymbolError",
    "generate_regime_market",
    "load_csv",
    "load_file",
    "load_parquet",
    "load_sample",
    "load_symbol",
    "oracle_filter",
    "to_payload_dict",
    "validate_ohlcv",
]
