"""Behaviour profiles (agent/detect/profile/): memory per profile and the added cost per event (no root, no kernel).

A replay of 1,000 containers of 50 images, as a busy cluster's node sees them over time: each image is
a service with its own programs (exec paths, parent -> child edges, the users they run as), the peers
it connects to, the ports it listens on and the directories it writes (sizes drawn around a typical
service: 40 programs, 60 edges, 3 users, 20 peers, 4 listening ports, 30 write directories; a few
images talk to a whole /24 of pods, or write into many cache subdirectories, which the model
compresses). Each image runs as a Deployment in one or two namespaces; replicas of a Deployment share
one profile, so the 1,000 containers make 85 profiles. The events are Enriched records as the
enrich stage hands them over (agent/events.py), with the reads, forks, exits and host events a node
also sees, all through `ProfileEngine.observe_batch` in batches of 256, as the pipeline's worker
calls it.

(a) Memory: tracemalloc from before the engine exists to after the replay, with each container's
    events built fresh (as the sensors decode them) and dropped once observed, so every string a
    profile keeps is counted. Reported with the containers still live and after they are gone
    (then only the profiles remain), per profile, beside the 64 KiB target; and the size of one
    profile's document (JSON, what the state dir and the collector hold). The bound beside it: one
    profile with every kind at profiles.max_items, times profiles.max_profiles.
(b) Cost per event: the same replay over the learned profiles (the steady state: every item known,
    nothing raised) through the engine, minus the same loop through NullProfiles (the engine off),
    in this thread's CPU time, median of the runs, beside the 1 us target. The learning pass (every
    item new once) is shown too.
(c) The whole worker stage (bench.pipeline's write-heavy mix, half of it in a pod, the bundled rules on):
    rules only against rules + profiles, the pod's profile learned, turns timed as bench.pipeline times them.

`python -m bench.profiles [--containers N] [--images N] [--runs N]`
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGET_BYTES = 64 * 1024
TARGET_NS = 1000.0
BATCH = 256
POLICY = "profiles:\n  learn: 60s\n  quiet: 30s\n  after_learning: monitoring\n"
_WR = os.O_WRONLY | os.O_CREAT | os.O_APPEND
_BIN_DIRS = ("/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin", "/app/bin", "/opt/app/bin")
_WRITE_ROOTS = ("/var/lib/app", "/var/log/app", "/tmp/app", "/var/cache/app", "/data", "/run/app")


class Image:
    """One service: what every container of it does, as tuples of plain values (the strings of the events
    are made fresh per event, as the sensors' decoders make them)."""

    def __init__(self, i: int, rng: random.Random):
        def around(n: int) -> int:
            return max(1, int(n * rng.uniform(0.5, 1.5)))

        self.name = f"registry.example/team{i % 7}/svc{i}:1.{i % 5}"
        self.digest = f"sha256:{i:064x}"
        n_exec = around(40)
        # (dir, base): the programs of the image
        self.execs = [(rng.choice(_BIN_DIRS), f"tool{i}-{k}") for k in range(n_exec)]
        # edges: the entrypoint runs some, those run others; every program is someone's child once
        edges, n_edges = {(0, k) for k in range(1, n_exec)}, around(60)
        while len(edges) < n_edges and n_exec > 1:
            edges.add((rng.randrange(n_exec), rng.randrange(1, n_exec)))
        self.edges = sorted(edges)
        self.users = [0, 1000 + i, 65534][: rng.choice((1, 2, 3, 3, 3))]
        # (transport, ipv4 octets, port)
        self.peers = [(rng.choice(("tcp", "tcp", "udp")), (10, i % 250, rng.randrange(256), rng.randrange(1, 255)),
                       rng.choice((443, 5432, 6379, 8080, 9092, 53))) for _ in range(around(20))]
        if i % 10 == 3:  # a service that talks to every pod of a /24 on one port: compressed to a CIDR
            self.peers += [("tcp", (10, 200, i, h), 8080) for h in range(1, 41)]
        self.listens = [("tcp", 8000 + k) for k in range(around(4))]
        self.writes = [(rng.choice(_WRITE_ROOTS), f"d{k}") for k in range(around(30))]  # (root, dir)
        if i % 10 == 7:  # a cache that hashes into many subdirectories: collapsed into dir/**
            self.writes += [("/var/cache/app/objects", f"{h:02x}") for h in range(40)]
        self.reads = 10  # config files read at start (never learned: not writes)

    def items(self) -> int:
        return (len(self.execs) + len(self.edges) + len(self.users) + len(self.peers) + len(self.listens)
                + len(self.writes))


class Fleet:
    """The images and the containers of the replay: (image, ContainerInfo) per container."""

    def __init__(self, n_images: int, n_containers: int, seed: int = 13):
        rng = random.Random(seed)
        self.images = [Image(i, rng) for i in range(n_images)]
        # Deployments: each image in "prod", some also in "staging"; replicas spread over them
        deploys = [(img, "prod") for img in self.images] + [(img, "staging") for img in self.images[::5]] \
            + [(img, "batch") for img in self.images[1::2]]
        self.workloads = len(deploys)
        self.containers = []  # (image, a function making its ContainerInfo afresh)
        for n in range(n_containers):
            img, ns = deploys[n % len(deploys)]
            self.containers.append((img, _maker(n, img, ns)))


_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' name-suffix alphabet: pods named as a ReplicaSet names them


def _suffix(n: int) -> str:
    out = ""
    for _ in range(5):
        n, d = divmod(n, len(_SAFE))
        out += _SAFE[d]
    return out


def _maker(n: int, img: Image, ns: str):
    """Container n of a Deployment of img in namespace ns: its pod is named as a ReplicaSet's pods are."""
    from agent.events import ContainerInfo

    def make() -> ContainerInfo:
        owner = img.name.rsplit("/", 1)[1].split(":")[0]
        pod = f"{owner}-7d4b9c8f6-{_suffix(n)}"
        return ContainerInfo(
            id=f"{n:064x}", name=owner, image=img.name, image_digest=img.digest, namespace="k8s.io",
            pod_name=pod, pod_namespace=ns,
            labels=(("io.kubernetes.container.name", owner), ("io.kubernetes.pod.name", pod),
                    ("io.kubernetes.pod.namespace", ns)),
            pid=100_000 + n, cgroup_id=1_000_000 + n, cgroup_path=f"/kubepods/pod{n}/{n:064x}",
            mntns=4_026_600_000 + n, created_ns=1, started_ns=1, state="running")

    return make


def _events(img: Image, info, base_pid: int, ts: int) -> list:
    """One container's replay: the service's execs (fork, exec, exit along its edges), its connects, listens,
    writes, config reads; one host event in ten. ~3 events per item, built fresh."""
    from agent.events import Enriched, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent, Op, ProcInfo

    out: list = []
    cg, mnt = info.cgroup_id, info.mntns
    procs: list = []
    for j, (p, c) in enumerate(img.edges):
        pdir, pbase = img.execs[p]
        cdir, cbase = img.execs[c]
        pid, uid = base_pid + j + 1, img.users[j % len(img.users)]
        parent = ProcInfo(base_pid, 1, f"{pdir}/{pbase}", (pbase,), 0, ts, comm=pbase[:15])
        exe = f"{cdir}/{cbase}"
        proc = ProcInfo(pid, base_pid, exe, (exe, "--serve"), uid, ts, comm=cbase[:15])
        procs.append((proc, parent))
        out.append(Enriched(ForkEvent(Op.FORK, ts, base_pid, base_pid, 1, 0, 0, cg, mnt, pbase[:15], False, pid),
                            parent, None, info))
        out.append(Enriched(ExecEvent(Op.EXEC, ts, pid, pid, base_pid, uid, uid, cg, mnt, cbase[:15], False,
                                      f"{cdir}/{cbase}", (exe, "--serve")), proc, parent, info))
    for k, (tr, (a, b, c, d), port) in enumerate(img.peers):
        proc, parent = procs[k % len(procs)]
        out.append(Enriched(NetEvent(Op.NET_CONNECT, ts, proc.pid, proc.pid, proc.ppid, proc.uid, 0, cg, mnt,
                                     proc.comm, False, -115 if tr == "tcp" else 0, 5, "ipv4", tr,
                                     f"{a}.{b}.{c}.{d}", port, 0), proc, parent, info))
    for k, (tr, port) in enumerate(img.listens):
        proc, parent = procs[k % len(procs)]
        out.append(Enriched(NetEvent(Op.NET_LISTEN, ts, proc.pid, proc.pid, proc.ppid, proc.uid, 0, cg, mnt,
                                     proc.comm, False, 0, 4, "ipv4", tr, "0.0.0.0", port, 128), proc, parent, info))
    for k, (root, d) in enumerate(img.writes):
        proc, parent = procs[k % len(procs)]
        for f in range(2):
            out.append(Enriched(FileEvent(Op.FILE_OPEN, ts, proc.pid, proc.pid, proc.ppid, proc.uid, 0, cg, mnt,
                                          proc.comm, False, f"{root}/{d}/f{f}.log", "", 3, _WR, 0o644, -100, -1, 0, 0),
                                proc, parent, info))
    for k in range(img.reads):
        proc, parent = procs[k % len(procs)]
        out.append(Enriched(FileEvent(Op.FILE_OPEN, ts, proc.pid, proc.pid, proc.ppid, proc.uid, 0, cg, mnt,
                                      proc.comm, False, f"/etc/app/conf{k}.yaml", "", 3, os.O_RDONLY, 0, -100, -1,
                                      0, 0), proc, parent, info))
    for proc, parent in procs:
        out.append(Enriched(ExitEvent(Op.EXIT, ts, proc.pid, proc.pid, proc.ppid, proc.uid, 0, cg, mnt, proc.comm,
                                      False, 0, 0), proc, parent, info))
    host = ProcInfo(base_pid + 9000, 1, "/usr/sbin/sshd", ("sshd",), 0, ts, comm="sshd")
    for k in range(len(out) // 10):  # the node's own processes: not a container's business
        out.append(Enriched(FileEvent(Op.FILE_OPEN, ts, host.pid, host.pid, 1, 0, 0, 1, 4026531840, "sshd", False,
                                      f"/var/log/auth{k % 3}.log", "", 3, _WR, 0o640, -100, -1, 0, 0), host, None,
                            None))
    return out


def _interleave(per_container: list[list], chunk: int = 16) -> list[list]:
    """Batches of BATCH events, bursts of `chunk` events from each container in turn (a node's ring buffer)."""
    flat: list = []
    cursors = [0] * len(per_container)
    live = list(range(len(per_container)))
    while live:
        nxt = []
        for i in live:
            evs = per_container[i]
            flat += evs[cursors[i] : cursors[i] + chunk]
            cursors[i] += chunk
            if cursors[i] < len(evs):
                nxt.append(i)
        live = nxt
    return [flat[i : i + BATCH] for i in range(0, len(flat), BATCH)]


class Clock:
    """The engine's wall clock, moved by the bench: learning windows pass in a loop, not in an hour."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _engine(state: str, clock: Clock):
    from agent.config import ProfilesConfig
    from agent.detect.profile.engine import ProfileEngine
    from agent.detect.profile.store import ProfileStore
    from agent.policy.loader import parse

    cfg = ProfilesConfig(state_dir=state, sync=False)
    return ProfileEngine(cfg, parse(POLICY).profiles, ProfileStore(state), clock=clock)


def _lock_all(engine, clock: Clock, limit: int = 400) -> int:
    """Tick (1 s of wall time each) until no profile learns any more; the ticks it took."""
    for n in range(1, limit + 1):
        clock.now += 1.0
        engine.tick(clock.now)
        if all(p.mode != "learning" for p in engine.profiles()):
            return n
    modes = {p.mode for p in engine.profiles()}
    raise SystemExit(f"profiles still learning after {limit} ticks of 1 s (modes {sorted(modes)})")


def memory(fleet: Fleet) -> dict:
    """(a): the engine's traced memory after the replay, live containers and gone."""
    from agent.detect.profile.engine import ProfileEngine  # noqa: F401  (imports outside the trace)

    with tempfile.TemporaryDirectory(prefix="nwbench-prof-") as state:
        clock = Clock()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        engine = _engine(state, clock)
        infos = []
        for n, (img, make) in enumerate(fleet.containers):
            info = make()
            infos.append(info)
            engine.on_container("container", info)
            engine.on_container("task", info)
            evs = _events(img, info, 200_000 + n * 1000, int(clock.now * 1e9))
            for i in range(0, len(evs), BATCH):
                engine.observe_batch(evs[i : i + BATCH], set())
            del evs
        _lock_all(engine, clock)
        gc.collect()
        live = tracemalloc.get_traced_memory()[0] - base
        for info in infos:
            engine.on_container("delete", info)
        del infos
        engine.tick(clock.now + 1.0)
        gc.collect()
        gone = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        profiles = engine.profiles()
        docs = [len(_json(p.to_doc())) for p in profiles]
        counts = {}
        for p in profiles:
            for kind, items in p.items.items():
                counts.setdefault(kind, []).append(len(items))
        engine.close()
    return {"profiles": len(profiles), "live": live, "gone": gone, "docs": docs, "counts": counts,
            "modes": sorted({p.mode for p in profiles})}


def full(max_items: int) -> tuple[int, int]:
    """The bound: one profile with every kind at its cap (profiles.max_items, distinct items that nothing
    compresses: at most 8 write directories under one parent); (traced bytes, document bytes, items per kind)."""
    from agent.config import ProfilesConfig
    from agent.events import Enriched, ExecEvent, FileEvent, NetEvent, Op, ProcInfo

    fleet = Fleet(1, 1)
    img, make = fleet.containers[0]
    with tempfile.TemporaryDirectory(prefix="nwbench-prof-") as state:
        clock = Clock()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        engine = _engine(state, clock)
        info = make()
        engine.on_container("task", info)
        cg, mnt, ts = info.cgroup_id, info.mntns, int(clock.now * 1e9)
        for k in range(ProfilesConfig().max_items if max_items <= 0 else max_items):
            proc = ProcInfo(500 + k, 499, f"/opt/svc/bin/parent{k}", ("p",), k, ts, comm="p")
            evs = [Enriched(ExecEvent(Op.EXEC, ts, 500 + k, 500 + k, 499, k, k, cg, mnt, "t", False,
                                      f"/opt/svc/bin/tool-{k}", ("t",)), proc, proc, info),
                   Enriched(NetEvent(Op.NET_CONNECT, ts, 500, 500, 1, 0, 0, cg, mnt, "t", False, 0, 5, "ipv4", "tcp",
                                     f"10.{k >> 8}.{k & 255}.{(k * 7) % 250 + 1}", 1000 + k, 0), proc, None, info),
                   Enriched(NetEvent(Op.NET_LISTEN, ts, 500, 500, 1, 0, 0, cg, mnt, "t", False, 0, 4, "ipv4", "tcp",
                                     "0.0.0.0", 20000 + k, 128), proc, None, info),
                   Enriched(FileEvent(Op.FILE_OPEN, ts, 500, 500, 1, 0, 0, cg, mnt, "t", False,
                                      f"/srv/a{k // 64}/b{k // 8 % 8}/c{k % 8}/f.log", "", 3, _WR, 0o644, -100, -1,
                                      0, 0), proc, None, info)]
            engine.observe_batch(evs, set())
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        (p,) = engine.profiles()
        doc = len(_json(p.to_doc()))
        counts = {kind: len(v) for kind, v in p.items.items()}
        engine.close()
    return used, doc, counts


def _json(doc) -> bytes:
    import orjson

    return orjson.dumps(doc)


def _loop(observe, batches: list[list]) -> float:
    empty: set[int] = set()
    t0 = time.thread_time()
    for b in batches:
        observe(b, empty)
    return time.thread_time() - t0


def cost(fleet: Fleet, runs: int) -> dict:
    """(b): ns per event, learning pass and steady state, engine on minus off."""
    from agent.detect.profile import NullProfiles
    from agent.pipeline import settle_gc

    per = [_events(img, make(), 200_000 + n * 1000, 0) for n, (img, make) in enumerate(fleet.containers)]
    infos = [evs[1].container for evs in per]  # the exec of each container carries its ContainerInfo
    batches = _interleave(per)
    n = sum(len(b) for b in batches)
    mix: dict[str, int] = {}
    for b in batches:
        for en in b:
            k = en.event.name if en.container is not None else "host"
            mix[k] = mix.get(k, 0) + 1
    off = NullProfiles()
    with tempfile.TemporaryDirectory(prefix="nwbench-prof-") as state:
        clock = Clock()
        engine = _engine(state, clock)
        for info in infos:
            engine.on_container("container", info)
            engine.on_container("task", info)
        settle_gc()
        learn = _loop(engine.observe_batch, batches)
        ticks = _lock_all(engine, clock)
        raised = sum(len(a) for b in batches for _, a in engine.observe_batch(b, set()))
        on_t, off_t = [], []
        for r in range(runs):
            pair = ((engine, on_t), (off, off_t)) if r % 2 == 0 else ((off, off_t), (engine, on_t))
            for eng, acc in pair:
                acc.append(_loop(eng.observe_batch, batches))
        drops = engine.drops()
        engine.close()
    added = [(a - b) / n * 1e9 for a, b in zip(on_t, off_t, strict=True)]
    return {"events": n, "mix": mix, "batches": len(batches), "learn_ns": learn / n * 1e9, "ticks": ticks,
            "raised": raised, "on_ns": statistics.median(on_t) / n * 1e9, "off_ns": statistics.median(off_t) / n * 1e9,
            "added_ns": statistics.median(added), "runs": sorted(added), "drops": drops}


def _pipeline(engine, devnull, containers):
    """bench.pipeline's worker stage with the bundled rules, and the profiles stage when engine is given."""
    from agent.config import Config
    from agent.detect.engine import build
    from agent.outputs.log import JsonLog
    from agent.outputs.metrics import Metrics
    from agent.pipeline import Pipeline
    from agent.sensors.replay import ReplayProbes

    detector = build(None)[0]
    if not detector.enabled:
        raise SystemExit("the bundled rules did not load")
    return Pipeline(Config(), [JsonLog(devnull).emit], metrics=Metrics(), containers=containers,
                    probes=ReplayProbes([]), detector=detector, profiles=engine)


def pipeline(runs: int, rounds: int, turn: int = 20) -> dict:
    """(c): bench.pipeline's write-heavy mix (half of it in a pod) through the whole worker stage, rules on
    against rules + profiles on the pod's profile once learned; turns of `turn` batches timed in CPU time,
    as bench.pipeline times them. The loss is 1 - (events/s with profiles) / (events/s rules only)."""
    from agent.pipeline import settle_gc
    from bench import pipeline as bp
    from tests.unit.replay_records import PID

    base = PID + 1000
    recs = bp._round(base) * rounds
    batches = [recs[i : i + BATCH] for i in range(0, len(recs), BATCH)]
    prologue = bp._prologue(base)
    with tempfile.TemporaryDirectory(prefix="nwbench-prof-") as state, open(os.devnull, "wb") as devnull:
        clock = Clock()
        engine = _engine(state, clock)
        containers = bp._containers()
        for info in containers.table.snapshot():
            engine.on_container("container", info)
            engine.on_container("task", info)
        pipes = {True: _pipeline(engine, devnull, containers), False: _pipeline(None, devnull, bp._containers())}
        for p in pipes.values():
            p._process(prologue)
        for b in batches:  # the profile learns the mix
            pipes[True]._process(b)
        _lock_all(engine, clock)
        for p in pipes.values():
            p._process(batches[0])
            p._flush_alerts(force=True)
            p.delivered = 0
        settle_gc()
        spent = {True: [], False: []}
        for r in range(runs):
            t = dict.fromkeys(pipes, 0.0)
            for i in range(0, len(batches), turn):
                for on in ((True, False) if (i // turn + r) % 2 == 0 else (False, True)):
                    process = pipes[on]._process
                    t0 = time.thread_time()
                    for b in batches[i : i + turn]:
                        process(b)
                    t[on] += time.thread_time() - t0
            for on in pipes:
                spent[on].append(t[on])
        for p in pipes.values():
            p._flush_alerts(force=True)
        out = {on: p.delivered for on, p in pipes.items()}
        engine.close()
    n = len(recs)
    losses = sorted(1 - off / on for on, off in zip(spent[True], spent[False], strict=True))
    return {"events": n, "loss": statistics.median(losses), "losses": losses,
            "rate_on": n / statistics.median(spent[True]), "rate_off": n / statistics.median(spent[False]),
            "added_ns": statistics.median((a - b) / n * 1e9 for a, b in zip(spent[True], spent[False], strict=True)),
            "extra_records": out[True] - out[False]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.profiles", description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=1000, help="containers replayed (default %(default)s)")
    ap.add_argument("--images", type=int, default=50, help="images they run (default %(default)s)")
    ap.add_argument("--runs", type=int, default=5, help="timed steady-state passes; the median is reported")
    ap.add_argument("--rounds", type=int, default=200, help="rounds of bench.pipeline's mix for (c)")
    args = ap.parse_args(argv)
    if args.containers < 1 or args.images < 1 or args.runs < 1:
        ap.error("--containers, --images and --runs must be at least 1")
    from agent.config import ProfilesConfig

    fleet = Fleet(args.images, args.containers)
    items = sorted(img.items() for img in fleet.images)
    print(f"replay: {args.containers:,} containers of {args.images} images as {fleet.workloads} workloads; "
          f"items per image median {statistics.median(items):.0f} (min {items[0]}, max {items[-1]})")

    m = memory(fleet)
    k = m["profiles"] or 1
    med = {kind: statistics.median(v) for kind, v in sorted(m["counts"].items())}
    print(f"profiles: {m['profiles']} ({', '.join(m['modes'])}); median items: "
          + ", ".join(f"{kind} {v:.0f}" for kind, v in med.items()))
    per_live, per_gone = m["live"] / k, m["gone"] / k
    print(f"memory with the {args.containers:,} containers live: {m['live'] / 2**20:.2f} MiB, "
          f"{per_live / 1024:.1f} KiB per profile (containers' share included)")
    print(f"memory per profile (containers gone): {per_gone / 1024:.1f} KiB  target <= {TARGET_BYTES // 1024} KiB  "
          + ("ok" if per_gone <= TARGET_BYTES else "MISSED"))
    docs = sorted(m["docs"])
    print(f"profile document (JSON): median {statistics.median(docs) / 1024:.1f} KiB, "
          f"largest {docs[-1] / 1024:.1f} KiB")

    used, doc, counts = full(0)
    print(f"bound: a profile at its caps ({', '.join(f'{k} {v}' for k, v in counts.items())}): "
          f"{used / 1024:.0f} KiB, document {doc / 1024:.0f} KiB; x profiles.max_profiles "
          f"{ProfilesConfig().max_profiles:,} = {used * ProfilesConfig().max_profiles / 2**30:.2f} GiB at most")

    c = cost(fleet, args.runs)
    print("mix: " + ", ".join(f"{k} {v / c['events'] * 100:.0f} %" for k, v in sorted(c["mix"].items(),
                                                                                    key=lambda kv: -kv[1])))
    print(f"events: {c['events']:,} in {c['batches']:,} batches of {BATCH}; learning pass "
          f"{c['learn_ns']:.0f} ns/event; locked after {c['ticks']} ticks; steady state raised {c['raised']} alerts")
    print(f"steady state: engine on {c['on_ns']:.0f} ns/event, off {c['off_ns']:.0f} ns/event (median of "
          f"{args.runs})")
    print(f"added cost per event: {c['added_ns']:.0f} ns (runs: " + ", ".join(f"{x:.0f}" for x in c["runs"])
          + f")  target <= {TARGET_NS:.0f} ns  " + ("ok" if c["added_ns"] <= TARGET_NS else "MISSED"))

    pc = pipeline(args.runs, args.rounds)
    print(f"pipeline (bench.pipeline's mix, {pc['events']:,} records): rules only {pc['rate_off']:,.0f} events/s, "
          f"rules + profiles {pc['rate_on']:,.0f} events/s: {pc['added_ns']:.0f} ns/event added, "
          f"loss {pc['loss'] * 100:.1f} % (runs: " + ", ".join(f"{x * 100:.1f}" for x in pc["losses"])
          + f"); {pc['extra_records']} more records out (deviations, changes)")
    nonzero = {k: v for k, v in c["drops"].items() if v}
    if nonzero:
        print(f"drops: {nonzero}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
