"""agent/ratelog.py: once per key per interval, and the next line says how many were held back."""

from __future__ import annotations

import logging

from agent.ratelog import RateLog


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_once_per_key_per_interval_and_the_suppressed_count(caplog):
    clock = Clock()
    rlog = RateLog(logging.getLogger("nw-test"), interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="nw-test"):
        assert rlog.error("decode", "bad record %d", 1)
        assert not any(rlog.error("decode", "bad record %d", i) for i in range(2, 6))
        assert rlog.warning("other", "another kind")  # keys are independent
        clock.t += 61
        assert rlog.error("decode", "bad record %d", 6)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["bad record 1", "another kind", "bad record 6 (4 more like this suppressed since the last line)"]
    assert rlog.suppressed == 4


def test_exception_carries_the_traceback_and_keys_are_bounded(caplog):
    rlog = RateLog(logging.getLogger("nw-test"), max_keys=2)
    with caplog.at_level(logging.ERROR, logger="nw-test"):
        try:
            raise ValueError("boom")
        except ValueError:
            rlog.exception("k", "failed")
    assert caplog.records[0].exc_info[0] is ValueError
    for k in ("a", "b", "c"):
        rlog.error(k, "x")
    assert len(rlog._last) == 2  # data-built keys never grow memory without bound
