"""Is Redis taking writes? A Redis at `maxmemory` with `noeviction` (what docs/reliability.md asks for, so no
queued message is ever evicted) refuses every command that could grow memory, and Dramatiq's
script writes on every fetch and ack: workers then cannot take or finish anything, and nothing
frees memory until an operator raises `maxmemory` or frees space.

How it is detected: a probe write, ``SET <ns>:hbw.write_probe 1 PX 10000``. Redis decides "out of
memory" with its own accounting (``used_memory`` minus the replication and AOF buffers it does
not count, against ``maxmemory``, per eviction policy), so comparing INFO's numbers would be wrong
near the limit (a refusal was seen with ``used_memory`` just under ``maxmemory``); the probe gets
Redis's own verdict, also where CONFIG is disabled. A refused probe allocates nothing; one that
succeeds leaves a 1-byte key that expires. INFO's numbers only go into the message and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from worker.runtime.redis_keys import Keys

PROBE_TTL_MS = 10_000


class RedisOutOfMemory(redis.ConnectionError):
    """Redis refused a write for lack of memory. A ConnectionError, so every caller treats it
    like Redis being away: a worker retries its ack until Redis takes it and restarts its fetch,
    a producer reports that it could not enqueue."""

    def __init__(self) -> None:
        super().__init__(
            "Redis is out of memory (maxmemory reached) and refuses writes: raise maxmemory or free "
            "space (docs/reliability.md)"
        )


def is_out_of_memory(error: BaseException) -> bool:
    # Redis 7 answers "-OOM ..." (redis-py's OutOfMemoryError); 6.2 wraps it inside a script error.
    return isinstance(error, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(error)


@dataclass(frozen=True)
class RedisMemory:
    used_bytes: int | None
    max_bytes: int | None  # 0: no limit
    policy: str | None
    #: Why the probe write was refused (None: Redis takes writes).
    refused: str | None = None
    out_of_memory: bool = False

    @property
    def writable(self) -> bool:
        return self.refused is None

    @property
    def problem(self) -> str | None:
        """One line for an operator, or None when Redis takes writes."""
        if self.writable:
            return None
        effect = "workers cannot fetch or ack"
        if self.out_of_memory:
            return (
                f"out of memory (used_memory {_mb(self.used_bytes)} of maxmemory {_mb(self.max_bytes)}, "
                f"policy {self.policy or '?'}): {effect}; raise maxmemory (CONFIG SET maxmemory ...) or "
                "free space: docs/reliability.md"
            )
        return f"refuses writes ({self.refused}): {effect}"

    @property
    def usage(self) -> str:
        if self.used_bytes is None:
            return "memory use unknown (INFO refused)"
        limit = f"of {_mb(self.max_bytes)}" if self.max_bytes else "(no maxmemory)"
        return f"{_mb(self.used_bytes)} used {limit}"


def check_writes(client: redis.Redis, namespace: str) -> RedisMemory:
    """Redis's memory and whether it takes a write now. Raises redis.ConnectionError when it is away."""
    try:
        info = client.info("memory")
    except redis.ResponseError:  # INFO renamed or disabled on some managed services
        info = {}
    used, limit, policy = info.get("used_memory"), info.get("maxmemory"), info.get("maxmemory_policy")
    try:
        client.set(Keys(namespace).write_probe, b"1", px=PROBE_TTL_MS)
    except redis.ResponseError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return RedisMemory(used, limit, policy, refused=reason, out_of_memory=is_out_of_memory(e))
    return RedisMemory(used, limit, policy)


def _mb(value: int | None) -> str:
    return "?" if value is None else f"{value / 1_048_576:.1f} MB"
