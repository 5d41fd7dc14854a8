"""Cgroup sensor: cgroup v2 directories as they are created (probes/cgroup.bpf.c)."""

from __future__ import annotations

from agent.events import CgroupEvent, Op
from agent.sensors.abi import CGROUP_EVENT, Probe
from agent.sensors.common import PATH_MAX, BootClock, Sensor, check_size, header_args

CGROUP_SIZE = CGROUP_EVENT.size
_FIXED = CGROUP_EVENT.span("id", "path_len")
_FIXED_AT = CGROUP_EVENT.offsets["id"]
_PATH_AT = CGROUP_EVENT.offsets["path"]


def decode_cgroup(buf: bytes, clock: BootClock) -> CgroupEvent:
    check_size(buf, CGROUP_SIZE, "cgroup")
    cg_id, level, plen = _FIXED.unpack_from(buf, _FIXED_AT)
    # Not common.escape: this path is a key the container resolver compares with the text of
    # /proc/<pid>/cgroup, and systemd names carry real backslashes (system-serial\x2dgetty.slice).
    raw = buf[_PATH_AT : _PATH_AT + min(plen, PATH_MAX)]
    return CgroupEvent(*header_args(buf, clock), cg_id, level, raw.decode("utf-8", "backslashreplace"))


SENSOR = Sensor(name="cgroup", source="cgroup.bpf.c", probe=Probe.CGROUP, decoders={Op.CGROUP_MKDIR: decode_cgroup})
