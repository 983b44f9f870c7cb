"""The registry: versions, SHA-256 at write and load, allow-listed skops, safe torch loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from hmmlearn.hmm import GaussianHMM
from sklearn.linear_model import LinearRegression

from quantcrew.ml_server.errors import ArtifactIntegrityError, ModelNotFoundError
from quantcrew.ml_server.registry import ModelRegistry


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")


def _hmm() -> GaussianHMM:
    x = np.random.default_rng(0).normal(size=(200, 2))
    return GaussianHMM(2, covariance_type="full", n_iter=5, random_state=0).fit(x)


def test_save_records_sha256_and_increments_version(registry: ModelRegistry) -> None:
    a = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    b = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    c = registry.save(family="regime", name="other", method="hmm", obj=_hmm(), fmt="skops")
    assert (a.version, b.version, c.version) == (1, 2, 1)
    assert len(a.sha256) == 64
    assert [m.model_id for m in registry.list("regime")][:1] == [c.model_id]


def test_load_returns_equal_model(registry: ModelRegistry) -> None:
    hmm = _hmm()
    info = registry.save(family="regime", name="spx", method="hmm", obj=hmm, fmt="skops", metadata={"k": 1})
    loaded, got = registry.load(info.model_id, family="regime")
    np.testing.assert_allclose(loaded.transmat_, hmm.transmat_)
    assert got.metadata == {"k": 1}


def test_load_tampered_artifact_is_refused(registry: ModelRegistry) -> None:
    info = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    registry.load(info.model_id)  # cached now: tampering must still be seen
    path = next((registry.artifacts_dir).glob(f"{info.model_id}*"))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="SHA-256"):
        registry.load(info.model_id)


def test_load_missing_artifact_is_refused(registry: ModelRegistry) -> None:
    info = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    next(registry.artifacts_dir.glob(f"{info.model_id}*")).unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        registry.load(info.model_id)


def test_load_type_outside_allow_list_is_refused(registry: ModelRegistry) -> None:
    # A well-hashed artifact of a type the regime family does not trust is still refused.
    model = LinearRegression().fit(np.arange(10.0).reshape(-1, 1), np.arange(10.0))
    info = registry.save(family="regime", name="x", method="hmm", obj=model, fmt="skops")
    with pytest.raises(ArtifactIntegrityError, match="allow-list"):
        registry.load(info.model_id)
    # skops on its own trusts it by default: the allow-list in code is what refuses it
    assert "sklearn.linear_model._base.LinearRegression" not in sio.get_untrusted_types(data=sio.dumps(model))


def test_unknown_id_and_wrong_family_raise_not_found(registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError):
        registry.get("regime-000000000000")
    info = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    with pytest.raises(ModelNotFoundError, match="not a risk model"):
        registry.load(info.model_id, family="risk")


def test_torch_state_dict_round_trips_with_weights_only(registry: ModelRegistry) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(3, 2)
    info = registry.save(family="ensemble", name="lin", method="linear", obj=net.state_dict(), fmt="torch")
    state, _ = registry.load(info.model_id)
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.weight, net.weight)


def test_registry_survives_reopen(tmp_path: Path) -> None:
    first = ModelRegistry(tmp_path / "r.db", tmp_path / "a")
    info = first.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    first.close()
    second = ModelRegistry(tmp_path / "r.db", tmp_path / "a")
    assert second.get(info.model_id).sha256 == info.sha256
    second.load(info.model_id)


def test_rebuild_builds_once_and_serves_the_cached_object(registry: ModelRegistry) -> None:
    info = registry.save(family="regime", name="p", method="m", obj={"a": 1}, fmt="json")
    built: list[int] = []

    def build(obj: dict[str, int], _info: object) -> tuple[int, int]:
        built.append(1)
        return obj["a"], len(built)

    first, got = registry.rebuild(info.model_id, family="regime", build=build)
    again, _ = registry.rebuild(info.model_id, family="regime", build=build)
    assert first == again == (1, 1) and got.model_id == info.model_id
    assert registry.is_cached(info.model_id) and not registry.is_cached(info.model_id, "other")


@pytest.mark.parametrize("error", [KeyError("k"), TypeError("t"), ValueError("v"), IndexError("i"),
                                   AttributeError("a"), RuntimeError("r")])
def test_rebuild_that_raises_is_an_integrity_error(registry: ModelRegistry, error: Exception) -> None:
    info = registry.save(family="cluster", name="p", method="m", obj={"a": 1}, fmt="json")

    def build(_obj: object, _info: object) -> object:
        raise error

    with pytest.raises(ArtifactIntegrityError, match="cannot be rebuilt from its artifact") as err:
        registry.rebuild(info.model_id, family="cluster", build=build)
    assert err.value.details == {"model_id": info.model_id}
    assert not registry.is_cached(info.model_id)


def test_rebuild_after_the_file_changed_checks_it_again(registry: ModelRegistry) -> None:
    info = registry.save(family="regime", name="p", method="m", obj={"a": 1}, fmt="json")
    registry.rebuild(info.model_id, family="regime", build=lambda obj, _i: obj)
    path = next(registry.artifacts_dir.glob(f"{info.model_id}.*"))
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(ArtifactIntegrityError, match="SHA-256"):
        registry.rebuild(info.model_id, family="regime", build=lambda obj, _i: obj)


def test_cache_keeps_the_most_recently_used_up_to_its_size(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "r.db", tmp_path / "artifacts", cache_size=2)
    ids = [registry.save(family="regime", name=f"m{i}", method="m", obj={"i": i}, fmt="json").model_id
           for i in range(3)]
    for model_id in ids:
        registry.rebuild(model_id, family="regime", build=lambda obj, _i: obj)
    assert registry.cached_count() == 2 and not registry.is_cached(ids[0])
    registry.load(ids[1], family="regime")  # the raw artifact is a variant of its own, and evicts the oldest
    assert registry.is_cached(ids[1], "") and not registry.is_cached(ids[1]) and registry.is_cached(ids[2])
    with pytest.raises(ValueError, match="cache_size"):
        ModelRegistry(tmp_path / "r.db", tmp_path / "artifacts", cache_size=0)


def test_concurrent_saves_of_one_name_from_two_registries_never_collide(tmp_path: Path) -> None:
    """Two servers on one home (two connections) numbering versions of one name at the same time."""
    import threading

    first = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    second = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    errors: list[BaseException] = []

    def save_many(registry: ModelRegistry) -> None:
        try:
            for _ in range(25):
                registry.save(family="regime", name="shared", method="rules", obj={"x": 1}, fmt="json")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=save_many, args=(r,)) for r in (first, second, first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = sorted(m.version for m in first.list() if m.name == "shared")
    assert versions == list(range(1, 101))
    first.close()
    second.close()


def test_a_registry_made_by_the_previous_version_opens_and_its_ungated_policies_are_not_deployed(
        tmp_path: Path) -> None:
    """A home from before quality gates: the same table, models without a ``gate`` verdict. It opens as is,
    and an RL policy from it is not used for a symbol until it is retrained and judged (listed as gated,
    with no verdict)."""
    import json
    import sqlite3

    from quantcrew.ml_server.services.deployment import DeploymentStore
    from quantcrew.ml_server.services.rl.service import select_deployed

    db = tmp_path / "registry.db"
    with sqlite3.connect(db) as conn:  # the schema as the previous version wrote it
        conn.execute("CREATE TABLE [models] ([model_id] TEXT PRIMARY KEY, [name] TEXT, [version] INTEGER, "
                     "[family] TEXT, [method] TEXT, [format] TEXT, [sha256] TEXT, [file] TEXT, [created_at] TEXT, "
                     "[stage] TEXT, [metadata] TEXT)")
        conn.execute("CREATE UNIQUE INDEX [idx_models_name_version] ON [models] ([name], [version])")
        conn.execute("INSERT INTO models VALUES ('rl-0123456789ab', 'rl-balanced-ppo', 1, 'rl', 'ppo', 'torch', "
                     "?, 'rl-0123456789ab.pt', '2026-11-01T00:00:00+00:00', 'none', ?)",
                     ("0" * 64, json.dumps({"agent": "balanced", "algorithm": "ppo", "symbol": "SP500"})))
    registry = ModelRegistry(db, tmp_path / "artifacts")
    [old] = registry.list(family="rl")
    assert old.model_id == "rl-0123456789ab" and old.version == 1 and "gate" not in old.metadata
    info = registry.save(family="regime", name="rl-balanced-ppo", method="hmm", obj=_hmm(), fmt="skops")
    assert info.version == 2  # new writes go on in the old file, versions after the old ones
    deployments = DeploymentStore(tmp_path / "deployments.db")
    ids, [gated] = select_deployed(registry, deployments, agents=["balanced"], algorithm=None, symbol="sp500")
    assert ids == [] and gated.model_id == "rl-0123456789ab" and gated.gate is None
    assert "no gate verdict recorded" in gated.reason


# -- lineage ---------------------------------------------------------------------------------------


def test_each_version_records_its_lineage_and_its_parent_is_the_version_before(registry: ModelRegistry) -> None:
    from importlib.metadata import version

    from quantcrew import __version__

    meta = {"data_hash": "ab" * 32, "data_start": "2024-01-02", "data_end": "2024-06-28",
            "gate": {"gate": "ensemble", "passed": True}}
    first = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops", metadata=meta)
    second = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops",
                           metadata={"train_start": "2024-02-01", "train_end": "2024-07-31"}, trigger="drift")
    assert first.lineage.parent_model_id is None and first.lineage.parent_version is None
    assert (first.lineage.data_start, first.lineage.data_end, first.lineage.data_hash) == (
        "2024-01-02", "2024-06-28", "ab" * 32)
    assert first.lineage.code_version == __version__ and first.lineage.trigger == "manual"
    assert first.lineage.libraries == {name: version(name) for name in ("numpy", "scikit-learn", "hmmlearn")}
    assert first.lineage.gate == {"gate": "ensemble", "passed": True}
    assert (second.lineage.parent_model_id, second.lineage.parent_version) == (first.model_id, 1)
    assert (second.lineage.data_start, second.lineage.data_end, second.lineage.trigger) == (
        "2024-02-01", "2024-07-31", "drift")
    assert registry.get(second.model_id).lineage == second.lineage  # as stored, not only as returned


def test_the_parent_is_the_names_full_deployment_when_the_server_names_one(registry: ModelRegistry) -> None:
    v1 = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    registry.parent_of = lambda name: v1.model_id if name == "spx" else None
    v3 = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    assert (v3.lineage.parent_model_id, v3.lineage.parent_version) == (v1.model_id, 1)


def test_rows_written_before_lineage_read_with_an_empty_one(tmp_path: Path) -> None:
    import json
    import sqlite3

    db = tmp_path / "registry.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE [models] ([model_id] TEXT PRIMARY KEY, [name] TEXT, [version] INTEGER, "
                     "[family] TEXT, [method] TEXT, [format] TEXT, [sha256] TEXT, [file] TEXT, [created_at] TEXT, "
                     "[stage] TEXT, [metadata] TEXT)")
        conn.execute("INSERT INTO models VALUES ('regime-0123456789ab', 'spx', 1, 'regime', 'hmm', 'skops', ?, "
                     "'regime-0123456789ab.skops', '2026-11-01T00:00:00+00:00', 'full', ?)",
                     ("0" * 64, json.dumps({"data_hash": "x"})))
    registry = ModelRegistry(db, tmp_path / "artifacts")
    old = registry.get("regime-0123456789ab")
    assert old.lineage.parent_model_id is None and old.lineage.trigger is None and old.lineage.libraries == {}
    new = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    assert new.lineage.parent_model_id == "regime-0123456789ab"


def test_delete_removes_the_row_the_artifact_and_the_cached_copy(registry: ModelRegistry) -> None:
    info = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    registry.load(info.model_id)
    registry.delete(info.model_id)
    assert not list(registry.artifacts_dir.glob(f"{info.model_id}*"))
    assert registry.cached_count() == 0 and registry.versions("spx") == []
    with pytest.raises(ModelNotFoundError):
        registry.get(info.model_id)


def test_a_failing_after_save_callback_never_fails_the_save(registry: ModelRegistry) -> None:
    def boom(_info: object) -> None:
        raise RuntimeError("cleanup failed")

    registry.after_save.append(boom)
    info = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    assert registry.get(info.model_id).version == 1


def test_a_cached_row_is_served_without_a_statement(registry: ModelRegistry) -> None:
    info = registry.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    registry.rebuild(info.model_id, family="regime", build=lambda obj, _info: obj)
    statements: list[str] = []
    registry._db.conn.set_trace_callback(statements.append)
    registry.rebuild(info.model_id, family="regime", build=lambda obj, _info: obj)
    registry.get(info.model_id)
    assert statements == []


def test_a_row_deleted_by_another_registry_on_the_file_is_not_served_from_the_cache(tmp_path: Path) -> None:
    # two registries on one file stand for two replicas on one home: neither sees the other's cache
    here = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    there = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    kept = here.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    gone = here.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    assert here.get(gone.model_id).version == 2  # read and kept
    there.delete(gone.model_id)
    with pytest.raises(ModelNotFoundError):
        here.get(gone.model_id)
    assert here.get(kept.model_id).model_id == kept.model_id
    here.close()
    there.close()


def test_a_row_written_by_another_registry_is_read_fresh_after_the_write(tmp_path: Path) -> None:
    here = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    there = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    first = here.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    here.get(first.model_id)
    statements: list[str] = []
    here._db.conn.set_trace_callback(statements.append)
    there.save(family="regime", name="spx", method="hmm", obj=_hmm(), fmt="skops")
    assert here.get(first.model_id).version == 1
    assert any("select" in s.lower() for s in statements)  # the other's write made the copy stale
    here.close()
    there.close()
