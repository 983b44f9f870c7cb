"""The prediction log: a bounded queue written in batches by one thread, retention by rows and age."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.services.monitor.predictions import MAX_FEATURES, PredictionLog, as_of_key


def _record(log: PredictionLog, i: int = 0, **over: Any) -> bool:
    fields: dict[str, Any] = {
        "model_id": "m-1", "name": "ens", "version": 1, "family": "ensemble", "route": "/v1/ensemble/predict",
        "request_hash": f"sha256:{i}", "subject": "SPY", "as_of": datetime(2024, 1, 2, tzinfo=UTC),
        "features": {"ret_1": 0.01 * i}, "output": 0.5, "label": "up", "confidence": 0.6}
    return log.record(**{**fields, **over})


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])


def test_records_are_written_in_batches_by_the_writer(tmp_path: Path) -> None:
    metrics = Metrics()
    log = PredictionLog(tmp_path / "r.db", flush_ms=50.0, metrics=metrics)
    try:
        for i in range(300):
            assert _record(log, i)
        assert log.flush()
        assert _count(tmp_path / "r.db") == 300
        batches = metrics.registry.get_sample_value("quantcrew_prediction_log_write_seconds_count")
        assert batches is not None and 1 <= batches < 300 / 10  # many records per transaction
        assert metrics.registry.get_sample_value("quantcrew_predictions_logged_total") == 300
        newest = log.recent("m-1", 2)
        assert [r.request_hash for r in newest] == ["sha256:299", "sha256:298"]
        assert newest[0].features == {"ret_1": pytest.approx(2.99)} and newest[0].as_of == "2024-01-02"
    finally:
        log.close()


def test_a_steady_stream_of_records_is_written_a_few_batches_a_second_not_one_per_record(tmp_path: Path) -> None:
    # a busy server adds a record every fraction of a millisecond: a writer that chased them after
    # each write wrote one or two per transaction, hundreds of transactions a second
    metrics = Metrics()
    log = PredictionLog(tmp_path / "r.db", flush_ms=200.0, metrics=metrics)
    try:
        sent, deadline = 0, time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert _record(log, sent)
            sent += 1
            busy_until = time.perf_counter() + 0.0005
            while time.perf_counter() < busy_until:  # holding the GIL, as a request on the event loop does
                pass
            time.sleep(0)  # and letting it go now and then, as its socket calls do
        assert log.flush()
        assert _count(tmp_path / "r.db") == sent
        batches = metrics.registry.get_sample_value("quantcrew_prediction_log_write_seconds_count")
        assert batches is not None and batches <= 15, f"{batches} transactions for {sent} records in 1 s"
    finally:
        log.close()


def test_records_queued_until_close_are_all_written(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "r.db", flush_ms=60_000.0)
    for i in range(700):  # past the eager wake-up: the writer is busy while more arrive
        assert _record(log, i)
    log.close()
    assert _count(tmp_path / "r.db") == 700


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    metrics = Metrics()
    log = PredictionLog(tmp_path / "r.db", flush_ms=60_000.0, queue_max=100, metrics=metrics)
    try:
        start = time.perf_counter()
        accepted = [_record(log, i) for i in range(150)]
        elapsed = time.perf_counter() - start
        assert accepted.count(True) == 100 and accepted.count(False) == 50
        assert log.dropped == 50 and metrics.registry.get_sample_value("quantcrew_predictions_dropped_total") == 50
        assert elapsed < 0.5  # 150 appends, no write on this thread (the writer sleeps for a minute)
        assert _count(tmp_path / "r.db") == 0
    finally:
        log.close()  # writes what was queued
    assert _count(tmp_path / "r.db") == 100


def test_retention_keeps_the_newest_rows(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "r.db", flush_ms=10.0, retention_rows=25)
    try:
        for i in range(60):
            _record(log, i)
        assert log.flush(prune=True)
        assert _count(tmp_path / "r.db") == 25
        assert {r.request_hash for r in log.recent(None, 100)} == {f"sha256:{i}" for i in range(35, 60)}
    finally:
        log.close()


def test_retention_deletes_rows_past_their_age(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "r.db", flush_ms=10.0, retention_days=0.5 / 86_400)  # half a second
    try:
        _record(log, 1)
        assert log.flush(prune=True) and _count(tmp_path / "r.db") == 1  # young enough to stay
        time.sleep(0.6)
        _record(log, 2)
        assert log.flush(prune=True)
        assert [r.request_hash for r in log.recent(None, 10)] == ["sha256:2"]
    finally:
        log.close()


def test_features_and_outputs_built_on_the_writer_thread_and_a_failing_one_loses_only_itself(
        tmp_path: Path) -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("feature code failed")

    many = {f"f{i}": float(i) for i in range(MAX_FEATURES + 10)}
    log = PredictionLog(tmp_path / "r.db", flush_ms=10.0)
    try:
        assert _record(log, 1, features=broken, output=lambda: 0.25)
        assert _record(log, 2, features=lambda: {**many, "bad": float("nan")}, confidence=float("inf"))
        log.flush()
        second, first = log.recent("m-1", 2)
        assert first.features == {} and first.output == 0.25
        assert len(second.features) == MAX_FEATURES and "bad" not in second.features
        assert second.confidence is None
    finally:
        log.close()


def test_a_disabled_log_records_nothing(tmp_path: Path) -> None:
    log = PredictionLog.disabled()
    assert not _record(log) and log.recent("m-1", 10) == [] and log.flush()
    log.close()


@pytest.mark.parametrize(("value", "key"), [
    ("2024-01-02", "2024-01-02"),
    ("2024-01-02T00:00:00", "2024-01-02"),
    ("2024-01-02T00:00:00Z", "2024-01-02"),
    ("2024-01-02T05:00:00+05:00", "2024-01-02"),
    ("2024-01-02T14:30:00", "2024-01-02T14:30:00"),
    (datetime(2024, 1, 2, 14, 30, tzinfo=UTC), "2024-01-02T14:30:00"),
])
def test_as_of_keys_are_one_form_for_predictions_and_outcomes(value: Any, key: str) -> None:
    assert as_of_key(value) == key
