"""Bench sensor: a record per getppid() of the target tgid (probes/bench.bpf.c); bench/ and tests only."""

from __future__ import annotations

from agent.events import BenchEvent, Op
from agent.sensors.abi import BENCH_EVENT, Probe
from agent.sensors.common import BootClock, Sensor, check_size, header_args

BENCH_SIZE = BENCH_EVENT.size
_COUNTER = BENCH_EVENT.span("counter", "counter")
_COUNTER_AT = BENCH_EVENT.offsets["counter"]


def decode_bench(buf: bytes, clock: BootClock) -> BenchEvent:
    check_size(buf, BENCH_SIZE, "bench")
    (counter,) = _COUNTER.unpack_from(buf, _COUNTER_AT)
    return BenchEvent(*header_args(buf, clock), counter)


SENSOR = Sensor(name="bench", source="bench.bpf.c", probe=Probe.BENCH, decoders={Op.BENCH: decode_bench})
