"""The node's CPU, memory, disks and network through psutil (host.resources).

psutil reads /proc itself; in a DaemonSet the host's /proc is mounted elsewhere (containers.proc_root,
/host/proc), and psutil.PROCFS_PATH is where it looks. That setting is process-wide: the agent has one host,
so it is set once, at construction, to the agent's proc root. The network counters are those of the agent's
own network namespace (psutil reads /proc/net/dev, i.e. /proc/self/net): the host's when the agent runs with
hostNetwork, as the Helm chart deploys it.

Filesystems are given as paths (resources.filesystems; in a DaemonSet the host's root mounted at /host shows
the host's disk). Every reading is taken on its own: one that fails (a path unmounted, a /proc file
missing in a restricted container) is named in `errors` and the others still go out.
"""

from __future__ import annotations

import os
import time

import psutil

from agent.events import HostFilesystem, HostResourcesEvent


class HostSampler:
    """One host.resources per call to sample(); CPU percent over the time since the previous call."""

    def __init__(self, proc_root: str = "/proc", filesystems: tuple[str, ...] = ("/",)):
        if proc_root and proc_root != psutil.PROCFS_PATH:
            psutil.PROCFS_PATH = proc_root.rstrip("/") or "/"
        self.filesystems = tuple(filesystems)
        self._last_cpu = None  # psutil's cpu_times at the previous sample

    def sample(self) -> HostResourcesEvent:
        errors: list[str] = []
        fields: dict = {}

        def take(what: str, fn):
            try:
                return fn()
            except Exception as e:  # psutil raises OSError and its own errors; one reading lost, not the sample
                errors.append(f"{what}: {_reason(e)}")
                return None

        times = take("cpu", psutil.cpu_times)
        if times is not None:
            fields.update(cpu_user_s=times.user, cpu_system_s=times.system, cpu_idle_s=times.idle,
                          cpu_iowait_s=getattr(times, "iowait", 0.0))
            fields["cpu_percent"] = _cpu_percent(self._last_cpu, times)
            self._last_cpu = times
        load = take("load", os.getloadavg)
        if load is not None:
            fields.update(load1=round(load[0], 2), load5=round(load[1], 2), load15=round(load[2], 2))
        vm = take("memory", psutil.virtual_memory)
        if vm is not None:
            fields.update(memory_total=vm.total, memory_available=vm.available, memory_used=vm.used,
                          memory_percent=float(vm.percent))
        sw = take("swap", psutil.swap_memory)
        if sw is not None:
            fields.update(swap_total=sw.total, swap_used=sw.used)
        disk = take("disk_io", lambda: psutil.disk_io_counters(perdisk=False, nowrap=True))
        if disk is not None:
            fields.update(disk_read_bytes=disk.read_bytes, disk_write_bytes=disk.write_bytes,
                          disk_read_ops=disk.read_count, disk_write_ops=disk.write_count)
        net = take("net_io", lambda: psutil.net_io_counters(pernic=True, nowrap=True))
        if net is not None:
            nics = [c for name, c in net.items() if name != "lo"]
            fields.update(net_rx_bytes=sum(c.bytes_recv for c in nics), net_tx_bytes=sum(c.bytes_sent for c in nics),
                          net_rx_packets=sum(c.packets_recv for c in nics),
                          net_tx_packets=sum(c.packets_sent for c in nics))
        filesystems = []
        for path in self.filesystems:
            du = take(f"filesystem {path}", lambda p=path: psutil.disk_usage(p))
            if du is not None:
                filesystems.append(HostFilesystem(path, du.total, du.used, du.free, float(du.percent)))
        return HostResourcesEvent(time.time_ns(), cpu_count=psutil.cpu_count() or 0, filesystems=tuple(filesystems),
                                  errors=tuple(errors), **fields)


def _cpu_percent(before, now) -> float | None:
    """Busy share of all CPUs between two cpu_times readings (idle and iowait are not busy); None at first."""
    if before is None:
        return None
    (total0, idle0), (total1, idle1) = _split(before), _split(now)
    total = total1 - total0
    if total <= 0:
        return 0.0
    return round(max(0.0, min(100.0, 100.0 * (total - (idle1 - idle0)) / total)), 2)


def _split(t) -> tuple[float, float]:
    """(all time, idle time) of a cpu_times; guest time is already in user time on Linux (as psutil counts)."""
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total, t.idle + getattr(t, "iowait", 0.0)


def _reason(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()[0][:200]
