"""The NATS JetStream bus end to end: agents' exporters -> the real collector -> a three-node JetStream
cluster of Debian's nats-server on loopback -> a durable pull consumer, which must read every stored
event exactly once, also when a NATS node (the stream's leader) is killed mid-stream."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from test_transport_util import exporter, make_record, query_all, wait_for

from collector.server import CollectorConfig, serve
from tests.harness.nats import NatsCluster, missing_requirements
from tests.harness.pg import pg_url, postgres  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e

STREAM = "NODEWARDEN"


@pytest.fixture
def cluster(tmp_path):
    why = missing_requirements()
    if why:
        pytest.skip(f"NATS JetStream: {why}")
    c = NatsCluster(tmp_path / "nats")
    c.start()
    try:
        yield c
    finally:
        c.stop()


def consume(urls: list[str], expected: int, durable: str = "reader", timeout: float = 30.0,
            subject: str = "nodewarden.>", stream: str = STREAM) -> list[tuple[str, int, str, bytes]]:
    """Read the stream with a durable pull consumer, acking each message (double ack: the ack is
    confirmed), until `expected` distinct messages came and the consumer has nothing pending.
    Returns (msg id, stream seq, subject, payload) per delivery, redeliveries included."""
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    async def run():
        nc = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream(timeout=5)
        got: list = []
        seqs: set = set()
        deadline = time.monotonic() + timeout
        sub = None
        try:
            while time.monotonic() < deadline:
                try:
                    if sub is None:
                        sub = await js.pull_subscribe(subject, durable, stream=stream)
                    msgs = await sub.fetch(500, timeout=1)
                except NatsTimeout:
                    msgs = []
                except Exception:  # a leader moving: the consumer answers again soon
                    await asyncio.sleep(0.2)
                    continue
                for k, m in enumerate(msgs):
                    got.append((m.headers.get("Nats-Msg-Id"), m.metadata.sequence.stream, m.subject, m.data))
                    seqs.add(m.metadata.sequence.stream)
                    try:  # acks go in order on one connection: the last one's confirmation covers the batch
                        await (m.ack_sync(timeout=5) if k == len(msgs) - 1 else m.ack())
                    except Exception:  # unacked: it comes again, and the test sees it twice
                        pass
                if len(seqs) >= expected and not msgs:
                    info = await js.consumer_info(stream, durable)
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        break
            return got
        finally:
            await nc.close()

    return asyncio.run(run())


def stream_info(urls: list[str]):
    import nats

    async def run():
        nc = await nats.connect(urls, connect_timeout=2)
        try:
            return await nc.jetstream(timeout=5).stream_info(STREAM)
        finally:
            await nc.close()

    return asyncio.run(run())


def stored_ids(address: str) -> list[str]:
    return [f"{r['nodewarden.agent_id']}/{r['nodewarden.boot_id']}/{r['seq']}" for r in query_all(address)]


def _stream_agents(address, tmp_path, agents: int, per_agent: int, pace: float = 0.0, during=None):
    """`agents` exporters submitting `per_agent` events each (a short sleep every 100 when paced);
    `during()` runs once half of them went in. Returns the exporters, all stopped and acked."""
    exps = [exporter(address, tmp_path / f"spool{a}", node=f"node-{a}", backoff_max=0.3) for a in range(agents)]
    half = threading.Event()

    def feed(exp, a):
        for i in range(per_agent):
            exp.submit(make_record(a * per_agent + i))
            if i % 100 == 99 and pace:
                time.sleep(pace)
            if i == per_agent // 2 and a == 0:
                half.set()

    threads = [threading.Thread(target=feed, args=(e, a)) for a, e in enumerate(exps)]
    for t in threads:
        t.start()
    if during is not None:
        half.wait(30)
        during()
    for t in threads:
        t.join()
    for e in exps:
        assert e.stop(timeout=60), e.metrics()
    return exps


def _assert_once(got, stored: list[str]):
    ids = [g[0] for g in got]
    seqs = {g[1] for g in got}
    assert len(set(stored)) == len(stored)  # the store itself holds each once
    assert set(ids) == set(stored), (len(set(ids)), len(stored))
    assert len(seqs) == len(stored), "the stream holds an event twice"
    # One delivery per message: no redelivery was needed (every ack went through).
    assert len(ids) == len(stored), f"{len(ids) - len(stored)} redeliveries"


def test_each_stored_event_once_on_a_durable_consumer(cluster, tmp_path):
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), nats=cluster.url))
    try:
        _stream_agents(handle.address, tmp_path, agents=3, per_agent=1000)
        stored = stored_ids(handle.address)
        assert len(stored) == 3000
        got = consume(cluster.urls, len(stored))
        _assert_once(got, stored)
        # Subjects: nodewarden.<event.name's tokens>.<severity>; payload: the stored Event bytes.
        from nwwire.codec import to_record
        from nwwire.genproto import load

        epb = load("nodewarden.v1.event_pb2")
        for msg_id, _seq, subject, data in got[:200]:
            rec = to_record(epb.Event.FromString(data))
            assert msg_id == f"{rec['nodewarden.agent_id']}/{rec['nodewarden.boot_id']}/{rec['seq']}"
            assert subject == f"nodewarden.{rec['event.name']}.{rec.get('event.severity', 'none')}"
        si = stream_info(cluster.urls)
        assert si.config.num_replicas == 3 and si.state.messages == 3000
        assert handle.bus.stats["bus_published"] == 3000 and handle.bus.dropped() == 0
        names = {m.name: m for m in handle.collect()}
        assert names["nodewarden_collector_bus_published"].samples[0].value == 3000
        assert {s.labels["reason"]: s.value for s in names["nodewarden_collector_bus_dropped"].samples
                if s.name.endswith("_total")} == dict.fromkeys(
                    ("queue_full", "too_large", "rejected", "stopping", "malformed"), 0)
    finally:
        handle.stop(0.5)


def test_a_nats_node_killed_mid_stream_loses_nothing(cluster, tmp_path):
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), nats=cluster.url))
    killed = []
    try:
        def kill_leader():
            # The stream exists once the bus published its first events; kill its leader, the worst case.
            leader = wait_for(lambda: _leader(cluster), timeout=20)
            i = int(leader.removeprefix("n"))
            cluster.kill(i)
            killed.append(i)

        _stream_agents(handle.address, tmp_path, agents=4, per_agent=1500, pace=0.01, during=kill_leader)
        stored = stored_ids(handle.address)
        assert len(stored) == 6000
        assert killed
        got = consume([u for j, u in enumerate(cluster.urls) if j not in killed], len(stored))
        _assert_once(got, stored)
        assert handle.bus.dropped() == 0
        # The node comes back and catches up from the others: the stream is whole there too.
        cluster.start(killed[0])
        si = wait_for(lambda: (lambda s: s if s.state.messages == 6000 else None)(stream_info(cluster.urls)))
        assert si.state.messages == 6000
    finally:
        handle.stop(0.5)


def _leader(cluster) -> str | None:
    try:
        si = stream_info(cluster.urls)
    except Exception:
        return None
    return si.cluster.leader if si.cluster and si.state.messages else None


def test_filter_and_async_mode(cluster, tmp_path):
    """--nats-min-severity and --nats-kinds pick what goes out; --nats-async publishes after commit."""
    import argparse

    from agent.commands.collector import add_arguments, build_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--db", str(tmp_path / "events.db"), "--listen", "127.0.0.1:0", "--nats", cluster.url,
                         "--nats-stream", "NW_HIGH", "--nats-min-severity", "high",
                         "--nats-kinds", "process.exec,network", "--nats-async"])
    cfg = build_config(args)
    assert (cfg.nats_stream, cfg.nats_min_severity, cfg.nats_kinds, cfg.nats_confirm) == \
        ("NW_HIGH", "high", ["process.exec", "network"], False)
    handle = serve(cfg)
    try:
        _stream_agents(handle.address, tmp_path, agents=1, per_agent=400)
        want = [f"{r['nodewarden.agent_id']}/{r['nodewarden.boot_id']}/{r['seq']}" for r in query_all(handle.address)
                if r.get("event.severity") == "high" and r["event.name"] in ("process.exec", "network.connect")]
        assert want  # make_record: every 5th is high, kinds rotate by 4
        wait_for(lambda: handle.bus.stats["bus_published"] == len(want), timeout=20)
        got = consume(cluster.urls, len(want), stream="NW_HIGH")
        _assert_once(got, want)
        assert handle.bus.stats["bus_filtered"] == 400 - len(want)
    finally:
        handle.stop(0.5)


@pytest.mark.parametrize("cfg, msg", [
    (dict(nats="http://127.0.0.1:4222"), "not a nats://host:port URL"),
    (dict(nats="nats://127.0.0.1:4222", nats_stream="a.b"), "stream name"),
    (dict(nats="nats://127.0.0.1:4222", nats_min_severity="loud"), "min severity"),
    (dict(nats="nats://127.0.0.1:4222", nats_kinds=[""]), "nats kinds"),
    (dict(nats=5), "expected nats://"),
])
def test_bad_nats_config_is_one_clear_error(tmp_path, cfg, msg):
    with pytest.raises(ValueError, match=msg):
        serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), **cfg))


def test_nats_away_at_start_holds_acks_then_delivers(cluster, tmp_path):
    """Confirm mode with NATS down: agents' batches are stored but not acked (they stay in the agents'
    spools); once NATS is back every event is published, once."""
    cluster.stop()
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "events.db"), nats=cluster.url))
    handle.bus.cfg.confirm_timeout = 1.0
    handle.bus.cfg.backoff_max = 0.5
    try:
        exp = exporter(handle.address, tmp_path / "spool", backoff_max=0.3)
        for i in range(300):
            exp.submit(make_record(i))
        # Each Ingest stream waits on its batch's acks before reading its next: the first batches are
        # stored, none is acked.
        wait_for(lambda: query_all(handle.address), timeout=10)
        time.sleep(1.5)
        assert exp.acked == 0 and handle.bus.stats["bus_published"] == 0
        cluster.start()
        assert exp.stop(timeout=40), exp.metrics()
        stored = stored_ids(handle.address)
        _assert_once(consume(cluster.urls, len(stored)), stored)
        assert handle.bus.dropped() == 0
    finally:
        handle.stop(0.5)


def test_two_collectors_on_postgresql_one_collector_and_one_nats_node_killed(postgres, pg_url, cluster, tmp_path):  # noqa: F811
    """The issue's scale-out case: two collector processes on one PostgreSQL, both publishing to the
    three-node cluster, agents streaming to both (each agent's channel lists both replicas, as a Service
    would); one collector is SIGKILLed and the stream's leader node too, mid-stream. Then: nothing lost,
    nothing stored twice, every stored event consumed once by a durable consumer."""
    import signal
    import socket

    from test_transport_util import start_collector_process

    ports = []
    for _ in range(4):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    procs = []
    try:
        for i, port in enumerate(ports[:2]):
            (tmp_path / f"c{i}").mkdir()
            extra = ["--metrics", f"127.0.0.1:{ports[2 + i]}"]
            procs.append(start_collector_process(f"127.0.0.1:{port}", tmp_path / f"c{i}" / "events.db",
                                                 "--store", pg_url, "--nats", cluster.url, *extra))
        a, b = (f"127.0.0.1:{p}" for p in ports[:2])
        # gRPC's pick_first over the listed addresses: agents 0, 1 start on replica 0, agents 2, 3 on 1, and
        # each moves to the other replica when its own is gone.
        targets = [f"ipv4:{a},{b}", f"ipv4:{a},{b}", f"ipv4:{b},{a}", f"ipv4:{b},{a}"]
        killed = []

        def kill_collector_and_leader():
            # Once the victim has published a good part of its agents' events, so that the survivor's
            # resends are partly of events already on the stream.
            wait_for(lambda: _scrape(ports[2])["nodewarden_collector_bus_published_total"] >= 1000, timeout=30)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            leader = wait_for(lambda: _leader(cluster), timeout=20)
            cluster.kill(int(leader.removeprefix("n")))
            killed.append(int(leader.removeprefix("n")))

        per_agent = 2000
        exps = [exporter(t, tmp_path / f"spool{i}", node=f"node-{i}", backoff_max=0.3) for i, t in enumerate(targets)]
        half = threading.Event()

        def feed(exp, i):
            for j in range(per_agent):
                exp.submit(make_record(i * per_agent + j))
                if j % 100 == 99:
                    time.sleep(0.02)
                if j == per_agent // 2 and i == 0:
                    half.set()

        threads = [threading.Thread(target=feed, args=(e, i)) for i, e in enumerate(exps)]
        for t in threads:
            t.start()
        assert half.wait(30)
        kill_collector_and_leader()
        for t in threads:
            t.join()
        for e in exps:
            assert e.stop(timeout=60), e.metrics()
        # Nothing lost, nothing stored twice: the database itself, and the survivor's Query.
        db = postgres.connect(pg_url.rsplit("/", 1)[1])
        try:
            count, distinct = db.execute("SELECT count(*), count(DISTINCT (stream, seq)) FROM events").fetchone()
        finally:
            db.close()
        assert count == distinct == 4 * per_agent
        stored = stored_ids(b)
        assert len(stored) == 4 * per_agent
        got = consume([u for j, u in enumerate(cluster.urls) if j not in killed], len(stored))
        _assert_once(got, stored)
        # Both replicas published: the survivor alone put fewer than all on the stream. What it
        # republished for resends JetStream acked as duplicates, keeping the stream single.
        m = _scrape(ports[3])
        assert m["nodewarden_collector_bus_published_total"] - m["nodewarden_collector_bus_duplicates_total"] \
            < 4 * per_agent
        assert sum(v for k, v in m.items() if k.startswith("nodewarden_collector_bus_dropped_total")) == 0
        print(f"survivor: {m['nodewarden_collector_bus_published_total']:.0f} published, "
              f"{m['nodewarden_collector_bus_duplicates_total']:.0f} of them duplicates, "
              f"{m['nodewarden_collector_bus_retries_total']:.0f} retries")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


def _scrape(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, val = line.rpartition(" ")
            out[name] = float(val)
    return out


def _published(events):
    """Rows as the store's post-commit fan-out hands them to the bus: (id, filter row, body)."""
    out = []
    for i, ev in enumerate(events):
        row = [None] * 11
        row[1], row[2] = ev.name, int(ev.severity)
        out.append((i + 1, tuple(row), ev.SerializeToString()))
    return out


