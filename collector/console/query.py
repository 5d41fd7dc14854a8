"""What the console reads: protection events newest first, their counts over time, one event's detail.

The console's filter is the collector's EventFilter (the same SQL as `nodewarden events`) plus two
things the events table has no column for: the image (it lives in the body) and the triage status
(collector/status.py). Those two are applied to decoded rows, with a bound on how many rows one
request may look at (`scan_max`): a page that hits it says `partial` and gives the cursor to go on
from, so a rare image never makes one request scan the whole store.

Newest first on SQLite: one descending walk of the (name, ts) index per event name, merged. The
kind filter always names the few protection event names (alert, image.verdict, enforcement.block),
so the first page reads about `limit` index entries and rows whatever the store's size, where one
`ORDER BY ts DESC` over the OR of the names would let SQLite sort every protection event first.
A store other than SQLite (collector/store_pg.py) provides `query_recent(flt, limit, before)` and
`get_body(id)` itself.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from dataclasses import dataclass, replace

from collector.filters import EventFilter, FilterError, _prefix_end
from collector.units import parse_time
from nwwire.codec import rfc3339, to_record
from nwwire.genproto import load
from nwwire.schema import SEVERITY, SEVERITY_NAMES

pb = load("nodewarden.v1.event_pb2")
cpb = load("nodewarden.v1.collector_pb2")

# The console's kind words -> EventFilter kinds (nwwire.schema.kind_names expands the members).
KINDS = {"alert": "alert", "verdict": "verdict", "block": "enforcement"}
PROTECTION = tuple(KINDS.values())
_MAX_NAMES = 256  # event names one family may expand to
_MAX_PAGE = 1000
_MAX_MARKED = 100_000  # newest handled or ignored events a status filter looks at


@dataclass(frozen=True)
class ConsoleQuery:
    flt: EventFilter
    image: str = ""  # substring of container.image, case-insensitive
    status: str = ""  # "", unhandled, handled, ignored

    @property
    def post(self) -> bool:
        return bool(self.image or self.status)


def _one(params: dict, key: str) -> str:
    vals = params.get(key) or [""]
    return vals[-1].strip()


def _many(params: dict, key: str) -> list[str]:
    return [v.strip() for vals in params.get(key, []) for v in vals.split(",") if v.strip()]


def _time(text: str, what: str) -> int:
    if not text:
        return 0
    if text.isdigit() and len(text) > 12:  # ns since the epoch, as the page sends a chart's bucket
        return int(text)
    try:
        return parse_time(text)
    except ValueError as e:
        raise FilterError(f"{what}: {e}") from e


def parse_query(params: dict[str, list[str]]) -> ConsoleQuery:
    """The console's filter from URL parameters (parse_qs form). Raises FilterError."""
    from collector.status import STATUSES

    kinds = []
    for k in _many(params, "kind"):
        kinds.append(KINDS.get(k, k))  # a console word, or any event.name / family the CLI takes
    sev = _one(params, "severity")
    if sev and sev.lower() not in SEVERITY:
        raise FilterError(f"unknown severity {sev!r}")
    status = _one(params, "status")
    if status and status not in STATUSES:
        raise FilterError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
    image = _one(params, "image")
    if len(image) > 1024:
        raise FilterError("image filter longer than 1024 characters")
    f = cpb.Filter(kinds=kinds or list(PROTECTION), nodes=_many(params, "node"), rules=_many(params, "rule"),
                   verdicts=_many(params, "verdict"), namespace=_one(params, "namespace"),
                   pod=_one(params, "pod"), container=_one(params, "container"), text=_one(params, "text"),
                   min_severity=SEVERITY[sev.lower()] if sev else 0,
                   since_unix_nano=_time(_one(params, "since"), "since"),
                   until_unix_nano=_time(_one(params, "until"), "until"))
    return ConsoleQuery(EventFilter.from_pb(f), image=image, status=status)


