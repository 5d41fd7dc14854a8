"""Behaviour profiles shared through the collector (issue 13), over real gRPC: a real collector
(in this process, or `nodewarden collector` in its own, to SIGKILL it) and the agent's real
ProfileSync; documents as the agent writes them (format 1)."""

from __future__ import annotations

import signal
import time

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_transport_util import start_collector_process, wait_for

from agent.outputs.grpc_channel import ClientSecurity
from agent.outputs.grpc_exporter import ExporterConfig
from agent.outputs.profilesync import NullSync, ProfileSync, build
from collector.profiles import DocError, ProfileLimits, merge_docs, parse_doc, profiles_db_path
from collector.server import CollectorConfig, serve
from nwwire.genproto import load

cpb = load("nodewarden.v1.collector_pb2")
pytestmark = pytest.mark.e2e

KEY = "shop/Deployment/web/app@sha256:" + "ab" * 32


def doc(key=KEY, mode="learning", mode_ts=1.0, locked_by="", items=None, deviations=None, **kw) -> dict:
    ns, kind, owner, rest = (key if key.count("/") >= 3 else KEY).split("/", 3)
    container, image = rest.split("@", 1)
    d = {"format": 1, "key": key,
         "workload": {"namespace": ns, "kind": kind, "owner": owner, "container": container, "image": "web:1",
                      "image_digest": image},
         "mode": mode, "locked_by": locked_by, "created": 100.0, "run_s": 10.0, "quiet_run_s": 5.0,
         "stable_since": 100.0, "revision": 3, "mode_ts": mode_ts,
         "items": items if items is not None else {"exec": {"/bin/sh": [100.0, 110.0, 5]}},
         "overflow": {}, "deviations": deviations or {}}
    d.update(kw)
    return d


def sync_for(address: str, node: str, **kw) -> ProfileSync:
    security = kw.pop("security", ClientSecurity())
    cfg = ExporterConfig(address=address, node=node, security=security, spool_dir="/nonexistent")
    return ProfileSync(cfg, **{"timeout": 2.0, "backoff_initial": 0.05, "backoff_max": 0.3, **kw})


def raw_push(address: str, body: bytes, agent_id="raw", metadata=()):
    ch = grpc.insecure_channel(address)
    try:
        call = ch.unary_unary("/nodewarden.v1.Profiles/Push", request_serializer=cpb.ProfilePush.SerializeToString,
                              response_deserializer=cpb.ProfileAck.FromString)
        return call(cpb.ProfilePush(agent_id=agent_id, node="n", doc=body), timeout=5, metadata=metadata)
    finally:
        ch.close()


def raw_get(address: str, key: str) -> cpb.ProfileReply:
    ch = grpc.insecure_channel(address)
    try:
        call = ch.unary_unary("/nodewarden.v1.Profiles/Get", request_serializer=cpb.ProfileGet.SerializeToString,
                              response_deserializer=cpb.ProfileReply.FromString)
        return call(cpb.ProfileGet(agent_id="raw", key=key), timeout=5)
    finally:
        ch.close()


def pushed(sync: ProfileSync, n: int):
    wait_for(lambda: sync.counters()["pushed"] >= n and sync.counters()["queued"] == 0, timeout=15)


@pytest.fixture
def collector(tmp_path):
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db")))
    yield handle
    handle.stop(0.5)


# -- two agents, one workload ----------------------------------------------------------------------


