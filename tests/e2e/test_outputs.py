"""Alert outputs against real receivers on loopback: events go into a collector over gRPC Ingest and
come out at an HTTP server recording requests (webhook, Slack), Debian's prometheus-alertmanager
(read back through its /api/v2/alerts), syslog UDP and TCP listeners parsing RFC 5424, and an OTLP
LogsService gRPC server from opentelemetry-proto; a receiver that is down costs retries then counted
drops; a receiver that sleeps never slows ingest."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import pytest
from test_transport_util import cpb, stub

from agent.events import (
    AlertEvent,
    ContainerInfo,
    Decided,
    EnforcementEvent,
    Enriched,
    ExecEvent,
    Finding,
    Op,
    ProcInfo,
    Verdict,
    VerdictEvent,
)
from agent.outputs.record import flatten
from agent.vocab import Severity
from collector.outputs import OutputError, build
from collector.server import CollectorConfig, serve
from nwwire.codec import parse_timestamp, to_event
from tests.harness.pg import pg_url, postgres  # noqa: F401  (fixtures: a private PostgreSQL)

pytestmark = pytest.mark.e2e

POD = ContainerInfo(id="ab" * 32, name="web", image="evil:1", pod_name="web-0", pod_namespace="shop",
                    namespace="k8s.io")
_seq = iter(range(1, 1 << 40))


def _identity(rec: dict, node: str = "node-a") -> dict:
    return {**rec, "host.name": node, "nodewarden.agent_id": "agent-1", "nodewarden.boot_id": "boot-1",
            "seq": next(_seq)}


def protection_events(ts: int) -> list[dict]:
    """A high alert, a low alert, a block, an image verdict block, and a kernel event: the outputs'
    default filter with min_severity high keeps the first, third and fourth."""
    shell = ExecEvent(op=Op.EXEC, filename="/bin/sh", argv=("sh", "-c", "id"), ts_ns=ts, pid=77, tid=77, ppid=1,
                      uid=0, gid=0, cgroup_id=9, mntns=1, comm="sh", truncated=False)
    subject = Enriched(shell, ProcInfo(77, 1, "/bin/sh", ("sh", "-c", "id"), 0, ts), None, POD)
    finding = Decided(Finding("malware", Severity.CRITICAL, "eicar", path="/eicar.com"), "block",
                      "categories.malware.block >= high")
    typed = [
        AlertEvent(ts + 1, "NW-100", "shell in a container", "a shell ran", Severity.HIGH, ("Execution",),
                   ("T1059.004",), subject=subject, output="sh -c id in web-0"),
        AlertEvent(ts + 2, "NW-200", "low thing", "d", Severity.LOW),
        EnforcementEvent(ts + 3, "kernel.exec", "kill", "deny_exec /bin/sh", outcome="killed", subject=subject),
        VerdictEvent(ts + 4, Verdict("block", "malware: eicar in /eicar.com", [finding], image="evil:1",
                                     digest="sha256:ee", duration_ms=3.5, policy="0123abcd"), POD),
    ]
    return [_identity(flatten(t)) for t in typed] + [_identity(flatten(subject))]


def ingest(address: str, recs: list, batch: int = 1000) -> None:
    """recs (flat records or their Events) through the collector's Ingest, acked batch by batch."""
    events = [r if not isinstance(r, dict) else to_event(r) for r in recs]

    def requests():
        yield cpb.IngestRequest(hello=cpb.Hello(agent_id="agent-1", node="node-a"))
        for n in range(0, len(events), batch):
            yield cpb.IngestRequest(batch=cpb.Batch(batch_id=n + 1, events=events[n:n + batch]))

    acks = [r for r in stub(address).Ingest(requests()) if r.HasField("ack")]
    assert sum(a.ack.stored for a in acks) == len(recs)


def wait_for(pred, timeout: float = 10.0, what: str = ""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or pred}")


def metric(handle, name: str, **labels) -> float:
    for fam in handle.collect():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


# -- receivers -------------------------------------------------------------------------------------------

def _handler(rec):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the outputs use it

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if rec.delay:
                time.sleep(rec.delay)
            rec.requests.append((self.path, dict(self.headers), json.loads(body)))
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


