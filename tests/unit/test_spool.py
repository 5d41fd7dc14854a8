"""The exporter's disk spool: order, acks across restarts, bounded size, corruption."""

from __future__ import annotations

import logging
import os

import pytest

from agent.outputs.spool import Spool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fill(sp: Spool, n: int, size: int = 100) -> int:
    dropped = 0
    for i in range(n):
        dropped += sp.append(i.to_bytes(4, "big") * (size // 4), 10)
    return dropped


def _drain(sp: Spool, ack: bool = True) -> list[int]:
    out, pos = [], None
    while (item := sp.read_next(pos)) is not None:
        pos, events, payload = item
        out.append(int.from_bytes(payload[:4], "big"))
        if ack:
            sp.ack(pos)
    return out


def test_fifo_and_ack(tmp_path):
    sp = Spool(tmp_path, 1 << 20, 1000)
    sp.open()
    _fill(sp, 30)
    first = sp.read_next(None)
    assert int.from_bytes(first[2][:4], "big") == 0 and first[1] == 10
    assert _drain(sp) == list(range(30))
    assert sp.stats()["pending_events"] == 0 and sp.stats()["segments"] == 1  # acked segments deleted
    sp.close()
    assert not list(tmp_path.glob("*.seg"))


def test_unacked_survives_restart_and_acked_is_not_resent(tmp_path):
    sp = Spool(tmp_path, 1 << 20, 1000)
    sp.open()
    _fill(sp, 30)
    pos = None
    for _ in range(12):
        pos, _, _ = sp.read_next(pos)
    sp.ack(pos)
    sp.close()
    sp2 = Spool(tmp_path, 1 << 20, 1000)
    sp2.open()
    assert _drain(sp2) == list(range(12, 30))
    _fill(sp2, 2)
    assert sp2.stats()["pending_events"] == 20


def test_full_spool_drops_oldest_segments_and_counts_exactly(tmp_path):
    sp = Spool(tmp_path, 5000, 1000)
    sp.open()
    dropped = _fill(sp, 200)
    kept = _drain(sp, ack=False)
    assert dropped == (200 - len(kept)) * 10 == sp.dropped_events
    assert kept == list(range(200 - len(kept), 200))  # the newest stay
    assert sp.stats()["bytes"] <= 5000


def test_corrupt_segment_skipped_rest_delivered(tmp_path, caplog):
    sp = Spool(tmp_path, 1 << 20, 1000)
    sp.open()
    _fill(sp, 40)  # 116-byte records, 8 per segment
    sp.close()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) == 5
    data = bytearray(segs[2].read_bytes())
    data[116 * 3 + 20] ^= 1  # the 4th record of the 3rd segment
    segs[2].write_bytes(bytes(data))
    caplog.set_level(logging.ERROR)
    sp2 = Spool(tmp_path, 1 << 20, 1000)
    sp2.open()
    assert sp2.corrupt_segments == 1 and "corrupt" in caplog.text and segs[2].name in caplog.text
    assert _drain(sp2) == [i for i in range(40) if not 19 <= i < 24]


def test_torn_tail_and_garbage_files(tmp_path):
    sp = Spool(tmp_path, 1 << 20, 10000)
    sp.open()
    _fill(sp, 5)
    sp.close()
    seg = next(tmp_path.glob("*.seg"))
    seg.write_bytes(seg.read_bytes()[:-7])  # a crash in the middle of a write
    (tmp_path / "notes.seg").write_text("x")
    (tmp_path / "ack").write_text("garbage")
    sp2 = Spool(tmp_path, 1 << 20, 10000)
    sp2.open()
    assert _drain(sp2) == [0, 1, 2, 3]


def test_corruption_after_open_is_caught_on_read(tmp_path):
    sp = Spool(tmp_path, 1 << 20, 1000)
    sp.open()
    _fill(sp, 20)
    seg = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[116 + 30] ^= 1
    seg.write_bytes(bytes(data))
    assert _drain(sp) == [0] + list(range(8, 20))


def test_a_spool_held_by_another_agent_is_refused_in_one_line(tmp_path):
    """Two agents on one spool would delete and misread each other's segments: the second open is refused,
    naming the holder, until the first closes (or its process dies: the flock goes with it)."""
    import subprocess
    import sys

    from agent.outputs.spool import SpoolBusy

    sp = Spool(tmp_path, 1 << 20, 1000)
    sp.open()
    _fill(sp, 3)
    other = Spool(tmp_path, 1 << 20, 1000)
    with pytest.raises(SpoolBusy, match=rf"held by another NodeWarden agent \(pid {os.getpid()}\)"):
        other.open()
    other.close()  # never opened: nothing to do
    sp.close()
    again = Spool(tmp_path, 1 << 20, 1000)
    again.open()
    assert _drain(again) == [0, 1, 2]
    again.close()
    # a holder killed with SIGKILL leaves it free
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]); "
                              "from agent.outputs.spool import Spool; s = Spool(sys.argv[1], 1 << 20, 1000); "
                              "s.open(); print('held', flush=True); time.sleep(60)", str(tmp_path), ROOT],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(SpoolBusy, match=rf"pid {child.pid}\)"):
            Spool(tmp_path, 1 << 20, 1000).open()
    finally:
        child.kill()
        child.wait()
    last = Spool(tmp_path, 1 << 20, 1000)
    last.open()
    last.close()
