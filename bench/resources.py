"""Resource sampler benchmark: what a sample of N running containers costs the agent (root: real containers).

N busybox containers on a private containerd (tests/harness/containerd.py), each with a memory limit, in the
container table as the watcher would fill it; then, over repeated samples:
  1. one Sampler.sample_once over them (every cgroup file and /proc/<pid>/net/dev read, records built), median
     CPU time on the sampling thread (the agent's cost; wall time on a loaded machine says more of the machine);
  2. the same plus what the agent does with each record (the flattener and a JSON line);
  3. one host sample through psutil.
Per container = (1) / N. At the default 10 s interval a node's sampling CPU is (2) / 10 s.

    python -m bench.resources [--containers 50] [--samples 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import orjson


def _median_ms(fn, n: int) -> float:
    """Median CPU time of one call on this thread, in ms (CPU, not wall: a loaded machine's waits left out)."""
    times = []
    for _ in range(n):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.resources")
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("resources: needs root (real containers)")
        return
    from agent.config import ResourcesConfig
    from agent.enrich.container_table import ContainerTable
    from agent.outputs import record
    from agent.resources import cgroupfs
    from agent.resources.host import HostSampler
    from agent.resources.sampler import Sampler
    from tests.harness.containerd import PrivateContainerd, missing_requirements
    from tests.harness.oci import build_image

    why = missing_requirements()
    if why:
        print(f"resources: {why}")
        return
    base = tempfile.mkdtemp(prefix="nw-bench-resources-")
    cd = PrivateContainerd(base)
    cd.start()
    try:
        img = cd.import_image(build_image(os.path.join(base, "busybox.tar"), "nodewarden.test/busybox:1"))
        table = ContainerTable()
        layout = cgroupfs.discover()
        for _ in range(args.containers):
            cid = f"bench-{os.urandom(4).hex()}"
            cd.ctr("run", "-d", "--null-io", "--memory-limit", str(64 << 20), img.name, cid, "sleep", "600")
            pid = cd.task_pid(cid)
            with open(f"/proc/{pid}/cgroup") as f:
                text = f.read()
            path = (cgroupfs.parse_proc_cgroup_v1(text).get("memory") if layout.version == 1
                    else next(ln.split(":", 2)[2] for ln in text.splitlines() if ln.startswith("0::")))

            def fill(e, pid=pid, path=path):
                e.state, e.pid, e.cgroup_path = "running", pid, path
                return "task"

            table.update(cd.namespace, cid, fill)
        sampler = Sampler(ResourcesConfig(host=False), lambda ev: None, containers=table)
        out = sampler.sample_once()
        assert len(out) == args.containers, f"{len(out)} records for {args.containers} containers"
        read = _median_ms(sampler.sample_once, args.samples)
        agent = Sampler(ResourcesConfig(host=False), lambda ev: orjson.dumps(record.flatten(ev)), containers=table)
        agent.sample_once()
        full = _median_ms(agent.sample_once, args.samples)
        host = HostSampler()
        host.sample()
        h = _median_ms(host.sample, args.samples)
        n = args.containers
        print(f"cgroup v{layout.version}, {n} containers, {os.cpu_count()} CPUs, kernel {os.uname().release}")
        print(f"  sample (read, records)      {read:8.2f} ms   {read / n * 1000:6.0f} us per container")
        print(f"  + flatten and JSON line     {full:8.2f} ms   {full / n * 1000:6.0f} us per container")
        print(f"  host sample (psutil)        {h:8.2f} ms")
        print(f"  at a 10 s interval: {(full + h) / 100:.3f} % of one CPU")
    finally:
        cd.destroy()


if __name__ == "__main__":
    main()