def test_two_agents_pushes_are_merged(collector):
    a, b, c = (sync_for(collector.address, n) for n in ("node-a", "node-b", "node-c"))
    try:
        a.push(doc(items={"exec": {"/bin/sh": [100.0, 110.0, 5], "/app/run": [101.0, 120.0, 2]},
                          "listen": {"tcp/8080": [100.0, 100.0, 1]}}))
        b.push(doc(mode="protecting", locked_by="user", mode_ts=50.0, created=90.0, run_s=40.0, quiet_run_s=2.0,
                   stable_since=130.0,
                   items={"exec": {"/bin/sh": [95.0, 105.0, 9]}, "peer": {"tcp/10.0.0.7:5432": [96.0, 97.0, 3]}},
                   deviations={"exec": {"/usr/bin/nc": [131.0, 131.0, 1]}}))
        pushed(a, 1)
        pushed(b, 1)
        got = c.fetch(KEY)  # a third node, starting the workload's first container there
        assert got is not None
        assert got["items"] == {
            "exec": {"/bin/sh": [95.0, 110.0, 9], "/app/run": [101.0, 120.0, 2]},  # first min, last max, count max
            "listen": {"tcp/8080": [100.0, 100.0, 1]},
            "peer": {"tcp/10.0.0.7:5432": [96.0, 97.0, 3]},
        }
        assert got["deviations"] == {"exec": {"/usr/bin/nc": [131.0, 131.0, 1]}}  # never learned, kept apart
        assert (got["mode"], got["locked_by"], got["mode_ts"]) == ("protecting", "user", 50.0)  # newest mode_ts
        assert (got["created"], got["run_s"], got["quiet_run_s"], got["stable_since"]) == (90.0, 40.0, 2.0, 130.0)
        assert got["workload"]["owner"] == "web" and got["format"] == 1
        rev = got["revision"]

        # An older mode change does not undo a newer one; a newer one wins.
        a.push(doc(mode="monitoring", locked_by="auto", mode_ts=20.0))
        pushed(a, 2)
        assert c.fetch(KEY)["mode"] == "protecting"
        a.push(doc(mode="monitoring", locked_by="auto", mode_ts=60.0))
        pushed(a, 3)
        again = c.fetch(KEY)
        assert (again["mode"], again["locked_by"]) == ("monitoring", "auto")
        assert again["revision"] == rev + 1  # the first of the two changed nothing
        assert again["items"]["peer"] == got["items"]["peer"]  # a's documents never had b's peer: still there

        # Pushing the merged document back (what an agent does after fetching) changes nothing.
        ack = raw_push(collector.address, orjson.dumps(again), agent_id="node-c")
        assert not ack.changed and ack.revision == again["revision"] and ack.agents == 3
        # Each agent's own latest document is kept beside the merged one.
        docs = collector.profiles.agent_docs(KEY)
        assert [x[0] for x in docs] == ["node-a", "node-b", "node-c"]
        assert orjson.loads(docs[0][2])["mode_ts"] == 60.0
        m = collector.metrics()
        assert m["profiles"] == 1 and m["profile_pushes"] == 5 and m["profile_refused"] == 0
    finally:
        for s in (a, b, c):
            s.close()
    assert a.drops() == {"profile.sync_queue": 0, "profile.sync_refused": 0, "profile.sync_unsent": 0}


def test_get_of_an_unknown_key_is_an_empty_reply(collector):
    reply = raw_get(collector.address, "nowhere/-/-/x@img")  # OK status, no error
    assert reply.doc == b"" and reply.revision == 0 and reply.agents == 0
    s = sync_for(collector.address, "node-a")
    try:
        assert s.fetch("nowhere/-/-/x@img") is None
        assert s.counters()["fetch_misses"] == 1 and s.counters()["fetch_errors"] == 0
    finally:
        s.close()
    with pytest.raises(grpc.RpcError) as e:  # no key at all is the caller's mistake
        raw_get(collector.address, "")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("body, error", [
    (b"{not json", "profile doc is not JSON"),
    (b"[1, 2]", "must be a JSON object, not list"),
    (orjson.dumps(doc(format=2)), "format 2; this collector reads format 1"),
    (orjson.dumps(doc(mode="sleeping")), "mode 'sleeping'"),
    (orjson.dumps(doc(locked_by="me")), "locked_by 'me'"),
    (orjson.dumps(doc(key="")), "key must be a string"),
    (orjson.dumps(doc(run_s=-1)), "run_s must be a non-negative number"),
    (orjson.dumps(doc(items={"exec": {"/bin/sh": [1.0, 2.0]}})), "items.exec['/bin/sh'] must be [first, last, count]"),
    (orjson.dumps(doc(items={"exec": {"/bin/sh": [1.0, 2.0, "5"]}})), "items.exec['/bin/sh'] count"),
    (orjson.dumps(doc(items={"Exec!": {}})), "items: bad kind 'Exec!'"),
    (orjson.dumps(doc(items={"exec": ["/bin/sh"]})), "items.exec must be an object of items"),
    (orjson.dumps(doc(overflow={"exec": -3})), "overflow.exec must be a non-negative integer"),
    (orjson.dumps({k: v for k, v in doc().items() if k != "created"}), "created is missing"),
    (orjson.dumps(doc(key="shop/Deployment/api/app@sha256:" + "ab" * 32) | {"workload": doc()["workload"]}),
     "is not its workload's ('shop/Deployment/web/app@sha256:abab"),
    (orjson.dumps(doc(workload={"namespace": "shop", "container": ""})), "workload.container is empty"),
])
def test_a_corrupt_doc_is_refused_with_a_clear_error(collector, body, error):
    with pytest.raises(grpc.RpcError) as e:
        raw_push(collector.address, body)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error in e.value.details() and "\n" not in e.value.details()
    assert collector.metrics()["profile_refused"] == 1
    assert raw_get(collector.address, KEY).doc == b""  # nothing of it kept


