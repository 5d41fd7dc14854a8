"""Resources: every running container's CPU, memory (and its limit), pids, block I/O and network from its cgroup
files (v2 or v1, agent/resources/cgroupfs.py), and the host's CPU, memory, disks and network through psutil
(agent/resources/host.py), sampled on an interval by agent/resources/sampler.py into container.resources and
host.resources records, the metrics of agent/outputs/resource_metrics.py, and the nw.container_memory_at_limit
alert.

`build(cfg, emit, containers)` is the one way in: the Sampler, or NullResources when resources are off.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.config import Config, ResourcesConfig


class BuildError(ValueError):
    """A resources setting out of range (one line)."""


class NullResources:
    """No resource sampling: what the agent holds when resources are off."""

    enabled = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def snapshot(self) -> tuple[list, None]:
        return [], None

    def drops(self) -> dict[str, int]:
        return {}

    def status(self) -> dict:
        return {}


def build(cfg: Config | ResourcesConfig, emit: Callable[[object], None] | None = None, containers=None,
          proc_root: str | None = None):
    """The sampler for this configuration, or NullResources. `emit` takes each typed record (the pipeline's
    emit); `containers` is the container table whose running containers are read. Raises BuildError on a
    setting out of range."""
    rcfg = cfg.resources if isinstance(cfg, Config) else cfg
    if proc_root is None:
        proc_root = cfg.containers.proc_root if isinstance(cfg, Config) else "/proc"
    if not rcfg.enabled:
        return NullResources()
    if rcfg.interval_s <= 0:
        raise BuildError(f"resources.interval_s must be positive, not {rcfg.interval_s:g}")
    if not 0 <= rcfg.memory_alert_percent <= 100:
        raise BuildError(f"resources.memory_alert_percent must be 0-100, not {rcfg.memory_alert_percent:g}")
    if rcfg.memory_alert_samples < 1 or rcfg.max_containers < 1:
        raise BuildError("resources.memory_alert_samples and resources.max_containers must be at least 1")
    from agent.resources.host import HostSampler
    from agent.resources.sampler import Sampler

    host = HostSampler(proc_root, rcfg.filesystems) if rcfg.host else None
    return Sampler(rcfg, emit or (lambda ev: None), containers=containers, proc_root=proc_root, host=host)
