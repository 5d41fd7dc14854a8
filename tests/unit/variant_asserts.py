"""The JSP and ASP(X) variant tests' checks, shared: a sample is a shell (a hit at the threshold with a short
snippet), or it stays benign; `name` picks the reader, each test file passing its own default."""

from __future__ import annotations

from agent.imagegate import webshell
from agent.imagegate.webshell import THRESHOLD


def hits(text: str, name: str):
    return webshell.scan(name, text.encode())


def assert_shell(text: str, name: str):
    hs = hits(text, name)
    assert webshell.is_shell(hs), hs
    h = hs[0]
    assert h.confidence >= THRESHOLD and h.snippet and len(h.snippet) <= 240
    return h


def assert_benign(text: str, name: str):
    hs = hits(text, name)
    assert not webshell.is_shell(hs), hs
