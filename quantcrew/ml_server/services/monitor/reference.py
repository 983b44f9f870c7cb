"""A model version's drift reference: what its inputs and its output looked like at training time.

Stored once, when the version is trained, beside the registry entry (own table, keyed by
``model_id``). For each input feature, and for the model's primary output scalar (``output``, the
same scalar the prediction log records: ensemble P(up), rl position, execution size, supervised
prediction or P(class 1), anomaly score, regime label index, cluster index), it keeps:

* ``edges``: ``bins - 1`` inner quantile edges of the training values (duplicates removed, so a
  feature with few distinct values gets fewer bins); the outer bins are open, so every new
  value falls into one;
* ``proportions``: the share of the training values in each bin (they sum to 1);
* ``sample``: at most ``reference_rows`` training values, evenly spaced in time (the
  two-sample Kolmogorov-Smirnov test needs values, not bins).

Features are named with the family's own names, the names the prediction log records for one
prediction (its last row of features), so a window of logged predictions compares with the
reference feature by feature. Non-finite training values (warm-up rows) are left out.

The store is one table, ``drift_references``, in the registry's SQLite file, with its own
connection (sqlite-utils, WAL), written in ``BEGIN IMMEDIATE`` transactions.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlite_utils

from quantcrew.config.settings import get_settings
from quantcrew.ml_server.transaction import immediate

__all__ = [
    "OUTPUT",
    "DriftReference",
    "ReferenceStore",
    "Summary",
    "build_reference",
    "save_reference",
    "summarise",
]

logger = logging.getLogger("quantcrew.ml_server.monitor")

FloatArray = npt.NDArray[np.float64]

OUTPUT = "output"
"""Name of the model's output scalar in a reference and a drift report."""

_MIN_VALUES = 2
"""Fewest finite training values a feature needs to get a reference."""


@dataclass(frozen=True)
class Summary:
    """The training distribution of one feature (or of the output).

    Attributes:
        edges: Inner quantile edges, increasing, ``len(proportions) - 1`` of them.
        proportions: Share of training values per bin: bin 0 is ``x <= edges[0]``, bin ``i`` is
            ``edges[i-1] < x <= edges[i]``, the last bin ``x > edges[-1]``.
        sample: At most ``reference_rows`` training values (for the KS test).
        n: Finite training values the summary was taken from.
    """

    edges: tuple[float, ...]
    proportions: tuple[float, ...]
    sample: tuple[float, ...]
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "proportions": list(self.proportions), "sample": list(self.sample),
                "n": self.n}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        return cls(edges=tuple(float(v) for v in data["edges"]),
                   proportions=tuple(float(v) for v in data["proportions"]),
                   sample=tuple(float(v) for v in data["sample"]), n=int(data["n"]))


@dataclass(frozen=True)
class DriftReference:
    """A model version's reference.

    Attributes:
        model_id: Registry id of the version.
        family: Its family.
        features: Per input feature, in the family's order.
        output: The output scalar's summary (None when the training gave no output).
        created_at: When it was stored.
    """

    model_id: str
    family: str
    features: dict[str, Summary]
    output: Summary | None
    created_at: datetime

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)


def bin_index(edges: Sequence[float] | FloatArray, values: FloatArray) -> npt.NDArray[np.int64]:
    """The bin of each value (see :class:`Summary`): right-closed inner edges, open outer bins."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left").astype(np.int64)


def summarise(values: npt.ArrayLike, *, bins: int, rows: int) -> Summary | None:
    """The summary of ``values`` (non-finite left out), or None with fewer than 2 finite values.

    Args:
        values: Training values in time order.
        bins: Most quantile bins (fewer when values repeat).
        rows: Most values kept in the sample (evenly spaced over the training span).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if len(x) < _MIN_VALUES:
        return None
    inner = np.quantile(x, np.arange(1, bins) / bins, method="linear") if bins > 1 else np.zeros(0)
    edges = np.unique(inner)
    # an edge at the maximum would leave the top bin empty by construction: drop it
    edges = edges[edges < x.max()]
    counts = np.bincount(bin_index(edges, x), minlength=len(edges) + 1)
    proportions = counts / counts.sum()
    take = np.unique(np.linspace(0, len(x) - 1, num=min(rows, len(x))).round().astype(np.int64))
    return Summary(edges=tuple(float(e) for e in edges), proportions=tuple(float(p) for p in proportions),
                   sample=tuple(float(v) for v in x[take]), n=len(x))


