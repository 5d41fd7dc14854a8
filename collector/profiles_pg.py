"""Behaviour profiles on PostgreSQL (`--store postgresql://...`): what lets collector replicas share them.

The same interface as collector/profiles.py's ProfileTable (push, get, agent_docs, count, close,
`stats`), the same checks and the same merge (parse_doc, merge_docs), in two tables of the events'
database: `profiles` (the merged document per key) and `profile_docs` (each agent's latest one).
With SQLite each replica had a file of its own, so an agent that fetched from replica B missed what
another pushed to replica A; here every replica reads and writes the same rows.

Concurrency: a push is one transaction that takes the key's row lock (SELECT ... FOR UPDATE) and
merges under it, so two replicas pushing the same key at once are serialized by PostgreSQL and both
documents land in the merge (neither overwrites the other's read-modify-write). A key's first push
inserts with ON CONFLICT DO NOTHING: when another replica inserted it first, the push retries and
takes that row's lock instead. Within one replica a lock serializes pushes on its one connection
(pushes are rare: an agent sends at most one per flush_s, and only when its profile changed).

max_profiles is checked against the table's count at the time of a new key's insert; two replicas
adding new keys at the same instant can each pass it once (the bound is off by at most one per
replica, never unbounded). A broken connection is reopened on the next call; the failed call is
UNAVAILABLE to the agent, which retries (agent/outputs/profilesync.py).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import orjson

from collector.profiles import DocError, ProfileLimits, _same, merge_docs, parse_doc
from collector.store import StoreError
from collector.store_pg_rows import check_url, connect_side, one_line, redact

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    key TEXT COLLATE "C" PRIMARY KEY,
    revision BIGINT NOT NULL,    -- +1 on each change of the merged document
    agents INTEGER NOT NULL,     -- agents whose document is kept for this key
    mode TEXT NOT NULL,
    updated BIGINT NOT NULL,     -- ns, last change
    doc BYTEA NOT NULL           -- the merged document, JSON
);
CREATE TABLE IF NOT EXISTS profile_docs (
    key TEXT COLLATE "C" NOT NULL,
    agent_id TEXT COLLATE "C" NOT NULL,
    node TEXT NOT NULL,
    updated BIGINT NOT NULL,     -- ns, last push
    doc BYTEA NOT NULL,          -- that agent's latest document, as it sent it
    PRIMARY KEY (key, agent_id)
);
"""
_LOCK_SCHEMA = 0x4E57_0003  # advisory lock key ("NW"): two replicas starting at once make the tables once
_RETRIES = 5  # a first push racing another replica's first push of the same key: retried, bounded


class ProfileStoreError(sqlite3.Error):
    """A PostgreSQL failure of the profile tables. A subclass of sqlite3.Error only so that
    ProfileService (collector/profiles.py) answers it as it answers a failed SQLite file:
    UNAVAILABLE, one line, and the agent retries."""


