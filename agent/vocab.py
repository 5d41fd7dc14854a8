"""Shared vocabulary: the words every stage uses (severities, finding categories), defined once.

It sits at the bottom of the layers (it imports nothing of ours), so the kernel mirror, the policy,
the image gate, the detectors and the outputs all speak the same terms. The protobuf Severity
enum (proto/nodewarden/v1/event.proto) carries these as INFO=2 ... CRITICAL=6.
"""

from __future__ import annotations

from enum import IntEnum

# Categories of image-gate findings (policy thresholds are per category).
CATEGORIES = ("integrity", "malware", "secret", "vulnerability", "baseline")


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """'high', 'HIGH', 'moderate' (GHSA's word), 'warning' -> Severity; ValueError otherwise."""
        t = str(text).strip().lower()
        t = _ALIASES.get(t, t)
        try:
            return cls[t.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


_ALIASES = {"moderate": "medium", "important": "high", "negligible": "low", "unimportant": "low",
            "warning": "medium", "warn": "medium", "error": "high"}
