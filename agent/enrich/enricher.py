"""The enrich stage: attach to each kernel event its process, its parent and its container."""

from __future__ import annotations

from agent.enrich.proctable import ProcessTable
from agent.events import Enriched, ExecEvent, KernelEvent


class ContainerResolver:
    """Attributes a kernel event to a container by the cgroup id captured in the kernel, then by
    its mount namespace (agent/enrich/container_table.py keeps both indexes)."""

    def __init__(self, table):
        self.table = table

    def resolve(self, ev: KernelEvent):
        return self.table.lookup_by_cgroup(ev.cgroup_id) or self.table.lookup_by_mntns(ev.mntns)


class Enricher:
    def __init__(self, table: ProcessTable, containers=None):
        self.table = table
        self.containers = containers  # anything with resolve(event) -> ContainerInfo | None

    def enrich(self, ev: KernelEvent) -> Enriched:
        table = self.table
        if isinstance(ev, ExecEvent):
            table.update(ev)  # the exec event describes the new image: record it first
            proc = table.get(ev.pid)
        else:
            proc = table.get(ev.pid)
            table.update(ev)  # fork adds the child, exit removes the pid: after the lookup
        parent = table.get(ev.ppid) if ev.ppid else None
        container = self.containers.resolve(ev) if self.containers is not None else None
        return Enriched(ev, proc, parent, container)
