"""The gRPC exporter: flat records in, batches to the collector out, nothing lost on an outage.

Wiring (agent/node.py):

    from agent.outputs.grpc_exporter import Exporter, ExporterConfig
    exp = Exporter(ExporterConfig(address="collector:4317", node=node_name,
                                  spool_dir="/var/lib/nodewarden/spool"))
    exp.start()
    exp.submit(record)          # per event: never blocks; a full queue drops and counts
    exp.metrics()               # its counters as a dict (drops also reach the pipeline: agent.drops)
    exp.stop(timeout=5.0)       # flushes the queue to the spool, tries to deliver, closes

`submit` takes the dict from agent/outputs/record.py as is and does not change it; the
exporter stamps host.name, nodewarden.agent_id, nodewarden.boot_id and seq (from 1, per run) itself, in
submission order, and overrides those keys if the record had them.

Path of an event: submit -> bounded in-memory queue -> encoder thread (record -> protobuf
Event, batches of `batch_size` or every `batch_interval` s) -> on-disk spool (write-ahead,
bounded, survives a restart) -> sender thread (one Ingest stream, up to `window` batches in
flight, acked batches leave the spool). Reconnects back off exponentially with full jitter.
After a reconnect everything not acked is resent; the collector deduplicates on
(agent_id, boot_id, seq), so delivery is at-least-once and storage exactly-once.
Drops (queue full, spool full, corrupt spool segments) are counted per reason and sent as
`agent.drops` events: {"nodewarden.drops.new": {"exporter.spool_full": n}, "nodewarden.drops.total": {...}}.
"""

from __future__ import annotations

import collections
import logging
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import grpc

from agent.events import DropReport
from agent.outputs.grpc_channel import ClientSecurity, make_channel, metadata
from agent.outputs.record import ENCODE_PROTOBUF, flatten
from agent.outputs.spool import Spool
from agent.ratelog import RateLog
from agent.sensors.native import MODULE as _native
from nwwire.codec import to_event
from nwwire.genproto import load
from nwwire.protowire import field_bytes, field_varint, number

log = logging.getLogger(__name__)
cpb = load("nodewarden.v1.collector_pb2")
epb = load("nodewarden.v1.event_pb2")

INGEST_METHOD = "/nodewarden.v1.Collector/Ingest"
# Spooled batches are written and framed as bytes: the field numbers, from the descriptors.
_BATCH_ID = number(cpb.Batch, "batch_id")
_BATCH_EVENTS = number(cpb.Batch, "events")
_REQUEST_BATCH = number(cpb.IngestRequest, "batch")
_EVENT_SEQ = number(epb.Event, "seq")


@dataclass
class ExporterConfig:
    address: str  # "host:port" or "unix:/path"
    node: str = field(default_factory=socket.gethostname)
    agent_id: str = ""  # stable id of this agent; default: the node name
    boot_id: str = ""  # id of this run; default: a fresh uuid4 (seq restarts at 1 with it)
    security: ClientSecurity = field(default_factory=ClientSecurity)
    spool_dir: str = "/var/lib/nodewarden/spool"
    spool_max_bytes: int = 256 << 20
    spool_segment_bytes: int = 4 << 20
    queue_size: int = 65536  # records waiting for the encoder
    batch_size: int = 512  # events per batch
    batch_interval: float = 0.1  # s: a partial batch waits at most this long
    window: int = 8  # batches in flight before waiting for acks
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    drops_report_interval: float = 1.0  # s between agent.drops events while dropping
    max_message_bytes: int = 16 << 20


