"""The event transport end to end over real gRPC: exporter -> collector -> Query / Subscribe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from test_transport_util import (
    ROOT,
    cpb,
    exporter,
    make_record,
    query_all,
    start_collector_process,
    stub,
    wait_for,
)

from collector.server import CollectorConfig, serve
from nwwire.codec import to_record

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["tcp", "unix"])
def collector(request, tmp_path):
    listen = "127.0.0.1:0" if request.param == "tcp" else f"unix:{tmp_path}/collector.sock"
    handle = serve(CollectorConfig(listen=[listen], db=str(tmp_path / "events.db"), subscriber_queue=100000))
    yield handle
    handle.stop(0.5)


def _deliver(collector, tmp_path, n: int, **kw):
    exp = exporter(collector.address, tmp_path / "spool", **kw)
    base = time.time_ns() - 60 * 10**9
    recs = [make_record(i, base + i * 1000) for i in range(n)]
    for r in recs:
        exp.submit(r)
    assert exp.stop(timeout=20), exp.metrics()
    return exp, recs, base


def test_queryable_with_each_filter(collector, tmp_path):
    exp, recs, base = _deliver(collector, tmp_path, 400)
    got = query_all(collector.address)
    assert [r["seq"] for r in got] == list(range(1, 401))
    # What went in comes back out, key for key.
    for sent, back in zip(recs, got, strict=True):
        ident = ("seq", "host.name", "nodewarden.agent_id", "nodewarden.boot_id")
        assert {k: v for k, v in back.items() if k not in ident} == sent
    assert {r["nodewarden.boot_id"] for r in got} == {exp.boot_id}

    def q(**kw):
        return query_all(collector.address, cpb.Filter(**kw))

    def expect(pred):
        return [i + 1 for i, r in enumerate(recs) if pred(r)]

    cases = [
        (dict(kinds=["process.exec"]), lambda r: r["event.name"] == "process.exec"),
        (dict(kinds=["file", "network.connect"]), lambda r: r["event.name"] in ("file.open", "network.connect")),
        (dict(since_unix_nano=base + 100 * 1000, until_unix_nano=base + 200 * 1000),
         lambda r: 100 <= (recs.index(r)) < 200),
        (dict(nodes=["node-a"]), lambda r: True),
        (dict(nodes=["node-b"]), lambda r: False),
        (dict(container="a1a1"), lambda r: r.get("container.id", "").startswith("a1a1")),
        (dict(pod="db-0"), lambda r: r.get("k8s.pod.name") == "db-0"),
        (dict(namespace="shop"), lambda r: r.get("k8s.namespace.name") == "shop"),
        (dict(min_severity=5), lambda r: r.get("event.severity") == "high"),
        (dict(text="/etc/conf/12"), lambda r: r.get("file.path", "").startswith("/etc/conf/12")),
        (dict(text="HTTP://SVC/7"), lambda r: "http://svc/7" in r.get("process.command_line", "")),
        (dict(agent_id="node-a", kinds=["process.exit"], namespace="data"),
         lambda r: r["event.name"] == "process.exit" and r.get("k8s.namespace.name") == "data"),
    ]
    for kw, pred in cases:
        want = expect(pred)
        assert [r["seq"] for r in q(**kw)] == want, kw


def test_query_pages(collector, tmp_path):
    _deliver(collector, tmp_path, 1200)
    s = stub(collector.address)
    seqs, token, pages = [], "", 0
    while True:
        resps = list(s.Query(cpb.QueryRequest(limit=500, page_token=token)))
        pages += 1
        seqs += [ev.seq for r in resps for ev in r.events]
        token = resps[-1].next_page_token
        if not token:
            break
    assert pages == 3 and seqs == list(range(1, 1201))


def _subscribe(address, flt, replay=False):
    """Start a Subscribe in a thread; returns (received records, call, ready event)."""
    got: list = []
    call = stub(address).Subscribe(cpb.SubscribeRequest(filter=flt, replay=replay))

    def run():
        try:
            for resp in call:
                got.extend(to_record(ev) for ev in resp.events)
        except grpc.RpcError:
            pass

    threading.Thread(target=run, daemon=True).start()
    return got, call


def test_tail_with_each_filter(collector, tmp_path):
    filters = {
        "all": (cpb.Filter(), lambda r: True),
        "kind": (cpb.Filter(kinds=["network"]), lambda r: r["event.name"].startswith("network.")),
        "container": (cpb.Filter(container="b2b2"), lambda r: r.get("container.id", "").startswith("b2")),
        "pod": (cpb.Filter(pod="web-0", namespace="shop"), lambda r: r.get("k8s.pod.name") == "web-0"),
        "severity": (cpb.Filter(min_severity=5), lambda r: r.get("event.severity") == "high"),
        "text": (cpb.Filter(text="/etc/conf/"), lambda r: "file.path" in r),
        "node": (cpb.Filter(nodes=["node-z"]), lambda r: False),
    }
    subs = {name: _subscribe(collector.address, f) for name, (f, _) in filters.items()}
    wait_for(lambda: collector.hub.count() == len(filters))
    _, recs, _ = _deliver(collector, tmp_path, 300)
    for name, (_, pred) in filters.items():
        want = [i + 1 for i, r in enumerate(recs) if pred(r)]
        got, call = subs[name]
        wait_for(lambda got=got, want=want: len(got) >= len(want), timeout=10)
        time.sleep(0.05)
        assert [r["seq"] for r in got] == want, name
        call.cancel()


def test_tail_replay_then_live_no_gap(collector, tmp_path):
    exp = exporter(collector.address, tmp_path / "spool")
    for i in range(200):
        exp.submit(make_record(i))
    wait_for(lambda: exp.metrics()["acked"] == 200)
    got, call = _subscribe(collector.address, cpb.Filter(since_unix_nano=1), replay=True)
    for i in range(200, 400):  # racing with the replay on purpose
        exp.submit(make_record(i))
    assert exp.stop(10)
    wait_for(lambda: len(got) >= 400, timeout=10)
    time.sleep(0.1)
    assert sorted(r["seq"] for r in got) == list(range(1, 401))
    call.cancel()


def test_collector_killed_and_restarted_loses_and_duplicates_nothing(tmp_path):
    sock = f"unix:{tmp_path}/c.sock"
    db = tmp_path / "events.db"
    proc = start_collector_process(sock, db)
    exp = exporter(sock, tmp_path / "spool", batch_size=64)
    n = 0
    try:
        for _ in range(300):
            exp.submit(make_record(n))
            n += 1
        wait_for(lambda: exp.metrics()["acked"] >= 100)
        proc.send_signal(signal.SIGKILL)  # mid-stream, batches in flight
        proc.wait()
        for _ in range(700):  # the collector is away: these go to the spool
            exp.submit(make_record(n))
            n += 1
            if n % 100 == 0:
                time.sleep(0.05)
        time.sleep(1.0)
        assert exp.metrics()["spool_pending_events"] > 0
        proc = start_collector_process(sock, db)
        assert exp.stop(timeout=30), exp.metrics()
        got = query_all(sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    seqs = [r["seq"] for r in got]
    assert sorted(seqs) == list(range(1, n + 1))  # nothing lost, nothing twice
    assert exp.metrics()["dropped"] == 0


_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from test_transport_util import exporter, make_record
exp = exporter({addr!r}, {spool!r})
for i in range({n}):
    exp.submit(make_record(i))
while exp.metrics()["spooled"] < {n}:
    time.sleep(0.01)
print(exp.boot_id, flush=True)
time.sleep(60)  # killed here, with everything in the spool and nothing delivered
"""