class Recorder:
    """An HTTP server recording each POST (path, headers, JSON body); `delay` s before answering."""

    def __init__(self, delay: float = 0.0, status: int = 200, port: int = 0, tls=None):
        self.requests: list[tuple[str, dict, object]] = []
        self.delay, self.status = delay, status
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"http{'s' if tls else ''}://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


_RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    rb"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+) (?P<msg>.*)", re.S)
_SD_PARAM = re.compile(rb'(\S+?)="((?:[^"\\]|\\.)*)"')


def parse_5424(frame: bytes) -> dict:
    m = _RFC5424.fullmatch(frame)
    assert m, frame
    sd_id = m["sd"][1:].split(b" ", 1)[0].decode()
    params = {k.decode(): re.sub(rb"\\(.)", rb"\1", v).decode() for k, v in _SD_PARAM.findall(m["sd"])}
    msg = m["msg"].decode()
    assert msg.startswith("\ufeff")  # RFC 5424: UTF-8 MSG starts with the BOM
    return {"pri": int(m["pri"]), "ts": m["ts"].decode(), "host": m["host"].decode(), "app": m["app"].decode(),
            "msgid": m["msgid"].decode(), "sd_id": sd_id, "sd": params, "msg": msg[1:]}


class SyslogListener:
    """UDP: one message per datagram (RFC 5426). TCP: octet counting, "<len> <msg>" (RFC 6587)."""

    def __init__(self, tls=None):
        self.messages: list[tuple[str, dict]] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self._stop = threading.Event()
        listener = self

        class TCP(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    head = b""
                    while not head.endswith(b" "):
                        ch = self.rfile.read(1)
                        if not ch:
                            return
                        head += ch
                    proto = "tls" if tls is not None else "tcp"
                    listener.messages.append((proto, parse_5424(self.rfile.read(int(head)))))

        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), TCP)
        self.tcp.daemon_threads = True
        if tls is not None:  # RFC 5425: the same octet counting, inside TLS
            self.tcp.socket = tls.wrap_socket(self.tcp.socket, server_side=True)
        self.threads = [threading.Thread(target=self.tcp.serve_forever, daemon=True),
                        threading.Thread(target=self._udp_loop, daemon=True)]
        for t in self.threads:
            t.start()

    def _udp_loop(self):
        while not self._stop.is_set():
            try:
                data = self.udp.recv(65535)
            except TimeoutError:
                continue
            self.messages.append(("udp", parse_5424(data)))

    def close(self):
        self._stop.set()
        self.tcp.shutdown()
        self.tcp.server_close()
        self.threads[1].join()
        self.udp.close()


class OtlpReceiver:
    """opentelemetry-proto's LogsService on a gRPC server: records each ExportLogsServiceRequest."""

    def __init__(self):
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

        self.requests: list = []
        recv = self

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                recv.requests.append(request)
                return logs_service_pb2.ExportLogsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.server)
        self.endpoint = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def records(self) -> list:
        return [lr for req in self.requests for rl in req.resource_logs for sl in rl.scope_logs
                for lr in sl.log_records]

    def close(self):
        self.server.stop(0).wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path):
    exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if exe is None:
        pytest.skip("Debian's prometheus-alertmanager is not installed (scripts/setup.sh test installs it)")
    with run_alertmanager(exe, tmp_path) as url:
        yield url


@contextlib.contextmanager
def run_alertmanager(exe: str, tmp_path):
    """Alertmanager on a free loopback port, its config and storage in tmp_path, no clustering."""
    (tmp_path / "am.yml").write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    port = _free_port()
    proc = subprocess.Popen([exe, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"alertmanager exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            return urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 20, "alertmanager ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def receivers():
    made: list = []

    def make(cls, *a, **kw):
        r = cls(*a, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def collector(tmp_path, outputs: list) -> object:
    return serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), outputs=outputs))


# -- tests -----------------------------------------------------------------------------------------------