def test_the_agent_counts_what_the_collector_refuses(collector):
    s = sync_for(collector.address, "node-a")
    try:
        s.push(doc(mode="sleeping"))  # the collector refuses it: dropped, not retried
        s.push({"no": "key"})  # not a document at all: never sent
        s.push(doc(key="shop/Deployment/api/app@img"))
        wait_for(lambda: s.drops()["profile.sync_refused"] == 2 and s.counters()["pushed"] == 1)
        assert s.counters()["push_errors"] == 0
    finally:
        s.close()


def test_limits_of_the_collector(tmp_path):
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), max_profiles=2,
                                   max_profile_items=3))
    s = sync_for(handle.address, "node-a")
    try:
        for i in range(3):
            s.push(doc(key=f"ns/-/-/c{i}@img"))
        wait_for(lambda: s.counters()["pushed"] == 2 and s.drops()["profile.sync_refused"] == 1)
        with pytest.raises(grpc.RpcError) as e:
            raw_push(handle.address, orjson.dumps(doc(key="ns/-/-/c9@img")))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in e.value.details()
        # A document over the per-kind cap is refused; a merge past it keeps the cap and counts the rest.
        with pytest.raises(grpc.RpcError) as e:
            raw_push(handle.address, orjson.dumps(doc(key="ns/-/-/c0@img",
                                                      items={"exec": {f"/x{i}": [1.0, 1.0, 1] for i in range(4)}})))
        assert "items.exec has 4 items; the collector takes 3" in e.value.details()
        raw_push(handle.address, orjson.dumps(doc(key="ns/-/-/c0@img",
                                                  items={"exec": {f"/y{i}": [1.0, 1.0, 1] for i in range(3)}})))
        merged = s.fetch("ns/-/-/c0@img")
        assert len(merged["items"]["exec"]) == 3 and "/bin/sh" in merged["items"]["exec"]
        assert merged["overflow"] == {"exec": 1}
        assert handle.metrics()["profile_merge_overflow"] == 1
    finally:
        s.close()
        handle.stop(0.5)


def test_documents_kept_per_key_are_bounded(tmp_path):
    from collector.profiles import ProfileTable

    t = ProfileTable(str(tmp_path / "p.db"), ProfileLimits(max_agents_per_key=2))
    try:
        for agent in ("a", "b", "c", "c", "d"):
            t.push(agent, "n", orjson.dumps(doc(items={"exec": {f"/bin/{agent}": [1.0, 1.0, 1]}})))
        merged, _rev, agents = t.get(KEY)
        assert agents == 2 and [a for a, _n, _d in t.agent_docs(KEY)] == ["a", "b"]
        assert set(orjson.loads(merged)["items"]["exec"]) == {"/bin/a", "/bin/b", "/bin/c", "/bin/d"}  # all merged
        assert t.stats["profile_docs_unkept"] == 3 and t.stats["profile_pushes"] == 5
    finally:
        t.close()


