"""Parsing of the durations, sizes and times that flags and config files take."""

from __future__ import annotations

import re
import time
from datetime import datetime

_DUR = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "m": 1e6, "mb": 1e6, "mib": 1 << 20,
         "g": 1e9, "gb": 1e9, "gib": 1 << 30, "t": 1e12, "tb": 1e12, "tib": 1 << 40}


def parse_duration(text: str | float | int) -> float:
    """Seconds from "90", "90s", "15m", "12h", "7d", "1h30m"."""
    if isinstance(text, int | float):
        return float(text)
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d|w)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise ValueError(f"not a duration: {text!r} (examples: 30s, 15m, 12h, 7d)")
    return sum(float(n) * _DUR[u] for n, u in parts)


def parse_size(text: str | int) -> int:
    """Bytes from "1048576", "512MiB", "1GiB", "2GB"."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE:
        raise ValueError(f"not a size: {text!r} (examples: 512MiB, 1GiB)")
    return int(float(m.group(1)) * _SIZE[m.group(2).lower()])


def parse_time(text: str, now_ns: int | None = None) -> int:
    """ns since the epoch from an RFC 3339 time or a duration ago ("10m" = ten minutes ago)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    try:
        return now_ns - int(parse_duration(text) * 1e9)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"not a time: {text!r} (RFC 3339, or a duration ago such as 10m)") from e
    if dt.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r} (add Z or +00:00)")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
