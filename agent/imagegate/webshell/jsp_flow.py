"""Taint tracking over folded tokens, shared by the JSP, ASP/ASP.NET and CGI readers.

The token list (see jsp_lex) is rendered once as canonical text (no comments, no layout, strings
decoded and re-quoted) so that a language's sources and sinks are patterns over code, not over
bytes. Taint is approximate and deliberately generous inside one file: a name assigned from an
expression holding request data is tainted wherever it appears (scopes are not tracked), a
method's parameters are tainted when any call passes it tainted data, and a call to a method
returning tainted data is itself a source. That over-approximation is safe because a hit still
needs a sink (command or code execution, class loading, a file write), which benign pages rarely
hold; constant arguments to a sink (an admin page running a fixed command) never count."""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field

_WORD = ("i", "n")


def render(toks) -> tuple[str, list[int]]:
    parts: list[str] = []
    starts: list[int] = []
    pos = 0
    prev_word = False
    for kind, val in toks:
        word = kind in _WORD
        if word and prev_word:
            parts.append(" ")
            pos += 1
        starts.append(pos)
        if kind == "s":
            s = json.dumps(val, ensure_ascii=False)
        elif kind == "c":
            s = "'" + json.dumps(val, ensure_ascii=False)[1:-1] + "'"
        elif kind == "n":
            s = str(val)
        else:
            s = val
        parts.append(s)
        pos += len(s)
        prev_word = word
    return "".join(parts), starts


@dataclass
class Sink:
    pattern: re.Pattern
    name: str
    kind: str  # exec | eval | classload | write | upload | files | sql
    receiver: bool = False  # a tainted receiver (`pb.start()`) counts too
    rest: bool = False  # arguments run to the end of the statement (VBScript `Execute x`)
    needs: re.Pattern | None = None  # the file must also hold this (a sink only on that object kind)


@dataclass
class Flow:
    sink: Sink
    source: str  # the request data that reaches it ("" when not shown)
    state: str  # tainted | constant | unknown
    start: int  # token range of the sink expression
    end: int
    snippet: str = ""


@dataclass
class Lang:
    name: str
    sources: list[re.Pattern]
    sinks: list[Sink]
    breaks: frozenset = frozenset({";", "{", "}"})
    flags: int = 0
    func_kw: frozenset = frozenset()  # VB/JS: `function name(params)`; empty: C-like `type name(params) {`
    extra: dict = field(default_factory=dict)


_NOT_FUNC = frozenset({"if", "for", "while", "switch", "catch", "return", "new", "synchronized", "foreach",
                       "using", "lock", "else", "do", "try", "throw", "fixed", "sizeof", "typeof", "when",
                       "nameof", "await", "function"})
_KEEP_MEMBERS = frozenset({"this", "me", "self"})
_NOT_ASSIGNED = frozenset({"out", "response", "Response", "System", "request", "Request", "Server", "Console"})
_NOT_TAINTED_RECV = frozenset({"out", "response", "Response", "System", "request", "Request", "Server",
                               "session", "Session", "application", "Application", "pageContext", "Console",
                               "log", "logger", "LOG", "Log"})


# Attributes kept in a scope object between statements (or requests): stored tainted, read back tainted.
_SCOPES = frozenset({"session", "application", "pageContext", "request", "servletContext", "getSession"})
_STORE = frozenset({"setAttribute", "putValue"})
_LOAD = frozenset({"getAttribute", "getValue"})
_ATTR = "attribute "  # not a name any language can spell (a space)