def test_token_auth_covers_profiles(tmp_path):
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), token="s3cret"))
    good = sync_for(handle.address, "node-a", security=ClientSecurity(token="s3cret"))
    bad = sync_for(handle.address, "node-b", security=ClientSecurity(token="wrong"))
    try:
        good.push(doc())
        pushed(good, 1)
        assert good.fetch(KEY)["key"] == KEY
        assert bad.fetch(KEY) is None and bad.counters()["fetch_errors"] == 1
        bad.push(doc(key="ns/-/-/evil@img"))  # UNAUTHENTICATED is retried (a token may be rotated in)
        wait_for(lambda: bad.counters()["push_errors"] >= 2)
        assert handle.metrics()["profiles"] == 1
        ch = grpc.insecure_channel(handle.address)
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="nodewarden.v1.Profiles"),
                                                      timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        ch.close()
    finally:
        good.close()
        bad.close(timeout=0.2)
        handle.stop(0.5)
    assert bad.drops()["profile.sync_unsent"] == 1


# -- a collector that is away ----------------------------------------------------------------------


@pytest.mark.parametrize("address", ["dead-port", "unix-missing", "black-hole"])
def test_dead_collector_fetch_is_bounded_and_push_drops_are_counted(tmp_path, address):
    if address == "dead-port":
        handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db")))
        address = handle.address
        handle.stop(0)  # a port where nothing listens any more
    elif address == "unix-missing":
        address = f"unix:{tmp_path}/nobody.sock"
    else:
        address = "192.0.2.1:7470"  # TEST-NET-1: never routed, the connect hangs rather than fails
    s = sync_for(address, "node-a", timeout=0.5, queue_size=4)
    try:
        for timeout in (0.5, 0.2):
            t0 = time.monotonic()
            assert s.fetch(KEY, timeout) is None
            took = time.monotonic() - t0
            assert took < timeout + 0.3, f"fetch took {took:.2f} s with a timeout of {timeout} s"
        assert s.fetch(KEY, 0) is None  # no time at all: not even tried
        t0 = time.monotonic()
        for i in range(4):
            s.push(doc(key=f"ns/-/-/c{i}@img"))
        s.push(doc(key="ns/-/-/c3@img", mode="monitoring"))  # a newer doc of a queued key: replaces it
        for i in range(4, 10):
            s.push(doc(key=f"ns/-/-/c{i}@img"))
        assert time.monotonic() - t0 < 0.1  # never waits for the network
        # 4 queued, at most one more taken out by the sender to try; the rest dropped, counted.
        assert 5 <= s.drops()["profile.sync_queue"] <= 6
        assert s.counters()["pushed"] == 0 and s.counters()["queued"] <= 4
    finally:
        s.close(timeout=0.2)
    d, c = s.drops(), s.counters()
    # Every push is accounted for: sent, replaced by a newer one, dropped, or left unsent at close.
    assert c["pushed"] + c["superseded"] + d["profile.sync_queue"] + d["profile.sync_unsent"] == 11, (c, d)
    assert c["superseded"] == 1 and d["profile.sync_unsent"] >= 3
    assert s.fetch(KEY) is None  # closed: None, at once


def test_pushes_wait_for_a_collector_that_comes_back(tmp_path):
    sock = f"unix:{tmp_path}/c.sock"
    s = sync_for(sock, "node-a")
    try:
        s.push(doc())
        wait_for(lambda: s.counters()["push_errors"] >= 1)
        handle = serve(CollectorConfig(listen=[sock], db=str(tmp_path / "events.db")))
        try:
            pushed(s, 1)
            assert raw_get(sock, KEY).revision == 1
            assert s.drops()["profile.sync_queue"] == 0
        finally:
            handle.stop(0.5)
    finally:
        s.close()


