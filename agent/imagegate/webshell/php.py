"""PHP web-shell reader: tokenizes and parses the file (php_lex, php_parse), folds constants and
undoes the usual obfuscation statically (php_fold: concatenation, chr, escapes, base64, gzinflate,
rot13, strrev, XOR and NOT of strings ...), re-reads decoded code given to eval/assert/
create_function/preg_replace /e, and follows request data (taint) to code and command execution,
file writes and uploads. Nothing is ever executed.

Analysis is abstract interpretation over values (`V`): a known constant (string, number or array)
or unknown, plus the set of request sources it derives from. Within a function it is
flow-insensitive for taint (a variable once tainted stays tainted) and flow-sensitive for
constants (the latest assignment wins); user functions are re-analysed per call site with the
arguments' values (bounded), so taint and constants flow through arguments and returns.

The parts: php_sinks (vocabulary, values, context, evidence), php_eval (statements and
expressions), php_calls (calls, sinks, decoded code), php_families (confidence and families), php_payloads
(encoded or plain-text PHP a file carries without the reader seeing it run, reversed and rot13 stores).
This module is the entry point.
"""

from __future__ import annotations

from agent.imagegate.webshell.common import Budget, BudgetExceeded
from agent.imagegate.webshell.php_eval import _run_file
from agent.imagegate.webshell.php_families import _finish
from agent.imagegate.webshell.php_sinks import Ctx

__all__ = ["scan"]


def scan(data: bytes, lang: str, budget: Budget, hits: list) -> None:
    """Append a Hit per reason the file is a shell; budget.spend(n) bounds the work."""
    budget.spend(len(data))
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 source (saved by a Windows editor)
        data = data.decode("utf-16", "replace").encode("latin-1", "replace")
    src = data.decode("latin-1")
    ctx = Ctx(budget, len(data))
    ctx.root_src = src
    try:
        _run_file(ctx, src, php_mode=False)
    except BudgetExceeded:
        _finish(ctx, hits)
        raise
    except RecursionError:
        ctx.too_deep = True
    _finish(ctx, hits)
