"""The collector's PostgreSQL store: what lets several collector replicas share one store.

Same interface as collector/store.py's SQLite Store (ingest/write/query/max_id/streams/explain/
start/stop, `stats`), chosen by `--store postgresql://...`. What differs, and why:

- Events are partitioned by event time (declarative RANGE partitioning on ts, one partition per
  `partition_s`, a day by default, aligned to UTC). Partitions are made ahead (and back to the
  retention age at start); an event outside them lands in a DEFAULT partition (clock skew). Retention
  drops whole partitions: no row deletes, no vacuum debt. Only the default partition is trimmed by
  DELETE, and it holds only what skewed clocks sent.
- Dedup on (agent_id, boot_id, seq) across replicas. A unique index on a partitioned table must
  include the partition key, and (stream, seq, ts) would let a resend with another ts in; so instead
  every commit locks the rows of its streams (SELECT ... FOR UPDATE, in stream-id order, so two
  replicas cannot deadlock) and decides under that lock: a seq above the stream's last_seq is new; one
  at or below it is looked up in the (stream, seq) index of every partition. All writers of a stream,
  on any replica, are serialized by that row lock, so check-then-insert cannot race. A replica killed
  mid-batch leaves an open transaction that PostgreSQL rolls back when its connection drops, and the
  lock goes with it: the agent's resend to another replica finds nothing of that batch and stores it
  once.
- Ids (the live tail's cursor) are handed out in commit order: each commit takes a transaction-level
  advisory lock just before it allocates ids and COPYs its rows, and holds it to its commit. So a
  visible id means every smaller id is settled (committed or rolled back), and "rows with id > cursor"
  is an exact tail. The price: the COPY part of commits is serialized across replicas (the dedup checks,
  gRPC, parsing and row building are not). bench/collector_scale.py measures what that costs.
- The live tail: every replica's tail thread reads the rows any replica stored, by id, and feeds its
  own Hub (`tail`); commits NOTIFY `nodewarden_events`, which wakes the tail at once (LISTEN), and it
  polls every second anyway (a NOTIFY lost with a dropped connection costs at most that). `publish`
  (outputs, bus) gets only this replica's own commits, as with SQLite: an alert goes out once, not
  once per replica.
- Inserts: one binary COPY per commit (group commit as in store.py). An ack means committed with
  synchronous_commit at least `local` (the writer raises it from `off`): agents drop acked batches.
- Size retention (retention_bytes) works by whole partitions too, oldest first, never the current one.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import defaultdict

from collector.filters import EventFilter
from collector.store import BatchError, GroupCommitWriter, StoreError
from collector.store_pg_rows import PendingWrite, build_rows, check_url, pg_where, redact

log = logging.getLogger(__name__)

_LOCK_IDS = 0x4E57_0001  # advisory lock keys ("NW"): id allocation + COPY, partition DDL, retention
_LOCK_DDL = 0x4E57_0002
_CHANNEL = "nodewarden_events"
_TAIL_PAGE = 5000
_POOL = 8  # idle reader connections kept
_MAX_PARTITIONS = 400  # made at start, back to the retention age

# Text columns are COLLATE "C": byte order, as SQLite's BINARY (the prefix ranges of filters.py), and
# ILIKE under "C" folds ASCII case only, as SQLite's LIKE does.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT COLLATE "C" NOT NULL,
    boot_id TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0,
    UNIQUE (agent_id, boot_id)
);
CREATE INDEX IF NOT EXISTS streams_node ON streams (node);
CREATE SEQUENCE IF NOT EXISTS event_ids;
CREATE TABLE IF NOT EXISTS events (
    id BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    received BIGINT NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    severity INTEGER NOT NULL,
    container TEXT COLLATE "C",
    pod TEXT COLLATE "C",
    namespace TEXT COLLATE "C",
    text TEXT COLLATE "C",
    rule TEXT COLLATE "C",
    verdict TEXT COLLATE "C",
    body BYTEA NOT NULL
) PARTITION BY RANGE (ts);
CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT;
CREATE INDEX IF NOT EXISTS events_id ON events (id);
CREATE INDEX IF NOT EXISTS events_stream_seq ON events (stream, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts, id);
CREATE INDEX IF NOT EXISTS events_name_ts ON events (name, ts);
CREATE INDEX IF NOT EXISTS events_container_ts ON events (container, ts) WHERE container IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_namespace_pod_ts ON events (namespace, pod, ts) WHERE namespace IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_rule ON events (rule) WHERE rule IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_verdict ON events (verdict) WHERE verdict IS NOT NULL;
"""

