"""Wires the stages: sensors -> enrich -> outputs. The only module that knows them all.

Threads: the reader drains the ring buffer into a bounded queue of batches (it never decodes,
so it keeps up with the kernel); the worker decodes, enriches and hands records to the outputs.
Every loss is counted where it happens and reported as a metric and an `agent.drops` event:
kernel (failed ring-buffer reservations, per probe), queue (reader ahead of the worker),
decode (malformed records), output (an output that raised).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from agent.config import Config
from agent.enrich.enricher import Enricher
from agent.enrich.proctable import ProcessTable
from agent.events import AgentReady, CgroupEvent, DropReport, Enriched, ExecEvent, ForkEvent
from agent.outputs import record
from agent.outputs.metrics import Metrics
from agent.sensors.common import BootClock, DecodeError
from agent.sensors.loader import ProbeSet

log = logging.getLogger("nodewarden")

Output = Callable[[list[dict]], None]


class Pipeline:
    def __init__(self, cfg: Config, outputs: list[Output], metrics: Metrics | None = None,
                 containers=None, probes: ProbeSet | None = None,
                 drop_sources: list[Callable[[], dict[str, int]]] | None = None):
        self.cfg = cfg
        self.outputs = outputs
        self.drop_sources = drop_sources or []  # other stages' loss counters, e.g. the exporter's
        self.describe_rule = None  # (rule id, cgroup id) -> (category, text), set when exec rules are on
        self.metrics = metrics or Metrics()
        self.probes = probes or ProbeSet(cfg.probes)
        self.table = ProcessTable(cfg.agent.proctable_max)
        self.enricher = Enricher(self.table, containers)
        self.clock = BootClock()
        self._q: queue.Queue[list[bytes]] = queue.Queue(maxsize=cfg.agent.queue_batches)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reader = None  # set once the probes are loaded
        self._held: deque = deque()  # (deadline, Enriched) waiting for their container
        self.attribution: Counter[str] = Counter()  # resolved_after_hold, unknown, host_after_hold, ...
        self.drops: Counter[str] = Counter()  # "kernel.<probe>", "queue", "decode", "output"
        self._reported: Counter[str] = Counter()
        self.delivered = 0  # records handed to the outputs
        self.received = 0  # records read from the ring buffer
        self._out_lock = threading.Lock()
        self._last_error: dict[str, float] = {}

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, before_ready: Callable[[], None] | None = None) -> None:
        """Load the probes, start the threads, emit agent.ready; `before_ready` runs once the maps exist."""
        self.table.seed()
        self.probes.start()
        if before_ready is not None:
            before_ready()
        self._reader = self.probes.reader()
        self._threads = [
            threading.Thread(target=self._read_loop, name="nw-reader", daemon=True),
            threading.Thread(target=self._work_loop, name="nw-worker", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.metrics.is_ready = True
        self.metrics.ready.set(1)
        self.emit(AgentReady(time.time_ns(), self.cfg.agent.node_name, os.getpid(),
                             tuple(self.cfg.probes.families), tuple(self.probes.tracepoints_missing)))

    def stop(self) -> None:
        """Detach the probes, drain what the kernel already produced, report the last drops."""
        self.probes.stop()
        if self._reader is None:  # never started (start failed): nothing to drain
            return
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
        if self._held:
            self._deliver(self._release_held(True))

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
            if self._held:
                self._deliver(self._release_held(False))
            if now >= next_tick:
                next_tick = now + interval
                self.clock.resync()
                self._check_drops()

    def _process(self, batch: list[bytes]) -> None:
        decoders, clock, enrich = self.probes.decoders, self.clock, self.enricher.enrich
        show_fork = self.cfg.output.show_fork
        resolver = self.enricher.containers
        records = self._release_held(False) if self._held else []
        for raw in batch:
            try:
                ev = decoders[raw[0]](raw, clock)
            except (KeyError, IndexError, DecodeError, ValueError) as e:
                self.drops["decode"] += 1
                self._log_once("decode", f"undecodable record: {e!r}")
                continue
            if isinstance(ev, CgroupEvent):
                if resolver is not None:
                    resolver.note_cgroup(ev)
                continue
            en = enrich(ev)
            if isinstance(ev, ForkEvent) and not show_fork:
                continue
            if en.container is None and resolver is not None and resolver.is_young(ev.cgroup_id):
                self._hold(en)
                continue
            self._records(en, records)
        self._deliver(records)

    def _records(self, en: Enriched, out: list[dict]) -> None:
        """The record of an event, and an enforcement.block record when the kernel killed it."""
        rec = record.from_enriched(en)
        out.append(rec)
        ev = en.event
        if isinstance(ev, ExecEvent) and ev.action and self.describe_rule is not None:
            category, text = self.describe_rule(ev.rule, ev.cgroup_id)
            killed = ev.action == 2
            rec.update({"event.severity": "critical" if killed else "high", "rule.name": text,
                        "rule.category": category, "enforcement.action": "kill" if killed else "alert"})
            if killed:
                block = dict(rec)
                block.update({"event.name": "enforcement.block", "enforcement.point": "kernel.exec",
                              "enforcement.reason": f"exec denied by {text}"})
                out.append(block)

    # -- events waiting for their container ------------------------------------------------------

    def _hold(self, en: Enriched) -> None:
        """Keep an event of a just-created cgroup until containerd tells us its container (or the hold ends)."""
        held = self._held
        if len(held) >= self.cfg.agent.hold_max:
            self.attribution["held_overflow"] += 1
            self._deliver(self._release_held(True, only_one=True))
        held.append((time.monotonic() + self.cfg.agent.hold_s, en))

    def _release_held(self, force: bool, only_one: bool = False) -> list[dict]:
        """Records for held events that now resolve, or whose hold is over (then `unknown` or host)."""
        resolver, held, now = self.enricher.containers, self._held, time.monotonic()
        out, keep = [], deque()
        while held:
            deadline, en = held.popleft()
            info = resolver.resolve(en.event)
            if info is not None:
                self.attribution["resolved_after_hold"] += 1
            elif force or now >= deadline:
                info = resolver.fallback(en.event.cgroup_id)
                self.attribution["unknown" if info is not None else "host_after_hold"] += 1
            else:
                keep.append((deadline, en))
                continue
            self._records(Enriched(en.event, en.process, en.parent, info), out)
            if only_one:
                break
        keep.extend(held)
        self._held = keep
        return out

    def deliver(self, records: list[dict]) -> None:
        """Hand records made outside the kernel path (verdicts, enforcement) to the outputs."""
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

    def emit(self, ev) -> None:
        """Hand one typed record made outside the kernel path (agent.events.Record) to the outputs."""
        self._deliver([record.flatten(ev)])

    # -- accounting ------------------------------------------------------------------------------

    def drop_totals(self) -> dict[str, int]:
        totals = dict(self.drops)
        for probe, n in self.probes.kernel_drops().items():
            totals[f"kernel.{probe}"] = n
        for source in self.drop_sources:
            totals.update(source())
        return totals

    def _check_drops(self) -> None:
        totals = self.drop_totals()
        for stage, n in totals.items():
            self.metrics.drops.labels(stage).set(n)
        self.metrics.proctable.set(len(self.table))
        for result, n in self.attribution.items():
            self.metrics.attribution.labels(result).set(n)
        grown = {k: n - self._reported.get(k, 0) for k, n in totals.items() if n > self._reported.get(k, 0)}
        if grown:
            self._reported.update(grown)
            self.emit(DropReport(time.time_ns(), grown, dict(self._reported)))

    def _log_once(self, key: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._last_error.get(key, 0) > 60:  # rate-limited: one line a minute per kind
            self._last_error[key] = now
            log.error(msg)
