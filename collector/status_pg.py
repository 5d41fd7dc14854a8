"""The console's per-event status on PostgreSQL (`--store postgresql://...`): shared by replicas.

collector/status.py's StatusBackend (get_many, set, ids_with, prune, close) on a table
`event_status` of the events' database, so that an event marked handled through one replica's
console reads back handled through every other's (with SQLite each replica kept a file of its own).
Event ids are the PostgreSQL store's ids, the same on every replica. The same rules as StatusTable:
unhandled is the default and is never stored; a row whose event retention dropped is never shown
and `prune(min_id)` removes it. Writes are rare (a person clicking): one connection under a lock,
reopened after a failure; a failure is a StatusStoreError (the console answers 500, one line).
"""

from __future__ import annotations

import logging
import threading
import time

from collector.status import _MAX_BY, _MAX_NOTE, STATUSES, StatusError
from collector.store import StoreError
from collector.store_pg_rows import check_url, connect_side, one_line, redact

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_status (
    event_id BIGINT PRIMARY KEY,
    status TEXT NOT NULL,
    marked_by TEXT NOT NULL DEFAULT '',   -- "by" is an SQL keyword
    note TEXT NOT NULL DEFAULT '',
    updated BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_status_status ON event_status (status, event_id);
"""
_LOCK_SCHEMA = 0x4E57_0004  # advisory lock key ("NW"): replicas starting at once make the table once


class StatusStoreError(StoreError):
    """PostgreSQL could not read or write a status (one line)."""


class PgStatusTable:
    """Per-event status in PostgreSQL."""

    def __init__(self, url: str):
        check_url(url)
        import psycopg

        self._pg = psycopg
        self.url = url
        self.path = redact(url)
        self._lock = threading.Lock()
        self._conn = None
        self.stats = {"status_changes": 0, "status_errors": 0}
        try:
            with self._lock:
                c = self._connection()
                with c.transaction():
                    c.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SCHEMA,))
                    c.execute(_SCHEMA)
        except (self._pg.Error, StatusStoreError) as e:
            self.close()
            raise StoreError(f"cannot set up the status table in {self.path}: {one_line(e)}") from None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect_side(self._pg, self.url, self.path, "nodewarden-collector-status", StatusStoreError)
        return self._conn

    def _run(self, sql: str, params=()):
        """Rows of one statement (a list; [] for none); StatusStoreError, counted, when it fails.
        Called under self._lock."""
        try:
            cur = self._connection().execute(sql, params)
            return cur.fetchall() if cur.description is not None else cur.rowcount
        except (self._pg.Error, StatusStoreError) as e:
            self.stats["status_errors"] += 1
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._conn = None  # reopened on the next call
            raise StatusStoreError(f"status store {self.path}: {one_line(e)}") from None

    def get_many(self, ids: list[int]) -> dict[int, dict]:
        if not ids:
            return {}
        with self._lock:
            rows = self._run("SELECT event_id, status, marked_by, note, updated FROM event_status "
                             "WHERE event_id = ANY(%s)", (list(ids),))
        return {eid: {"status": st, "by": by, "note": note, "updated_unix_nano": upd}
                for eid, st, by, note, upd in rows}

    def set(self, event_id: int, status: str, by: str = "", note: str = "") -> dict:
        if status not in STATUSES:
            raise StatusError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        if len(note) > _MAX_NOTE:
            raise StatusError(f"note longer than {_MAX_NOTE} characters")
        if not isinstance(event_id, int) or isinstance(event_id, bool) or not 0 < event_id < 1 << 63:
            raise StatusError("event id must be a positive integer")
        if "\x00" in note or "\x00" in by:  # PostgreSQL text cannot hold NUL: a clear 400, not a 500
            raise StatusError("note must not contain NUL characters")
        now = time.time_ns()
        with self._lock:
            if status == "unhandled":  # the default: no row
                self._run("DELETE FROM event_status WHERE event_id = %s", (event_id,))
            else:
                self._run("INSERT INTO event_status (event_id, status, marked_by, note, updated) "
                          "VALUES (%s,%s,%s,%s,%s) ON CONFLICT (event_id) DO UPDATE SET status=excluded.status, "
                          "marked_by=excluded.marked_by, note=excluded.note, updated=excluded.updated",
                          (event_id, status, by[:_MAX_BY], note, now))
            self.stats["status_changes"] += 1
        return {"status": status, "by": by[:_MAX_BY], "note": note, "updated_unix_nano": now}

    def ids_with(self, status: str, limit: int) -> list[int]:
        """The newest `limit` event ids marked `status`, by any replica's console."""
        with self._lock:
            return [r[0] for r in self._run("SELECT event_id FROM event_status WHERE status = %s "
                                            "ORDER BY event_id DESC LIMIT %s", (status, limit))]

    def prune(self, min_id: int) -> int:
        """Drop the rows of events below `min_id` (dropped by retention)."""
        with self._lock:
            return self._run("DELETE FROM event_status WHERE event_id < %s", (min_id,))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except self._pg.Error as e:
                    log.warning("status: close: %s", e)
                self._conn = None
