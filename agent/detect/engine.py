"""The detection engine: rules compiled once per load, indexed by event kind, judged per event.

`build(section)` compiles every selected rule of a DetectSection (agent/policy/rules.py) with the
condition compiler (agent/detect/condition.py) and returns a Detector, or the null object when
detection is off. An event meets only the rules whose condition can match its kind (`Compiled.kinds`;
None = any kind) and whose scope holds it (host: no container; container; both), through one
RuleIndex per scope (agent/detect/index.py: fields shared by rules read once). A match is an
AlertEvent with the event as its subject; a rule that raises on an event is no match (logged,
rate-limited) and the others still run.

Noise control, all of it counted:
- folding: an alert identical to one raised within `fold_window` seconds (same rule, container,
  executable and output fields) is not raised again; it is counted in `detect.folded` and, when its
  window ends (`flush`), one later alert carries `count` = how many were folded into it;
- rate limit: a bucket per rule of `rate_limit` alerts a second (5 s of burst); what overflows is
  counted in `detect.rate_limited` and per rule in `limited`.
The engine runs on the pipeline's worker thread only; a reload builds a new Detector and the
pipeline swaps the reference (one assignment: an event meets the old rules or the new, never half).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from agent.detect import native
from agent.events import EVENT_NAMES, AlertEvent, Enriched
from agent.policy.rules import DetectSection, RuleSpec, default_section, selected
from agent.ratelog import RateLog

log = logging.getLogger("nodewarden.detect")
_native = native.MODULE  # the compiled pre-condition (agent/detect/_prefilter.c), or None: the Python one

_FOLD_MAX = 10_000  # distinct alerts remembered for folding; beyond it alerts go out unfolded
_BURST_S = 5.0  # a rule's bucket holds this many seconds of its rate


class RulesError(Exception):
    """The rules do not compile; str() is one line per error (file:line:col: rule ID: why)."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class _Rule:
    spec: RuleSpec
    match: object  # Compiled.match
    getters: list  # (field name, getter) of the output fields
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]
    host_only: bool
    container_only: bool
    tokens: float = 0.0
    stamp: float = 0.0


@dataclass
class _Fold:
    until: float  # monotonic end of the window
    folded: int = 0
    last: Enriched | None = None
    rule: _Rule | None = None
    output: str = ""


@dataclass
class LoadResult:
    rules: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rule name, why it cannot run here)


class NullDetector:
    """Detection off: nothing is judged, nothing is counted."""

    enabled = False
    result = LoadResult()

    def evaluate(self, en: Enriched) -> list[AlertEvent]:
        return []

    def evaluate_batch(self, events: list[Enriched]) -> list[tuple[int, list[AlertEvent]]]:
        return []

    def flush(self, force: bool = False) -> list[AlertEvent]:
        return []

    def drops(self) -> dict[str, int]:
        return {}

    def counters(self) -> tuple[dict, dict]:
        return {}, {}


