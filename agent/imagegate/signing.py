"""Signatures at the gate: the policy's `signatures:` section applied to one image (issue 16).

    gate = SignatureGate(ImageGateConfig(...))
    decided = gate.check(policy, "reg.local/pay/api:1", ("sha256:<index>", "sha256:<manifest>"))
    -> None (no entry names the image) | Decided(Finding("integrity", ..., "signature:verified" | "signature:unsigned"
       | "signature:other-key" | ...), action, "signatures[N].action block")

The verdict's other findings come from the scan; decide() puts this one beside them (agent/imagegate/decide.py). A
verified signature is an info finding that names the key or certificate that verified it (provenance in the record);
an unsigned or badly signed image gets the entry's `action`; a registry that cannot be asked (down, timeout, auth)
gets the entry's `on_error`, else the policy's on_error.action. Never raises: every failure is a finding with its
reason. Results are cached per image digest by the verifier (agent/imagegate/signatures.py).
"""

from __future__ import annotations

import logging
import threading

from agent.events import Decided
from agent.imagegate.model import Finding, Severity
from agent.imagegate.registry import DockerConfigAuth, RegistryClient, RegistryError
from agent.imagegate.signatures import SignatureVerifier
from agent.policy.model import ImagePolicy
from agent.policy.signatures import SignatureRule

log = logging.getLogger("nodewarden.imagegate")

# The finding's severity by the action it carries: decide() orders findings by action first, severity second.
_SEVERITY = {"block": Severity.CRITICAL, "alert": Severity.HIGH, "none": Severity.INFO}


class SignatureGate:
    """Verifies images against the policy's signature entries through one registry client (thread-safe)."""

    def __init__(self, config, verifier: SignatureVerifier | None = None):
        cfg = getattr(config, "imagegate", config)
        self.timeout = float(getattr(cfg, "signature_timeout", 3.0))
        self._cfg = cfg
        self._verifier = verifier
        self._lock = threading.Lock()
        self.counts = {"verified": 0, "failed": 0, "errors": 0}

    def _get_verifier(self) -> SignatureVerifier:
        with self._lock:
            if self._verifier is None:
                auth_file = getattr(self._cfg, "registry_auth_file", "") or DockerConfigAuth.default_path()
                client = RegistryClient(DockerConfigAuth(auth_file), timeout=self.timeout,
                                        insecure=tuple(getattr(self._cfg, "registry_insecure", ())))
                self._verifier = SignatureVerifier(client, timeout=self.timeout)
            return self._verifier

    def check(self, policy: ImagePolicy, image: str, digests: tuple[str, ...]) -> Decided | None:
        rule = policy.signatures.rule_for(image)
        if rule is None:
            return None
        where = f"signatures[{rule.index}]"
        try:
            result = self._get_verifier().verify_image(image, [d for d in digests if d], rule)
        except RegistryError as e:
            return self._unverifiable(policy, rule, f"the signature could not be checked: {e}")
        except Exception as e:  # a bug in verification must not take the gate down: on_error, with the reason
            log.exception("signature check of %s failed unexpectedly", image)
            return self._unverifiable(policy, rule, f"internal error: {e.__class__.__name__}")
        if result.verified:
            self._bump("verified")
            return _decided("signature:verified", "none", f"{where}: verified", result.line())
        self._bump("failed")
        return _decided(f"signature:{result.reason}", rule.action, f"{where}.action {rule.action}", result.line())

    def _unverifiable(self, policy: ImagePolicy, rule: SignatureRule, detail: str) -> Decided:
        """The entry's on_error (else the policy's on_error.action) when the registry could not be asked."""
        self._bump("errors")
        action = rule.on_error or policy.error_action
        act = {"allow": "none", "alert": "alert", "block": "block"}[action]
        return _decided("signature:unverifiable", act, f"signatures[{rule.index}].on_error {action}", detail)

    def _bump(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1


def _decided(rule: str, action: str, by: str, detail: str) -> Decided:
    return Decided(Finding("integrity", _SEVERITY[action], rule, detail=detail[:500]), action, by)