def test_collector_killed_and_restarted_keeps_the_merged_profiles(tmp_path):
    sock = f"unix:{tmp_path}/c.sock"
    db = tmp_path / "events.db"
    proc = start_collector_process(sock, db)
    a, b = sync_for(sock, "node-a"), sync_for(sock, "node-b")
    try:
        a.push(doc(items={"exec": {"/app/run": [1.0, 2.0, 3]}}))
        b.push(doc(mode="protecting", locked_by="user", mode_ts=9.0, items={"exec": {"/bin/sh": [1.0, 5.0, 2]}}))
        pushed(a, 1)
        pushed(b, 1)
        before = a.fetch(KEY)
        assert before["mode"] == "protecting" and set(before["items"]["exec"]) == {"/app/run", "/bin/sh"}
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: what was acked is committed
        proc.wait()
        assert a.fetch(KEY, 0.3) is None
        proc = start_collector_process(sock, db)
        after = wait_for(lambda: a.fetch(KEY, 1.0), timeout=15)
        assert after == before
        # ... and merging goes on from what was stored, with both agents' documents.
        a.push(doc(items={"exec": {"/app/run": [1.0, 2.0, 3], "/app/job": [3.0, 3.0, 1]}}))
        pushed(a, 2)
        merged = b.fetch(KEY)
        assert set(merged["items"]["exec"]) == {"/app/run", "/bin/sh", "/app/job"}
        assert merged["mode"] == "protecting" and merged["revision"] == before["revision"] + 1
    finally:
        a.close()
        b.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert (tmp_path / "events.profiles.db").exists() and profiles_db_path(str(db)) == str(tmp_path /
                                                                                           "events.profiles.db")


# -- the merge on documents ------------------------------------------------------------------------


def test_merge_is_idempotent_and_leaves_its_inputs_alone():
    x = parse_doc(orjson.dumps(doc(items={"exec": {"/a": [1, 2, 3]}})))
    y = parse_doc(orjson.dumps(doc(mode="monitoring", mode_ts=5, items={"exec": {"/a": [0, 1, 9], "/b": [4, 4, 1]}})))
    xs, ys = orjson.dumps(x), orjson.dumps(y)
    m, left = merge_docs(x, y)
    assert left == 0 and orjson.dumps(x) == xs and orjson.dumps(y) == ys
    assert m["items"]["exec"] == {"/a": [0.0, 2.0, 9], "/b": [4.0, 4.0, 1]} and m["mode"] == "monitoring"
    assert merge_docs(m, y)[0] == m and merge_docs(m, x)[0] == m
    assert merge_docs(y, x)[0]["items"] == m["items"]  # order does not change the items
    # A deviation learned elsewhere is a learned item, no longer a deviation; an agent's document
    # without optional fields reads as Profile.from_doc reads it.
    dev = parse_doc(orjson.dumps(doc(items={}, deviations={"exec": {"/b": [9, 9, 1], "/c": [9, 9, 1]}})))
    md = merge_docs(y, dev)[0]
    assert md["deviations"] == {"exec": {"/c": [9.0, 9.0, 1]}} and "/b" in md["items"]["exec"]
    bare = {k: v for k, v in doc().items() if k not in ("run_s", "quiet_run_s", "stable_since", "mode_ts")}
    p = parse_doc(orjson.dumps(bare))
    assert (p["run_s"], p["quiet_run_s"], p["stable_since"], p["mode_ts"]) == (0.0, 0.0, 100.0, 0.0)
    # A tie on mode_ts keeps what is stored.
    assert merge_docs(x, parse_doc(orjson.dumps(doc(mode="protecting"))))[0]["mode"] == "learning"
    with pytest.raises(DocError):
        parse_doc(b"x" * 100, ProfileLimits(max_doc_bytes=10))


def test_build_without_a_collector_is_a_null_sync():
    from agent.config import ProfilesConfig

    n = build(None, ProfilesConfig())
    assert isinstance(n, NullSync) and not n.enabled and n.fetch(KEY) is None and n.drops() == {}
    n.push(doc())
    n.close()
    cfg = ExporterConfig(address="127.0.0.1:1", node="n", spool_dir="/nonexistent")
    assert isinstance(build(cfg, ProfilesConfig(sync=False)), NullSync)
    s = build(cfg, ProfilesConfig(fetch_timeout_s=0.25))
    try:
        assert isinstance(s, ProfileSync) and s.timeout == 0.25 and s.agent_id == "n"
    finally:
        s.close(timeout=0.1)


