"""One settings tree for the whole project, passed explicitly, failing fast.

Sources, highest first: keyword overrides, environment (``QUANTCREW_`` prefix, ``__``
between nested names, e.g. ``QUANTCREW_SERVER__PORT=9000``), a ``.env`` file, an optional
YAML file (``QUANTCREW_CONFIG_FILE`` or ``load_settings(config_file=...)``), secret files, then the
defaults below. Invalid values stop start-up with a message naming the setting.

Secret files: with ``QUANTCREW_SECRETS_DIR`` set (a container's ``/run/secrets``), each file in that
folder named like a variable, e.g. ``quantcrew_server__api_key``, sets that setting to its stripped
content, so that a key need not travel in the environment.

This is the only module that reads the process environment.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = [
    "apply_crewai_environment",
    "ClientSettings",
    "CrewSettings",
    "DECISION_TYPES",
    "DataSettings",
    "InferenceSettings",
    "MonitorSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "get_settings",
    "load_settings",
]

CONFIG_FILE_ENV = "QUANTCREW_CONFIG_FILE"
SECRETS_DIR_ENV = "QUANTCREW_SECRETS_DIR"


class SettingsError(ValueError):
    """Settings that cannot be used; the message names each bad setting."""


class _Section(BaseModel):
    """A settings section: unknown keys are typos, refused at start-up."""

    model_config = ConfigDict(extra="forbid")


def _default_home() -> Path:
    return Path.home() / ".quantcrew"


class ServerSettings(_Section):
    """The ML server: where it binds, what it accepts, where artifacts live."""

    host: str = Field(default="127.0.0.1", description="Bind address; loopback unless told otherwise.")
    port: int = Field(default=8765, ge=0, le=65535)
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key required on /v1 (and, with protect_ops, on /ready, /metrics and the docs) when set; "
                    "a blank key is refused at start-up.",
    )
    protect_ops: bool = Field(
        default=True,
        description="With api_key set, /ready, /metrics, /docs and /openapi.json need the key too; false leaves "
                    "them open (for a probe or scraper that cannot send one). /health always stays open.",
    )
    insecure: bool = Field(
        default=False,
        description="Let the server bind a non-loopback host without api_key (anyone who reaches the port can "
                    "use it); the server's --insecure flag sets it too.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="Larger bodies get 413.")
    max_rows: int = Field(default=100_000, gt=0, description="Most bars (rows) in one request.")
    max_columns: int = Field(default=512, gt=0, description="Most columns (series) in one matrix-shaped request.")
    min_rows: int = Field(default=30, ge=3, description="Fewest bars a fit accepts.")
    artifacts_dir: Path | None = Field(default=None, description="Model artifacts; default <home>/artifacts.")
    registry_db: Path | None = Field(default=None, description="Registry SQLite file; default <home>/registry.db.")
    workers: int = Field(default=1, ge=1, le=64)
    event_loop: Literal["asyncio", "uvloop"] = Field(
        default="asyncio",
        description="The event loop uvicorn serves on. With the loop saturated, uvloop answered 64 connections "
                    "opened together one after another, 40 ms apart (the last after 1.2-1.8 s); asyncio's loop "
                    "answered them all within 0.2 s at the same throughput.",
    )
    compute_threads: int = Field(
        default=1, ge=0, le=256,
        description="BLAS/OpenMP threads per computation (0: the libraries' defaults). Requests already run "
                    "concurrently in worker threads; letting each fit spawn a thread per core oversubscribes the "
                    "CPU (scikit-learn fits measured 10-25x slower under load).",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    job_workers: int = Field(default=1, ge=1, le=16, description="Jobs (RL training) run at once; more wait queued.")
    preload: bool = Field(
        default=True,
        description="The server process imports its torch / stable-baselines3 model code in a background thread "
                    "at start-up, so the first RL, ensemble or execution request does not pay for it.")
    model_cache_size: int = Field(
        default=32, ge=1, le=4096,
        description="Rebuilt models (HMMs, estimators, torch nets per device, SB3 policies) the registry keeps "
                    "in memory (least recently used first out).",
    )
    max_timesteps: int = Field(default=2_000_000, gt=0, description="Most timesteps one RL training job may ask for.")
    shared_home: bool = Field(
        default=False,
        description="Several server processes (the replicas of one deployment) share this home: each takes the "
                    "home's lock shared instead of exclusive, owns the jobs it starts, and marks interrupted only "
                    "jobs whose owning process is gone. An exclusive server and shared replicas never mix.",
    )
    mcp: bool = Field(default=True, description="Serve the families as MCP tools at /mcp (streamable HTTP).")
    max_abs_reward: float = Field(
        default=1e6, gt=0.0, le=1e100,
        description="Largest |reward| /v1/bandit/reward accepts (a larger one is a 422 naming this bound). "
                    "Far above any realised return used as a reward, far below where a policy's sums of "
                    "squares would overflow; at most 1e100, the bound every policy is built for.",
    )

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, v: SecretStr | None) -> SecretStr | None:
        # a blank key must not quietly turn auth off: unset the setting to run without a key
        if v is not None and not v.get_secret_value().strip():
            raise ValueError("is blank; set a non-empty key, or unset it to run without one")
        return v


DECISION_TYPES: tuple[str, ...] = ("entry", "exit", "rebalance")


def _default_samples() -> dict[str, int]:
    return {"entry": 50, "exit": 30, "rebalance": 20}


class InferenceSettings(_Section):
    """Torch inference on the server: dynamic batching and Monte Carlo dropout samples."""

    batching: bool = Field(
        default=True,
        description="Gather concurrent ensemble / execution requests into one forward pass on the device.",
    )
    max_batch_size: int = Field(default=64, ge=1, le=4096, description="Most rows in one batched forward pass.")
    max_wait_ms: float = Field(
        default=2.0, ge=0.0, le=1000.0,
        description="Longest a request waits for others to join its batch, counted from the first one queued.",
    )
    max_request_batch: int = Field(
        default=256, ge=1, le=100_000, description="Most windows or decisions one request may carry.",
    )
    mc_samples: int = Field(default=30, ge=1, le=10_000, description="Default MC-dropout samples for the ensemble.")
    execution_samples: dict[str, int] = Field(
        default_factory=_default_samples,
        description="MC-dropout samples per execution decision type (entry, exit, rebalance).",
    )
    max_samples: int = Field(default=1000, ge=1, le=100_000, description="Most MC-dropout samples one request may ask.")

    @field_validator("execution_samples")
    @classmethod
    def _known_decisions(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(v) - set(DECISION_TYPES))
        if unknown:
            raise ValueError(f"unknown decision types {unknown}; valid: {list(DECISION_TYPES)}")
        bad = {k: n for k, n in v.items() if n <= 0}
        if bad:
            raise ValueError(f"samples must be > 0, got {bad}")
        return {**_default_samples(), **v}


class ClientSettings(_Section):
    """How tools reach the ML server, or a list of servers to fail over between.

    ``url`` and ``urls`` may both be set: ``url`` is then the primary, followed by ``urls`` in their order (a URL
    listed twice counts once). When only ``urls`` is set, ``url`` is filled with its first entry, so that whatever
    asks "is a server named?" (``url is None`` starts a local one in the CLI) reads the primary.
    """

    url: str | None = Field(default=None, description="Base URL; unset means the CLI starts a local server.")
    urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Servers in order of preference, for failover (the first healthy one answers); in the "
                    "environment a JSON list or a comma-separated string.",
    )
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10, description="Retries for idempotent calls only.")
    backoff_s: float = Field(default=0.1, ge=0)
    breaker_failures: int = Field(default=3, ge=1, description="Consecutive failures that open the breaker.")
    breaker_reset_s: float = Field(default=30.0, gt=0, description="Seconds before an open breaker lets one call try.")
    max_connections: int = Field(default=32, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        return _checked_url(v)

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, v: Any) -> Any:
        """The environment's string: a JSON list (``["http://a:8765", ...]``) or comma-separated URLs."""
        if not isinstance(v, str):
            return v
        text = v.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not a JSON list of URLs ({exc.args[0]}): {text!r}") from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, v: list[str]) -> list[str]:
        urls: list[str] = []
        for i, url in enumerate(v):
            try:
                checked = _checked_url(url)
            except ValueError as exc:
                raise ValueError(f"entry {i}: {exc.args[0]}") from None
            if checked not in urls:
                urls.append(checked)
        return urls

    @model_validator(mode="after")
    def _primary(self) -> ClientSettings:
        if self.url is None and self.urls:
            self.url = self.urls[0]
        return self

    @property
    def server_urls(self) -> list[str]:
        """Every server to call, primary first: ``url``, then ``urls`` (each once); empty when neither is set."""
        urls = [self.url] if self.url is not None else []
        return urls + [url for url in self.urls if url not in urls]