def build_reference(model_id: str, family: str, names: Sequence[str], matrix: npt.ArrayLike,
                    outputs: npt.ArrayLike | None, *, bins: int | None = None,
                    rows: int | None = None) -> DriftReference:
    """A reference from the training feature matrix and the model's outputs on training data.

    Args:
        model_id: Registry id of the version.
        family: Its family.
        names: The feature names, one per column of ``matrix`` (the prediction log's names).
        matrix: Training feature rows (n x len(names)), in time order.
        outputs: The model's output scalar on training rows (their count may differ from the
            matrix's: a walk-forward fit's out-of-sample outputs, say), or None.
        bins: Quantile bins (default ``settings.monitor.drift_bins``).
        rows: Most values sampled (default ``settings.monitor.reference_rows``).

    Raises:
        ValueError: ``names`` does not match the matrix's columns (a programming error).
    """
    monitor = get_settings().monitor
    bins = monitor.drift_bins if bins is None else bins
    rows = monitor.reference_rows if rows is None else rows
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.shape[1] != len(names):
        raise ValueError(f"{len(names)} feature names for a matrix of {x.shape[1]} columns")
    features: dict[str, Summary] = {}
    for j, name in enumerate(names):
        summary = summarise(x[:, j], bins=bins, rows=rows)
        if summary is not None:
            features[str(name)] = summary
    output = summarise(outputs, bins=bins, rows=rows) if outputs is not None else None
    return DriftReference(model_id=model_id, family=family, features=features, output=output,
                          created_at=datetime.now(UTC))


_SCHEMA = {"model_id": str, "family": str, "features": str, "output": str, "created_at": str}
_QUALITY_SCHEMA = {"model_id": str, "score": float, "n_bars": int, "at": str}


class ReferenceStore:
    """Drift references by model id, in the ``drift_references`` table of an SQLite file.

    Args:
        db_path: The registry's SQLite file, typically.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30, isolation_level=None)
        self._db = sqlite_utils.Database(conn)
        self._db.enable_wal()
        self._lock = threading.RLock()
        # one write transaction taken up front: replicas on a shared home may open a fresh file together
        with self._transaction():
            self._db.table("drift_references").create(_SCHEMA, pk="model_id", not_null=set(_SCHEMA) - {"output"},
                                                      if_not_exists=True)
            self._db.table("drift_bar_quality").create(_QUALITY_SCHEMA, pk="model_id",
                                                       not_null=set(_QUALITY_SCHEMA), if_not_exists=True)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.conn.close()

    def __enter__(self) -> ReferenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db.conn)

    def put(self, reference: DriftReference) -> None:
        """Store ``reference`` (replacing any earlier one of the same model id)."""
        features = json.dumps({k: s.to_json() for k, s in reference.features.items()}, allow_nan=False)
        output = json.dumps(reference.output.to_json(), allow_nan=False) if reference.output is not None else None
        with self._lock, self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO drift_references (model_id, family, features, output, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (reference.model_id, reference.family, features, output,
                                                  reference.created_at.astimezone(UTC).isoformat()))

    def get(self, model_id: str) -> DriftReference | None:
        """The reference of ``model_id``, or None when none was stored."""
        with self._lock:
            rows = list(self._db.table("drift_references").rows_where("model_id = ?", [model_id]))
        if not rows:
            return None
        row = rows[0]
        features = {k: Summary.from_json(v) for k, v in json.loads(row["features"]).items()}
        output = Summary.from_json(json.loads(row["output"])) if row["output"] else None
        return DriftReference(model_id=row["model_id"], family=row["family"], features=features, output=output,
                              created_at=datetime.fromisoformat(row["created_at"]))

    def put_quality(self, model_id: str, score: float, n_bars: int) -> None:
        """Record the data-quality score of the last bars sent for ``model_id`` (read by alert rules)."""
        with self._lock, self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO drift_bar_quality (model_id, score, n_bars, at) VALUES (?, ?, ?, ?)",
                       (model_id, float(score), int(n_bars), datetime.now(UTC).isoformat()))

    def get_quality(self, model_id: str) -> tuple[float, int] | None:
        """The last data-quality score recorded for ``model_id`` and its bar count, or None."""
        with self._lock:
            row = self._db.conn.execute("SELECT score, n_bars FROM drift_bar_quality WHERE model_id = ?",
                                        (model_id,)).fetchone()
        return (float(row[0]), int(row[1])) if row is not None else None

    def delete(self, model_id: str) -> bool:
        """Forget the reference of ``model_id`` (a deleted version); True when one was there."""
        with self._lock, self._transaction() as db:
            cursor = db.execute("DELETE FROM drift_references WHERE model_id = ?", (model_id,))
            db.execute("DELETE FROM drift_bar_quality WHERE model_id = ?", (model_id,))
            return cursor.rowcount > 0


def save_reference(db_path: Path, model_id: str | None, family: str, names: Sequence[str],
                   matrix: npt.ArrayLike, outputs: npt.ArrayLike | None) -> DriftReference | None:
    """Build and store the reference of a version just trained (what a family's training calls).

    Opens the store on ``db_path`` (the registry's file: ``registry.db_path``) for this one write:
    a training is rare and slow next to opening a connection. The version is stored already, so a
    reference that cannot be built or written is logged and the training still answers (drift
    reports then say the model has no reference); None is returned. ``model_id`` None (a reply
    without one): nothing is stored.
    """
    if model_id is None:
        return None
    try:
        reference = build_reference(model_id, family, names, matrix, outputs)
        with ReferenceStore(db_path) as store:
            store.put(reference)
    except (sqlite3.Error, ValueError, OSError):
        logger.exception("drift reference of %s model %s could not be stored", family, model_id)
        return None
    return reference
