"""``quantcrew data add``: append bars to a symbol in the data folder, exit 2 on bad input, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from quantcrew.cli.data import data_app
from quantcrew.config.settings import load_settings
from quantcrew.data.loaders import load_file
from quantcrew.data.samples import load_sample
from quantcrew.data.symbols import load_symbol

HEADER = "Date,Open,High,Low,Close,Volume"
NEXT_DAYS = [
    "2019-01-02,2476.96,2519.49,2467.47,2510.03,3733160000",
    "2019-01-03,2491.92,2493.14,2443.96,2447.89,3822860000",
]

cli = typer.Typer()
cli.add_typer(data_app, name="data")


def _csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["data", "add", *args], env={"COLUMNS": "250"})


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("QUANTCREW_DATA__DATA_DIR", str(folder))
    return folder


def _last_stored_row() -> str:
    last = load_sample("SP500").tail(1)
    values = (float(c[0]) for c in (last.open, last.high, last.low, last.close, last.volume))
    return ",".join([last.iso_timestamps()[0], *(repr(v) for v in values)])


def test_data_add_appends_to_a_bundled_series_copy(tmp_path: Path, data_dir: Path) -> None:
    new = _csv(tmp_path / "new.csv", [_last_stored_row(), *NEXT_DAYS])

    result = _invoke("SP500", str(new))

    assert result.exit_code == 0, result.output
    out = _flat(result.stdout)
    assert "stored 5031 bars from the bundled series, 1999-01-04 to 2018-12-31" in out
    assert "overlap: 1 bar (2018-12-31 to 2018-12-31) agree on close, open, high, low" in out
    assert "added 2 bars (2019-01-02 to 2019-01-03): SP500 now spans 1999-01-04 to 2019-01-03 (5033 bars)" in out
    assert f"written to {data_dir / 'SP500.csv'}" in out
    assert len(load_file(data_dir / "SP500.csv")) == 5033


def test_data_add_json_reports_what_happened(tmp_path: Path, data_dir: Path) -> None:
    result = _invoke("spx", str(_csv(tmp_path / "new.csv", NEXT_DAYS)), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["written"] is True and report["dry_run"] is False
    assert report["symbol"] == "SP500"
    assert report["file"] == str(data_dir / "SP500.csv")
    assert report["stored"]["base"] == "bundled"
    assert report["added"] == {"bars": 2, "start": "2019-01-02", "end": "2019-01-03"}
    assert report["span"] == {"bars": 5033, "start": "1999-01-04", "end": "2019-01-03"}
    assert report["overlap"]["bars"] == 0 and report["gaps"] == []


def test_data_add_disagreeing_overlap_exits_2_naming_the_date_and_values(tmp_path: Path, data_dir: Path) -> None:
    assert _invoke("SP500", str(_csv(tmp_path / "a.csv", NEXT_DAYS))).exit_code == 0
    before = (data_dir / "SP500.csv").read_bytes()
    wrong = _csv(tmp_path / "b.csv", [NEXT_DAYS[0].replace("2476.96", "2476.0")])

    result = _invoke("SP500", str(wrong))

    assert result.exit_code == 2, result.output
    err = _flat(result.stderr)
    assert "2019-01-02: open 2476.0 disagrees with the stored 2476.96" in err
    assert (data_dir / "SP500.csv").read_bytes() == before


def test_data_add_gap_is_named_and_refused_unless_allowed(tmp_path: Path, data_dir: Path) -> None:
    late = _csv(tmp_path / "late.csv", ["2019-03-01,2770.0,2790.0,2760.0,2784.0,0"])

    refused = _invoke("SP500", str(late), "--json")

    assert refused.exit_code == 2
    assert "gap of 60 days between 2018-12-31 and 2019-03-01 exceeds max_gap_days=7" in _flat(refused.stderr)
    assert json.loads(refused.stdout)["reason"] == "gap"
    assert not data_dir.exists()

    allowed = _invoke("SP500", str(late), "--allow-gap")

    assert allowed.exit_code == 0, allowed.output
    out = _flat(allowed.stdout)
    assert "gap: 60 days between 2018-12-31 and 2019-03-01" in out
    assert "data.max_gap_days >= 60" in out


def test_data_add_missing_file_exits_2_naming_it(tmp_path: Path, data_dir: Path) -> None:
    result = _invoke("SP500", str(tmp_path / "absent.csv"))

    assert result.exit_code == 2
    assert f"{tmp_path / 'absent.csv'}: no such file" in _flat(result.stderr)


def test_data_add_bad_column_exits_2_naming_file_and_column(tmp_path: Path, data_dir: Path) -> None:
    bad = _csv(tmp_path / "bad.csv", ["2019-01-02,2476.96,2519.49,2467.47"], header="Date,Open,High,Low")

    result = _invoke("SP500", str(bad))

    assert result.exit_code == 2
    assert f"{bad}: missing required column Close" in _flat(result.stderr)


def test_data_add_dry_run_writes_nothing(tmp_path: Path, data_dir: Path) -> None:
    result = _invoke("SP500", str(_csv(tmp_path / "new.csv", NEXT_DAYS)), "--dry-run")

    assert result.exit_code == 0, result.output
    out = _flat(result.stdout)
    assert "would add 2 bars" in out and "dry run: nothing written" in out
    assert not data_dir.exists()


def test_data_add_to_a_file_dropped_in_the_data_folder(tmp_path: Path, data_dir: Path) -> None:
    data_dir.mkdir()
    _csv(data_dir / "ACME.csv", NEXT_DAYS[:1])
    settings = load_settings()
    assert len(load_symbol("ACME", data_dir=settings.data.data_dir)) == 1  # dropped files are read as they are

    result = _invoke("acme", str(_csv(tmp_path / "more.csv", NEXT_DAYS)))

    assert result.exit_code == 0, result.output
    assert f"the data-folder file {data_dir / 'ACME.csv'}" in _flat(result.stdout)
    assert load_symbol("ACME", data_dir=settings.data.data_dir).iso_timestamps() == ["2019-01-02", "2019-01-03"]


def test_data_add_without_a_data_dir_writes_under_home(tmp_path: Path) -> None:
    result = _invoke("ACME", str(_csv(tmp_path / "new.csv", NEXT_DAYS)))

    assert result.exit_code == 0, result.output
    settings = load_settings()
    assert (settings.home / "data" / "ACME.csv").is_file()
    if settings.data.data_dir is None:  # commands read the folder only once data.data_dir names it
        assert "data.data_dir is not set" in _flat(result.stdout)
