"""What every alert output shares: its filter, a bounded queue, a thread, retries with backoff,
and the counts of what it sent and dropped.

The store's writer calls `offer` after each commit (collector/server.py's fan-out). `offer` only
matches the commit's filter rows (a few tuple reads per event) and appends the matching (id, body)
pairs to the output's queue: it never decodes, formats or waits on the network, so a slow or dead
receiver costs the writer nothing. When the queue is full the newest events that do not fit are
dropped and counted (reason "queue_full"): the writer never blocks.

The output's thread decodes the bodies it takes (nwwire's to_record: the same flat record the
agent's JSON log prints), hands them to the output's `send` in batches of at most `batch`, and on a
retryable failure (connection refused, timeout, HTTP 5xx/429) retries with exponential backoff up to
`retries` times; then the batch is dropped and counted ("failed"). A permanent refusal (HTTP 4xx)
drops at once ("rejected"). Every drop also gets a log line, at most one per output per 10 s.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

from collector.filters import NAME, SEVERITY, EventFilter, FilterError
from collector.units import parse_duration
from nwwire.codec import to_record
from nwwire.genproto import load
from nwwire.schema import SEVERITY as SEVERITIES
from nwwire.schema import pb

log = logging.getLogger("nodewarden.collector.outputs")
cpb = load("nodewarden.v1.collector_pb2")

# The protection events, for an output that names no kinds: alerts, blocks and image verdicts.
DEFAULT_KINDS = ("alert", "enforcement", "verdict")
DROP_REASONS = ("queue_full", "failed", "rejected", "invalid", "stopped")
_LOG_EVERY_S = 10.0
_COMMON = frozenset({"type", "name", "min_severity", "kinds", "namespace", "nodes", "rules", "queue", "retries",
                     "backoff", "backoff_max", "timeout", "batch"})


class OutputError(ValueError):
    """A bad output in the collector's config: the message is one line, naming the output."""


class SendError(Exception):
    """A failed send. retry=False: the receiver refused it for good (HTTP 4xx), do not resend."""

    def __init__(self, msg: str, retry: bool = True, refused: int = 0):
        super().__init__(msg)
        self.retry = retry
        self.refused = refused  # retry=False: how many items, from the front, were refused (0: all)


@dataclass
class Options:
    """The keys every output takes, besides its own (see docs/outputs.md)."""

    name: str
    filter: EventFilter
    queue: int = 10000  # events waiting to be sent; beyond it, drops
    retries: int = 3  # resends of a failed batch before it is dropped
    backoff: float = 0.5  # s before the first resend; doubles up to backoff_max
    backoff_max: float = 30.0
    timeout: float = 5.0  # s per request
    batch: int = 100  # events per send, for the outputs that send several at once


def _number(spec: dict, key: str, default, where: str, lo: float, kind=float):
    val = spec.get(key, default)
    if key in ("backoff", "backoff_max", "timeout") and isinstance(val, str):
        try:
            val = parse_duration(val)
        except ValueError as e:
            raise OutputError(f"{where}: {key}: {e}") from None
    if isinstance(val, bool) or not isinstance(val, (int, float)) or val < lo or (kind is int and val != int(val)):
        raise OutputError(f"{where}: {key} must be a number >= {lo}, not {val!r}")
    return kind(val)


def _strings(spec: dict, key: str, where: str) -> list[str]:
    val = spec.get(key, [])
    if isinstance(val, str):
        val = [v.strip() for v in val.split(",") if v.strip()]
    if not isinstance(val, list) or not all(isinstance(v, str) and v for v in val):
        raise OutputError(f"{where}: {key} must be a list of names, not {val!r}")
    return val