class Detector:
    enabled = True

    def __init__(self, rules: list[_Rule], fold_window: float, rate_limit: float, result: LoadResult):
        self.rules = rules
        self.result = result
        self.fold_window = fold_window
        self.rate_limit = rate_limit
        # (event name, in a container) -> the rules to run, scope applied; the same for an event name
        # `index` did not see. Evaluations are counted per bucket (one increment per event, not per rule)
        # and summed per rule when read.
        self._index: dict[tuple[str, bool], tuple[_Rule, ...]] = {}
        self._any: dict[bool, tuple[_Rule, ...]] = {False: (), True: ()}
        self._hits: dict[tuple, int] = {}
        # host events, container events -> (RuleIndex over the rules in scope, those rules): the index
        # (agent/detect/index.py) reads a field shared by several rules once per event
        self._ridx: dict[bool, tuple] = {}
        self._tables: tuple[dict, dict] = ({}, {})
        self._memo = None
        self.alerts: Counter[tuple[str, str]] = Counter()  # (rule id, severity) -> alerts raised
        self.limited: Counter[str] = Counter()
        self._drops = Counter({"detect.folded": 0, "detect.rate_limited": 0})
        self._folds: dict[tuple, _Fold] = {}
        self._rlog = RateLog(log)

    def index(self, compiled: dict[str, object]) -> None:
        """Each event name -> the rules that can match it, in file order; a RuleIndex per scope."""
        from agent.detect.index import RuleIndex

        kinds_of = {rid: c.kinds for rid, c in compiled.items()}
        names = set(EVENT_NAMES.values())
        for kinds in kinds_of.values():
            names |= set(kinds or ())
        for name in names:
            for boxed in (False, True):
                self._index[(name, boxed)] = tuple(
                    r for r in self.rules if (kinds_of[r.spec.id] is None or name in kinds_of[r.spec.id])
                    and not (r.host_only and boxed) and not (r.container_only and not boxed))
        for boxed in (False, True):
            self._any[boxed] = tuple(r for r in self.rules if kinds_of[r.spec.id] is None
                                     and not (r.host_only and boxed) and not (r.container_only and not boxed))
        for boxed in (False, True):
            scoped = tuple(r for r in self.rules
                           if not (r.host_only and boxed) and not (r.container_only and not boxed))
            self._ridx[boxed] = (RuleIndex([compiled[r.spec.id] for r in scoped]), scoped)
        self._hits = dict.fromkeys(self._index, 0)
        self._hits.update({("", False): 0, ("", True): 0})
        # The per-event path: (in a container?) -> op -> (the kind's node, the rules in scope, its
        # evaluation count, a one-cell list). Counting in a plain int cell costs one add per event; the
        # counts are read into per-rule totals only when asked (evaluations).
        self._cells: dict[tuple[str, bool], list[int]] = {}
        self._by_op: dict[bool, dict] = {}
        tables: list[dict] = [{}, {}]  # host, container: op -> pre-condition tests (_prefilter.c)
        for boxed in (False, True):
            ridx, scoped = self._ridx[boxed]
            table, tests = {}, {}
            for op, name in EVENT_NAMES.items():
                if not self._index.get((name, boxed)):
                    continue
                node = ridx.node(op) or _no_match  # rules of this kind that cannot hold on it: counted
                cell = self._cells.setdefault((name, boxed), [0])
                table[op] = (node, scoped, cell, ridx.prefilter(op) if node is not _no_match else None)
                # the compiled select's: the kind's (reads, tests), no test when no rule can hold on it, None:
                # no pre-condition
                tests[op] = ridx.prefilter_spec(op) if node is not _no_match else ((), ())
            self._by_op[boxed] = table
            tables[boxed] = tests
        self._tables = tuple(tables)
        # the compiled select's memo of each kind's results by the values its tests read (_prefilter.c):
        # made for these tables, so a reload's new tables get a new one
        self._memo = _native.memo(self._tables) if _native is not None else None

    # -- per event -------------------------------------------------------------------------------

    def evaluate(self, en: Enriched) -> list[AlertEvent]:
        """The alerts an event raises. Hot: one dict lookup by op picks the kind's RuleIndex node."""
        entry = self._by_op[en.container is not None].get(en.event.op)
        if entry is None:
            return []
        node, scoped, cell, _ = entry
        cell[0] += 1
        out: list[int] = []
        try:
            node(en, out)
        except Exception:  # a rule that raised: judge rule by rule, so the others still run
            key = (en.event.name, en.container is not None)
            return self._judged(self._one_by_one(self._index.get(key) or self._any[key[1]], en), en)
        if not out:
            return out  # an empty list of alerts
        if len(out) > 1:
            out = sorted(set(out))  # a rule reached by two prefixes (or both halves of an or) counts once
        return self._judged([scoped[i] for i in out], en)

    def evaluate_batch(self, events: list[Enriched]) -> list[tuple[int, list[AlertEvent]]]:
        """evaluate() over a batch: (position in `events`, its alerts) for each event that raised any,
        in order. The conditions are pure, so they run grouped by kind (one node over all the batch's
        opens, then its renames, ...: its code and tables stay warm); what has state (folding, rate
        limits, counts) then runs in event order, as evaluate() would have. Before a kind's node, its
        pre-condition (RuleIndex.prefilter) drops the events no rule of the kind can match: on
        bench/pipeline.py's mix most of them, for a fraction of the node's cost."""
        by_op = self._by_op
        if _native is not None and type(events) is list:
            try:  # grouped and pre-filtered in C: [(boxed, op, events of the kind, kept positions, _)]
                selected = _native.select(events, self._tables, self._memo)
            except Exception:  # (an event without an op: the Python path reports it as it always did)
                selected = self._select(events)
        else:
            selected = self._select(events)
        found: list[tuple[int, list[_Rule]]] = []
        for boxed, op, n, where, _ in selected:
            if not n:
                continue  # a kind no rule meets
            node, scoped, cell, _ = by_op[boxed][op]
            cell[0] += n
            out: list[int] = []  # shared: an event's matches are what it appended
            for i in where:
                en = events[i]
                try:
                    node(en, out)
                except Exception:  # a rule that raised: judge rule by rule, so the others still run
                    out.clear()
                    key = (en.event.name, boxed)
                    hits = self._one_by_one(self._index.get(key) or self._any[boxed], en)
                    if hits:
                        found.append((i, hits))
                    continue
                if out:
                    found.append((i, [scoped[j] for j in (sorted(set(out)) if len(out) > 1 else out)]))
                    out = []
        if not found:
            return []
        found.sort(key=lambda f: f[0])
        return [(i, alerts) for i, hits in found if (alerts := self._judged(hits, events[i]))]

    def _select(self, events: list[Enriched]) -> list[tuple]:
        """What _prefilter.c's select gives, in Python: the batch grouped by (in a container?, op) in
        the order the groups first appear, each group's count and the positions its kind's
        pre-condition (RuleIndex.prefilter) keeps: the events no rule of the kind can match skip the node."""
        groups: dict[tuple, list[int]] = {}
        for i, en in enumerate(events):
            key = (en.container is not None, en.event.op)
            g = groups.get(key)
            if g is None:
                groups[key] = [i]
            else:
                g.append(i)
        out = []
        for (boxed, op), where in groups.items():
            entry = self._by_op[boxed].get(op)
            if entry is None:
                continue
            pre = entry[3]
            out.append((boxed, op, len(where), where if pre is None else pre(events, where), None))
        return out

    def _judged(self, hits: list[_Rule], en: Enriched) -> list[AlertEvent]:
        return [a for r in hits if (a := self._raise(r, en)) is not None]

    def _one_by_one(self, rules: tuple[_Rule, ...], en: Enriched) -> list[_Rule]:
        hits = []
        for r in rules:
            try:
                if r.match(en):
                    hits.append(r)
            except Exception as e:  # a field that cannot be read on this event: no match, logged
                self._rlog.warning(f"rule:{r.spec.id}", "rule %s: evaluation failed (no match): %r", r.spec.id, e)
        return hits

    @property
    def evaluations(self) -> Counter[str]:
        """Events each rule was evaluated on (per rule id)."""
        out: Counter[str] = Counter()
        hits = dict(self._hits)
        for key, cell in self._cells.items():
            hits[key] = hits.get(key, 0) + cell[0]
        for key, n in hits.items():
            if n:
                for r in (self._index.get(key) if key[0] else self._any[key[1]]) or ():
                    out[r.spec.id] += n
        return out

    def _raise(self, r: _Rule, en: Enriched) -> AlertEvent | None:
        output = _output(r, en)
        c, p = en.container, en.process
        key = (r.spec.id, c.id if c else "", p.exe if p else en.event.comm, output)
        now = time.monotonic()
        fold = self._folds.get(key)
        if fold is not None and now < fold.until:
            fold.folded += 1
            fold.last = en
            self._drops["detect.folded"] += 1
            return None
        if not self._take(r, now):
            return None
        if self.fold_window > 0 and (len(self._folds) < _FOLD_MAX or self._expire(now)):
            self._folds[key] = _Fold(now + self.fold_window, rule=r, output=output)
        return self._alert(r, en, output, 1)

    def _take(self, r: _Rule, now: float) -> bool:
        if self.rate_limit <= 0:
            return True
        cap = self.rate_limit * _BURST_S
        r.tokens = min(cap, r.tokens + (now - r.stamp) * self.rate_limit) if r.stamp else cap
        r.stamp = now
        if r.tokens < 1.0:
            self.limited[r.spec.id] += 1
            self._drops["detect.rate_limited"] += 1
            return False
        r.tokens -= 1.0
        return True

    def _alert(self, r: _Rule, en: Enriched, output: str, count: int) -> AlertEvent:
        s = r.spec
        self.alerts[(s.id, s.severity.label)] += 1
        return AlertEvent(en.event.ts_ns, s.id, s.name, s.description, s.severity, r.tactics, r.techniques,
                          subject=en, output=output, count=count, action=s.action)

    # -- folding windows ---------------------------------------------------------------------------

    def _expire(self, now: float) -> bool:
        """Forget ended windows without pending folds; True when there is room again."""
        for key in [k for k, f in self._folds.items() if now >= f.until and not f.folded]:
            del self._folds[key]
        return len(self._folds) < _FOLD_MAX

    def flush(self, force: bool = False) -> list[AlertEvent]:
        """Alerts that report what their window folded (count = folded alerts); `force`: every window."""
        now = time.monotonic()
        out = []
        for key in [k for k, f in self._folds.items() if force or now >= f.until]:
            f = self._folds.pop(key)
            if f.folded and f.last is not None:
                out.append(self._alert(f.rule, f.last, f.output, f.folded))
        return out

    def drops(self) -> dict[str, int]:
        return dict(self._drops)

    def counters(self) -> tuple[dict, dict]:
        """(evaluations per rule, alerts per (rule, severity)) since the detector was built."""
        return dict(self.evaluations), dict(self.alerts)


