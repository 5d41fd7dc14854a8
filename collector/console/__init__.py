"""The protection-events console the collector serves (`nodewarden collector --http HOST:PORT`).

    from collector.console import start_console
    console = start_console(cfg, store, hub)   # cfg: collector.server.CollectorConfig, http_listen set
    console.url     # "http://127.0.0.1:7480/"
    console.stop()

A page (static/index.html, console.js, console.css: no front-end library, nothing from a CDN) over a
small JSON API (collector/console/http.py), reading the collector's own store (query.py) and keeping
each event's triage status beside it (collector/status.py: a SQLite file; collector/status_pg.py: a table of the
PostgreSQL store, shared by replicas). The token and TLS are the
collector's; the console listens where it is told, loopback by default.
"""

from __future__ import annotations

from collector.console.http import Console, parse_listen
from collector.status import StatusTable, status_db_path

__all__ = ["Console", "parse_listen", "start_console"]


def start_console(cfg, store, hub, status=None) -> Console:
    """Start the console of a collector whose config is `cfg` (CollectorConfig) on cfg.http_listen.
    `status`: a StatusBackend; default the SQLite file beside cfg.db (or cfg.status_db when set)."""
    if status is None:
        status = StatusTable(getattr(cfg, "status_db", "") or status_db_path(cfg.db))
    try:
        console = Console(cfg.http_listen, store, hub, status, token=cfg.read_token(), tls_cert=cfg.tls_cert,
                          tls_key=cfg.tls_key, tls_client_ca=cfg.tls_client_ca)
    except BaseException:
        status.close()
        raise
    console.status_owned = status
    return console.start()
