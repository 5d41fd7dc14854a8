"""The device guard's cost (agent/devices/guard.py), no root, no kernel: what the pipeline's worker pays per file
event (DeviceGuard.observe: a non-device path turned away, a device-node open queued), and what the guard's
thread pays to judge a queued open (allocation cached, as after a container's first open) and a sample with
container processes. `python -m bench.devguard [--events N]`.
"""

from __future__ import annotations

import argparse
import os
import time

from agent.config import DeviceGuardConfig
from agent.devices.guard import DeviceGuard
from agent.events import ContainerInfo, DeviceRef, DeviceSampleEvent, DeviceUser, Enriched, FileEvent, Op, ProcInfo

_C = ContainerInfo(id="c" * 64, name="app", namespace="default", pid=10, cgroup_id=7)


def _event(path: str) -> Enriched:
    ev = FileEvent(Op.FILE_OPEN, 1, 100, 100, 10, 0, 0, 7, 4026532000, "python3", False, path, "", 3,
                   os.O_RDWR, 0, -100, -1, -1, -1)
    return Enriched(ev, ProcInfo(100, 10, "/usr/bin/python3", ("python3",), 0, 0), None, _C)


def _guard(n: int) -> DeviceGuard:
    spec = {"process": {"env": ["NVIDIA_VISIBLE_DEVICES=0"]}}
    return DeviceGuard(DeviceGuardConfig(pod_resources_socket="", queue_size=n + 1), lambda ev: None,
                       spec_source=lambda ns, cid: spec)


def _per(n: int, fn) -> float:
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n


def run(events: int) -> dict[str, float]:
    g = _guard(events)
    other, dev = _event("/var/lib/app/data.db"), _event("/dev/nvidia0")
    out = {"observe, not a device path (ns)": _per(events, lambda: g.observe(other)) * 1e9}
    queued = events // 10
    out["observe, a device-node open queued (ns)"] = _per(queued, lambda: g.observe(dev)) * 1e9
    items = [g._q.get_nowait() for _ in range(queued)]
    it = iter(items)
    out["judge an allowed open, spec cached (us)"] = _per(queued, lambda: g.judge(next(it))) * 1e6
    ref = DeviceRef("nvidia", 0, "GPU-0", "NVIDIA H100", minor=0)
    sample = DeviceSampleEvent(1, ref, {}, processes=tuple(DeviceUser(100 + i, 1 << 30, container=_C)
                                                           for i in range(8)))
    out["judge a sample of 8 container processes (us)"] = _per(queued, lambda: g.judge(("sample", sample, ""))) * 1e6
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.devguard", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="file events observed (default %(default)s)")
    args = p.parse_args(argv)
    for k, v in run(args.events).items():
        print(f"  {k:<48} {v:8.2f}")


if __name__ == "__main__":
    main()
