"""The condition language: parsed once, compiled once into closures over typed events.

A Falco user reads it at once:

    evt.type in (open, openat) and fd.name pmatch (sensitive_paths) and not proc.name in (known)
    process.ancestors[1].name = nginx and process.executable.path glob '/tmp/*'

Grammar (`not` binds tighter than `and`, `and` tighter than `or`):

    expr    := and ('or' and)*
    and     := unary ('and' unary)*
    unary   := 'not' unary | '(' expr ')' | NAME cmp | NAME            (a bare NAME is a macro)
    cmp     := 'exists' | binop value | ('in' | 'intersects' | 'pmatch') '(' [value (',' value)*] ')'
    binop   := = | == | != | < | <= | > | >= | contains | icontains | startswith | endswith
               | glob | iglob | regex
    value   := 'quoted' | "quoted" | bare word          (inside a list, a bare word naming a list expands)

Fields are ours or Falco's (agent/detect/fields.py). Macros expand at compile time (a cycle is an
error); lists may name other lists. Numbers are checked against int fields, booleans against
bool fields; glob and regex patterns compile once.

Semantics, chosen to match Falco where it documents one:
- A field the event does not carry makes every comparison on it false, including `!=`; so
  `not <comparison>` is true on such an event (as in Falco). `exists` is the explicit test.
- `regex` must match the whole value (re.fullmatch); write `.*x.*` to find x anywhere.
- On a list field (process.args, process.ancestors.name) an operator holds when it holds for
  any element; `!=` holds when no element is equal.
- `pmatch (/etc, /usr/bin)` holds for each path equal to or below one of the prefixes; a prefix
  may hold globs matched per path component (`/home/*/.ssh`: * does not cross a '/'). In `glob`,
  as in fnmatch(3) without FNM_PATHNAME, * does cross a '/'.
- Network fields (fd.snet, fd.rnet, fd.net ...) take addresses or CIDRs: `fd.snet in (rfc_1918)`.
- A list item that carries its own quotes ('"10.0.0.0/8"', as Falco's lists do) is that string.
Not supported (a ConditionError names them): bcontains, bstartswith, Falco's field transformers
(tolower(), val() ...), and fields we have no data for (fields.py lists what exists).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from agent.detect import fields as F
from agent.detect.compare import NUMERIC_OPS, ConditionError, Match, all_of, any_of, has_wildcard, predicate
from agent.events import EVENT_NAMES, Enriched

__all__ = ["BoolOp", "Cmp", "Compiled", "ConditionError", "Match", "Node", "Not", "Part", "Ref", "Value", "compile",
           "parse"]

BINOPS = frozenset({"=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains", "startswith",
                    "endswith", "glob", "iglob", "regex"})
LISTOPS = frozenset({"in", "intersects", "pmatch"})
UNSUPPORTED_OPS = frozenset({"bcontains", "bstartswith"})
_SYMBOLS = ("==", "!=", "<=", ">=", "=", "<", ">")
_WORD_END = set(" \t\r\n()=<>,'\"")
_STRING_OPS = frozenset({"contains", "icontains", "startswith", "endswith", "glob", "iglob", "regex", "pmatch"})


# -- syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Value:
    text: str
    quoted: bool
    offset: int


@dataclass(frozen=True, slots=True)
class Cmp:
    field: str
    op: str
    values: tuple[Value, ...]  # one for a binop, any number for in/intersects/pmatch, none for exists
    offset: int


@dataclass(frozen=True, slots=True)
class Ref:
    name: str  # a macro
    offset: int


@dataclass(frozen=True, slots=True)
class Not:
    item: Node
    offset: int


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" or "or"
    items: tuple[Node, ...]
    offset: int


Node = Cmp | Ref | Not | BoolOp


# -- tokens and parser --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "(", ")", ",", "sym" (= != < ...), "str" (quoted), "word", "end"
    text: str
    offset: int


def _tokens(text: str) -> list[_Tok]:
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            out.append(_Tok(c, c, i))
            i += 1
        elif c in "'\"":
            i = _quoted(text, i, out)
        elif sym := next((s for s in _SYMBOLS if text.startswith(s, i)), None):
            out.append(_Tok("sym", sym, i))
            i += len(sym)
        else:
            j = i
            while j < n and text[j] not in _WORD_END and not text.startswith("!=", j):
                j += 1
            if j == i:
                raise ConditionError(f"unexpected character {c!r}", i)
            out.append(_Tok("word", text[i:j], i))
            i = j
    out.append(_Tok("end", "", n))
    return out


def _quoted(text: str, start: int, out: list[_Tok]) -> int:
    quote, i, buf = text[start], start + 1, []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            buf.append(text[i + 1])
            i += 2
        elif c == quote:
            out.append(_Tok("str", "".join(buf), start))
            return i + 1
        else:
            buf.append(c)
            i += 1
    raise ConditionError("unterminated string", start)


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def is_word(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and tok.text == word

    def expr(self) -> Node:
        return self._chain("or", self.conj)

    def conj(self) -> Node:
        return self._chain("and", self.unary)

    def _chain(self, op: str, sub: Callable[[], Node]) -> Node:
        start = self.peek().offset
        items = [sub()]
        while self.is_word(op):
            self.take()
            items.append(sub())
        return items[0] if len(items) == 1 else BoolOp(op, tuple(items), start)

    def unary(self) -> Node:
        tok = self.take()
        if tok.kind == "word" and tok.text == "not":
            return Not(self.unary(), tok.offset)
        if tok.kind == "(":
            node = self.expr()
            close = self.take()
            if close.kind != ")":
                raise ConditionError(f"expected ')' to close the '(' at column {tok.offset + 1}, "
                                     f"got {_describe(close)}", close.offset)
            return node
        if tok.kind != "word" or tok.text in ("and", "or"):
            raise ConditionError(f"expected a field, a macro, 'not' or '(', got {_describe(tok)}", tok.offset)
        return self._after_name(tok)

    def _after_name(self, name: _Tok) -> Node:
        nxt = self.peek()
        op = nxt.text if nxt.kind in ("sym", "word") else ""
        if op in UNSUPPORTED_OPS:
            raise ConditionError(f"operator {op!r} is not supported", nxt.offset)
        if op == "exists":
            self.take()
            return Cmp(name.text, "exists", (), name.offset)
        if op in LISTOPS:
            self.take()
            return Cmp(name.text, op, self._list(op), name.offset)
        if op in BINOPS:
            self.take()
            return Cmp(name.text, "=" if op == "==" else op, (self._value(op),), name.offset)
        return Ref(name.text, name.offset)

    def _value(self, op: str) -> Value:
        tok = self.take()
        if tok.kind in ("str", "word") and not (tok.kind == "word" and tok.text in ("and", "or")):
            return Value(tok.text, tok.kind == "str", tok.offset)
        if tok.kind == "sym" and tok.text in ("<", ">"):  # Falco's evt.dir = < (a bare value)
            return Value(tok.text, False, tok.offset)
        raise ConditionError(f"expected a value after {op!r}, got {_describe(tok)}", tok.offset)

    def _list(self, op: str) -> tuple[Value, ...]:
        tok = self.take()
        if tok.kind != "(":
            raise ConditionError(f"expected '(' after {op!r}, got {_describe(tok)}", tok.offset)
        items: list[Value] = []
        if self.peek().kind == ")":
            self.take()
            return ()
        while True:
            tok = self.take()
            if tok.kind not in ("str", "word"):
                raise ConditionError(f"expected a value in the {op!r} list, got {_describe(tok)}", tok.offset)
            items.append(Value(tok.text, tok.kind == "str", tok.offset))
            sep = self.take()
            if sep.kind == ")":
                return tuple(items)
            if sep.kind != ",":
                raise ConditionError(f"expected ',' or ')' in the {op!r} list, got {_describe(sep)}", sep.offset)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Node:
    """Macros are shared by many rules: each text is parsed once per process (the tree is immutable)."""
    return parse(text)


def _unquote(item: str) -> str:
    """A list item written with its own quotes ('"10.0.0.0/8"' in YAML, as Falco's lists do, which
    Falco splices into the condition as text) is that quoted string."""
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
        return item[1:-1]
    return item


def _describe(tok: _Tok) -> str:
    if tok.kind == "end":
        return "the end of the condition"
    return f"{tok.text!r}" if tok.kind != "str" else f"the string {tok.text!r}"


def parse(text: str) -> Node:
    """The syntax tree of one condition; ConditionError (with its column) on a syntax error."""
    if not text or not text.strip():
        raise ConditionError("empty condition", 0)
    p = _Parser(text)
    node = p.expr()
    tok = p.peek()
    if tok.kind != "end":
        hint = " (a missing 'and'/'or', or an unknown operator?)" if tok.kind in ("word", "str") else ""
        raise ConditionError(f"unexpected {_describe(tok)}{hint}", tok.offset)
    return node


# -- compiler -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compiled:
    match: Match
    kinds: frozenset[str] | None  # the event names it can match; None = any
    fields: frozenset[str]  # our names of the fields it reads
    notes: tuple[str, ...] = ()  # what can never match (an evt.type we have no event for)
    conjuncts: tuple[Part, ...] = ()  # the top-level `and`, flattened (one part when it is not an `and`)


@dataclass(frozen=True, slots=True)
class Part:
    """One compiled sub-condition: its closure, the kinds it can be true on, the fields it reads,
    a cost rank (an `and` tests its cheap parts first; every part is pure, so the order is free),
    and what agent/detect/index.py needs to share work between rules: a canonical `key` (equal
    keys, equal results), the flattened conjuncts of an `and`, and for `field = v` / `field in (..)`
    on a scalar field the (field, getter, values) it accepts."""

    fn: Match
    kinds: frozenset[str] | None
    fields: frozenset[str]
    cost: int
    key: str
    conj: tuple[Part, ...] | None = None
    disj: tuple[Part, ...] | None = None  # the flattened alternatives of an `or`
    eq: tuple[str, Callable[[Enriched], object], frozenset] | None = None
    # For `startswith p` and `pmatch (...)` on a string field: (field, getter, prefixes, exact
    # values); the part holds exactly when the value starts with a prefix or equals an exact one.
    prefix: tuple[str, Callable[[Enriched], object], tuple[str, ...], frozenset] | None = None
    words: tuple[str, Callable[[Enriched], object], tuple[str, ...]] | None = None  # `contains w` on a string
    kind_test: bool = False  # an event.name = / in test: true on every kind in `kinds`
    # For agent/detect/index.py's generated code: the part a `not` negates, and a simple comparison's
    # (field, getter, op, value) for exists, !=, <, <=, >, >=, endswith on a scalar field.
    neg: Part | None = None
    cmp: tuple[str, Callable[[Enriched], object], str, object] | None = None
    fast: Part | None = None  # the same test with the field's fast getter, valid on fast_kinds
    # For `in` / `intersects` / `=` on a list field (file.mode_names in (S_ISUID, S_ISGID)): (field,
    # getter, values); the part holds exactly when an element is one of the values (index.py's
    # pre-condition anchors on it).
    anyin: tuple[str, Callable[[Enriched], object], frozenset] | None = None
    fast_kinds: frozenset[str] = frozenset()


_NAME_TO_OP = {name: op for op, name in EVENT_NAMES.items()}


class _Compiler:
    def __init__(self, macros: dict[str, str], lists: dict[str, list], ancestors: F.Ancestors | None):
        self.macros = macros
        self.lists = lists
        self.ancestors = ancestors
        self.parsed: dict[str, Node] = {}
        self.stack: list[str] = []
        self.notes: list[str] = []

    def build(self, node: Node) -> Part:
        if isinstance(node, BoolOp):
            return self._bool(node)
        if isinstance(node, Not):
            inner = self.build(node.item)
            fn = inner.fn
            # usually true (not a package manager, not a trusted reader): tested after selective parts
            return Part(lambda en: not fn(en), None, inner.fields, inner.cost + 2, f"not({inner.key})", neg=inner)
        if isinstance(node, Ref):
            return self._macro(node)
        return self._cmp(node)

    def _bool(self, node: BoolOp) -> Part:
        parts = [self.build(n) for n in node.items]
        fields = frozenset().union(*(p.fields for p in parts))
        cost = max(p.cost for p in parts)
        if node.op == "and":
            flat = [q for p in parts for q in (p.conj or (p,))]  # a and (b and c): one list
            flat.sort(key=lambda p: p.cost)
            known = [p.kinds for p in flat if p.kinds is not None]
            kinds = frozenset.intersection(*known) if known else None
            key = "and(" + ",".join(sorted(p.key for p in flat)) + ")"
            return Part(all_of([p.fn for p in flat]), kinds, fields, cost, key, conj=tuple(flat))
        flat = _merge_same_field([q for p in parts for q in (p.disj or (p,))])  # a or (b or c): one list
        if len(flat) == 1:
            return flat[0]
        kinds = None if any(p.kinds is None for p in flat) else frozenset().union(*(p.kinds for p in flat))
        key = "or(" + ",".join(sorted(p.key for p in flat)) + ")"
        return Part(any_of([p.fn for p in flat]), kinds, fields, cost, key, disj=tuple(flat))

    def _macro(self, ref: Ref) -> Part:
        if ref.name not in self.macros:
            try:
                F.resolve(ref.name)
            except F.FieldError:
                raise ConditionError(f"unknown macro {ref.name!r}", ref.offset) from None
            raise ConditionError(f"field {ref.name!r} needs an operator (=, in, exists, ...)", ref.offset)
        if ref.name in self.stack:
            cycle = " -> ".join([*self.stack[self.stack.index(ref.name):], ref.name])
            raise ConditionError(f"macro cycle: {cycle}", ref.offset)
        self.stack.append(ref.name)
        try:
            node = self.parsed.get(ref.name)
            if node is None:
                node = self.parsed[ref.name] = _parse_cached(self.macros[ref.name])
            return self.build(node)
        except ConditionError as e:
            if e.message.startswith(("in macro ", "macro cycle")):
                raise ConditionError(e.message, ref.offset) from None
            raise ConditionError(f"in macro {ref.name!r} at column {e.offset + 1}: {e.message}", ref.offset) from None
        finally:
            self.stack.pop()

    def _cmp(self, node: Cmp) -> Part:
        try:
            field = F.resolve(node.field, self.ancestors)
        except F.FieldError as e:
            raise ConditionError(str(e), node.offset) from None
        if field.name == "event.name" and node.op in ("=", "!=", "in", "intersects"):
            return self._event_name(node, field)
        values = self._values(node)
        _check_op(node, field)
        typed = [_typed(field, v, node) for v in values]
        key = f"{field.name} {node.op} {sorted(map(repr, typed))}"
        part = _leaf(field, field.get, node, typed, key)
        if field.fast is None:
            return part
        kinds = frozenset(k for k in _NAME_TO_OP if field.fast_on(k) is not None)
        return dataclasses.replace(part, fast=_leaf(field, field.fast, node, typed, key), fast_kinds=kinds)

    def _values(self, node: Cmp) -> list[Value]:
        if node.op not in LISTOPS:
            return list(node.values)
        out: list[Value] = []
        for v in node.values:
            if not v.quoted and v.text in self.lists:
                out.extend(self._expand(v.text, v.offset, []))
            else:
                out.append(v)
        return out

    def _expand(self, name: str, offset: int, seen: list[str]) -> list[Value]:
        if name in seen:
            raise ConditionError(f"list cycle: {' -> '.join([*seen, name])}", offset)
        items = self.lists[name]
        if not isinstance(items, list | tuple):
            raise ConditionError(f"list {name!r} is not a list of values", offset)
        out: list[Value] = []
        for item in items:
            text = str(item) if not isinstance(item, bool) else str(item).lower()
            if text in self.lists and isinstance(item, str):
                out.extend(self._expand(text, offset, [*seen, name]))
            else:
                out.append(Value(_unquote(text), True, offset))
        return out

    def _event_name(self, node: Cmp, field: F.Field) -> Part:
        """event.name / evt.type: compared by op code (an int), Falco's syscall names translated."""
        names: set[str] = set()
        for v in self._values(node):
            name = F.EVENT_TYPES.get(v.text, v.text) if node.field == "evt.type" else v.text
            if name in _NAME_TO_OP:
                names.add(name)
            else:
                self.notes.append(f"{node.field} {v.text!r}: no such event here")
        ops = frozenset(_NAME_TO_OP[n] for n in names)
        key = f"event.name {'!=' if node.op == '!=' else 'in'} {sorted(names)}"
        if node.op == "!=":
            return Part(lambda en: en.event.op not in ops, None, frozenset({field.name}), 0, key)
        if len(ops) == 1:
            (one,) = ops
            fn: Match = lambda en: en.event.op is one  # noqa: E731
        else:
            fn = lambda en: en.event.op in ops  # noqa: E731
        return Part(fn, frozenset(names), frozenset({field.name}), 0, key, kind_test=True)


