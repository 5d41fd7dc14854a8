"""Cgroup sensor: cgroup v2 directories as they are created (probes/cgroup.bpf.c)."""

from __future__ import annotations

import struct

from agent.events import CgroupEvent, Op
from agent.sensors.common import HEADER, PATH_MAX, BootClock, Sensor, check_size, header_args, text

_FIXED = struct.Struct("<QII")
CGROUP_SIZE = HEADER.size + _FIXED.size + PATH_MAX


def decode_cgroup(buf: bytes, clock: BootClock) -> CgroupEvent:
    check_size(buf, CGROUP_SIZE, "cgroup")
    cg_id, level, plen = _FIXED.unpack_from(buf, HEADER.size)
    path = text(buf, HEADER.size + _FIXED.size, min(plen, PATH_MAX))
    return CgroupEvent(*header_args(buf, clock), cg_id, level, path)


SENSOR = Sensor(name="cgroup", source="cgroup.bpf.c", probe=4, decoders={Op.CGROUP_MKDIR: decode_cgroup})
