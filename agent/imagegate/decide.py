"""Decide a verdict from an ImageReport and the image policy.

Order: scope (out of scope: allow, nothing scanned), whitelist (allow, nothing scanned), image
unreadable (on_error.action), then every finding against its category's thresholds: block if
any finding reaches its category's `block`, else alert if any reaches `alert`, else allow. Each
finding carries the action it got and the policy rule that gave it. This lives in the image gate,
not in agent/policy, because it reads the gate's ImageReport (imports run one way, issue 9).
"""

from __future__ import annotations

from agent.events import Decided, Verdict
from agent.imagegate.model import ImageReport
from agent.policy.image import in_scope, whitelisted
from agent.policy.model import ImagePolicy

_ORDER = {"none": 0, "alert": 1, "block": 2}


def pre_decide(
    policy: ImagePolicy, image: str, digest: str, namespace: str, labels: dict[str, str] | None = None
) -> Verdict | None:
    """The verdict when no scan is needed (out of scope, whitelisted), else None."""
    ok, why = in_scope(policy, namespace, labels or {})
    if not ok:
        return Verdict("allow", f"out of scope: {why}", image=image, digest=digest, policy=policy.fingerprint)
    why = whitelisted(policy, image, (digest,))
    if why:
        return Verdict("allow", why, image=image, digest=digest, policy=policy.fingerprint)
    return None


def decide(report: ImageReport, policy: ImagePolicy, signature: Decided | None = None) -> Verdict:
    """The verdict for a scanned image (scope and whitelist are checked again: digests resolved
    by the scan may be whitelisted). `signature`: the policy's signature entry applied to the image
    (agent/imagegate/signing.py), already decided: it carries its entry's action, not a category threshold."""
    base = dict(
        image=report.image,
        digest=report.digest,
        duration_ms=report.duration_ms,
        cache_hit=report.cache_hit,
        policy=policy.fingerprint,
    )
    why = whitelisted(policy, report.image, (report.digest, report.manifest_digest))
    if why:
        return Verdict("allow", why, **base)
    if report.error:
        return Verdict(
            policy.error_action, f"image unreadable: {report.error} (on_error.action)", error=report.error, **base
        )
    decided = []
    for f in report.findings:
        th = policy.categories.get(f.category)
        action, rule = "none", f"categories.{f.category}: below alert"
        if th is not None and th.block is not None and f.severity >= th.block:
            action, rule = "block", f"categories.{f.category}.block >= {th.block.label}"
        elif th is not None and th.alert is not None and f.severity >= th.alert:
            action, rule = "alert", f"categories.{f.category}.alert >= {th.alert.label}"
        decided.append(Decided(f, action, rule))
    if signature is not None:
        decided.append(signature)
    decided.sort(key=lambda d: (-_ORDER[d.action], -d.finding.severity, d.finding.category, d.finding.path))
    top = decided[0] if decided else None
    if top is None or top.action == "none":
        n = len(decided)
        return Verdict(
            "allow",
            f"{n} finding(s), none reaches an alert threshold" if n else "no findings",
            findings=decided,
            **base,
        )
    f = top.finding
    where = f" in {f.path}" if f.path else ""
    reason = f"{f.category}/{f.severity.label} {f.rule}{where} ({top.decided_by})"
    return Verdict(top.action, reason, findings=decided, **base)


def timeout_verdict(policy: ImagePolicy, image: str, digest: str, waited: float) -> Verdict:
    return Verdict(
        policy.timeout_action,
        f"scan not finished after {waited:.2f}s (on_timeout.action {policy.timeout_action})",
        image=image,
        digest=digest,
        timed_out=True,
        duration_ms=waited * 1000,
        policy=policy.fingerprint,
    )