def parse_options(spec: dict, where: str, own: frozenset[str]) -> Options:
    unknown = set(spec) - _COMMON - own
    if unknown:
        raise OutputError(f"{where}: unknown keys: {', '.join(sorted(map(str, unknown)))}")
    sev = spec.get("min_severity", "low")
    sev_num = 0 if sev in ("", None) else SEVERITIES.get(str(sev).lower())
    if sev_num is None:
        raise OutputError(f"{where}: min_severity {sev!r}: expected one of {', '.join(SEVERITIES)}")
    kinds = _strings(spec, "kinds", where) or list(DEFAULT_KINDS)
    ns = spec.get("namespace", "")
    if not isinstance(ns, str):
        raise OutputError(f"{where}: namespace must be a string")
    try:  # the collector's own filter, as Query and Subscribe take it: one meaning of "kind" everywhere
        flt = EventFilter.from_pb(cpb.Filter(kinds=kinds, min_severity=sev_num, namespace=ns,
                                             nodes=_strings(spec, "nodes", where),
                                             rules=_strings(spec, "rules", where)))
    except FilterError as e:
        raise OutputError(f"{where}: {e}") from None
    name = spec.get("name", where)
    if not isinstance(name, str) or not name:
        raise OutputError(f"{where}: name must be a non-empty string")
    return Options(
        name=name, filter=flt,
        queue=_number(spec, "queue", 10000, where, 1, int),
        retries=_number(spec, "retries", 3, where, 0, int),
        backoff=_number(spec, "backoff", 0.5, where, 0.001),
        backoff_max=_number(spec, "backoff_max", 30.0, where, 0.001),
        timeout=_number(spec, "timeout", 5.0, where, 0.001),
        batch=_number(spec, "batch", 100, where, 1, int),
    )


def required_str(spec: dict, key: str, where: str) -> str:
    val = spec.get(key)
    if not isinstance(val, str) or not val:
        raise OutputError(f"{where}: {key} is required (a string)")
    return val


