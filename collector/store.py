"""The collector's SQLite store: one writer thread, batched transactions, dedup, retention.

SQLite takes one writer at a time, so one thread owns the write connection: Ingest handlers
hand it batches through a bounded queue and wait for the commit; it merges whatever is
queued into one transaction (group commit), so many agents cost one commit, not one each.
WAL lets Query read while it writes. synchronous=NORMAL: a commit is durable against a
collector crash; a power cut may lose the last commits, which agents resend (they only drop
a batch from their spool once it is acked, i.e. committed). Checkpoints (copying the WAL into
the database file, and its fsync) run on a thread of their own, so the writer never waits for
the disk; SQLite's own checkpoint on commit stays on as a backstop at a larger WAL size.

The hot path, per event: the columns the filters use are read from the parsed Event, and the
row's body is the event's bytes as received (collector/wire.py), not a re-serialization. Rows
for live subscribers are only built when someone subscribes.

Dedup: each (agent_id, boot_id) is a stream with the highest seq stored so far. An event
above it is new (the fast path: a plain INSERT); one at or below it was either stored or
lost, and is checked row by row (INSERT OR IGNORE). The UNIQUE index backs both paths.
"""

from __future__ import annotations

import itertools
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
    text TEXT,                   -- executable, command line, paths, peer, reasons: for the text filter
    body BLOB NOT NULL           -- the Event, serialized
);
-- What alerts, verdicts and blocks add for their filters, in a table of its own: they are few, and
-- two more (NULL) columns on every kernel event's row cost ~0.45 us per event at ingest (measured).
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY,      -- the event's id
    rule TEXT,                   -- rule.id of an alert
    verdict TEXT                 -- image.verdict of a verdict or an enforcement
);
CREATE INDEX IF NOT EXISTS tags_rule ON tags (rule) WHERE rule IS NOT NULL;
CREATE INDEX IF NOT EXISTS tags_verdict ON tags (verdict) WHERE verdict IS NOT NULL;
-- Retention deletes events; their tags go with them.
CREATE TRIGGER IF NOT EXISTS events_untag AFTER DELETE ON events BEGIN DELETE FROM tags WHERE id = old.id; END;
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_seq ON events (stream, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_name_ts ON events (name, ts);
CREATE INDEX IF NOT EXISTS events_container_ts ON events (container, ts) WHERE container IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_namespace_pod_ts ON events (namespace, pod, ts) WHERE namespace IS NOT NULL;
"""
# A file made by an older collector gains the tags table (and its trigger) from the IF NOT EXISTS above.

_PAGE_SIZE = 8192  # only takes on a new file; bigger pages made inserts ~10% cheaper (bench/transport.py)
_WAL_BACKSTOP_PAGES = 8192  # the writer checkpoints itself past this (64 MiB): the checkpointer fell behind

_COLUMNS = "(id, stream, seq, ts, received, name, severity, container, pod, namespace, text, body)"
_ROW = "(?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT = f"INSERT INTO events {_COLUMNS} VALUES {_ROW}"
_INSERT_IGNORE = f"INSERT OR IGNORE INTO events {_COLUMNS} VALUES {_ROW}"
_MANY = 50  # rows per INSERT statement: one statement for 50 rows is ~0.4 us/event cheaper than executemany
_INSERT_MANY = f"INSERT INTO events {_COLUMNS} VALUES " + ",".join([_ROW] * _MANY)
_MAX_NAMES = 512  # name + agent_id + boot_id + node, characters
_MAX_SEQ = 1 << 63  # SQLite's INTEGER is signed 64-bit: a seq at or above this cannot be stored
_MAX_FIELD = 4096  # rule.id and image.verdict, characters (indexed columns stay small)
_INSERT_TAGS = "INSERT INTO tags (id, rule, verdict) VALUES (?,?,?)"
_UNTAGGED = (None, None)


class StoreError(RuntimeError):
    pass


class BatchError(ValueError):
    """A batch the store refuses whole (an event without its ids, ...): nothing of it is stored."""


def _insert(c: sqlite3.Connection, rows: list) -> None:
    whole = len(rows) - len(rows) % _MANY
    flat = itertools.chain.from_iterable
    for i in range(0, whole, _MANY):
        c.execute(_INSERT_MANY, tuple(flat(rows[i:i + _MANY])))
    if whole < len(rows):
        c.executemany(_INSERT, rows[whole:] if whole else rows)


class _Write:
    __slots__ = ("events", "bodies", "rows", "tags", "done", "stored", "duplicates", "last_seq", "error")

    def __init__(self, events, bodies):
        self.events = events
        self.bodies = bodies
        self.rows: list = []  # the rows stored, in id order
        self.tags: dict = {}  # id -> (rule, verdict) of the stored alerts, verdicts and blocks
        self.done = threading.Event()
        self.stored = 0
        self.duplicates = 0
        self.last_seq = 0
        self.error: BaseException | None = None


def _decided(ev, p, kind: str) -> tuple[str, tuple[str | None, str | None]]:
    """(text, (rule, verdict)) of an alert, verdict or enforcement: what the text, --rule and
    --verdict filters search. (Kernel events take the inline path in Store._rows.)"""
    if kind == "alert":
        a = ev.alert
        sub = a.WhichOneof("subject")
        where = a.file.path if sub == "file" else a.network.peer_address if sub == "network" else ""
        return (f"{p.executable}\n{p.command_line}\n{where}\n{a.rule_name}\n{a.output}",
                (a.rule_id[:_MAX_FIELD] or None, None))
    if kind == "verdict":
        v = ev.verdict
        return f"{ev.container.image}\n{v.reason}", (None, v.verdict[:_MAX_FIELD] or None)
    e = ev.enforcement
    return (f"{p.executable}\n{p.command_line}\n{ev.container.image}\n{e.reason}\n{e.rule_name}",
            (None, e.verdict[:_MAX_FIELD] or None))


_DECIDED = frozenset({"alert", "verdict", "enforcement"})
_DEVICE = frozenset({"device_info", "device_sample", "device_health", "device_process"})


def _device_text(ev, p, kind: str) -> str:
    """What the text filter searches in a device record: the device, what happened to it, who uses it
    (a sample's processes' containers and pods: `--text <container id>` finds the devices it uses)."""
    m = getattr(ev, kind)
    parts = [m.uuid, m.model, m.pci_bus_id, m.path, m.mig_uuid]
    if kind == "device_health":
        parts += [m.kind, m.mnemonic, m.action, m.detail]
    elif kind == "device_sample":
        for u in m.processes:
            parts += [u.container_id, u.pod_name, u.name]
    elif kind == "device_process":
        parts += [m.change, p.name]
    return "\n".join(x for x in parts if x)


def _connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class GroupCommitWriter:
    """What both stores share: Ingest handlers queue a batch and wait for its commit; one writer thread
    takes whatever is queued (group commit, up to _GROUP events) into one `_commit`, and runs retention
    every `retention_interval`. A store provides _q, _stop, _thread, retention_interval, _last_retention,
    _write_class (the queued batch: events, bodies, done, error, stored, duplicates, last_seq), _commit and
    enforce_retention."""

    _GROUP = 20000  # events per group commit

    def write(self, events, timeout: float = 30.0, bodies=None) -> tuple[int, int]:
        """Store a batch of Event messages; returns (stored, duplicates) once committed."""
        return self.ingest(events, bodies, timeout)[:2]

    def ingest(self, events, bodies=None, timeout: float = 30.0) -> tuple[int, int, int]:
        """Store a batch of Event messages; returns (stored, duplicates, highest seq) once
        committed. `bodies`: each event's serialized bytes, as received (serialized here when
        not given). Raises BatchError for a batch with an event that lacks agent_id, boot_id,
        seq or name, has a seq of 2^63 or more, or overlong names (nothing of it is stored), StoreError when the
        store cannot take it."""
        if bodies is None:
            bodies = [ev.SerializeToString() for ev in events]
        elif len(bodies) != len(events):
            raise ValueError("one body per event")
        w = self._write_class(events, bodies)
        try:
            self._q.put(w, timeout=timeout)  # a full queue holds the agent back: it spools
        except queue.Full as e:
            raise StoreError("store is overloaded; retry") from e
        while not w.done.wait(1.0):
            if self._thread is None or not self._thread.is_alive():
                raise StoreError("collector is stopping")
        if w.error is not None:
            if isinstance(w.error, BatchError):
                raise w.error
            raise StoreError(f"store write failed: {w.error}")
        return w.stored, w.duplicates, w.last_seq

    def _run(self) -> None:
        self.enforce_retention()  # at start, then every retention_interval
        while not self._stop.is_set():
            try:
                first = self._q.get(timeout=self.retention_interval)
            except queue.Empty:
                first = None
            group = [] if first is None else [first]
            n = len(first.events) if first is not None else 0
            while n < self._GROUP:  # group commit: whatever else is queued, up to a bound
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


class Store(GroupCommitWriter):
    _write_class = _Write
    def __init__(self, path: str, retention_age_s: float = 7 * 86400, retention_bytes: int = 1 << 30,
                 write_queue: int = 64, publish=None, retention_interval: float = 10.0, listening=None,
                 checkpoint_interval: float = 0.05):
        if path in ("", ":memory:"):
            raise ValueError("the store needs a file: readers open it beside the writer")
        self.path = str(path)
        self.retention_age_ns = int(retention_age_s * 1e9) if retention_age_s else 0
        self.retention_bytes = int(retention_bytes or 0)
        self.retention_interval = retention_interval
        self._publish = publish  # callable(list of (id, row, body)), run after each commit
        self._listening = listening  # callable() -> truthy when publish has someone to publish to
        self.checkpoint_interval = checkpoint_interval
        self._q: queue.Queue = queue.Queue(maxsize=write_queue)
        self._streams: dict[tuple[str, str], list] = {}  # (agent, boot) -> [id, last_seq, node, agent]
        self._stream_ids: dict[int, list] = {}  # id -> the same lists
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
        self._wal_grew = threading.Event()
        self.stats = {"stored": 0, "duplicates": 0, "commits": 0, "retention_deleted": 0, "write_errors": 0,
                      "checkpoints": 0}
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path)
        c = self._conn
        c.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # these two only take on a new file
        c.execute("PRAGMA auto_vacuum=INCREMENTAL")  # lets retention shrink the file
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA cache_size=-65536")  # 64 MiB
        c.execute("PRAGMA journal_size_limit=67108864")
        # The checkpointer thread keeps the WAL short; this only fires when it falls behind.
        c.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}")
        c.executescript(_SCHEMA)
        self._next_id = (c.execute("SELECT max(id) FROM events").fetchone()[0] or 0) + 1
        self._last_retention = 0.0

    # -- writer --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nw-collector-writer", daemon=True)
        self._thread.start()
        if self.checkpoint_interval:
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="nw-collector-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Copy committed WAL frames into the database file, off the writer's path (PASSIVE: it
        never blocks the writer or readers; a reader's snapshot only holds back what it still uses)."""
        try:
            conn = _connect(self.path)
        except sqlite3.Error as e:
            log.error("store: checkpointer: %s; the writer checkpoints alone", e)
            return
        try:
            while not self._stop.is_set():
                if not self._wal_grew.wait(1.0):
                    continue
                self._wal_grew.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.stats["checkpoints"] += 1
                except sqlite3.Error as e:
                    log.warning("store: checkpoint: %s", e)
                self._stop.wait(self.checkpoint_interval)  # at most one per interval: fewer fsyncs
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        self._wal_grew.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._checkpointer is not None:
            self._checkpointer.join(10)
        try:
            self._conn.execute("PRAGMA optimize")
            self._conn.close()
        except sqlite3.Error as e:
            log.warning("store: close: %s", e)

    def _commit(self, group: list[_Write]) -> None:
        c = self._conn
        marks = {k: st[1] for k, st in self._streams.items()}
        next_id = self._next_id
        try:
            c.execute("BEGIN IMMEDIATE")
            now = time.time_ns()
            for w in group:
                try:
                    next_id = self._rows(w, now, next_id)
                except BatchError as e:  # that batch alone: nothing of it was written
                    w.error = e
            c.execute("COMMIT")
        except Exception as e:  # sqlite3.Error, disk full, ...: the agents will resend
            log.error("store: commit failed: %s", e)
            self.stats["write_errors"] += 1
            try:
                c.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for key, st in list(self._streams.items()):  # undo the in-memory seq marks with the rows
                if key in marks:
                    st[1] = marks[key]
                else:  # its INSERT INTO streams went too
                    del self._streams[key]
                    self._stream_ids.pop(st[0], None)
            for w in group:
                w.error = e
                w.done.set()
            return
        self._next_id = next_id  # before asking who listens: see Hub / Subscribe's cut-off
        self.stats["commits"] += 1
        self._wal_grew.set()
        publish = self._publish is not None and (self._listening is None or self._listening())
        published: list = []
        ids = self._stream_ids
        for w in group:
            self.stats["stored"] += w.stored
            self.stats["duplicates"] += w.duplicates
            if publish and w.rows:
                # (id, filter row, body); the filter row's order: collector/filters.py
                tags = w.tags
                published += [(r[0], (r[3], r[5], r[6], r[7], r[8], r[9], r[10], ids[r[1]][2], ids[r[1]][3],
                                      *tags.get(r[0], _UNTAGGED)), r[11]) for r in w.rows]
            w.rows = []
            w.tags = {}
            w.done.set()
        if published:
            try:
                self._publish(published)
            except Exception:
                log.exception("store: publish to subscribers failed")

    def _stream(self, agent: str, boot: str, node: str) -> list:
        """[id, last_seq, node, agent_id] of the (agent_id, boot_id) stream."""
        key = (agent, boot)
        st = self._streams.get(key)
        if st is None:
            c = self._conn
            row = c.execute("SELECT id, last_seq, node FROM streams WHERE agent_id=? AND boot_id=?", key).fetchone()
            if row is None:
                cur = c.execute("INSERT INTO streams (agent_id, boot_id, node) VALUES (?,?,?)", (*key, node))
                row = (cur.lastrowid, 0, node)
            st = self._streams[key] = [*row, agent]
            self._stream_ids[st[0]] = st
        return st

    def _rows(self, w: _Write, now: int, next_id: int) -> int:
        """Check and insert one batch; w.rows: the rows stored, in id order. This loop is the
        per-event cost of ingest: attribute reads from the parsed Event and one tuple.

        An event above its stream's mark is new: its row goes in with the batch's others in a
        few multi-row INSERTs. One at or below it (a resend, or a late event) is kept aside and
        tried after those with INSERT OR IGNORE, one by one, so that the UNIQUE index decides."""
        rows = w.rows
        tags = w.tags
        later = []  # (row without its id, tag): at or below the mark
        saved = []  # (stream, mark before this batch): undone if the batch is refused
        agent = boot = None
        st = None
        last = 0
        names = 0
        try:
            for i, (ev, body) in enumerate(zip(w.events, w.bodies, strict=True)):  # write() checked the lengths
                a, b = ev.agent_id, ev.boot_id
                if a != agent or b != boot:  # batches come from one stream: this is once per batch
                    if not (a and b):
                        raise BatchError(f"event {i} of the batch lacks agent_id, boot_id, seq or name")
                    agent, boot = a, b
                    names = len(a) + len(b)
                    st = self._stream(a, b, ev.node)
                    saved.append((st, st[1]))
                seq = ev.seq
                name = ev.name
                if not (name and seq):
                    raise BatchError(f"event {i} of the batch lacks agent_id, boot_id, seq or name")
                if seq >= _MAX_SEQ:  # checked here, per batch: in the merged commit it would fail every batch
                    raise BatchError(f"event {i} of the batch has seq {seq}; seqs must be below 2^63")
                if names + len(name) + len(ev.node) > _MAX_NAMES:
                    raise BatchError(f"event {i} of the batch has names or ids longer than {_MAX_NAMES} "
                                     "characters in all")
                if seq > last:
                    last = seq
                p = ev.process
                kind = ev.WhichOneof("kind")
                tag = None
                if kind == "file":
                    f = ev.file
                    text = f"{p.executable}\n{p.command_line}\n{f.path}\n{f.target_path}"
                elif kind == "network":
                    text = f"{p.executable}\n{p.command_line}\n{ev.network.peer_address}"
                elif kind in _DECIDED:
                    text, tag = _decided(ev, p, kind)
                elif kind in _DEVICE:
                    text = _device_text(ev, p, kind)
                else:
                    text = f"{p.executable}\n{p.command_line}"
                cont = ev.container
                if seq > st[1]:
                    st[1] = seq
                    rows.append((next_id, st[0], seq, ev.time_unix_nano, now, name, ev.severity,
                                 cont.id or None, cont.pod_name or None, cont.pod_namespace or None, text, body))
                    if tag is not None:
                        tags[next_id] = tag
                    next_id += 1
                else:
                    later.append(((st[0], seq, ev.time_unix_nano, now, name, ev.severity,
                                   cont.id or None, cont.pod_name or None, cont.pod_namespace or None, text, body),
                                  tag))
        except BatchError:
            for st, mark in reversed(saved):
                st[1] = mark
            w.rows = []
            w.tags = {}
            raise
        w.last_seq = last
        c = self._conn
        _insert(c, rows)
        for rest, tag in later:
            row = (next_id, *rest)
            if c.execute(_INSERT_IGNORE, row).rowcount == 1:
                rows.append(row)
                if tag is not None:
                    tags[next_id] = tag
                next_id += 1
            else:
                w.duplicates += 1
        if tags:
            c.executemany(_INSERT_TAGS, [(i, *t) for i, t in tags.items()])
        w.stored = len(rows)
        for st, _ in saved:
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
