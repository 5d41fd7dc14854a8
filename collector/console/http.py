"""The console's HTTP server: the page, its script and style, and the JSON API under /api/.

    GET  /                          the page (a shell: the script fetches everything through the API)
    GET  /static/console.js|.css
    GET  /healthz                   "ok", no token (probes)
    GET  /api/events?FILTER&limit=&before=    a page of summaries, newest first; `next` continues it
    GET  /api/events/ID             one event: summary, flat record, lineage, findings, status
    POST /api/events/ID/status      {"status": "handled"|"ignored"|"unhandled", "note": "..."}
    GET  /api/counts?FILTER         counts per time bucket by severity, rule, namespace, image
    GET  /api/export?FILTER&format=json|csv&limit=
    GET  /api/tail?FILTER           server-sent events: each new matching event as it is stored
FILTER: since, until (RFC 3339, a duration ago such as 1h, or ns), severity (at least), kind (alert, verdict,
block; repeat), rule, node (repeat), namespace, pod, container, image, text, status.

The standard library's threading HTTP server: one thread per connection, at most `max_connections`
at once (beyond it a connection gets 503 at once and is counted), and at most `max_tails` live tails.
Auth is the collector's token as `Authorization: Bearer`; a browser's EventSource cannot send that
header, so the page reads the tail with fetch() and parses the stream itself. TLS with the
collector's certificate when it has one; the handshake runs in the connection's thread, so a slow
client never holds up accept().
"""

from __future__ import annotations

import csv
import hmac
import io
import ipaddress
import logging
import select
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import orjson

from collector.console import query as cq
from collector.filters import FilterError
from collector.status import StatusError

log = logging.getLogger(__name__)

_STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
_MAX_BODY = 16 << 10  # a status change is a few bytes
_EXPORT_MAX = 100_000