def compile(text: str, macros: dict[str, str] | None = None, lists: dict[str, list] | None = None,
            ancestors: F.Ancestors | None = None) -> Compiled:  # noqa: A001 (the contract's name)
    """Compile a condition once: `match(en)` is a tree of closures, no parsing per event."""
    c = _Compiler(macros or {}, lists or {}, ancestors)
    part = c.build(parse(text))
    if part.kinds is not None and not part.kinds:
        c.notes.append("no event kind carries everything it asks for: it never matches")
    return Compiled(part.fn, part.kinds, part.fields, tuple(dict.fromkeys(c.notes)), part.conj or (part,))


# -- comparisons --------------------------------------------------------------------------------


def _merge_same_field(alts: list[Part]) -> list[Part]:
    """Alternatives of an `or` that test one string field by equality or prefix (file.path in (...)
    or file.path startswith /etc/profile.d/ or file.path pmatch (...)) become one test: the field
    read once, one set lookup and one startswith over all the prefixes; and, as a prefix test, the
    RuleIndex can dispatch on it."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(alts):
        name = _path_like(p)
        if name:
            groups.setdefault(name, []).append(i)
    finds: dict[str, list[int]] = {}
    for i, p in enumerate(alts):
        if p.words is not None:
            finds.setdefault(p.words[0], []).append(i)
    merged: dict[int, Part] = {}
    drop: set[int] = set()
    for idxs in groups.values():
        if len(idxs) > 1:
            merged[idxs[0]] = _merge([alts[i] for i in idxs])
            drop.update(idxs[1:])
    for idxs in finds.values():
        if len(idxs) > 1:
            merged[idxs[0]] = _merge_words([alts[i] for i in idxs])
            drop.update(idxs[1:])
    return [merged.get(i, p) for i, p in enumerate(alts) if i not in drop]


def _path_like(p: Part) -> str:
    if p.prefix is not None:
        return p.prefix[0]
    if p.eq is not None and all(isinstance(v, str) for v in p.eq[2]):
        return p.eq[0]
    return ""


def _merge(parts: list[Part]) -> Part:
    name = _path_like(parts[0])
    get = (parts[0].prefix or parts[0].eq)[1]
    prefixes = tuple(sorted({x for p in parts if p.prefix for x in p.prefix[2]}))
    exact = frozenset().union(*(p.prefix[3] if p.prefix else p.eq[2] for p in parts))
    key = f"{name} anyof {sorted(exact)} {list(prefixes)}"
    kinds = None if any(p.kinds is None for p in parts) else frozenset().union(*(p.kinds for p in parts))
    if prefixes:
        fn: Match = lambda en: (v := get(en)) is not None and (v in exact or v.startswith(prefixes))  # noqa: E731
        part = Part(fn, kinds, frozenset({name}), 2, key, prefix=(name, get, prefixes, exact))
    else:
        part = Part(lambda en: get(en) in exact, kinds, frozenset({name}), 1, key, eq=(name, get, exact))
    if all(p.fast is not None for p in parts):
        fast_kinds = frozenset.intersection(*(p.fast_kinds for p in parts))
        part = dataclasses.replace(part, fast=_merge([p.fast for p in parts]), fast_kinds=fast_kinds)
    return part


def _merge_words(parts: list[Part]) -> Part:
    """`f contains a or f contains b ...`: the field read once, the words searched in one loop."""
    name, get = parts[0].words[0], parts[0].words[1]
    words = tuple(w for p in parts for w in p.words[2])

    def fn(en: Enriched) -> bool:
        v = get(en)
        if v is None:
            return False
        for w in words:
            if w in v:
                return True
        return False

    kinds = None if any(p.kinds is None for p in parts) else frozenset().union(*(p.kinds for p in parts))
    part = Part(fn, kinds, frozenset({name}), 2, f"{name} contains-any {sorted(words)}", words=(name, get, words))
    if all(p.fast is not None for p in parts):
        fast_kinds = frozenset.intersection(*(p.fast_kinds for p in parts))
        part = dataclasses.replace(part, fast=_merge_words([p.fast for p in parts]), fast_kinds=fast_kinds)
    return part


def _leaf(field: F.Field, get: Callable[[Enriched], object], node: Cmp, typed: list, key: str) -> Part:
    fn = predicate(field.type, get, node.op, typed, node.values[0].offset if node.values else node.offset)
    eq = prefix = None
    if node.op in ("=", "in", "intersects") and field.type not in ("list[str]", "net"):
        eq = (field.name, get, frozenset(typed))
    elif node.op == "startswith" and field.type == "str" and typed[0]:
        prefix = (field.name, get, (typed[0],), frozenset())
    elif node.op == "pmatch" and field.type == "str" and typed and not any(map(has_wildcard, typed)):
        prefix = (field.name, get, tuple(p.rstrip("/") + "/" for p in typed),
                  frozenset(p.rstrip("/") or "/" for p in typed))
    words = (field.name, get, (typed[0],)) if node.op == "contains" and field.type == "str" else None
    anyin = None
    if node.op in ("=", "in", "intersects") and field.type == "list[str]":
        anyin = (field.name, get, frozenset(typed))
    cmp = None
    if node.op in _INLINE_OPS and field.type in ("str", "int", "bool") and (node.op == "exists" or typed):
        cmp = (field.name, get, node.op, typed[0] if typed else None)
    return Part(fn, field.kinds, frozenset({field.name}), _cost(field, node.op), key, eq=eq, prefix=prefix,
                words=words, cmp=cmp, anyin=anyin)


_INLINE_OPS = frozenset({"exists", "!=", "<", "<=", ">", ">=", "endswith"})


def _check_op(node: Cmp, field: F.Field) -> None:
    t = field.type
    if node.op in NUMERIC_OPS and t != "int":
        raise ConditionError(f"{node.op!r} needs a number field; {node.field} is {t}", node.offset)
    if node.op in _STRING_OPS and t not in ("str", "list[str]"):
        raise ConditionError(f"{node.op!r} needs a string field; {node.field} is {t}", node.offset)
    if t == "bool" and node.op not in ("=", "!=", "exists"):
        raise ConditionError(f"{node.field} is a bool: use = true / = false", node.offset)
    if t == "net" and node.op not in ("=", "!=", "in", "exists"):
        raise ConditionError(f"{node.field} is a network: use =, != or in with addresses or CIDRs", node.offset)


def _typed(field: F.Field, v: Value, node: Cmp) -> object:
    if field.type == "int":
        try:
            return int(v.text, 0)
        except ValueError:
            raise ConditionError(f"{node.field} is a number; {v.text!r} is not", v.offset) from None
    if field.type == "net":
        try:
            return ipaddress.ip_network(v.text, strict=False)
        except ValueError:
            raise ConditionError(f"{node.field} is a network; {v.text!r} is not an address or CIDR", v.offset) from None
    if field.type == "bool":
        low = v.text.lower()
        if low not in ("true", "false"):
            raise ConditionError(f"{node.field} is a bool; {v.text!r} is not true or false", v.offset)
        return low == "true"
    return v.text


def _cost(field: F.Field, op: str) -> int:
    if op == "regex" or field.type == "list[str]" or "ancestors" in field.name:
        return 3
    return 1 if field.type in ("int", "bool") or op in ("=", "in") else 2
