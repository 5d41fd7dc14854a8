"""Profiles on disk: one JSON document per profile under the state dir, written crash-safe, and the
control requests through which the CLI talks to a running agent.

    <directory>/<sha256(key)[:24]>.json          a profile (model.py's document)
    <directory>/<name>.bad                        a file that did not load, moved aside (never fatal)
    <directory>/requests/<name>.json              {"op": "lock"|"unlock"|"forget"|"import", "key": ..., ...}
    <directory>/requests/<name>.done              {"ok": bool, "error": "..."}, written once applied

A write goes to a temporary file in the same directory, is fsync'ed, renamed over the old file and the
directory fsync'ed: after a crash the file is the old document or the new one, never a torn mix.
The CLI writes a request the same way (a name starting with "." is a file being written: skipped).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

import orjson

from agent.detect.profile.model import MODES, Profile
from agent.durable import fsync_dir, write_atomic
from agent.ratelog import RateLog

log = logging.getLogger("nodewarden.profiles")

MAX_FILE = 16 << 20  # a profile is tens of KiB; a bigger file is not one of ours
MAX_REQUESTS = 64  # applied per tick; more wait for the next one
_PARTIAL_S = 5.0  # a request that does not parse yet may still be being written (by a careless writer)
OPS = ("lock", "unlock", "forget", "import")


def file_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


class ProfileStore:
    def __init__(self, directory: str, max_items: int | None = None, max_deviations: int | None = None):
        self.directory = directory
        self.requests_dir = os.path.join(directory, "requests")
        self.max_items = max_items
        self.max_deviations = max_deviations
        self.errors = 0  # files that did not load, writes that failed (profile.store_errors)
        self._rlog = RateLog(log)

    def path_of(self, key: str) -> str:
        return os.path.join(self.directory, file_id(key) + ".json")

    def _ensure(self) -> None:
        os.makedirs(self.requests_dir, mode=0o700, exist_ok=True)

    # -- profiles -----------------------------------------------------------------------------------

    def load_all(self) -> list[Profile]:
        """Every profile in the directory. A file that does not load is logged (one line), moved aside to
        <name>.bad and counted; two files of one key are merged."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as e:
            self.errors += 1
            log.error("profiles: cannot list %s: %s", self.directory, e)
            return []
        out: dict[str, Profile] = {}
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = os.path.join(self.directory, name)
            try:
                p = self._load(path)
            except (OSError, ValueError) as e:  # orjson.JSONDecodeError is a ValueError
                self.errors += 1
                log.warning("profiles: %s does not load (%s); moved aside to .bad", path, str(e)[:200])
                try:
                    os.replace(path, path[: -len(".json")] + ".bad")
                except OSError as e2:
                    log.warning("profiles: cannot move %s aside: %s", path, e2)
                continue
            if name != file_id(p.key) + ".json":  # copied in by hand: kept under its proper name
                try:
                    self.save(p)
                    os.unlink(path)
                except OSError as e:
                    self.errors += 1
                    log.warning("profiles: cannot rename %s to its key's file: %s", path, e)
            if p.key in out:
                out[p.key].merge(p, self.max_items, self.max_deviations)
            else:
                out[p.key] = p
        return list(out.values())

    def _load(self, path: str) -> Profile:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
        if len(data) > MAX_FILE:
            raise ValueError(f"larger than {MAX_FILE} bytes")
        return Profile.from_doc(orjson.loads(data), self.max_items, self.max_deviations)

    def save(self, p: Profile, sync_dir: bool = True) -> None:
        """Raises OSError; the engine counts it (profile.store_errors) and tries again at its next flush."""
        self.save_doc(p.key, p.to_doc(), sync_dir)

    def save_doc(self, key: str, doc: dict, sync_dir: bool = True) -> None:
        """A document taken earlier (the engine takes it under its lock, writes it outside). Raises OSError."""
        self._ensure()
        write_atomic(self.path_of(key), orjson.dumps(doc), sync_dir)

    def save_many(self, profiles) -> int:
        """Save each (one directory fsync for all); returns how many failed (counted, logged once a minute)."""
        failed = 0
        wrote = False
        for p in profiles:
            try:
                self.save(p, sync_dir=False)
                wrote = True
            except OSError as e:
                failed += 1
                self.errors += 1
                self._rlog.error("save", "profiles: cannot save %s: %s", p.key, e)
        if wrote:
            try:
                fsync_dir(self.directory)
            except OSError as e:
                self.errors += 1
                self._rlog.error("fsync", "profiles: cannot fsync %s: %s", self.directory, e)
        return failed

    def remove(self, key: str) -> None:
        try:
            os.unlink(self.path_of(key))
        except FileNotFoundError:
            return
        except OSError as e:
            self.errors += 1
            log.warning("profiles: cannot remove the profile of %s: %s", key, e)
            return
        try:
            fsync_dir(self.directory)
        except OSError:
            pass

    # -- control requests ---------------------------------------------------------------------------

    def pending(self, now: float | None = None) -> list[tuple[str, dict | None, str]]:
        """Requests waiting, oldest first, at most MAX_REQUESTS: (name, request or None, error). A request
        that does not parse is returned with its error once it is older than a few seconds (it may still be
        being written before that)."""
        try:
            names = [n for n in os.listdir(self.requests_dir) if n.endswith(".json") and not n.startswith(".")]
        except OSError:
            return []
        now = time.time() if now is None else now
        out = []
        for name in sorted(names):
            path = os.path.join(self.requests_dir, name)
            stem = name[: -len(".json")]
            try:
                st = os.stat(path)
                if st.st_size > MAX_FILE:
                    out.append((stem, None, f"request larger than {MAX_FILE} bytes"))
                    continue
                with open(path, "rb") as f:
                    req = orjson.loads(f.read())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                if now - _mtime(path) < _PARTIAL_S:
                    continue
                out.append((stem, None, f"request does not parse: {str(e)[:200]}"))
                continue
            out.append((stem, req, ""))
            if len(out) >= MAX_REQUESTS:
                break
        return out

    def finish(self, name: str, ok: bool, error: str = "") -> None:
        """Answer a request (<name>.done) and remove it. Never raises (counted)."""
        try:
            write_atomic(os.path.join(self.requests_dir, name + ".done"),
                         orjson.dumps({"ok": ok, "error": error}), sync_dir=False)
            os.unlink(os.path.join(self.requests_dir, name + ".json"))
        except OSError as e:
            self.errors += 1
            self._rlog.error("request", "profiles: cannot answer request %s: %s", name, e)

    def apply_offline(self, req: dict, now: float | None = None) -> tuple[bool, str]:
        """Apply one request straight to the files (the CLI, when no agent runs)."""
        profiles = {p.key: p for p in self.load_all()}
        before = {k: p.revision for k, p in profiles.items()}
        ok, err = apply_request(profiles, req, now)
        if not ok:
            return ok, err
        try:
            for key in before.keys() - profiles.keys():
                self.remove(key)
            for key, p in profiles.items():
                if before.get(key) != p.revision:
                    self.save(p)
        except OSError as e:
            return False, f"cannot save: {e}"
        return True, ""


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def resolve(profiles: dict[str, Profile], key) -> Profile | None:
    """A profile by its key or its file id (the name of its file, without .json)."""
    if not isinstance(key, str) or not key:
        return None
    p = profiles.get(key)
    if p is not None:
        return p
    stem = key[: -len(".json")] if key.endswith(".json") else key
    if len(stem) == 24:
        for p in profiles.values():
            if file_id(p.key) == stem:
                return p
    return None


