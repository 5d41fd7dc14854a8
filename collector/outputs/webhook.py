"""webhook: each event's flat record (the JSON log's keys, plus `collector.event.id`) as one JSON
POST. Retries, backoff and timeouts: collector/outputs/base.py."""

from __future__ import annotations

import orjson

from collector.outputs._http import HTTP_KEYS, Poster
from collector.outputs.base import Output, SendError


def payload(event_id: int, rec: dict) -> bytes:
    return orjson.dumps({**rec, "collector.event.id": event_id})


class Webhook(Output):
    type = "webhook"
    own_keys = HTTP_KEYS

    def __init__(self, spec: dict, where: str):
        super().__init__(spec, where)
        self.http = Poster(spec, where, self.opts.timeout)

    def send(self, items: list) -> None:
        # One request per event, as receivers of falcosidekick-style webhooks expect; on a failure in
        # the middle, the batch is resent from the event that failed, not from its start.
        while items and not self.abandoned:
            i, rec = items[0]
            try:
                self.http.post(payload(i, rec))
            except SendError as e:
                e.refused = 1  # this event alone; the rest still go
                raise
            items.pop(0)

    def close(self) -> None:
        self.http.close()
