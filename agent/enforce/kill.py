"""Post-start enforcement: what the agent does with each image verdict of a container.

A verdict is reported (image.verdict); the malware files it flagged are denied in the kernel for that
container (ExecEnforcer.flag_paths); a container it blocks that is running already is killed through
containerd's Tasks API and the kill is reported (enforcement.block at containerd.kill), on the image's
verdict only, never on a timeout verdict (a running container waits for the scan to end). This is the
path for a container that started while the agent was down, without a pre-start gate, or before a slow
scan finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.events import ContainerInfo, EnforcementEvent, VerdictEvent
from agent.imagegate.service import flagged_paths

log = logging.getLogger("nodewarden.enforce")


class ContainerKiller:
    """SIGKILL to every process of a container's task, through containerd (one client, made on first use)."""

    def __init__(self, client_factory: Callable):
        self._factory = client_factory
        self._client = None
        self._lock = threading.Lock()

    def kill(self, namespace: str, container_id: str) -> str:
        """"killed", or "kill failed: <why>" (containerd away: the next relisting brings it back to us)."""
        try:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
                client = self._client
            client.kill(namespace, container_id, signal=9, all=True)
            return "killed"
        except Exception as e:
            return f"kill failed: {e}".splitlines()[0][:300]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class VerdictHandler:
    """GateService's emit callback: report, deny flagged files, kill what a block verdict covers.

    emit: Pipeline.emit; containers: the ContainerTable (current pid and state); enforcer: ExecEnforcer
    or None; killer: ContainerKiller or None (post-start kill off)."""

    def __init__(self, emit: Callable, containers, enforcer=None, killer: ContainerKiller | None = None,
                 policy=None):
        self._emit = emit
        self._containers = containers
        self._enforcer = enforcer
        self._killer = killer
        self._policy = policy  # PolicyStore: whether a running container newly blocked on re-judging is killed

    def __call__(self, ev: VerdictEvent) -> None:
        self._emit(ev)
        c = ev.container
        info = self._containers.lookup(c.namespace, c.id) if (c is not None and c.id and c.namespace) else None
        if info is None:
            return
        flagged = flagged_paths(ev.verdict)
        if flagged and info.cgroup_id and self._enforcer is not None:
            self._enforcer.flag_paths(info.cgroup_id, flagged)
        # A timeout verdict (the scan outlived on_timeout.after) decides a start that is waiting for it; a
        # container that runs already waits for what its image is: the full verdict follows when the scan
        # ends. Killing on the timeout verdict would kill every running container of a slow image (on an
        # agent restart, every pod whose scan is not cached), the pod sandboxes too.
        if ev.verdict.verdict == "block" and not ev.verdict.timed_out and info.pid and info.state == "running" \
                and self._killer is not None and self._may_kill(ev):
            self._kill(info, ev)

    def _may_kill(self, ev: VerdictEvent) -> bool:
        """A start's block verdict kills what runs already; a re-judged one (the advisories, rules or policy
        changed under a running container) kills only where the policy's `rejudge.action` says kill: a
        database update alone must not take a fleet's workloads down by default."""
        if not ev.verdict.trigger:
            return True
        return self._policy is not None and self._policy.current.rejudge_action == "kill"

    def _kill(self, info: ContainerInfo, ev: VerdictEvent) -> None:
        t0 = time.monotonic()
        outcome = self._killer.kill(info.namespace, info.id)
        if outcome != "killed":
            log.warning("post-start kill of %s/%s: %s", info.namespace, info.id, outcome)
        self._emit(kill_event(info, ev.verdict.reason, outcome, (time.monotonic() - t0) * 1000))


def kill_event(info: ContainerInfo, verdict_reason: str, outcome: str, duration_ms: float | None = None):
    """enforcement.block of a post-start kill through containerd."""
    return EnforcementEvent(time.time_ns(), "containerd.kill", "kill", f"image verdict block: {verdict_reason}",
                            outcome=outcome, verdict="block", container=info, duration_ms=duration_ms)