def test_the_collector_merges_as_profile_merge_does(collector):
    """Documents of the agent's own model (agent/detect/profile/model.py), through the collector and
    back: the fetched profile is what Profile.merge makes of the two, and reads back with from_doc."""
    from agent.detect.profile.key import Workload
    from agent.detect.profile.model import Profile

    w = Workload("shop", "Deployment", "web", "app", "web:1", "sha256:" + "cd" * 32)
    pa, pb = Profile(w, 1000.0), Profile(w, 990.0)
    for i, path in enumerate(("/bin/sh", "/app/run", "/usr/bin/env")):
        pa.learn("exec", path, 1000.0 + i, 512)
    pa.learn("listen", "tcp/8080", 1001.0, 512)
    for i in range(20):  # 17+ addresses of one /24: a CIDR item in pb
        pb.learn("peer", f"tcp/10.1.2.{i}:5432", 995.0 + i, 512)
    pb.learn("exec", "/bin/sh", 994.0, 512)
    pb.deviations["exec"]["/usr/bin/env"] = [1200.0, 1200.0, 1]  # a deviation on b, learned on a
    pb.mode, pb.locked_by, pb.mode_ts = "protecting", "user", 1300.0
    a, b = sync_for(collector.address, "node-a"), sync_for(collector.address, "node-b")
    try:
        a.push(pa.to_doc())
        pushed(a, 1)
        b.push(pb.to_doc())
        pushed(b, 1)
        got = Profile.from_doc(a.fetch(w.key))
    finally:
        a.close()
        b.close()
    local = Profile.from_doc(pa.to_doc())
    assert local.merge(Profile.from_doc(pb.to_doc()))
    assert got.items == local.items and got.deviations == local.deviations
    assert (got.mode, got.locked_by, got.mode_ts) == (local.mode, local.locked_by, local.mode_ts) == \
        ("protecting", "user", 1300.0)
    assert (got.created, got.run_s, got.stable_since) == (local.created, local.run_s, local.stable_since)
    assert got.known("peer", "tcp/10.1.2.200:5432") is not None  # the CIDR item came through as one
    assert not Profile.from_doc(got.to_doc()).merge(got)  # nothing new either way


def test_a_busy_collector_is_retried_not_dropped(tmp_path):
    """RESOURCE_EXHAUSTED from the server's call limit passes; the push is retried, not counted refused."""
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), max_workers=1))
    ch = grpc.insecure_channel(handle.address)
    s = sync_for(handle.address, "node-a")
    try:
        sub = ch.unary_stream("/nodewarden.v1.Collector/Subscribe",
                              request_serializer=cpb.SubscribeRequest.SerializeToString,
                              response_deserializer=cpb.SubscribeResponse.FromString)(cpb.SubscribeRequest())
        wait_for(lambda: handle.metrics()["subscribers"] == 1)  # the one call the collector takes
        s.push(doc())
        wait_for(lambda: s.counters()["push_errors"] >= 2)
        assert s.drops()["profile.sync_refused"] == 0
        sub.cancel()
        pushed(s, 1)
        assert raw_get(handle.address, KEY).agents == 1
    finally:
        s.close()
        ch.close()
        handle.stop(0.5)


def test_a_fresh_profile_never_unlocks_a_workload_locked_elsewhere():
    """A node that meets a locked workload's container without having fetched it (no pre-start gate, a fetch
    that timed out) pushes a fresh learning profile later than the lock: the merge keeps the lock."""
    from agent.detect.profile import Profile, workload_of
    from agent.events import ContainerInfo

    w = workload_of(ContainerInfo(id="c1", name="app", image="registry.test/app:1", image_digest="sha256:" + "a" * 64))
    locked = Profile(w, 100.0)
    locked.mode, locked.locked_by, locked.mode_ts = "protecting", "user", 150.0
    fresh = Profile(w, 200.0)
    merged, _ = merge_docs(parse_doc(orjson.dumps(locked.to_doc())), parse_doc(orjson.dumps(fresh.to_doc())))
    assert (merged["mode"], merged["locked_by"]) == ("protecting", "user")
