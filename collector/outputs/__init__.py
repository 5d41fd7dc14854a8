"""Alert outputs built into the collector (falcosidekick's role): every stored event that passes an
output's filter goes to webhook, Slack, Alertmanager, syslog or OTLP logs, each with its own bounded
queue and thread (base.py). The collector's config lists them (`outputs:`, docs/outputs.md):

    outputs:
      - {type: slack, url: https://hooks.slack.com/services/..., min_severity: high}
      - {type: alertmanager, url: http://alertmanager:9093, kinds: [alert, enforcement]}

`build(specs)` checks them all (OutputError, one line naming the output) before any starts;
`collect(outputs)` gives their Prometheus families for the collector's registry.
"""

from __future__ import annotations

from collector.outputs.base import DROP_REASONS, Output, OutputError


def _types() -> dict[str, type[Output]]:
    # Imported when configured: the OTLP exporter pulls in the OpenTelemetry SDK.
    from collector.outputs.alertmanager import Alertmanager
    from collector.outputs.otlp import Otlp
    from collector.outputs.slack import Slack
    from collector.outputs.syslog import Syslog
    from collector.outputs.webhook import Webhook

    return {c.type: c for c in (Webhook, Slack, Alertmanager, Syslog, Otlp)}


TYPES = ("webhook", "slack", "alertmanager", "syslog", "otlp")


def build(specs) -> list[Output]:
    """Outputs from the config's list of mappings; nothing is started (Output.start)."""
    if specs in (None, ""):
        return []
    if not isinstance(specs, list):
        raise OutputError("outputs: expected a list of mappings, each with a type")
    out: list[Output] = []
    names: set[str] = set()
    for n, spec in enumerate(specs):
        where = f"outputs[{n}]"
        if not isinstance(spec, dict):
            raise OutputError(f"{where}: expected a mapping with a type ({', '.join(TYPES)})")
        kind = spec.get("type")
        if kind not in TYPES:
            raise OutputError(f"{where}: type {kind!r}: expected one of {', '.join(TYPES)}")
        where = f"{where} ({kind})"
        o = _types()[kind]({**spec, "name": spec.get("name", f"{kind}-{n}")}, where)
        if o.name in names:
            raise OutputError(f"{where}: name {o.name!r} is used twice")
        names.add(o.name)
        out.append(o)
    return out


def stop_all(outputs: list[Output], timeout: float = 2.0) -> None:
    """Stop them together: each sends what it holds for up to `timeout` s, then counts the rest."""
    import time

    for o in outputs:
        o.begin_stop()
    deadline = time.monotonic() + timeout
    for o in outputs:
        o.finish_stop(deadline)


def collect(outputs: list[Output]):
    """Prometheus families, one series per output (labels output, type) and drop reason."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if not outputs:
        return
    sent = CounterMetricFamily("nodewarden_collector_output_sent", "Events an output delivered",
                               labels=["output", "type"])
    retries = CounterMetricFamily("nodewarden_collector_output_retries", "Sends an output retried after a failure",
                                  labels=["output", "type"])
    dropped = CounterMetricFamily("nodewarden_collector_output_dropped",
                                  "Events an output dropped: queue_full (receiver too slow), failed (retries spent), "
                                  "rejected (4xx), invalid, stopped (queued at shutdown)",
                                  labels=["output", "type", "reason"])
    queued = GaugeMetricFamily("nodewarden_collector_output_queued", "Events waiting in an output's queue",
                               labels=["output", "type"])
    for o in outputs:
        sent.add_metric([o.name, o.type], o.sent)
        retries.add_metric([o.name, o.type], o.retried)
        queued.add_metric([o.name, o.type], o.queued())
        for reason in DROP_REASONS:
            dropped.add_metric([o.name, o.type, reason], o.dropped[reason])
    yield from (sent, retries, dropped, queued)


__all__ = ["DROP_REASONS", "TYPES", "Output", "OutputError", "build", "collect", "stop_all"]
