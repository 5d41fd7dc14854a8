"""What every language reader of the web-shell detector shares: the hit record, the limits and
the budget that bounds one file's work (hostile input ends in bounded time and memory)."""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass

from agent.vocab import Severity

# A file is reported as a web shell when one of its hits reaches this confidence.
THRESHOLD = 0.5
SNIPPET_MAX = 240
# The statistical layer's model (model.py), shipped beside the readers.
MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.json")


@dataclass(frozen=True, slots=True)
class Hit:
    """One reason to think a file is a web shell.

    `rule` is a stable id ("php.request-to-exec"); `family` the known family it looks like
    ("china-chopper", "behinder", "godzilla", "c99", ... or "" when generic); `source` the
    request-controlled data ("$_POST['x']"), `sink` what runs it ("eval"), `snippet` the decoded
    code that shows the flow (at most SNIPPET_MAX characters), `confidence` in [0, 1]."""

    rule: str
    language: str
    severity: Severity
    confidence: float
    source: str = ""
    sink: str = ""
    snippet: str = ""
    family: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 2 * 1024 * 1024  # larger files are read up to here
    max_decode_depth: int = 12  # nested decode layers followed (base64(gzinflate(...)) = 2)
    max_decoded_bytes: int = 16 * 1024 * 1024  # everything decoded from one file, together
    max_seconds: float = 2.0  # CPU budget per file; the scan stops and reports what it has
    # The statistical layer's model file (MODEL_FILE to switch it on); "" = off, the default for now: on small
    # hand-written look-alikes (tests/unit/test_webshell_php_shapes*.py) it still raises benign pages (model.py)
    model: str = ""


class BudgetExceeded(Exception):
    """Raised inside a reader when a file costs more than its Limits; scan() catches it."""


class Budget:
    """Counts what one file's scan decoded and how long it took; `spend` raises BudgetExceeded."""

    __slots__ = ("limits", "decoded", "deadline", "exceeded")

    def __init__(self, limits: Limits):
        self.limits = limits
        self.decoded = 0
        self.deadline = time.process_time() + limits.max_seconds
        self.exceeded = ""

    def spend(self, nbytes: int = 0) -> None:
        self.decoded += nbytes
        if self.decoded > self.limits.max_decoded_bytes:
            self.exceeded = f"decoded more than {self.limits.max_decoded_bytes} bytes"
            raise BudgetExceeded(self.exceeded)
        if time.process_time() > self.deadline:
            self.exceeded = f"took more than {self.limits.max_seconds:g} s"
            raise BudgetExceeded(self.exceeded)


def clip(text: str, n: int = SNIPPET_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def entropy(text: str, sample: int = 65536) -> float:
    """Shannon entropy in bits per character of (the first `sample` characters of) text: packed
    payloads (base64 ~6, compressed ~8) sit well above source code (~4.5-5)."""
    if not text:
        return 0.0
    c = Counter(text[:sample])
    n = sum(c.values())
    return -sum(k / n * math.log2(k / n) for k in c.values())
