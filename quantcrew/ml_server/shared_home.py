"""Shared-store mode: several server processes on one home, and what stays correct.

``quantcrew-server --shared-home`` (``server.shared_home``; implied by ``--ray``) runs a server as one
replica of a deployment: several processes (Ray Serve replicas, or uvicorn processes behind one
balancer) serve one home, that is one registry file (``registry.db``) and one artifacts folder.

**The home's lock** (:mod:`quantcrew.config.server_lock`): each replica holds the lock shared and
leaves a claim naming its URL; an exclusive server and shared replicas never mix (either is refused,
naming the other), and the CLI finds a live replica to reuse.

**The stores** (every table is listed in :data:`SHARED_TABLES`): each process opens its own SQLite
connections to the one file, in WAL mode with a 30 s busy timeout. What holds with several processes:

* a store's write that depends on what it reads runs in ``BEGIN IMMEDIATE`` (one writer at a time
  across processes, taken before the read), or is one conditional statement, so nothing is lost or
  counted twice: a version number, a bandit update, a stage change, an outcome, an alert, a job's
  status; the tables are created in one such transaction too, so replicas may open a fresh file at
  the same instant;
* no cache hides another process's write: the registry reads its row on every call (its cache of
  rebuilt models is keyed by model id and checked against the artifact's SHA-256, size and time);
  a bandit policy kept in memory is reloaded when its row's version moved; deployments are read from
  the table on each request; the alert engine reads the open alerts again inside each write
  transaction and before each read;
* a job is owned by the process that runs it (:mod:`quantcrew.ml_server.jobs.owner`): a replica
  starting never marks a live replica's job ``interrupted``, only the jobs of one that is gone (a
  dead PID on this host at once, a heartbeat older than the lease otherwise); any replica reads any
  job from its row and cancels it through the row;
* artifacts are written once under a new name (a temporary file renamed into place) and checked
  against their SHA-256 when loaded, so a model fitted in one process loads in any other.

What stays per process: the cache of rebuilt models and the device; the Prometheus metrics (scrape
each replica); the prediction log's queue (records reach the table within ``monitor.log_flush_ms``;
a replica that is killed loses what it had queued); the live-quality cache (seconds); the alert
engine's pending timers and notification rate limit.

**One node only.** The lock is the kernel's ``flock`` and SQLite's WAL keeps its index in shared
memory beside the file: both need the processes on one machine and the home on a local filesystem
(not NFS or SMB). Writers take turns: the file serves one node's replicas, not a fleet.

**Several nodes** need a server-class database (PostgreSQL) behind the same store interfaces, and
the artifacts in shared object storage (they are write-once and addressed by id, so any shared store
works). The classes that talk SQL, each of which would need a PostgreSQL implementation, are the
keys of :data:`SHARED_TABLES`, plus :class:`~quantcrew.ml_server.services.monitor.quality.LiveQuality`
(reads only). What changes in each: ``BEGIN IMMEDIATE`` becomes row locks (``SELECT ... FOR
UPDATE``) or an advisory lock per key (the model name, the bandit regime, the deployment name, the
alert engine), SQLite's upserts and ``insert or ignore`` their ``ON CONFLICT`` forms, ``rowid``
orders explicit keys, and the column migrations ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``. Job
ownership already works across hosts through the heartbeat lease (with the hosts' clocks in sync);
the home's lock stays per node. None of this is implemented: every store speaks SQLite directly.
"""

from __future__ import annotations

__all__ = ["SHARED_TABLES"]

SHARED_TABLES: dict[str, tuple[str, ...]] = {
    "quantcrew.ml_server.registry.ModelRegistry": ("models",),
    "quantcrew.ml_server.jobs.store.JobStore": ("jobs",),
    "quantcrew.ml_server.services.bandit.store.BanditStore": ("bandits", "bandit_state", "bandit_decisions",
                                                              "bandit_replays"),
    "quantcrew.ml_server.services.deployment.DeploymentStore": ("deployments", "shadow_log", "deployment_events"),
    "quantcrew.ml_server.services.monitor.reference.ReferenceStore": ("drift_references", "drift_bar_quality"),
    "quantcrew.ml_server.services.monitor.predictions.PredictionLog": ("predictions", "prediction_models"),
    "quantcrew.ml_server.services.monitor.outcomes.OutcomeStore": ("outcomes",),
    "quantcrew.ml_server.services.monitor.alert_store.AlertStore": ("alerts", "alert_events", "client_events"),
}
"""Every store class that owns tables of the registry file, with its tables: what replicas share, and what a
server-class database would have to hold for several nodes."""
