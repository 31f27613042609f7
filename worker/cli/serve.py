"""`hbw serve`: WakaTime's heartbeat API for editor plugins (worker.http)."""

from __future__ import annotations

import argparse
import contextlib
import os

from worker.cli.common import add_command, positive, servers_for
from worker.cli.metrics import metrics_endpoint
from worker.errors import EXIT_OK
from worker.settings import Settings


def add_serve(commands) -> None:
    parser = add_command(commands, "serve", serve, help="WakaTime-compatible HTTP ingest for editor plugins")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)"
    )
    parser.add_argument(
        "--port", type=int, default=os.environ.get("PORT", "8080"), help="port (default $PORT or 8080)"
    )
    parser.add_argument("--workers", "-w", type=positive, default=1, help="server processes (default 1)")


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve WakaTime's heartbeat API: POST /api/v1/users/current/heartbeats and
    /api/v1/users/current/heartbeats.bulk. Point a plugin at it by setting api_url =
    http://HOST:PORT/api/v1 in ~/.wakatime.cfg, with an api_key from `hbw keys create USER`. A
    request is answered 201 once its heartbeats are queued, 503 when Redis cannot take them
    (clients keep them and retry). GET /healthz and /readyz are for probes; Prometheus metrics
    are on HBW_SERVE_METRICS_PORT (default 9192) of HBW_METRICS_HOST (default 127.0.0.1).

    example:
      hbw keys create alice
      hbw serve --port 8080
      # ~/.wakatime.cfg: api_url = http://localhost:8080/api/v1
    """
    import uvicorn

    from worker.http.limits import uvicorn_options

    cells = ""
    if settings.cells:  # every cell's users (docs/cells.md); a broken cells file fails here
        from worker.cells import load_cells

        cells = f" for cells {', '.join(load_cells(settings).names)}"
    metrics = metrics_endpoint(settings, settings.serve_metrics_port, args.workers)
    with contextlib.nullcontext(settings) if cells else servers_for(settings) as settings, metrics:
        print(f"serving WakaTime's API on http://{args.host}:{args.port}/api/v1{cells}", flush=True)
        uvicorn.run(
            "worker.http.cells:cells_app_from_env" if cells else "worker.http.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,  # our structlog chain, configured by the factory
            access_log=False,  # one `http.heartbeats` line per request instead
            timeout_graceful_shutdown=int(settings.shutdown_timeout),
            **uvicorn_options(settings),  # header size, read deadlines, trusted proxies
        )
    return EXIT_OK
