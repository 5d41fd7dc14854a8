"""Tokens for the C-family languages the JSP and ASP readers meet (Java, C#, JScript) and the
constant folding that undoes their usual obfuscation statically.

A token is a (kind, value) pair: "i" identifier, "s" string (value decoded: escapes applied,
base64 decoded to text), "c" a Java char literal, "n" number (int), "o" operator or bracket.
Folding rewrites the token list in place of the expression it replaces, so a later pattern sees
`Class.forName("java.lang.Runtime")` whether the file wrote that, `"java.lang." + "Run" + "time"`,
`new String(new byte[]{106, ...})`, `\\u0052untime` or a reversed, replaced or base64 string."""

from __future__ import annotations

import base64
import binascii
import re
import threading

# Java applies \uXXXX escapes before it lexes anything (JLS 3.3): `\u0022` is a quote.
_JAVA_UESC = re.compile(r"(?<!\\)((?:\\\\)*)\\u+([0-9a-fA-F]{4})")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<lc>//[^\n]*)
  | (?P<bc>/\*.*?(?:\*/|\Z))
  | (?P<vs>@"(?:[^"]|"")*"?)
  | (?P<tb>\"\"\"[ \t\f]*\r?\n.*?(?:\"\"\"|\Z))
  | (?P<dq>\$?"(?:[^"\\\n]|\\.)*"?)
  | (?P<sq>'(?:[^'\\\n]|\\.)*'?)
  | (?P<num>0[xX][0-9a-fA-F_]+[lL]?|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?[lLfFdDmMuU]*)
  | (?P<id>[^\W\d]\w*|\$[\w$]*)
  | (?P<op>>>>=?|<<=|>>=|\+\+|--|&&|\|\||[=!<>+\-*/%&|^]=|->|::|\S)
    """,
    re.S | re.X,
)
_ESC = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0", "v": "\v", "a": "\a",
        "\\": "\\", '"': '"', "'": "'", "/": "/"}
_ESC_RE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{1,4}|[0-7]{1,3}|.)", re.S)


def _unesc(m: re.Match) -> str:
    e = m.group(1)
    try:
        if e[0] == "u" and len(e) > 1:
            return chr(int(e[2:-1] if e[1] == "{" else e[1:], 16))
        if e[0] == "x" and len(e) > 1:
            return chr(int(e[1:], 16))
        if e[0] in "01234567" and (len(e) > 1 or e != "0"):
            return chr(int(e, 8))
    except (ValueError, OverflowError):
        return e
    return _ESC.get(e, e)


def java_unicode(code: str) -> str:
    if "\\u" not in code:
        return code
    return _JAVA_UESC.sub(lambda m: m.group(1) + chr(int(m.group(2), 16)), code)


def lex(code: str, budget, *, single_quote_string: bool) -> list[tuple[str, object]]:
    """Tokens of `code`, comments dropped. Unterminated strings and comments end the file."""
    out: list[tuple[str, object]] = []
    budget.spend(len(code))
    for k, m in enumerate(_TOKEN.finditer(code)):
        if not k & 0xFFF:
            budget.spend(0)
        kind = m.lastgroup
        t = m.group()
        if kind in ("ws", "lc", "bc"):
            continue
        if kind == "id":
            out.append(("i", t))
        elif kind == "num":
            out.append(("n", _num(t)))
        elif kind == "vs":
            out.append(("s", t[2:-1].replace('""', '"') if t.endswith('"') and len(t) > 2 else t[2:]))
        elif kind == "tb":
            out.append(("s", _ESC_RE.sub(_unesc, t[3:-3] if len(t) >= 6 else t[3:])))
        elif kind in ("dq", "sq"):
            body = t[1:]
            if body[:1] == '"' and t[0] == "$":
                body = body[1:]
            if len(body) and body[-1] == t[-1] and (len(t) > 1) and t[-1] in "\"'" and not _escaped_end(body):
                body = body[:-1]
            val = _ESC_RE.sub(_unesc, body) if "\\" in body else body
            if kind == "sq" and not single_quote_string and len(val) == 1:
                out.append(("c", val))
            else:
                out.append(("s", val))
        else:
            out.append(("o", t))
    return out


def _escaped_end(body: str) -> bool:
    # 'abc\"' ends in an escaped quote when an odd number of backslashes precede it.
    n = 0
    i = len(body) - 2
    while i >= 0 and body[i] == "\\":
        n += 1
        i -= 1
    return n % 2 == 1


def _num(t: str):
    t = t.replace("_", "").rstrip("lLfFdDmMuU")
    try:
        return int(t, 16) if t[:2].lower() == "0x" else int(t) if t.isdigit() else float(t)
    except ValueError:
        return 0


# --- folding -------------------------------------------------------------------------------

_B64_CALLS = (
    ("getDecoder", "(", ")", ".", "decode"), ("getMimeDecoder", "(", ")", ".", "decode"),
    ("getUrlDecoder", "(", ")", ".", "decode"), ("decodeBuffer",), ("decodeBase64",),
    ("parseBase64Binary",), ("FromBase64String",), ("atob",),
)


def b64(text: str) -> bytes | None:
    t = re.sub(r"\s+", "", text)
    if len(t) < 4 or not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", t):
        return None
    t = t.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(t + "=" * (-len(t) % 4))
    except (binascii.Error, ValueError):
        return None


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def _is(tok, kind, val=None) -> bool:
    return tok[0] == kind and (val is None or tok[1] == val)


def _close(toks, i) -> int:
    """Index of the bracket closing the one at i, or -1."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    o = toks[i][1]
    c = pairs.get(o)
    depth = 0
    for j in range(i, min(len(toks), i + 100000)):
        if not (j - i + 1) & 0x3FF:
            _LOCAL.budget.spend(0)  # one unclosed paren per token would make folding quadratic
        t = toks[j]
        if t[0] != "o":
            continue
        if t[1] == o:
            depth += 1
        elif t[1] == c:
            depth -= 1
            if depth == 0:
                return j
    return -1