class PgProfileTable:
    """The profiles of a PostgreSQL store, shared by every replica that uses it."""

    def __init__(self, url: str, limits: ProfileLimits | None = None):
        check_url(url)
        import psycopg

        self._pg = psycopg
        self.url = url
        self.path = redact(url)  # what ProfileTable calls `path`: for messages, without the password
        self.limits = limits if limits is not None else ProfileLimits()
        self._lock = threading.Lock()
        self._conn = None
        self._keys = 0
        self.stats = {"profile_pushes": 0, "profile_changes": 0, "profile_refused": 0, "profile_gets": 0,
                      "profile_misses": 0, "profile_merge_overflow": 0, "profile_docs_unkept": 0,
                      "profile_write_errors": 0}
        try:
            c = self._connection()
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SCHEMA,))
                c.execute(_SCHEMA)
            self._keys = c.execute("SELECT count(*) FROM profiles").fetchone()[0]
        except (self._pg.Error, ProfileStoreError) as e:
            self.close()
            # as PgStore's setup failure: StoreError, one line (no rights to make tables, a standby, ...)
            raise StoreError(f"cannot set up the profile tables in {self.path}: {one_line(e)}") from None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect_side(self._pg, self.url, self.path, "nodewarden-collector-profiles", ProfileStoreError)
        return self._conn

    def _failed(self, e: Exception) -> ProfileStoreError:
        """A failed statement: the connection is dropped if it broke (reopened on the next call)."""
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
        return ProfileStoreError(f"profile store {self.path}: {one_line(e)}")

    def count(self) -> int:
        """Keys held, as of this replica's last push or scrape (a scrape must not fail on a busy store)."""
        with self._lock:
            try:
                self._keys = self._connection().execute("SELECT count(*) FROM profiles").fetchone()[0]
            except (self._pg.Error, ProfileStoreError) as e:
                log.debug("profiles: count: %s", e)
        return self._keys

    def push(self, agent_id: str, node: str, raw: bytes) -> tuple[str, bool, int, int]:
        """(key, changed, revision, agents) once committed. DocError for a refused document,
        OverflowError past max_profiles, ProfileStoreError when PostgreSQL cannot take it."""
        try:
            doc = parse_doc(raw, self.limits)  # outside the lock: other pushes need not wait for it
        except DocError:
            with self._lock:
                self.stats["profile_refused"] += 1
            raise
        key = doc["key"]
        with self._lock:
            for _ in range(_RETRIES):
                try:
                    got = self._push_once(agent_id, node, raw, doc)
                except OverflowError:
                    self.stats["profile_refused"] += 1
                    raise
                except ProfileStoreError:  # could not connect
                    self.stats["profile_write_errors"] += 1
                    raise
                except self._pg.Error as e:
                    self.stats["profile_write_errors"] += 1
                    raise self._failed(e) from None
                if got is not None:
                    break
            else:
                self.stats["profile_write_errors"] += 1
                raise ProfileStoreError(f"profile store {self.path}: {key} kept changing under {_RETRIES} tries")
            changed, revision, agents, left, keep, new_key = got
            self._keys += new_key
            self.stats["profile_pushes"] += 1
            self.stats["profile_changes"] += changed
            self.stats["profile_merge_overflow"] += left
            self.stats["profile_docs_unkept"] += not keep
        return key, changed, revision, agents

    def _push_once(self, agent_id: str, node: str, raw: bytes, doc: dict):
        """One transaction; None when another replica inserted the key first (try again)."""
        key = doc["key"]
        now = time.time_ns()
        c = self._connection()
        with c.transaction():
            # The row lock: every replica's push of this key waits here for the one before it.
            row = c.execute("SELECT revision, agents, doc FROM profiles WHERE key=%s FOR UPDATE", (key,)).fetchone()
            if row is None:
                n = c.execute("SELECT count(*) FROM profiles").fetchone()[0]
                if n >= self.limits.max_profiles:
                    raise OverflowError(f"the collector holds {n} profiles, its limit; {key} is not kept")
            known = c.execute("SELECT 1 FROM profile_docs WHERE key=%s AND agent_id=%s",
                              (key, agent_id)).fetchone()
            agents = row[1] if row is not None else 0
            keep = known is not None or agents < self.limits.max_agents_per_key
            if row is None:
                merged, revision, changed, left = {**doc, "revision": 1}, 1, True, 0
            else:
                base = orjson.loads(bytes(row[2]))
                merged, left = merge_docs(base, doc, self.limits.max_items)
                changed = not _same(merged, base)
                revision = row[0] + 1 if changed else row[0]
                merged["revision"] = revision
            new_agent = known is None and keep
            if new_agent:
                agents += 1
            if row is None:
                cur = c.execute("INSERT INTO profiles (key, revision, agents, mode, updated, doc) "
                                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (key) DO NOTHING",
                                (key, revision, agents, merged["mode"], now, orjson.dumps(merged)))
                if cur.rowcount == 0:  # another replica's first push won: merge into its row instead
                    return None
            elif changed or new_agent:
                c.execute("UPDATE profiles SET revision=%s, agents=%s, mode=%s, updated=%s, doc=%s WHERE key=%s",
                          (revision, agents, merged["mode"], now, orjson.dumps(merged), key))
            if keep:
                c.execute("INSERT INTO profile_docs (key, agent_id, node, updated, doc) VALUES (%s,%s,%s,%s,%s) "
                          "ON CONFLICT (key, agent_id) DO UPDATE SET node=excluded.node, "
                          "updated=excluded.updated, doc=excluded.doc", (key, agent_id, node, now, raw))
        return changed, revision, agents, left, keep, row is None

    def get(self, key: str) -> tuple[bytes, int, int]:
        """(merged document, revision, agents); (b"", 0, 0) for a key no replica knows."""
        with self._lock:
            try:
                row = self._connection().execute("SELECT doc, revision, agents FROM profiles WHERE key=%s",
                                                 (key,)).fetchone()
            except self._pg.Error as e:
                raise self._failed(e) from None
            self.stats["profile_gets"] += 1
            self.stats["profile_misses"] += row is None
        if row is None:
            return b"", 0, 0
        return bytes(row[0]), row[1], row[2]

    def agent_docs(self, key: str) -> list[tuple[str, str, bytes]]:
        """(agent_id, node, document) of each agent kept for `key`, whichever replica it pushed to."""
        with self._lock:
            try:
                rows = self._connection().execute(
                    "SELECT agent_id, node, doc FROM profile_docs WHERE key=%s ORDER BY agent_id", (key,)).fetchall()
            except self._pg.Error as e:
                raise self._failed(e) from None
        return [(a, n, bytes(d)) for a, n, d in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except self._pg.Error as e:
                    log.warning("profiles: close: %s", e)
                self._conn = None