class Program:
    """One code unit (a page's joined scriptlets): where request data flows and which sinks it reaches."""

    def __init__(self, toks, lang: Lang, budget, propagate: bool = True):
        self.toks = toks
        self.lang = lang
        self.budget = budget
        self.text, self.starts = render(toks)
        budget.spend(len(self.text))
        n = len(toks)
        self.src: list[str | None] = [None] * n
        for pat in lang.sources:
            for m in pat.finditer(self.text):
                a = self.tok_at(m.start())
                if toks[a][0] == "s":
                    continue  # the words inside a string constant are not a read of the request
                b = self.tok_at(max(m.start(), m.end() - 1))
                label = self._label(a, b)
                for k in range(a, min(b + 1, n)):
                    if self.src[k] is None:
                        self.src[k] = label
        self.tainted: dict[str, str] = {}
        self._stored = False  # an attribute was stored tainted (getAttribute reads are looked up only then)
        # Java lambdas (`->` is Perl's method arrow, not a lambda): scanned for only when there are any
        self._arrows = lang.name in ("java", "el") and ("o", "->") in toks
        self.stmts = self._statements()
        self.funcs = self._functions()
        if propagate:
            self._propagate()

    def _label(self, a: int, b: int) -> str:
        """The whole source expression (`request.getParameter("cmd")`) for the evidence."""
        ra = self._receiver(a) if self.toks[a] == ("o", ".") else a
        rb = self.close(b) if self.toks[b] == ("o", "(") or self.toks[b] == ("o", "[") else b
        if rb < 0 or rb - b > 40:
            rb = b
        return self.code(max(ra, a - 12), min(rb + 1, len(self.toks)))[:120]

    def seed(self, names, label: str) -> None:
        """Names that hold request data from the start (a web method's parameters)."""
        if any([self._mark(n, label) for n in names]):
            self._propagate()

    # --- positions ---------------------------------------------------------------------------

    def tok_at(self, pos: int) -> int:
        return max(0, bisect.bisect_right(self.starts, pos) - 1)

    def code(self, a: int, b: int) -> str:
        if a >= len(self.starts):
            return ""
        end = self.starts[b] if b < len(self.starts) else len(self.text)
        return self.text[self.starts[a]:end]

    def close(self, i: int) -> int:
        pairs = {"(": ")", "[": "]", "{": "}"}
        toks = self.toks
        o = toks[i][1]
        c = pairs.get(o)
        if c is None:
            return -1
        depth = 0
        spend = self.budget.spend
        for j in range(i, len(toks)):
            if not (j - i + 1) & 0xFFF:
                spend(0)  # unbalanced brackets in hostile input: each scan is bounded by the budget
            t = toks[j]
            if t[0] == "o":
                if t[1] == o:
                    depth += 1
                elif t[1] == c:
                    depth -= 1
                    if depth == 0:
                        return j
                elif t[1] in self.lang.breaks and t[1] not in "{}" and self.lang.func_kw:
                    return j  # VB: a call's parens never span lines
        return len(toks)

    def _statements(self) -> list[tuple[int, int]]:
        out = []
        a = 0
        br = self.lang.breaks
        braces: list[bool] = []  # per open brace: True when it opens an expression ({...} initialiser)
        toks = self.toks
        for i, t in enumerate(toks):
            if t[0] != "o" or t[1] not in br:
                continue
            if t[1] == "{" and "{" in br:
                p = toks[i - 1] if i else ("o", ";")
                expr = p[0] == "o" and p[1] in ("=", "]", ",", "(", "return", ":", "?") or p == ("i", "return")
                braces.append(expr or (bool(braces) and braces[-1] and p != ("o", ")")))
                if braces[-1]:
                    continue
            elif t[1] == "}" and "}" in br and braces:
                if braces.pop():
                    continue
            elif braces and braces[-1]:
                continue  # a ';' inside an initialiser: (anonymous-class bodies are rare in pages)
            if i > a:
                out.append((a, i))
            a = i + 1
        if a < len(self.toks):
            out.append((a, len(self.toks)))
        return out

    def stmt_end(self, i: int) -> int:
        br = self.lang.breaks
        for j in range(i, len(self.toks)):
            t = self.toks[j]
            if t[0] == "o" and t[1] in br:
                return j
        return len(self.toks)

    # --- functions ---------------------------------------------------------------------------

    def _functions(self) -> dict[str, tuple[list[str], int, int]]:
        toks = self.toks
        out: dict[str, tuple[list[str], int, int]] = {}
        kw = self.lang.func_kw
        for i in range(1, len(toks) - 1):
            t = toks[i]
            if t[0] != "i" or not (toks[i + 1][0] == "o" and toks[i + 1][1] == "("):
                continue
            p = toks[i - 1]
            if kw:
                if not (p[0] == "i" and p[1].lower() in kw):
                    continue
            elif not ((p[0] == "i" and p[1] not in _NOT_FUNC) or (p[0] == "o" and p[1] in (">", "]", "{", ";", "}"))) \
                    or t[1] in _NOT_FUNC:
                continue  # (after `{`, `;` or `}`: a constructor, `T(String v) {`, whose `new T(x)` calls pass x)
            j = self.close(i + 1)
            if j < 0 or j >= len(toks):
                continue
            if not kw:
                k = j + 1
                while k < len(toks) and (toks[k][0] == "i" or toks[k] in (("o", ","), ("o", "."))):
                    k += 1  # throws A, java.io.B
                if k >= len(toks) or toks[k] != ("o", "{"):
                    continue
                end = self.close(k)
            else:
                end = self._vb_end(j)
            params = [self._param_name(seg) for seg in self._split(i + 2, j)]
            out[t[1].lower() if self.lang.flags & re.I else t[1]] = ([p for p in params if p], j + 1, end)
        if self.lang.name == "c#":
            self._properties_and_lambdas(out)
        if kw and out:
            # VBScript `Set f = GetRef("Name")`: f is the function Name (called as `f x` later)
            for i in range(len(toks) - 5):
                if toks[i][0] == "i" and toks[i + 1] == ("o", "=") and toks[i + 2] == ("i", "getref") \
                        and toks[i + 3] == ("o", "(") and toks[i + 4][0] == "s":
                    target = out.get(str(toks[i + 4][1]).lower())
                    if target is not None and toks[i][1] not in out:
                        out[toks[i][1]] = target
        return out

    def _properties_and_lambdas(self, out: dict) -> None:
        """C# `string Cmd { get { return ...; } }` is a function of no parameters called without parentheses,
        and `run = c => ...` / `run = (a, b) => ...` one whose parameters a call `run(x)` passes."""
        toks = self.toks
        n = len(toks)
        found = 0
        for i in range(1, n - 3):
            t = toks[i]
            if t[0] != "i":
                continue
            if found >= 256:
                return  # each one's end is a scan ahead: bounded for a page of thousands
            before = toks[i - 1]
            if toks[i + 1] == ("o", "{") and toks[i + 2] == ("i", "get") and (
                    before[0] == "i" or before in (("o", ">"), ("o", "]"))):
                end = self.close(i + 1)
                found += 1
                if end >= n:
                    return  # unbalanced braces (hostile or cut input): every later scan would run to the end too
                if end > 0 and t[1] not in out:
                    out[t[1]] = ([], i + 2, end)
            elif toks[i + 1] == ("o", "=") and i + 4 < n:
                q = i + 2
                if toks[q][0] == "i" and toks[q + 1] == ("o", "=") and toks[q + 2] == ("o", ">"):
                    params, body = [toks[q][1]], q + 3
                elif toks[q] == ("o", "("):
                    c = self.close(q)
                    if not (0 < c < n - 2 and toks[c + 1] == ("o", "=") and toks[c + 2] == ("o", ">")):
                        continue
                    params = [self._param_name(seg) for seg in self._split(q + 1, c)]
                    body = c + 3
                else:
                    continue
                found += 1
                if t[1] not in out:
                    out[t[1]] = ([p for p in params if p], body, self.stmt_end(body))

    def _vb_end(self, j: int) -> int:
        toks = self.toks
        for k in range(j, len(toks) - 1):
            t = toks[k]
            if t[0] == "i" and t[1].lower() == "end" and toks[k + 1][0] == "i" \
                    and toks[k + 1][1].lower() in ("function", "sub"):
                return k
            if t == ("o", "}"):  # JScript function body
                return k
        return len(toks)

    def _param_name(self, seg: tuple[int, int]) -> str:
        names = [self.toks[k][1] for k in range(*seg) if self.toks[k][0] == "i"
                 and self.toks[k][1].lower() not in ("byval", "byref", "optional", "as", "final", "ref", "out",
                                                     "params", "in", "var")]
        if not names:
            return ""
        if self.lang.func_kw:
            # VB `ByVal s As String` / JScript `s`: the name comes first
            return names[0]
        return names[-1]

    def _split(self, a: int, b: int) -> list[tuple[int, int]]:
        """Comma-separated segments of toks[a:b] at depth 0."""
        segs = []
        depth = 0
        s = a
        for k in range(a, b):
            t = self.toks[k]
            if t[0] != "o":
                continue
            if t[1] in "([{":
                depth += 1
            elif t[1] in ")]}":
                depth -= 1
            elif t[1] == "," and depth == 0:
                segs.append((s, k))
                s = k + 1
        if s < b:
            segs.append((s, b))
        return segs

    # --- taint -------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return name.lower() if self.lang.flags & re.I else name

    def taint_of(self, a: int, b: int) -> str | None:
        """The request data the expression toks[a:b] holds, or None."""
        toks = self.toks
        b = min(b, len(toks))
        if b - a > 4096:
            self.budget.spend(0)
        for k in range(a, b):
            s = self.src[k]
            if s is not None:
                return s
            t = toks[k]
            if t[0] == "i" and self.tainted:
                if self._stored and t[1] in _LOAD and k + 2 < b and toks[k + 1] == ("o", "(") \
                        and toks[k + 2][0] == "s":
                    hit = self.tainted.get(self._key(_ATTR + str(toks[k + 2][1])))
                    if hit is not None:
                        return hit
                key = self._key(t[1])
                if key in self.tainted:
                    if k > 0 and toks[k - 1] == ("o", ".") and not (k > 1 and toks[k - 2][0] == "i"
                                                                    and toks[k - 2][1].lower() in _KEEP_MEMBERS):
                        continue
                    return self.tainted[key]
        return None

    def _mark(self, name: str, label: str) -> bool:
        key = self._key(name)
        if key in self.tainted or not key:
            return False
        self.tainted[key] = label
        return True

    def _propagate(self) -> None:
        toks = self.toks
        for _round in range(12):
            self.budget.spend(len(toks))
            changed = False
            for a, b in self.stmts:
                changed |= self._stmt(a, b)
            changed |= self._calls()
            if not changed:
                return

    def _suffix_taint(self, a: int, b: int) -> list:
        """label[k - a]: the request data in toks[k:b] (one backward pass, not one scan per '=')."""
        out: list = [None] * (b - a + 1)
        cur = None
        for k in range(b - 1, a - 1, -1):
            lab = self.taint_of(k, k + 1)
            if lab is not None:
                cur = lab
            out[k - a] = cur
        return out

    def _stmt(self, a: int, b: int) -> bool:
        toks = self.toks
        changed = False
        assigns = [k for k in range(a, b) if toks[k][0] == "o" and toks[k][1] in ("=", "+=", ":")]
        self.budget.spend(b - a)
        suffix = self._suffix_taint(a, b) if len(assigns) > 2 else None
        for k in assigns:
            t = toks[k]
            if t[1] == ":" and not self._foreach(a, k):
                continue
            label = suffix[k + 1 - a] if suffix is not None else self.taint_of(k + 1, b)
            if label is None:
                continue
            for name in self._lhs_names(max(a, k - 64), k):
                changed |= self._mark(name, label)
        # Perl: foreach my $x (expr)
        if self.lang.extra.get("hash_index"):
            for k in range(a, b - 2):
                if toks[k][0] == "i" and toks[k][1] in ("for", "foreach"):
                    q = k + 1
                    if q < b and toks[q] == ("i", "my"):
                        q += 1
                    if q + 1 < b and toks[q][0] == "i" and toks[q + 1] == ("o", "("):
                        label = self.taint_of(q + 1, self.close(q + 1))
                        if label:
                            changed |= self._mark(toks[q][1], label)
        # `for (x in expr)` / C# `foreach (var x in expr)`
        for k in range(a, b - 1):
            t = toks[k]
            if t[0] == "i" and t[1] == "in" and k > a and toks[k - 1][0] == "i":
                label = self.taint_of(k + 1, b)
                if label:
                    changed |= self._mark(toks[k - 1][1], label)
        # a lambda's parameters hold what the chain before it carries: `Optional.of(tainted).ifPresent(c -> ...)`,
        # `list.forEach(x -> ...)` (over-approximate, like the rest: the chain's request data reaches them)
        first = -1  # the statement's first token holding request data (one pass, not one per lambda)
        for k in (range(a + 1, b) if self._arrows else ()):
            if toks[k] != ("o", "->"):
                continue
            if first == -1:
                first = next((q for q in range(a, b) if self.taint_of(q, q + 1) is not None), b)
            if first >= k:
                continue
            names = [toks[k - 1][1]] if toks[k - 1][0] == "i" else []
            if toks[k - 1] == ("o", ")"):
                q = k - 2
                while q > a and toks[q] != ("o", "(") and k - q < 16:
                    if toks[q][0] == "i" and toks[q - 1] in (("o", "("), ("o", ",")):
                        names.append(toks[q][1])
                    elif toks[q][0] == "i" and toks[q + 1] in (("o", ")"), ("o", ",")):
                        names.append(toks[q][1])
                    q -= 1
            if names:
                label = self.taint_of(first, first + 1) if first < k - len(names) else None
                if label:
                    for name in names:
                        changed |= self._mark(name, label)
        changed |= self._method_effects(a, b)
        return changed

    def _foreach(self, a: int, k: int) -> bool:
        # `for (java.util.Map.Entry<String, String[]> e : ...)`: a qualified generic type is 20 tokens and more
        return any(self.toks[j] in (("i", "for"), ("i", "foreach")) for j in range(max(a, k - 40), k))

    def _lhs_names(self, a: int, k: int) -> list[str]:
        toks = self.toks
        names = []
        j = k - 1
        # skip an index on the left: arr[i] = x, Session["k"] = x, VB Session("k") = x
        close = "]" if j >= a and toks[j] == ("o", "]") else ")" if self.lang.func_kw and j >= a \
            and toks[j] == ("o", ")") else "}" if self.lang.extra.get("hash_index") and j >= a \
            and toks[j] == ("o", "}") else ""
        if self.lang.extra.get("hash_index") and j >= a and toks[j] == ("o", ")"):
            # Perl list assignment: ($name, $value) = split(...)
            return [t[1] for t in toks[a:j] if t[0] == "i" and t[1].startswith("$")]
        if close:
            opener = {"]": "[", ")": "(", "}": "{"}[close]
            depth = 0
            while j >= a:
                if toks[j] == ("o", close):
                    depth += 1
                elif toks[j] == ("o", opener):
                    depth -= 1
                    if depth == 0:
                        j -= 1
                        break
                j -= 1
        if j >= a and toks[j][0] == "i":
            names.append(toks[j][1])
            if j - 2 >= a and toks[j - 1] == ("o", ":") and toks[j - 2][0] == "i":
                names.append(toks[j - 2][1])  # JScript.NET / TypeScript: `var x : String = ...`
            # a.b = x taints a too (psi.Arguments = tainted, then Process.Start(psi))
            r = j
            while r - 2 >= a and toks[r - 1] == ("o", ".") and toks[r - 2][0] == "i":
                r -= 2
            if r != j and toks[r][1].lower() not in _KEEP_MEMBERS:
                names.append(toks[r][1])
            elif r != j and r + 2 <= j:
                names.append(toks[r + 2][1])
        return [n for n in names if n not in _NOT_ASSIGNED]

    def _method_effects(self, a: int, b: int) -> bool:
        """`x.m(tainted)` taints x (sb.append, list.add, stream.write ...); `in.read(buf)` taints buf."""
        toks = self.toks
        changed = False
        for k in range(a + 2, b - 1):
            if toks[k][0] != "i" or toks[k - 1] != ("o", ".") or toks[k + 1] != ("o", "("):
                continue
            recv = toks[k - 2]
            j = self.close(k + 1)
            if recv == ("o", ")"):
                # a chain: sb.append("'").append(tmp) taints sb
                r = self._receiver(k - 1)
                if r < k - 2 and toks[r][0] == "i" and toks[r][1] != "new" and r + 1 < k and toks[r + 1] == ("o", "."):
                    recv = toks[r]
            if recv[0] == "i" and recv[1] not in _NOT_TAINTED_RECV:
                label = self.taint_of(k + 2, j)
                if label:
                    changed |= self._mark(recv[1], label)
                if toks[k][1] in ("read", "readFully", "Read") and k + 2 < b and toks[k + 2][0] == "i":
                    label = self.taint_of(k - 2, k - 1)
                    if label:
                        changed |= self._mark(toks[k + 2][1], label)
            elif toks[k][1] in ("read", "readFully", "Read") and k + 2 < b and toks[k + 2][0] == "i":
                label = self.taint_of(a, k)
                if label:
                    changed |= self._mark(toks[k + 2][1], label)
            if toks[k][1] in _STORE and recv[0] == "i" and recv[1] in _SCOPES and k + 3 < b \
                    and toks[k + 2][0] == "s" and toks[k + 3] == ("o", ","):
                # session.setAttribute("k", tainted): what a later getAttribute("k") returns is request data
                label = self.taint_of(k + 4, j)
                if label:
                    self._stored = True
                    changed |= self._mark(_ATTR + str(toks[k + 2][1]), label)
        return changed

    def _calls(self) -> bool:
        """Calls to the file's own functions: tainted arguments taint the parameters; a function
        returning tainted data makes its calls sources."""
        if not self.funcs:
            return False
        toks = self.toks
        changed = False
        vb = "sub" in self.lang.func_kw
        for i in range(len(toks) - 1):
            t = toks[i]
            if t[0] != "i":
                continue
            paren = toks[i + 1] == ("o", "(")
            # VB calls a Sub without parentheses: `Name a, b` at the start of a statement (or after Call), and
            # a class's Sub the same way: `obj.Name a, b`
            bare = vb and not paren and toks[i + 1][0] != "o" \
                and (i == 0 or toks[i - 1] == ("o", "\n") or toks[i - 1] == ("i", "call")
                     or (i >= 2 and toks[i - 1] == ("o", ".") and toks[i - 2][0] == "i"
                         and (i == 2 or toks[i - 3] == ("o", "\n") or toks[i - 3] == ("i", "call"))))
            if not paren and not bare:
                continue
            f = self.funcs.get(self._key(t[1]))
            if f is None:
                continue
            params, body_a, body_b = f
            if body_a <= i + 1 <= body_a:
                continue  # the definition itself
            if paren:
                j = self.close(i + 1)
                segs = self._split(i + 2, j)
            else:
                j = self.stmt_end(i)
                segs = self._split(i + 1, j)
            for pos, seg in enumerate(segs):
                label = self.taint_of(*seg)
                if label is None:
                    # an out/ref argument (VBScript: every argument is ByRef) the callee fills with request data
                    names = [toks[q][1] for q in range(*seg) if toks[q][0] == "i"]
                    byref = vb or any(x in ("out", "ref") for x in names[:-1])
                    if byref and names and pos < len(params) and len(segs) == len(params) \
                            and self._key(params[pos]) in self.tainted:
                        changed |= self._mark(names[-1], self.tainted[self._key(params[pos])])
                    continue
                targets = [params[pos]] if pos < len(params) and len(segs) == len(params) else params
                for p in targets:
                    changed |= self._mark(p, label)
        for name, (_params, a, b) in self.funcs.items():
            if self._key(name) in self.tainted:
                continue
            for k in range(a, min(b, len(toks))):
                if toks[k][0] == "i" and toks[k][1].lower() == "return":
                    label = self.taint_of(k + 1, self.stmt_end(k))
                    if label:
                        changed |= self._mark(name, label)
                        break
        return changed

    # --- sinks -------------------------------------------------------------------------------

    def flows(self) -> list[Flow]:
        out = []
        needs: dict[int, bool] = {}  # several sinks share one condition (WScript.Shell, Process): search once
        for sink in self.lang.sinks:
            if sink.needs is not None:
                key = id(sink.needs)
                if key not in needs:
                    needs[key] = sink.needs.search(self.text) is not None
                if not needs[key]:
                    continue
            for m in sink.pattern.finditer(self.text):
                self.budget.spend(0)
                if self.toks[self.tok_at(m.start())][0] == "s":
                    continue  # code quoted in a string runs only where an eval sink takes it
                out.append(self._flow(sink, m))
                if len(out) > 2000:
                    return out
        return out

    def _flow(self, sink: Sink, m: re.Match) -> Flow:
        toks = self.toks
        i = self.tok_at(m.start())
        e = self.tok_at(max(m.start(), m.end() - 1))
        if sink.rest:
            a, b = e + 1, self.stmt_end(e)
        elif e < len(toks) and toks[e] == ("o", "("):
            a, b = e + 1, self.close(e)
        elif e < len(toks) and toks[e] == ("o", "="):
            a, b = e + 1, self.stmt_end(e)
        else:
            a, b = e + 1, self.stmt_end(e)
        b = min(b, len(toks))
        label = self.taint_of(a, b)
        r = self._receiver(i)
        if label is None and sink.receiver:
            label = self.taint_of(r, i)
        if label is not None:
            state = "tainted"
        elif all(t[0] in ("s", "n", "c") or (t[0] == "o" and t[1] in ",+&()[]{}") or
                 (t[0] == "i" and t[1] in ("new", "String", "string", "Object", "null", "true", "false",
                                            "Nothing"))
                 for t in toks[a:b]) and (not sink.receiver or all(t[0] != "i" or t[1] != "request"
                                                                   for t in toks[r:i])):
            state = "constant"
        else:
            state = "unknown"
        start = max(0, r)
        return Flow(sink, label or "", state, start, b, self.code(start, min(b + 1, len(toks))))

    def _receiver(self, i: int) -> int:
        """Start of the call chain that ends at toks[i] (`new U(...).g(...)` before `.newInstance`)."""
        toks = self.toks
        j = i
        if j < len(toks) and toks[j] != ("o", "."):
            # the sink starts with a name: include a qualifier before it (a.b.exec)
            pass
        while j > 0:
            if toks[j] != ("o", ".") and toks[j - 1] != ("o", "."):
                break
            if toks[j] != ("o", "."):
                j -= 1  # onto the dot
            # toks[j] is '.', a primary before it
            k = j - 1
            if k < 0:
                break
            p = toks[k]
            if p[0] == "o" and p[1] in (")", "]"):
                depth = 0
                while k >= 0:
                    if toks[k][0] == "o" and toks[k][1] in (")", "]"):
                        depth += 1
                    elif toks[k][0] == "o" and toks[k][1] in ("(", "["):
                        depth -= 1
                        if depth == 0:
                            break
                    k -= 1
                if k < 0:
                    return 0
                if k > 0 and toks[k - 1][0] == "i" and toks[k - 1][1] not in _NOT_FUNC:
                    k -= 1
            elif p[0] not in ("i", "s", "n", "c"):
                break
            while k > 0 and toks[k - 1] == ("i", "new"):
                k -= 1
            j = k
        return j


def embedded_pages(toks, limit: int = 8) -> list[str]:
    """String constants that are themselves server pages (`<%eval request("x")%>` written to root.asp)."""
    out = []
    for kind, val in toks:
        if kind == "s" and len(val) >= 12 and ("<%" in val or "<jsp:" in val) and "request" in val.lower():
            out.append(val)
            if len(out) >= limit:
                break
    return out


def embedded_hits(toks, budget, depth: int, lang: str) -> list:
    """Hits of the pages embedded in string constants, read by the reader their text calls for."""
    from agent.imagegate.webshell import asp, jsp  # the readers import this module

    out = []
    if depth >= 2:
        return out
    for page in embedded_pages(toks):
        found: list = []
        data = page.encode("utf-8", "replace")
        if "getParameter" in page or "<jsp:" in page or "java." in page:
            jsp.scan_text(page, budget, found, depth + 1)
        else:
            asp.scan_text(page, "aspx" if re.search(r"language\s*=\s*[\"']?(?:c#|cs|jscript)", page, re.I) else "asp",
                          budget, found, depth + 1)
        del data
        out.extend(h for h in found if h.confidence >= 0.5)
    return out