def parse_cursor(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        ts, rowid = text.split(":")
        return int(ts), int(rowid)
    except ValueError as e:
        raise FilterError("bad cursor") from e


def cursor(ts: int, rowid: int) -> str:
    return f"{ts}:{rowid}"


# -- reading newest first --------------------------------------------------------------------------


class Reader:
    def __init__(self, store):
        from collector.store import Store

        self.store = store
        self._sqlite = isinstance(store, Store)

    def recent(self, flt: EventFilter, before: tuple[int, int] | None = None, limit: int = 1 << 62):
        """(id, ts, body) matching flt, newest first (ts, then id, descending), strictly before `before`."""
        if not self._sqlite:
            fn = getattr(self.store, "query_recent", None)
            if fn is None:
                raise FilterError(f"the console cannot read a {type(self.store).__name__} newest first "
                                  "(it has no query_recent)")
            yield from fn(flt, limit, before)
            return
        conn = sqlite3.connect(f"file:{self.store.path}?mode=ro", uri=True, check_same_thread=False, timeout=10)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            names = list(flt.names)
            for fam in flt.families:
                names += _names_in(conn, fam)
            rest = replace(flt, names=(), families=())
            where, params = rest.where()
            if before is not None:  # `ts <= ?` alone bounds the index range; the OR only trims the ties
                where += " AND ts <= ? AND (ts < ? OR id < ?)"
                params += [before[0], before[0], before[1]]
            sql = (f"SELECT id, ts, body FROM events WHERE name = ? AND {where} "
                   "ORDER BY ts DESC, id DESC LIMIT ?")
            walks = [_walk(conn, sql, [n, *params, limit]) for n in dict.fromkeys(names)]
            n = 0
            for row in heapq.merge(*walks, key=lambda r: (-r[1], -r[0])):
                yield row
                n += 1
                if n >= limit:
                    return
        finally:
            conn.close()

    def marked(self, flt: EventFilter, ids: list[int], before: tuple[int, int] | None = None):
        """(id, ts, body) of the events `ids` (those marked handled or ignored: few) matching flt, newest
        first: a status filter reads them by id instead of scanning for them."""
        rows = []
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            if self._sqlite:
                where, params = flt.where()
                sql = f"SELECT id, ts, body FROM events WHERE id IN ({','.join('?' * len(part))}) AND {where}"
                conn = sqlite3.connect(f"file:{self.store.path}?mode=ro", uri=True, timeout=10)
                try:
                    rows += conn.execute(sql, [*part, *params]).fetchall()
                finally:
                    conn.close()
            else:
                for rid in part:
                    body = self.body(rid)
                    if body is not None and _pb_match(flt, ev := pb.Event.FromString(body)):
                        rows.append((rid, ev.time_unix_nano, body))
        rows.sort(key=lambda r: (-r[1], -r[0]))
        for r in rows:
            if before is None or (r[1], r[0]) < before:
                yield r

    def body(self, rowid: int) -> bytes | None:
        store = self.store
        if self._sqlite:
            conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, timeout=10)
            try:
                row = conn.execute("SELECT body FROM events WHERE id = ?", (rowid,)).fetchone()
                return row[0] if row else None
            finally:
                conn.close()
        fn = getattr(store, "get_body", None)
        return fn(rowid) if fn is not None else None

    def explain(self, flt: EventFilter) -> str:
        """The plan of one name's walk (bench/console.py prints it)."""
        conn = sqlite3.connect(f"file:{self.store.path}?mode=ro", uri=True)
        try:
            where, params = replace(flt, names=(), families=()).where()
            plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM events WHERE name = ? AND {where} "
                                "ORDER BY ts DESC, id DESC LIMIT 50", ["alert", *params]).fetchall()
            return "; ".join(r[-1] for r in plan)
        finally:
            conn.close()


def _pb_match(flt: EventFilter, ev) -> bool:
    """EventFilter.match over a decoded Event (stores that read by id one at a time); the row's columns in
    collector/filters.py's order."""
    kind = ev.WhichOneof("kind")
    c, p = ev.container, ev.process
    rule = ev.alert.rule_id if kind == "alert" else None
    verdict = ev.verdict.verdict if kind == "verdict" else ev.enforcement.verdict if kind == "enforcement" else None
    text = "\n".join((p.executable, p.command_line, c.image, ev.alert.rule_name, ev.alert.output,
                      ev.verdict.reason, ev.enforcement.reason, ev.enforcement.rule_name))
    row = (ev.time_unix_nano, ev.name, ev.severity, c.id or None, c.pod_name or None, c.pod_namespace or None,
           text, ev.node, ev.agent_id, rule or None, verdict or None)
    return flt.match(row)


def _walk(conn, sql: str, params: list):
    cur = conn.execute(sql, params)
    while True:
        rows = cur.fetchmany(64)
        if not rows:
            return
        yield from rows


def _names_in(conn, family: str) -> list[str]:
    """The event names stored under `family` ("enforcement."), by hopping along the (name, ts)
    index: one O(log n) probe per distinct name, never a scan."""
    out: list[str] = []
    end = _prefix_end(family)
    row = conn.execute("SELECT name FROM events WHERE name >= ? AND name < ? ORDER BY name LIMIT 1",
                       (family, end)).fetchone()
    while row is not None and len(out) < _MAX_NAMES:
        out.append(row[0])
        row = conn.execute("SELECT name FROM events WHERE name > ? AND name < ? ORDER BY name LIMIT 1",
                           (row[0], end)).fetchone()
    return out


# -- what the page shows -----------------------------------------------------------------------------


