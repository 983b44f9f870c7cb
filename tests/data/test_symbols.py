"""Symbol resolution: the data folder first (an appended copy wins), then a bundled sample, then a path."""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import pytest

from quantcrew.data import loaders, samples
from quantcrew.data.errors import DataError, SampleUnavailableError, UnknownSymbolError
from quantcrew.data.symbols import load_symbol

GOOD = """Date,Open,High,Low,Close,Volume
2020-01-02,100,102,99,101,1000
2020-01-03,101,103,100,102,1100
2020-01-06,102,104,101,103,1200
2020-01-07,103,105,102,104,1300
"""


def _write(folder: Path, name: str) -> Path:
    path = folder / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(GOOD.encode()))
    else:
        path.write_text(GOOD)
    return path


def test_load_symbol_sample_aliases_any_case() -> None:
    for name in ("SP500", "sp500", "S&P500", "spx", "^GSPC"):
        assert load_symbol(name).symbol == "SP500"
    assert load_symbol("vix").symbol == "VIX"


def test_load_symbol_from_data_dir_case_insensitive(tmp_path: Path) -> None:
    _write(tmp_path, "aapl.csv")
    _write(tmp_path, "MSFT.csv.gz")
    assert len(load_symbol("AAPL", data_dir=tmp_path)) == 4
    assert load_symbol("msft", data_dir=tmp_path).symbol == "MSFT"


def test_load_symbol_existing_file_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "IBM.csv")
    assert load_symbol(str(path)).symbol == "IBM"


def test_load_symbol_unknown_lists_samples_and_files(tmp_path: Path) -> None:
    _write(tmp_path, "AAPL.csv")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UnknownSymbolError) as info:
        load_symbol("TSLA", data_dir=tmp_path)
    text = str(info.value)
    assert "unknown symbol 'TSLA'" in text
    assert "SP500, NASDAQ, VIX, CRUDE" in text
    assert f"files in {tmp_path}: AAPL.csv" in text
    assert "notes.txt" not in text
    assert info.value.files == ["AAPL.csv"]
    assert isinstance(info.value, DataError)


def test_load_symbol_with_path_parts_not_looked_up_in_data_dir(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    _write(tmp_path, "SECRET.csv")
    with pytest.raises(UnknownSymbolError):
        load_symbol("../SECRET", data_dir=inner)


def test_load_symbol_falls_back_to_data_dir_when_arch_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def _no_arch() -> Path:
        raise SampleUnavailableError("arch", "not installed: pip install 'quantcrew[server]'")

    monkeypatch.setattr(samples, "_arch_root", _no_arch)
    with pytest.raises(SampleUnavailableError, match=r"quantcrew\[server\]"):
        load_symbol("SP500", data_dir=tmp_path)
    _write(tmp_path, "SP500.csv")
    assert len(load_symbol("SP500", data_dir=tmp_path)) == 4


def test_loaders_import_neither_samples_nor_symbols_at_any_level() -> None:
    # samples reads its files with the loaders: an import back, even inside a function, is a cycle

    tree = ast.parse(Path(loaders.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 for a in node.names}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not imported & {"quantcrew.data.samples", "quantcrew.data.symbols"}