def test_webhook_and_slack_get_what_their_filters_keep(tmp_path, receivers):
    hook, chat = receivers(Recorder), receivers(Recorder)
    handle = collector(tmp_path, [
        {"type": "webhook", "url": f"{hook.url}/nodewarden", "min_severity": "high",
         "headers": {"Authorization": "Bearer s3cret"}},
        {"type": "slack", "url": f"{chat.url}/services/T0/B0/x", "kinds": ["alert"], "min_severity": "high",
         "channel": "#security", "console_url": "http://console.local/events/{id}"},
    ])
    try:
        recs = protection_events(time.time_ns())
        ingest(handle.address, recs)
        wait_for(lambda: len(hook.requests) == 3 and len(chat.requests) == 1, what="webhook and slack posts")
        # webhook: the flat record of each kept event, as the JSON log prints it, plus its stored id
        names = [body["event.name"] for _, _, body in hook.requests]
        assert names == ["alert", "enforcement.block", "image.verdict"]
        path, headers, body = hook.requests[0]
        assert path == "/nodewarden" and headers["Authorization"] == "Bearer s3cret"
        assert headers["Content-Type"] == "application/json"
        want = {k: v for k, v in recs[0].items()}
        assert {k: body[k] for k in want} == want
        assert body["collector.event.id"] == 1
        assert hook.requests[2][2]["image.verdict"] == "block"
        # slack: text for notifications, blocks for the message; only the high alert
        path, _, msg = chat.requests[0]
        assert path == "/services/T0/B0/x" and msg["channel"] == "#security"
        assert "shell in a container" in msg["text"] and "sh -c id in web-0" in msg["text"]
        assert "node-a" in msg["text"]
        fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in msg["blocks"][1]["fields"]}
        assert fields["*Rule*"] == "NW-100" and fields["*Namespace*"] == "shop" and fields["*Pod*"] == "web-0"
        assert fields["*Image*"] == "evil:1" and fields["*Severity*"] == "high"
        assert "http://console.local/events/1" in msg["blocks"][2]["elements"][0]["text"]
        # the receiver has it a moment before the output counts it sent
        wait_for(lambda: metric(handle, "nodewarden_collector_output_sent_total", type="webhook") == 3, 10, "sent == 3")
        # the receiver has it a moment before the output counts it sent
        wait_for(lambda: metric(handle, "nodewarden_collector_output_sent_total", type="slack") == 1, 10, "sent == 1")
    finally:
        handle.stop()


def test_alertmanager_v2_holds_the_alerts(tmp_path, alertmanager):
    handle = collector(tmp_path, [{"type": "alertmanager", "url": alertmanager, "min_severity": "high",
                                   "labels": {"cluster": "prod-1"}, "resolve_after": "1h",
                                   "console_url": "http://console.local/events/{id}"}])
    try:
        recs = protection_events(time.time_ns())
        ingest(handle.address, recs)

        def alerts():
            got = json.load(urllib.request.urlopen(f"{alertmanager}/api/v2/alerts", timeout=5))
            return got if len(got) == 3 else None

        got = {a["labels"]["kind"]: a for a in wait_for(alerts, 15, "3 alerts in alertmanager")}
        a = got["alert"]
        assert a["labels"] == {"alertname": "shell in a container", "rule": "NW-100", "severity": "high",
                               "kind": "alert", "action": "alert", "node": "node-a", "namespace": "shop",
                               "pod": "web-0", "container": "web", "image": "evil:1", "cluster": "prod-1"}
        assert a["annotations"]["summary"] == "sh -c id in web-0"
        assert a["annotations"]["event_id"] == "1"
        assert a["generatorURL"] == "http://console.local/events/1"
        assert a["status"]["state"] == "active"
        assert a["startsAt"].startswith(recs[0]["timestamp"][:19])  # Alertmanager keeps ms
        assert got["enforcement.block"]["labels"]["action"] == "kill"
        assert got["image.verdict"]["labels"]["alertname"] == "image block: evil:1"
        # the receiver has it a moment before the output counts it sent
        wait_for(lambda: metric(handle, "nodewarden_collector_output_sent_total", type="alertmanager") == 3, 10,
                 "sent == 3")
    finally:
        handle.stop()