def summary(rowid: int, ev) -> dict:
    """One list row: kind, action, severity, reason, where, what, when."""
    kind = ev.WhichOneof("kind")
    c, p = ev.container, ev.process
    rule = reason = action = ""
    if kind == "alert":
        a = ev.alert
        word, action, rule, reason = "alert", a.action or "alert", a.rule_id, a.rule_name or a.rule_id
    elif kind == "verdict":
        v = ev.verdict
        word, action, reason = "verdict", v.verdict, v.reason
    elif kind == "enforcement":
        e = ev.enforcement
        word, action, rule, reason = "block", e.action, e.rule_name, e.reason or e.rule_name
    else:
        word = ev.name
    return {
        "id": rowid, "time": rfc3339(ev.time_unix_nano), "ts": str(ev.time_unix_nano), "name": ev.name,
        "kind": word, "action": action, "severity": SEVERITY_NAMES.get(ev.severity, "unknown"), "rule": rule,
        "reason": reason[:300], "node": ev.node, "namespace": c.pod_namespace, "pod": c.pod_name,
        "container": c.name or c.id[:12], "container_id": c.id, "image": c.image,
        "process": p.executable or p.name, "command_line": p.command_line[:300], "status": "unhandled",
    }


def _post_ok(q: ConsoleQuery, ev, st: dict | None) -> bool:
    if q.image and q.image.lower() not in ev.container.image.lower():
        return False
    if q.status:
        return (st["status"] if st else "unhandled") == q.status
    return True


def _matching(reader: Reader, status, q: ConsoleQuery, before, scan_max: int, state: dict):
    """(id, ts, Event, status row) of matching rows, newest first, looking at no more than scan_max rows;
    state["scanned"], state["last"] (the cursor of the last row looked at) and state["exhausted"] follow it."""
    if q.status in ("handled", "ignored"):  # the few marked ones, read by id
        rows = reader.marked(q.flt, status.ids_with(q.status, _MAX_MARKED), before)
    else:
        rows = reader.recent(q.flt, before)
    batch = 256 if q.post else 64
    try:
        pending: list = []
        for rowid, ts, body in rows:
            if state["scanned"] >= scan_max:
                break
            state["scanned"] += 1
            state["last"] = (ts, rowid)
            pending.append((rowid, ts, pb.Event.FromString(body)))
            if len(pending) >= batch:
                yield from _checked(q, status, pending)
                pending = []
        else:
            state["exhausted"] = True
        yield from _checked(q, status, pending)
    finally:
        rows.close()


def _checked(q: ConsoleQuery, status, pending: list):
    sts = status.get_many([r[0] for r in pending]) if pending else {}  # statuses per batch, not per row
    for rowid, ts, ev in pending:
        st = sts.get(rowid)
        if _post_ok(q, ev, st):
            yield rowid, ts, ev, st


def page(reader: Reader, status, q: ConsoleQuery, limit: int, before: tuple[int, int] | None,
         scan_max: int = 20000) -> dict:
    """One page of summaries, newest first; `next`: the cursor of the page after it ("" at the end);
    `partial`: the scan bound was reached before the page filled (post-filters: image, status)."""
    limit = max(1, min(limit, _MAX_PAGE))
    t0 = time.perf_counter()
    state = {"scanned": 0, "last": None, "exhausted": False}
    out: list = []
    more = False
    it = _matching(reader, status, q, before, scan_max, state)
    try:
        for rowid, _ts, ev, st in it:
            if len(out) >= limit:
                more = True
                break
            s = summary(rowid, ev)
            if st:
                s["status"] = st["status"]
            out.append(s)
    finally:
        it.close()
    if more:
        nxt = cursor(int(out[-1]["ts"]), out[-1]["id"])
    elif not state["exhausted"] and state["last"] is not None:
        nxt = cursor(*state["last"])  # the bound was reached: go on from the last row looked at
    else:
        nxt = ""
    return {"events": out, "next": nxt, "partial": bool(nxt) and len(out) < limit, "scanned": state["scanned"],
            "took_ms": round((time.perf_counter() - t0) * 1000, 1)}


def detail(reader: Reader, status, rowid: int) -> dict | None:
    """One event: its summary, the flat record (raw JSON), process lineage, findings, status."""
    body = _body(reader, rowid)
    if body is None:
        return None
    ev = pb.Event.FromString(body)
    rec = to_record(ev)
    p = ev.process
    lineage = [{"role": "process", "pid": p.pid, "name": p.name, "executable": p.executable,
                "command_line": p.command_line}]
    if p.ppid or p.parent_executable:
        lineage.append({"role": "parent", "pid": p.ppid, "executable": p.parent_executable,
                        "command_line": p.parent_command_line})
    for i, (name, exe) in enumerate(zip(p.ancestor_names, p.ancestor_executables, strict=False)):
        if i == 0 and lineage[-1]["role"] == "parent" and exe == lineage[-1]["executable"]:
            lineage[-1]["name"] = name  # ancestors start with the parent: one line, not two
            continue
        lineage.append({"role": "ancestor", "name": name, "executable": exe})
    findings = rec.get("alert.findings") or rec.get("image.findings") or []
    st = status.get_many([rowid]).get(rowid)
    s = summary(rowid, ev)
    if st:
        s["status"] = st["status"]
    return {"summary": s, "record": rec, "lineage": lineage if (p.pid or p.executable) else [],
            "findings": findings, "status": st or {"status": "unhandled"}}


