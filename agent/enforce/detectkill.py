"""Detection rules with `action: kill`: where each one kills, and the stage that kills from user space.

Where a kill happens:
- In the kernel, at exec, for the part of a rule the kernel can decide: beside tests that hold on every
  exec (`event.name = process.exec`, `evt.type in (execve, execveat)`, `evt.dir = <`) and a container
  test (`container.id != host`, `container.id exists`, or the rule's `scope: container`), one test or an
  `or` of tests of `process.name` (= or in: the new program's name, at most 15 bytes) and
  `process.executable.path` (=, in, startswith, pmatch without wildcards, glob with one trailing `*`: the
  path given to execve). Each such alternative becomes a deny_name / deny_path entry of the in-kernel
  exec rules (agent/enforce/execkill.py, KernelKill): SIGKILL before the program's first instruction,
  reported as enforcement.block at kernel.exec, rule.category detect. An entry implies the rule (it never
  kills what the rule would not match), so an `or` whose other alternatives the kernel cannot decide is
  split: those kill from user space. Anything else in the `and` (an exception, a `not`, a parent or
  argument test) leaves the whole rule to user space. Macros and lists expand as the compiler's do.
- In user space, everything else: a kill rule's match on any event of a live process (file, network,
  system events; an exec the kernel did not kill) SIGKILLs the event's process through a pidfd, after
  checking the pid was not reused (agent/enforce/userkill.py), reported at user.kill with the time from
  the event to the kill. The syscall that matched has completed by then: the kill stops what follows.
  A rule that can match only process.exit is refused at load: there is nothing left to kill.

KillStage wraps the pipeline's detector (same interface): alerts come from it as before, and the kill
rules run again in a detector of their own with folding and the rate limit off, so that an alert
folded into an earlier one or held back by the rate limit never spares a process. The kills run on the
pipeline's worker thread: pidfd_open, one read of /proc/<pid>/stat and pidfd_send_signal are
microseconds. The agent must run in the host's pid namespace (hostPID), as its own-pid filter needs.

Layer: above detect (it compiles detection conditions and builds a detector from the engine), below
outputs; tests/unit/test_layers.py ranks this module apart from the rest of agent/enforce.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from agent.detect import condition
from agent.detect import fields as F
from agent.detect.compare import ConditionError, has_wildcard
from agent.detect.engine import build
from agent.enforce.execkill import KernelKill
from agent.enforce.userkill import ProcessKiller
from agent.events import EnforcementEvent, Enriched, ExecEvent, ExitEvent
from agent.policy.rules import DetectSection, RuleSet, RuleSpec, Selection, default_section, selected
from agent.ratelog import RateLog
from agent.sensors.abi import Action
from agent.sensors.common import PREFIX_MAX

_EXEC = "process.exec"
_COMM_LEN = 15  # TASK_COMM_LEN - 1: an exec's process.name is never longer
_RECENT_MAX = 4096  # pids recently killed, so later events of the same dying process add no report
_MACRO_DEPTH = 64

log = logging.getLogger("nodewarden.enforce")


@dataclass(frozen=True)
class Placement:
    """Where one kill rule kills: `kernel` (its in-kernel entries, or None) and `user`: why (part of)
    it kills from user space, "" when the kernel decides all of it (user space still backs it up)."""

    rule_id: str
    kernel: KernelKill | None
    user: str


@dataclass
class KillSetup:
    """What `setup` made of a detect section: the detector for the pipeline (a KillStage, or the
    detector itself when no rule kills), the in-kernel entries, each rule's placement, and errors."""

    detector: object
    kernel: tuple[KernelKill, ...] = ()
    placements: tuple[Placement, ...] = ()
    errors: tuple[str, ...] = ()

    def describe(self) -> str:
        if not self.placements:
            return "no detection rule kills"
        k = sum(1 for p in self.placements if p.kernel is not None)
        u = sum(1 for p in self.placements if p.user)
        return f"{len(self.placements)} detection kill rules: {k} at exec in the kernel, {u} from user space"


