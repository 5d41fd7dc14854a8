"""slack: a Slack incoming webhook (or one that speaks its payload: Mattermost, Rocket.Chat, ...):
`text` for notifications and clients without blocks, `blocks` for the message itself."""

from __future__ import annotations

import orjson

from collector.outputs._http import HTTP_KEYS, Poster
from collector.outputs.base import KEY_FIELDS, Output, OutputError, SendError, action, detail, rule, title

_EMOJI = {"critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":large_yellow_circle:",
          "low": ":large_blue_circle:"}
_MAX_TEXT = 2900  # a section's text may hold 3000 characters
_MAX_FIELD = 1900  # a field 2000


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def payload(event_id: int, rec: dict, extra: dict | None = None, console: str = "") -> dict:
    sev = str(rec.get("event.severity", ""))
    head = f"{_EMOJI.get(sev, ':white_circle:')} [{sev or '-'}] {title(rec)}"
    why = detail(rec)
    fields = [("Kind", rec.get("event.name", "")), ("Rule", rule(rec)), ("Action", action(rec)),
              *((label.capitalize(), rec.get(key, "")) for label, key in KEY_FIELDS)]
    shown = [{"type": "mrkdwn", "text": _cut(f"*{k}*\n{v}", _MAX_FIELD)} for k, v in fields if v][:10]
    context = f"{rec.get('timestamp', '')} · event {event_id}"
    if console:
        context += f" · <{console.format(id=event_id)}|details>"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*{head}*\n{why}", _MAX_TEXT)}}]
    if shown:
        blocks.append({"type": "section", "fields": shown})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    host = rec.get("host.name", "")
    return {**(extra or {}), "text": _cut(f"{head}{f' on {host}' if host else ''}: {why}", _MAX_TEXT),
            "blocks": blocks}


class Slack(Output):
    type = "slack"
    own_keys = HTTP_KEYS | {"channel", "username", "icon_emoji", "console_url"}

    def __init__(self, spec: dict, where: str):
        super().__init__(spec, where)
        self.http = Poster(spec, where, self.opts.timeout)
        self.extra = {}
        for key in ("channel", "username", "icon_emoji"):
            if key in spec:
                if not isinstance(spec[key], str):
                    raise OutputError(f"{where}: {key} must be a string")
                self.extra[key] = spec[key]
        self.console = spec.get("console_url", "")
        if not isinstance(self.console, str):
            raise OutputError(f"{where}: console_url must be a string with {{id}} where the event id goes")

    def send(self, items: list) -> None:
        while items and not self.abandoned:  # one message per event; a failure resends from the one that failed
            i, rec = items[0]
            try:
                self.http.post(orjson.dumps(payload(i, rec, self.extra, self.console)))
            except SendError as e:
                e.refused = 1  # this event alone; the rest still go
                raise
            items.pop(0)

    def close(self) -> None:
        self.http.close()