def test_agent_killed_with_full_spool_delivers_after_restart(tmp_path):
    sock = f"unix:{tmp_path}/c.sock"
    spool = tmp_path / "spool"
    code = _CHILD.format(root=str(ROOT / "tests" / "e2e"), addr=sock, spool=str(spool), n=500)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    old_boot = child.stdout.readline().strip()
    child.kill()
    child.wait()
    assert old_boot and any(spool.glob("*.seg"))
    handle = serve(CollectorConfig(listen=[sock], db=str(tmp_path / "events.db")))
    try:
        exp = exporter(sock, spool)  # the restarted agent: new boot id, the old spool
        assert exp.boot_id != old_boot
        assert exp.stop(timeout=20)
        got = query_all(sock)
    finally:
        handle.stop(0.5)
    assert [r["seq"] for r in got] == list(range(1, 501))
    assert {r["nodewarden.boot_id"] for r in got} == {old_boot}


def test_corrupt_spool_segment_is_skipped_and_the_rest_delivered(tmp_path, caplog):
    sock = f"unix:{tmp_path}/c.sock"
    spool = tmp_path / "spool"
    # No collector yet: everything stays in the spool, in small segments.
    exp = exporter(sock, spool, batch_size=50, spool_segment_bytes=20_000, spool_max_bytes=10_000_000)
    for i in range(600):
        exp.submit(make_record(i))
    wait_for(lambda: exp.metrics()["spooled"] == 600)
    exp.stop(timeout=0.5)
    segs = sorted(spool.glob("*.seg"))
    assert len(segs) >= 4
    victim = segs[1]
    data = bytearray(victim.read_bytes())
    data[40] ^= 0xFF  # inside the first record's payload: its CRC no longer matches
    victim.write_bytes(bytes(data))
    handle = serve(CollectorConfig(listen=[sock], db=str(tmp_path / "events.db")))
    try:
        exp2 = exporter(sock, spool)
        assert exp2.stop(timeout=20)
        got = query_all(sock)
    finally:
        handle.stop(0.5)
    assert any("corrupt" in r.getMessage() and victim.name in r.getMessage() for r in caplog.records)
    assert exp2.metrics()["drops"]["spool_corrupt_segments"] == 1
    seqs = [r["seq"] for r in got if r["event.name"] != "agent.drops"]
    lost = set(range(1, 601)) - set(seqs)
    # Exactly the victim segment's events are gone; all the others arrived once.
    assert lost and len(seqs) == len(set(seqs)) and len(lost) < 600 // 2
    assert sorted(lost) == list(range(min(lost), max(lost) + 1))  # one run: that segment
    assert min(lost) > 50 and max(lost) < 600  # not the first segment, not the last


