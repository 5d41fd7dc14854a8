"""Tokens and constant folding for VBScript (classic ASP) and VB.NET (ASP.NET pages in VB).

Same token shape as jsp_lex ("i" names lower-cased, since VB is case-insensitive; "s", "n",
"o"), with the line end and ':' kept as statement breaks. Folding undoes `Chr(101) & ChrW(&H78)`,
arithmetic inside `Chr(100+1)`, `StrReverse`, `Replace`, `Mid/Left/Right`, `LCase/UCase`,
`Join(Array(...))` and names assigned a constant once (`x = "exe" & "cute"`)."""

from __future__ import annotations

import re
import threading

_TOKEN = re.compile(
    r"""
    (?P<cont>[ \t]_[ \t]*\r?\n)
  | (?P<nl>\r?\n|:)
  | (?P<ws>[ \t\f\v\r]+)
  | (?P<cm>'[^\n]*|(?i:rem)\b[^\n]*)
  | (?P<str>"(?:[^"\n]|"")*"?)
  | (?P<num>&[hH][0-9a-fA-F]+&?|&[oO][0-7]+&?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[%&@!#]?)
  | (?P<id>[^\W\d]\w*|\[[^\]\n]{1,64}\])
  | (?P<op><>|<=|>=|&=|\+=|-=|\S)
    """,
    re.X,
)


def lex(code: str, budget) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    budget.spend(len(code))
    for k, m in enumerate(_TOKEN.finditer(code)):
        if not k & 0xFFF:
            budget.spend(0)
        kind = m.lastgroup
        t = m.group()
        if kind in ("ws", "cm", "cont"):
            continue
        if kind == "nl":
            if not out or out[-1] != ("o", "\n"):
                out.append(("o", "\n"))
        elif kind == "id":
            out.append(("i", t.strip("[]").lower()))
        elif kind == "str":
            body = t[1:-1] if len(t) >= 2 and t.endswith('"') else t[1:]
            out.append(("s", body.replace('""', '"')))
        elif kind == "num":
            out.append(("n", _num(t)))
        else:
            out.append(("o", t))
    return out


def _num(t: str):
    t = t.rstrip("%&@!#")
    try:
        if t[:2].lower() == "&h":
            return int(t[2:], 16)
        if t[:2].lower() == "&o":
            return int(t[2:], 8)
        return int(t) if t.isdigit() else float(t)
    except ValueError:
        return 0


def _is(t, kind, val=None):
    return t[0] == kind and (val is None or t[1] == val)


_BREAK = ("o", "\n")


def _close(toks, i):
    depth = 0
    for j in range(i, min(len(toks), i + 50000)):
        if not (j - i + 1) & 0x3FF:
            _LOCAL.budget.spend(0)  # one unclosed paren per token would make folding quadratic
        t = toks[j]
        if t[0] != "o":
            continue
        if t[1] == "(":
            depth += 1
        elif t[1] == ")":
            depth -= 1
            if depth == 0:
                return j
        elif t[1] == "\n":
            return -1
    return -1


def _consts(toks, a, b):
    vals = []
    expect = True
    for t in toks[a:b]:
        if expect:
            if t[0] in ("s", "n"):
                vals.append(t[1])
                expect = False
            else:
                return None
        else:
            if not _is(t, "o", ","):
                return None
            expect = True
    return vals


_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
          "\\": lambda a, b: a // b if b else 0, "/": lambda a, b: a // b if b else 0,
          "mod": lambda a, b: a % b if b else 0, "xor": lambda a, b: a ^ b, "and": lambda a, b: a & b,
          "or": lambda a, b: a | b}


def _chr(v) -> str | None:
    try:
        v = int(v)
        return chr(v & 0xFFFF if v >= 0 else v & 0xFF)
    except (ValueError, OverflowError, TypeError):
        return None


_PCT = re.compile(r"%u([0-9a-fA-F]{4})|%([0-9a-fA-F]{2})")


def unescape(s: str) -> str:
    """JavaScript/VBScript unescape(): %XX and %uXXXX."""
    return _PCT.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), s)