class Exporter:
    def __init__(self, config: ExporterConfig):
        self.cfg = config
        self.agent_id = config.agent_id or config.node
        self.boot_id = config.boot_id or uuid.uuid4().hex
        self.spool = Spool(config.spool_dir, config.spool_max_bytes, config.spool_segment_bytes)
        self._q: collections.deque = collections.deque()
        self._qcond = threading.Condition(threading.Lock())
        self._seq = 0
        self._closing = threading.Event()  # encoder: drain and exit
        self._stopping = threading.Event()  # sender: give up and exit
        self._data = threading.Event()  # set when the spool got a batch
        self._threads: list[threading.Thread] = []
        self._call = None
        self._lock = threading.Lock()  # counters below
        # All keys up front: other threads iterate this dict, so it must never grow.
        self.drops: collections.Counter = collections.Counter(
            {"queue_full": 0, "spool_full": 0, "encode_error": 0, "spool_corrupt_segments": 0}
        )
        self._drops_reported: collections.Counter = collections.Counter()
        self._last_report = 0.0
        self.submitted = 0
        self.spooled = 0
        self.acked = 0
        self.reconnects = 0
        self.connected = False
        self._rlog = RateLog(log)
        # what _spool_batch puts before an Event's bytes made without its dict (submit_batch); the seq follows
        self._identity = epb.Event(node=config.node, agent_id=self.agent_id, boot_id=self.boot_id).SerializeToString()

    # -- the way in -------------------------------------------------------------------------

    def submit(self, record: dict) -> None:
        """Queue one record for export. Never blocks; a full queue drops it and counts."""
        self.submit_batch((record,))

    def submit_batch(self, records) -> None:
        """Queue a batch of records: dicts, or kernel events' Event bytes without the identity fields (the
        pipeline's compiled encoder makes them: agent/pipeline.py _encodings), which are stamped and sent as
        they are. Never blocks; what a full queue has no room for is dropped and counted."""
        with self._qcond:
            n = len(records)
            self.submitted += n
            room = 0 if self._closing.is_set() else max(self.cfg.queue_size - len(self._q), 0)
            if room < n:
                self.drops["queue_full"] += n - room
                records = records[:room]
            before = len(self._q)
            self._q.extend(records)
            if before < self.cfg.batch_size <= len(self._q):
                self._qcond.notify()

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.spool.open()
        if self.spool.corrupt_segments:
            self.drops["spool_corrupt_segments"] += self.spool.corrupt_segments
        for name, target in (("encoder", self._encode_loop), ("sender", self._send_loop)):
            t = threading.Thread(target=target, name=f"nw-exporter-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self._data.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Spool what is queued, deliver for up to `timeout` s, then close. True if all was acked."""
        deadline = time.monotonic() + timeout
        self._closing.set()
        with self._qcond:
            self._qcond.notify()
        if self._threads:
            self._threads[0].join(max(deadline - time.monotonic(), 0.1))
        # Deliver what is spooled while the collector is there; a collector that stays
        # away for a second does not hold the agent's shutdown (the spool keeps the rest).
        away_since = None
        while time.monotonic() < deadline and self.spool.stats()["pending_events"]:
            if self.connected:
                away_since = None
            elif away_since is None:
                away_since = time.monotonic()
            elif time.monotonic() - away_since > 1.0:
                break
            time.sleep(0.05)
        done = self.spool.stats()["pending_events"] == 0
        self._stopping.set()
        self._data.set()
        call = self._call
        if call is not None:
            call.cancel()
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 1.0))
        self.spool.close()
        return done

    # -- encoder: queue -> spool ---------------------------------------------------------------

    def _encode_loop(self) -> None:
        cfg = self.cfg
        while True:
            with self._qcond:
                if len(self._q) < cfg.batch_size and not self._closing.is_set():
                    self._qcond.wait(cfg.batch_interval)
                n = min(len(self._q), cfg.batch_size)
                batch = [self._q.popleft() for _ in range(n)]
            reports = self._drop_reports()
            if batch or reports:
                self._spool_batch(batch + reports)
            if self._closing.is_set() and not self._q:
                reports = self._drop_reports(final=True)
                if reports:
                    self._spool_batch(reports)
                return

    def _spool_batch(self, records: list) -> None:
        parts = []
        count = 0
        now = None
        run: list[bytes] = []  # consecutive Events made without their dicts (submit_batch): framed at once
        for rec in records:
            if type(rec) is bytes:
                run.append(rec)
                continue
            if run:
                parts.append(self._frame(run))
                count += len(run)
                run = []
            try:
                ev = to_event(rec)
            except Exception:  # to_event promises not to raise; if it does, count, not crash
                log.exception("exporter: cannot encode a record; dropped")
                with self._lock:
                    self.drops["encode_error"] += 1
                continue
            self._seq += 1
            ev.seq = self._seq
            ev.node = self.cfg.node
            ev.agent_id = self.agent_id
            ev.boot_id = self.boot_id
            if not ev.time_unix_nano and "timestamp" not in rec:
                now = now or time.time_ns()
                ev.time_unix_nano = now
            parts.append(field_bytes(_BATCH_EVENTS, ev.SerializeToString()))
            count += 1
        if run:
            parts.append(self._frame(run))
            count += len(run)
        if not parts:
            return
        dropped = self.spool.append(b"".join(parts), count)
        with self._lock:
            self.spooled += count
            if dropped:
                self.drops["spool_full"] += dropped
        self._data.set()

    def _frame(self, events: list[bytes]) -> bytes:
        """Batch.events fields of Events made without their dicts: each with this exporter's identity and the
        next seq in front (a field later in a message's bytes would win; these carry none of the four). The
        compiled framing when the module is loaded (it made the Events), this loop its reference."""
        first = self._seq + 1
        self._seq += len(events)
        if _native is not None:
            return _native.frame_events(events, self._identity, first, _BATCH_EVENTS, _EVENT_SEQ)
        identity = self._identity
        return b"".join(field_bytes(_BATCH_EVENTS, identity + field_varint(_EVENT_SEQ, seq) + ev)
                        for seq, ev in enumerate(events, first))

    def _drop_reports(self, final: bool = False) -> list[dict]:
        """agent.drops records for what was dropped since the last report, at most once per
        drops_report_interval (and once more on the way out)."""
        now = time.monotonic()
        if not final and now - self._last_report < self.cfg.drops_report_interval:
            return []
        with self._lock:
            delta = {k: v - self._drops_reported[k] for k, v in self.drops.items() if v > self._drops_reported[k]}
            self._drops_reported.update(delta)
            totals = dict(self.drops)
        if not delta:
            return []
        self._last_report = now
        log.warning("exporter: dropped %s; in all %s", delta, {k: v for k, v in totals.items() if v})
        # The pipeline's own agent.drops record: per-stage counts, new and total.
        return [flatten(DropReport(
            ts_ns=time.time_ns(),
            new={f"exporter.{k}": v for k, v in sorted(delta.items())},
            total={f"exporter.{k}": v for k, v in sorted(totals.items()) if v},
        ))]

    # -- sender: spool -> collector --------------------------------------------------------------

    def _send_loop(self) -> None:
        delay = self.cfg.backoff_initial
        while not self._stopping.is_set():
            delivered = 0
            try:
                delivered = self._session()
            except grpc.RpcError as e:
                if self._stopping.is_set():
                    return
                msg = f"{e.code().name}: {e.details()}" if hasattr(e, "code") else str(e)
                # each kind of failure once a minute, with how often it recurred, not every retry
                self._rlog.warning(msg, "exporter: collector %s: %s; retrying with backoff", self.cfg.address, msg)
            except Exception:
                self._rlog.exception("sender", "exporter: sender failed; retrying with backoff")
            self.connected = False
            self._call = None
            if delivered:
                delay = self.cfg.backoff_initial
            if self._stopping.is_set():
                return
            # Full jitter: agents that lost the same collector do not all come back at once.
            self._stopping.wait(random.uniform(0, delay))
            delay = min(delay * 2, self.cfg.backoff_max)
            with self._lock:
                self.reconnects += 1

    def _session(self) -> int:
        """One connection and one Ingest stream, until it breaks. Returns events acked."""
        channel = make_channel(self.cfg.address, self.cfg.security, self.cfg.max_message_bytes)
        inflight: collections.deque = collections.deque()  # (batch_id, spool pos, events)
        cond = threading.Condition()
        done = threading.Event()
        acked = 0
        hello = cpb.IngestRequest(
            hello=cpb.Hello(agent_id=self.agent_id, node=self.cfg.node, version="nodewarden-1")
        ).SerializeToString()

        def requests():
            yield hello
            cursor, bid = None, 0
            while not done.is_set() and not self._stopping.is_set():
                with cond:
                    while len(inflight) >= self.cfg.window and not done.is_set():
                        cond.wait(0.5)
                if done.is_set():
                    return
                self._data.clear()
                item = self.spool.read_next(cursor)
                if item is None:
                    self._data.wait(0.5)
                    continue
                cursor, events, payload = item
                bid += 1
                with cond:
                    inflight.append((bid, cursor, events))
                batch = field_varint(_BATCH_ID, bid) + payload
                yield field_bytes(_REQUEST_BATCH, batch)

        try:
            ingest = channel.stream_stream(INGEST_METHOD, request_serializer=None,
                                           response_deserializer=cpb.IngestResponse.FromString)
            call = ingest(requests(), metadata=metadata(self.cfg.security))
            self._call = call
            if self._stopping.is_set():
                call.cancel()
            for resp in call:
                if resp.HasField("hello"):
                    self.connected = True
                    continue
                with cond:
                    if not inflight:
                        raise RuntimeError("collector acked a batch that was not sent")
                    bid, pos, events = inflight.popleft()
                    cond.notify()
                if resp.ack.batch_id != bid:
                    raise RuntimeError(f"collector acked batch {resp.ack.batch_id}, expected {bid}")
                self.spool.ack(pos)
                acked += events
                with self._lock:
                    self.acked += events
        finally:
            done.set()
            with cond:
                cond.notify_all()
            channel.close()
        return acked

    # -- metrics --------------------------------------------------------------------------------

    def metrics(self) -> dict:
        sp = self.spool.stats()
        with self._lock:
            return {
                "submitted": self.submitted,
                "queued": len(self._q),
                "spooled": self.spooled,
                "acked": self.acked,
                "drops": dict(self.drops),
                "dropped": sum(v for k, v in self.drops.items() if k != "spool_corrupt_segments"),
                "spool_bytes": sp["bytes"],
                "spool_pending_events": sp["pending_events"],
                "spool_corrupt_bytes": self.spool.corrupt_bytes,
                "connected": self.connected,
                "reconnects": self.reconnects,
                "seq": self._seq,
            }


# The pipeline's compiled loop hands Exporter.submit_batch kernel events as their Event bytes (agent/pipeline.py
# _encodings).
Exporter.ENCODED = {Exporter.submit_batch: (ENCODE_PROTOBUF, Exporter.submit_batch)}