def test_full_spool_drops_oldest_and_counts_exactly(tmp_path):
    sock = f"unix:{tmp_path}/c.sock"
    exp = exporter(sock, tmp_path / "spool", batch_size=20, spool_segment_bytes=8_000,
                   spool_max_bytes=40_000, drops_report_interval=0.0)
    n = 1000
    for i in range(n):
        exp.submit(make_record(i))
        if i % 100 == 0:
            time.sleep(0.01)
    wait_for(lambda: exp.metrics()["spooled"] >= n)
    handle = serve(CollectorConfig(listen=[sock], db=str(tmp_path / "events.db")))
    try:
        assert exp.stop(timeout=20)
        got = query_all(sock)
    finally:
        handle.stop(0.5)
    m = exp.metrics()
    dropped = m["drops"]["spool_full"]
    assert dropped > 0 and m["drops"]["queue_full"] == 0
    # Every event the exporter stamped is either stored or counted as dropped, exactly.
    assert len(got) + dropped == m["seq"]
    assert len({r["seq"] for r in got}) == len(got)
    stored = sorted(r["seq"] for r in got)
    missing = sorted(set(range(1, m["seq"] + 1)) - set(stored))
    # Nothing was acked (no collector while spooling): the spool held one run of seqs and
    # lost it from the front, so what is missing is exactly the oldest: 1..k.
    assert missing == list(range(1, len(missing) + 1))
    reports = [r for r in got if r["event.name"] == "agent.drops"]
    assert reports and max(r["nodewarden.drops.total"]["exporter.spool_full"] for r in reports) <= dropped
    assert sum(r["nodewarden.drops.new"].get("exporter.spool_full", 0) for r in reports) <= dropped


