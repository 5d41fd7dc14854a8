"""Per-event status for the console: unhandled (the default, never stored), handled or ignored.

Kept by the collector in a SQLite file of its own beside the events database
(`<db stem>.status.db`), so marking an event never touches the events table or its writer:
the store's group commit goes on at full speed while people triage. A row per marked event;
an event without a row is unhandled. Retention of the events store does not reach in here: a
status row whose event is gone is harmless (it is never shown) and `prune(min_id)` drops them.

`StatusBackend` is the interface the console uses; the PostgreSQL store can implement it in a
table of its own so that every replica sees the same status.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

STATUSES = ("unhandled", "handled", "ignored")
_MAX_NOTE = 1024
_MAX_BY = 128


class StatusError(ValueError):
    """A status the collector refuses (unknown word, overlong note)."""


class StatusBackend(Protocol):
    def get_many(self, ids: list[int]) -> dict[int, dict]: ...
    def set(self, event_id: int, status: str, by: str = "", note: str = "") -> dict: ...
    def ids_with(self, status: str, limit: int) -> list[int]: ...
    def close(self) -> None: ...


def status_db_path(db: str) -> str:
    p = Path(db)
    return str(p.with_name(p.stem + ".status.db"))


class StatusTable:
    """SQLite status file. Writes are rare (a person clicking), so one connection under a lock
    is enough; WAL lets the console read while another request writes."""

    def __init__(self, path: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("""CREATE TABLE IF NOT EXISTS status (
            event_id INTEGER PRIMARY KEY,
            status TEXT NOT NULL,
            by TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            updated INTEGER NOT NULL)""")
        c.execute("CREATE INDEX IF NOT EXISTS status_status ON status (status, event_id)")
        self.stats = {"status_changes": 0}

    def get_many(self, ids: list[int]) -> dict[int, dict]:
        if not ids:
            return {}
        out: dict[int, dict] = {}
        with self._lock:
            for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                part = ids[i:i + 500]
                rows = self._conn.execute(
                    f"SELECT event_id, status, by, note, updated FROM status WHERE event_id IN "
                    f"({','.join('?' * len(part))})", part).fetchall()
                for eid, st, by, note, upd in rows:
                    out[eid] = {"status": st, "by": by, "note": note, "updated_unix_nano": upd}
        return out

    def set(self, event_id: int, status: str, by: str = "", note: str = "") -> dict:
        if status not in STATUSES:
            raise StatusError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        if len(note) > _MAX_NOTE:
            raise StatusError(f"note longer than {_MAX_NOTE} characters")
        if not isinstance(event_id, int) or event_id <= 0:
            raise StatusError("event id must be a positive integer")
        now = time.time_ns()
        with self._lock:
            if status == "unhandled":  # the default: no row
                self._conn.execute("DELETE FROM status WHERE event_id = ?", (event_id,))
            else:
                self._conn.execute(
                    "INSERT INTO status (event_id, status, by, note, updated) VALUES (?,?,?,?,?) "
                    "ON CONFLICT (event_id) DO UPDATE SET status=excluded.status, by=excluded.by, "
                    "note=excluded.note, updated=excluded.updated",
                    (event_id, status, by[:_MAX_BY], note, now))
            self.stats["status_changes"] += 1
        return {"status": status, "by": by[:_MAX_BY], "note": note, "updated_unix_nano": now}

    def ids_with(self, status: str, limit: int) -> list[int]:
        """The newest `limit` event ids marked `status` (not for unhandled: that is every other id)."""
        with self._lock:
            return [r[0] for r in self._conn.execute(
                "SELECT event_id FROM status WHERE status = ? ORDER BY event_id DESC LIMIT ?", (status, limit))]

    def prune(self, min_id: int) -> int:
        """Drop the rows of events below `min_id` (deleted by retention)."""
        with self._lock:
            return self._conn.execute("DELETE FROM status WHERE event_id < ?", (min_id,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()
