"""The model registry: one SQLite table (sqlite-utils, WAL) plus an artifact folder.

Artifacts are written by the server only. Each one's SHA-256 is recorded at write and
checked before it is loaded; a file that no longer matches is refused
(:class:`ArtifactIntegrityError`, HTTP 409). Formats:

- ``skops``: scikit-learn and hmmlearn estimators, loaded with the allow-list
  :data:`TRUSTED_TYPES` kept here in code (never read from the artifact itself);
- ``torch``: a state dict, loaded with ``torch.load(weights_only=True)``;
- ``json``: plain parameters (e.g. a rule-based fallback model).

The registry also owns the server's one cache of rebuilt models (:meth:`ModelRegistry.rebuild`):
least recently used first out, its size from ``server.model_cache_size``. An entry is reused only
while the artifact's recorded SHA-256 and the file's size and mtime are those it was built from.
The rows read are kept too, each tagged with the home's write counter
(:class:`~quantcrew.ml_server.generation.Generation`, bumped after every commit by any process on
the file): a predict on a cached model runs no statement until someone writes.

No request ever names a path or URL: artifacts are addressed by ``model_id`` only, and the
file name is derived from it.

Each version records its lineage (:class:`~quantcrew.ml_server.schemas.common.Lineage`, column
``lineage``; rows written before it read with an empty one): its parent (the name's full
deployment when it was stored, through :attr:`ModelRegistry.parent_of`, else the previous
version), the training span and hash (read from the metadata every family already records:
``data_start``/``data_end`` or ``train_start``/``train_end``, ``data_hash``), the code and library
versions, the trigger and the training gate's verdict. Callbacks in
:attr:`ModelRegistry.after_save` run after each save (the retention policy); one that fails is
logged and never fails the save.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlite_utils

from quantcrew.ml_server.errors import ArtifactIntegrityError, ModelNotFoundError
from quantcrew.ml_server.generation import Generation
from quantcrew.ml_server.schemas.common import Lineage, ModelInfo
from quantcrew.ml_server.transaction import immediate

__all__ = ["LIBRARIES", "TRUSTED_TYPES", "ArtifactFormat", "ModelRegistry"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

ArtifactFormat = Literal["skops", "torch", "json"]

# The skops allow-list: every type a stored estimator may contain, by family. Anything else
# found in an artifact is refused. Extend it here, in code, when a family adds a model type.
TRUSTED_TYPES: dict[str, tuple[str, ...]] = {
    "regime": ("hmmlearn.hmm.GaussianHMM", "hmmlearn.base.ConvergenceMonitor", "collections.deque"),
    "cluster": (
        "numpy.float64", "sklearn.cluster._dbscan.DBSCAN", "sklearn.cluster._kmeans.KMeans",
        "sklearn.mixture._gaussian_mixture.GaussianMixture", "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
    ),
    "decompose": (
        "numpy.float64", "sklearn.decomposition._fastica.FastICA", "sklearn.decomposition._nmf.NMF",
        "sklearn.decomposition._pca.PCA", "sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler",
    ),
    "anomaly": (
        "numpy.float64", "sklearn.ensemble._iforest.IsolationForest", "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler", "sklearn.tree._classes.ExtraTreeRegressor",
        "sklearn.tree._tree.Tree",
    ),
    "supervised": (
        "numpy.float64", "numpy.int64", "numpy.random.mtrand.RandomState",
        "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
        "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss.link.IdentityLink", "sklearn._loss.link.Interval",
        "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit", "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss", "sklearn._loss.loss.HalfSquaredError",
        "sklearn.compose._target.TransformedTargetRegressor",
        "sklearn.dummy.DummyClassifier", "sklearn.dummy.DummyRegressor",
        "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.ensemble._gb.GradientBoostingClassifier", "sklearn.ensemble._gb.GradientBoostingRegressor",
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer", "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler", "sklearn.preprocessing._label.LabelBinarizer",
        "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._tree.Tree",
    ),
}

# Containers and arrays any estimator holds; trusted for every family.
_BASE_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int", "builtins.float",
    "builtins.bool", "builtins.NoneType", "numpy.ndarray", "numpy.dtype",
})

# The libraries whose versions a family's models depend on (read from the installed distributions, nothing imported)
LIBRARIES: dict[str, tuple[str, ...]] = {
    "regime": ("numpy", "scikit-learn", "hmmlearn"),
    "cluster": ("numpy", "scikit-learn"),
    "decompose": ("numpy", "scikit-learn"),
    "anomaly": ("numpy", "scikit-learn"),
    "supervised": ("numpy", "scikit-learn"),
    "ensemble": ("numpy", "torch"),
    "execution": ("numpy", "torch"),
    "rl": ("numpy", "torch", "stable-baselines3", "gymnasium"),
}

_SUFFIX: dict[str, str] = {"skops": ".skops", "torch": ".pt", "json": ".json"}
_ROWS_KEPT = 4096
"""How many rows the registry keeps read (a few kB each): the models a server predicts with."""
_REBUILD_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError)
"""What a rebuild raises when a stored artifact does not make the model it claims to be."""


@dataclass(frozen=True)
class _Stamp:
    """What a cached artifact looked like when it was last verified."""

    sha256: str
    mtime_ns: int
    size: int


class ModelRegistry:
    """Stores, versions, verifies and loads model artifacts.

    Args:
        db_path: SQLite file holding the ``models`` table.
        artifacts_dir: Folder the artifacts are written to.
    """

    def __init__(self, db_path: Path, artifacts_dir: Path, *, cache_size: int = 32) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.cache_size = cache_size
        self.db_path = Path(db_path)
        self.artifacts_dir = Path(artifacts_dir)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30)
        self._db = sqlite_utils.Database(conn)
        self._db.enable_wal()
        self._lock = threading.RLock()
        # (model_id, variant) -> (stamp, entry, object); variant "" holds the deserialised artifact itself
        self._cache: OrderedDict[tuple[str, str], tuple[_Stamp, ModelInfo, Any]] = OrderedDict()
        # model_id -> (generation when read, row): a predict reads its row without a statement while
        # no process sharing the file has written since (see quantcrew.ml_server.generation)
        self._generation = Generation.of(self.db_path)
        self._rows: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        self._rows_lock = threading.Lock()  # held for dict operations only: nothing in it releases the GIL
        # Replicas on a shared home may open a fresh file together: the schema is made in one write
        # transaction taken up front (sqlite-utils would read in a deferred one first, then fail to write
        # at once with "database is locked" when another process wrote meanwhile).
        with immediate(conn):
            if "models" not in self._db.table_names():
                self._db["models"].create(  # type: ignore[union-attr]
                    {"model_id": str, "name": str, "version": int, "family": str, "method": str, "format": str,
                     "sha256": str, "file": str, "created_at": str, "stage": str, "metadata": str},
                    pk="model_id",
                )
                self._db["models"].create_index(["name", "version"], unique=True)  # type: ignore[union-attr]
            if "lineage" not in self._db["models"].columns_dict:
                # a registry written before lineage: its rows read with an empty one
                conn.execute("alter table models add column lineage text")
        self._generation.bump()
        self.parent_of: Callable[[str], str | None] | None = None
        """The model id of a name's full deployment (set by the server): a new version's parent."""
        self.after_save: list[Callable[[ModelInfo], None]] = []
        """Called with each new entry after it is stored; failures are logged, never raised."""

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()
        self._generation.close()

    # -- writing -----------------------------------------------------------------------------

    def save(self, *, family: str, name: str, method: str, obj: Any, fmt: ArtifactFormat,
             metadata: dict[str, Any] | None = None, stage: str = "full", trigger: str = "manual") -> ModelInfo:
        """Serialise ``obj``, write it, record its SHA-256, lineage and a new version of ``name``.

        Args:
            trigger: Why it was trained (``manual``, ``schedule``, ``drift``, ``quality``).
        """
        payload = _serialise(obj, fmt)
        sha = hashlib.sha256(payload).hexdigest()
        model_id = f"{family}-{uuid.uuid4().hex[:12]}"
        file_name = model_id + _SUFFIX[fmt]
        path = self.artifacts_dir / file_name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(payload)
        tmp.replace(path)  # atomic: a reader never sees half a file
        created = datetime.now(UTC)
        row_values = {"model_id": model_id, "name": name, "family": family, "method": method, "format": fmt,
                      "sha256": sha, "file": file_name, "created_at": created.isoformat(), "stage": stage,
                      "metadata": json.dumps(metadata or {})}
        lineage = _lineage(family, metadata or {}, trigger)
        champion = self._champion(name)
        with self._lock:
            version, lineage = self._insert_next_version(name, row_values, lineage, champion)
        info = ModelInfo(model_id=model_id, name=name, version=version, family=family, method=method,
                         sha256=sha, created_at=created, stage=stage, metadata=metadata or {}, lineage=lineage)
        for callback in list(self.after_save):
            try:
                callback(info)
            except Exception:  # a failed cleanup never fails the training that stored the model
                logger.exception("after-save callback failed for model %s", model_id)
        return info

    def _champion(self, name: str) -> ModelInfo | None:
        """The entry of ``name``'s full deployment, when the server says which one it is and it still exists."""
        if self.parent_of is None:
            return None
        model_id = self.parent_of(name)
        if model_id is None:
            return None
        try:
            return self.get(model_id)
        except ModelNotFoundError:
            return None

    def _insert_next_version(self, name: str, values: dict[str, Any], lineage: Lineage,
                             champion: ModelInfo | None) -> tuple[int, Lineage]:
        """Insert ``values`` as the next version of ``name``; returns that version and the lineage stored.

        The parent is ``champion`` when given, else the version before (read in the same transaction).

        Another process may share this file (a second server on the same home): ``BEGIN
        IMMEDIATE`` takes SQLite's write lock before the last version is read, so two writers
        cannot both read version n and both write n + 1 (the unique index would refuse one).
        """
        with immediate(self._db.conn) as conn:
            row = conn.execute("select model_id, version from models where name = ? order by version desc limit 1",
                               [name]).fetchone()
            version = int(row[1]) + 1 if row is not None else 1
            if champion is not None:
                lineage = lineage.model_copy(update={"parent_model_id": champion.model_id,
                                                     "parent_version": champion.version})
            elif row is not None:
                lineage = lineage.model_copy(update={"parent_model_id": row[0], "parent_version": int(row[1])})
            columns = ["version", *values, "lineage"]
            conn.execute(f"insert into models ({', '.join(columns)}) values ({', '.join('?' * len(columns))})",
                         [version, *values.values(), lineage.model_dump_json()])
        self._generation.bump()
        return version, lineage

    def delete(self, model_id: str) -> ModelInfo:
        """Delete a version: its row, its artifact and its cached objects; returns the entry deleted.

        Raises:
            ModelNotFoundError: unknown id.
        """
        row = self._row(model_id)
        with self._lock:
            self._db.conn.execute("delete from models where model_id = ?", [model_id])
            self._db.conn.commit()
            self._generation.bump()
            for key in [k for k in self._cache if k[0] == model_id]:
                del self._cache[key]
        (self.artifacts_dir / row["file"]).unlink(missing_ok=True)
        return _info(row)

    # -- reading -----------------------------------------------------------------------------

    def get(self, model_id: str) -> ModelInfo:
        """The entry for ``model_id``, or :class:`ModelNotFoundError` (404)."""
        return _info(self._row(model_id))

    def list(self, family: str | None = None) -> list[ModelInfo]:
        """Every entry, newest first, optionally of one family."""
        with self._lock:
            if family is None:
                rows = list(self._db["models"].rows_where(order_by="created_at desc"))
            else:
                rows = list(self._db["models"].rows_where("family = ?", [family], order_by="created_at desc"))
        return [_info(r) for r in rows]

    def versions(self, name: str) -> builtins.list[ModelInfo]:
        """Every version of ``name``, newest first (empty when the name is unknown)."""
        with self._lock:
            cursor = self._db.conn.execute("select * from models where name = ? order by version desc", [name])
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        return [_info(r) for r in rows]

    def names(self) -> builtins.list[str]:
        """Every model name stored, sorted."""
        with self._lock:
            return [r[0] for r in self._db.conn.execute("select distinct name from models order by name")]

    def count(self) -> int:
        with self._lock:
            return int(self._db["models"].count)

    def load(self, model_id: str, *, family: str | None = None) -> tuple[Any, ModelInfo]:
        """Verify and load an artifact; returns the object and its entry.

        Raises:
            ModelNotFoundError: unknown id, or an id of another family.
            ArtifactIntegrityError: the file is missing, changed since it was written, or
                holds a type outside the allow-list.
        """
        return self.rebuild(model_id, family=family, build=lambda obj, _info: obj, variant="")

    def rebuild(self, model_id: str, *, family: str | None, build: Callable[[Any, ModelInfo], T],
                variant: str = "model") -> tuple[T, ModelInfo]:
        """The model ``build(artifact, info)`` makes of a verified artifact, from the one cache.

        This is the one "rebuild the stored model or answer 409" path: a ``build`` that raises
        because the stored parts do not make a model (a ``KeyError``, ``TypeError``,
        ``ValueError``...) becomes :class:`ArtifactIntegrityError`.

        Args:
            model_id: The registry id.
            family: The family the model must belong to (None: any).
            build: Turns the deserialised artifact and its entry into the object to cache.
            variant: Tells apart objects built from one artifact (e.g. one per torch device).

        Raises:
            ModelNotFoundError: unknown id, or an id of another family.
            ArtifactIntegrityError: the file is missing, changed, refused, or cannot be rebuilt.
        """
        row = self._row(model_id)
        if family is not None and row["family"] != family:
            raise ModelNotFoundError(
                f"model '{model_id}' is a {row['family']} model, not a {family} model",
                details={"model_id": model_id, "family": row["family"]},
            )
        path = self.artifacts_dir / row["file"]
        try:
            st = os.stat(str(path))
        except FileNotFoundError as exc:
            raise ArtifactIntegrityError(f"artifact of model '{model_id}' is missing",
                                         details={"model_id": model_id}) from exc
        key = (model_id, variant)
        stamp = _Stamp(row["sha256"], st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == stamp and _same_entry(cached[1], row):
                self._cache.move_to_end(key)
                return cached[2], cached[1]
        info = _info(row)
        payload = path.read_bytes()
        actual = hashlib.sha256(payload).hexdigest()
        if actual != row["sha256"]:
            raise ArtifactIntegrityError(
                f"artifact of model '{model_id}' does not match its recorded SHA-256; refusing to load it",
                details={"model_id": model_id, "expected_sha256": row["sha256"], "actual_sha256": actual},
            )
        obj = _deserialise(payload, row["format"], row["family"], model_id)
        try:
            built = build(obj, info)
        except ArtifactIntegrityError:
            raise
        except _REBUILD_ERRORS as exc:
            raise ArtifactIntegrityError(
                f"{row['family']} model '{model_id}' cannot be rebuilt from its artifact: {exc}",
                details={"model_id": model_id},
            ) from exc
        with self._lock:
            self._cache[key] = (stamp, info, built)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return built, info

    def is_cached(self, model_id: str, variant: str = "model") -> bool:
        """Whether a rebuilt ``model_id`` (of this variant) is in the cache (checked again on use)."""
        with self._lock:
            return (model_id, variant) in self._cache

    def cached_count(self) -> int:
        """How many objects the cache holds now."""
        with self._lock:
            return len(self._cache)

    def _row(self, model_id: str) -> dict[str, Any]:
        """The row of ``model_id``, read again only when a process sharing the file has written since.

        The copy is shared by callers: read it, never change it.
        """
        generation = self._generation.read()  # taken before the read it tags
        with self._rows_lock:
            kept = self._rows.get(model_id)
            if kept is not None and kept[0] == generation:
                self._rows.move_to_end(model_id)
                return kept[1]
        # one plain indexed SELECT: sqlite-utils' rows_where runs four statements (about 5x slower)
        with self._lock:
            cursor = self._db.conn.execute("select * from models where model_id = ?", [model_id])
            found = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        if found is None:
            raise ModelNotFoundError(f"no model with id '{model_id}'", details={"model_id": model_id})
        row = dict(zip(names, found, strict=True))
        with self._rows_lock:
            self._rows[model_id] = (generation, row)
            self._rows.move_to_end(model_id)
            while len(self._rows) > _ROWS_KEPT:
                self._rows.popitem(last=False)
        return row


def _same_entry(info: ModelInfo, row: dict[str, Any]) -> bool:
    """Whether a cached entry still describes ``row`` (the stage of a version may change)."""
    return bool(info.sha256 == row["sha256"] and info.stage == row["stage"] and info.version == row["version"])


def _info(row: dict[str, Any]) -> ModelInfo:
    stored = row.get("lineage")
    return ModelInfo(
        model_id=row["model_id"], name=row["name"], version=row["version"], family=row["family"],
        method=row["method"], sha256=row["sha256"], created_at=datetime.fromisoformat(row["created_at"]),
        stage=row["stage"], metadata=json.loads(row["metadata"]),
        lineage=Lineage.model_validate_json(stored) if stored else Lineage(),
    )


def _lineage(family: str, metadata: dict[str, Any], trigger: str) -> Lineage:
    """What a new version records of where it came from (its parent is set when it is inserted)."""
    from quantcrew import __version__

    def text(*keys: str) -> str | None:
        for key in keys:
            value = metadata.get(key)
            if value is not None:
                return str(value)
        return None

    gate = metadata.get("gate")
    return Lineage(data_start=text("data_start", "train_start"), data_end=text("data_end", "train_end"),
                   data_hash=text("data_hash"), code_version=__version__, libraries=library_versions(family),
                   trigger=trigger, gate=gate if isinstance(gate, dict) else None)


def library_versions(family: str) -> dict[str, str]:
    """Installed versions of the libraries ``family``'s models depend on (none imported)."""
    return dict(_library_versions(LIBRARIES.get(family, ("numpy",))))


@cache
def _library_versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for name in names:
        try:
            found.append((name, importlib_metadata.version(name)))
        except importlib_metadata.PackageNotFoundError:
            continue
    return tuple(found)


def _serialise(obj: Any, fmt: ArtifactFormat) -> bytes:
    if fmt == "skops":
        import skops.io as sio

        return bytes(sio.dumps(obj))
    if fmt == "torch":
        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()
    if fmt == "json":
        return json.dumps(obj, sort_keys=True).encode()
    raise ValueError(f"unknown artifact format {fmt!r}; valid: {sorted(_SUFFIX)}")


def _skops_types(payload: bytes, model_id: str) -> set[str]:
    """Every type named anywhere in a skops file's schema (read as JSON, nothing executed).

    skops itself trusts many scikit-learn types by default; reading the schema ourselves
    makes the allow-list above the only authority.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            schema = json.loads(zf.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ArtifactIntegrityError(f"artifact of model '{model_id}' is not a valid skops file") from exc
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node and "__module__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _deserialise(payload: bytes, fmt: str, family: str, model_id: str) -> Any:
    if fmt == "skops":
        import skops.io as sio

        found = _skops_types(payload, model_id)
        allowed = set(TRUSTED_TYPES.get(family, ())) | _BASE_TYPES
        refused = sorted(found - allowed)
        if refused:
            raise ArtifactIntegrityError(
                f"artifact of model '{model_id}' holds types outside the {family} allow-list: {refused}",
                details={"model_id": model_id, "untrusted_types": refused},
            )
        return sio.loads(payload, trusted=sorted(found))
    if fmt == "torch":
        import torch

        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if fmt == "json":
        return json.loads(payload)
    raise ArtifactIntegrityError(f"artifact of model '{model_id}' has unknown format {fmt!r}")
