"""The process fragments' caches (agent/outputs/record.py _process_part, agent/sensors/_native.c proc_part and
json_line) are bounded in the bytes they keep alive, not only in entries: each entry holds its process,
parent and ancestry with their argv. Records that exec a new process each time with 1 KB arguments of
escaped bytes (tests/unit/native_leakcheck.py --mode malformed) had the compiled caches keep ~54 MB of
dead processes alive (the leak check's RSS +62 MB). Here: many such contexts, the caches' counts stay
under their bound, and the memory Python traces stops growing once they are full."""

from __future__ import annotations

import gc
import os
import tracemalloc

import pytest

from agent.events import Enriched, ProcInfo
from agent.outputs import record
from agent.sensors import native
from agent.sensors.common import BootClock
from tests.unit.detect_events import file_rec
from tests.unit.test_flatten_fragments import _DECODERS, plain

ARG = "\\x9f" * 200  # 800 characters: a fragment small enough to be cached, with an ancestry that is not


def _contexts(n: int, start: int):
    """n process contexts, each a new process, parent and ancestry (what execs of hostile records make)."""
    ev = _DECODERS[10](file_rec(10, "/tmp/x", flags=os.O_WRONLY, ret=3), BootClock())
    for i in range(start, start + n):
        chain = tuple(ProcInfo(100 + k, 1, "/bin/sh", ("sh", ARG + str(i)), 0, 0, "sh") for k in range(4))
        p = ProcInfo(i, 100, "/bin/sh", ("sh", str(i)), 0, 10**18, "sh")
        yield Enriched(ev, p, chain[0], None, chain)


def _traced_after(rounds: int, flatten, per_round: int = 3000) -> list[int]:
    out = []
    for r in range(rounds):
        for en in _contexts(per_round, r * per_round):
            flatten(en)
        gc.collect()
        out.append(tracemalloc.get_traced_memory()[0])
    return out


@pytest.fixture
def traced():
    tracemalloc.start(1)
    yield
    tracemalloc.stop()


def test_the_python_cache_stays_under_its_byte_bound(traced):
    record._proc_parts.clear()
    record._proc_parts_bytes[0] = 0
    # record.from_enriched may be the compiled flattener: the Python cache is the one _process_part fills
    seen = []

    def flatten(en):
        record._process_part(en.process, en.parent, en.ancestors)
        seen.append(record._proc_parts_bytes[0])

    mem = _traced_after(6, flatten)
    assert max(seen) <= record._PART_BYTES_MAX
    assert len(record._proc_parts) < record._PART_MAX  # the byte bound, not the entry bound, was what held
    # full after the first rounds: what stays is at most the bound (8 MB), not a climb per round
    assert max(mem[2:]) - min(mem[2:]) < 10 * 2**20, mem


@pytest.mark.skipif(native.MODULE is None, reason=f"native module not loaded: {native.STATUS}")
def test_the_compiled_caches_stay_under_their_byte_bound(traced):
    mod = native.MODULE
    mod.clear_parts()
    record._proc_parts.clear()
    record._proc_parts_bytes[0] = 0
    seen = []

    def flatten(en):
        rec = mod.flatten(en)  # the dict cache (proc_part) as well as the JSON one
        if len(seen) % 997 == 0:
            assert rec == plain(en)
        line = mod.json_line(en)
        assert line is not None and mod.encoded(en, 2) is not None  # and the Event's (its own cache)
        seen.append(mod.parts_bytes())

    mem = _traced_after(6, flatten)
    bound = seen[0][2]
    assert bound == record._PART_BYTES_MAX
    assert max(s[0] for s in seen) <= bound and max(s[1] for s in seen) <= bound
    assert max(s[1] for s in seen) > bound // 2  # the JSON cache did fill (and was cleared at its bound)
    assert bound // 2 < max(s[3] for s in seen) <= bound  # and the protobuf one
    # before the bound, the two compiled caches grew by ~4,096 entries x ~4.5 KB each and the Python
    # one up to 4,096 entries (about 50 MB in all, rising over the rounds): now 4 x 8 MB at most (the dict, JSON
    # and protobuf caches, and the Python one)
    assert max(mem[2:]) - min(mem[2:]) < 16 * 2**20, mem
    mod.clear_parts()
    assert mod.parts_bytes()[:2] == (0, 0) and mod.parts_bytes()[3] == 0
