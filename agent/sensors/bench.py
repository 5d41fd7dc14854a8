"""Bench sensor: a record per getppid() of the target tgid (probes/bench.bpf.c); bench/ and tests only."""

from __future__ import annotations

import struct

from agent.events import BenchEvent, Op
from agent.sensors.common import HEADER, BootClock, Sensor, check_size, header_args

BENCH_SIZE = HEADER.size + 8


def decode_bench(buf: bytes, clock: BootClock) -> BenchEvent:
    check_size(buf, BENCH_SIZE, "bench")
    (counter,) = struct.unpack_from("<Q", buf, HEADER.size)
    return BenchEvent(*header_args(buf, clock), counter)


SENSOR = Sensor(name="bench", source="bench.bpf.c", probe=3, decoders={Op.BENCH: decode_bench})
