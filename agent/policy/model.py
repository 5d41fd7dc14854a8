"""The image policy: what the gate alerts on and blocks, for which containers. Immutable once
loaded (agent/policy/loader.py builds it, agent/policy/store.py swaps it atomically on reload).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.policy.profiles import ProfilePolicy
from agent.policy.rules import DetectSection
from agent.policy.runtime import RuntimeRules
from agent.policy.signatures import SignaturePolicy
from agent.policy.webshell import WebshellPolicy
from agent.vocab import CATEGORIES, Severity

# Category defaults: the reference policy (docs/imagegate.md documents each).
DEFAULT_THRESHOLDS: dict[str, tuple[Severity | None, Severity | None]] = {
    "malware": (Severity.LOW, Severity.HIGH),
    "integrity": (Severity.LOW, Severity.CRITICAL),
    "vulnerability": (Severity.MEDIUM, Severity.CRITICAL),
    "secret": (Severity.MEDIUM, None),
    "baseline": (Severity.MEDIUM, None),
}
assert set(DEFAULT_THRESHOLDS) == set(CATEGORIES)


@dataclass(frozen=True)
class Thresholds:
    alert: Severity | None  # lowest severity that alerts; None = "off" (never)
    block: Severity | None  # lowest severity that blocks; None = "off"


@dataclass(frozen=True)
class Selector:
    """include / exclude glob lists (namespaces) or {key: glob} maps (labels)."""

    include: tuple = ("*",)
    exclude: tuple = ()


@dataclass(frozen=True)
class ImagePolicy:
    categories: dict[str, Thresholds] = field(
        default_factory=lambda: {c: Thresholds(*t) for c, t in DEFAULT_THRESHOLDS.items()}
    )
    namespaces: Selector = Selector()
    label_include: tuple[tuple[str, str], ...] = ()  # every pair must match (key, value glob)
    label_exclude: tuple[tuple[str, str], ...] = ()  # any pair matching puts the container out of scope
    whitelist_images: tuple[str, ...] = ()  # image reference globs
    whitelist_digests: tuple[str, ...] = ()  # index or manifest digests
    timeout: float = 1.5  # seconds a container start waits for the scan
    timeout_action: str = "allow"  # "allow" or "block" when the scan has not finished by then
    error_action: str = "allow"  # when the image cannot be read at all
    # A running container whose image is newly blocked when judged again (advisories, rules or policy changed):
    # "alert" (report the new verdict) or "kill" (also kill it, as a block at start would)
    rejudge_action: str = "alert"
    runtime: RuntimeRules = RuntimeRules()  # in-kernel exec rules (agent/enforce/execkill.py)
    detect: DetectSection = DetectSection()  # detection rules (agent/detect/engine.py); ruleset None: bundled only
    webshell: WebshellPolicy = WebshellPolicy()  # the run-time web-shell check (agent/detect/webshell_watch.py)
    profiles: ProfilePolicy = ProfilePolicy()  # profiles' learning window, after-mode (agent/detect/profile/)
    signatures: SignaturePolicy = SignaturePolicy()  # images that must be signed (agent/imagegate/signatures.py)
    source: str = "<defaults>"  # file it came from
    fingerprint: str = "defaults"  # sha256 prefix of the file's bytes
