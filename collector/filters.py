"""One event filter, two forms: SQL for Query (so SQLite can use its indexes) and a Python
predicate for Subscribe (applied to events as they are stored). Both follow the Filter message
in proto/nodewarden/v1/collector.proto; tests check that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from nwwire.schema import kind_names

# What a stored row exposes to filters; the writer builds one per event (collector/store.py).
# (ts, name, severity, container, pod, namespace, text, node, agent_id, rule, verdict)
TS, NAME, SEVERITY, CONTAINER, POD, NAMESPACE, TEXT, NODE, AGENT, RULE, VERDICT = range(11)

_MAX_TERMS = 64  # kinds, nodes, rules or verdicts in one filter
_MAX_TEXT = 1024


class FilterError(ValueError):
    """A filter the collector refuses (reported as INVALID_ARGUMENT)."""


def _prefix_end(prefix: str) -> str:
    # Everything that starts with `prefix` sorts below this (SQLite compares BINARY, UTF-8).
    return prefix + "\U0010ffff"


@dataclass(frozen=True)
class EventFilter:
    since: int = 0
    until: int = 0
    names: tuple[str, ...] = ()  # exact event.name values
    families: tuple[str, ...] = ()  # "file." matches file.*
    nodes: tuple[str, ...] = ()
    container: str = ""
    pod: str = ""
    namespace: str = ""
    min_severity: int = 0
    text: str = ""
    agent_id: str = ""
    rules: tuple[str, ...] = ()  # rule.id of alerts
    verdicts: tuple[str, ...] = ()  # image.verdict of verdicts and enforcement

    @classmethod
    def from_pb(cls, f) -> EventFilter:
        for what, terms in (("kinds", f.kinds), ("nodes", f.nodes), ("rules", f.rules), ("verdicts", f.verdicts)):
            if len(terms) > _MAX_TERMS:
                raise FilterError(f"at most {_MAX_TERMS} {what} per filter")
        if len(f.text) > _MAX_TEXT:
            raise FilterError(f"text filter longer than {_MAX_TEXT} characters")
        if f.since_unix_nano < 0 or f.until_unix_nano < 0:
            raise FilterError("negative time bound")
        names, families = _kinds(f.kinds)
        return cls(
            since=f.since_unix_nano,
            until=f.until_unix_nano,
            names=names,
            families=families,
            nodes=tuple(n for n in f.nodes if n),
            container=f.container,
            pod=f.pod,
            namespace=f.namespace,
            min_severity=int(f.min_severity),
            text=f.text,
            agent_id=f.agent_id,
            rules=tuple(r for r in f.rules if r),
            verdicts=tuple(v for v in f.verdicts if v),
        )

    @cached_property
    def empty(self) -> bool:
        return self == EventFilter()

    def where(self) -> tuple[str, list]:
        """A SQL condition over the events table, and its parameters."""
        terms: list[str] = []
        params: list = []
        if self.since:
            terms.append("ts >= ?")
            params.append(self.since)
        if self.until:
            terms.append("ts < ?")
            params.append(self.until)
        kind_terms = []
        if self.names:
            kind_terms.append(f"name IN ({','.join('?' * len(self.names))})")
            params.extend(self.names)
        for fam in self.families:
            # A range, not GLOB/LIKE: the planner always turns it into an index range.
            kind_terms.append("(name >= ? AND name < ?)")
            params.extend((fam, _prefix_end(fam)))
        if kind_terms:
            terms.append("(" + " OR ".join(kind_terms) + ")")
        if self.nodes:
            terms.append(f"stream IN (SELECT id FROM streams WHERE node IN ({','.join('?' * len(self.nodes))}))")
            params.extend(self.nodes)
        if self.agent_id:
            terms.append("stream IN (SELECT id FROM streams WHERE agent_id = ?)")
            params.append(self.agent_id)
        if self.container:
            terms.append("container >= ? AND container < ?")
            params.extend((self.container, _prefix_end(self.container)))
        if self.namespace:
            terms.append("namespace = ?")
            params.append(self.namespace)
        if self.pod:
            terms.append("pod = ?")
            params.append(self.pod)
        if self.min_severity:
            terms.append("severity >= ?")
            params.append(self.min_severity)
        for column, values in (("rule", self.rules), ("verdict", self.verdicts)):
            if values:  # the few tagged events (alerts, verdicts, blocks): collector/store.py's tags table
                terms.append(f"id IN (SELECT id FROM tags WHERE {column} IN ({','.join('?' * len(values))}))")
                params.extend(values)
        if self.text:
            esc = self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            terms.append("text LIKE ? ESCAPE '\\'")
            params.append(f"%{esc}%")
        return (" AND ".join(terms) or "1"), params

    def match(self, row: tuple) -> bool:
        """The same condition over one writer row (see the column order above)."""
        ts = row[TS]
        if self.since and ts < self.since:
            return False
        if self.until and ts >= self.until:
            return False
        if self.names or self.families:
            name = row[NAME]
            if name not in self.names and not any(name.startswith(f) for f in self.families):
                return False
        if self.nodes and row[NODE] not in self.nodes:
            return False
        if self.agent_id and row[AGENT] != self.agent_id:
            return False
        if self.container and not (row[CONTAINER] or "").startswith(self.container):
            return False
        if self.namespace and row[NAMESPACE] != self.namespace:
            return False
        if self.pod and row[POD] != self.pod:
            return False
        if self.min_severity and row[SEVERITY] < self.min_severity:
            return False
        if self.rules and row[RULE] not in self.rules:
            return False
        if self.verdicts and row[VERDICT] not in self.verdicts:
            return False
        # SQLite's LIKE folds ASCII case only; so does this.
        return not self.text or _ascii_lower(self.text) in _ascii_lower(row[TEXT] or "")


def _kinds(kinds) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(exact names, family prefixes) for the kinds of a filter: "file.open" is a name; "file.*" a
    family; a word without a dot is the name itself ("alert"), its family ("file" -> "file.") and,
    when it names an Event.kind member, that member's event names ("verdict" -> image.verdict)."""
    names: list[str] = []
    families: list[str] = []
    for k in kinds:
        k = k.strip()
        if not k:
            raise FilterError("empty kind")
        if k.endswith(".*"):
            families.append(k[:-1])
        elif "." in k:
            names.append(k)
        else:
            exact, fams = kind_names(k)
            names += [k, *exact]
            families += [k + ".", *fams]
    return tuple(dict.fromkeys(names)), tuple(dict.fromkeys(families))


_LOWER = {i: i + 32 for i in range(65, 91)}


def _ascii_lower(s: str) -> str:
    return s.translate(_LOWER)
