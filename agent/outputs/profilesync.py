"""The agent's side of the collector's Profiles service (issue 13): push profile changes, fetch a
workload's merged profile.

Wiring (agent/node.py, with the exporter's config so that address, TLS and token are the same):

    from agent.outputs.profilesync import build
    sync = build(self.exporter.cfg if self.exporter is not None else None, cfg.profiles)
    engine = profile.build(cfg.profiles, policy, kill, sync)     # ProfileEngine(..., sync=sync)
    sync.drops()     # profile.sync_queue, profile.sync_refused, profile.sync_unsent: for agent.drops
    sync.close()     # after the engine's final flush

`push(doc)` never blocks the caller: the document is serialized at once (the engine may change
its profile right after) and queued per key, so a newer document of a key replaces a queued older
one (not a drop: the newer one holds everything the older did). One thread sends them. A collector
that is away keeps the documents queued, retried with backoff, since a lost push could be the one
that locks a profile; what does not fit in the bounded queue is dropped and counted
(`profile.sync_queue`), as is what the collector refuses as malformed (`profile.sync_refused`, not
retried: it would be refused again) and what is still queued at close (`profile.sync_unsent`;
the profile itself is safe in the state dir).

`fetch(key, timeout)` is called by the pre-start gates before a container runs: it blocks for at
most `timeout` s, returns the merged document (a dict) or None (unknown key, collector away,
a reply that is not a document of that key), and never raises.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict

import grpc
import orjson

from agent.outputs.grpc_channel import make_channel, metadata
from agent.ratelog import RateLog
from nwwire.genproto import load

log = logging.getLogger(__name__)
cpb = load("nodewarden.v1.collector_pb2")

PUSH_METHOD = "/nodewarden.v1.Profiles/Push"
GET_METHOD = "/nodewarden.v1.Profiles/Get"
# gRPC's reconnect backoff grows to 120 s by default and is shared by every channel to the same
# address (the global subchannel pool): after a long collector outage a fetch would fail fast for
# up to two minutes after the collector is back. A profile fetch gates a container's start, so
# the sync's channel reconnects within 5 s, on a subchannel of its own.
_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.use_local_subchannel_pool", 1),
]
# Codes after which the same document would be refused again: dropped, not retried.
_REFUSED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                      grpc.StatusCode.UNIMPLEMENTED})


class NullSync:
    """No collector (or sync off): profiles stay per node."""

    enabled = False

    def push(self, doc: dict) -> None:
        pass

    def fetch(self, key: str, timeout: float | None = None) -> dict | None:
        return None

    def drops(self) -> dict[str, int]:
        return {}

    def counters(self) -> dict:
        return {}

    def close(self, timeout: float = 2.0) -> None:
        pass


class ProfileSync:
    enabled = True

    def __init__(self, export_cfg, timeout: float = 1.0, queue_size: int = 1024, push_timeout: float = 5.0,
                 backoff_initial: float = 0.2, backoff_max: float = 30.0):
        """`export_cfg`: the exporter's ExporterConfig (address, node, agent_id, security,
        max_message_bytes). `timeout`: fetch's default wait. `queue_size`: profiles waiting to be sent."""
        self.address = export_cfg.address
        self.node = export_cfg.node
        self.agent_id = export_cfg.agent_id or export_cfg.node  # as the exporter stamps its events
        self.security = export_cfg.security
        self.max_message_bytes = export_cfg.max_message_bytes
        self.timeout = timeout
        self.queue_size = queue_size
        self.push_timeout = push_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._pending: OrderedDict[str, bytes] = OrderedDict()  # key -> document, oldest first
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._stop = threading.Event()
        self._chan_lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._rlog = RateLog(log)
        # All keys up front (other threads read these dicts).
        self._drops = {"profile.sync_queue": 0, "profile.sync_refused": 0, "profile.sync_unsent": 0}
        self._counters = {"pushed": 0, "superseded": 0, "push_errors": 0, "fetched": 0, "fetch_misses": 0,
                          "fetch_errors": 0}
        self._thread = threading.Thread(target=self._run, name="nw-profilesync", daemon=True)
        self._thread.start()

    # -- the channel --------------------------------------------------------------------------------

    def _chan(self) -> grpc.Channel:
        with self._chan_lock:
            if self._channel is None:
                try:
                    self._channel = make_channel(self.address, self.security, self.max_message_bytes,
                                                 options=_OPTIONS)
                except TypeError:  # a make_channel without `options`: gRPC's default backoff
                    self._channel = make_channel(self.address, self.security, self.max_message_bytes)
            return self._channel

    # -- push -------------------------------------------------------------------------------------------

    def push(self, doc: dict) -> None:
        """Queue a profile document for the collector. Never blocks on the network, never raises."""
        try:
            key = doc["key"]
            raw = orjson.dumps(doc)
        except Exception as e:  # not a document: the engine's bug, counted, not the pipeline's end
            self._rlog.error("bad-doc", "profile sync: cannot send a profile document: %s", e)
            with self._cond:
                self._drops["profile.sync_refused"] += 1
            return
        with self._cond:
            if self._closing:
                self._drops["profile.sync_unsent"] += 1
                return
            if key in self._pending:
                self._pending[key] = raw  # keeps its place in line
                self._counters["superseded"] += 1
                return
            if len(self._pending) >= self.queue_size:
                self._drops["profile.sync_queue"] += 1
                full = True
            else:
                self._pending[key] = raw
                self._cond.notify()
                full = False
        if full:
            self._rlog.warning("queue", "profile sync: %d profiles wait for the collector %s; %s dropped",
                               self.queue_size, self.address, key)

    def _run(self) -> None:
        delay = self.backoff_initial
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                key, raw = self._pending.popitem(last=False)
            if self._send(key, raw):
                delay = self.backoff_initial
                continue
            with self._cond:
                if key in self._pending:  # a newer document of the key, pushed meanwhile, wins
                    self._counters["superseded"] += 1
                elif len(self._pending) >= self.queue_size:  # filled while it was out: the bound holds
                    self._drops["profile.sync_queue"] += 1
                else:
                    self._pending[key] = raw
                    self._pending.move_to_end(key, last=False)  # first again: sent in the order pushed
            # Full jitter, as the exporter: agents that lost the same collector come back spread out.
            if self._stop.wait(random.uniform(0, delay)):
                return
            delay = min(delay * 2, self.backoff_max)

    def _send(self, key: str, raw: bytes) -> bool:
        """True when done with the document (stored, or refused for good); False to retry."""
        req = cpb.ProfilePush(agent_id=self.agent_id, node=self.node, doc=raw)
        try:
            call = self._chan().unary_unary(PUSH_METHOD, request_serializer=cpb.ProfilePush.SerializeToString,
                                            response_deserializer=cpb.ProfileAck.FromString)
            call(req, timeout=self.push_timeout, metadata=metadata(self.security))
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            detail = e.details() if hasattr(e, "details") else str(e)
            # The server's maximum_concurrent_rpcs says RESOURCE_EXHAUSTED too, and that one passes.
            if code in _REFUSED and "Concurrent RPC limit" not in (detail or ""):
                with self._cond:
                    self._drops["profile.sync_refused"] += 1
                self._rlog.error(f"refused-{code}", "profile sync: the collector refused %s: %s: %s",
                                 key, code.name, detail)
                return True
            with self._cond:
                self._counters["push_errors"] += 1
            name = code.name if code is not None else "error"
            self._rlog.warning(f"push-{name}", "profile sync: collector %s: %s: %s; retrying",
                               self.address, name, detail)
            return False
        except Exception as e:  # a token file that vanished, TLS files unreadable, ...
            with self._cond:
                self._counters["push_errors"] += 1
            self._rlog.error("push-local", "profile sync: cannot reach the collector %s: %s; retrying",
                             self.address, e)
            return False
        with self._cond:
            self._counters["pushed"] += 1
        return True

    # -- fetch ------------------------------------------------------------------------------------------

    def fetch(self, key: str, timeout: float | None = None) -> dict | None:
        """The collector's merged document of `key`, or None; waits at most `timeout` s."""
        wait = self.timeout if timeout is None else timeout
        if not key or wait <= 0 or self._closing:
            return None
        try:
            call = self._chan().unary_unary(GET_METHOD, request_serializer=cpb.ProfileGet.SerializeToString,
                                            response_deserializer=cpb.ProfileReply.FromString)
            reply = call(cpb.ProfileGet(agent_id=self.agent_id, node=self.node, key=key), timeout=wait,
                         metadata=metadata(self.security))
        except grpc.RpcError as e:
            self._count("fetch_errors")
            code = e.code().name if hasattr(e, "code") else "error"
            self._rlog.warning(f"fetch-{code}", "profile sync: no profile from the collector %s: %s",
                               self.address, code)
            return None
        except Exception as e:
            self._count("fetch_errors")
            self._rlog.error("fetch-local", "profile sync: cannot reach the collector %s: %s", self.address, e)
            return None
        if not reply.doc:
            self._count("fetch_misses")
            return None
        try:
            doc = orjson.loads(reply.doc)
        except orjson.JSONDecodeError as e:
            doc = e
        if not isinstance(doc, dict) or doc.get("key") != key:
            self._count("fetch_errors")
            self._rlog.error("fetch-bad", "profile sync: the collector's reply for %s is not its profile", key)
            return None
        self._count("fetched")
        return doc

    def _count(self, name: str) -> None:
        with self._cond:
            self._counters[name] += 1

    # -- accounting, end -------------------------------------------------------------------------------

    def drops(self) -> dict[str, int]:
        with self._cond:
            return dict(self._drops)

    def counters(self) -> dict:
        with self._cond:
            return {**self._counters, "queued": len(self._pending)}

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued for up to `timeout` s, then stop; what is left is counted as unsent."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(max(self.push_timeout, 1.0))
        with self._cond:
            if self._pending:
                self._drops["profile.sync_unsent"] += len(self._pending)
                log.warning("profile sync: %d profiles not sent to the collector %s (kept in the state dir)",
                            len(self._pending), self.address)
                self._pending.clear()
        with self._chan_lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None


def build(export_cfg, cfg) -> ProfileSync | NullSync:
    """A ProfileSync over the exporter's connection settings, or a NullSync when there is no
    collector (export_cfg None) or cfg.sync (ProfilesConfig) is off."""
    if export_cfg is None or not getattr(cfg, "sync", True) or not getattr(cfg, "enabled", True):
        return NullSync()
    return ProfileSync(export_cfg, timeout=cfg.fetch_timeout_s)
