"""Pre-start decisions: one `Decision` for both gates (NRI CreateContainer, the OCI gate's `runc create`),
made from the image gate's verdict under the policy in force at that moment.

Each decision first covers the new container with the runtime exec rules by its cgroup path (the
kernel covers the cgroup when runc creates it: agent/enforce/execkill.py), so that its entrypoint and
first processes are checked; a container the gate blocks is uncovered again. Each block is reported
as one EnforcementEvent. The timeout action and the gate's wait are read from the policy store at
every call, so a reload reaches them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.events import ContainerInfo, EnforcementEvent

_RECORD_WAIT_S = 0.5  # the OCI gate waits so long for the container table's record of a new container


@dataclass(frozen=True, slots=True)
class Decision:
    """A gate's answer for one container. `message` names the verdict; it goes into the runtime's error."""

    allow: bool
    message: str = ""
    # A block that may clear on retry (scan pending): NRI answers UNAVAILABLE, not PERMISSION_DENIED.
    retriable: bool = False


class GateDecider:
    """decide callbacks for NriPlugin (`nri`) and GateServer (`oci`), plus the policy's timeout values.

    gate: the GateService (evaluate, evaluate_image); policy: the PolicyStore; emit: Pipeline.emit;
    enforcer: the ExecEnforcer, or None when no runtime rules are loaded; profiles: the profile engine
    (agent/detect/profile), whose `prepare` puts a protecting workload's allow-list on the container's
    cgroup path before it runs (fetched from the collector when this node has none), or None."""

    def __init__(self, gate, policy, emit: Callable, enforcer=None, profiles=None, lookup=None):
        self._gate = gate
        self._policy = policy
        self._emit = emit
        self._enforcer = enforcer
        self._profiles = profiles
        self._lookup = lookup  # (namespace, id) -> ContainerInfo | None: the container table's record

    # -- the policy in force ------------------------------------------------------------------

    def timeout_action(self) -> str:
        return self._policy.current.timeout_action

    def timeout(self) -> float:
        return self._policy.current.timeout

    # -- NRI CreateContainer ---------------------------------------------------------------------

    def nri(self, pod, container) -> Decision:
        """By image reference: containerd has no container record yet at CreateContainer."""
        self._cover(container.cgroups_path)
        if self._profiles is not None:
            self._profiles.prepare(ContainerInfo(
                id=container.id, name=container.name, image=container.image, namespace="k8s.io",
                pod_name=pod.name, pod_namespace=pod.namespace, labels=tuple(sorted(dict(container.labels).items())),
            ), container.cgroups_path)
        v = self._gate.evaluate_image("k8s.io", container.image, k8s_namespace=pod.namespace,
                                      labels=dict(container.labels))
        if v.verdict != "block":
            return Decision(True, v.verdict)
        msg = f"image verdict block: {v.reason}"
        self._uncover(container.cgroups_path)
        self._emit(nri_block_event(pod, container, msg))
        return Decision(False, msg, retriable=bool(v.timed_out))

    # -- the OCI gate (`runc create` through nodewarden-runc) -------------------------------------

    def oci(self, req) -> Decision:
        """containerd has the container record by then: judge it, else the image by name."""
        self._cover(req.cgroups_path)  # the pause container too: the rules cover every container
        if req.container_type == "sandbox":  # the CRI pause container: nothing of the user's runs in it
            return Decision(True, "sandbox")
        if self._profiles is not None:
            self._profiles.prepare(self._gate_info(req), req.cgroups_path)
        try:
            v = self._gate.evaluate(req.namespace, req.id)
        except Exception:  # containerd does not know it (a bare runc user?): judge the image by name
            if not req.image:
                return Decision(True, "no image to check")
            v = self._gate.evaluate_image(req.namespace, req.image, k8s_namespace=req.pod_namespace)
        if v.verdict != "block":
            return Decision(True, v.verdict)
        msg = f"image verdict block: {v.reason}"
        self._uncover(req.cgroups_path)
        self._emit(oci_block_event(req, msg, v.image))
        return Decision(False, msg)

    # -- helpers ---------------------------------------------------------------------------------

    def _gate_info(self, req) -> ContainerInfo:
        """What the OCI gate's request says of the container, for its workload's profile: containerd has
        its record by then, with the labels that name a pod (CRI) and the image's digest."""
        info = ContainerInfo(id=req.id, name=req.name, image=req.image, namespace=req.namespace,
                             pod_name=req.pod, pod_namespace=req.pod_namespace)
        if self._lookup is None:
            return info
        # containerd sent the container's create event before this `runc create`; the watcher applies it
        # within milliseconds: wait that long for the record (its labels and image digest key the profile)
        deadline = time.monotonic() + _RECORD_WAIT_S
        while True:
            found = self._lookup(req.namespace, req.id)
            if found is not None or time.monotonic() >= deadline:
                return found or info
            time.sleep(0.02)

    def _cover(self, cgroups_path: str) -> None:
        if self._enforcer is not None and cgroups_path:
            self._enforcer.cover_path(cgroups_path)

    def _uncover(self, cgroups_path: str) -> None:
        if self._enforcer is not None and cgroups_path:
            self._enforcer.uncover_spec(cgroups_path)


def nri_block_event(pod, container, reason: str) -> EnforcementEvent:
    """enforcement.block of an NRI CreateContainer (containerd has no record yet: what NRI says)."""
    info = ContainerInfo(id=container.id, name=container.name, image=container.image, namespace="k8s.io",
                         pod_name=pod.name, pod_namespace=pod.namespace)
    point = "nri.start_container" if getattr(container, "at_start", False) else "nri.create_container"
    return EnforcementEvent(time.time_ns(), point, "deny", reason, outcome="denied",
                            verdict="block", container=info)


def oci_block_event(req, reason: str, image: str = "") -> EnforcementEvent:
    """enforcement.block of a `runc create` (req: the OCI gate's GateRequest; image: the verdict's, when
    the request carried none)."""
    info = ContainerInfo(id=req.id, name=req.name, image=req.image or image, namespace=req.namespace,
                         pod_name=req.pod, pod_namespace=req.pod_namespace)
    return EnforcementEvent(time.time_ns(), "oci.runc_create", "deny", reason, outcome="denied", verdict="block",
                            container=info)
