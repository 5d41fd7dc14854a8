"""The collector's SQLite store: one writer thread, batched transactions, dedup, retention.

SQLite takes one writer at a time, so one thread owns the write connection: Ingest handlers
hand it batches through a bounded queue and wait for the commit; it merges whatever is
queued into one transaction (group commit), so many agents cost one commit, not one each.
WAL lets Query read while it writes. synchronous=NORMAL: a commit is durable against a
collector crash; a power cut may lose the last commits, which agents resend (they only drop
a batch from their spool once it is acked, i.e. committed).

Dedup: each (agent_id, boot_id) is a stream with the highest seq stored so far. An event
above it is new (the fast path: a plain INSERT); one at or below it was either stored or
lost, and is checked row by row (INSERT OR IGNORE). The UNIQUE index backs both paths.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path

from collector.filters import EventFilter

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    node TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (agent_id, boot_id)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,      -- given by the writer, increasing: the live tail's cursor
    stream INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,         -- event time, ns
    received INTEGER NOT NULL,   -- commit time, ns (latency, lag)
    name TEXT NOT NULL,
    severity INTEGER NOT NULL,
    container TEXT,              -- NULL outside containers, so partial indexes stay small
    pod TEXT,
    namespace TEXT,
    text TEXT,                   -- executable, command line, paths, peer: for the text filter
    body BLOB NOT NULL           -- the Event, serialized
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_seq ON events (stream, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_name_ts ON events (name, ts);
CREATE INDEX IF NOT EXISTS events_container_ts ON events (container, ts) WHERE container IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_namespace_pod_ts ON events (namespace, pod, ts) WHERE namespace IS NOT NULL;
"""

_INSERT = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_IGNORE = "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"


class StoreError(RuntimeError):
    pass


class _Write:
    __slots__ = ("events", "done", "stored", "duplicates", "error")

    def __init__(self, events):
        self.events = events
        self.done = threading.Event()
        self.stored = 0
        self.duplicates = 0
        self.error: BaseException | None = None


