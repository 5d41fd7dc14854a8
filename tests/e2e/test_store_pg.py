"""The collector on PostgreSQL (collector/store_pg.py), against a real server started by the test
(tests/harness/pg.py): ingest, query and the live tail through real gRPC; the same filter results as
SQLite; two collector processes on one database, one killed with SIGKILL inside its commit and the
batch resent to the other; retention dropping a partition; a bad URL refused in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from test_transport_util import ROOT, cpb, exporter, make_record, query_all, start_collector_process, stub, wait_for

from collector.filters import EventFilter
from collector.server import CollectorConfig, serve
from collector.store import Store
from collector.store_pg import PgStore
from nwwire.codec import to_record
from tests.harness.pg import pg_url, postgres  # noqa: F401  (fixtures)
from tests.unit.test_collector_store import FILTERS, KIND_FILTERS, _ev, _kinds_batch

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg_collector(pg_url, tmp_path):  # noqa: F811
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "a" / "events.db"), store=pg_url,
                                   subscriber_queue=100000))
    yield handle
    handle.stop(0.5)


def _subscribe(address, flt, replay=False):
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


def test_ingest_query_and_tail_through_grpc(pg_collector, pg_url, tmp_path):  # noqa: F811
    # A second replica on the same database: its live tail must see what the first stored.
    other = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "b" / "events.db"), store=pg_url))
    try:
        live, call = _subscribe(other.address, cpb.Filter(kinds=["network"]))
        replayed, call2 = _subscribe(other.address, cpb.Filter(), replay=True)
        wait_for(lambda: other.hub.count() == 2)
        exp = exporter(pg_collector.address, tmp_path / "spool")
        base = time.time_ns() - 60 * 10**9
        recs = [make_record(i, base + i * 1000) for i in range(400)]
        for r in recs:
            exp.submit(r)
        assert exp.stop(timeout=20), exp.metrics()
        got = query_all(pg_collector.address)
        assert [r["seq"] for r in got] == list(range(1, 401))
        for sent, back in zip(recs, got, strict=True):
            ident = ("seq", "host.name", "nodewarden.agent_id", "nodewarden.boot_id")
            assert {k: v for k, v in back.items() if k not in ident} == sent
        assert query_all(other.address) == got  # one store
        for kw, pred in [
            (dict(kinds=["process.exec"]), lambda i, r: r["event.name"] == "process.exec"),
            (dict(container="a1a1"), lambda i, r: r.get("container.id", "").startswith("a1a1")),
            (dict(namespace="shop"), lambda i, r: r.get("k8s.namespace.name") == "shop"),
            (dict(min_severity=5), lambda i, r: r.get("event.severity") == "high"),
            (dict(text="HTTP://SVC/7"), lambda i, r: "http://svc/7" in r.get("process.command_line", "")),
            (dict(since_unix_nano=base + 100 * 1000, until_unix_nano=base + 200 * 1000), lambda i, r: 100 <= i < 200),
            (dict(nodes=["node-b"]), lambda i, r: False),
        ]:
            want = [i + 1 for i, r in enumerate(recs) if pred(i, r)]
            assert [r["seq"] for r in query_all(pg_collector.address, cpb.Filter(**kw))] == want, kw
        # Pages: (ts, id) cursor
        s = stub(pg_collector.address)
        seqs, token = [], ""
        while True:
            resps = list(s.Query(cpb.QueryRequest(limit=150, page_token=token)))
            seqs += [ev.seq for r in resps for ev in r.events]
            token = resps[-1].next_page_token
            if not token:
                break
        assert seqs == list(range(1, 401))
        want_live = [i + 1 for i, r in enumerate(recs) if r["event.name"].startswith("network.")]
        wait_for(lambda: len(live) >= len(want_live) and len(replayed) >= 400, timeout=10)
        time.sleep(0.2)
        assert [r["seq"] for r in live] == want_live
        assert [r["seq"] for r in replayed] == list(range(1, 401))
        call.cancel()
        call2.cancel()
    finally:
        other.stop(0.5)


@pytest.fixture(scope="module")
def both(postgres, tmp_path_factory):  # noqa: F811
    """The same events, written the same way, into SQLite and PostgreSQL (for the module: every test
    that writes more writes it to both)."""
    lite = Store(str(tmp_path_factory.mktemp("lite") / "ev.db"), retention_age_s=0, retention_bytes=0,
                 retention_interval=3600)
    pg = PgStore(postgres.create_database(), retention_age_s=0, retention_bytes=0, retention_interval=3600)
    lite.start()
    pg.start()
    weird = [_ev(90, agent="a3"), _ev(91, agent="a3")]
    weird[0].process.command_line = "CURL https://Ünïcode.example/\x00null"  # NUL: text columns only
    weird[1].container.id = "ff\U0010ffff"
    batches = [[_ev(s) for s in range(1, 61)], [_ev(s, agent="a2", node="n2") for s in range(1, 31)],
               _kinds_batch(100), weird, [_ev(s) for s in range(50, 70)]]  # the last overlaps: dedup
    for b in batches:
        assert lite.write(b) == pg.write(b)
    yield lite, pg
    lite.stop()
    pg.stop()


EXTRA = [cpb.Filter(text="ünïcode"), cpb.Filter(text="curl https"), cpb.Filter(container="ff"),
         cpb.Filter(text="_"), cpb.Filter(text="\\")]


@pytest.mark.parametrize("f", FILTERS + [f for f, _ in KIND_FILTERS] + EXTRA,
                         ids=lambda f: str(f).replace("\n", " ") or "all")
def test_same_results_as_sqlite(both, f):
    lite, pg = both
    flt = EventFilter.from_pb(f)
    a = [(ts, body) for _, ts, body in lite.query(flt, 1000)]
    b = [(ts, body) for _, ts, body in pg.query(flt, 1000)]
    assert a == b
    if f.since_unix_nano or f.kinds or f.container or f.namespace:
        assert "Seq Scan on events_p" not in pg.explain(flt) or "Index" in pg.explain(flt)


@pytest.mark.parametrize("f", [cpb.Filter(), cpb.Filter(kinds=["alert", "file"]), cpb.Filter(text="data/1"),
                               cpb.Filter(min_severity=4, namespace="ns1")], ids=str)
def test_newest_first_for_the_console(both, f):
    _, pg = both
    flt = EventFilter.from_pb(f)
    forward = list(pg.query(flt, 1000))
    assert list(pg.query_recent(flt, 1000)) == forward[::-1]
    if len(forward) > 3:
        mid = forward[len(forward) // 2]
        assert list(pg.query_recent(flt, 2, before=(mid[1], mid[0]))) == forward[:len(forward) // 2][::-1][:2]
    assert pg.get_body(forward[0][0]) == forward[0][2] and pg.get_body(1 << 40) is None


def test_dedup_paths_and_streams(both):
    lite, pg = both
    assert sorted(lite.streams()) == sorted(pg.streams())
    # Late events below the mark that were never stored go in; copies inside one batch count once.
    evs = [_ev(s, agent="a9") for s in (10, 20, 15, 15, 20, 5)]
    assert lite.write(evs) == pg.write(evs) == (4, 2)
    assert pg.write(evs) == (0, 6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(n: int, first: int, batch_id: int) -> cpb.IngestRequest:
    now = time.time_ns()
    evs = [_ev(s, agent="agent-k", boot="boot-k", node="node-k", ts=now + s) for s in range(first, first + n)]
    return cpb.IngestRequest(batch=cpb.Batch(batch_id=batch_id, events=evs))


def _send(address: str, req) -> cpb.Ack:
    resps = list(stub(address).Ingest(iter([req]), timeout=30))
    return resps[-1].ack


def test_replica_killed_mid_batch_and_the_resend_to_the_other_stores_nothing_twice(postgres, pg_url, tmp_path):  # noqa: F811
    addr = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs = []
    for i, a in enumerate(addr):
        (tmp_path / str(i)).mkdir()
        procs.append(start_collector_process(a, tmp_path / str(i) / "events.db", "--store", pg_url))
    victim, survivor = procs
    watch = postgres.connect(pg_url.rsplit("/", 1)[1])
    caught = threading.Event()
    stop = threading.Event()

    def watcher():
        # SIGKILL the first collector while its writer is inside a transaction that has written rows.
        name = f"nodewarden-collector-{victim.pid}-writer"
        while not stop.is_set():
            row = watch.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND state = 'active' "
                                "AND backend_xid IS NOT NULL AND query ILIKE 'COPY%%'", (name,)).fetchone()
            if row:
                victim.send_signal(signal.SIGKILL)
                caught.set()
                return
            time.sleep(0.001)

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    n, batches, acked = 5000, [], {}
    try:
        for b in range(40):
            req = _batch(n, 1 + b * n, b)
            batches.append(req)
            try:
                acked[b] = _send(addr[0], req).stored
            except grpc.RpcError:  # the replica died with this batch in its commit
                break
        assert caught.wait(5), "the writer was never caught inside a commit"
        victim.wait(10)
        stop.set()
        # The agent resends everything not acked, and (the worst case) what was acked too, to the other.
        total = stored = dups = 0
        for req in batches:
            ack = _send(addr[1], req)
            assert ack.stored + ack.duplicates == n
            stored += ack.stored
            dups += ack.duplicates
            total += n
        assert dups == sum(acked.values()) and stored == total - dups
        count, distinct, top = watch.execute(
            "SELECT count(*), count(DISTINCT (stream, seq)), max(seq) FROM events").fetchone()
        assert count == distinct == top == total
        # And the survivor's Query agrees, seq by seq.
        got = [ev.seq for r in stub(addr[1]).Query(cpb.QueryRequest(limit=10000, filter=cpb.Filter(
            since_unix_nano=1))) for ev in r.events]
        assert got == sorted(got) and len(set(got)) == len(got)
    finally:
        stop.set()
        watch.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


def test_retention_drops_a_partition(pg_url, caplog):  # noqa: F811
    hour = 3600 * 10**9
    store = PgStore(pg_url, retention_age_s=4 * 3600, retention_bytes=0, partition_s=3600, retention_interval=3600)
    store.start()
    try:
        now = time.time_ns()
        old = [_ev(s, ts=now - 3 * hour + s) for s in range(1, 11)]
        new = [_ev(s, ts=now + s) for s in range(11, 21)]
        assert store.write(old + new) == (20, 0)
        c = store._conn
        parts = {p[0]: (p[1], p[2]) for p in store._partitions(c)}
        assert len(parts) >= 6  # back to the retention age, and ahead
        old_part = next(n for n, (lo, hi) in parts.items() if lo <= now - 3 * hour < hi)
        assert c.execute(f"SELECT count(*) FROM {old_part}").fetchone()[0] == 10
        assert c.execute("SELECT count(*) FROM events_default").fetchone()[0] == 0
        store.retention_age_ns = 2 * hour
        assert store.enforce_retention() == 10
        assert old_part not in {p[0] for p in store._partitions(c)}
        assert c.execute("SELECT to_regclass(%s)", (old_part,)).fetchone()[0] is None
        assert [r[1] for r in store.query(EventFilter(), 100)] == [e.time_unix_nano for e in new]
        assert store.stats["partitions_dropped"] >= 1
        # An event far outside the partitions lands in the default one, and a partition made later
        # for its time takes it along.
        assert store.write([_ev(30, ts=now + 10 * hour)]) == (1, 0)
        assert c.execute("SELECT count(*) FROM events_default").fetchone()[0] == 1
        store.partitions_ahead = 12
        store._make_partitions()
        assert c.execute("SELECT count(*) FROM events_default").fetchone()[0] == 0
        assert len(list(store.query(EventFilter(since=now + 9 * hour), 10))) == 1
        # Reopened with another partition width: new partitions only where none covers the time.
        before = len(store._partitions(c))
        with caplog.at_level("WARNING", logger="collector.store_pg"):
            other = PgStore(pg_url, retention_age_s=0, retention_bytes=0, partition_s=5400, retention_interval=3600)
            other.stop()
        assert not caplog.records and len(store._partitions(c)) >= before
    finally:
        store.stop()


@pytest.mark.parametrize("url, says", [
    ("mysql://db/events", "must start with postgresql://"),
    ("postgresql://127.0.0.1:1/events", "cannot open store"),
    ("postgresql://u:secret@[::1/x", "bad store URL"),
    ("", "store partition: at least 60 seconds"),
])
def test_bad_store_url_is_one_line(tmp_path, url, says):
    args = ["--store", url] if url else ["--store", "postgresql://127.0.0.1:1/x", "--store-partition", "10s"]
    p = subprocess.run([sys.executable, "-m", "agent.cli", "collector", "--listen", "127.0.0.1:0",
                        "--db", str(tmp_path / "e.db"), *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "cannot start" in lines[0], p.stderr
    assert "secret" not in p.stderr


def test_agents_fail_over_to_the_other_replica_nothing_lost_or_twice(postgres, pg_url, tmp_path):  # noqa: F811
    """Real exporters on a two-address target (gRPC pick_first: what a Service with two replicas looks
    like to a client that reconnects); the replica they use is SIGKILLed mid-stream."""
    addr = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs = []
    for i, a in enumerate(addr):
        (tmp_path / str(i)).mkdir()
        procs.append(start_collector_process(a, tmp_path / str(i) / "events.db", "--store", pg_url))
    target = "ipv4:" + ",".join(addr)
    # A live tail on the replica that survives, from before the first event: what both replicas stored,
    # each event once (replay, then live, no gap).
    live, call = _subscribe(addr[1], cpb.Filter(), replay=True)
    exps = [exporter(target, tmp_path / f"spool{k}", node=f"node-{k}", batch_size=64) for k in range(3)]
    n = 0
    try:
        for _ in range(300):
            for exp in exps:
                exp.submit(make_record(n))
            n += 1
        wait_for(lambda: all(e.metrics()["acked"] >= 100 for e in exps))
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        for _ in range(300):
            for exp in exps:
                exp.submit(make_record(n))
            n += 1
        for exp in exps:
            assert exp.stop(timeout=30), exp.metrics()
        for exp in exps:
            got = query_all(addr[1], cpb.Filter(agent_id=exp.cfg.node))
            assert sorted(r["seq"] for r in got) == list(range(1, n + 1)), exp.cfg.node
            assert exp.metrics()["dropped"] == 0
        wait_for(lambda: len(live) >= 3 * n, timeout=15)
        time.sleep(0.3)
        by_agent: dict = {}
        for r in live:
            by_agent.setdefault(r["nodewarden.agent_id"], []).append(r["seq"])
        assert {a: sorted(s) for a, s in by_agent.items()} == {f"node-{k}": list(range(1, n + 1)) for k in range(3)}
        call.cancel()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


def test_postgresql_killed_and_restarted_mid_stream(tmp_path):
    """The store's server dies (SIGKILL of the postmaster) and comes back: commits fail meanwhile (the
    agent keeps its batches), the writer, the tail and the readers reconnect, nothing is lost or twice."""
    from tests.harness.pg import PrivatePostgres, missing_requirements

    why = missing_requirements()
    if why:
        pytest.skip(f"real PostgreSQL: {why}")
    pg = PrivatePostgres().start()  # its own dir under /tmp: the postgres user cannot enter tmp_path
    handle = None
    try:
        url = pg.create_database("events")
        handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "c" / "events.db"), store=url))
        exp = exporter(handle.address, tmp_path / "spool", batch_size=64)
        live, call = _subscribe(handle.address, cpb.Filter())
        wait_for(lambda: handle.hub.count() == 1)
        for i in range(300):
            exp.submit(make_record(i))
        wait_for(lambda: exp.metrics()["acked"] >= 100)
        pg.kill()
        for i in range(300, 600):
            exp.submit(make_record(i))
        time.sleep(1.5)
        pg.start()
        assert exp.stop(timeout=30), exp.metrics()
        wait_for(lambda: len(query_all(handle.address)) == 600, timeout=15)
        assert [r["seq"] for r in query_all(handle.address)] == list(range(1, 601))
        assert handle.store.stats["write_errors"] >= 1
        metrics = {m.name: m.samples[0].value for m in handle.collect()}
        assert metrics["nodewarden_collector_write_errors"] >= 1
        assert metrics["nodewarden_collector_store_tail_errors"] >= 1  # the tail lost its connection too
        wait_for(lambda: len(live) >= 600, timeout=15)
        assert sorted(r["seq"] for r in live) == list(range(1, 601))
        call.cancel()
    finally:
        if handle is not None:
            handle.stop(0.5)
        pg.destroy()


def test_a_role_without_rights_is_one_line(postgres, pg_url, tmp_path):  # noqa: F811
    with postgres.connect() as c:
        c.execute("DROP ROLE IF EXISTS nw_norights")
        c.execute("CREATE ROLE nw_norights LOGIN")
    try:
        url = pg_url.replace("postgresql://postgres@", "postgresql://nw_norights@")
        p = subprocess.run([sys.executable, "-m", "agent.cli", "collector", "--listen", "127.0.0.1:0",
                            "--db", str(tmp_path / "e.db"), "--store", url], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and "cannot set up store" in lines[0], p.stderr
        assert "permission denied" in lines[0]
    finally:
        with postgres.connect() as c:
            c.execute("DROP ROLE IF EXISTS nw_norights")
