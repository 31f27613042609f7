"""The /metrics endpoint a command serves while its processes run (`hbw worker`, `hbw serve`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

from worker.logs import get_logger
from worker.settings import Settings

log = get_logger("hbw.cli")


@contextlib.contextmanager
def metrics_endpoint(
    settings: Settings, port: int, processes: int, collectors: Callable[[], list] = list
) -> Iterator[None]:
    """Serve /metrics on `port` of HBW_METRICS_HOST from this process (0: no endpoint); a port
    that is taken is a warning, not a reason to stop the work.

    With several processes their counters meet in a fresh PROMETHEUS_MULTIPROC_DIR, which must be
    set before prometheus_client is first imported in the children that inherit it.
    """
    if not port:
        yield
        return
    directory = None
    if processes > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        directory = tempfile.mkdtemp(prefix="hbw-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from worker.runtime.metrics_server import MetricsServer

    server = None
    try:
        try:
            server = MetricsServer(port, settings.metrics_host, collectors())
        except OSError as e:
            log.warning("metrics.unavailable", port=port, error=str(e))
        yield
    finally:
        if server:
            server.close()
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