def _event(seq: int, name: str = "process.exec", severity: int = 2, extra: bytes = b""):
    from nwwire.genproto import load

    return load("nodewarden.v1.event_pb2").Event(agent_id="a1", boot_id="b1", seq=seq, name=name,
                                                 severity=severity, extra_json=extra)


def test_queue_bound_and_drops_counted_without_nats(tmp_path):
    """No NATS at all: the bus holds max_queue events, drops the rest (queue_full), and what is still
    queued at stop is dropped as stopping; stop() returns at once."""
    from collector.bus import Bus, BusConfig

    bus = Bus(BusConfig(servers=["nats://127.0.0.1:1"], confirm=False, max_queue=10))
    bus.start()
    try:
        bus.offer(_published([_event(i + 1) for i in range(25)]))
        assert bus.queued() == 10 and bus.drops["queue_full"] == 15
    finally:
        t = time.monotonic()
        bus.stop()
        assert time.monotonic() - t < 3
    assert bus.drops["stopping"] == 10 and bus.queued() == 0 and bus.dropped() == 25


def test_subjects_oversized_events_and_unsafe_names(cluster):
    """Subject tokens from event names are made safe (a wildcard or a space cannot reach a subject);
    an event over the server's max_payload is dropped as too_large, the rest published."""
    from collector.bus import Bus, BusConfig

    bus = Bus(BusConfig(servers=cluster.urls, confirm=False, stream="NW_SUBJECTS"))
    bus.start()
    try:
        evs = [_event(1, "alert", 5), _event(2, "weird.*.na me>", 0), _event(3, extra=b"x" * (2 << 20)),
               _event(4, "image.verdict", 6)]
        bus.offer(_published(evs))
        wait_for(lambda: bus.stats["bus_published"] == 3 and bus.drops["too_large"] == 1, timeout=20)
        got = consume(cluster.urls, 3, stream="NW_SUBJECTS")
        assert sorted((g[2], g[0]) for g in got) == [
            ("nodewarden.alert.high", "a1/b1/1"), ("nodewarden.image.verdict.critical", "a1/b1/4"),
            ("nodewarden.weird._.na_me_.none", "a1/b1/2")]
    finally:
        bus.stop()
