"""Wires the stages: sensors -> enrich -> detect -> outputs. The only module that knows them all.

Threads: the reader drains the ring buffer into a bounded queue of batches (it never decodes,
so it keeps up with the kernel); the worker decodes, enriches and hands records to the outputs.
Every loss is counted where it happens and reported as a metric and an `agent.drops` event:
kernel (failed ring-buffer reservations, per probe), queue (reader ahead of the worker),
decode (malformed records), output (an output that raised), crash (what a SIGKILLed previous
run held in memory, agent/ledger.py), and the other stages' counters (`drop_sources`).
Detection runs on the worker after the hold (attributed events only): each event's alerts follow its
record; detect.folded and detect.rate_limited count what the detector held back (agent/detect/engine.py).
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from agent.config import Config
from agent.detect.engine import NullDetector
from agent.enrich.enricher import Enricher
from agent.enrich.hold import Hold
from agent.enrich.proctable import ProcessTable
from agent.events import (
    EVENT_NAMES,
    AgentReady,
    AlertEvent,
    CgroupEvent,
    DropReport,
    EnforcementEvent,
    Enriched,
    ExecEvent,
    FileEvent,
    ForkEvent,
)
from agent.ledger import Ledger
from agent.outputs import record
from agent.outputs.metrics import Metrics
from agent.outputs.record import ENCODE_JSON
from agent.ratelog import RateLog
from agent.sensors import native
from agent.sensors.abi import Action
from agent.sensors.common import BootClock, DecodeError
from agent.sensors.loader import ProbeSet
from agent.sensors.replay import RecordingReader

log = logging.getLogger("nodewarden")

Output = Callable[[list[dict]], None]

# Exporter drops that happen before its spool: the crash ledger must not count them as lost in memory.
_EXPORTER_BEFORE_SPOOL = ("exporter.queue_full", "exporter.encode_error")


class Pipeline:
    def __init__(self, cfg: Config, outputs: list[Output], metrics: Metrics | None = None,
                 containers=None, probes: ProbeSet | None = None,
                 drop_sources: list[Callable[[], dict[str, int]]] | None = None,
                 ledger: Ledger | None = None,
                 describe_rule: Callable[[int, int], tuple[str, str]] | None = None,
                 detector=None, webshell=None, device_guard=None, profiles=None):
        self.cfg = cfg
        self.outputs = outputs
        self.drop_sources = drop_sources or []  # other stages' loss counters, e.g. the exporter's
        # (rule id, cgroup id) -> (category, text) of an exec rule the kernel matched; None: no exec rules
        self.describe_rule = describe_rule
        self.metrics = metrics or Metrics()
        self.detector = detector if detector is not None else NullDetector()  # replaced whole by set_detector
        # The run-time web-shell check (agent/detect/webshell_watch.py): sees every event, scans on its own thread
        self._webshell = webshell.observe if webshell is not None and webshell.enabled else None
        # The device guard (agent/devices/guard.py): containers' opens of GPU/XPU nodes, judged on its own thread
        self._devguard = device_guard.observe if device_guard is not None and device_guard.enabled else None
        # the two as watchers of the compiled loop (_watch): the objects, for what each wants to see (interest)
        self._watchers = tuple(w for w, on in ((webshell, self._webshell), (device_guard, self._devguard)) if on)
        self._watch_cache: tuple | None = None
        self._retired: list = []  # detectors replaced on reload: the worker flushes their folds
        # The behaviour model per workload (agent/detect/profile): judges container events after the rules,
        # on the same batch; None when off (its null object is never called per event)
        self.profiles = profiles if profiles is not None and profiles.enabled else None
        # drops, evaluations and alerts of retired detectors: the totals never go down across a reload
        self._detect_base: dict[str, Counter] = {"drops": Counter(), "evals": Counter(), "alerts": Counter()}
        self._detect_seen: dict[str, Counter] = {"evals": Counter(), "alerts": Counter()}
        self.probes = probes or ProbeSet(cfg.probes)
        self.table = ProcessTable(cfg.agent.proctable_max, ancestry_max=cfg.agent.ancestry_max)
        self.enricher = Enricher(self.table, containers)
        self.hold = Hold(containers, cfg.agent.hold_s, cfg.agent.hold_max) if containers is not None else None
        self.ledger = ledger
        self.clock = BootClock()
        self._q: queue.Queue[tuple[list[bytes], int]] = queue.Queue(maxsize=cfg.agent.queue_batches)
        # bytes the queue holds = put - taken; each counter has one writer (reader, worker): no lock needed
        self._q_put_bytes = 0
        self._q_taken_bytes = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reader = None  # set once the probes are loaded
        # Every stage of ours is a series from the start (0 until it drops): an alert on rate() needs one.
        self.drops: Counter[str] = Counter(dict.fromkeys(("queue", "decode", "output", "crash"), 0))
        self._reported: Counter[str] = Counter()  # drop totals already in agent.drops and the metrics
        self._attributed: Counter[str] = Counter()  # hold outcomes already in the metrics
        self.delivered = 0  # records handed to the outputs
        self.received = 0  # records read from the ring buffer
        self._out_lock = threading.Lock()
        self._acct_lock = threading.Lock()  # drop checks run on the worker and, at start and stop, the caller
        self._rlog = RateLog(log)
        self._run_cache = None  # (the decoders it was made for, _runner's answer)
        self._enc_cache: tuple | None = None  # (the outputs it was made for, _encodings' answer)

    @property
    def attribution(self) -> Counter[str]:
        """How holds ended: resolved_after_hold, unknown, host_after_hold, held_overflow."""
        return self.hold.attribution if self.hold is not None else Counter()

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, before_ready: Callable[[], None] | None = None) -> None:
        """Load the probes, start the threads, emit agent.ready; `before_ready` runs once the maps exist."""
        if self.ledger is not None:
            self.drops["crash"] += self.ledger.open()  # what a killed previous run lost: the first report
        self.table.seed()
        log.info("decoders: %s", native.STATUS)  # compiled (make setup) or the Python reference
        self.probes.start()
        if before_ready is not None:
            before_ready()
        self._reader = self.probes.reader()
        if self.cfg.agent.record_file:
            self._reader = RecordingReader(self._reader, self.cfg.agent.record_file)
        # agent.ready first, then the threads: the ring buffer keeps what the probes catch meanwhile, and
        # no kernel event goes out ahead of the line that says the probes are attached.
        self.metrics.is_ready = True
        self.metrics.ready.set(1)
        self.emit(AgentReady(time.time_ns(), self.cfg.agent.node_name, os.getpid(),
                             tuple(self.cfg.probes.families), tuple(self.probes.tracepoints_missing)))
        self._check_drops()
        self._threads = [
            threading.Thread(target=self._read_loop, name="nw-reader", daemon=True),
            threading.Thread(target=self._work_loop, name="nw-worker", daemon=True),
        ]
        for t in self._threads:
            t.start()

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
        poll, max_bytes = self.cfg.agent.poll_interval, self.cfg.agent.queue_max_bytes
        while not stop.is_set():
            batch = reader.read(batch_max)
            if batch:
                self._count_read(len(batch))
                size = sum(map(len, batch))
                queued = self._q_put_bytes - self._q_taken_bytes
                try:
                    if queued and queued + size > max_bytes:  # an empty queue always takes one batch
                        raise queue.Full
                    q.put_nowait((batch, size))
                    self._q_put_bytes += size
                except queue.Full:
                    self.drops["queue"] += len(batch)
                    self._settled(len(batch))
            if len(batch) < batch_max:
                # Let a batch build up: the probes wake us only every few dozen records (probes/common.h,
                # nw_submit) and the ring buffer's poll is level-triggered, so without this pause a
                # trickle of events would be read one at a time.
                if batch:
                    stop.wait(batch_interval)
                if not reader.pending():
                    reader.wait(poll)

    def _take(self, item: tuple[list[bytes], int]) -> list[bytes]:
        batch, size = item
        self._q_taken_bytes += size
        return batch

    def _count_read(self, n: int) -> None:
        self.received += n
        if self.ledger is not None:
            self.ledger.add("kernel_read", n)

    def _settled(self, n: int) -> None:
        """n kernel records are done with (delivered, filtered, or counted as dropped)."""
        if self.ledger is not None and n:
            self.ledger.add("kernel_settled", n)

    def _drain(self) -> None:
        """After the probes are detached: process what is queued and left in the ring buffer."""
        while True:
            try:
                self._process(self._take(self._q.get_nowait()))
            except queue.Empty:
                break
        while batch := self._reader.read(self.cfg.agent.batch_max):
            self._count_read(len(batch))
            self._process(batch)
        self._release(force=True)
        self._flush_alerts(force=True)

    # -- detection -------------------------------------------------------------------------------

    def set_detector(self, detector) -> None:
        """Put new rules in force (a policy reload): one assignment, so an event meets the old rules or
        the new; the old detector's pending folds are reported by the worker."""
        old, self.detector = self.detector, detector
        self._retired.append(old)

    def _flush_alerts(self, force: bool = False) -> None:
        """On the worker: alerts reporting what their window folded; retired detectors' last folds."""
        alerts = []
        while self._retired:
            old = self._retired.pop(0)
            alerts += old.flush(force=True)
            evals, raised = old.counters()
            with self._acct_lock:
                self._detect_base["drops"].update(old.drops())
                self._detect_base["evals"].update(evals)
                self._detect_base["alerts"].update(raised)
        alerts += self.detector.flush(force=force)
        self._deliver([record.flatten(a) for a in alerts])

    def _detect_counts(self, kind: str) -> Counter:
        evals, raised = self.detector.counters()
        now = Counter(evals if kind == "evals" else raised)
        now.update(self._detect_base[kind])
        return now

    def _work_loop(self) -> None:
        interval = self.cfg.agent.drops_interval
        next_tick = time.monotonic() + interval
        while not self._stop.is_set():
            try:
                batch = self._take(self._q.get(timeout=min(interval, 0.5)))
            except queue.Empty:
                batch = None
            if batch:
                self._process(batch)
            else:
                self._release()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + interval
                self.clock.resync()
                self._flush_alerts()
                self._tick_profiles()
                self._check_drops()

    def _tick_profiles(self) -> None:
        """On the worker, about once a second: the profiles' run-time clock, mode switches, control
        requests and flushes; what they report (profile.change) goes out with the events."""
        if self.profiles is None:
            return
        try:
            records = self.profiles.tick()
        except Exception as e:  # the model must never stop the event path
            self._rlog.error("profiles", "profile tick failed: %r", e)
            return
        if records:
            self._deliver([record.flatten(r) for r in records])

    def _release(self, force: bool = False) -> None:
        """Deliver the held events that resolved or whose hold ran out."""
        if self.hold is None or not len(self.hold):
            return
        out: list[dict] = []
        judge: list = []
        done = self.hold.release(force=force)
        for en in done:
            self._records(en, out, judge)
        self._judge(out, judge)
        self._deliver(out)
        self._settled(len(done))

    def _process(self, batch: list[bytes]) -> None:
        """One batch, on the worker: decode, enrich, hold, records, then the detector over the batch and
        one delivery. Hot (issue 17): what is the same for every event of the batch is looked up once
        here, the common event's record is made inline (_records does the same for released and early
        events, and the rare rest: a kernel rule's exec)."""
        decoders, clock, hold = self.probes.decoders, self.clock, self.hold
        enrich, memo = self.enricher.enrich_in_batch, {}  # the batch's memo of process and container context
        from_memo = native.MODULE.from_memo if native.MODULE is not None else None  # its hits, compiled
        show_fork = self.cfg.output.show_fork
        resolver = self.enricher.containers
        from_enriched = record.from_enriched
        judge_all = self.detector.enabled
        judge_boxed = self.profiles is not None
        webshell, devguard = self._webshell, self._devguard
        mode, takers = self._encodings()
        encoded = native.MODULE.encoded if mode else None
        line_ops: list = []  # the op of each record made encoded (counted in the metrics by name)
        records: list = []  # dicts, and kernel events encoded for the outputs (mode) where they could be
        judge: list = []  # event, where its record is, event, ...: judged after the batch's records are made
        settled = len(batch)
        if hold is not None and len(hold):
            released = hold.release()
            settled += len(released)
            for en in released:
                self._records(en, records, judge)
        run, mask = self._runner(decoders, mode) or (None, b"")
        watch, watch_spec = self._watch() if run is not None else (None, None)
        young = resolver.young_cgroups() if hold is not None and resolver is not None else None
        judge_mode = 2 if judge_all else 1 if judge_boxed else 0
        i, n = 0, len(batch)
        while i < n:
            ev = en = None
            if run is not None:  # the compiled kinds' records, up to the first it leaves to this loop
                i, ev, en = run(batch, i, clock, memo, young, mask, judge_mode, records, line_ops, judge, enrich,
                                show_fork, watch, watch_spec, mode)
                if i >= n:
                    break
            raw = batch[i]
            i += 1
            if ev is None:
                try:
                    ev = decoders[raw[0]](raw, clock)
                except (KeyError, IndexError, DecodeError, ValueError) as e:
                    self.drops["decode"] += 1
                    self._rlog.error("decode", "undecodable record: %r", e)
                    continue
            if isinstance(ev, CgroupEvent):
                if resolver is not None:
                    resolver.note_cgroup(ev)
                memo.clear()  # the resolver may attribute that cgroup's events differently now
                continue
            if en is None and (from_memo is None or (en := from_memo(memo, ev)) is None):
                en = enrich(ev, memo)  # (run enriched what it hands back with its event: never twice)
            if not show_fork and isinstance(ev, ForkEvent):
                continue
            if hold is not None and en.container is None and hold.wants(en):
                settled -= 1  # counted when the hold lets it go
                for early in hold.hold(en):
                    settled += 1
                    self._records(early, records, judge)
                continue
            if isinstance(ev, ExecEvent):
                self._records(en, records, judge)
                continue
            # _records, inline for the common event (no kernel rule action: not an exec)
            if mode and (enc := encoded(en, mode)) is not None:
                records.append(enc)
                line_ops.append(ev.op)
            else:
                records.append(from_enriched(en))
            if judge_all or (judge_boxed and en.container is not None):
                judge.append(en)
                judge.append(len(records))
            if webshell is not None:  # files written under web roots: filed here, scanned on its thread
                webshell(en)
            if devguard is not None and type(ev) is FileEvent:
                devguard(en)
        self._judge(records, judge)
        self._deliver(records, line_ops if mode else None, takers)
        self._settled(settled)  # after the outputs have them: a kill before this counts them as lost

    def _runner(self, decoders: dict, mode: int):
        """(run, mask): the compiled loop over a batch's records of the compiled kinds (agent/sensors/_native.c
        run: decoded, enriched (a memo hit there, the rest by Enricher.enrich_in_batch), not held, encoded for
        the outputs (mode: _encodings), judged, shown to the watchers that want it (_watch)) and its op mask
        (op -> 1 file, 2 net, 3 fork, 4 exit, 5 exec: where the decoder in use is the compiled one). None where
        it cannot do what this loop does: an output that needs dicts, or the decoders are not the compiled ones."""
        mod = native.MODULE
        if mod is None or not mode:
            return None
        codes = {mod.decode_file: 1, mod.decode_net: 2, mod.decode_fork: 3, mod.decode_exit: 4, mod.decode_exec: 5}
        key = tuple(sorted((op, id(d)) for op, d in decoders.items()))
        cached = self._run_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        mask = bytearray(256)
        for op, dec in decoders.items():
            if 0 <= op < 256:
                mask[op] = codes.get(dec, 0)
        runner = (mod.run, bytes(mask)) if any(mask) else None
        self._run_cache = (key, runner)
        return runner

    def _watch(self) -> tuple:
        """(watch, spec) for the compiled loop: the web-shell watch and the device guard as one callable, and
        which events it must see, the union of what each says it wants (interest(): {op: 1 always, 2 by path,
        3 by path2}, path prefixes, literals or None for every path). The loop tests the path in C, so the
        many events neither can want (a write outside the web roots and the device nodes) cost no Python call;
        each watcher still checks what it is given, as on this loop's own path. (None, None) without watchers.
        Why not leave watched batches to this loop: the agent's default (both on) then took it for every event,
        3.7 us a record against 2.1 with the rules on (bench.pipeline, 2026-12-06, README)."""
        if not self._watchers:
            return None, None
        interests = tuple(w.interest() for w in self._watchers)  # each cached by its watcher while settings last
        cached = self._watch_cache
        if cached is not None and all(a is b for a, b in zip(cached[0], interests, strict=True)):
            return cached[1]
        ops = bytearray(256)
        prefixes: list[str] = []
        literals: list[str] | None = []
        for wanted, pre, lits in interests:
            for op, how in wanted.items():
                # "always" beats a path test; two different path tests (path and path2) become "always"
                ops[op] = how if ops[op] in (0, how) else 1
            prefixes += pre
            literals = None if literals is None or lits is None else literals + list(lits)
        spec = (bytes(ops), tuple(dict.fromkeys(prefixes)), None if literals is None else tuple(literals))
        ws, dg = self._webshell, self._devguard
        if ws is not None and dg is not None:
            def watch(en, ws=ws, dg=dg):
                ws(en)
                if type(en.event) is FileEvent:  # as _process calls the guard
                    dg(en)
        else:
            watch = ws or dg  # a guard alone is asked for file opens only
        self._watch_cache = (interests, (watch, spec))
        return watch, spec

    def _encodings(self) -> tuple[int, tuple]:
        """(mode, takers): what the compiled module makes of a kernel event instead of its dict, when every
        output can take it: 1 its JSON line (the JSON log), 2 its Event's bytes (the exporter, which stamps
        the identity), 3 both as a (line, event) tuple (the JSON log and the exporter, the agent's default
        with a collector). Each output says what it takes in its class's ENCODED ({the output method: (what it
        takes, the method that takes it)}: JsonLog.emit -> emit_lines, Exporter.submit_batch); takers holds
        (what, method) per output. The encoders write what the dict would have made, byte for byte for the
        line (tests/unit/test_native_json.py), message for message for the Event (test_native_pb.py).
        (0, ()) where an output needs dicts (the text log, a test's output) or the module is not loaded."""
        mod = native.MODULE
        if mod is None or not self.outputs or native.LINES_OFF:
            return 0, ()
        cached = self._enc_cache
        outs = tuple(self.outputs)
        if cached is not None and cached[0] == outs:
            return cached[1]
        takers = []
        for out in outs:
            owner = getattr(out, "__self__", None)
            spec = getattr(owner, "ENCODED", {}).get(getattr(out, "__func__", None))
            if spec is None:
                takers = None
                break
            what, method = spec  # (the module being loaded, record.py gave it the Event's numbers at import)
            takers.append((what, method.__get__(owner)))
        mode = 0
        for what, _ in takers or ():
            mode |= what
        answer = (mode, tuple(takers)) if takers else (0, ())
        self._enc_cache = (outs, answer)
        return answer

    def _records(self, en: Enriched, out: list[dict], judge: list) -> None:
        """The record of an event, and an enforcement.block record when the kernel killed it; the
        event goes on `judge` for the detector, which _judge runs once the whole batch is made.
        (_process makes the common event's record inline, the same way: keep the two alike.)"""
        rec = record.from_enriched(en)
        out.append(rec)
        if self.detector.enabled or (self.profiles is not None and en.container is not None):
            judge.append(en)
            judge.append(len(out))
        if self._webshell is not None:  # files written under web roots: filed here, scanned on its thread
            self._webshell(en)
        ev = en.event
        if self._devguard is not None and type(ev) is FileEvent:
            self._devguard(en)
        if isinstance(ev, ExecEvent) and ev.action and self.describe_rule is not None:
            category, text = self.describe_rule(ev.rule, ev.cgroup_id)
            killed = ev.action == Action.KILL
            rec.update({"event.severity": "critical" if killed else "high", "rule.name": text,
                        "rule.category": category, "enforcement.action": "kill" if killed else "alert"})
            if killed:  # the kill happened in the kernel, before the program's first instruction
                out.append(record.flatten(EnforcementEvent(
                    ev.ts_ns, "kernel.exec", "kill", f"exec denied by {text}", outcome="killed", subject=en,
                    rule_name=text, rule_category=category,
                    duration_ms=0.0)))  # sent in the exec tracepoint itself, before the record's timestamp

    def _judge(self, out: list[dict], judge: list) -> None:
        """The detector over a whole batch (Detector.evaluate_batch), each event's alerts put right
        after its record. Judging in a run of its own, grouped by kind, not between building one
        record and the next, keeps the rules' code and tables warm in the CPU caches: with
        bench/pipeline.py the loss with rules on went from 21 % to about 15 %. A kill rule's kill
        thus comes at the end of its batch (a batch takes about 2 ms). Alerts are rare: the splice
        is cheap. `judge` is flat, each event followed by its record's position: no tuple a record (a
        tuple is tracked by the garbage collector, and these lived until the batch was judged)."""
        if not judge:
            return
        flatten = record.flatten
        events = judge[0::2]
        raised = self.detector.evaluate_batch(events) if self.detector.enabled else []
        if self.profiles is not None:
            # what a rule flagged is never learned (NeuVector's rule too): the profile learns the rest
            deviations = self.profiles.observe_batch(events, {i for i, _ in raised})
            if deviations:
                for _, alerts in deviations:
                    for a in alerts:
                        self.metrics.alerts.labels(a.rule_id, a.severity.label).inc()
                raised = _merge_raised(raised, deviations)
        for i, alerts in reversed(raised):  # from the end, so earlier positions stay right
            at = judge[2 * i + 1]
            out[at:at] = [flatten(a) for a in alerts]

    def _deliver(self, records: list, line_ops: list | None = None, takers: tuple = ()) -> None:
        """Hand a batch's records to every output. With `line_ops` (from _process, when the compiled module
        encoded some records for the outputs: _encodings) the records are dicts and encoded ones, and each
        output's taker gets them with its own encoding (the line or the Event of a (line, event) tuple);
        line_ops names the encoded records' events for the metrics."""
        if not records:
            return
        both = line_ops is not None and len({what for what, _ in takers}) > 1
        with self._out_lock:
            for out, (what, take) in zip(self.outputs, takers or ((0, None),) * len(self.outputs), strict=True):
                try:
                    if line_ops is None:
                        out(records)
                    elif both:  # (line, event) tuples: the one this output takes
                        at = 0 if what == ENCODE_JSON else 1
                        take([r[at] if type(r) is tuple else r for r in records])
                    else:
                        take(records)
                except Exception as e:  # an output never kills the pipeline
                    self.drops["output"] += len(records)
                    self._rlog.error(f"output:{out!r}", "output failed: %r", e)
            self.delivered += len(records)
            if self.ledger is not None:
                self.ledger.add("handed", len(records))
        if line_ops is None:
            self.metrics.count_records(records)  # events by name, enforcement blocks by point
            return
        self.metrics.count_records([r for r in records if type(r) is dict])
        events = self.metrics.events
        for op, n in Counter(line_ops).items():
            events.labels(EVENT_NAMES[op]).inc(n)

    def emit(self, ev) -> None:
        """Hand one typed record made outside the kernel path (agent.events.Record) to the outputs."""
        self._deliver([record.flatten(ev)])
        if isinstance(ev, AlertEvent):  # another stage's alert (malware.webshell): counted as the detector's are
            self.metrics.alerts.labels(ev.rule_id, ev.severity.label).inc()

    # -- accounting ------------------------------------------------------------------------------

    def drop_totals(self) -> dict[str, int]:
        totals = dict(self.drops)
        detect = Counter(self.detector.drops())
        detect.update(self._detect_base["drops"])
        totals.update(detect)
        if self.profiles is not None:
            totals.update(self.profiles.drops())
        for probe, n in self.probes.kernel_drops().items():
            totals[f"kernel.{probe}"] = n
        for what, n in self.probes.kernel_folded().items():  # like detect.folded: not lost, but not sent
            totals[f"kernel.{what}"] = n
        for source in self.drop_sources:
            try:
                totals.update(source())
            except Exception as e:  # a stage's counter must not stop the accounting of the others
                self._rlog.error(f"drops:{source!r}", "reading drop counters failed: %r", e)
        return totals

    def _check_drops(self) -> None:
        """Counters grow by what grew since the last check; an agent.drops event says what."""
        with self._acct_lock:
            self._check_drops_locked()

    def _check_drops_locked(self) -> None:
        totals = self.drop_totals()
        m = self.metrics
        for stage in totals:
            m.drops.labels(stage)  # every stage is a series, 0 until it drops
        m.proctable.set(len(self.table))
        for result, n in _growth(self.attribution, self._attributed).items():
            m.attribution.labels(result).inc(n)
        for rule, n in _growth(self._detect_counts("evals"), self._detect_seen["evals"]).items():
            m.rule_evaluations.labels(rule).inc(n)
        for (rule, severity), n in _growth(self._detect_counts("alerts"), self._detect_seen["alerts"]).items():
            m.alerts.labels(rule, severity).inc(n)
        if self.ledger is not None:
            self.ledger.set("exporter_lost", sum(totals.get(k, 0) for k in _EXPORTER_BEFORE_SPOOL))
        grown = _growth(totals, self._reported)
        if grown:
            for stage, n in grown.items():
                m.drops.labels(stage).inc(n)
            self.emit(DropReport(time.time_ns(), grown, dict(self._reported)))


def _growth(totals, seen: Counter) -> dict[str, int]:
    """What each total gained since `seen`, which is then brought up to date."""
    grown = {k: n - seen.get(k, 0) for k, n in totals.items() if n > seen.get(k, 0)}
    seen.update(grown)
    return grown


# Young-generation collections every 10,000 allocations instead of 700: the worker allocates a few
# objects per event and keeps a batch's events alive until the detector has judged them, so with
# the default most collections walk live objects for nothing (bench/pipeline.py: about 2 points of
# the loss with rules on). Garbage that only a collection frees (cycles) waits a little longer.
GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """Once started (probes compiled, rules built): what exists now lives as long as the agent, so
    it leaves the collector's generations (gc.freeze) and young collections come less often."""
    gc.freeze()
    _, mid, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, mid, old)


def _merge_raised(a: list[tuple[int, list]], b: list[tuple[int, list]]) -> list[tuple[int, list]]:
    """Two (position, alerts) lists in position order, one entry per position: the rules' alerts first."""
    merged: dict[int, list] = {}
    for i, alerts in a:
        merged[i] = list(alerts)
    for i, alerts in b:
        merged.setdefault(i, []).extend(alerts)
    return sorted(merged.items())