def _no_match(en: Enriched, out: list) -> None:
    pass


def _output(r: _Rule, en: Enriched) -> str:
    """Ours: `field=value ...` of the rule's output fields. Falco's: its format string with each
    %field replaced by the value, <NA> where the event has none or we do not have the field (as Falco)."""
    values = {}
    for name, get in r.getters:
        try:
            val = get(en)
        except Exception:
            val = None
        if isinstance(val, list | tuple):
            val = ",".join(map(str, val))
        values[name] = "<NA>" if val is None else str(val)
    fmt = r.spec.output_format
    if fmt and not r.spec.output:
        return _FALCO_FIELD.sub(lambda m: values.get(m.group(1), "<NA>"), fmt)
    return " ".join(f"{name}={'' if v == '<NA>' else v}" for name, v in values.items())


# -- building ------------------------------------------------------------------------------------------

_TACTICS = ("reconnaissance", "resource_development", "initial_access", "execution", "persistence",
            "privilege_escalation", "defense_evasion", "credential_access", "discovery", "lateral_movement",
            "collection", "command_and_control", "exfiltration", "impact")
_TECHNIQUE = re.compile(r"^T\d{4}(?:\.\d{3})?$")
_FALCO_FIELD = re.compile(r"%([A-Za-z_][\w.]*(?:\[[^\]]*\])?)")