def test_syslog_rfc5424_over_udp_and_tcp(tmp_path, receivers):
    lis = receivers(SyslogListener)
    udp_port, tcp_port = lis.udp.getsockname()[1], lis.tcp.server_address[1]
    handle = collector(tmp_path, [
        {"type": "syslog", "address": f"udp://127.0.0.1:{udp_port}", "min_severity": "high", "facility": "authpriv"},
        {"type": "syslog", "address": f"tcp://127.0.0.1:{tcp_port}", "min_severity": "high", "format": "json"},
    ])
    try:
        recs = protection_events(time.time_ns())
        recs[0]["alert.output"] = 'sh -c "id"\nin ]web-0['  # quotes, a newline, brackets: SD escapes, TCP framing
        ingest(handle.address, recs)
        wait_for(lambda: len(lis.messages) == 6, what="6 syslog messages")
        by = {(proto, m["msgid"]): m for proto, m in lis.messages}
        udp = by[("udp", "alert")]
        assert udp["pri"] == 10 * 8 + 3  # authpriv.err: a high alert
        assert udp["host"] == "node-a" and udp["app"] == "nodewarden" and udp["sd_id"] == "nodewarden@32473"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", udp["ts"])  # at most 6 digits of fraction
        assert udp["sd"] == {"rule": "NW-100", "severity": "high", "action": "alert", "node": "node-a",
                             "namespace": "shop", "pod": "web-0", "container": "ab" * 32, "image": "evil:1",
                             "id": "1"}
        assert udp["msg"] == 'shell in a container: sh -c "id"\nin ]web-0['
        tcp = by[("tcp", "alert")]
        assert tcp["pri"] == 16 * 8 + 3  # local0 by default
        assert json.loads(tcp["msg"])["alert.output"] == recs[0]["alert.output"]
        assert by[("tcp", "enforcement.block")]["sd"]["action"] == "kill"
        assert by[("udp", "image.verdict")]["pri"] == 10 * 8 + 2  # critical finding: crit
    finally:
        handle.stop()