def setup(detector, section: DetectSection | None, killer: ProcessKiller | None = None) -> KillSetup:
    """The kill rules of `section` (None: the bundled rules) around `detector`, built from the same
    section. Errors: file:line:col: rule ID: why, for kill rules that cannot kill anything."""
    section = _loaded(section)
    if section is None or not section.enabled or not getattr(detector, "enabled", False):
        return KillSetup(detector)
    rs = section.ruleset
    specs = [dataclasses.replace(r, enabled=True) for r in selected(section) if r.action == "kill"]
    if not specs:
        return KillSetup(detector)
    errors, placements, kept = [], [], []
    for spec in specs:
        why = _refused(spec, rs)
        if why:
            errors.append(f"{spec.origin}: rule {spec.id}: {why}")
            continue
        kept.append(spec)
        placements.append(place(spec, rs.macros, rs.lists))
    # Folding and the rate limit off: every match kills. Errors of its own are the main detector's too.
    kills, _errors = build(dataclasses.replace(section, ruleset=RuleSet(tuple(kept), rs.lists, rs.macros),
                                               enable=Selection(), disable=Selection(), fold_window=0.0,
                                               rate_limit=0.0))
    kernel = tuple(p.kernel for p in placements if p.kernel is not None)
    stage = KillStage(detector, kills, killer or ProcessKiller()) if kept else detector
    return KillSetup(stage, kernel, tuple(placements), tuple(errors))


def _loaded(section: DetectSection | None) -> DetectSection | None:
    """The section with its rules (None or not loaded: the bundled rules, as engine.build reads them)."""
    if section is not None and section.ruleset is not None:
        return section
    base = section or DetectSection()
    if not base.enabled:
        return None
    loaded, _errors = default_section()
    return dataclasses.replace(loaded, enable=base.enable, disable=base.disable)


def _refused(spec: RuleSpec, rs: RuleSet) -> str:
    try:
        kinds = condition.compile(spec.full_condition, rs.macros, rs.lists).kinds
    except (ConditionError, F.FieldError):
        return ""  # the detector reports it (or skips a Falco rule it cannot run)
    if kinds and kinds <= {"process.exit"}:
        return "action kill on a rule that matches only process.exit: the process is gone by then"
    return ""


# -- what the kernel can decide ------------------------------------------------------------------------


class _NotKernel(Exception):
    """The condition's shape keeps the rule out of the kernel; str() says why."""


def place(spec: RuleSpec, macros: dict, lists: dict) -> Placement:
    """Where a kill rule kills (see the module docstring)."""
    try:
        return _place(spec, macros, lists)
    except _NotKernel as e:
        return Placement(spec.id, None, str(e))
    except ConditionError as e:
        return Placement(spec.id, None, f"condition: {e.message}")


def _place(spec: RuleSpec, macros: dict, lists: dict) -> Placement:
    scope, target = spec.scope, None
    for node in _flat(condition.parse(spec.full_condition), "and", macros, ()):
        what = _conjunct(node, lists)
        if what == "exec":
            continue
        if what == "container":
            if scope == "host":
                raise _NotKernel("a host rule with a container test: it never matches")
            scope = "container"
        elif target is None:
            target = node
        else:
            raise _NotKernel("more than one test beside the event kind and a container test")
    if target is None:
        raise _NotKernel("no process.name or process.executable.path test: it would kill every exec")
    names, paths, prefixes, left = [], [], [], 0
    for alt in _flat(target, "or", macros, ()):
        got = _alternative(alt, lists)
        if got is None:
            left += 1
            continue
        names += got[0]
        paths += got[1]
        prefixes += got[2]
    if not (names or paths or prefixes):
        raise _NotKernel("no test the kernel can decide (process.name =/in, process.executable.path "
                         "=/in/startswith/pmatch)")
    kernel = KernelKill(spec.id, scope, *(tuple(dict.fromkeys(x)) for x in (names, paths, prefixes)))
    return Placement(spec.id, kernel, f"{left} alternatives the kernel cannot decide" if left else "")


