"""Configuration from the environment (12-factor), read once and passed into factories.

Nothing here is evaluated at import time: call :func:`get_settings` (cached) where a process starts
and hand the values down. ``DATABASE_URL`` and ``REDIS_URL`` keep their conventional names; every
other knob is ``HBW_*``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.cpus import available_cpus

#: The value of DATABASE_URL / REDIS_URL that asks for the embedded server explicitly.
EMBEDDED = "embedded"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HBW_", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "HBW_DATABASE_URL")
    )
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "HBW_REDIS_URL"))
    #: Redis Sentinel (docs/scaling.md): the sentinels' host:port, comma-separated. The master is
    #: REDIS_MASTER_NAME, else REDIS_URL's host (redis://mymaster/0, as Sidekiq reads it); REDIS_URL's
    #: user, password and database apply to the master. Every process follows failovers by itself.
    redis_sentinels: str = Field(
        default="", validation_alias=AliasChoices("REDIS_SENTINELS", "HBW_REDIS_SENTINELS")
    )
    redis_master_name: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_MASTER_NAME", "HBW_REDIS_MASTER_NAME")
    )
    #: Replicas that must hold an enqueue before it counts as done (Redis WAIT), so a failover
    #: cannot lose an acknowledged one; when they do not answer within the timeout, the enqueue
    #: fails as if Redis were down (`hbw serve` answers 503 and clients resend). 0: do not wait.
    redis_wait_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout_ms: int = Field(default=500, ge=1)
    #: Where `hbw serve` reads users' data (a streaming replica); unset: DATABASE_URL.
    database_read_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_READ_URL", "HBW_DATABASE_READ_URL")
    )

    #: Cells (worker.cells, docs/cells.md): a TOML file naming each cell's servers; `hbw serve`
    #: then serves every cell, each request on its key's user's cell. Unset: one deployment.
    cells: Path | None = None

    #: Heartbeats per message on the ingest queue.
    batch_size: int = Field(default=1000, ge=1, le=50_000)
    #: Keystroke timeout of docs/spec.md section 3; changing it needs a backfill.
    timeout_seconds: float = Field(default=900, gt=0, le=86_400)
    #: Prefix of every Redis key, so several deployments (or test runs) can share a Redis.
    redis_namespace: str = Field(default="hbw", min_length=1)

    #: Worker processes (default: the CPUs the container may use, worker.cpus) and threads per
    #: process for `hbw worker` (Procfile default).
    processes: int = Field(default_factory=available_cpus, ge=1)
    threads: int = Field(default=4, ge=1, le=256)
    #: Seconds a starting worker waits for PostgreSQL and Redis to answer before giving up.
    startup_timeout: float = Field(default=60, ge=0)
    #: Seconds a stopping worker gives in-flight messages before requeueing the rest.
    shutdown_timeout: float = Field(default=25, ge=0)

    #: Retries of transient failures, with exponential backoff between the two bounds.
    max_retries: int = Field(default=20, ge=0)
    min_backoff_ms: int = Field(default=1_000, ge=10)
    max_backoff_ms: int = Field(default=300_000, ge=10)
    #: How long dead-lettered messages are kept in Redis.
    dead_letter_ttl_days: float = Field(default=7, gt=0)
    #: A worker that has not been heard from for this long is dead; its messages are requeued.
    worker_heartbeat_timeout_ms: int = Field(default=15_000, ge=1_000)
    #: How often each process rescues dead workers' messages (Dramatiq only does it by chance).
    maintenance_interval_ms: int = Field(default=5_000, ge=100)

    #: The orphan sweeper (worker.runtime.outbox): how often each worker process looks, and when a pending
    #: recomputation counts as orphaned (never sent for `min_age`, or sent `stale_after` ago).
    sweep_interval_s: float = Field(default=30, gt=0)
    sweep_min_age_s: float = Field(default=60, ge=0)
    sweep_stale_after_s: float = Field(default=900, ge=0)
    #: Each worker process applying deltas vacuums an outbox table (derived_deltas, stale_days)
    #: once it has this many dead rows, checking every `interval` seconds (worker.runtime.vacuum).
    outbox_vacuum_interval_s: float = Field(default=5, gt=0)
    outbox_vacuum_dead_rows: int = Field(default=5_000, ge=1)
    #: User-days per derived-job message.
    recompute_keys_per_message: int = Field(default=200, ge=1, le=10_000)
    #: User-days a reprocess or backfill run hands to the workers per step (one short transaction).
    run_chunk_size: int = Field(default=1000, ge=1, le=100_000)
    #: Derived jobs run this long after the first store that needs them; stores of the same
    #: user-day meanwhile ride along instead of each triggering a recomputation (debounce).
    recompute_delay_ms: int = Field(default=2_000, ge=0, le=600_000)
    #: A store takes the other ready store messages along, up to HBW_BATCH_SIZE heartbeats, and
    #: waits up to this long for more when there are few (live traffic: many small messages share
    #: one transaction; a backlog never waits).
    store_linger_ms: int = Field(default=500, ge=0, le=10_000)

    #: The embedded default (used when DATABASE_URL / REDIS_URL are not set): where the servers
    #: keep their data (default: worker.embedded.default_data_dir()), and their ports.
    data_dir: Path | None = None
    embedded_pg_port: int = Field(default=54329, ge=1, le=65535)
    embedded_redis_port: int = Field(default=63799, ge=1, le=65535)

    #: Prometheus /metrics port of `hbw worker` (0: no endpoint). Two `hbw worker` commands on one
    #: host need different ports. It listens on `metrics_host`: this host only unless widened.
    metrics_port: int = Field(default=9191, ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", min_length=1)
    #: Prometheus /metrics port of `hbw serve` (0: no endpoint), on `metrics_host` too: requests by
    #: route and status, latency, enqueue group sizes (worker.http.metrics).
    serve_metrics_port: int = Field(default=9192, ge=0, le=65535)
    #: One metrics server reports the queue gauges, for this long after its last scrape (longer
    #: than Prometheus's scrape interval, or the reporting moves at each scrape).
    metrics_lease_s: float = Field(default=60, gt=0)
    #: `hbw status` exits 1 when a queue's oldest ready message is older than this.
    max_lag_seconds: float = Field(default=300, gt=0)

    #: `hbw serve` (WakaTime-compatible HTTP ingest): request limits, and how long a key lookup is
    #: cached per process (a revoked key keeps working for at most that long).
    http_max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    http_max_heartbeats: int = Field(default=1000, ge=1)
    http_rate_limit_per_minute: int = Field(default=600, ge=0)  # per key; 0: no limit
    http_key_cache_seconds: float = Field(default=60, ge=0)
    #: Connection limits (worker.http.limits): the request line and headers, and how long reading
    #: them, then the body, may take.
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    http_header_timeout_seconds: float = Field(default=10, gt=0)
    http_body_timeout_seconds: float = Field(default=30, gt=0)
    #: Failed authentications per client address per minute, then 429 (worker.http.ratelimit; 0: no limit).
    http_auth_failures_per_minute: int = Field(default=30, ge=0)
    #: Group commit (worker.http.groups): heartbeats of requests arriving within this many ms of a
    #: group's first one (up to HBW_BATCH_SIZE of them) go to Redis as one message. 0: one per request.
    http_group_window_ms: float = Field(default=5, ge=0, le=1_000)
    #: Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the
    #: client. Empty: the TCP peer is the client and X-Forwarded-For is ignored.
    http_trusted_proxies: str = ""

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sentinel_master(self) -> Settings:
        """With sentinels and no REDIS_URL, the master's URL is made from its name."""
        if self.redis_sentinels and not self.redis_url:
            if not self.redis_master_name:
                raise ValueError("REDIS_SENTINELS is set: name the master with REDIS_MASTER_NAME")
            self.redis_url = f"redis://{self.redis_master_name}/0"
        return self

    @property
    def timeout_us(self) -> int:
        return round(self.timeout_seconds * 1_000_000)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
