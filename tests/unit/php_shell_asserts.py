"""The PHP shape tests' three checks, shared: a sample is a shell (its best hit at the threshold, with the rule,
sink and source asked for, and a snippet), or it stays clean."""

from __future__ import annotations

from agent.imagegate import webshell
from agent.imagegate.webshell import THRESHOLD


def _hits(code: str, name: str = "x.php"):
    return webshell.scan(name, code.encode("latin-1"))


def _shell(code: str, *, rule: str = "", sink: str = "", source: str = ""):
    hs = _hits(code)
    assert hs, f"no hit for {code!r:.200}"
    h = max(hs, key=lambda h: h.confidence)
    assert h.confidence >= THRESHOLD, hs
    if rule:
        assert h.rule == rule, hs
    if sink:
        assert sink in h.sink, h
    if source:
        assert source in h.source, h
    assert h.snippet, h
    return h


def _clean(code: str):
    hs = _hits(code)
    assert not webshell.is_shell(hs), [h for h in hs if h.confidence >= THRESHOLD]
