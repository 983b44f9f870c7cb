"""Market data for the agent side: OHLCV loaders, validation and the bundled real samples.

Numpy, the standard library and pyarrow only: no pandas, no ML library.
"""

from quantcrew.data.errors import DataError, UnknownSymbolError
from quantcrew.data.loaders import load_csv, load_file, load_parquet, load_symbol, to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.samples import SAMPLES, load_sample
from quantcrew.data.validate import validate_ohlcv

__all__ = [
    "OHLCV",
    "SAMPLES",
    "DataError",
    "UnknownSymbolError",
    "load_csv",
    "load_file",
    "load_parquet",
    "load_sample",
    "load_symbol",
    "to_payload_dict",
    "validate_ohlcv",
]