def _flat(node, op: str, macros: dict, stack: tuple[str, ...]) -> list:
    """The items of an `and` (or an `or`), nested ones and macros expanded."""
    if isinstance(node, condition.BoolOp) and node.op == op:
        return [x for item in node.items for x in _flat(item, op, macros, stack)]
    if isinstance(node, condition.Ref) and node.name in macros:
        if node.name in stack or len(stack) > _MACRO_DEPTH:
            raise _NotKernel(f"macro {node.name!r} refers to itself")
        return _flat(condition.parse(macros[node.name]), op, macros, (*stack, node.name))
    return [node]


def _field(name: str) -> str:
    try:
        return F.resolve(name).name
    except F.FieldError:
        return ""


def _conjunct(node, lists: dict) -> str:
    """"exec": holds on every exec; "container": holds exactly in containers; "": anything else.
    _NotKernel when it never holds on an exec."""
    if not isinstance(node, condition.Cmp):
        return ""
    field = _field(node.field)
    if field == "event.name" and node.op in ("=", "in", "intersects", "!="):
        names = {F.EVENT_TYPES.get(v, v) if node.field == "evt.type" else v for v in _values(node, lists)}
        if (_EXEC in names) != (node.op == "!="):
            return "exec"
        raise _NotKernel("it never matches an exec")
    if field == "syscall.direction" and node.op == "=" and _values(node, lists) == ["<"]:
        return "exec"  # every event of ours is reported after the syscall returned
    if field in ("container.id", "falco.container.id"):
        if (node.op == "!=" and _values(node, lists) == ["host"]) or (node.op == "exists" and field == "container.id"):
            return "container"
    return ""


def _alternative(node, lists: dict) -> tuple[list, list, list] | None:
    """(names, exact paths, prefixes) in bytes of one alternative, or None when the kernel cannot decide it."""
    if not isinstance(node, condition.Cmp):
        return None
    field, values = _field(node.field), _values(node, lists)
    if not values or any("\\" in v or "\0" in v for v in values):
        return None  # a backslash in a value stands for the record's escaping, not the kernel's bytes
    raw = [v.encode("utf-8", "surrogatepass") for v in values]
    if field == "process.name" and node.op in ("=", "in"):
        if all(0 < len(b) <= _COMM_LEN and b"/" not in b for b in raw):
            return raw, [], []
        return None  # longer than a comm, or with a '/': never an exec's name
    if field != "process.executable.path":
        return None
    if node.op in ("=", "in") and all(0 < len(b) < PREFIX_MAX for b in raw):
        return [], raw, []
    if node.op == "startswith" and 0 < len(raw[0]) <= PREFIX_MAX:
        return [], [], raw
    if node.op == "glob" and values[0].endswith("*") and not has_wildcard(values[0][:-1]) and len(raw[0]) > 1:
        return [], [], [raw[0][:-1]]  # glob's * crosses '/': a trailing one is a prefix
    if node.op == "pmatch" and not any(map(has_wildcard, values)):
        exact = [v.rstrip("/").encode() or b"/" for v in values]
        below = [v.rstrip("/").encode() + b"/" for v in values]
        if all(len(b) < PREFIX_MAX for b in below):
            return [], exact, below
    return None


def _values(node, lists: dict) -> list[str]:
    """A comparison's values, a list's name expanded (as the compiler does: only for in, intersects, pmatch)."""
    out: list[str] = []
    for v in node.values:
        if node.op in condition.LISTOPS and not v.quoted and v.text in lists:
            out += _expand(v.text, lists, ())
        else:
            out.append(v.text)
    return out


def _expand(name: str, lists: dict, seen: tuple[str, ...]) -> list[str]:
    if name in seen:
        raise _NotKernel(f"list {name!r} refers to itself")
    out: list[str] = []
    items = lists[name]
    for item in items if isinstance(items, list | tuple) else ():
        text = str(item).lower() if isinstance(item, bool) else str(item)
        if isinstance(item, str) and text in lists:
            out += _expand(text, lists, (*seen, name))
        elif len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            out.append(text[1:-1])  # an item with its own quotes is that string (condition._unquote)
        else:
            out.append(text)
    return out


