"""PolicyStore: the policy in force, reloaded from its file when it changes.

A poll thread stats the file every `interval` seconds (bounded; inotify would miss a ConfigMap's
symlink swap unless it watched the directory, and a stat per second costs nothing). A changed
file is parsed and validated whole; if valid it replaces the current policy in one reference
assignment (readers never see a half policy), if not the old policy stays and the error is kept
in `last_error` and logged once per distinct error.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from agent.policy.loader import PolicyError, load
from agent.policy.model import ImagePolicy

log = logging.getLogger("nodewarden.policy")


class PolicyStore:
    def __init__(self, path: str | None = None, interval: float = 1.0, on_change: Callable | None = None,
                 on_reject: Callable[[str], None] | None = None,
                 check: Callable[[ImagePolicy], None] | None = None):
        """Loads the file now: a bad file at start raises PolicyError (the agent must not start on a
        policy it cannot read). path None: the built-in defaults, never reloaded. on_reject(message):
        once per distinct refused reload (the agent reports it; the old policy stays). check(policy): what
        a higher stage validates before a policy takes effect (the detection rules compile); it raises
        PolicyError to refuse the policy."""
        self.path = path
        self.interval = max(0.1, float(interval))
        self.on_change = on_change
        self.on_reject = on_reject
        self.check_policy = check
        self.last_error = ""
        self.reloads = 0
        self.rejected = 0
        self._stamp = self._stat()
        self._policy = self._load() if path else ImagePolicy()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ImagePolicy:
        return self._policy

    def _stat(self):
        if not self.path:
            return None
        try:
            st = os.stat(self.path)  # follows the symlink: a ConfigMap update swaps its target
            return (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            return None

    def check(self) -> bool:
        """Reload if the file changed since the last look; True when a new policy took effect."""
        stamp = self._stat()
        if stamp == self._stamp or not self.path:
            return False
        self._stamp = stamp
        if stamp is None:
            self._reject(f"{self.path}: file disappeared; keeping the policy in force")
            return False
        try:
            policy = self._load()
        except PolicyError as e:
            self._reject(str(e))
            return False
        self._policy = policy
        self.reloads += 1
        self.last_error = ""
        log.info("image policy reloaded from %s (%s)", self.path, policy.fingerprint)
        if self.on_change:
            try:
                self.on_change(policy)
            except Exception:
                log.exception("policy on_change callback failed")
        return True

    def _load(self) -> ImagePolicy:
        policy = load(self.path)
        if self.check_policy is not None:
            self.check_policy(policy)
        return policy

    def _reject(self, msg: str) -> None:
        self.rejected += 1
        first = msg != self.last_error
        if first:
            log.error("image policy rejected, previous policy stays in force: %s", msg.replace("\n", "; "))
        self.last_error = msg
        if first and self.on_reject:
            try:
                self.on_reject(msg)
            except Exception:
                log.exception("policy on_reject callback failed")

    def start(self) -> PolicyStore:
        if self.path and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="policy-reload", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the reloader die: the policy in force stays
                log.exception("policy reload check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
