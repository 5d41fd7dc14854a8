"""Wires the stages: sensors -> enrich -> outputs. The only module that knows them all.

Threads: the reader drains the ring buffer into a bounded queue of batches (it never decodes,
so it keeps up with the kernel); the worker decodes, enriches and hands records to the outputs.
Every loss is counted where it happens and reported as a metric and an `agent.drops` event:
kernel (failed ring-buffer reservations, per probe), queue (reader ahead of the worker),
decode (malformed records), output (an output that raised).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from agent.config import Config
from agent.enrich.enricher import Enricher
from agent.enrich.proctable import ProcessTable
from agent.events import AgentEvent, ForkEvent
from agent.outputs import record
from agent.outputs.metrics import Metrics
from agent.sensors.common import BootClock, DecodeError
from agent.sensors.loader import ProbeSet

log = logging.getLogger("nodewarden")

Output = Callable[[list[dict]], None]


class Pipeline:
    def __init__(self, cfg: Config, outputs: list[Output], metrics: Metrics | None = None,
                 containers=None, probes: ProbeSet | None = None):
        self.cfg = cfg
        self.outputs = outputs
        self.metrics = metrics or Metrics()
        self.probes = probes or ProbeSet(cfg.probes)
        self.table = ProcessTable(cfg.agent.proctable_max)
        self.enricher = Enricher(self.table, containers)
        self.clock = BootClock()
        self._q: queue.Queue[list[bytes]] = queue.Queue(maxsize=cfg.agent.queue_batches)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.drops: Counter[str] = Counter()  # "kernel.<probe>", "queue", "decode", "output"
        self._reported: Counter[str] = Counter()
        self.delivered = 0  # records handed to the outputs
        self.received = 0  # records read from the ring buffer
        self._out_lock = threading.Lock()
        self._last_error: dict[str, float] = {}

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.table.seed()
        self.probes.start()
        self._reader = self.probes.reader()
        self._threads = [
            threading.Thread(target=self._read_loop, name="nw-reader", daemon=True),
            threading.Thread(target=self._work_loop, name="nw-worker", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.metrics.is_ready = True
        self.metrics.ready.set(1)
        self.emit_agent("agent.ready", {
            "agent.probes": list(self.cfg.probes.families),
            "agent.tracepoints_missing": self.probes.tracepoints_missing,
            "host.name": self.cfg.agent.node_name,
            "process.pid": _own_pid(),
        })

    def stop(self) -> None:
        """Detach the probes, drain what the kernel already produced, report the last drops."""
        self.probes.stop()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._drain()
        self._check_drops()
        self._reader.close()
        self.metrics.is_ready = False
        self.metrics.ready.set(0)

    def wait(self, duration: float | None, stop: threading.Event) -> None:
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            stop.wait(1.0 if left is None else min(1.0, left))

    # -- stages ----------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        reader, q, stop = self._reader, self._q, self._stop
        batch_max, batch_interval = self.cfg.agent.batch_max, self.cfg.agent.batch_interval
        poll = self.cfg.agent.poll_interval
        while not stop.is_set():
            batch = reader.read(batch_max)
            if batch:
                self.received += len(batch)
                try:
                    q.put_nowait(batch)
                except queue.Full:
                    self.drops["queue"] += len(batch)
            if len(batch) < batch_max:
                # Let a batch build up: the probes wake us only every few dozen records (probes/common.h,
                # nw_submit) and the ring buffer's poll is level-triggered, so without this pause a
                # trickle of events would be read one at a time.
                if batch:
                    stop.wait(batch_interval)
                if not reader.pending():
                    reader.wait(poll)

    def _drain(self) -> None:
        """After the probes are detached: process what is queued and left in the ring buffer."""
        while True:
            try:
                self._process(self._q.get_nowait())
            except queue.Empty:
                break
        while batch := self._reader.read(self.cfg.agent.batch_max):
            self.received += len(batch)
            self._process(batch)

    def _work_loop(self) -> None:
        interval = self.cfg.agent.drops_interval
        next_tick = time.monotonic() + interval
        while not self._stop.is_set():
            try:
                batch = self._q.get(timeout=min(interval, 0.5))
            except queue.Empty:
                batch = None
            if batch:
                self._process(batch)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + interval
                self.clock.resync()
                self._check_drops()

    def _process(self, batch: list[bytes]) -> None:
        decoders, clock, enrich = self.probes.decoders, self.clock, self.enricher.enrich
        show_fork = self.cfg.output.show_fork
        records = []
        for raw in batch:
            try:
                ev = decoders[raw[0]](raw, clock)
            except (KeyError, IndexError, DecodeError, ValueError) as e:
                self.drops["decode"] += 1
                self._log_once("decode", f"undecodable record: {e!r}")
                continue
            en = enrich(ev)
            if isinstance(ev, ForkEvent) and not show_fork:
                continue
            records.append(record.from_enriched(en))
        self._deliver(records)

    def _deliver(self, records: list[dict]) -> None:
        if not records:
            return
        with self._out_lock:
            for out in self.outputs:
                try:
                    out(records)
                except Exception as e:  # an output never kills the pipeline
                    self.drops["output"] += len(records)
                    self._log_once(f"output:{out!r}", f"output failed: {e!r}")
            self.delivered += len(records)
        ev_counter = self.metrics.events
        for name, n in Counter(r["event.name"] for r in records).items():
            ev_counter.labels(name).inc(n)

    def emit_agent(self, name: str, attrs: dict, severity: str = "info") -> None:
        self._deliver([record.from_agent(AgentEvent(name, time.time_ns(), attrs, severity))])

    # -- accounting ------------------------------------------------------------------------------

    def drop_totals(self) -> dict[str, int]:
        totals = dict(self.drops)
        for probe, n in self.probes.kernel_drops().items():
            totals[f"kernel.{probe}"] = n
        return totals

    def _check_drops(self) -> None:
        totals = self.drop_totals()
        for stage, n in totals.items():
            self.metrics.drops.labels(stage).set(n)
        self.metrics.proctable.set(len(self.table))
        grown = {k: n - self._reported.get(k, 0) for k, n in totals.items() if n > self._reported.get(k, 0)}
        if grown:
            self._reported.update(grown)
            self.emit_agent("agent.drops", {
                "agent.drops.new": grown,
                "agent.drops.total": dict(self._reported),
            }, severity="warning")

    def _log_once(self, key: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._last_error.get(key, 0) > 60:  # rate-limited: one line a minute per kind
            self._last_error[key] = now
            log.error(msg)


def _own_pid() -> int:
    import os

    return os.getpid()