def _connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class Store:
    def __init__(self, path: str, retention_age_s: float = 7 * 86400, retention_bytes: int = 1 << 30,
                 write_queue: int = 64, publish=None, retention_interval: float = 10.0):
        if path in ("", ":memory:"):
            raise ValueError("the store needs a file: readers open it beside the writer")
        self.path = str(path)
        self.retention_age_ns = int(retention_age_s * 1e9) if retention_age_s else 0
        self.retention_bytes = int(retention_bytes or 0)
        self.retention_interval = retention_interval
        self._publish = publish  # callable(list of (id, row, body)), run after each commit
        self._q: queue.Queue = queue.Queue(maxsize=write_queue)
        self._streams: dict[tuple[str, str], list] = {}  # (agent, boot) -> [id, last_seq, node]
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats = {"stored": 0, "duplicates": 0, "commits": 0, "retention_deleted": 0, "write_errors": 0}
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path)
        c = self._conn
        c.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes on a new file: lets retention shrink it
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA cache_size=-65536")  # 64 MiB
        c.execute("PRAGMA journal_size_limit=67108864")
        c.executescript(_SCHEMA)
        self._next_id = (c.execute("SELECT max(id) FROM events").fetchone()[0] or 0) + 1
        self._last_retention = 0.0

    # -- writer --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nw-collector-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(10)
        try:
            self._conn.execute("PRAGMA optimize")
            self._conn.close()
        except sqlite3.Error as e:
            log.warning("store: close: %s", e)

    def write(self, events, timeout: float = 30.0) -> tuple[int, int]:
        """Store a batch of Event messages; returns (stored, duplicates) once committed."""
        w = _Write(events)
        try:
            self._q.put(w, timeout=timeout)  # a full queue holds the agent back: it spools
        except queue.Full as e:
            raise StoreError("store is overloaded; retry") from e
        while not w.done.wait(1.0):
            if self._thread is None or not self._thread.is_alive():
                raise StoreError("collector is stopping")
        if w.error is not None:
            raise StoreError(f"store write failed: {w.error}")
        return w.stored, w.duplicates

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._q.get(timeout=self.retention_interval)
            except queue.Empty:
                first = None
            group = [] if first is None else [first]
            n = len(first.events) if first is not None else 0
            while n < 20000:  # group commit: whatever else is queued, up to a bound
                try:
                    w = self._q.get_nowait()
                except queue.Empty:
                    break
                if w is None:
                    break
                group.append(w)
                n += len(w.events)
            if group:
                self._commit(group)
            if time.monotonic() - self._last_retention >= self.retention_interval:
                self.enforce_retention()
        # Fail what is still queued, so no handler waits for a writer that is gone.
        while True:
            try:
                w = self._q.get_nowait()
            except queue.Empty:
                break
            if w is not None:
                w.error = StoreError("collector is stopping")
                w.done.set()

    def _commit(self, group: list[_Write]) -> None:
        c = self._conn
        published: list = []
        stream_cache = {k: list(v) for k, v in self._streams.items()}
        next_id = self._next_id
        try:
            c.execute("BEGIN IMMEDIATE")
            now = time.time_ns()
            for w in group:
                next_id = self._rows(w, now, next_id, published)
            c.execute("COMMIT")
        except Exception as e:  # sqlite3.Error, disk full, ...: the agents will resend
            log.error("store: commit failed: %s", e)
            self.stats["write_errors"] += 1
            try:
                c.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._streams = stream_cache  # undo the in-memory seq marks with the rows
            for w in group:
                w.error = e
                w.done.set()
            return
        self._next_id = next_id
        self.stats["commits"] += 1
        for w in group:
            self.stats["stored"] += w.stored
            self.stats["duplicates"] += w.duplicates
            w.done.set()
        if published and self._publish is not None:
            try:
                self._publish(published)
            except Exception:
                log.exception("store: publish to subscribers failed")

    def _stream(self, ev) -> list:
        """[id, last_seq, node, agent_id] of the event's (agent_id, boot_id) stream."""
        key = (ev.agent_id, ev.boot_id)
        st = self._streams.get(key)
        if st is None:
            c = self._conn
            row = c.execute("SELECT id, last_seq, node FROM streams WHERE agent_id=? AND boot_id=?", key).fetchone()
            if row is None:
                cur = c.execute("INSERT INTO streams (agent_id, boot_id, node) VALUES (?,?,?)", (*key, ev.node))
                row = (cur.lastrowid, 0, ev.node)
            st = self._streams[key] = [*row, ev.agent_id]
        return st

    def _rows(self, w: _Write, now: int, next_id: int, published: list) -> int:
        c = self._conn
        pub = self._publish is not None
        rows = []
        touched = {}
        for ev in w.events:
            st = self._stream(ev)
            seq = ev.seq
            p = ev.process
            cont = ev.container
            kind = ev.WhichOneof("kind")
            if kind == "file":
                f = ev.file
                text = f"{p.executable}\n{p.command_line}\n{f.path}\n{f.target_path}"
            elif kind == "network":
                text = f"{p.executable}\n{p.command_line}\n{ev.network.peer_address}"
            else:
                text = f"{p.executable}\n{p.command_line}"
            row = (next_id, st[0], seq, ev.time_unix_nano, now, ev.name, ev.severity,
                   cont.id or None, cont.pod_name or None, cont.pod_namespace or None, text, ev.SerializeToString())
            if seq > st[1]:
                rows.append(row)
                st[1] = seq
            else:
                # At or below the mark: a resend (usually) or a late event. Flush the fast
                # rows first so that a repeat within this batch is seen.
                if rows:
                    c.executemany(_INSERT, rows)
                    rows = []
                if c.execute(_INSERT_IGNORE, row).rowcount != 1:
                    w.duplicates += 1
                    continue
            if pub:  # (id, filter row, body); the filter row's order: collector/filters.py
                published.append((next_id, (row[3], row[5], row[6], row[7], row[8], row[9], text, st[2], st[3]),
                                  row[11]))
            touched[st[0]] = st
            w.stored += 1
            next_id += 1
        if rows:
            c.executemany(_INSERT, rows)
        for st in touched.values():
            c.execute("UPDATE streams SET last_seq=? WHERE id=? AND last_seq<?", (st[1], st[0], st[1]))
        return next_id

    # -- retention -------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        c = self._conn
        pages = c.execute("PRAGMA page_count").fetchone()[0] - c.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * c.execute("PRAGMA page_size").fetchone()[0]

    def enforce_retention(self) -> int:
        """Delete events older than the age limit, then the oldest until under the size limit."""
        self._last_retention = time.monotonic()
        deleted = 0
        c = self._conn
        try:
            if self.retention_age_ns:
                cutoff = time.time_ns() - self.retention_age_ns
                while True:  # in slices, so ingest never waits long behind a big delete
                    cur = c.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? LIMIT 20000)",
                                    (cutoff,))
                    deleted += cur.rowcount
                    if cur.rowcount < 20000:
                        break
            if self.retention_bytes:
                for _ in range(50):
                    used = self.used_bytes()
                    if used <= self.retention_bytes:
                        break
                    total = c.execute("SELECT count(*) FROM events").fetchone()[0]
                    if not total:
                        break
                    # Down to 90% of the limit, so this does not run again at the next commit.
                    share = (used - 0.9 * self.retention_bytes) / used
                    n = max(1, min(20000, int(total * share) + 1))
                    cur = c.execute("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)", (n,))
                    deleted += cur.rowcount
            if deleted:
                c.execute("PRAGMA incremental_vacuum")
                self.stats["retention_deleted"] += deleted
                log.info("store: retention deleted %d events", deleted)
        except sqlite3.Error as e:
            log.error("store: retention failed: %s", e)
        return deleted

    # -- reading -----------------------------------------------------------------------------------

    def query(self, flt: EventFilter, limit: int, after: tuple[int, int] | None = None, max_id: int = 0):
        """Rows (id, ts, body) matching `flt`, ordered by (ts, id), after the cursor `after`
        and, when max_id is set, stored no later than row max_id."""
        where, params = flt.where()
        if max_id:
            where += " AND id <= ?"
            params.append(max_id)
        if after is not None:
            where += " AND (ts > ? OR (ts = ? AND id > ?))"
            params += [after[0], after[0], after[1]]
        sql = f"SELECT id, ts, body FROM events WHERE {where} ORDER BY ts, id LIMIT ?"
        conn = _connect(self.path, readonly=True)
        try:
            cur = conn.execute(sql, [*params, limit])
            while True:
                rows = cur.fetchmany(500)
                if not rows:
                    return
                yield from rows
        finally:
            conn.close()

    def explain(self, flt: EventFilter) -> str:
        where, params = flt.where()
        conn = _connect(self.path, readonly=True)
        try:
            plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM events WHERE {where} ORDER BY ts, id",
                                params).fetchall()
            return "\n".join(r[-1] for r in plan)
        finally:
            conn.close()

    def max_id(self) -> int:
        return self._next_id - 1

    def streams(self) -> list[tuple]:
        conn = _connect(self.path, readonly=True)
        try:
            return conn.execute("SELECT agent_id, boot_id, node, last_seq FROM streams").fetchall()
        finally:
            conn.close()