def _call(name: str, vals: list):
    """The value of a VBScript string function over constants, or None."""
    try:
        if name in ("chr", "chrw", "chrb", "chr$", "chrw$"):
            return ("s", _chr(vals[0])) if len(vals) == 1 and _chr(vals[0]) is not None else None
        if name == "asc" or name == "ascw":
            return ("n", ord(str(vals[0])[0])) if len(vals) == 1 and str(vals[0]) else None
        if len(vals) == 0 or not isinstance(vals[0], str):
            if name == "cstr" and len(vals) == 1:
                return ("s", str(vals[0]))
            if name in ("clng", "cint") and len(vals) == 1 and isinstance(vals[0], int):
                return ("n", vals[0])
            return None
        s = vals[0]
        if name == "unescape" and len(vals) == 1:
            return ("s", unescape(s))
        if name == "strreverse" and len(vals) == 1:
            return ("s", s[::-1])
        if name in ("lcase", "ucase", "trim", "ltrim", "rtrim", "cstr") and len(vals) == 1:
            return ("s", {"lcase": s.lower(), "ucase": s.upper(), "trim": s.strip(" "), "ltrim": s.lstrip(" "),
                          "rtrim": s.rstrip(" "), "cstr": s}[name])
        if name == "replace" and len(vals) >= 3 and isinstance(vals[1], str):
            return ("s", s.replace(vals[1], str(vals[2])))
        if name == "mid" and 2 <= len(vals) <= 3:
            st = int(vals[1]) - 1
            return ("s", s[st: st + int(vals[2])] if len(vals) == 3 else s[st:])
        if name == "left" and len(vals) == 2:
            return ("s", s[: int(vals[1])])
        if name == "right" and len(vals) == 2:
            return ("s", s[-int(vals[1]):] if int(vals[1]) else "")
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return None


_LOCAL = threading.local()  # the budget of the file this thread folds, for the bracket scans


def fold(toks: list, budget, rounds: int = 10) -> list:
    _LOCAL.budget = budget
    for _ in range(rounds):
        budget.spend(len(toks))
        new = _substitute(_pass(toks, budget))
        if new == toks:
            return new
        toks = new
    return toks


def _pass(toks, budget) -> list:
    out: list = []
    i = 0
    n = len(toks)
    while i < n:
        if not i & 0x3FFF:
            budget.spend(0)
        t = toks[i]
        prev = out[-1] if out else _BREAK
        if t[0] == "i" and i + 1 < n and _is(toks[i + 1], "o", "(") and not _is(prev, "o", "."):
            j = _close(toks, i + 1)
            if j > 0:
                if t[1] == "join" and i + 3 < n and _is(toks[i + 2], "i", "array") and _is(toks[i + 3], "o", "("):
                    k = _close(toks, i + 3)
                    vals = _consts(toks, i + 4, k) if k > 0 else None
                    rest = _consts(toks, k + 2, j) if k > 0 and _is(toks[k + 1], "o", ",") else []
                    if vals is not None and rest is not None and (k + 1 == j or rest):
                        sep = str(rest[0]) if rest else " "
                        out.append(("s", sep.join(str(v) for v in vals)))
                        i = j + 1
                        continue
                vals = _consts(toks, i + 2, j)
                if vals is not None:
                    r = _call(t[1], vals)
                    if r is not None:
                        out.append(r)
                        _tail(out)
                        i = j + 1
                        continue
        # ( n op n ) / ( s ) inside an argument list
        if t[0] == "o" and t[1] == "(" and i + 2 < n and toks[i + 1][0] in ("s", "n") and _is(toks[i + 2], "o", ")") \
                and not (prev[0] == "i" and prev[1] not in ("then", "and", "or", "not", "=", "to")):
            out.append(toks[i + 1])
            _tail(out)
            i += 3
            continue
        out.append(t)
        _tail(out)
        i += 1
    return out