def build(section: DetectSection | None) -> tuple[Detector | NullDetector, list[str]]:
    """(detector, errors) for a detect section; None: the bundled rules alone. With errors the
    detector is still the rules that compiled (the caller decides: a policy reload refuses it)."""
    errors: list[str] = []
    if section is None or section.ruleset is None:
        base = section or DetectSection()
        if not base.enabled:
            return NullDetector(), []
        loaded, errors = default_section()
        section = dataclasses.replace(loaded, enabled=True, fold_window=base.fold_window,
                                      rate_limit=base.rate_limit, enable=base.enable, disable=base.disable)
    if not section.enabled:
        return NullDetector(), errors
    from agent.detect import condition, fields

    rs = section.ruleset
    result = LoadResult(skipped=[(name, why) for name, why in rs.skipped])
    rules, kinds_of = [], {}
    for spec in selected(section):
        try:
            compiled = condition.compile(spec.full_condition, rs.macros, rs.lists)
            getters = _getters(spec, fields)
        except (condition.ConditionError, fields.FieldError) as e:
            why = _why(e)
            if spec.dialect == "falco":  # a rule of Falco's we cannot run: listed, the others run
                result.skipped.append((spec.name, why))
            else:
                errors.append(f"{_where(spec, e)}: rule {spec.id}: {why}")
            continue
        rules.append(_Rule(spec, compiled.match, getters, *_mitre(spec.tags),
                           host_only=spec.scope == "host", container_only=spec.scope == "container"))
        kinds_of[spec.id] = compiled
    result.rules = len(rules)
    det = Detector(rules, section.fold_window, section.rate_limit, result)
    det.index(kinds_of)  # the compiled conditions by rule id
    for name, why in result.skipped:
        log.warning("detection rule %r not loaded: %s", name, why)
    return det, errors


def _where(spec: RuleSpec, e: Exception) -> str:
    """file:line:col of the error: exact on a one-line condition, else where the condition starts."""
    offset = getattr(e, "offset", None)
    at = offset - 1 if isinstance(offset, int) else -1  # full_condition wraps the text in parentheses
    if not spec.cond_origin or "\n" in spec.condition or not 0 <= at < len(spec.condition):
        return spec.cond_origin or spec.origin
    name, line, col = spec.cond_origin.rsplit(":", 2)
    return f"{name}:{line}:{int(col) + at}"


def _why(e: Exception) -> str:
    offset = getattr(e, "offset", None)
    msg = getattr(e, "message", None) or str(e)
    return f"{msg} (at offset {offset} of the condition)" if isinstance(offset, int) else msg


def _getters(spec: RuleSpec, fields) -> list:
    if spec.output:
        return [(name, _getter(fields.resolve(name))) for name in spec.output]
    out = []
    for name in dict.fromkeys(_FALCO_FIELD.findall(spec.output_format)):
        try:
            out.append((name, _getter(fields.resolve(name))))
        except fields.FieldError:  # a Falco output field we do not have: <NA> in the output
            continue
    return out


def _getter(resolved):
    """The registry's accessor for a field, as a function of an Enriched."""
    for attr in ("get", "getter", "read"):
        fn = getattr(resolved, attr, None)
        if callable(fn):
            return fn
    if callable(resolved):
        return resolved
    raise TypeError(f"fields.resolve returned {type(resolved).__name__}, not an accessor")


def _mitre(tags: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tactic names, technique ids) from a rule's tags: `T1059.004`, `persistence`, Falco's
    `mitre_persistence`."""
    tactics, techniques = [], []
    for tag in tags:
        t = tag.strip()
        if _TECHNIQUE.match(t):
            techniques.append(t)
            continue
        name = t.lower().removeprefix("mitre_").replace("-", "_").replace(" ", "_")
        if name in _TACTICS:
            tactics.append(name)
    return tuple(tactics), tuple(techniques)
