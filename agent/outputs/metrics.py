"""Prometheus metrics and the /healthz, /readyz endpoints beside them.

A registry per agent (never prometheus_client's global one), so tests can run several agents.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("nodewarden_events", "Events emitted, by event name", ["event"], registry=r)
        # Counters, not gauges set from totals: rate() and increase() work, and a restart is a reset
        # Prometheus understands. The pipeline increments them by what grew since its last check.
        self.drops = Counter(
            "nodewarden_drops", "Events lost, by stage (kernel.<probe>, queue, decode, output, crash, "
            "exporter.<reason>, containerd.<reason>, imagegate.<reason>)", ["stage"], registry=r,
        )
        self.attribution = Counter(
            "nodewarden_attribution", "Events held for their container, by how the hold ended "
            "(resolved_after_hold, unknown, host_after_hold, held_overflow)", ["result"], registry=r,
        )
        # Detection (agent/detect/engine.py): alerts raised, and rule evaluations (an event meets only the
        # rules of its kind, so evaluations per rule show what each rule costs).
        self.alerts = Counter("nodewarden_alerts", "Alerts raised, by rule id and severity", ["rule", "severity"],
                              registry=r)
        self.rule_evaluations = Counter("nodewarden_rule_evaluations", "Events a detection rule was evaluated on, "
                                        "by rule id", ["rule"], registry=r)
        self.proctable = Gauge("nodewarden_proctable_entries", "Processes in the process table", registry=r)
        self.ready = Gauge("nodewarden_ready", "1 once every probe is attached", registry=r)
        self._server: ThreadingHTTPServer | None = None
        self.is_ready = False

    def add_devices(self, source, hostname: str) -> None:
        """Export the device poller's state (agent/outputs/device_metrics.py: dcgm-exporter's DCGM_* names)."""
        from agent.outputs.device_metrics import DeviceCollector

        self.registry.register(DeviceCollector(source, hostname))

    def serve(self, listen: str) -> tuple[str, int]:
        host, _, port = listen.rpartition(":")
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
                elif self.path == "/healthz":
                    body, ctype, code = b"ok\n", "text/plain", 200
                elif self.path == "/readyz":
                    ok = metrics.is_ready
                    body, ctype, code = (b"ready\n" if ok else b"not ready\n"), "text/plain", 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # requests are not events; keep stdout for events
                pass

        self._server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
        threading.Thread(target=self._server.serve_forever, name="nw-metrics", daemon=True).start()
        return self._server.server_address[:2]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