def test_malformed_and_oversized_messages_are_refused_and_others_served(tmp_path):
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"),
                                   max_message_bytes=1 << 20, max_batch_events=100))
    try:
        ch = grpc.insecure_channel(handle.address, options=[("grpc.max_send_message_length", 8 << 20)])
        raw_ingest = ch.stream_stream("/nodewarden.v1.Collector/Ingest")
        raw_query = ch.unary_stream("/nodewarden.v1.Collector/Query")

        def code_of(call_fn):
            with pytest.raises(grpc.RpcError) as ei:
                list(call_fn())
            return ei.value.code(), ei.value.details()

        code, detail = code_of(lambda: raw_ingest(iter([b"\xff\xff\xff\xff"])))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed IngestRequest" in detail
        code, detail = code_of(lambda: raw_ingest(iter([b"\x12" + b"\x80" * 3 * 10**6])))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        bad = cpb.IngestRequest(batch=cpb.Batch(events=[cpb.Batch().events.add()])).SerializeToString()
        code, detail = code_of(lambda: raw_ingest(iter([bad])))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "lacks agent_id" in detail
        code, _ = code_of(lambda: raw_query(b"\x0a\x05\x1a"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, detail = code_of(lambda: raw_query(cpb.QueryRequest(page_token="%%%").SerializeToString()))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in detail
        code, _ = code_of(lambda: raw_query(cpb.QueryRequest(filter=cpb.Filter(kinds=[""])).SerializeToString()))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        # ... and a well-behaved agent is still served.
        exp = exporter(handle.address, tmp_path / "spool", batch_size=100)
        for i in range(250):
            exp.submit(make_record(i))
        assert exp.stop(10)
        assert len(query_all(handle.address)) == 250
        assert handle.metrics()["rejected"] >= 4
    finally:
        handle.stop(0.5)


def test_slow_subscriber_is_bounded_and_never_blocks_ingest(tmp_path):
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), subscriber_queue=200))
    try:
        # A subscriber that never reads: gRPC flow control backs up into its queue.
        call = stub(handle.address).Subscribe(cpb.SubscribeRequest())
        wait_for(lambda: handle.hub.count() == 1)
        t0 = time.monotonic()
        exp = exporter(handle.address, tmp_path / "spool")
        for i in range(20000):
            exp.submit(make_record(i))
        assert exp.stop(30)
        assert time.monotonic() - t0 < 30
        assert handle.metrics()["stored"] == 20000
        wait_for(lambda: handle.metrics()["subscriber_drops"] > 0)
        # The subscriber learns how much it lost.
        dropped = 0
        for resp in call:
            dropped = max(dropped, resp.dropped)
            if dropped:
                break
        assert dropped > 0
        call.cancel()
    finally:
        handle.stop(0.5)


def test_events_cli_json_and_filters(tmp_path):
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db")))
    try:
        exp = exporter(handle.address, tmp_path / "spool")
        for i in range(40):
            exp.submit(make_record(i))
        assert exp.stop(10)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        base = [sys.executable, "-m", "agent.cli", "events", "--collector", handle.address]
        out = subprocess.run(base + ["--json", "--kind", "process.exec", "--namespace", "shop", "--since", "1h"],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        import orjson

        recs = [orjson.loads(line) for line in out.stdout.splitlines()]
        assert recs and all(r["event.name"] == "process.exec" and r["k8s.namespace.name"] == "shop" for r in recs)
        out = subprocess.run(base + ["--limit", "5"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert out.returncode == 0 and len(out.stdout.splitlines()) == 5
        assert "process.exec" in out.stdout and "pid=1000" in out.stdout
    finally:
        handle.stop(0.5)
