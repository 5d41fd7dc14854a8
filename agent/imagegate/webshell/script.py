"""Web-shell reader (placeholder until its owner lands it): finds nothing yet."""

from __future__ import annotations


def scan(data: bytes, lang: str, budget, hits: list) -> None:
    """Append a Hit per reason the file is a shell; call budget.spend(n) for work done."""