def _consts(toks, a, b):
    """The constant values in toks[a:b] separated by commas, or None if any is not constant."""
    vals = []
    expect = True
    for t in toks[a:b]:
        if expect:
            if t[0] in ("s", "n", "c"):
                vals.append(t[1])
                expect = False
            elif _is(t, "o", "-") or _is(t, "o", "+"):
                continue
            else:
                return None
        else:
            if not _is(t, "o", ","):
                return None
            expect = True
    return vals


def _neg_fix(toks, a, b, vals):
    # (byte)-1 style negatives in byte arrays
    out = []
    neg = False
    k = 0
    for t in toks[a:b]:
        if _is(t, "o", "-"):
            neg = True
        elif t[0] in ("s", "n", "c"):
            v = vals[k]
            k += 1
            out.append(-v if neg and isinstance(v, int) else v)
            neg = False
    return out


def _chars(vals) -> str | None:
    try:
        return "".join(v if isinstance(v, str) else chr(int(v) & 0xFFFF if int(v) >= 0 else int(v) & 0xFF)
                       for v in vals)
    except (ValueError, OverflowError, TypeError):
        return None


def _bytes_text(vals) -> str | None:
    try:
        return _text(bytes((int(v) if not isinstance(v, str) else ord(v[0])) & 0xFF for v in vals))
    except (ValueError, TypeError, IndexError):
        return None


_STRING_METHODS = {"toString", "intern", "trim", "toLowerCase", "toUpperCase", "ToString", "Trim",
                   "ToLower", "ToUpper", "getBytes", "toCharArray", "ToCharArray", "strip", "Normalize"}


_LOCAL = threading.local()  # the budget of the file this thread folds, for the bracket scans


_FOLD_NAMES = frozenset({s[0] for s in _B64_CALLS} | {
    "fromCharCode", "unescape", "decodeURIComponent", "decodeURI", "UrlDecode", "valueOf", "toString", "ToString",
    "ConvertFromUtf32", "ToChar", "copyValueOf", "toChars", "GetString", "new", "Concat", "concat", "Join", "join"})


