"""otlp: OpenTelemetry logs over OTLP/gRPC, with the OpenTelemetry SDK's LoggerProvider (resource,
instrumentation scope, attribute limits) and its OTLPLogExporter.

The SDK's BatchLogRecordProcessor is not used: it drops on a full queue without telling its caller,
and its export results never come back. Instead the provider's one processor here only gathers the
records a batch emits, and the output's own thread calls the exporter with them, so a failed export
is retried and counted like every other output's (the exporter also retries UNAVAILABLE itself,
within `timeout`).

Each event is one log record: time = the event's, severity mapped (critical FATAL, high ERROR,
medium WARN, low INFO4, info INFO, debug DEBUG; the word kept as severity_text), event_name =
event.name, body = the one-line summary, attributes = the flat record (lists of scalars as arrays,
anything nested as JSON text), plus collector.event.id.
"""

from __future__ import annotations

import time

import orjson

from collector.outputs.base import Output, OutputError, SendError, detail, title

_SEVERITY = {"critical": 21, "high": 17, "medium": 13, "warning": 13, "low": 12, "info": 9, "debug": 5}


def attributes(event_id: int, rec: dict) -> dict:
    out = {}
    for k, v in rec.items():
        if isinstance(v, (str, bool, int, float)):
            out[k] = v
        elif isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            out[k] = v
        elif isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            out[k] = v
        elif v not in (None, [], {}):
            out[k] = orjson.dumps(v, default=str).decode()
    out["collector.event.id"] = event_id
    return out


class Otlp(Output):
    type = "otlp"
    own_keys = frozenset({"endpoint", "insecure", "headers", "resource", "tls_ca"})

    def __init__(self, spec: dict, where: str):
        super().__init__(spec, where)
        endpoint = spec.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise OutputError(f"{where}: endpoint is required (host:4317 or http(s)://host:4317)")
        headers = spec.get("headers", {})
        resource = spec.get("resource", {})
        for key, val in (("headers", headers), ("resource", resource)):
            if not isinstance(val, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in val.items()):
                raise OutputError(f"{where}: {key} must map names to strings")
        self.endpoint = endpoint
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
        from opentelemetry.sdk.resources import Resource

        class _Gather(LogRecordProcessor):
            """The provider's only processor: keeps what a batch emitted, for the thread to export."""

            def __init__(self):
                self.records: list = []

            def on_emit(self, log_record):
                self.records.append(log_record)

            def shutdown(self):
                pass

            def force_flush(self, timeout_millis: int = 30000):
                return True

        insecure = spec.get("insecure", endpoint.startswith("http://") or not endpoint.startswith("https://"))
        creds = None
        if not insecure:
            ca = spec.get("tls_ca")
            try:
                creds = grpc.ssl_channel_credentials(open(ca, "rb").read() if ca else None)
            except OSError as e:
                raise OutputError(f"{where}: tls_ca: {e}") from None
        self.exporter = OTLPLogExporter(endpoint=endpoint, insecure=bool(insecure), credentials=creds,
                                        headers=headers or None, timeout=self.opts.timeout)
        self.provider = LoggerProvider(resource=Resource.create({"service.name": "nodewarden-collector",
                                                                 **resource}), shutdown_on_exit=False)
        self._gather = _Gather()
        self.provider.add_log_record_processor(self._gather)
        self.logger = self.provider.get_logger("nodewarden.collector.outputs")
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        self._ok = LogRecordExportResult.SUCCESS

    def send(self, items: list) -> None:
        from opentelemetry._logs import SeverityNumber

        from nwwire.codec import parse_timestamp

        now = time.time_ns()
        self._gather.records = []
        for i, rec in items:
            sev = str(rec.get("event.severity", ""))
            try:
                ts = parse_timestamp(rec.get("timestamp", ""))
            except ValueError:
                ts = now
            self.logger.emit(timestamp=ts, observed_timestamp=now,
                             severity_number=SeverityNumber(_SEVERITY.get(sev, 0)), severity_text=sev or None,
                             body=f"{title(rec)}: {detail(rec)}".rstrip(": "), attributes=attributes(i, rec),
                             event_name=str(rec.get("event.name", "")))
        records, self._gather.records = self._gather.records, []
        if self.exporter.export(records) != self._ok:
            raise SendError(f"OTLP export to {self.endpoint} failed")  # the exporter logged the gRPC status
        items.clear()

    def close(self) -> None:
        self.exporter.shutdown()
        self.provider.shutdown()
