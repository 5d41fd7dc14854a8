"""Sensors: one module per probe family. The registry below is the only list of them."""

from __future__ import annotations

from agent.sensors import bench, cgroup, file, net, process, system
from agent.sensors.common import Sensor

REGISTRY: dict[str, Sensor] = {
    s.name: s for s in (process.SENSOR, file.SENSOR, net.SENSOR, cgroup.SENSOR, system.SENSOR, bench.SENSOR)
}
DEFAULT_FAMILIES = ("process", "file", "net", "cgroup", "system")