def fold(toks: list, budget, rounds: int = 10) -> list:
    """Fold constant expressions until nothing changes (at most `rounds` passes)."""
    _LOCAL.budget = budget
    for _ in range(rounds):
        budget.spend(len(toks))
        new = _pass(toks, budget)
        new = _substitute(new)
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
        # most tokens start nothing foldable: skip the pattern tests for them
        r = _try_fold(toks, i, out) if (t[0] == "i" and t[1] in _FOLD_NAMES or t == ("o", "(")
                                       or t[0] in ("s", "c")) else None
        if r is not None:
            i, repl = r[0], r[1]
            if len(r) == 3 and r[2]:
                del out[max(0, len(out) - r[2]):]
            # a folded value may join with what came before (`"a" + ("b")`)
            out.extend(repl)
            _concat_tail(out)
            continue
        out.append(t)
        if t[0] in ("s", "c"):
            _concat_tail(out)
        i += 1
    return out


def _concat_tail(out):
    # `s + s` -> s (also `s & s` is VB's, not ours); "a" + 'b' joins too, 'a' + 'b' does not (int)
    while len(out) >= 3 and _is(out[-2], "o", "+") and out[-1][0] in ("s", "c") and out[-3][0] in ("s", "c") \
            and "s" in (out[-1][0], out[-3][0]):
        before = out[-4] if len(out) >= 4 else ("o", ";")
        if before[0] == "o" and before[1] in (".", "*", "/", "%", "-"):
            return
        if before[0] == "i" and before[1] not in ("return", "yield", "case", "in"):
            return
        v = str(out[-3][1]) + str(out[-1][1])
        del out[-3:]
        out.append(("s", v))


def _try_fold(toks, i, out):
    """(next index, replacement tokens) when an expression starting at i folds, else None."""
    t = toks[i]
    n = len(toks)
    prev = out[-1] if out else ("o", ";")
    # ( s ) -> s  when the parens are not a call's
    if _is(t, "o", "(") and i + 2 < n and toks[i + 1][0] in ("s", "n") and _is(toks[i + 2], "o", ")") \
            and not (prev[0] == "i" and prev[1] not in ("return", "in", "case")) and not _is(prev, "o", ")") \
            and not _is(prev, "o", "]"):
        return i + 3, [toks[i + 1]]
    # casts: (char) n, (String) s, (char)(n), (byte) n
    if _is(t, "o", "(") and i + 3 < n and _is(toks[i + 1], "i") and toks[i + 1][1] in ("char", "String", "string",
                                                                                          "Object", "object", "int",
                                                                                          "byte", "Char") \
            and _is(toks[i + 2], "o", ")") and toks[i + 3][0] in ("n", "s", "c") \
            and not (prev[0] == "i" and prev[1] not in ("return", "in", "case")):
        ty = toks[i + 1][1]
        v = toks[i + 3][1]
        if ty in ("char", "Char") and isinstance(v, int):
            return i + 4, [("c", chr(v & 0xFFFF))]
        if ty in ("int", "byte") and isinstance(v, str) and len(v) == 1:
            return i + 4, [("n", ord(v))]
        return i + 4, [toks[i + 3]]
    if t[0] == "i":
        r = _fold_call(toks, i, prev)
        if r is not None:
            return r
    if t[0] in ("s", "c") and i + 2 < n and _is(toks[i + 1], "o", "."):
        return _fold_method(toks, i)
    return None


def _args(toks, i):
    """(close index, constants) for the call whose '(' is at i, constants None if not constant."""
    if i >= len(toks) or not _is(toks[i], "o", "("):
        return -1, None
    j = _close(toks, i)
    if j < 0:
        return -1, None
    return j, _consts(toks, i + 1, j)


