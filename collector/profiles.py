"""Behaviour profiles shared across nodes (issue 13): the collector's side of the Profiles service.

Agents push a profile document (JSON, format 1) when their profile of a workload changed; this
module checks it, keeps each agent's latest document per key and a merged one, and answers Get
with the merged document, so that an agent that starts a workload's first container on its node
gets what every other node learned, and the mode a person locked, before the container runs.

The merge is Profile.merge's (agent/detect/profile/model.py), re-implemented on the documents
because the collector shares only protobuf code and the document format with the agent:
items and deviations are united per kind (first = min, last = max, count = max); mode, locked_by
and mode_ts come from the document whose mode changed last (a tie keeps what is stored); a
deviation that is a learned item in the merge is dropped from the deviations; created = min,
run_s = max, stable_since = max and quiet_run_s from the document with that stable_since (the
node that saw the newest new item knows how quiet it has been since); overflow = max per kind.
Each of these is idempotent, so an agent pushing the same document twice, or pushing back the
merged document it fetched, changes nothing. The merged document's revision is the collector's
own count of its changes. A key must be its workload's key (Workload.key: the same text).

Storage: a SQLite file of its own beside the events database (`<db stem>.profiles.db`), so that
pushes never queue behind the events writer's transactions and the events' size retention never
counts (or deletes) profiles. Pushes are rare (an agent sends a profile at most every flush_s,
and only when it changed) and are serialized by one lock; Get is one primary-key read.

Bounds: a document over max_doc_bytes, with more than max_items items of one kind, or malformed
is refused whole (INVALID_ARGUMENT, one line naming the field). The merged document keeps at most
max_items per kind: what does not fit is counted in its `overflow` and in `profile_merge_overflow`.
At most max_profiles keys (a new key beyond it: RESOURCE_EXHAUSTED); per key, the documents of
at most max_agents_per_key agents are kept (later agents are still merged, their own document is
not stored: counted in `profile_docs_unkept`).
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import orjson
from google.protobuf.message import DecodeError

from nwwire.genproto import load

log = logging.getLogger(__name__)
cpb = load("nodewarden.v1.collector_pb2")

SERVICE = "nodewarden.v1.Profiles"
FORMAT = 1
MODES = frozenset({"learning", "monitoring", "protecting"})
LOCKED_BY = frozenset({"", "auto", "user", "collector"})
WORKLOAD_FIELDS = ("namespace", "kind", "owner", "container", "image", "image_digest")
_FLOATS = ("created", "run_s", "quiet_run_s", "stable_since", "mode_ts")
# Kinds are not a closed list here (exec, edge, user, peer, listen, write today): an agent with a
# new kind must not have every document refused by an older collector.
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_MAX_KEY = 1024  # characters of a key: namespace/kind/owner/container@digest fits many times over
_MAX_ITEM = 4096  # characters of one item (a path, a peer, an edge of two paths)
_MAX_NAME = 256  # agent_id and node

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    key TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,   -- +1 on each change of the merged document
    agents INTEGER NOT NULL,     -- agents whose document is kept for this key
    mode TEXT NOT NULL,
    updated INTEGER NOT NULL,    -- ns, last change
    doc BLOB NOT NULL            -- the merged document, JSON
);
CREATE TABLE IF NOT EXISTS profile_docs (
    key TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    node TEXT NOT NULL,
    updated INTEGER NOT NULL,    -- ns, last push
    doc BLOB NOT NULL,           -- that agent's latest document, as it sent it
    PRIMARY KEY (key, agent_id)
) WITHOUT ROWID;
"""


class DocError(ValueError):
    """A profile document the collector refuses: the message is one line naming the field."""


@dataclass(frozen=True)
class ProfileLimits:
    max_profiles: int = 65536  # keys
    max_items: int = 4096  # per kind, in a pushed document and in the merged one
    max_doc_bytes: int = 8 << 20
    max_agents_per_key: int = 1024  # agents whose own document is kept per key


def profiles_db_path(events_db: str) -> str:
    """The profiles file beside the events database: /var/lib/nodewarden/events.db ->
    /var/lib/nodewarden/events.profiles.db (two collectors with two event files never share it)."""
    p = Path(events_db)
    return str(p.with_name(f"{p.stem}.profiles.db"))


# -- the document ----------------------------------------------------------------------------------


