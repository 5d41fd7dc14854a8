"""The collector's gRPC server: Ingest, Query, Subscribe, the standard health service, auth.

Embedding (what `nodewarden run` does, and the tests):

    from collector.server import CollectorConfig, serve
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db="/var/lib/nodewarden/events.db"))
    handle.address      # "127.0.0.1:41234": give it to the exporter
    handle.stop()

Requests are taken as raw bytes and parsed here, so a malformed message gets a clear
INVALID_ARGUMENT instead of gRPC's generic "Exception deserializing request" (INTERNAL);
stored events go back out as the bytes SQLite holds, never parsed again. A message over
`max_message_bytes` is refused by gRPC itself (RESOURCE_EXHAUSTED). Any of these ends the
offending call only; other agents and clients carry on.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from collector.bus import Bus, BusConfig, parse_severity
from collector.filters import EventFilter, FilterError
from collector.hub import Hub
from collector.outputs import build as build_outputs
from collector.outputs import collect as collect_outputs
from collector.outputs import stop_all as stop_outputs
from collector.profiles import SERVICE as PROFILES_SERVICE
from collector.profiles import ProfileLimits, ProfileService, ProfileTable, profiles_db_path
from collector.store import BatchError, Store, StoreError
from collector.wire import event_bodies
from nwwire.genproto import load
from nwwire.protowire import field_bytes, field_varint, number

log = logging.getLogger(__name__)
cpb = load("nodewarden.v1.collector_pb2")

# Query and Subscribe answers are written from stored bytes: their field numbers, from the descriptors.
_EVENTS = number(cpb.QueryResponse, "events")
_PAGE_TOKEN = number(cpb.QueryResponse, "next_page_token")
_DROPPED = number(cpb.SubscribeResponse, "dropped")
assert number(cpb.SubscribeResponse, "events") == _EVENTS  # one writer for both

SERVICE = "nodewarden.v1.Collector"
_CHUNK = 500  # events per streamed message


@dataclass
class CollectorConfig:
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:7470"])  # host:port or unix:/path
    db: str = "/var/lib/nodewarden/events.db"
    tls_cert: str = ""  # PEM server certificate: TLS on when set
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM CA: clients must present a certificate it signed (mutual TLS)
    token: str = ""  # shared token; clients send `authorization: Bearer <token>`
    token_file: str = ""
    retention_age_s: float = 7 * 86400
    retention_bytes: int = 1 << 30
    max_message_bytes: int = 16 << 20
    max_batch_events: int = 10000
    subscriber_queue: int = 10000  # events a live subscriber may fall behind before drops
    max_workers: int = 256  # concurrent calls; each agent holds one for its Ingest stream
    metrics_listen: str = ""  # host:port for Prometheus text, "" for none
    # Behaviour profiles (collector/profiles.py): their own SQLite file, "" = <db stem>.profiles.db beside db
    profiles_db: str = ""
    max_profiles: int = 65536  # workload keys kept; a new key beyond it is refused (RESOURCE_EXHAUSTED)
    max_profile_items: int = 4096  # items per kind in a pushed and in the merged document
    # PostgreSQL store shared by replicas (collector/store_pg.py): "" = SQLite at `db`; else postgresql://...
    store: str = ""
    store_partition_s: int = 86400  # the events table's time partitions (retention drops whole ones)
    # NATS JetStream fan-out (collector/bus.py): "" = none; else nats://host:port[,nats://...]
    nats: str = ""
    nats_stream: str = "NODEWARDEN"
    nats_min_severity: str = ""  # "high", "warning", ...: only events at or above it
    nats_kinds: list[str] = field(default_factory=list)  # as `nodewarden events --kind`
    nats_replicas: int = 0  # 0: 3 on a cluster of 3 or more nodes, else 1 (when the stream is created)
    nats_confirm: bool = True  # ack agents only once JetStream acked their batch (else publish after commit)
    nats_queue: int = 100_000  # events waiting for NATS
    # The console (collector/console): "" = none; else HOST:PORT, e.g. 127.0.0.1:7480 (loopback unless told)
    http_listen: str = ""
    http_optional: bool = False  # the console failing to listen (port taken) is logged, not fatal (embedded)
    # Alert outputs (collector/outputs, docs/outputs.md): [{type: webhook|slack|alertmanager|syslog|otlp, ...}]
    outputs: list[dict] = field(default_factory=list)

    def read_token(self) -> str:
        if self.token:
            return self.token
        return Path(self.token_file).read_text().strip() if self.token_file else ""



def _events_message(bodies, dropped: int = 0, token: str = "") -> bytes:
    """A QueryResponse (token) or SubscribeResponse (dropped) built from stored bytes."""
    out = b"".join(field_bytes(_EVENTS, b) for b in bodies)
    if token:
        out += field_bytes(_PAGE_TOKEN, token.encode())
    if dropped:
        out += field_varint(_DROPPED, dropped)
    return out


def _page_token(ts: int, rowid: int) -> str:
    return base64.urlsafe_b64encode(f"{ts}:{rowid}".encode()).decode()


def _parse_page_token(token: str) -> tuple[int, int]:
    ts, rowid = base64.urlsafe_b64decode(token.encode()).decode().split(":")
    return int(ts), int(rowid)


class _Service:
    def __init__(self, cfg: CollectorConfig, store: Store, hub: Hub, bus: Bus | None = None):
        self.cfg = cfg
        self.store = store
        self.hub = hub
        self.bus = bus if bus is not None and bus.cfg.confirm else None  # confirm mode: Ingest waits for it
        self.stats = {"rejected": 0, "ingest_streams": 0, "batches": 0}

    def _reject(self, context, code, msg: str):
        self.stats["rejected"] += 1
        peer = context.peer()
        log.warning("collector: %s from %s: %s", code.name, peer, msg)
        context.abort(code, msg)

    def ingest(self, request_iterator, context):
        self.stats["ingest_streams"] += 1
        try:
            for raw in request_iterator:
                try:
                    req = cpb.IngestRequest.FromString(raw)
                except DecodeError as e:
                    self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed IngestRequest: {e}")
                which = req.WhichOneof("msg")
                if which == "hello":
                    yield cpb.IngestResponse(hello=cpb.HelloAck(max_batch_events=self.cfg.max_batch_events,
                                                                max_message_bytes=self.cfg.max_message_bytes))
                    continue
                if which != "batch":
                    self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, "IngestRequest has neither hello nor batch")
                events = req.batch.events
                if len(events) > self.cfg.max_batch_events:
                    self._reject(context, grpc.StatusCode.INVALID_ARGUMENT,
                                 f"batch of {len(events)} events; the limit is {self.cfg.max_batch_events}")
                # The store checks each event as it makes its row (one pass over the batch):
                # an event without its ids refuses the whole batch, and nothing of it is stored.
                stored = dups = last = 0
                if len(events):
                    bodies = event_bodies(raw, events)
                    try:
                        stored, dups, last = self.store.ingest(events, bodies)
                    except BatchError as e:
                        self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
                    except StoreError as e:
                        self._reject(context, grpc.StatusCode.UNAVAILABLE, str(e))
                    # The batch's duplicates too: a resend may be of events a dead replica stored but
                    # never published (JetStream's msg-id window drops the ones that were).
                    if self.bus is not None and not self.bus.confirm(
                            events, bodies if bodies is not None else [e.SerializeToString() for e in events]):
                        self._reject(context, grpc.StatusCode.UNAVAILABLE,
                                     "stored, but not yet published to NATS: resend the batch")
                self.stats["batches"] += 1
                yield cpb.IngestResponse(ack=cpb.Ack(batch_id=req.batch.batch_id, last_seq=last,
                                                    stored=stored, duplicates=dups))
        finally:
            self.stats["ingest_streams"] -= 1

    def _filter(self, raw: bytes, msg_type, context):
        try:
            req = msg_type.FromString(raw)
        except DecodeError as e:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed {msg_type.__name__}: {e}")
        try:
            return req, EventFilter.from_pb(req.filter)
        except FilterError as e:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad filter: {e}")

    def query(self, raw: bytes, context):
        req, flt = self._filter(raw, cpb.QueryRequest, context)
        limit = min(req.limit or 1000, 10000)
        after = None
        if req.page_token:
            try:
                after = _parse_page_token(req.page_token)
            except (ValueError, UnicodeDecodeError):
                self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, "bad page_token")
        chunk, sent, last, more = [], 0, None, False
        try:
            for rowid, ts, body in self.store.query(flt, limit + 1, after):
                if sent == limit:
                    more = True
                    break
                chunk.append(body)
                sent += 1
                last = (ts, rowid)
                if len(chunk) == _CHUNK and sent < limit:
                    yield _events_message(chunk)
                    chunk = []
        except Exception as e:  # sqlite3 errors: the store is busy or broken, the server is not
            log.error("collector: query failed: %s", e)
            context.abort(grpc.StatusCode.INTERNAL, f"query failed: {e}")
        yield _events_message(chunk, token=_page_token(*last) if more else "")

    def subscribe(self, raw: bytes, context):
        req, flt = self._filter(raw, cpb.SubscribeRequest, context)
        sub = self.hub.add(flt, self.cfg.subscriber_queue)
        try:
            # Registered first, cut-off second: everything up to the cut-off is replayed from
            # the store, everything after it arrives live, nothing twice, nothing missed.
            cutoff = self.store.max_id()
            if req.replay:
                chunk = []
                for _rowid, _ts, body in self.store.query(flt, 1 << 62, None, max_id=cutoff):
                    chunk.append(body)
                    if len(chunk) == _CHUNK:
                        yield _events_message(chunk)
                        chunk = []
                if chunk:
                    yield _events_message(chunk)
            reported = 0
            while context.is_active():
                items, dropped = sub.take(_CHUNK, timeout=1.0)
                bodies = [body for rowid, body in items if rowid > cutoff]
                if bodies or dropped != reported:
                    reported = dropped
                    yield _events_message(bodies, dropped=dropped)
                elif sub.closed:
                    return
        finally:
            self.hub.remove(sub)


class _TokenAuth(grpc.ServerInterceptor):
    """Refuses calls without `authorization: Bearer <token>`; health checks stay open so that
    kubelet probes need no secret."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or details.method.startswith("/grpc.health.v1.Health/"):
            return handler
        got = dict(details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(got.encode() if isinstance(got, str) else got, self._expected):
            return handler
        msg = "missing or wrong token: send metadata 'authorization: Bearer <token>'"

        def deny(_request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, msg)

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


class CollectorHandle:
    """A running collector: `address` (connectable), `addresses` (all), `stop()`, `wait()`."""

    def __init__(self, server, store: Store, hub: Hub, service: _Service, health_servicer, addresses, metrics,
                 profiles: ProfileTable | None = None, bus: Bus | None = None, fanout=None):
        self.server = server
        self.bus = bus
        self.fanout = fanout
        self.profiles = profiles
        self.store = store
        self.hub = hub
        self.service = service
        self._health = health_servicer
        self.addresses = addresses
        self.address = addresses[0]
        self._metrics_server = metrics
        self.console = None  # collector/console, when http_listen is set
        self.outputs: list = []  # collector/outputs, started by serve()

    def metrics(self) -> dict:
        prof = self.profiles.stats if self.profiles is not None else {}
        return {**self.store.stats, **self.service.stats, **prof, "subscribers": self.hub.count(),
                "subscriber_drops": self.hub.dropped(),
                "profiles": self.profiles.count() if self.profiles is not None else 0}

    def collect(self):
        """prometheus_client custom-collector protocol: `registry.register(handle)`."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.metrics()
        for key, help_ in (("stored", "Events stored"), ("duplicates", "Resent events already stored"),
                           ("rejected", "Calls refused as malformed, oversized or failed"),
                           ("subscriber_drops", "Events dropped for slow subscribers"),
                           ("retention_deleted", "Events deleted by retention"),
                           ("write_errors", "Failed store commits")):
            yield CounterMetricFamily(f"nodewarden_collector_{key}", help_, value=m[key])
        for key, help_ in (("profile_pushes", "Profile documents pushed and stored"),
                           ("profile_refused", "Profile documents refused (malformed, oversized, over max_profiles)"),
                           ("profile_merge_overflow", "Profile items left out of merged profiles by max_profile_items"),
                           ("profile_docs_unkept", "Pushes merged whose agent's own document was not kept"),
                           ("profile_write_errors", "Failed profile commits")):
            if key in m:
                yield CounterMetricFamily(f"nodewarden_collector_{key}", help_, value=m[key])
        yield GaugeMetricFamily("nodewarden_collector_profiles", "Workload profiles held", value=m["profiles"])
        if self.fanout is not None:
            yield CounterMetricFamily("nodewarden_collector_sink_errors", "Publish sinks that raised on a commit",
                                      value=self.fanout.errors[0])
        if self.bus is not None:
            yield from self.bus.collect()
        if hasattr(self.store, "collect"):  # the PostgreSQL store's own (collector/store_pg.py)
            yield from self.store.collect()
        if self.console is not None:
            yield from self.console.collect()
        yield from collect_outputs(self.outputs)
        yield GaugeMetricFamily("nodewarden_collector_ingest_streams", "Open Ingest streams",
                                value=m["ingest_streams"])
        yield GaugeMetricFamily("nodewarden_collector_subscribers", "Live subscribers", value=m["subscribers"])

    def stop(self, grace: float = 2.0) -> None:
        self._health.enter_graceful_shutdown()
        if self.console is not None:  # first: its live tails are Hub subscribers
            self.console.stop()
        self.hub.close_all()
        self.server.stop(grace).wait(grace + 5)
        self.store.stop()
        if self.bus is not None:  # after the store: its last commits are published too
            self.bus.stop()
        stop_outputs(self.outputs, 2.0)  # after the store too: they send what they hold, together, for up to 2 s
        if self.profiles is not None:
            self.profiles.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()

    def wait(self) -> None:
        self.server.wait_for_termination()


def _server_credentials(cfg: CollectorConfig):
    if not cfg.tls_cert:
        if cfg.tls_key or cfg.tls_client_ca:
            raise ValueError("tls_key / tls_client_ca need tls_cert")
        return None
    if not cfg.tls_key:
        raise ValueError("tls_cert needs tls_key")
    ca = Path(cfg.tls_client_ca).read_bytes() if cfg.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _bind(server, addr: str, creds) -> str:
    if addr.startswith("unix:"):
        # gRPC's forms: unix:relative/or/absolute/path and unix:///absolute/path
        path = addr[len("unix://"):] if addr.startswith("unix://") else addr[len("unix:"):]
        if os.path.exists(path):
            os.unlink(path)  # a socket left by a collector that was killed
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    port = server.add_secure_port(addr, creds) if creds else server.add_insecure_port(addr)
    if not port:
        raise OSError(f"cannot listen on {addr}")
    if addr.startswith("unix:"):
        return addr
    host = addr.rsplit(":", 1)[0]
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"{host}:{port}"


def _fanout(sinks: list):
    """One publish callable for the store over the live-tail Hub and the other sinks (the bus, alert
    outputs), in turn: one sink's exception is logged and counted (`.errors[0]`), the others still
    get the commit. Each sink must return at once (a bounded queue and a thread of its own)."""
    errors = [0]

    def publish(published: list) -> None:
        for sink in sinks:
            try:
                sink(published)
            except Exception:
                errors[0] += 1
                log.exception("collector: publish sink %r failed", sink)

    publish.errors = errors
    return publish


def _bus(cfg: CollectorConfig) -> Bus | None:
    if not cfg.nats:
        return None
    if not isinstance(cfg.nats, str) or not all(isinstance(k, str) for k in cfg.nats_kinds or ()):
        raise ValueError("nats: expected nats://host:port[,nats://host:port...] and a list of kinds")
    return Bus(BusConfig(servers=cfg.nats.split(","), stream=cfg.nats_stream,
                         min_severity=parse_severity(cfg.nats_min_severity), kinds=tuple(cfg.nats_kinds),
                         replicas=cfg.nats_replicas, confirm=cfg.nats_confirm, max_queue=cfg.nats_queue))


def store_name(cfg: CollectorConfig) -> str:
    """What to call the store in messages (a PostgreSQL URL without its password)."""
    if cfg.store:
        from collector.store_pg import redact

        return redact(cfg.store)
    return cfg.db


def _open_store(cfg: CollectorConfig, hub: Hub, sinks: list):
    """SQLite at cfg.db (the default), or PostgreSQL at cfg.store (collector/store_pg.py), shared by
    replicas: there the Hub is fed by the store's live tail (what any replica stored), and the sinks
    get this replica's own commits only, so each event goes out once across replicas. Returns
    (store, the fan-out it publishes to)."""
    if cfg.store:
        from collector.store_pg import PgStore

        fanout = _fanout(sinks)
        return PgStore(cfg.store, cfg.retention_age_s, cfg.retention_bytes, publish=fanout if sinks else None,
                       tail=hub.publish, listening=hub.count, partition_s=cfg.store_partition_s), fanout
    fanout = _fanout([hub.publish, *sinks])
    return Store(cfg.db, cfg.retention_age_s, cfg.retention_bytes, publish=fanout,
                 listening=(lambda: True) if sinks else hub.count), fanout


def serve(cfg: CollectorConfig) -> CollectorHandle:
    """Start a collector (its own threads) and return its handle."""
    hub = Hub()
    bus = _bus(cfg)
    # Sinks beside the Hub get every commit; the Hub only while someone subscribes (the store skips
    # building rows when nobody listens).
    sinks = [bus.offer] if bus is not None and not bus.cfg.confirm else []
    outputs = build_outputs(cfg.outputs)  # a bad one: OutputError (ValueError), one line, before anything runs
    sinks += [out.offer for out in outputs]
    store, fanout = _open_store(cfg, hub, sinks)
    service = _Service(cfg, store, hub, bus)
    token = cfg.read_token()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="nw-collector"),
        interceptors=[_TokenAuth(token)] if token else [],
        maximum_concurrent_rpcs=cfg.max_workers,
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            # Agents ping every 30 s on idle streams (agent/outputs/grpc_channel.py).
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    handlers = {
        "Ingest": grpc.stream_stream_rpc_method_handler(
            service.ingest, response_serializer=cpb.IngestResponse.SerializeToString),
        "Query": grpc.unary_stream_rpc_method_handler(service.query),
        "Subscribe": grpc.unary_stream_rpc_method_handler(service.subscribe),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    limits = ProfileLimits(max_profiles=cfg.max_profiles, max_items=cfg.max_profile_items,
                           max_doc_bytes=cfg.max_message_bytes)
    if cfg.store:  # replicas share the store: profiles live in its database too (collector/profiles_pg.py)
        from collector.profiles_pg import PgProfileTable

        try:
            profiles = PgProfileTable(cfg.store, limits)
        except BaseException:
            store.stop()
            raise
    else:
        profiles = ProfileTable(cfg.profiles_db or profiles_db_path(cfg.db), limits)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        PROFILES_SERVICE, ProfileService(profiles, service._reject).handlers()),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    creds = _server_credentials(cfg)
    addresses = [_bind(server, a, creds) for a in cfg.listen]
    if bus is not None:
        bus.start()
    for out in outputs:
        out.start()
    store.start()
    server.start()
    for svc in ("", SERVICE, PROFILES_SERVICE):
        health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
    metrics = None
    handle = CollectorHandle(server, store, hub, service, health_servicer, addresses, None, profiles, bus, fanout)
    handle.outputs = outputs
    if cfg.metrics_listen:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(handle)
        host, port = cfg.metrics_listen.rsplit(":", 1)
        metrics = start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
        handle._metrics_server = metrics[0] if isinstance(metrics, tuple) else metrics
    if cfg.http_listen:
        from collector.console import start_console

        try:
            status = None
            if cfg.store:  # as the profiles: one status table every replica's console reads and writes
                from collector.status_pg import PgStatusTable

                status = PgStatusTable(cfg.store)
            handle.console = start_console(cfg, store, hub, status)
            log.info("collector: console on %s", handle.console.url)
        except OSError as e:
            if not cfg.http_optional:
                handle.stop()
                raise
            log.warning("collector: no console: %s", e)
        except BaseException:
            handle.stop()
            raise
    log.info("collector: listening on %s, store %s", ", ".join(addresses), store_name(cfg))
    return handle
