"""alertmanager: Prometheus Alertmanager's v2 API (POST /api/v2/alerts), a batch of events per request.

Labels are what Alertmanager groups, routes and silences on, so they are the event's identity and
place: alertname (the rule's name, or the verdict/block), rule, severity, kind, action, node,
namespace, pod, container, image; empty ones are left out. What varies from one occurrence to the
next (the alert's output, command line, event id) goes in annotations: two identical shells in the
same pod are one Alertmanager alert, repeated, as a Prometheus rule firing twice would be.
startsAt is the event's time; endsAt is startsAt + resolve_after when set, else Alertmanager's
resolve_timeout applies. generatorURL links back to the event when `console_url` is set.
"""

from __future__ import annotations

import re

import orjson

from collector.outputs._http import HTTP_KEYS, Poster
from collector.outputs.base import Output, OutputError, action, detail, rule, title
from collector.units import parse_duration
from nwwire.codec import parse_timestamp, rfc3339

_LABELS = (("node", "host.name"), ("namespace", "k8s.namespace.name"), ("pod", "k8s.pod.name"),
           ("container", "container.name"), ("image", "container.image.name"))
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MAX_VALUE = 1024


def alert(event_id: int, rec: dict, static: dict, console: str = "", resolve_ns: int = 0) -> dict:
    labels = {
        "alertname": title(rec), "rule": rule(rec), "severity": str(rec.get("event.severity", "")),
        "kind": str(rec.get("event.name", "")), "action": action(rec),
        **{label: str(rec.get(key, "")) for label, key in _LABELS},
    }
    labels = {**static, **{k: v[:_MAX_VALUE] for k, v in labels.items() if v}}  # the event's own win
    ann = {"summary": detail(rec) or title(rec), "description": str(rec.get("rule.description", "")),
           "event_id": str(event_id), "command": str(rec.get("process.command_line", "")),
           "executable": str(rec.get("process.executable.path", "")),
           "tactics": ",".join(rec.get("threat.tactic.name", []) or []),
           "techniques": ",".join(rec.get("threat.technique.id", []) or [])}
    out = {"labels": labels, "annotations": {k: v[:4096] for k, v in ann.items() if v},
           "startsAt": rec.get("timestamp", "")}
    if resolve_ns and out["startsAt"]:
        out["endsAt"] = rfc3339(parse_timestamp(out["startsAt"]) + resolve_ns)
    if console:
        out["generatorURL"] = console.format(id=event_id)
    return out


class Alertmanager(Output):
    type = "alertmanager"
    own_keys = HTTP_KEYS | {"labels", "console_url", "resolve_after"}

    def __init__(self, spec: dict, where: str):
        super().__init__(spec, where)
        # url: Alertmanager's base (http://alertmanager:9093), as amtool's --alertmanager.url takes it
        self.http = Poster(spec, where, self.opts.timeout, path="/api/v2/alerts")
        static = spec.get("labels", {})
        if not isinstance(static, dict) or not all(isinstance(k, str) and _LABEL_NAME.fullmatch(k)
                                                   and isinstance(v, str) for k, v in static.items()):
            raise OutputError(f"{where}: labels must map label names ([a-zA-Z_][a-zA-Z0-9_]*) to strings")
        self.static = static
        self.console = spec.get("console_url", "")
        if not isinstance(self.console, str):
            raise OutputError(f"{where}: console_url must be a string with {{id}} where the event id goes")
        try:
            self.resolve_ns = int(parse_duration(spec.get("resolve_after", 0)) * 1e9)
        except (ValueError, AttributeError) as e:
            raise OutputError(f"{where}: resolve_after: {e}") from None

    def send(self, items: list) -> None:
        body = [alert(i, rec, self.static, self.console, self.resolve_ns) for i, rec in items]
        self.http.post(orjson.dumps(body))
        items.clear()

    def close(self) -> None:
        self.http.close()