def _tail(out):
    """`s & s` / `s + s` -> s; `n op n` between argument delimiters -> n."""
    while len(out) >= 3:
        a, op, b = out[-3], out[-2], out[-1]
        before = out[-4] if len(out) >= 4 else _BREAK
        if op[0] not in ("o", "i"):
            return
        if a[0] == "s" and b[0] in ("s", "n") and op[1] in ("&", "+") or \
                a[0] == "n" and b[0] == "s" and op[1] == "&":
            if before[0] == "o" and before[1] in (".", "*", "/", "\\", "-", "^") or before[0] == "i" and \
                    before[1] in ("mod",):
                return
            del out[-3:]
            out.append(("s", str(a[1]) + str(b[1])))
            continue
        if a[0] == "n" and b[0] == "n" and op[1] in _ARITH and isinstance(a[1], int) and isinstance(b[1], int) \
                and before[0] == "o" and before[1] in ("(", ","):
            # only the first operation of a parenthesised list: precedence stays right for `(1+2*3)`
            # because the `*` case is reached before `+` sees its right operand only when it is a number
            try:
                v = _ARITH[op[1]](a[1], b[1])
            except (ValueError, OverflowError):
                return
            if abs(v) > 1 << 40:
                return
            del out[-3:]
            out.append(("n", v))
            continue
        return


def _substitute(toks: list) -> list:
    assigned: dict[str, int] = {}
    value: dict[str, tuple] = {}
    n = len(toks)
    for i in range(n - 1):
        t = toks[i]
        if t[0] != "i" or not _is(toks[i + 1], "o", "=") and not _is(toks[i + 1], "o", "&="):
            continue
        prev = toks[i - 1] if i else _BREAK
        if not (prev == _BREAK or prev[0] == "i" and prev[1] in ("const", "dim", "set", "private", "public")
                or _is(prev, "o", ",")):
            continue
        assigned[t[1]] = assigned.get(t[1], 0) + 1
        if _is(toks[i + 1], "o", "=") and i + 3 <= n and toks[i + 2][0] == "s" \
                and (i + 3 == n or toks[i + 3] == _BREAK):
            value[t[1]] = toks[i + 2]
    good = {k: v for k, v in value.items() if assigned.get(k) == 1}
    if not good:
        return toks
    out = []
    for i, t in enumerate(toks):
        if t[0] == "i" and t[1] in good:
            prev = toks[i - 1] if i else _BREAK
            nx = toks[i + 1] if i + 1 < n else _BREAK
            is_def = _is(nx, "o", "=") and (prev == _BREAK or prev[0] == "i" and prev[1] in ("const", "dim", "set"))
            if not is_def and not _is(prev, "o", ".") and not _is(nx, "o", "."):
                out.append(good[t[1]])
                continue
        out.append(t)
    return out


def strip_types(toks: list) -> list:
    """VB.NET's typed declarations read as VBScript's: `Dim c As String = Request("c")` becomes `Dim c = ...`,
    `Dim p As New Process()` becomes `Dim p = New Process()`, a parameter's `c As String` becomes `c`, so the
    assignment (and the taint it carries) is seen as in classic ASP. Bounded: one pass, no lookahead past a
    dotted type name and its `()`."""
    if ("i", "as") not in toks:
        return toks
    out: list = []
    i, n = 0, len(toks)
    while i < n:
        t = toks[i]
        prev = out[-1] if out else _BREAK
        if t == ("i", "as") and (prev[0] == "i" or _is(prev, "o", ")")) and i + 1 < n:
            j = i + 1
            if toks[j] == ("i", "new"):
                out.append(("o", "="))  # `x As New T(...)`: the constructor is the value
                i = j
                continue
            # skip the type: a dotted name, generic `(Of T)` or array `()` suffixes
            if toks[j][0] != "i":
                out.append(t)
                i += 1
                continue
            j += 1
            while j + 1 < n and _is(toks[j], "o", ".") and toks[j + 1][0] == "i":
                j += 2
            while j + 1 < n and _is(toks[j], "o", "(") and (_is(toks[j + 1], "o", ")") or _is(toks[j + 1], "i", "of")):
                k = next((q for q in range(j + 1, min(n, j + 16)) if _is(toks[q], "o", ")")), -1)
                if k < 0:
                    break
                j = k + 1
            i = j
            continue
        out.append(t)
        i += 1
    return out