def _checked_url(value: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL without its trailing slash; ValueError naming what is wrong."""
    url = value.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port raises on a bad one
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc.args[0]}): {value!r}") from None
    if not parts.hostname:
        raise ValueError(f"names no host: {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or fragment: {value!r}")
    return url


class DataSettings(_Section):
    """Where market data comes from and how strictly it is checked."""

    data_dir: Path | None = Field(
        default=None,
        description="Folder of <SYMBOL>.csv / .parquet files, read before the bundled series (default <home>/data).")
    max_gap_days: int = Field(default=7, ge=1, description="Calendar-day gap between bars reported as a gap.")


class CrewSettings(_Section):
    """The crew: its LLM, its runs store."""

    llm: str = Field(default="planner", description="'planner' (offline, deterministic) or a CrewAI LLM string.")
    llm_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL for the LLM.")
    llm_api_key: SecretStr | None = None
    telemetry: bool = Field(default=False, description="CrewAI telemetry; off unless asked for.")
    runs_db: Path | None = Field(default=None, description="Runs store; default <home>/runs.db.")
    verbose: bool = False
    process: Literal["sequential", "hierarchical"] = Field(
        default="sequential", description="Full crew: tasks in order, or the meta-orchestrator managing them.")
    max_llm_calls: int | None = Field(default=60, ge=1, description="Most LLM calls per run (unset: no limit).")
    max_seconds: float | None = Field(default=600.0, gt=0, description="Most wall-clock seconds per run.")


class RiskLimitsSettings(_Section):
    """Risk limits of every decision (quantcrew.crew.decision.RiskLimits)."""

    max_position: float = Field(default=1.0, gt=0.0, le=10.0,
                                description="Largest absolute target per symbol, as a fraction of capital.")
    max_gross: float = Field(default=1.0, gt=0.0, le=10.0,
                             description="Largest sum of absolute targets over all symbols.")
    max_var: float = Field(default=0.02, gt=0.0, le=1.0,
                           description="Largest one-day 95% VaR of the book, as a fraction of capital.")
    drawdown_stop: float = Field(default=0.20, gt=0.0, le=1.0,
                                 description="Drawdown from the peak at which every position is closed.")


class MonitorSettings(_Section):
    """Watching deployed models: the prediction log, live quality, drift, alerts, retention of versions."""

    prediction_log: bool = Field(default=True, description="Log every inference (model, inputs' summary, answer).")
    log_flush_ms: float = Field(default=200.0, gt=0.0, le=60_000.0,
                                description="Longest a logged prediction waits in memory before it is written.")
    log_queue_max: int = Field(default=100_000, ge=100, le=10_000_000,
                               description="Most predictions waiting to be written; past it new ones are dropped "
                                           "and counted, never blocking a reply.")
    log_retention_rows: int = Field(default=1_000_000, ge=1_000, description="Most predictions kept (oldest go first).")
    log_retention_days: float = Field(default=90.0, gt=0.0, description="Predictions older than this are deleted.")
    quality_window: int = Field(default=250, ge=10, le=100_000,
                                description="Most recent settled predictions one live-quality window holds.")
    min_samples: int = Field(default=30, ge=1, description="Fewest samples before a quality or drift figure is judged.")
    drift_window: int = Field(default=500, ge=10, le=100_000, description="Recent predictions a drift report compares.")
    drift_bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of a stored reference (PSI).")
    reference_rows: int = Field(default=2_000, ge=50, le=100_000,
                                description="Most training rows sampled into a model's drift reference.")
    drift_psi: float = Field(default=0.25, gt=0.0,
                             description="PSI above which a feature (or the output) may be called drifted.")
    drift_alpha: float = Field(default=0.01, gt=0.0, lt=1.0,
                               description="KS test level, Bonferroni-divided by the number of series compared.")
    alert_rules: Path | None = Field(default=None,
                                     description="Alert rules YAML; default the rules shipped with the package.")
    alert_interval_s: float = Field(default=30.0, gt=0.0, description="Seconds between evaluations of the rules.")
    webhook_url: str | None = Field(default=None, description="Alerts are POSTed here as JSON when set.")
    webhook_retries: int = Field(default=5, ge=0, le=20, description="Delivery attempts after the first.")
    webhook_backoff_s: float = Field(default=0.5, ge=0.0, description="First retry delay; doubles each attempt.")
    webhook_timeout_s: float = Field(default=5.0, gt=0.0)
    alert_notify_per_minute: int = Field(default=30, ge=1, le=10_000,
                                         description="Most alert notifications a minute over all alerts; the "
                                                     "rest are recorded as suppressed.")
    keep_versions: int = Field(default=10, ge=1,
                               description="Versions kept per model name; older ones are deleted unless deployed.")


class RaySettings(_Section):
    """Scale-out on Ray Serve (``quantcrew-server --ray``; the optional ``ray`` extra)."""

    replicas: int = Field(default=2, ge=1, le=256, description="Replicas of the server (fixed when no autoscaling).")
    min_replicas: int | None = Field(default=None, ge=0, le=256,
                                     description="Autoscaling lower bound; set with max_replicas to autoscale.")
    max_replicas: int | None = Field(default=None, ge=1, le=256, description="Autoscaling upper bound.")
    target_ongoing_requests: float = Field(default=8.0, gt=0.0,
                                           description="Autoscaling: requests in flight per replica to aim for.")
    num_gpus: float | None = Field(default=None, ge=0.0, le=8.0,
                                   description="GPUs per replica; unset: the cluster's GPUs shared out over the "
                                               "replicas, at most 1 each (0 without a GPU).")
    num_cpus: float = Field(default=1.0, gt=0.0, le=256.0, description="CPUs Ray reserves per replica.")
    address: str | None = Field(default=None, description="A running Ray cluster to join; unset starts a local one.")
    max_ongoing_requests: int = Field(
        default=64, ge=1, le=10_000,
        description="Requests one replica works on at once; more wait in Serve's queue (Ray's own default, 5, "
                    "would cap the ensemble batcher's batches at 5 rows).")
    fan_out: bool = Field(
        default=True,
        description="Run a training job's independent pieces (RL runs, ensemble walk-forward folds) as Ray tasks "
                    "when the server runs on Ray and the cluster has ray.task_num_cpus CPUs free; else in turn.")
    task_num_cpus: float = Field(default=1.0, gt=0.0, le=64.0,
                                 description="CPUs each training task reserves (and its compute threads).")
    graceful_shutdown_s: float = Field(default=10.0, ge=0.0, le=600.0,
                                       description="Seconds a stopping replica has to finish its requests.")
    dashboard: bool = Field(default=False,
                            description="Start Ray's dashboard with a local cluster (behind Ray's token auth).")
    token_auth: bool = Field(
        default=True,
        description="Ray's token auth (RAY_AUTH_MODE=token) for the cluster started or joined: its processes, "
                    "drivers and dashboard admit only holders of the token. False: RAY_AUTH_MODE=disabled.")
    auth_token: SecretStr | None = Field(
        default=None,
        description="The cluster's token (as RAY_AUTH_TOKEN); unset: Ray's own sources (RAY_AUTH_TOKEN, "
                    "RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), and a local cluster generates one there.")


class Settings(BaseSettings):
    """The root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="QUANTCREW_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
    )

    home: Path = Field(default_factory=_default_home, description="Default folder for registry, artifacts, runs.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    client: ClientSettings = Field(default_factory=ClientSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    crew: CrewSettings = Field(default_factory=CrewSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    limits: RiskLimitsSettings = Field(default_factory=RiskLimitsSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    ray: RaySettings = Field(default_factory=RaySettings)

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        home = self.home.expanduser()
        self.home = home
        if self.server.artifacts_dir is None:
            self.server.artifacts_dir = home / "artifacts"
        if self.server.registry_db is None:
            self.server.registry_db = home / "registry.db"
        if self.crew.runs_db is None:
            self.crew.runs_db = home / "runs.db"
        if self.data.data_dir is None:
            self.data.data_dir = home / "data"  # where `quantcrew data add` writes; read before the bundled series
        if self.client.api_key is None and self.server.api_key is not None:
            self.client.api_key = self.server.api_key
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = _yaml_file_var.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        # files named like the variables (quantcrew_server__api_key), in the folder load_settings was given
        sources.append(NestedSecretsSettingsSource(file_secret_settings, secrets_dir=_secrets_dir_var["path"]))
        return tuple(sources)

    @property
    def artifacts_dir(self) -> Path:
        assert self.server.artifacts_dir is not None  # filled by _fill_paths
        return self.server.artifacts_dir

    @property
    def registry_db(self) -> Path:
        assert self.server.registry_db is not None
        return self.server.registry_db

    @property
    def runs_db(self) -> Path:
        assert self.crew.runs_db is not None
        return self.crew.runs_db


# The YAML path is chosen per load, not per class; pydantic-settings builds sources in a
# classmethod, so the chosen path is handed over through this small holder.
_yaml_file_var: dict[str, Path | None] = {"path": None}
_secrets_dir_var: dict[str, Path | None] = {"path": None}  # the same, for the secrets folder


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from overrides, environment, .env, an optional YAML file and secret files.

    Raises:
        SettingsError: a setting is invalid, or the YAML file or the secrets folder is missing; the message
            lists every bad setting by its dotted name and env variable.
    """
    path = config_file if config_file is not None else os.environ.get(CONFIG_FILE_ENV)
    yaml_path = Path(path).expanduser() if path else None
    if yaml_path is not None and not yaml_path.is_file():
        raise SettingsError(f"config file not found: {yaml_path} (from {CONFIG_FILE_ENV} or --config)")
    secrets = os.environ.get(SECRETS_DIR_ENV)
    secrets_dir = Path(secrets).expanduser() if secrets else None
    if secrets_dir is not None and not secrets_dir.is_dir():
        raise SettingsError(f"secrets folder not found: {secrets_dir} (from {SECRETS_DIR_ENV})")
    _yaml_file_var["path"] = yaml_path
    _secrets_dir_var["path"] = secrets_dir
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from exc
    finally:
        _yaml_file_var["path"] = None
        _secrets_dir_var["path"] = None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for err in exc.errors():
        dotted = ".".join(str(p) for p in err["loc"])
        env = "QUANTCREW_" + "__".join(str(p) for p in err["loc"]).upper()
        lines.append(f"  {dotted} ({env}): {err['msg']}")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once on first use (never at import)."""
    return load_settings()


def apply_crewai_environment(settings: Settings) -> None:
    """Turn CrewAI's telemetry and tracing off unless ``crew.telemetry`` is true.

    CrewAI reads these variables itself when a crew runs, so they are set in the
    process environment; a value the user exported explicitly is left alone.
    """
    if settings.crew.telemetry:
        return
    for name, value in (("CREWAI_DISABLE_TELEMETRY", "true"), ("CREWAI_DISABLE_TRACKING", "true"),
                        ("CREWAI_TRACING_ENABLED", "false"), ("OTEL_SDK_DISABLED", "true"),
                        ("CREWAI_DISABLE_VERSION_CHECK", "true")):
        os.environ.setdefault(name, value)