def _body(reader: Reader, rowid: int) -> bytes | None:
    return reader.body(rowid)


# -- counts over time ----------------------------------------------------------------------------------

_GROUPS = ("severity", "rule", "namespace", "image")
_TOP = 8


def counts(reader: Reader, status, q: ConsoleQuery, buckets: int = 48, scan_max: int = 200_000,
           now_ns: int | None = None) -> dict:
    """Events per time bucket, by severity, rule, namespace and image (the top few of each, the rest
    as "other"), over the filter's time range; without a `since`, from the oldest event counted (at
    most a week back). At most `scan_max` of the newest matching events are counted; `truncated` says
    when there were more."""
    now_ns = now_ns or time.time_ns()
    until = q.flt.until or now_ns
    flt = replace(q.flt, until=until, since=q.flt.since or until - 7 * 86400 * 10**9)
    buckets = max(4, min(buckets, 240))
    seen: list = []  # (ts, severity, rule, namespace, image)
    truncated = False
    t0 = time.perf_counter()
    pending: list = []

    def flush():
        sts = status.get_many([r[0] for r in pending]) if q.status else {}
        for rowid, ts, ev in pending:
            if not _post_ok(q, ev, sts.get(rowid)):
                continue
            kind = ev.WhichOneof("kind")
            rule = ev.alert.rule_id if kind == "alert" else ev.enforcement.rule_name if kind == "enforcement" else ""
            seen.append((ts, SEVERITY_NAMES.get(ev.severity, "unknown"), rule or "(none)",
                         ev.container.pod_namespace or "(none)", ev.container.image or "(none)"))
        pending.clear()

    rows = reader.recent(flt)
    scanned = 0
    try:
        for rowid, ts, body in rows:
            if scanned >= scan_max:
                truncated = True
                break
            scanned += 1
            pending.append((rowid, ts, pb.Event.FromString(body)))
            if len(pending) >= 512:
                flush()
        flush()
    finally:
        rows.close()
    since = q.flt.since or (min(until - 3600 * 10**9, seen[-1][0]) if seen else until - 86400 * 10**9)
    width = max(1, -(-(until - since) // buckets))
    total = [0] * buckets
    per: dict[str, dict[str, list[int]]] = {g: {} for g in _GROUPS}
    for ts, *keys in seen:
        b = min(buckets - 1, max(0, (ts - since) // width))
        total[b] += 1
        for g, key in zip(_GROUPS, keys, strict=True):
            series = per[g].get(key)
            if series is None:
                series = per[g][key] = [0] * buckets
            series[b] += 1
    out = {}
    for g, series in per.items():
        ranked = sorted(series.items(), key=lambda kv: -sum(kv[1]))
        top = dict(ranked[:_TOP])
        if len(ranked) > _TOP:
            other = [0] * buckets
            for _k, s in ranked[_TOP:]:
                other = [a + b for a, b in zip(other, s, strict=True)]
            top["other"] = other
        out[g] = top
    return {"since": str(since), "until": str(until), "since_time": rfc3339(since), "until_time": rfc3339(until),
            "bucket_ns": str(width), "buckets": buckets, "total": total, "by": out, "scanned": scanned,
            "truncated": truncated, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}


# -- export ---------------------------------------------------------------------------------------------

CSV_COLUMNS = ("id", "time", "kind", "action", "severity", "rule", "reason", "node", "namespace", "pod",
               "container", "container_id", "image", "process", "command_line", "status")


def export_rows(reader: Reader, status, q: ConsoleQuery, limit: int):
    """(summary, flat record) of up to `limit` matching events, newest first."""
    sent = 0
    before = None
    while sent < limit:
        state = {"scanned": 0, "last": None, "exhausted": False}
        it = _matching(reader, status, q, before, 50_000, state)
        try:
            for rowid, _ts, ev, st in it:
                s = summary(rowid, ev)
                rec = to_record(ev)
                rec["console.id"] = rowid
                s["status"] = rec["console.status"] = st["status"] if st else "unhandled"
                yield s, rec
                sent += 1
                if sent >= limit:
                    return
        finally:
            it.close()
        if state["exhausted"] or state["last"] is None:
            return
        before = state["last"]