def _fold_call(toks, i, prev):
    n = len(toks)
    name = toks[i][1]
    if _is(prev, "o", "."):
        # receiver.method(...) of a non-constant receiver; we fold only the constant decoders below
        pass
    # base64 decoders: X.getDecoder().decode("..."), new BASE64Decoder().decodeBuffer("..."), ...
    for shape in _B64_CALLS:
        if name == shape[0] and all(i + k < n and toks[i + k][1] == shape[k] for k in range(1, len(shape))):
            j, vals = _args(toks, i + len(shape))
            if vals and len(vals) == 1 and isinstance(vals[0], str):
                raw = b64(vals[0])
                if raw is not None:
                    return j + 1, [("s", _text(raw))], i - _chain_start(toks, i)
    if name in ("unescape", "decodeURIComponent", "decodeURI", "UrlDecode") and i + 1 < n:
        j, vals = _args(toks, i + 1)
        if vals and j > 0 and len(vals) == 1 and isinstance(vals[0], str):
            return j + 1, [("s", re.sub(r"%u([0-9a-fA-F]{4})|%([0-9a-fA-F]{2})",
                                        lambda m: chr(int(m.group(1) or m.group(2), 16)), vals[0]))], \
                i - _chain_start(toks, i)
    if name in ("fromCharCode",) and i + 1 < n:
        j, vals = _args(toks, i + 1)
        if vals is not None and j > 0:
            s = _chars(vals)
            if s is not None:
                return j + 1, [("s", s)], i - _chain_start(toks, i)
    if name in ("valueOf", "toString", "ToString", "ConvertFromUtf32", "ToChar", "copyValueOf", "toChars") \
            and i + 1 < n and _is(prev, "o", "."):
        j, vals = _args(toks, i + 1)
        if vals and j > 0 and len(vals) == 1:
            v = vals[0]
            s = v if isinstance(v, str) else _chars(vals) if name in ("ConvertFromUtf32", "ToChar", "toChars") \
                else None
            if s is not None:
                return j + 1, [("s", s)], i - _chain_start(toks, i)
    if name == "GetString" and _is(prev, "o", "."):
        j, vals = _args(toks, i + 1)
        if vals is not None and j > 0 and len(vals) == 1 and isinstance(vals[0], str):
            return j + 1, [("s", vals[0])], i - _chain_start(toks, i)
        if vals and j > 0 and all(isinstance(v, int) for v in vals):
            s = _bytes_text(vals)
            if s is not None:
                return j + 1, [("s", s)], i - _chain_start(toks, i)
    # String.join(sep, a, b) / string.Concat(a, b) / string.Join(sep, new[] {a, b}) over constants
    if name in ("Concat", "concat", "Join", "join") and i >= 2 and _is(prev, "o", ".") \
            and toks[i - 2][0] == "i" and toks[i - 2][1] in ("String", "string", "System.String") and i + 1 < n:
        j = _close(toks, i + 1) if _is(toks[i + 1], "o", "(") else -1
        if j > 0:
            inner = [t for t in toks[i + 2:j] if not (t[0] == "i" and t[1] in ("new", "string", "String"))
                     and t not in (("o", "["), ("o", "]"), ("o", "{"), ("o", "}"))]
            vals = _consts(inner, 0, len(inner))
            if vals and all(isinstance(v, str) for v in vals):
                out = "".join(vals) if name in ("Concat", "concat") else vals[0].join(vals[1:])
                return j + 1, [("s", out)], 2
    if name == "new" and i + 2 < n and toks[i + 1][0] == "i":
        return _fold_new(toks, i)
    return None