# -- the stage -----------------------------------------------------------------------------------------


class KillStage:
    """The pipeline's detector with the kill rules' kills added: evaluate(en) returns the detector's
    alerts, then one enforcement.block (user.kill) per event a kill rule matched that the kernel had
    not killed. Everything else is the wrapped detector's."""

    def __init__(self, detector, kills, killer: ProcessKiller):
        self._det = detector
        self._kills = kills  # a Detector of the kill rules alone, folding and rate limit off
        self._killer = killer
        self._recent: OrderedDict[int, int] = OrderedDict()  # pid -> wall ns of the last kill attempt
        self.kill_counts: Counter[str] = Counter(dict.fromkeys(("killed", "failed", "kernel", "repeat"), 0))
        self._rlog = RateLog(log)

    def __getattr__(self, name):  # flush, drops, counters, result ... : the detector's
        return getattr(self._det, name)

    @property
    def enabled(self) -> bool:
        return self._det.enabled

    def evaluate(self, en: Enriched) -> list:
        alerts = self._det.evaluate(en)
        hits = self._kills.evaluate(en)
        if not hits:
            return alerts
        block = self._block(en, [a.rule_id for a in hits])
        return [*alerts, block] if block is not None else alerts

    def evaluate_batch(self, events: list[Enriched]) -> list[tuple[int, list]]:
        """evaluate() over a batch (the pipeline's way): each event's alerts, then its kill."""
        raised = dict(self._det.evaluate_batch(events))
        for i, hits in self._kills.evaluate_batch(events):
            block = self._block(events[i], [a.rule_id for a in hits])
            if block is not None:
                raised[i] = [*raised.get(i, ()), block]
        return sorted(raised.items(), key=lambda r: r[0])

    def _block(self, en: Enriched, ids: list[str]) -> EnforcementEvent | None:
        try:
            return self._kill(en, ids)
        except Exception as e:  # a stage never stops the pipeline: reported, counted, logged
            self.kill_counts["failed"] += 1
            self._rlog.error("kill", "user-space kill failed: %r", e)
            return self._event(en, ids, f"kill failed: {e!r}"[:300], time.time_ns())

    def _kill(self, en: Enriched, rule_ids: list[str]) -> EnforcementEvent | None:
        ev = en.event
        if isinstance(ev, ExitEvent):
            return None  # the process is gone (a rule of any kind matched its exit)
        if isinstance(ev, ExecEvent) and ev.action == Action.KILL:
            self.kill_counts["kernel"] += 1  # killed at exec; the pipeline reports it (kernel.exec)
            return None
        last = self._recent.get(ev.pid)
        if last is not None and ev.ts_ns <= last:  # an event from before this process's kill, still queued
            self.kill_counts["repeat"] += 1
            return None
        start = en.process.start_ns if en.process is not None and en.process.pid == ev.pid else 0
        outcome = self._killer.kill(ev.pid, ev.ts_ns, start)
        now = time.time_ns()
        self._remember(ev.pid, now)
        self.kill_counts["killed" if outcome == "killed" else "failed"] += 1
        return self._event(en, rule_ids, outcome, now)

    @staticmethod
    def _event(en: Enriched, rule_ids: list[str], outcome: str, now: int) -> EnforcementEvent:
        ev = en.event
        ids = ", ".join(dict.fromkeys(rule_ids))
        return EnforcementEvent(now, "user.kill", "kill", f"detection rule {ids} matched {ev.name}", outcome=outcome,
                                subject=en, duration_ms=max(0, now - ev.ts_ns) / 1e6, rule_name=rule_ids[0],
                                rule_category="detect")

    def _remember(self, pid: int, ns: int) -> None:
        self._recent[pid] = ns
        self._recent.move_to_end(pid)
        while len(self._recent) > _RECENT_MAX:
            self._recent.popitem(last=False)
