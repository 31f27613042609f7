"""`hbw health`: are the dependencies of a worker ready? For process managers and Kubernetes."""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import describe
from worker.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_health(settings: Settings, *, workers: int = 0) -> list[Check]:
    """Every check runs, so the output says everything that is wrong at once."""
    from db.schema import expected_version, installed_version
    from worker.database import get_engine
    from worker.runtime.broker import make_broker
    from worker.runtime.liveness import read_workers
    from worker.runtime.redis_memory import check_writes

    checks = []
    try:
        engine = get_engine(settings.database_url)
        with engine.connect() as conn:
            found = installed_version(conn)
        wanted = expected_version()
        checks.append(Check("postgresql", True, "answers"))
        detail = f"version {found}" if found else "none"
        if found != wanted:
            detail += f", expected {wanted}: run `hbw db init`"
        checks.append(Check("schema", found == wanted, detail))
    except Exception as e:
        checks.append(Check("postgresql", False, describe(e, settings)))
    try:
        broker = make_broker(settings)
        broker.client.ping()
        memory = check_writes(broker.client, broker.namespace)
        detail = memory.problem or f"answers, takes writes ({memory.usage})"
        checks.append(Check("redis", memory.writable, detail))
        if workers:
            found = read_workers(broker, settings.worker_heartbeat_timeout_ms)
            detail = f"{len(found.alive)} alive, {workers} required"
            detail += "".join(f"; {w.describe()}" for w in found.unhealthy)
            checks.append(Check("workers", len(found.alive) >= workers, detail))
    except Exception as e:
        checks.append(Check("redis", False, describe(e, settings)))
    return checks