def workload_key(w: dict) -> str:
    """The key of a workload object: Workload.key (agent/detect/profile/key.py), the same text."""
    return f"{w['namespace']}/{w['kind'] or '-'}/{w['owner'] or '-'}/{w['container']}@{w['image_digest'] or w['image']}"


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _number(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise DocError(f"profile doc: {name} must be a non-negative number, not {_short(v)}")
    return float(v)


def _count(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 1 << 63:
        raise DocError(f"profile doc: {name} must be a non-negative integer, not {_short(v)}")
    return v


def _entries(name: str, v, max_items: int) -> dict:
    """items / deviations: {kind: {item: [first, last, count]}}, checked and normalized
    (first/last floats, count int) so that merged documents compare and serialize the same."""
    if not isinstance(v, dict):
        raise DocError(f"profile doc: {name} must be an object of kinds, not {_short(v)}")
    out = {}
    for kind, items in v.items():
        if not _KIND.match(kind):
            raise DocError(f"profile doc: {name}: bad kind {_short(kind)}")
        if not isinstance(items, dict):
            raise DocError(f"profile doc: {name}.{kind} must be an object of items, not {_short(items)}")
        if len(items) > max_items:
            raise DocError(f"profile doc: {name}.{kind} has {len(items)} items; the collector takes {max_items}")
        got = {}
        for item, e in items.items():
            if not item or len(item) > _MAX_ITEM:
                raise DocError(f"profile doc: {name}.{kind}: an item is empty or over {_MAX_ITEM} characters")
            if not isinstance(e, list) or len(e) != 3:
                raise DocError(f"profile doc: {name}.{kind}[{_short(item)}] must be [first, last, count], "
                               f"not {_short(e)}")
            where = f"{name}.{kind}[{_short(item)}]"
            got[item] = [_number(where + " first", e[0]), _number(where + " last", e[1]),
                         _count(where + " count", e[2])]
        out[kind] = got
    return out


def parse_doc(raw: bytes, limits: ProfileLimits = ProfileLimits()) -> dict:
    """The checked, normalized document of `raw`; DocError (one line) for anything else. Fields
    beyond format 1's are not kept: the merged document is format 1."""
    if len(raw) > limits.max_doc_bytes:
        raise DocError(f"profile doc: {len(raw)} bytes; the collector takes {limits.max_doc_bytes}")
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise DocError(f"profile doc is not JSON: {e}") from None
    if not isinstance(d, dict):
        raise DocError(f"profile doc must be a JSON object, not {type(d).__name__}")
    if d.get("format") != FORMAT or isinstance(d.get("format"), bool):
        raise DocError(f"profile doc: format {_short(d.get('format'))}; this collector reads format {FORMAT}")
    key = d.get("key")
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise DocError(f"profile doc: key must be a string of 1 to {_MAX_KEY} characters")
    w = d.get("workload")
    if not isinstance(w, dict):
        raise DocError("profile doc: workload must be an object")
    workload = {}
    for f in WORKLOAD_FIELDS:
        v = w.get(f, "")
        if not isinstance(v, str) or len(v) > _MAX_KEY:
            raise DocError(f"profile doc: workload.{f} must be a string")
        workload[f] = v
    if not workload["container"]:
        raise DocError("profile doc: workload.container is empty")
    if key != workload_key(workload):  # agents refuse such a document (Profile.from_doc): so does the collector
        raise DocError(f"profile doc: key {_short(key)} is not its workload's ({_short(workload_key(workload))})")
    mode = d.get("mode")
    if mode not in MODES:
        raise DocError(f"profile doc: mode {_short(mode)}; one of {', '.join(sorted(MODES))}")
    locked_by = d.get("locked_by", "")
    if locked_by not in LOCKED_BY:
        raise DocError(f"profile doc: locked_by {_short(locked_by)}; one of '', auto, user, collector")
    out = {"format": FORMAT, "key": key, "workload": workload, "mode": mode, "locked_by": locked_by}
    if "created" not in d:
        raise DocError("profile doc: created is missing")
    # The defaults are Profile.from_doc's, so that both read the same documents (mode_ts 0: no mode chosen yet).
    defaults = {"run_s": 0.0, "quiet_run_s": 0.0, "stable_since": d["created"], "mode_ts": 0.0}
    for f in _FLOATS:
        out[f] = _number(f, d.get(f, defaults.get(f)))
    out["revision"] = _count("revision", d.get("revision", 0))
    out["items"] = _entries("items", d.get("items", {}), limits.max_items)
    overflow = d.get("overflow", {})
    if not isinstance(overflow, dict):
        raise DocError("profile doc: overflow must be an object of kinds")
    for kind, n in overflow.items():
        if not _KIND.match(kind):
            raise DocError(f"profile doc: overflow: bad kind {_short(kind)}")
        _count(f"overflow.{kind}", n)
    out["overflow"] = dict(overflow)
    out["deviations"] = _entries("deviations", d.get("deviations", {}), limits.max_items)
    return out


def _unite(dst: dict, src: dict, cap: int, over: dict) -> None:
    """Items of `src` into `dst` (both {kind: {item: [first, last, count]}}); new items beyond
    `cap` per kind are counted in `over` instead."""
    for kind, items in src.items():
        d = dst.get(kind)
        if d is None:
            d = dst[kind] = {}
        for item, (first, last, count) in items.items():
            cur = d.get(item)
            if cur is None:
                if len(d) >= cap:
                    over[kind] = over.get(kind, 0) + 1
                    continue
                d[item] = [first, last, count]
            else:
                if first < cur[0]:
                    cur[0] = first
                if last > cur[1]:
                    cur[1] = last
                if count > cur[2]:
                    cur[2] = count


def merge_docs(base: dict, other: dict, max_items: int = 4096) -> tuple[dict, int]:
    """(merged document, items left out for the cap). Neither input changes; both are parse_doc's
    output for the same key. The result's revision is base's: the caller decides whether it changed."""
    m = {**base, "workload": dict(base["workload"]), "overflow": dict(base["overflow"])}
    m["items"] = {k: {i: list(e) for i, e in v.items()} for k, v in base["items"].items()}
    m["deviations"] = {k: {i: list(e) for i, e in v.items()} for k, v in base["deviations"].items()}
    over: dict[str, int] = {}
    _unite(m["items"], other["items"], max_items, over)
    dev_over: dict[str, int] = {}  # deviations past the cap are left out, not overflow (as Profile.merge)
    _unite(m["deviations"], other["deviations"], max_items, dev_over)
    for kind, devs in m["deviations"].items():  # learned somewhere: no longer a deviation (as Profile.merge)
        learned = m["items"].get(kind)
        if learned:
            for item in [i for i in devs if i in learned]:
                del devs[item]
    m["deviations"] = {k: v for k, v in m["deviations"].items() if v}
    for kind in set(other["overflow"]) | set(over):
        # max, not sum: pushing the same document again must not count its overflow again
        m["overflow"][kind] = max(m["overflow"].get(kind, 0), other["overflow"].get(kind, 0), over.get(kind, 0))
    if other["mode_ts"] > base["mode_ts"]:
        m["mode"], m["locked_by"], m["mode_ts"] = other["mode"], other["locked_by"], other["mode_ts"]
    m["created"] = min(base["created"], other["created"])
    m["run_s"] = max(base["run_s"], other["run_s"])
    # Quiet run time since the newest new item: the document that saw that item knows it.
    if other["stable_since"] >= base["stable_since"]:
        m["quiet_run_s"], m["stable_since"] = other["quiet_run_s"], other["stable_since"]
    return m, sum(over.values()) + sum(dev_over.values())


def _same(a: dict, b: dict) -> bool:
    return {**a, "revision": 0} == {**b, "revision": 0}


# -- the table -------------------------------------------------------------------------------------


class ProfileTable:
    """The profiles of the collector's database: push (check, keep, merge), get (the merged document)."""

    def __init__(self, path: str, limits: ProfileLimits = ProfileLimits()):
        self.path = path
        self.limits = limits
        self._lock = threading.Lock()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")  # as the events store: a commit survives a collector crash
        c.executescript(_SCHEMA)
        self._keys = c.execute("SELECT count(*) FROM profiles").fetchone()[0]
        self.stats = {"profile_pushes": 0, "profile_changes": 0, "profile_refused": 0, "profile_gets": 0,
                      "profile_misses": 0, "profile_merge_overflow": 0, "profile_docs_unkept": 0,
                      "profile_write_errors": 0}

    def count(self) -> int:
        return self._keys

    def push(self, agent_id: str, node: str, raw: bytes) -> tuple[str, bool, int, int]:
        """(key, changed, revision, agents) once stored. DocError for a refused document,
        OverflowError past max_profiles, sqlite3.Error when the file cannot take it."""
        try:
            doc = parse_doc(raw, self.limits)  # outside the lock: other pushes need not wait for it
        except DocError:
            with self._lock:
                self.stats["profile_refused"] += 1
            raise
        key = doc["key"]
        now = time.time_ns()
        with self._lock:
            c = self._conn
            row = c.execute("SELECT revision, agents, doc FROM profiles WHERE key=?", (key,)).fetchone()
            if row is None and self._keys >= self.limits.max_profiles:
                self.stats["profile_refused"] += 1
                raise OverflowError(f"the collector holds {self._keys} profiles, its limit; {key} is not kept")
            known = c.execute("SELECT 1 FROM profile_docs WHERE key=? AND agent_id=?", (key, agent_id)).fetchone()
            agents = row[1] if row is not None else 0
            keep = known is not None or agents < self.limits.max_agents_per_key
            if row is None:
                merged, revision, changed, left = {**doc, "revision": 1}, 1, True, 0
            else:
                base = orjson.loads(row[2])
                merged, left = merge_docs(base, doc, self.limits.max_items)
                changed = not _same(merged, base)
                revision = row[0] + 1 if changed else row[0]
                merged["revision"] = revision
            new_agent = known is None and keep
            if new_agent:  # the count of documents kept: an unkept agent is counted at every push otherwise
                agents += 1
            try:
                c.execute("BEGIN IMMEDIATE")
                if keep:
                    c.execute("INSERT INTO profile_docs (key, agent_id, node, updated, doc) VALUES (?,?,?,?,?) "
                              "ON CONFLICT (key, agent_id) DO UPDATE SET node=excluded.node, "
                              "updated=excluded.updated, doc=excluded.doc", (key, agent_id, node, now, raw))
                if changed or new_agent:
                    c.execute("INSERT INTO profiles (key, revision, agents, mode, updated, doc) VALUES (?,?,?,?,?,?) "
                              "ON CONFLICT (key) DO UPDATE SET revision=excluded.revision, agents=excluded.agents, "
                              "mode=excluded.mode, updated=excluded.updated, doc=excluded.doc",
                              (key, revision, agents, merged["mode"], now, orjson.dumps(merged)))
                c.execute("COMMIT")
            except sqlite3.Error:
                self.stats["profile_write_errors"] += 1
                try:
                    c.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            if row is None:
                self._keys += 1
            self.stats["profile_pushes"] += 1
            self.stats["profile_changes"] += changed
            self.stats["profile_merge_overflow"] += left
            self.stats["profile_docs_unkept"] += not keep
        return key, changed, revision, agents

    def get(self, key: str) -> tuple[bytes, int, int]:
        """(merged document, revision, agents); (b"", 0, 0) for a key the collector does not know."""
        with self._lock:
            row = self._conn.execute("SELECT doc, revision, agents FROM profiles WHERE key=?", (key,)).fetchone()
            self.stats["profile_gets"] += 1
            self.stats["profile_misses"] += row is None
        if row is None:
            return b"", 0, 0
        return bytes(row[0]), row[1], row[2]

    def agent_docs(self, key: str) -> list[tuple[str, str, bytes]]:
        """(agent_id, node, document) of each agent kept for `key`."""
        with self._lock:
            return [(a, n, bytes(d)) for a, n, d in self._conn.execute(
                "SELECT agent_id, node, doc FROM profile_docs WHERE key=? ORDER BY agent_id", (key,))]

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error as e:
                log.warning("profiles: close: %s", e)


# -- the service -----------------------------------------------------------------------------------


class ProfileService:
    """Push and Get, requests taken as raw bytes (as the Collector service does) so that a
    malformed message is a clear INVALID_ARGUMENT, not gRPC's generic INTERNAL."""

    def __init__(self, table: ProfileTable, reject):
        self.table = table
        self._reject = reject  # (context, code, message): counts, logs and aborts the call

    def _parse(self, raw: bytes, msg_type, context):
        try:
            req = msg_type.FromString(raw)
        except DecodeError as e:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed {msg_type.__name__}: {e}")
        if len(req.agent_id) > _MAX_NAME or len(req.node) > _MAX_NAME:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"agent_id and node take at most {_MAX_NAME} characters")
        return req

    def push(self, raw: bytes, context):
        req = self._parse(raw, cpb.ProfilePush, context)
        if not req.agent_id:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, "ProfilePush needs agent_id")
        try:
            key, changed, revision, agents = self.table.push(req.agent_id, req.node, req.doc)
        except DocError as e:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except OverflowError as e:
            self._reject(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except sqlite3.Error as e:
            log.error("profiles: push of %s failed: %s", req.agent_id, e)
            self._reject(context, grpc.StatusCode.UNAVAILABLE, f"profile store failed: {e}")
        return cpb.ProfileAck(key=key, changed=changed, revision=revision, agents=agents).SerializeToString()

    def get(self, raw: bytes, context):
        req = self._parse(raw, cpb.ProfileGet, context)
        if not req.key or len(req.key) > _MAX_KEY:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, f"ProfileGet needs a key of 1 to {_MAX_KEY} "
                                                                    "characters")
        try:
            doc, revision, agents = self.table.get(req.key)
        except sqlite3.Error as e:
            log.error("profiles: get failed: %s", e)
            self._reject(context, grpc.StatusCode.UNAVAILABLE, f"profile store failed: {e}")
        return cpb.ProfileReply(doc=doc, revision=revision, agents=agents).SerializeToString()

    def handlers(self) -> dict:
        return {"Push": grpc.unary_unary_rpc_method_handler(self.push),
                "Get": grpc.unary_unary_rpc_method_handler(self.get)}
