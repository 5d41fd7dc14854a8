"""Web-shell detection that reads the code instead of grepping it.

`scan(path, data)` picks a reader by the file's name and first bytes (PHP, JSP/JSPX, classic ASP,
ASP.NET, ColdFusion, Perl and Python CGI), each of which undoes the usual obfuscation statically
(nothing is ever executed) and looks for request-controlled data reaching code or command
execution. It returns Hits with their evidence; the image scanner and the run-time check turn
those at or above THRESHOLD into findings and alerts. It never raises on bad input: a file that
exhausts its Budget yields what was found before, plus a low-confidence `budget` hit.
"""

from __future__ import annotations

import logging
import os

from agent.imagegate.webshell.common import MODEL_FILE, THRESHOLD, Budget, BudgetExceeded, Hit, Limits
from agent.vocab import Severity

__all__ = ["MODEL_FILE", "THRESHOLD", "Hit", "Limits", "describe", "is_shell", "language_of", "scan"]

log = logging.getLogger("nodewarden.imagegate.webshell")
# Part of the image gate's rules fingerprint: bump when what the readers find changes, so cached
# layer results are scanned again.
VERSION = "6"  # 6: PHP register_globals loops, ord() taint, URL-fetched code, request-named symlinks; JSP NIO file
# managers; ASP(X) VB.NET typed declarations, C# interpolated strings, WScript by class id, body-to-file writes
# (5: JSP/ASP(X) sources and sinks spelled other ways, relays, request proxies, IIS names)

_EXT = {
    ".php": "php", ".php3": "php", ".php4": "php", ".php5": "php", ".php7": "php", ".pht": "php",
    ".phtml": "php", ".phar": "php", ".inc": "php",
    ".jsp": "jsp", ".jspx": "jsp", ".jspf": "jsp", ".jsw": "jsp", ".jsv": "jsp",
    ".java": "jsp",  # servlet and filter shells: the JSP reader reads plain Java too
    ".asp": "asp", ".asa": "asp", ".cer": "asp", ".cdx": "asp",
    ".aspx": "aspx", ".ashx": "aspx", ".asmx": "aspx", ".ascx": "aspx", ".cshtml": "aspx", ".soap": "aspx",
    ".svc": "aspx", ".master": "aspx",
    ".cfm": "cfm", ".cfml": "cfm", ".cfc": "cfm",
    ".pl": "perl", ".cgi": "perl", ".pm": "perl",
    ".py": "python",
}
_DEFAULT = Limits()


def language_of(path: str, head: bytes) -> str | None:
    """The reader for a file, or None when it is not server-side web code."""
    lang = _EXT.get(os.path.splitext(path)[1].lower()) or _iis_name(path)
    start = head[:512].lstrip()
    if lang in ("perl", "python", "cfm"):
        return lang
    if lang is not None:
        return lang
    if start[:5].lower() == b"<?php":
        return "php"
    if start.startswith(b"<%@") or start.startswith(b"<jsp:"):
        return "aspx" if b"language" in start[:200].lower() and b"c#" in start[:200].lower() else "jsp"
    if start.startswith(b"#!") and b"perl" in start[:64]:
        return "perl"
    return None


# IIS 6 runs `shell.asp;.jpg` as ASP (it stops reading the name at the semicolon) and every file under a folder
# named `x.asp/` as ASP too: an uploader that checks only the last extension lets both through.
_IIS_LANG = {".asp": "asp", ".asa": "asp", ".cer": "asp", ".cdx": "asp", ".aspx": "aspx", ".ashx": "aspx",
             ".asmx": "aspx"}


def _iis_name(path: str) -> str | None:
    low = path.lower()
    # asked of every file of a layer that has no web extension: the common answer must be cheap
    if ";" not in low and ".as" not in low and ".ce" not in low and ".cd" not in low:
        return None
    *dirs, base = low.split("/")
    if ";" in base:
        lang = _IIS_LANG.get(os.path.splitext(base.split(";", 1)[0])[1])
        if lang is not None:
            return lang
    for d in dirs:
        if d.endswith((".asp", ".asa", ".cer", ".cdx")):
            return "asp"
    return None


def _reader(lang: str):
    # Imported lazily: a node that never sees a JSP file never loads its reader.
    if lang == "php":
        from agent.imagegate.webshell import php as mod
    elif lang == "jsp":
        from agent.imagegate.webshell import jsp as mod
    elif lang in ("asp", "aspx"):
        from agent.imagegate.webshell import asp as mod
    else:
        from agent.imagegate.webshell import script as mod
    return mod


def scan(path: str, data: bytes, limits: Limits | None = None) -> list[Hit]:
    """Every Hit in one file (possibly none). Never raises on bad input."""
    limits = limits or _DEFAULT
    data = bytes(data[: limits.max_bytes])
    lang = language_of(path, data[:512])
    if lang is None:
        return []
    budget = Budget(limits)
    hits: list[Hit] = []
    try:
        _reader(lang).scan(data, lang, budget, hits)
    except BudgetExceeded:
        hits.append(Hit(rule="budget", language=lang, severity=Severity.LOW, confidence=0.2,
                        detail=f"scan stopped: {budget.exceeded}"))
    # Hostile input, never a crash; a reader's own slip on odd input (a float loop reaching infinity, an index
    # past a truncated token list) ends the file's reading the same way, its hits so far kept: the scanner and
    # the run-time check promise a result for every file
    except Exception as e:
        log.debug("web-shell reader failed on %s: %s", path, e)
        hits.append(Hit(rule="reader-error", language=lang, severity=Severity.LOW, confidence=0.2,
                        detail=f"reader failed: {type(e).__name__}"))
    if limits.model and not is_shell(hits):
        _judge(path, lang, data, hits, limits.model)
    return hits


def _judge(path: str, lang: str, data: bytes, hits: list[Hit], model_file: str) -> None:
    """The statistical layer (model.py) on a file the readers did not flag: it may add one hit."""
    from agent.imagegate.webshell import model

    try:
        extra = model.load(model_file).judge(lang, data, hits)
    except Exception as e:  # the layer is optional: a slip in it never costs the readers' result
        log.debug("web-shell model failed on %s: %s", path, e)
        return
    if extra is not None:
        hits.append(extra)


def describe(hit: Hit) -> str:
    """One line for a finding or an alert: what the file does, in words."""
    what = hit.detail or "web shell"
    if hit.source and hit.sink:
        what += f": {hit.source} reaches {hit.sink}"
    elif hit.sink:
        what += f": {hit.sink}"
    if hit.family:
        what += f" ({hit.family}-style)"
    return what


def is_shell(hits: list[Hit]) -> bool:
    return any(h.confidence >= THRESHOLD for h in hits)