def apply_request(profiles: dict[str, Profile], req, now: float | None = None,
                  max_items: int | None = None) -> tuple[bool, str]:
    """Apply one control request to `profiles` (key -> Profile) in place; (ok, one-line error).

    lock: mode = req["mode"] (default protecting), locked by the user. unlock: back to learning with a fresh
    window (run time and deviations cleared, so what was flagged can be learned now). forget: the profile is
    removed (the caller removes its file). import: req["doc"] merged into the profile of its key, or added.
    The caller saves what changed (revision) and removes what is gone."""
    now = time.time() if now is None else now
    if not isinstance(req, dict):
        return False, "request is not an object"
    op = req.get("op")
    if op not in OPS:
        return False, f"unknown op {str(op)[:40]!r} (one of {', '.join(OPS)})"
    if op == "import":
        try:
            new = Profile.from_doc(req.get("doc"), max_items)
        except ValueError as e:
            return False, f"import: {e}"
        old = profiles.get(new.key)
        if old is None:
            profiles[new.key] = new
            new.revision += 1
        else:
            old.merge(new, max_items)
        return True, ""
    p = resolve(profiles, req.get("key"))
    if p is None:
        return False, f"no profile {str(req.get('key'))[:200]!r}"
    if op == "forget":
        del profiles[p.key]
        return True, ""
    if op == "lock":
        mode = req.get("mode") or "protecting"
        if mode not in MODES or mode == "learning":
            return False, f"lock: mode {str(mode)[:40]!r} is not monitoring or protecting"
        if not p.items["exec"] and mode == "protecting":
            return False, "lock: the profile has learned no executable; protecting it would kill every exec"
        p.mode, p.locked_by = mode, "user"
    else:  # unlock
        p.mode, p.locked_by = "learning", ""
        p.run_s = p.quiet_run_s = 0.0
        p.stable_since = now
        for tab in p.deviations.values():
            tab.clear()
    p.mode_ts = max(now, p.mode_ts + 1e-6)  # strictly newer: the collector's merge keeps the latest change
    p.revision += 1
    return True, ""
