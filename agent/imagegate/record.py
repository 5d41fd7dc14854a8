"""The `image.verdict` record: one flat dict of dotted keys, like every record the outputs print
(agent/outputs/record.py). Keys are only ever added, never renamed."""

from __future__ import annotations

import time

from agent.events import ContainerInfo
from agent.imagegate.model import Severity, Verdict
from agent.outputs.record import rfc3339

MAX_FINDINGS = 200  # a record stays a log line: an image with thousands of CVEs is summarized


def _severity(v: Verdict) -> str:
    acted = [d.finding.severity for d in v.findings if d.action != "none"]
    if acted:
        return max(acted).label
    if v.verdict == "block":
        return Severity.HIGH.label  # blocked on timeout or error: no finding to borrow from
    return "info"


def verdict_record(
    v: Verdict, container: ContainerInfo | None = None, ts_ns: int | None = None, namespace: str = ""
) -> dict:
    """The flat record for one verdict; container adds the container.* and k8s.* keys."""
    rec = {
        "event.name": "image.verdict",
        "timestamp": rfc3339(ts_ns if ts_ns is not None else time.time_ns()),
        "event.severity": _severity(v),
    }
    if container is not None:
        rec["container.id"] = container.id
        for key, val in (
            ("container.name", container.name),
            ("container.image.name", container.image or v.image),
            ("container.image.digest", container.image_digest or v.digest),
            ("container.runtime", container.runtime),
            ("k8s.pod.name", container.pod_name),
            ("k8s.namespace.name", container.pod_namespace),
            ("containerd.namespace", container.namespace or namespace),
        ):
            if val:
                rec[key] = val
    else:
        if v.image:
            rec["container.image.name"] = v.image
        if v.digest:
            rec["container.image.digest"] = v.digest
        if namespace:
            rec["containerd.namespace"] = namespace
    acted = [d for d in v.findings if d.action != "none"]
    shown = (acted + [d for d in v.findings if d.action == "none"])[:MAX_FINDINGS]
    rec.update(
        {
            "image.verdict": v.verdict,
            "image.verdict.reason": v.reason,
            "image.findings": [d.to_dict() for d in shown],
            "image.findings.count": len(v.findings),
            "image.scan.duration_ms": round(v.duration_ms, 3),
            "image.scan.cache_hit": v.cache_hit == "verdict",
            "image.scan.cache": v.cache_hit,
            "image.scan.timed_out": v.timed_out,
            "image.policy": v.policy,
        }
    )
    if len(v.findings) > len(shown):
        rec["image.findings.truncated"] = True
    if v.error:
        rec["image.scan.error"] = v.error
    return rec
