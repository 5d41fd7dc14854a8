"""Behaviour profiles and the console's per-event status shared by collector replicas on one PostgreSQL
(collector/profiles_pg.py, collector/status_pg.py), against a real server (tests/harness/pg.py) and two
real collectors in this process: the agent's real ProfileSync pushing to replica A and another to
replica B, Get on either returning the merge; concurrent pushes of one new key to both replicas all
landing; a status set through A's console API read back through B's; the database dropped under a
replica: a clear, counted UNAVAILABLE / 500, never a crash."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import grpc
import orjson
import pytest
from test_profile_collector import KEY, doc, pushed, raw_get, raw_push, sync_for

from collector.profiles_pg import PgProfileTable
from collector.server import CollectorConfig, serve
from collector.status_pg import PgStatusTable
from nwwire.codec import rfc3339, to_event
from nwwire.genproto import load
from tests.harness.pg import pg_url, postgres  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e
cpb = load("nodewarden.v1.collector_pb2")
gpb = load("nodewarden.v1.collector_pb2_grpc")
TOKEN = "shared-pg-token"


@pytest.fixture
def replicas(pg_url, tmp_path):  # noqa: F811
    """Two collectors on one database, each with its own (unused) SQLite path and its own console."""
    hs = []
    try:
        for name in ("a", "b"):
            hs.append(serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / name / "events.db"),
                                            store=pg_url, http_listen="127.0.0.1:0", token=TOKEN)))
        yield hs
    finally:
        for h in hs:
            h.stop(0.5)


def _meta():
    return (("authorization", f"Bearer {TOKEN}"),)


def test_profiles_pushed_to_two_replicas_merge_and_read_back_from_either(replicas, tmp_path):
    from agent.outputs.grpc_channel import ClientSecurity

    a, b = replicas
    sec = ClientSecurity(token=TOKEN)
    sa, sb = sync_for(a.address, "node-a", security=sec), sync_for(b.address, "node-b", security=sec)
    try:
        sa.push(doc(items={"exec": {"/bin/sh": [100.0, 110.0, 5], "/app/run": [101.0, 120.0, 2]}}))
        sb.push(doc(mode="protecting", locked_by="user", mode_ts=50.0, created=90.0,
                    items={"exec": {"/bin/sh": [95.0, 105.0, 9]}, "peer": {"tcp/10.0.0.7:5432": [96.0, 97.0, 3]}}))
        pushed(sa, 1)
        pushed(sb, 1)
        for h in (a, b):  # either replica answers with both agents' documents merged
            got = sync_for(h.address, "node-c", security=sec)
            try:
                m = got.fetch(KEY)
            finally:
                got.close()
            assert m is not None
            assert m["items"] == {"exec": {"/bin/sh": [95.0, 110.0, 9], "/app/run": [101.0, 120.0, 2]},
                                  "peer": {"tcp/10.0.0.7:5432": [96.0, 97.0, 3]}}
            assert (m["mode"], m["locked_by"], m["created"], m["revision"]) == ("protecting", "user", 90.0, 2)
            assert [x[0] for x in h.profiles.agent_docs(KEY)] == ["node-a", "node-b"]
            assert h.metrics()["profiles"] == 1
        assert a.metrics()["profile_pushes"] == 1 and b.metrics()["profile_pushes"] == 1
        # Nothing went to a SQLite profiles file beside either replica's db path.
        assert not list(tmp_path.rglob("*.profiles.db"))
    finally:
        sa.close()
        sb.close()
    assert sa.drops()["profile.sync_refused"] == 0 and sb.drops()["profile.sync_refused"] == 0


def test_concurrent_pushes_of_a_new_key_to_both_replicas_all_land(replicas):
    """Row lock and the first-insert race: 2 x 3 threads push their own items of one new key at once."""
    a, b = replicas
    key = "race/Deployment/web/app@sha256:" + "cd" * 32
    n = 15
    errors: list = []
    start = threading.Barrier(6)

    def pusher(h, who: str):
        start.wait()
        for i in range(n):
            body = orjson.dumps(doc(key=key, items={"exec": {f"/bin/{who}-{i}": [100.0 + i, 100.0 + i, 1]}}))
            try:
                raw_push(h.address, body, agent_id=who, metadata=_meta())
            except grpc.RpcError as e:
                errors.append(f"{who}: {e.code()} {e.details()}")

    ts = [threading.Thread(target=pusher, args=(h, f"{h is a and 'a' or 'b'}{t}")) for h in (a, b) for t in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert errors == []
    reply = raw_get_auth(b.address, key)
    merged = orjson.loads(reply.doc)
    assert len(merged["items"]["exec"]) == 6 * n  # none overwrote another's read-modify-write
    assert reply.revision == 6 * n and reply.agents == 6  # every push changed the merge once
    assert a.metrics()["profile_write_errors"] == 0 and b.metrics()["profile_write_errors"] == 0
    assert a.metrics()["profile_pushes"] + b.metrics()["profile_pushes"] == 6 * n


def raw_get_auth(address: str, key: str):
    ch = grpc.insecure_channel(address)
    try:
        call = ch.unary_unary("/nodewarden.v1.Profiles/Get", request_serializer=cpb.ProfileGet.SerializeToString,
                              response_deserializer=cpb.ProfileReply.FromString)
        return call(cpb.ProfileGet(agent_id="t", key=key), timeout=5, metadata=_meta())
    finally:
        ch.close()


def _alert(seq: int) -> dict:
    import time

    return {"event.name": "alert", "timestamp": rfc3339(time.time_ns() - seq * 10**9), "event.severity": "high",
            "process.pid": 100 + seq, "process.name": "sh", "process.executable.path": "/bin/sh",
            "container.id": f"{seq:02d}" + "c0ffee" * 10, "container.name": "web",
            "container.image.name": "nginx:1.25", "k8s.pod.name": "web-1", "k8s.namespace.name": "shop",
            "rule.id": "shell_in_container", "rule.name": "Shell in container", "alert.findings": []}


def _api(h, path: str, data: bytes | None = None):
    req = urllib.request.Request(h.console.url.rstrip("/") + path, data=data,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return orjson.loads(r.read())


def test_status_set_through_one_console_reads_back_through_the_other(replicas):
    a, b = replicas
    evs = []
    for seq in (1, 2, 3):
        ev = to_event(_alert(seq))
        ev.node, ev.agent_id, ev.boot_id, ev.seq = "node-a", "agent-a", "boot-1", seq
        evs.append(ev)
    with grpc.insecure_channel(a.address) as ch:
        acks = [r for r in gpb.CollectorStub(ch).Ingest(iter([cpb.IngestRequest(batch=cpb.Batch(batch_id=1,
                                                                                                  events=evs))]),
                                                        metadata=_meta(), timeout=30)]
        assert acks[-1].ack.stored == 3
    ids = [e["id"] for e in _api(b, "/api/events")["events"]]
    assert len(ids) == 3 and ids == [e["id"] for e in _api(a, "/api/events")["events"]]  # same ids on both

    got = _api(a, f"/api/events/{ids[0]}/status", data=b'{"status": "handled", "note": "patched"}')
    assert got["status"] == "handled"
    _api(a, f"/api/events/{ids[1]}/status", data=b'{"status": "ignored"}')
    st = _api(b, f"/api/events/{ids[0]}")["status"]
    assert (st["status"], st["note"], st["by"]) == ("handled", "patched", "127.0.0.1")
    assert [e["id"] for e in _api(b, "/api/events?status=handled")["events"]] == [ids[0]]
    assert [e["id"] for e in _api(b, "/api/events?status=unhandled")["events"]] == [ids[2]]
    # Back to unhandled through B: A sees it gone.
    _api(b, f"/api/events/{ids[0]}/status", data=b'{"status": "unhandled"}')
    assert _api(a, f"/api/events/{ids[0]}")["status"]["status"] == "unhandled"
    assert [e["id"] for e in _api(a, "/api/events?status=ignored")["events"]] == [ids[1]]
    # A note PostgreSQL text cannot hold is a 400 with its reason, not a 500.
    with pytest.raises(urllib.error.HTTPError) as e:
        _api(a, f"/api/events/{ids[2]}/status", data=b'{"status": "handled", "note": "a\\u0000b"}')
    assert e.value.code == 400 and b"NUL" in e.value.read()


def test_the_database_gone_is_unavailable_counted_and_one_line(postgres, pg_url):  # noqa: F811
    prof = PgProfileTable(pg_url)
    status = PgStatusTable(pg_url)
    try:
        key, changed, rev, agents = prof.push("a", "n", orjson.dumps(doc()))
        assert (key, changed, rev, agents) == (KEY, True, 1, 1)
        status.set(7, "handled")
        postgres.drop_database(pg_url.rsplit("/", 1)[1])  # WITH (FORCE): both connections are cut
        with pytest.raises(Exception) as e:
            prof.push("a", "n", orjson.dumps(doc(items={"exec": {"/bin/x": [1.0, 1.0, 1]}})))
        assert type(e.value).__name__ == "ProfileStoreError" and "\n" not in str(e.value)
        assert prof.stats["profile_write_errors"] == 1
        with pytest.raises(Exception) as e:
            status.get_many([7])
        assert type(e.value).__name__ == "StatusStoreError" and "\n" not in str(e.value)
        assert status.stats["status_errors"] == 1
        assert prof.count() == 1  # a scrape on a store that is gone answers the last count, it does not raise
    finally:
        prof.close()
        status.close()


def test_a_grpc_push_when_the_database_is_gone_is_unavailable(postgres, pg_url, tmp_path):  # noqa: F811
    h = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), store=pg_url))
    try:
        assert raw_push(h.address, orjson.dumps(doc())).revision == 1
        assert orjson.loads(raw_get(h.address, KEY).doc)["key"] == KEY
        postgres.drop_database(pg_url.rsplit("/", 1)[1])
        with pytest.raises(grpc.RpcError) as e:
            raw_push(h.address, orjson.dumps(doc(mode_ts=9.0)))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "profile store" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            raw_get(h.address, KEY)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert h.metrics()["profile_write_errors"] == 1
    finally:
        h.stop(0.5)


def test_max_profiles_is_one_bound_across_replicas(pg_url, tmp_path):  # noqa: F811
    hs = [serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / n / "events.db"), store=pg_url,
                                max_profiles=2)) for n in ("a", "b")]
    try:
        keys = [f"ns/Deployment/w{i}/app@sha256:" + "ef" * 32 for i in range(3)]
        raw_push(hs[0].address, orjson.dumps(doc(key=keys[0])))
        raw_push(hs[1].address, orjson.dumps(doc(key=keys[1])))
        for h in hs:  # the table holds 2, whichever replica took them: a third key is refused by both
            with pytest.raises(grpc.RpcError) as e:
                raw_push(h.address, orjson.dumps(doc(key=keys[2])))
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 profiles" in e.value.details()
            assert h.metrics()["profile_refused"] == 1 and h.metrics()["profiles"] == 2
        # A known key still merges on either.
        assert raw_push(hs[1].address, orjson.dumps(doc(key=keys[0], mode_ts=5.0, mode="monitoring"))).changed
    finally:
        for h in hs:
            h.stop(0.5)