_COLUMNS = ("id", "stream", "seq", "ts", "received", "name", "severity", "container", "pod", "namespace", "text",
            "rule", "verdict", "body")
_TYPES = ["int8", "int8", "int8", "int8", "int8", "text", "int4", "text", "text", "text", "text", "text", "text",
          "bytea"]
_COPY = f"COPY events ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_TAIL = ("SELECT e.id, e.ts, e.name, e.severity, e.container, e.pod, e.namespace, e.text, s.node, s.agent_id, "
         "e.rule, e.verdict, e.body FROM events e JOIN streams s ON s.id = e.stream "
         "WHERE e.id > %s ORDER BY e.id LIMIT %s")


class PgStore(GroupCommitWriter):
    _write_class = PendingWrite
    def __init__(self, url: str, retention_age_s: float = 7 * 86400, retention_bytes: int = 1 << 30,
                 write_queue: int = 64, publish=None, retention_interval: float = 10.0, listening=None,
                 tail=None, partition_s: int = 86400, partitions_ahead: int = 2, tail_interval: float = 1.0):
        check_url(url)
        import psycopg

        self._pg = psycopg
        self.url = url
        self.retention_age_ns = int(retention_age_s * 1e9) if retention_age_s else 0
        self.retention_bytes = int(retention_bytes or 0)
        self.retention_interval = retention_interval
        if not isinstance(partition_s, int | float) or partition_s < 60:
            raise ValueError(f"store partition: at least 60 seconds (got {partition_s!r})")
        self.partition_ns = int(partition_s) * 10**9
        self.partitions_ahead = max(1, int(partitions_ahead))
        self.tail_interval = tail_interval
        self._publish = publish  # callable(list of (id, row, body)): this replica's own commits
        self._tail = tail  # callable(same): every replica's commits, in id order (the Hub)
        self._listening = listening  # callable() -> truthy when the tail has someone to feed
        self._q: queue.Queue = queue.Queue(maxsize=write_queue)
        self._stream_ids: dict[tuple[str, str], int] = {}
        self._nodes: dict[tuple[str, str], str] = {}  # the node each stream was first seen on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tail_thread: threading.Thread | None = None
        self._cursor_lock = threading.Lock()
        self._pool: queue.LifoQueue = queue.LifoQueue(maxsize=_POOL)
        self.stats = {"stored": 0, "duplicates": 0, "commits": 0, "retention_deleted": 0, "write_errors": 0,
                      "partitions_dropped": 0, "tail_published": 0, "tail_errors": 0}
        self._conn = self._connect("writer")
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_DDL,))
                self._conn.execute(_SCHEMA)
            self._make_partitions(initial=True)
            self._cursor = self._max_committed()
        except self._pg.Error as e:  # no rights to make tables, a read-only standby, ...: one line
            self._conn.close()
            raise StoreError(f"cannot set up store {redact(url)}: {str(e).strip().splitlines()[0]}") from e
        self._last_retention = 0.0

    def _connect(self, role: str = "reader"):
        # application_name says which collector process and which of its connections (pg_stat_activity)
        try:
            c = self._pg.connect(self.url, autocommit=True, connect_timeout=10,
                                 application_name=f"nodewarden-collector-{os.getpid()}-{role}")
            if role == "writer" and c.execute("SHOW synchronous_commit").fetchone()[0] == "off":
                # An agent drops what was acked: an ack must survive a crash of the server.
                log.warning("store: the server has synchronous_commit=off; the collector's writer sets local")
                c.execute("SET synchronous_commit = local")
            return c
        except self._pg.Error as e:
            why = str(e).strip().splitlines()[0].replace(self.url, redact(self.url))
            raise StoreError(f"cannot open store {redact(self.url)}: {why}") from e

    def collect(self):
        """Prometheus metrics of this store beside the collector's (CollectorHandle.collect)."""
        from prometheus_client.core import CounterMetricFamily

        for key, help_ in (("partitions_dropped", "Event partitions dropped by retention"),
                           ("tail_published", "Events the live tail read from the store and fed to subscribers"),
                           ("tail_errors", "Live tail failures (reconnects, failed publishes)")):
            yield CounterMetricFamily(f"nodewarden_collector_store_{key}", help_, value=self.stats[key])

    # -- partitions and retention -----------------------------------------------------------------

    @staticmethod
    def _partition(lo: int) -> str:
        return "events_" + time.strftime("%Y%m%d_%H%M%S", time.gmtime(lo // 10**9))

    def _partitions(self, c) -> list[tuple[str, int, int]]:
        """(name, lo, hi) of the time partitions, oldest first (the default one is not listed)."""
        rows = c.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass").fetchall()
        out = []
        for name, bound in rows:
            if "FROM (" not in bound:
                continue  # DEFAULT
            lo = int(bound.split("FROM (", 1)[1].split(")", 1)[0].strip("' "))
            hi = int(bound.split("TO (", 1)[1].split(")", 1)[0].strip("' "))
            out.append((name, lo, hi))
        return sorted(out, key=lambda p: p[1])

    def _make_partitions(self, initial: bool = False) -> None:
        """Partitions from now (back to the retention age at start) to `partitions_ahead` ahead."""
        width = self.partition_ns
        real = time.time_ns()
        now = real // width * width
        first = now - width
        if initial and self.retention_age_ns:  # the oldest one retention keeps, at most _MAX_PARTITIONS back
            first = max((real - self.retention_age_ns) // width * width, now - _MAX_PARTITIONS * width)
        c = self._conn
        c.execute("SET lock_timeout = '5s'")  # DDL waits behind other replicas' commits, never for long
        try:
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_DDL,))
                have = [(lo, hi) for _, lo, hi in self._partitions(c)]
                for lo in range(first, now + (self.partitions_ahead + 1) * width, width):
                    # Skip what existing partitions cover (made with another partition_s, say).
                    if not any(a < lo + width and lo < b for a, b in have):
                        self._add_partition(c, lo, lo + width)
        except self._pg.Error as e:
            log.warning("store: making partitions: %s (retried at the next retention pass)", str(e).strip())
        finally:
            c.execute("RESET lock_timeout")

    def _add_partition(self, c, lo: int, hi: int) -> None:
        name = self._partition(lo)
        moved = c.execute("SELECT 1 FROM events_default WHERE ts >= %s AND ts < %s LIMIT 1", (lo, hi)).fetchone()
        if moved is None:
            c.execute(f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ({lo}) TO ({hi})")
            return
        # Skewed clocks already put rows of this range in the default partition: PostgreSQL refuses a
        # partition that would hide them, so they move into the new table before it is attached.
        c.execute(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS)")
        c.execute(f"WITH m AS (DELETE FROM events_default WHERE ts >= %s AND ts < %s RETURNING *) "
                  f"INSERT INTO {name} SELECT * FROM m", (lo, hi))
        c.execute(f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")

    def used_bytes(self) -> int:
        return int(self._conn.execute("SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) "
                                      "FROM pg_inherits i WHERE i.inhparent = 'events'::regclass").fetchone()[0])

    def enforce_retention(self) -> int:
        """Drop the partitions older than the age limit, then the oldest while over the size limit
        (never the newest partition that holds rows); trim the default partition by age. One replica
        at a time does it (a try-lock: the others skip this pass)."""
        self._last_retention = time.monotonic()
        c = self._conn
        deleted = 0
        try:
            self._make_partitions()
            if not c.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_DDL + 1,)).fetchone()[0]:
                return 0
            try:
                c.execute("SET lock_timeout = '5s'")
                parts = self._partitions(c)
                now = time.time_ns()
                doomed = []
                if self.retention_age_ns:
                    cutoff = now - self.retention_age_ns
                    doomed = [p for p in parts if p[2] <= cutoff]
                    deleted += c.execute("DELETE FROM events_default WHERE ts < %s", (cutoff,)).rowcount
                if self.retention_bytes:
                    left = [p for p in parts if p not in doomed]
                    sizes = {n: int(c.execute("SELECT pg_total_relation_size(%s::regclass)", (n,)).fetchone()[0])
                             for n, _, _ in left}
                    used = sum(sizes.values())
                    newest = max((p for p in left if p[1] <= now), key=lambda p: p[1], default=None)
                    for p in left:
                        if used <= self.retention_bytes or p == newest:
                            break
                        doomed.append(p)
                        used -= sizes[p[0]]
                for name, _lo, _hi in doomed:
                    n = c.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                    c.execute(f"DROP TABLE IF EXISTS {name}")
                    deleted += n
                    self.stats["partitions_dropped"] += 1
                    log.info("store: retention dropped partition %s (%d events)", name, n)
            finally:
                c.execute("RESET lock_timeout")
                c.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_DDL + 1,))
        except self._pg.Error as e:
            log.error("store: retention failed: %s", str(e).strip())
            self._reconnect_if_broken()
        self.stats["retention_deleted"] += deleted
        return deleted

    # -- writer -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nw-collector-pg-writer", daemon=True)
        self._thread.start()
        self._tail_thread = threading.Thread(target=self._tail_loop, name="nw-collector-pg-tail", daemon=True)
        self._tail_thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(10)
        try:
            self._conn.execute(f"NOTIFY {_CHANNEL}")  # wakes the tail (and the other replicas' once)
        except self._pg.Error:
            pass
        for t in (self._thread, self._tail_thread):
            if t is not None:
                t.join(10)
        for c in [self._conn, *self._drain_pool()]:
            try:
                c.close()
            except Exception:
                pass

    def _reconnect_if_broken(self) -> None:
        if self._conn.broken or self._conn.closed:
            try:
                self._conn = self._connect("writer")
            except StoreError as e:
                log.error("store: %s", e)

    def _streams_of(self, keys: dict) -> None:
        """Stream ids for new (agent, boot) keys (made if missing; outside the commit: harmless alone)."""
        c = self._conn
        for key, node in keys.items():
            if key in self._stream_ids:
                continue
            row = c.execute("INSERT INTO streams (agent_id, boot_id, node) VALUES (%s, %s, %s) "
                            "ON CONFLICT (agent_id, boot_id) DO NOTHING RETURNING id, node", (*key, node)).fetchone()
            if row is None:
                row = c.execute("SELECT id, node FROM streams WHERE agent_id = %s AND boot_id = %s", key).fetchone()
            self._stream_ids[key], self._nodes[key] = row

    def _commit(self, group: list[PendingWrite]) -> None:
        keys: dict = {}
        ok = []
        for w in group:
            try:
                keys.update(build_rows(w))
                ok.append(w)
            except BatchError as e:  # that batch alone; nothing of it is written
                w.rows = []
                w.error = e
                w.done.set()
        if not ok:
            return
        c = self._conn
        try:
            self._streams_of(keys)
            published = self._transaction(c, ok)
        except Exception as e:  # connection lost, disk full, ...: the agents resend
            log.error("store: commit failed: %s", str(e).strip())
            self.stats["write_errors"] += 1
            self._reconnect_if_broken()
            for w in ok:
                w.rows = []
                w.error = e
                w.done.set()
            return
        self.stats["commits"] += 1
        for w in ok:
            self.stats["stored"] += w.stored
            self.stats["duplicates"] += w.duplicates
            w.rows = []
            w.done.set()
        if published and self._publish is not None:
            try:
                self._publish(published)
            except Exception:
                log.exception("store: publish failed")

    def _transaction(self, c, group: list[PendingWrite]) -> list:
        ids = self._stream_ids
        now = time.time_ns()
        with c.transaction():
            sids = sorted({ids[r[0]] for w in group for r in w.rows})
            marks = dict(c.execute("SELECT id, last_seq FROM streams WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                                   (sids,)).fetchall())
            start = dict(marks)
            fresh: list[list] = []  # per write: its rows that go in, as (stream, row)
            later: dict[int, list] = defaultdict(list)  # stream -> seqs at or below its mark: look them up
            for w in group:
                mine = []
                for r in w.rows:
                    sid = ids[r[0]]
                    seq = r[1]
                    if seq > marks[sid]:
                        marks[sid] = seq
                        mine.append((sid, r, False))
                    else:
                        later[sid].append(seq)
                        mine.append((sid, r, True))
                fresh.append(mine)
            stored: dict[int, set] = {}
            for sid, seqs in later.items():
                stored[sid] = {s for (s,) in c.execute("SELECT seq FROM events WHERE stream = %s AND seq = ANY(%s)",
                                                       (sid, seqs))}
            rows = []
            for w, mine in zip(group, fresh, strict=True):
                for sid, r, check in mine:
                    if check:
                        seen = stored[sid]
                        if r[1] in seen:
                            w.duplicates += 1
                            continue
                        seen.add(r[1])
                    elif sid in stored:
                        stored[sid].add(r[1])  # so a later copy in this same commit is a duplicate
                    rows.append((w, sid, r))
            published = []
            if rows:
                # Ids in commit order (see the module doc): allocated under the lock, held to COMMIT.
                c.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_IDS,))
                last = c.execute("SELECT setval('event_ids', nextval('event_ids') + %s)",
                                 (len(rows) - 1,)).fetchone()[0]
                rid = last - len(rows) + 1
                cur = c.cursor()
                with cur.copy(_COPY) as cp:
                    cp.set_types(_TYPES)
                    for w, sid, r in rows:
                        cp.write_row((rid, sid, r[1], r[2], now, *r[3:]))
                        w.stored += 1
                        if self._publish is not None:
                            key = r[0]
                            published.append((rid, (r[2], r[3], r[4], r[5], r[6], r[7], r[8], self._nodes[key],
                                                    key[0], r[9], r[10]), r[11]))
                        rid += 1
                grown = [(marks[s], s) for s in sids if marks[s] > start[s]]
                if grown:
                    cur.executemany("UPDATE streams SET last_seq = %s WHERE id = %s", grown)
                c.execute(f"NOTIFY {_CHANNEL}")
        return published

    # -- live tail ----------------------------------------------------------------------------------

    def _max_committed(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])

    def max_id(self) -> int:
        """The tail's cursor: every id up to it is settled and was fed to the tail (or nobody listened)."""
        with self._cursor_lock:
            return self._cursor

    def _tail_loop(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = self._connect("tail")
                    conn.execute(f"LISTEN {_CHANNEL}")
                self._tail_once(conn)
                for _ in conn.notifies(timeout=self.tail_interval, stop_after=1):
                    pass
            except Exception as e:  # psycopg's, StoreError, a publish bug: counted, logged, retried
                self.stats["tail_errors"] += 1
                log.warning("store: live tail: %s", str(e).strip().splitlines()[0])
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                self._stop.wait(1.0)
        if conn is not None:
            conn.close()

    def _tail_once(self, conn) -> None:
        while not self._stop.is_set():
            listening = self._tail is not None and (self._listening is None or self._listening())
            if not listening:
                # Nobody to feed: jump to the end. Under the lock, so a subscriber that registers now
                # reads the new cursor and replays everything up to it from the store.
                top = int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
                with self._cursor_lock:
                    if self._tail is None or self._listening is None or not self._listening():
                        self._cursor = max(self._cursor, top)
                        return
            rows = conn.execute(_TAIL, (self._cursor, _TAIL_PAGE)).fetchall()
            if not rows:
                return
            with self._cursor_lock:  # before publishing: see Subscribe's cut-off in server.py
                self._cursor = rows[-1][0]
            try:
                self._tail([(r[0], r[1:12], r[12]) for r in rows])
                self.stats["tail_published"] += len(rows)
            except Exception:
                self.stats["tail_errors"] += 1
                log.exception("store: live tail publish failed")
            if len(rows) < _TAIL_PAGE:
                return

    # -- reading ------------------------------------------------------------------------------------

    def _reader(self):
        try:
            c = self._pool.get_nowait()
            if not (c.closed or c.broken):
                return c
        except queue.Empty:
            pass
        return self._connect()

    def _give_back(self, c) -> None:
        if c.closed or c.broken or c.info.transaction_status != self._pg.pq.TransactionStatus.IDLE:
            c.close()
            return
        try:
            self._pool.put_nowait(c)
        except queue.Full:
            c.close()

    def _drain_pool(self) -> list:
        out = []
        while True:
            try:
                out.append(self._pool.get_nowait())
            except queue.Empty:
                return out

    def query(self, flt: EventFilter, limit: int, after: tuple[int, int] | None = None, max_id: int = 0):
        """Rows (id, ts, body) matching `flt`, ordered by (ts, id), after `after`, up to id max_id."""
        where, params = pg_where(flt)
        if max_id:
            where += " AND id <= %s"
            params.append(max_id)
        if after is not None:
            where += " AND (ts, id) > (%s, %s)"
            params += [after[0], after[1]]
        sql = f"SELECT id, ts, body FROM events WHERE {where} ORDER BY ts, id LIMIT %s"
        c = self._reader()
        try:
            with c.transaction(), c.cursor(name="nw_query") as cur:  # server-side: memory stays bounded
                cur.itersize = 500
                cur.execute(sql, [*params, min(limit, 1 << 62)])
                for row in cur:
                    yield row[0], row[1], bytes(row[2])
        finally:
            self._give_back(c)

    def query_recent(self, flt: EventFilter, limit: int, before: tuple[int, int] | None = None):
        """Rows (id, ts, body) matching `flt`, newest first ((ts, id) descending), strictly before the
        cursor `before` (the console's list: a backward walk of each partition's (ts, id) index)."""
        where, params = pg_where(flt)
        if before is not None:
            where += " AND (ts, id) < (%s, %s)"
            params += [before[0], before[1]]
        sql = f"SELECT id, ts, body FROM events WHERE {where} ORDER BY ts DESC, id DESC LIMIT %s"
        c = self._reader()
        try:
            with c.transaction(), c.cursor(name="nw_recent") as cur:
                cur.itersize = 200
                cur.execute(sql, [*params, min(limit, 1 << 62)])
                for row in cur:
                    yield row[0], row[1], bytes(row[2])
        finally:
            self._give_back(c)

    def get_body(self, rowid: int) -> bytes | None:
        """One stored event's bytes by id (None when retention took it)."""
        c = self._reader()
        try:
            row = c.execute("SELECT body FROM events WHERE id = %s", (rowid,)).fetchone()
            return bytes(row[0]) if row else None
        finally:
            self._give_back(c)

    def explain(self, flt: EventFilter) -> str:
        where, params = pg_where(flt)
        c = self._reader()
        try:
            plan = c.execute(f"EXPLAIN SELECT id FROM events WHERE {where} ORDER BY ts, id", params).fetchall()
            return "\n".join(r[0] for r in plan)
        finally:
            self._give_back(c)

    def streams(self) -> list[tuple]:
        c = self._reader()
        try:
            return [tuple(r) for r in c.execute("SELECT agent_id, boot_id, node, last_seq FROM streams").fetchall()]
        finally:
            self._give_back(c)