def _chain_start(toks, i) -> int:
    """Start of the dotted receiver before toks[i] (`java.util.Base64.` in front of getDecoder)."""
    j = i
    while j >= 2 and _is(toks[j - 1], "o", ".") and (toks[j - 2][0] == "i" or _is(toks[j - 2], "o", ")")):
        if _is(toks[j - 2], "o", ")"):
            # new sun.misc.BASE64Decoder() . decodeBuffer
            depth = 0
            k = j - 2
            while k >= 0:
                if _is(toks[k], "o", ")"):
                    depth += 1
                elif _is(toks[k], "o", "("):
                    depth -= 1
                    if depth == 0:
                        break
                k -= 1
            if k <= 0:
                break
            j = k
            # the name before '(' and a `new` before the name
            if toks[j - 1][0] == "i":
                j -= 1
            continue
        j -= 2
    while j >= 1 and _is(toks[j - 1], "i", "new"):
        j -= 1
    return j


def _fold_new(toks, i):
    n = len(toks)
    j = i + 1
    # skip a qualified name: new java.lang.String(...)
    while j + 2 < n and _is(toks[j + 1], "o", ".") and toks[j + 2][0] == "i":
        j += 2
    cls = toks[j][1]
    if j + 1 >= n:
        return None
    if cls in ("String", "string") and _is(toks[j + 1], "o", "("):
        k, vals = _args(toks, j + 1)
        if k > 0 and vals is not None and len(vals) >= 1 and isinstance(vals[0], str):
            return k + 1, [("s", vals[0])]
        # new String(new char[]{...}) / new String(new byte[]{...}) after the inner array folded
        return None
    if cls in ("char", "byte", "Char", "Byte") and j + 3 < n and _is(toks[j + 1], "o", "[") \
            and _is(toks[j + 2], "o", "]") and _is(toks[j + 3], "o", "{"):
        k = _close(toks, j + 3)
        if k < 0:
            return None
        vals = _consts(toks, j + 4, k)
        if vals is None:
            return None
        vals = _neg_fix(toks, j + 4, k, vals)
        s = _chars(vals) if cls in ("char", "Char") else _bytes_text(vals)
        if s is None:
            return None
        return k + 1, [("s", s)]
    if cls in ("StringBuilder", "StringBuffer") and _is(toks[j + 1], "o", "("):
        k, vals = _args(toks, j + 1)
        if k < 0:
            return None
        if vals == [] or (vals and len(vals) == 1 and isinstance(vals[0], str)):
            acc = vals[0] if vals else ""
            m = k + 1
            # .append(s) ... .reverse() ... .toString()
            while m + 2 < n and _is(toks[m], "o", ".") and toks[m + 1][0] == "i":
                meth = toks[m + 1][1]
                if meth in ("append", "Append", "insert") and _is(toks[m + 2], "o", "("):
                    q, v = _args(toks, m + 2)
                    if q < 0 or v is None or not v:
                        break
                    if meth == "insert":
                        if len(v) != 2 or not isinstance(v[0], int):
                            break
                        acc = acc[: v[0]] + str(v[1]) + acc[v[0]:]
                    else:
                        acc += v[0] if isinstance(v[0], str) else str(v[0])
                    m = q + 1
                elif meth == "reverse" and _is(toks[m + 2], "o", "(") and m + 3 < n and _is(toks[m + 3], "o", ")"):
                    acc = acc[::-1]
                    m += 4
                elif meth in ("toString", "ToString") and _is(toks[m + 2], "o", "(") and m + 3 < n \
                        and _is(toks[m + 3], "o", ")"):
                    return m + 4, [("s", acc)]
                else:
                    break
            if m != k + 1:
                return m, [("i", "new"), ("i", cls), ("o", "("), ("s", acc), ("o", ")")]
    return None