class Output:
    """One configured output. Subclasses set `type`, `own_keys`, and implement `send(items)`: items is
    a list of (id, record); send takes what it delivered off the front of items (all of them on
    success; a retry resends the rest only), raises SendError on failure, and returns early, items
    left, once `abandoned` (stop() gave up waiting)."""

    type: ClassVar[str] = ""
    own_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: dict, where: str):
        self.opts = parse_options(spec, where, self.own_keys)
        self.name = self.opts.name
        self._prefixes = (*self.opts.filter.names, *self.opts.filter.families) or ("",)
        self._items: collections.deque = collections.deque()  # (id, body)
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._abandon = False
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.retried = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._logged = -_LOG_EVERY_S  # the first drop is logged at once
        self._count_lock = threading.Lock()
        self._unlogged = 0

    # -- the writer's side ---------------------------------------------------------------------------

    def offer(self, published: list) -> None:
        """After a commit: [(id, filter row, body)]. Never blocks for longer than a lock's hold."""
        # Two cheap checks first (most of a commit is kernel events, of other kinds and info), then the
        # whole filter; both are implied by it. str.startswith takes a tuple: exact names are prefixes too.
        flt = self.opts.filter
        match, sev, kinds = flt.match, flt.min_severity, self._prefixes
        items = [(i, body) for i, row, body in published
                 if row[NAME].startswith(kinds) and row[SEVERITY] >= sev and match(row)]
        if not items:
            return
        with self._cond:
            room = self.opts.queue - len(self._items)
            if room < len(items):
                lost = len(items) - max(room, 0)
                items = items[:max(room, 0)]
                self._drop("queue_full", lost, "queue full")
            if items:
                self._items.extend(items)
                self._cond.notify()

    # -- the output's thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"nw-output-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to `timeout` s, then drop (and count) the rest."""
        self.begin_stop()
        self.finish_stop(time.monotonic() + timeout)

    def begin_stop(self) -> None:
        """Take nothing more; send what is queued (stop_all: every output drains at once)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def finish_stop(self, deadline: float) -> None:
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0))
            if self._thread.is_alive():  # a receiver that hangs: give up on it
                with self._cond:
                    self._abandon = True
                    self._cond.notify_all()
                self._thread.join(self.opts.timeout + 1)
        with self._cond:
            if self._items:
                self._drop("stopped", len(self._items), "collector stopping")
                self._items.clear()
        self.close()

    def close(self) -> None:
        """Release connections; the thread is gone."""

    @property
    def abandoned(self) -> bool:
        return self._abandon

    def queued(self) -> int:
        return len(self._items)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if self._abandon or (self._stopping and not self._items):
                    return
                n = min(len(self._items), self.opts.batch)
                taken = [self._items.popleft() for _ in range(n)]
            self._deliver(taken)

    def _deliver(self, taken: list) -> None:
        items = []
        for i, body in taken:
            try:
                items.append((i, to_record(pb.Event.FromString(body))))
            except Exception as e:  # a body the store took is an Event; this is a backstop, not a path
                self._drop("invalid", 1, f"undecodable event {i}: {e}")
        if not items:
            return
        delay, attempt = self.opts.backoff, 0
        while items:
            before = len(items)
            err: Exception | None = None
            try:
                self.send(items)
            except Exception as e:  # SendError; anything else is a formatting or client bug, which must not
                err = e  # end the thread
            self.sent += before - len(items)  # send() takes what it delivered off the front of items
            if err is None:
                if items:  # send() stopped early: stop() gave up on this receiver
                    self._drop("stopped", len(items), "collector stopping")
                return
            if isinstance(err, SendError) and not err.retry:  # refused for good: resending cannot help
                n = err.refused or len(items)
                self._drop("rejected", n, str(err))
                del items[:n]
                continue
            if len(items) < before:  # progress: the rest starts its retries afresh
                delay, attempt = self.opts.backoff, 0
            if attempt == self.opts.retries:
                self._drop("failed", len(items), f"{err} (after {attempt} retries)")
                return
            attempt += 1
            self.retried += 1
            with self._cond:  # a wait, not a sleep: stop() cuts it short
                if self._cond.wait_for(lambda: self._abandon, timeout=delay):
                    self._drop("stopped", len(items), "collector stopping")
                    return
            delay = min(delay * 2, self.opts.backoff_max)

    def _drop(self, reason: str, n: int, why: str) -> None:
        with self._count_lock:  # the writer (queue_full) and the output's thread both count
            self.dropped[reason] += n
            self._unlogged += n
            now = time.monotonic()
            if now - self._logged < _LOG_EVERY_S:  # one line per output per 10 s, with the count since the last
                return
            self._logged, unlogged, self._unlogged = now, self._unlogged, 0
        log.warning("output %s (%s): dropped %d events (%s): %s", self.name, self.type, unlogged, reason, why)

    def send(self, items: list) -> None:
        raise NotImplementedError


# -- what every output shows of a record -------------------------------------------------------------------

def title(rec: dict) -> str:
    """One line: what happened."""
    name = rec.get("event.name", "")
    if name == "alert":
        return rec.get("rule.name") or rec.get("rule.id") or "alert"
    if name == "image.verdict":
        return f"image {rec.get('image.verdict', '')}: {rec.get('container.image.name', '')}"
    if name.startswith("enforcement."):
        return f"{rec.get('enforcement.action', 'block')} at {rec.get('enforcement.point', '')}"
    return name


def detail(rec: dict) -> str:
    """Why: the alert's output, the verdict's or block's reason."""
    return str(rec.get("alert.output") or rec.get("image.reason") or rec.get("enforcement.reason")
               or rec.get("rule.description") or "")


def rule(rec: dict) -> str:
    return str(rec.get("rule.id") or rec.get("rule.name") or "")


def action(rec: dict) -> str:
    """alert, block, kill, deny, ...: what the agent did."""
    return str(rec.get("enforcement.action") or rec.get("alert.action") or rec.get("image.verdict") or "")


# (label, record key) of the fields a message shows, in order
KEY_FIELDS = (
    ("severity", "event.severity"), ("node", "host.name"), ("namespace", "k8s.namespace.name"),
    ("pod", "k8s.pod.name"), ("container", "container.name"), ("image", "container.image.name"),
    ("process", "process.executable.path"), ("command", "process.command_line"),
)