def parse_listen(addr: str) -> tuple[str, int]:
    """("127.0.0.1", 7480) from "127.0.0.1:7480", "[::1]:7480" or ":7480" (loopback, never all interfaces)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"console address {addr!r}: expected HOST:PORT, e.g. 127.0.0.1:7480")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, console: Console, family):
        self.address_family = family
        self.console = console
        self._slots = threading.BoundedSemaphore(console.max_connections)
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.console.count("console_busy_refused")
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):  # a client that went away is not worth a traceback
        log.debug("console: connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # a client that stops reading or writing for this long is dropped
    server_version = "nodewarden-console"
    sys_version = ""

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *args):
        log.debug("console: %s " + fmt, self.address_string(), *args)

    # -- replies ------------------------------------------------------------------------------

    def _head(self, code: int, ctype: str, length: int | None = None, extra: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _json(self, obj, code: int = 200):
        data = orjson.dumps(obj)
        self._head(code, "application/json", len(data))
        self.wfile.write(data)

    def _error(self, code: int, msg: str):
        c = self.server.console
        c.count({400: "console_bad_requests", 401: "console_unauthorized"}.get(code, "console_errors"))
        extra = {"WWW-Authenticate": 'Bearer realm="nodewarden"'} if code == 401 else None
        data = orjson.dumps({"error": msg})
        self._head(code, "application/json", len(data), extra)
        self.wfile.write(data)

    def _authorized(self) -> bool:
        expected = self.server.console.token
        if not expected:
            return True
        got = self.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode("utf-8", "replace"), f"Bearer {expected}".encode())

    # -- routing --------------------------------------------------------------------------------

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str):
        c = self.server.console
        c.count("console_requests")
        url = urlsplit(self.path)
        path = url.path
        try:
            if method == "GET" and path in ("/", "/index.html"):
                return self._static("index.html", "text/html; charset=utf-8")
            if method == "GET" and path.startswith("/static/") and path[8:] in _STATIC:
                return self._static(path[8:], _STATIC[path[8:]])
            if method == "GET" and path == "/healthz":
                return self._json({"ok": True})
            if not path.startswith("/api/"):
                return self._error(404, f"no such page: {path}")
            if not self._authorized():
                return self._error(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
            try:
                params = parse_qs(url.query, keep_blank_values=False, max_num_fields=200)
            except ValueError as e:
                return self._error(400, f"bad query string: {e}")
            parts = path[5:].strip("/").split("/")
            if method == "GET" and parts == ["events"]:
                return self._events(params)
            if parts[0] == "events" and len(parts) >= 2:
                if not parts[1].isdigit() or len(parts[1]) > 19:
                    return self._error(400, f"bad event id {parts[1]!r}")
                rowid = int(parts[1])
                if method == "GET" and len(parts) == 2:
                    return self._detail(rowid)
                if method == "POST" and parts[2:] == ["status"]:
                    return self._set_status(rowid)
            if method == "GET" and parts == ["counts"]:
                return self._json(cq.counts(c.reader, c.status, cq.parse_query(params)))
            if method == "GET" and parts == ["export"]:
                return self._export(params)
            if method == "GET" and parts == ["tail"]:
                return self._tail(params)
            return self._error(404, f"no such API: {method} {path}")
        except FilterError as e:
            return self._error(400, f"bad filter: {e}")
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            return None  # the client went away
        except Exception as e:  # a store error: this request fails, the console goes on
            log.exception("console: %s %s failed", method, path)
            try:
                return self._error(500, f"internal error: {e}")
            except OSError:
                return None

    def _static(self, name: str, ctype: str):
        data = self.server.console.asset(name)
        self._head(200, ctype, len(data))
        self.wfile.write(data)

    def _events(self, params):
        c = self.server.console
        q = cq.parse_query(params)
        limit = _int(params, "limit", 50, 1, 1000)
        got = cq.page(c.reader, c.status, q, limit, cq.parse_cursor(cq._one(params, "before")))
        return self._json(got)

    def _detail(self, rowid: int):
        c = self.server.console
        got = cq.detail(c.reader, c.status, rowid)
        if got is None:
            return self._error(404, f"no event {rowid} (deleted by retention, or never stored)")
        return self._json(got)

    def _set_status(self, rowid: int):
        c = self.server.console
        length = self.headers.get("Content-Length") or "0"
        n = int(length) if length.isdigit() else 0
        if n <= 0 or n > _MAX_BODY:
            return self._error(400, f"a status change is a JSON body of 1 to {_MAX_BODY} bytes")
        try:
            doc = orjson.loads(self.rfile.read(n))
        except orjson.JSONDecodeError as e:
            return self._error(400, f"body is not JSON: {e}")
        if not isinstance(doc, dict) or not isinstance(doc.get("status"), str) \
                or not isinstance(doc.get("note", ""), str):
            return self._error(400, 'expected {"status": "handled"|"ignored"|"unhandled", "note": "..."}')
        if cq._body(c.reader, rowid) is None:
            return self._error(404, f"no event {rowid}")
        try:
            st = c.status.set(rowid, doc["status"], by=self.client_address[0], note=doc.get("note", ""))
        except StatusError as e:
            return self._error(400, str(e))
        return self._json({"id": rowid, **st})

    def _export(self, params):
        c = self.server.console
        q = cq.parse_query(params)
        fmt = cq._one(params, "format") or "json"
        if fmt not in ("json", "csv"):
            return self._error(400, f"unknown format {fmt!r}: json or csv")
        limit = _int(params, "limit", 10000, 1, _EXPORT_MAX)
        ctype = "application/json" if fmt == "json" else "text/csv; charset=utf-8"
        self._head(200, ctype, None, {"Content-Disposition": f'attachment; filename="nodewarden-events.{fmt}"'})
        w = self.wfile
        n = 0
        if fmt == "csv":
            buf = io.StringIO()
            out = csv.writer(buf)
            out.writerow(cq.CSV_COLUMNS)
            for s, _rec in cq.export_rows(c.reader, c.status, q, limit):
                out.writerow([s[k] for k in cq.CSV_COLUMNS])
                n += 1
                if buf.tell() > 65536:
                    w.write(buf.getvalue().encode())
                    buf.seek(0)
                    buf.truncate()
            w.write(buf.getvalue().encode())
        else:
            w.write(b"[")
            for _s, rec in cq.export_rows(c.reader, c.status, q, limit):
                w.write((b",\n" if n else b"\n") + orjson.dumps(rec))
                n += 1
            w.write(b"\n]\n")
        c.count("console_exported", n)
        self.close_connection = True

    def _tail(self, params):
        c = self.server.console
        q = cq.parse_query(params)
        if not c.tail_slots.acquire(blocking=False):
            c.count("console_tails_refused")
            return self._error(503, f"too many live tails (at most {c.max_tails}); close one")
        sub = c.hub.add(q.flt, c.subscriber_queue)
        reported = 0
        try:
            self._head(200, "text/event-stream", None, {"X-Accel-Buffering": "no"})
            self.wfile.write(b"retry: 2000\n: tail open\n\n")
            self.wfile.flush()
            last_write = time.monotonic()
            while not c.stopping.is_set() and not sub.closed:
                items, dropped = sub.take(200, timeout=1.0)
                # After its request a tail's client sends nothing: readable means it closed (or aborted the
                # fetch), found within a second instead of at the next failed write.
                if select.select([self.connection], [], [], 0)[0]:
                    return
                out = []
                for rowid, body in items:
                    ev = cq.pb.Event.FromString(body)
                    if cq._post_ok(q, ev, None):
                        out.append(cq.summary(rowid, ev))
                chunk = b""
                if out:
                    chunk += b"event: events\ndata: " + orjson.dumps(out) + b"\n\n"
                if dropped != reported:
                    c.count("console_tail_dropped", dropped - reported)
                    reported = dropped
                    chunk += b"event: dropped\ndata: " + str(dropped).encode() + b"\n\n"
                if not chunk and time.monotonic() - last_write > 10:
                    chunk = b": ping\n\n"  # finds a client that went away; keeps proxies from timing out
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    last_write = time.monotonic()
        finally:
            c.hub.remove(sub)
            c.tail_slots.release()
            self.close_connection = True


def _int(params, key: str, default: int, lo: int, hi: int) -> int:
    text = cq._one(params, key)
    if not text:
        return default
    if not text.isdigit():
        raise FilterError(f"{key} must be a number")
    return max(lo, min(hi, int(text)))


class Console:
    """The running console: `address` ("127.0.0.1:7480"), `url`, `stop()`, `collect()` (metrics)."""

    def __init__(self, listen: str, store, hub, status, token: str = "", tls_cert: str = "", tls_key: str = "",
                 tls_client_ca: str = "", max_connections: int = 64, max_tails: int = 16,
                 subscriber_queue: int = 10000):
        host, port = parse_listen(listen)
        self.reader = cq.Reader(store)
        self.hub = hub
        self.status = status
        self.token = token
        self.max_connections = max_connections
        self.max_tails = max_tails
        self.subscriber_queue = subscriber_queue
        self.tail_slots = threading.BoundedSemaphore(max_tails)
        self.stopping = threading.Event()
        self.stats = {k: 0 for k in ("console_requests", "console_unauthorized", "console_bad_requests",
                                     "console_errors", "console_busy_refused", "console_tails_refused",
                                     "console_tail_dropped", "console_exported")}
        self._lock = threading.Lock()
        self._assets: dict[str, bytes] = {}
        self.status_owned = None  # the status backend start_console opened: closed with the console
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _Server((host, port), self, family)
        except OSError as e:
            raise OSError(f"console cannot listen on {listen}: {e.strerror or e}") from e
        self.tls = bool(tls_cert)
        if tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(tls_cert, tls_key or None)
            if tls_client_ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(tls_client_ca)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        bound_host, bound_port = self._server.server_address[:2]
        self.address = f"[{bound_host}]:{bound_port}" if family == socket.AF_INET6 else f"{bound_host}:{bound_port}"
        self.url = f"{'https' if self.tls else 'http'}://{self.address}/"
        if not _loopback(bound_host):
            log.warning("console: listening beyond loopback on %s%s", self.address,
                        "" if token else " WITHOUT a token: anyone who reaches it reads every event")
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="nw-console", daemon=True)

    def start(self) -> Console:
        self._thread.start()
        return self

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def asset(self, name: str) -> bytes:
        data = self._assets.get(name)
        if data is None:
            data = self._assets[name] = resources.files("collector.console").joinpath("static", name).read_bytes()
        return data

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        if self.status_owned is not None:
            self.status_owned.close()

    def collect(self):
        """prometheus_client custom-collector protocol, merged into the collector's registry."""
        from prometheus_client.core import CounterMetricFamily

        helps = {"console_requests": "Console HTTP requests",
                 "console_unauthorized": "Console requests without the token",
                 "console_bad_requests": "Console requests refused as malformed",
                 "console_errors": "Console requests that failed",
                 "console_busy_refused": "Console connections refused over max_connections",
                 "console_tails_refused": "Console live tails refused over max_tails",
                 "console_tail_dropped": "Events dropped for slow console live tails",
                 "console_exported": "Events exported by the console"}
        for key, help_ in helps.items():
            yield CounterMetricFamily(f"nodewarden_collector_{key}", help_, value=self.stats.get(key, 0))
