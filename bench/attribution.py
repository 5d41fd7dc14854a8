"""Container attribution: the rate on real containers, and what enrichment costs per event (root).

1. Attribution rate: the agent (a subprocess, `nodewarden run --json`) and a private containerd;
   N short-lived containers each run a few programs and write a file. Every exec and file event
   that happened inside one of them (found by the marker in its argv or path) must carry that
   container's id; the table reports how many did, how many were `unknown`, how many had none.
2. Added latency per event: the pipeline's decode+enrich+record step on the same exec record,
   without a container resolver, and with one over a table of 500 containers (the event's cgroup
   is one of them), in-process.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def attribution_rate(n: int = 50) -> tuple:
    from tests.harness.containerd import PrivateContainerd
    from tests.harness.oci import build_image
    from tests.kernel.conftest import AgentProcess

    with tempfile.TemporaryDirectory() as tmp:
        cd = PrivateContainerd(os.path.join(tmp, "cd")).start()
        try:
            image = cd.import_image(build_image(os.path.join(tmp, "img"), "nodewarden.bench/busybox:1"))
            agent = AgentProcess("--containerd-socket", str(cd.socket))
            ids = [f"nwb-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
            t0 = time.monotonic()
            for cid in ids:
                cd.run_once(image, "/bin/sh", "-c", f"/bin/true {cid}; /bin/echo {cid} > /tmp/{cid}; /bin/true {cid}",
                            cid=cid)
            for cid in ids:
                agent.wait_for(lambda r, c=cid: r.get("file.path") == f"/tmp/{c}", timeout=30)
            elapsed = time.monotonic() - t0
            agent.stop()
        finally:
            cd.destroy()
    total = right = unknown = none = 0
    for cid in ids:
        mine = agent.find(lambda r, c=cid: (r["event.name"] == "process.exec"
                                            and r["process.executable.path"] in ("/bin/sh", "/bin/true", "/bin/echo")
                                            and c in r.get("process.command_line", ""))
                          or r.get("file.path") == f"/tmp/{c}")
        total += len(mine)
        right += sum(r.get("container.id") == cid for r in mine)
        unknown += sum(r.get("container.id") == "unknown" for r in mine)
        none += sum("container.id" not in r for r in mine)
    return n, total, right, unknown, none, elapsed


def enrich_cost(events: int = 200_000) -> tuple[float, float]:
    from agent import config
    from agent.enrich.container_table import ContainerTable
    from agent.enrich.enricher import ContainerResolver
    from agent.events import Op
    from agent.pipeline import Pipeline
    from agent.sensors.common import HEADER

    table = ContainerTable()
    for i in range(500):
        def fill(e, i=i):
            e.image, e.cgroup_id, e.pid, e.state = "registry.example/app:1", 10_000 + i, 1000 + i, "running"
            return None
        table.update("k8s.io", f"{i:064x}", fill)
    args = b"/bin/true\0x\0"
    raw = (HEADER.pack(Op.EXEC, 0, 0, 4242, 4242, 1, 0, 0, 5, 10_250, 1, 0, b"true")
           + struct.pack("<II", 9, len(args)) + b"/bin/true".ljust(256, b"\0") + args.ljust(1024, b"\0")
           + struct.pack("<IIQII", 0, 0, 0, 0, 0))  # action, rule, exe_ino, exe_dev, pad
    cfg = config.load(None, env={})
    results = []
    for resolver in (None, ContainerResolver(table)):
        pipe = Pipeline(cfg, [lambda records: None], containers=resolver)
        pipe._process([raw])  # warm: the process table reads the pid once from /proc
        batch = [raw] * 4096
        t0 = time.perf_counter()
        for _ in range(events // len(batch)):
            pipe._process(batch)
        results.append((time.perf_counter() - t0) / (events // len(batch) * len(batch)) * 1e9)
        if pipe.drops["decode"]:
            raise SystemExit(f"bench record did not decode ({pipe.drops['decode']} errors): fix the bench")
    return results[0], results[1]


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench.attribution needs root")
    n, total, right, unknown, none, elapsed = attribution_rate()
    print(f"Attribution on {n} short-lived containers ({elapsed:.1f}s): {right}/{total} events carry their "
          f"container ({100 * right / max(total, 1):.1f}%), {unknown} unknown, {none} without container fields")
    base, with_c = enrich_cost()
    print(f"Pipeline step per exec event: {base:.0f} ns without containers, {with_c:.0f} ns with a 500-container "
          f"table: enrichment adds {with_c - base:.0f} ns per event")


if __name__ == "__main__":
    main()