def _tls_pair(tmp_path):
    """A self-signed certificate for 127.0.0.1 (the clients' CA file) and a server context holding it."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "ca.pem", tmp_path / "key.pem")
    return str(tmp_path / "ca.pem"), ctx


def test_webhook_over_https_and_syslog_over_tls(tmp_path, receivers):
    ca, ctx = _tls_pair(tmp_path)
    hook, lis = receivers(Recorder, tls=ctx), receivers(SyslogListener, tls=ctx)
    handle = collector(tmp_path, [
        {"type": "webhook", "url": hook.url, "min_severity": "high", "tls_ca": ca},
        {"type": "syslog", "address": f"tls://127.0.0.1:{lis.tcp.server_address[1]}", "min_severity": "high",
         "tls_ca": ca},
        {"type": "webhook", "name": "untrusting", "url": hook.url, "min_severity": "high", "retries": 0},
    ])
    try:
        ingest(handle.address, protection_events(time.time_ns()))
        wait_for(lambda: len(hook.requests) == 3 and len(lis.messages) == 3, what="3 posts and 3 messages")
        assert {p for p, _ in lis.messages} == {"tls"}
        assert lis.messages[0][1]["sd"]["rule"] == "NW-100"
        # without the CA the certificate is not trusted: nothing sent, all counted
        wait_for(lambda: metric(handle, "nodewarden_collector_output_dropped_total", output="untrusting",
                                reason="failed") == 3, what="untrusting drops")
        # the receiver has it a moment before the output counts it sent
        wait_for(lambda: metric(handle, "nodewarden_collector_output_sent_total", output="webhook-0") == 3, 10,
                 "sent == 3")
    finally:
        handle.stop()


def test_otlp_logs_reach_a_logs_service(tmp_path, receivers):
    recv = receivers(OtlpReceiver)
    handle = collector(tmp_path, [{"type": "otlp", "endpoint": recv.endpoint, "min_severity": "high",
                                   "resource": {"k8s.cluster.name": "prod-1"}}])
    try:
        recs = protection_events(time.time_ns())
        ingest(handle.address, recs)
        wait_for(lambda: len(recv.records()) == 3, what="3 OTLP log records")
        res = {kv.key: kv.value.string_value for kv in recv.requests[0].resource_logs[0].resource.attributes}
        assert res["service.name"] == "nodewarden-collector" and res["k8s.cluster.name"] == "prod-1"
        lr = recv.records()[0]
        assert lr.severity_number == 17 and lr.severity_text == "high"  # ERROR
        assert lr.event_name == "alert"
        assert lr.time_unix_nano == parse_timestamp(recs[0]["timestamp"])
        attrs = {kv.key: kv.value for kv in lr.attributes}
        assert attrs["rule.id"].string_value == "NW-100"
        assert attrs["k8s.namespace.name"].string_value == "shop"
        assert [v.string_value for v in attrs["threat.technique.id"].array_value.values] == ["T1059.004"]
        assert attrs["collector.event.id"].int_value == 1
        assert lr.body.string_value == "shell in a container: sh -c id in web-0"
        verdict = recv.records()[2]
        assert verdict.severity_number == 21  # critical: FATAL
        assert json.loads({kv.key: kv.value for kv in verdict.attributes}["image.findings"].string_value)
    finally:
        handle.stop()


def test_receiver_down_retries_then_counts_drops(tmp_path, caplog):
    from prometheus_client import CollectorRegistry, generate_latest

    port = _free_port()  # nothing listens there
    handle = collector(tmp_path, [{"type": "webhook", "url": f"http://127.0.0.1:{port}/x", "min_severity": "high",
                                   "retries": 2, "backoff": 0.05, "timeout": 1}])
    try:
        ingest(handle.address, protection_events(time.time_ns()))
        wait_for(lambda: metric(handle, "nodewarden_collector_output_dropped_total", reason="failed") == 3,
                 what="3 failed drops")
        assert metric(handle, "nodewarden_collector_output_retries_total") == 2
        assert metric(handle, "nodewarden_collector_output_sent_total") == 0
        # the collector's registry, as --metrics serves it
        reg = CollectorRegistry()
        reg.register(handle)
        text = generate_latest(reg).decode()
        assert ('nodewarden_collector_output_dropped_total{output="webhook-0",reason="failed",type="webhook"} 3.0'
                in text)
        drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert drops and "webhook-0 (webhook): dropped 3 events (failed)" in drops[0]
        assert "Connection refused" in drops[0] and "after 2 retries" in drops[0]
    finally:
        handle.stop()


def test_receiver_that_comes_back_gets_the_events(tmp_path):
    port = _free_port()
    handle = collector(tmp_path, [{"type": "webhook", "url": f"http://127.0.0.1:{port}/x", "min_severity": "high",
                                   "retries": 8, "backoff": 0.1, "backoff_max": 0.4}])
    up = None
    try:
        ingest(handle.address, protection_events(time.time_ns()))
        wait_for(lambda: metric(handle, "nodewarden_collector_output_retries_total") >= 2, what="2 retries")

        up = Recorder(port=port)  # on the port the output keeps trying
        wait_for(lambda: len(up.requests) == 3, what="3 events once the receiver is up")
        assert metric(handle, "nodewarden_collector_output_dropped_total", reason="failed") == 0
        # the receiver has it a moment before the output counts it sent
        wait_for(lambda: metric(handle, "nodewarden_collector_output_sent_total") == 3, 10, "sent == 3")
    finally:
        handle.stop()
        if up is not None:
            up.close()


def test_receiver_refusal_is_not_retried(tmp_path, receivers):
    bad = receivers(Recorder, status=400)
    handle = collector(tmp_path, [{"type": "slack", "url": bad.url, "min_severity": "high", "backoff": 0.05}])
    try:
        ingest(handle.address, protection_events(time.time_ns()))
        wait_for(lambda: metric(handle, "nodewarden_collector_output_dropped_total", reason="rejected") == 3,
                 what="3 rejected")
        assert len(bad.requests) == 3  # each tried once: a 400 will not pass later
        assert metric(handle, "nodewarden_collector_output_retries_total") == 0
    finally:
        handle.stop()


def test_a_slow_receiver_never_stalls_ingest(tmp_path, receivers):
    """Ingest of N events with a webhook that takes 0.5 s per request, against the same ingest with no
    output: the writer only appends to a bounded queue; what does not fit is dropped and counted."""
    n = 20000
    slow = receivers(Recorder, delay=0.5)
    recs = []
    ts = time.time_ns()
    for i in range(n):
        base = protection_events(ts + i * 10)
        recs.append(base[0] if i % 2 else base[4])  # half high alerts (kept), half kernel events (filtered)

    def timed(outputs, sub):
        (tmp_path / sub).mkdir()
        handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / sub / "events.db"),
                                       outputs=outputs))
        try:
            events = [to_event(r) for r in recs]  # made before the clock starts: ingest is what is timed
            t0 = time.perf_counter()
            ingest(handle.address, events)
            return time.perf_counter() - t0, handle
        finally:
            handle.stop(0.5)

    timed([], "warm-up")  # the first collector of a process pays for imports and first-use caches
    base_s, _ = timed([], "plain")
    slow_s, h = timed([{"type": "webhook", "url": slow.url, "min_severity": "high", "queue": 1000,
                        "timeout": 5}], "slow")
    print(f"ingest of {n} events: {n / base_s:,.0f}/s without outputs, {n / slow_s:,.0f}/s with a webhook "
          f"answering in 0.5 s")
    assert slow_s < base_s * 1.5 + 0.5, (base_s, slow_s)
    kept = n // 2
    dropped = sum(h.outputs[0].dropped.values())
    assert h.outputs[0].dropped["queue_full"] > kept // 2  # the queue holds 1000, the thread takes 100 at a time
    assert h.outputs[0].sent + dropped == kept  # every kept event sent or counted: stop() counts what was queued


def test_two_replicas_on_postgresql_send_each_event_once(tmp_path, receivers, pg_url):  # noqa: F811
    """Each replica sends what it stored itself: agents spread over both, and a batch resent to the other
    replica (as after a failover) is a duplicate there, stored and sent by neither a second time."""
    hook = receivers(Recorder)
    spec = [{"type": "webhook", "url": hook.url, "min_severity": "high"}]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "a" / "e.db"), store=pg_url, outputs=spec))
    b = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "b" / "e.db"), store=pg_url, outputs=spec))
    try:
        ts = time.time_ns()
        first = [to_event(r) for r in protection_events(ts)]
        second = [to_event({**r, "nodewarden.agent_id": "agent-2"}) for r in protection_events(ts + 100)]
        ingest(a.address, first)
        ingest(b.address, second)
        events = stub(b.address).Ingest(iter([cpb.IngestRequest(batch=cpb.Batch(batch_id=9, events=first))]))
        assert [r.ack.duplicates for r in events] == [len(first)]  # the resend: nothing new
        wait_for(lambda: len(hook.requests) >= 6, what="6 posts")
        time.sleep(0.3)  # a second copy would come now
        keys = [(body["nodewarden.agent_id"], body["seq"]) for _, _, body in hook.requests]
        assert len(keys) == 6 and len(set(keys)) == 6
        assert a.outputs[0].sent == 3 and b.outputs[0].sent == 3
    finally:
        a.stop()
        b.stop()


def test_bad_output_config_is_one_line():
    for specs, msg in [
        ([{"type": "pager"}], "outputs[0]: type 'pager': expected one of webhook, slack, alertmanager"),
        ([{"type": "webhook"}], "outputs[0] (webhook): url is required"),
        ([{"type": "syslog", "address": "syslog.local:514"}], "address must be udp://host:port, tcp://"),
        ([{"type": "webhook", "url": "http://h/x", "min_severity": "urgent"}], "min_severity 'urgent'"),
        ([{"type": "slack", "url": "http://h/x", "colour": "red"}], "unknown keys: colour"),
        ([{"type": "otlp"}], "endpoint is required"),
        ([{"type": "alertmanager", "url": "http://h", "labels": {"bad-name": "x"}}], "labels must map"),
        ([{"type": "webhook", "url": "http://h/x"}, {"type": "webhook", "url": "http://h/y", "name": "webhook-0"}],
         "name 'webhook-0' is used twice"),
        ({"type": "webhook"}, "outputs: expected a list"),
    ]:
        with pytest.raises(OutputError) as e:
            build(specs)
        assert msg in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="outputs\\[0\\] \\(webhook\\): url is required"):
        serve(CollectorConfig(listen=["127.0.0.1:0"], db="/nonexistent/never/made.db", outputs=[{"type": "webhook"}]))


def test_the_collector_command_takes_outputs_from_its_config(tmp_path, receivers):
    """`nodewarden collector --config` with an `outputs:` list, and --output beside it; a bad one: exit 1,
    one line."""
    hook, other = receivers(Recorder), receivers(Recorder)
    (tmp_path / "c.yaml").write_text(
        "collector:\n"
        "  outputs:\n"
        f"    - {{type: webhook, url: '{hook.url}/blocks', kinds: [enforcement.block, image.verdict]}}\n")
    sock = f"unix:{tmp_path}/c.sock"
    cmd = [sys.executable, "-m", "agent.cli", "collector", "--config", str(tmp_path / "c.yaml"), "--listen", sock,
           "--db", str(tmp_path / "events.db"), "--output", f"slack={other.url}/chat"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
        ingest(sock, protection_events(time.time_ns()))
        wait_for(lambda: len(hook.requests) == 2 and len(other.requests) == 4, what="posts from the command")
        assert [b["event.name"] for _, _, b in hook.requests] == ["enforcement.block", "image.verdict"]
        assert {p for p, _, _ in other.requests} == {"/chat"}
        # the default filter (alerts, blocks, verdicts; low and up) keeps the low alert too, not the exec
        assert len(other.requests) == 4 and "low thing" in other.requests[1][2]["text"]
    finally:
        proc.terminate()
        proc.wait(20)
    (tmp_path / "bad.yaml").write_text("collector:\n  outputs:\n    - {type: syslog, address: 'syslog:514'}\n")
    bad = subprocess.run([sys.executable, "-m", "agent.cli", "collector", "--config", str(tmp_path / "bad.yaml"),
                          "--listen", sock, "--db", str(tmp_path / "events.db")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot start: outputs[0] (syslog): address must be udp://" in lines[0]


def bench(n: int = 5000) -> None:
    """Delivery rate of each output to its loopback receiver, in this one process (the receivers share its
    interpreter lock: lower bounds). `PYTHONPATH=. .venv/bin/python tests/e2e/test_outputs.py`"""
    import tempfile

    def run(name, spec, root):
        spec = {**spec, "min_severity": "high", "queue": 10 * n, "name": "o"}
        (root / name).mkdir()
        h = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(root / name / "e.db"), outputs=[spec]))
        try:
            ts = time.time_ns()
            evs = [to_event(_identity(protection_events(ts + i)[0])) for i in range(n)]
            t0 = time.perf_counter()
            ingest(h.address, evs)
            o = h.outputs[0]
            wait_for(lambda: o.sent + sum(o.dropped.values()) >= n, 300, name)
            dt = time.perf_counter() - t0
            print(f"{name:13s} delivered {o.sent:6d} in {dt:5.2f} s: {o.sent / dt:8,.0f}/s, "
                  f"dropped {sum(o.dropped.values())}")
        finally:
            h.stop()

    with tempfile.TemporaryDirectory(prefix="nw-outputs-bench-") as tmp:
        root = __import__("pathlib").Path(tmp)
        rec, lis, otlp = Recorder(), SyslogListener(), OtlpReceiver()
        try:
            run("webhook", {"type": "webhook", "url": rec.url}, root)
            run("slack", {"type": "slack", "url": rec.url}, root)
            run("syslog-udp", {"type": "syslog", "address": f"udp://127.0.0.1:{lis.udp.getsockname()[1]}"}, root)
            run("syslog-tcp", {"type": "syslog", "address": f"tcp://127.0.0.1:{lis.tcp.server_address[1]}"}, root)
            run("otlp", {"type": "otlp", "endpoint": otlp.endpoint}, root)
            exe = shutil.which("prometheus-alertmanager")
            if exe:
                with run_alertmanager(exe, root) as url:
                    run("alertmanager", {"type": "alertmanager", "url": url}, root)
            print(f"syslog over UDP: the listener received {sum(p == 'udp' for p, _ in lis.messages)} of {n}")
        finally:
            rec.close()
            lis.close()
            otlp.close()


if __name__ == "__main__":
    bench()