def _fold_method(toks, i):
    """s.method(constants) on a constant receiver."""
    n = len(toks)
    s = toks[i][1]
    if not isinstance(s, str):
        s = str(s)
    if i + 3 >= n or toks[i + 2][0] != "i":
        return None
    meth = toks[i + 2][1]
    if meth in _STRING_METHODS and _is(toks[i + 3], "o", "(") and i + 4 < n and _is(toks[i + 4], "o", ")"):
        if meth in ("toLowerCase", "ToLower"):
            s = s.lower()
        elif meth in ("toUpperCase", "ToUpper"):
            s = s.upper()
        elif meth in ("trim", "Trim", "strip"):
            s = s.strip()
        return i + 5, [("s", s)]
    if not _is(toks[i + 3], "o", "("):
        return None
    j, vals = _args(toks, i + 3)
    if j < 0 or vals is None:
        return None
    try:
        if meth in ("replace", "Replace", "replaceAll", "replaceFirst") and len(vals) == 2:
            a, b = str(vals[0]), str(vals[1])
            if meth == "replaceAll":
                r = re.sub(a, b.replace("$", "\\"), s)
            elif meth == "replaceFirst":
                r = re.sub(a, b.replace("$", "\\"), s, count=1)
            else:
                r = s.replace(a, b)
            return j + 1, [("s", r)]
        if meth in ("substring", "Substring", "substr") and 1 <= len(vals) <= 2 and all(isinstance(v, int)
                                                                                          for v in vals):
            if meth == "substring" and len(vals) == 2:
                r = s[vals[0]:vals[1]]
            elif len(vals) == 2:
                r = s[vals[0]:vals[0] + vals[1]]
            else:
                r = s[vals[0]:]
            return j + 1, [("s", r)]
        if meth in ("concat", "Concat") and len(vals) == 1:
            return j + 1, [("s", s + str(vals[0]))]
        if meth in ("charAt",) and len(vals) == 1 and isinstance(vals[0], int):
            return j + 1, [("c", s[vals[0]])]
        if meth == "split" and len(vals) == 1 and i + 1 < n:
            return None
    except (re.error, IndexError, TypeError, ValueError):
        return None
    return None


# Words before a name that do not make it a declaration (`return x)`, `case x:`, `new X(`).
_NOT_TYPE = frozenset({"return", "case", "new", "throw", "yield", "in", "instanceof", "else", "await", "typeof"})


def _substitute(toks: list) -> list:
    """Fold simple local constants: a name assigned once, to a constant, is that constant."""
    assigned: dict[str, int] = {}
    value: dict[str, tuple] = {}
    n = len(toks)
    for i in range(n - 1):
        t = toks[i]
        if t[0] != "i":
            continue
        nx = toks[i + 1]
        if nx[0] == "o" and nx[1] in ("=", "+=", "-=", "++", "--", "|=", "&=", "^="):
            assigned[t[1]] = assigned.get(t[1], 0) + 1
            if nx[1] == "=" and i + 3 < n and toks[i + 2][0] in ("s", "c") and toks[i + 3][0] == "o" \
                    and toks[i + 3][1] in (";", ",", ")", "}") and not _is(toks[i - 1] if i else ("o", ""), "o", "."):
                value[t[1]] = toks[i + 2]
        elif i and _is(toks[i - 1], "o", "++") or (i and _is(toks[i - 1], "o", "--")):
            assigned[t[1]] = assigned.get(t[1], 0) + 2
        elif i and nx[0] == "o" and nx[1] in (",", ")", ":") and (
                toks[i - 1][0] == "i" and toks[i - 1][1] not in _NOT_TYPE or _is(toks[i - 1], "o", "]")
                or _is(toks[i - 1], "o", ">")):
            # `String sql,` / `(String sql)` / `for (String sql : ...)`: a parameter or loop variable, a
            # second binding of the name (scopes are not tracked, so a constant `sql` elsewhere is not it)
            assigned[t[1]] = assigned.get(t[1], 0) + 2
    good = {k: v for k, v in value.items() if assigned.get(k) == 1}
    if not good:
        return toks
    out = []
    for i, t in enumerate(toks):
        if t[0] == "i" and t[1] in good:
            prev = toks[i - 1] if i else ("o", ";")
            nx = toks[i + 1] if i + 1 < n else ("o", ";")
            if not (_is(prev, "o", ".") or (nx[0] == "o" and nx[1] in ("=", "(", "+=", "."))
                    or prev[0] == "i" and prev[1] not in ("return", "case", "in", "throw")):
                out.append(good[t[1]])
                continue
        out.append(t)
    return out
