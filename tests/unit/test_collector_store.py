"""The collector's store, filters and live hub, without gRPC."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from agent.events import (
    AlertEvent,
    ContainerInfo,
    EnforcementEvent,
    Enriched,
    ExecEvent,
    FileEvent,
    Op,
    ProcInfo,
    Verdict,
    VerdictEvent,
)
from agent.outputs.pbcodec import to_event
from agent.outputs.record import flatten, from_enriched
from agent.vocab import Severity
from collector.filters import EventFilter, FilterError
from collector.hub import Hub
from collector.store import BatchError, Store
from collector.units import parse_duration, parse_size, parse_time
from collector.wire import event_bodies
from nwwire.genproto import load

cpb = load("nodewarden.v1.collector_pb2")


def _ev(seq, i=None, boot="b1", agent="a1", node="n1", ts=None):
    i = seq if i is None else i
    common = dict(ts_ns=ts or 10**18 + i * 1000, pid=i, tid=i, ppid=1, uid=0, gid=0, cgroup_id=1, mntns=1,
                  comm="x", truncated=False)
    if i % 2:
        k = FileEvent(op=Op.FILE_OPEN, path=f"/data/{i}", path2="", ret=0, flags=0, mode=0, dirfd=0, fd=3,
                      owner_uid=0, owner_gid=0, **common)
    else:
        k = ExecEvent(op=Op.EXEC, filename="/bin/ls", argv=("ls", f"-{i}"), **common)
    cont = ContainerInfo(id=f"{i % 3:x}" * 64, pod_name=f"pod{i % 3}", pod_namespace=f"ns{i % 2}") if i % 3 else None
    rec = from_enriched(Enriched(k, ProcInfo(i, 1, "/bin/ls", ("ls",), 0, 0), None, cont))
    rec["event.severity"] = ("info", "medium", "critical")[i % 3]
    ev = to_event(rec)
    ev.seq, ev.agent_id, ev.boot_id, ev.node = seq, agent, boot, node
    return ev


@pytest.fixture
def store(tmp_path):
    published = []
    s = Store(str(tmp_path / "ev.db"), retention_age_s=0, retention_bytes=0,
              publish=published.append, retention_interval=3600)
    s.published = published
    s.start()
    yield s
    s.stop()


def test_dedup_fast_and_slow_paths(store):
    assert store.write([_ev(s) for s in range(1, 101)]) == (100, 0)
    assert store.write([_ev(s) for s in range(51, 151)]) == (50, 50)  # a resend after a lost ack
    assert store.write([_ev(5), _ev(200), _ev(200), _ev(199)]) == (2, 2)  # late 199 is new
    assert store.write([_ev(1, boot="b2")]) == (1, 0)  # a new run of the same agent
    assert store.stats["stored"] == 153 and store.stats["duplicates"] == 52
    ids = [i for batch in store.published for i, _, _ in batch]
    assert len(ids) == 153 == len(set(ids))  # only new rows go live
    assert {(a, b, last) for a, b, _, last in store.streams()} == {("a1", "b1", 200), ("a1", "b2", 1)}


def test_refused_batch_stores_nothing_and_moves_no_mark(store):
    assert store.write([_ev(s) for s in range(1, 11)]) == (10, 0)
    bad = [_ev(s) for s in range(11, 21)] + [_ev(21, agent="")]
    with pytest.raises(BatchError, match="event 10 of the batch lacks agent_id"):
        store.ingest(bad)
    long = [_ev(11), _ev(12, node="n" * 600)]
    with pytest.raises(BatchError, match="event 1 of the batch has names or ids longer"):
        store.ingest(long)
    # Nothing of them went in, and their seqs are still new: the fast path takes them.
    assert store.ingest([_ev(s) for s in range(11, 21)]) == (10, 0, 20)
    assert store.ingest([_ev(3), _ev(25), _ev(2)]) == (1, 2, 25)  # the highest seq, not the last
    assert [r[0] for r in store.query(EventFilter(), 100)] == list(range(1, 22))
    assert store.stats["stored"] == 21 and store.stats["write_errors"] == 0


def test_body_is_the_bytes_received(store):
    evs = [_ev(s) for s in range(1, 131)]  # more than one multi-row INSERT, and a remainder
    req = cpb.IngestRequest(batch=cpb.Batch(batch_id=1, events=evs)).SerializeToString()
    parsed = cpb.IngestRequest.FromString(req).batch.events
    bodies = event_bodies(req, parsed)
    assert [bytes(b) for b in bodies] == [ev.SerializeToString() for ev in evs]
    store.ingest(parsed, bodies)
    assert [r[2] for r in store.query(EventFilter(), 1000)] == list(bodies)
    # A request whose batch field repeats around a hello parses to fewer events than it
    # holds: no bodies then (the caller serializes), never bodies that belong to other events.
    hello = cpb.IngestRequest(hello=cpb.Hello(agent_id="a1")).SerializeToString()
    odd = cpb.IngestRequest(batch=cpb.Batch(events=evs[:2])).SerializeToString() + hello + \
        cpb.IngestRequest(batch=cpb.Batch(events=evs[2:5])).SerializeToString()
    parsed = cpb.IngestRequest.FromString(odd).batch.events
    assert len(parsed) == 3 and event_bodies(odd, parsed) is None


def test_rows_for_subscribers_only_when_someone_listens(tmp_path):
    published, listening = [], []
    s = Store(str(tmp_path / "ev.db"), 0, 0, publish=published.append, listening=lambda: bool(listening),
              retention_interval=3600)
    s.start()
    s.write([_ev(x) for x in range(1, 11)])
    assert published == []
    listening.append(1)
    s.write([_ev(x) for x in range(11, 16)])
    assert [i for batch in published for i, _, _ in batch] == list(range(11, 16))
    s.stop()


def test_checkpoints_run_beside_the_writer(tmp_path):
    s = Store(str(tmp_path / "ev.db"), 0, 0, retention_interval=3600, checkpoint_interval=0.01)
    s.start()
    for b in range(20):
        s.write([_ev(x) for x in range(b * 100 + 1, b * 100 + 101)])
    deadline = time.monotonic() + 5
    while s.stats["checkpoints"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.stats["checkpoints"] > 0
    s.stop()


def test_store_survives_reopen_and_keeps_dedup(tmp_path):
    s = Store(str(tmp_path / "ev.db"), 0, 0)
    s.start()
    s.write([_ev(x) for x in range(1, 11)])
    s.stop()
    s = Store(str(tmp_path / "ev.db"), 0, 0)
    s.start()
    assert s.write([_ev(x) for x in range(5, 16)]) == (5, 6)
    assert [r[0] for r in s.query(EventFilter(), 100)] == list(range(1, 16))
    s.stop()


FILTERS = [
    cpb.Filter(),
    cpb.Filter(since_unix_nano=10**18 + 20_000, until_unix_nano=10**18 + 40_000),
    cpb.Filter(kinds=["process.exec"]),
    cpb.Filter(kinds=["file"]),
    cpb.Filter(kinds=["file.*", "process.exec"]),
    cpb.Filter(nodes=["n2"]),
    cpb.Filter(container="1111"),
    cpb.Filter(pod="pod2"),
    cpb.Filter(namespace="ns1", pod="pod1"),
    cpb.Filter(min_severity=4),
    cpb.Filter(text="/DATA/1"),
    cpb.Filter(text="%"),
    cpb.Filter(agent_id="a2", kinds=["file"]),
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: str(f).replace("\n", " ") or "all")
def test_sql_and_live_filters_agree(store, f):
    store.write([_ev(s) for s in range(1, 61)])
    store.write([_ev(s, agent="a2", node="n2") for s in range(1, 31)])
    flt = EventFilter.from_pb(f)
    via_sql = [r[0] for r in store.query(flt, 1000)]
    via_match = [i for batch in store.published for i, row, _ in batch if flt.match(row)]
    assert sorted(via_sql) == sorted(via_match)
    assert via_sql or f.text == "%"  # a literal %, escaped: matches nothing here


@pytest.mark.parametrize("f, index", [
    (cpb.Filter(since_unix_nano=5), "events_ts"),
    (cpb.Filter(kinds=["process.exec"]), "events_name_ts"),
    (cpb.Filter(kinds=["file"]), "events_name_ts"),
    (cpb.Filter(container="abc"), "events_container_ts"),
    (cpb.Filter(namespace="ns", pod="p"), "events_namespace_pod_ts"),
])
def test_queries_use_indexes(store, f, index):
    store.write([_ev(s) for s in range(1, 10)])
    assert index in store.explain(EventFilter.from_pb(f))


def test_paging_cursor(store):
    store.write([_ev(s, ts=10**18) for s in range(1, 21)])  # equal timestamps: id breaks the tie
    page1 = list(store.query(EventFilter(), 7))
    page2 = list(store.query(EventFilter(), 7, after=(page1[-1][1], page1[-1][0])))
    assert [r[0] for r in page1 + page2] == list(range(1, 15))


def test_retention_by_age_and_size(tmp_path):
    s = Store(str(tmp_path / "ev.db"), retention_age_s=3600, retention_bytes=0, retention_interval=3600)
    s.start()
    now = time.time_ns()
    s.write([_ev(x, ts=now - 7200 * 10**9) for x in range(1, 51)] + [_ev(x, ts=now) for x in range(51, 61)])
    assert s.enforce_retention() == 50
    assert [r[0] for r in s.query(EventFilter(), 100)] == list(range(51, 61))
    s.retention_age_ns = 0
    s.write([_ev(x, ts=now) for x in range(61, 5061)])
    used = s.used_bytes()
    s.retention_bytes = used // 2
    deleted = s.enforce_retention()
    assert deleted > 0 and s.used_bytes() <= used // 2
    left = [r[0] for r in s.query(EventFilter(), 10**6)]
    assert left == list(range(left[0], 5061))  # the oldest went
    assert s.write([_ev(5060)]) == (0, 1)  # a resend of a kept event is still a duplicate
    s.stop()


def test_slow_subscriber_queue_is_bounded_and_counts():
    hub = Hub()
    slow = hub.add(EventFilter(), max_events=10)
    picky = hub.add(EventFilter(names=("process.exec",)), max_events=10)
    rows = [(i, (0, "process.exec" if i % 2 else "file.open", 2, None, None, None, "", "n", "a"), b"")
            for i in range(1, 101)]
    t0 = time.monotonic()
    for i in range(0, 100, 5):
        hub.publish(rows[i:i + 5])
    assert time.monotonic() - t0 < 0.5
    items, dropped = slow.take(100, 0)
    assert [i for i, _ in items] == list(range(1, 11)) and dropped == 90
    items, dropped = picky.take(100, 0)
    assert len(items) == 10 and dropped == 40  # only matching events count
    hub.remove(slow)
    assert hub.dropped() == 130


def test_filter_validation():
    with pytest.raises(FilterError):
        EventFilter.from_pb(cpb.Filter(kinds=[" "]))
    with pytest.raises(FilterError):
        EventFilter.from_pb(cpb.Filter(text="x" * 5000))
    with pytest.raises(FilterError):
        EventFilter.from_pb(cpb.Filter(nodes=["n"] * 100))


def test_units():
    assert parse_duration("1h30m") == 5400 and parse_duration("7d") == 604800 and parse_duration("15") == 15
    assert parse_size("512MiB") == 512 << 20 and parse_size("1GB") == 10**9 and parse_size(7) == 7
    assert parse_time("10m", now_ns=10**12) == 10**12 - 600 * 10**9
    assert parse_time("2026-01-02T03:04:05Z") == 1767323045 * 10**9
    for bad, fn in (("1x", parse_duration), ("lots", parse_size), ("2026-01-02T03:04:05", parse_time)):
        with pytest.raises(ValueError):
            fn(bad)


def test_memory_db_refused():
    with pytest.raises(ValueError):
        Store(":memory:")


def _stamp(ev, seq, agent="a1", boot="b1"):
    ev.seq, ev.agent_id, ev.boot_id, ev.node = seq, agent, boot, "n1"
    return ev


def _kinds_batch(first_seq: int = 1) -> list:
    """Alerts, verdicts and enforcement beside kernel events, as the agent sends them."""
    pod = ContainerInfo(id="c" * 64, image="evil:1", pod_name="web-0", pod_namespace="shop", namespace="k8s.io")
    opened = _ev(1)  # a file.open, as a kernel record
    subject = Enriched(FileEvent(op=Op.FILE_OPEN, path="/etc/shadow", path2="", ret=0, flags=0, mode=0, dirfd=0,
                                 fd=3, owner_uid=0, owner_gid=0, ts_ns=10**18, pid=7, tid=7, ppid=1, uid=0, gid=0,
                                 cgroup_id=1, mntns=1, comm="cat", truncated=False),
                       ProcInfo(7, 1, "/bin/cat", ("cat", "/etc/shadow"), 0, 0), None, pod)
    typed = [
        AlertEvent(10**18 + 1, "NW-100", "read of shadow", "d", Severity.HIGH, ("Credential Access",), ("T1003",),
                   subject=subject, output="cat read /etc/shadow"),
        AlertEvent(10**18 + 2, "NW-200", "shell", "d", Severity.MEDIUM),
        VerdictEvent(10**18 + 3, Verdict("block", "malware: EICAR", image="evil:1"), pod),
        VerdictEvent(10**18 + 4, Verdict("allow", "clean", image="nginx:1"), None, "k8s.io"),
        EnforcementEvent(10**18 + 5, "nri.create_container", "deny", "image verdict block", verdict="block",
                         container=pod),
    ]
    evs = [opened] + [to_event(flatten(t)) for t in typed]
    return [_stamp(ev, first_seq + i) for i, ev in enumerate(evs)]


KIND_FILTERS = [
    (cpb.Filter(kinds=["alert"]), 2),
    (cpb.Filter(kinds=["verdict"]), 2),
    (cpb.Filter(kinds=["image.verdict"]), 2),
    (cpb.Filter(kinds=["enforcement"]), 1),
    (cpb.Filter(kinds=["enforcement.block", "alert"]), 3),
    (cpb.Filter(kinds=["file"]), 1),
    (cpb.Filter(rules=["NW-100"]), 1),
    (cpb.Filter(rules=["NW-100", "NW-200"], min_severity=5), 1),
    (cpb.Filter(verdicts=["block"]), 2),
    (cpb.Filter(verdicts=["allow"], kinds=["verdict"]), 1),
    (cpb.Filter(text="etc/shadow", kinds=["alert"]), 1),
    (cpb.Filter(text="EICAR"), 1),
    (cpb.Filter(namespace="shop", kinds=["alert"]), 1),
]


@pytest.mark.parametrize("f, want", KIND_FILTERS, ids=lambda f: str(f).replace("\n", " ") if not
                         isinstance(f, int) else str(f))
def test_new_kinds_are_indexed_and_filtered(store, f, want):
    store.write(_kinds_batch())
    flt = EventFilter.from_pb(f)
    via_sql = [r[0] for r in store.query(flt, 1000)]
    via_match = [i for batch in store.published for i, row, _ in batch if flt.match(row)]
    assert sorted(via_sql) == sorted(via_match) and len(via_sql) == want


@pytest.mark.parametrize("f, index", [
    (cpb.Filter(rules=["NW-1"]), "tags_rule"),
    (cpb.Filter(verdicts=["block"]), "tags_verdict"),
])
def test_rule_and_verdict_queries_use_indexes(store, f, index):
    store.write(_kinds_batch())
    assert index in store.explain(EventFilter.from_pb(f))


def test_an_older_database_gains_the_new_columns(tmp_path):
    """A file made by the collector before rules and verdicts were indexed: opened, migrated (the tags
    table), old rows kept."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE streams (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, boot_id TEXT NOT NULL,
            node TEXT NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0, UNIQUE (agent_id, boot_id));
        CREATE TABLE events (id INTEGER PRIMARY KEY, stream INTEGER NOT NULL, seq INTEGER NOT NULL,
            ts INTEGER NOT NULL, received INTEGER NOT NULL, name TEXT NOT NULL, severity INTEGER NOT NULL,
            container TEXT, pod TEXT, namespace TEXT, text TEXT, body BLOB NOT NULL);
        CREATE UNIQUE INDEX events_stream_seq ON events (stream, seq);
    """)
    old.execute("INSERT INTO streams VALUES (1, 'a1', 'b1', 'n1', 1)")
    old.execute("INSERT INTO events VALUES (1, 1, 1, 5, 5, 'process.exec', 2, NULL, NULL, NULL, '', ?)",
                (_ev(1).SerializeToString(),))
    old.commit()
    old.close()
    s = Store(str(path), 0, 0, retention_interval=3600)
    s.start()
    try:
        assert s.write(_kinds_batch(first_seq=2)) == (6, 0)
        assert sorted(r[0] for r in s.query(EventFilter(), 100)) == list(range(1, 8))
        assert len(list(s.query(EventFilter.from_pb(cpb.Filter(rules=["NW-100"])), 100))) == 1
    finally:
        s.stop()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert {"tags", "tags_rule", "tags_verdict", "events_untag"} <= tables


def test_retention_takes_the_tags_with_their_events(tmp_path):
    s = Store(str(tmp_path / "ev.db"), retention_age_s=3600, retention_bytes=0, retention_interval=3600)
    s.start()
    try:
        old = _kinds_batch()
        for ev in old:
            ev.time_unix_nano = 5  # long ago
        s.write(old)
        new = _kinds_batch(first_seq=7)
        for ev in new:
            ev.time_unix_nano = time.time_ns()
        s.write(new)
        rule = EventFilter.from_pb(cpb.Filter(rules=["NW-100"]))
        assert len(list(s.query(rule, 100))) == 2
        assert s.enforce_retention() == 6
        assert [r[0] for r in s.query(rule, 100)] == [8]
        conn = sqlite3.connect(tmp_path / "ev.db")
        assert conn.execute("SELECT min(id), count(*) FROM tags").fetchone() == (8, 5)  # 2 alerts, 2 verdicts, 1 block
    finally:
        s.stop()


def test_seq_beyond_int64_fails_its_batch_only(tmp_path):
    """A batch with seq >= 2^63 in the same group commit as honest batches: it alone is refused."""
    path = str(tmp_path / "ev.db")
    s = Store(path, 0, 0, retention_interval=3600)
    s.start()
    lock = sqlite3.connect(path, isolation_level=None)
    results: dict = {}

    def send(name, events):
        try:
            results[name] = s.ingest(events)
        except Exception as e:  # noqa: BLE001 - the test looks at which error each batch got
            results[name] = e

    try:
        lock.execute("BEGIN IMMEDIATE")  # the writer blocks on its first group until we let go
        first = threading.Thread(target=send, args=("first", [_ev(1, agent="x")]))
        first.start()
        # unfinished_tasks counts every put (the writer never calls task_done): put and taken.
        while not (s._q.unfinished_tasks == 1 and s._q.qsize() == 0):
            time.sleep(0.01)
        threads = [threading.Thread(target=send, args=("bad", [_ev(1, agent="evil"), _ev(2**63, agent="evil")])),
                   threading.Thread(target=send, args=("good", [_ev(s_, agent="honest") for s_ in range(1, 4)]))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while s._q.qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s._q.qsize() == 2  # both wait in the queue: the writer takes them as one group
        commits = s.stats["commits"]
        lock.execute("ROLLBACK")
        for t in [first, *threads]:
            t.join(10)
    finally:
        lock.close()
        s.stop()
    assert s.stats["commits"] == commits + 2  # the first group, then bad + good together
    assert isinstance(results["bad"], BatchError) and "below 2^63" in str(results["bad"])
    assert results["good"] == (3, 0, 3) and results["first"] == (1, 0, 1)
    assert s.stats["write_errors"] == 0
    assert {a for a, _b, _n, _last in s.streams()} >= {"x", "honest"}
