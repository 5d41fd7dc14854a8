"""Rules indexed by event kind, with the work rules share done once per event.

`RuleIndex(compiled)` takes the compiled conditions of a rule set (agent/detect/condition.py) and
`match(en)` returns the positions of those that match, in the order given (the conditions must
come from compile() calls with the same `ancestors`, as one rules load makes them: equal keys then
mean equal results). These keep the
cost per event low, all decided once at build time:

1. by kind: an event meets only the rules whose `kinds` hold its event name (None = every kind),
   and within a kind the rule's top-level `evt.type`/`event.name` tests are dropped (known true);
2. dispatch on equality: where several rules of a kind test `field = v` / `field in (...)` on the
   same field (proc.name in (shell_binaries), fd.sport in (miner_ports) ...), the field is read once
   and one dict lookup finds the rules whose value set holds it; likewise for path prefixes
   (`startswith`, `pmatch`): a lookup of the path's first component, then one per prefix length under
   it, finds the rules whose prefix the value has;
3. shared conjuncts: a sub-condition several rules `and` with (a macro such as open_write, which
   has one canonical key wherever it is expanded) is evaluated once and gates all of them;
4. per kind, an `or` keeps only the alternatives that can hold on that kind (the bundled
   `(open and write) or event.name in (rename, unlink)` is just `write` on an open, true on a
   rename), and the getters skip their type checks (Field.fast).
5. an `or` whose alternatives each have such a test (`file.name in (rc files) or file.path startswith
   /etc/profile.d/`) is split into one item per alternative, so each joins its field's dispatch.
6. a per-kind pre-condition (`prefilter(op)`), for batches: most events of a real mix match no rule,
   and the node, however well planned, costs a Python call of some hundred bytecodes per event. From
   every item of the kind one necessary conjunct is taken (an equality or prefix test: its "anchor";
   an `or` whose alternatives all have one gives the union of theirs), and the anchors are merged per
   field into one set lookup and one prefix lookup by first component. An event none of them accepts
   can match no rule of its kind and skips the node; the others go to the node as before. A kind with
   an item that has no anchor (a rule true on every open, a `not` alone) has no pre-condition.
The plan is then written as Python: one generated function per node (see "code generation" below),
with each field read once into a local and the tests inline, cheap parts first. Conditions are pure
functions of the event, so none of this changes a result; tests/unit/test_detect_index.py checks
that the index and each rule's own `match` agree, on fixed and on random rule sets. The generated
source holds no text from a rule file: every value is a constant passed in by name.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence

from agent.detect.compare import all_of, any_of
from agent.detect.condition import Compiled, Part
from agent.events import EVENT_NAMES, Enriched, Op

Node = Callable[[Enriched, list], None]
Prefilter = Callable[[Sequence[Enriched], list[int]], list[int]]
_Item = tuple[int, tuple[Part, ...]]  # (rule position, conjuncts still to test)


class RuleIndex:
    def __init__(self, compiled: Sequence[Compiled]):
        self.size = len(compiled)
        self._by_op: dict[Op, Node] = {}
        self._pre_by_op: dict[Op, Prefilter] = {}
        self._spec_by_op: dict[Op, tuple] = {}
        self.met: dict[str, int] = {}  # rules each kind meets (for metrics and the bench)
        for op, name in EVENT_NAMES.items():
            items = [item for pos, c in enumerate(compiled) for item in _for_kind(pos, c, name)]
            self.met[name] = len({pos for pos, _ in items})
            if items:
                self._by_op[op] = _build(items, {})
                spec = _spec(items)
                if spec is not None:
                    self._spec_by_op[op] = spec
                    self._pre_by_op[op] = _python(spec)

    def node(self, op: Op) -> Node | None:
        """The node of one kind: node(en, out) appends the positions that match (repeats possible:
        match() removes them); None when no rule can match that kind."""
        return self._by_op.get(op)

    def prefilter(self, op: Op) -> Prefilter | None:
        """The kind's pre-condition over a batch: prefilter(events, where) -> the positions of `where`
        (indices into `events`, all of this kind) that may match a rule; None when there is none (every
        event goes to the node). A position whose test raised is kept: the node then judges it."""
        return self._pre_by_op.get(op)

    def prefilter_spec(self, op: Op) -> tuple | None:
        """The same pre-condition as agent/detect/_prefilter.c takes it (index.compiled_tests), or None."""
        spec = self._spec_by_op.get(op)
        return compiled_tests(spec) if spec is not None else None

    def match(self, en: Enriched) -> list[int]:
        """Positions (in the order given) of the conditions that match this event."""
        node = self._by_op.get(en.event.op)
        if node is None:
            return []
        out: list[int] = []
        node(en, out)
        if len(out) > 1:
            out = sorted(set(out))
        return out


def _for_kind(pos: int, c: Compiled, name: str) -> list[_Item]:
    """The rule's items on kind `name`: none when it cannot hold there, one, or (an `or` split) one
    per alternative."""
    if c.kinds is not None and name not in c.kinds:
        return []
    parts = _conjuncts(c.conjuncts, name)
    if parts is None:
        return []
    return [(pos, tuple(p)) for p in _split_or(parts)]


_SPLIT_MAX = 6  # alternatives an `or` may have to be split


def _split_or(parts: list[Part]) -> list[list[Part]]:
    """`x and (a or b)` as `(x and a)`, `(x and b)`: two items of one rule, when every alternative
    has a test the index can dispatch on (an equality or a prefix; `file.name in (rc files) or
    file.path startswith /etc/profile.d/`), so each one joins its field's dispatch instead of the
    rule testing both fields on every event. One `or` per rule; a match reached twice counts once
    (RuleIndex.match removes repeats)."""
    for i, p in enumerate(parts):
        alts = p.disj
        if alts is None or len(alts) > _SPLIT_MAX or not all(map(_dispatchable, alts)):
            continue
        rest = parts[:i] + parts[i + 1 :]
        return [rest + list(a.conj or (a,)) for a in alts]
    return [parts]


def _dispatchable(p: Part) -> bool:
    return any(q.eq is not None or q.prefix is not None for q in (p.conj or (p,)))


def _conjuncts(parts: tuple[Part, ...], name: str) -> list[Part] | None:
    """The conjuncts left to test on an event of kind `name` (None: the condition cannot hold)."""
    out: list[Part] = []
    for p in parts:
        sub = _specialize(p, name)
        if sub is None:
            return None
        out.extend(sub)
    return out


def _specialize(p: Part, name: str) -> list[Part] | None:
    """One part on a known kind: [] when it is true there, None when it cannot be, else the parts
    to test. An `or` keeps only the alternatives that can hold on this kind; with one left, its
    own conjuncts join the rule's (so `(open and write) or rename` on an open is just `write`)."""
    if p.kinds is not None and name not in p.kinds:
        return None
    if p.kind_test:
        return []  # the index already chose the kind: an event.name test of this kind is true
    if p.conj is not None:
        return _conjuncts(p.conj, name)
    if p.disj is not None:
        alts = [a for a in (_conjuncts(q.conj or (q,), name) for q in p.disj) if a is not None]
        if not alts:
            return None
        if any(not a for a in alts):
            return []
        if len(alts) == 1:
            return alts[0]
        return [_any_part(alts)]  # each alternative as this kind has it (fast getters, kind tests gone)
    return [p.fast if name in p.fast_kinds else p]  # the kind is known: no type checks


def _any_part(alts: list[list[Part]]) -> Part:
    """An `or` of what is left of its alternatives on one kind."""
    ands = [a[0] if len(a) == 1 else _all_part(a) for a in alts]
    fields = frozenset().union(*(q.fields for q in ands))
    key = "or(" + ",".join(sorted(q.key for q in ands)) + ")"
    return Part(any_of([q.fn for q in ands]), None, fields, max(q.cost for q in ands), key, disj=tuple(ands))


def _all_part(parts: list[Part]) -> Part:
    parts = sorted(parts, key=lambda q: q.cost)
    key = "and(" + ",".join(sorted(q.key for q in parts)) + ")"
    fields = frozenset().union(*(q.fields for q in parts))
    return Part(all_of([q.fn for q in parts]), None, fields, max(q.cost for q in parts), key, conj=tuple(parts))


def _build(items: list[_Item], memo: dict) -> Node:
    """A node that appends the positions of the matching items; shared work split off greedily.
    `memo` (one per kind) hands out the node already built for the same items: dispatch buckets
    often hold the same rules (every prefix of a list, every value of a name list), and without it
    nested dispatches would build the same subtree once per path through them."""
    ident = tuple((pos, tuple(map(id, parts))) for pos, parts in items)
    hit = memo.get(ident)
    if hit is None:  # the items are kept with their node: while the memo lives, no id is reused
        hit = memo[ident] = (_Gen(memo).function(items), items)
    return hit[0]


def _best_eq(items: list[_Item]) -> tuple[str, int]:
    per_field: Counter = Counter()
    for _, parts in items:
        per_field.update({p.eq[0] for p in parts if p.eq is not None})
    return per_field.most_common(1)[0] if per_field else ("", 0)


def _best_prefix(items: list[_Item]) -> tuple[str, int]:
    per_field: Counter = Counter()
    for _, parts in items:
        per_field.update({p.prefix[0] for p in parts if p.prefix is not None})
    return per_field.most_common(1)[0] if per_field else ("", 0)


def _best_key(items: list[_Item]) -> tuple[str, int]:
    per_key: Counter = Counter()
    for _, parts in items:
        per_key.update({p.key for p in parts if not p.key.startswith("not(")})
    return per_key.most_common(1)[0] if per_key else ("", 0)


def _split(items: list[_Item], pick: Callable[[Part], bool]) -> tuple[list[tuple[int, Part, tuple]], list[_Item]]:
    """Items with a conjunct `pick` accepts (that conjunct taken out), and the others."""
    group, rest = [], []
    for pos, parts in items:
        i = next((i for i, p in enumerate(parts) if pick(p)), None)
        if i is None:
            rest.append((pos, parts))
        else:
            group.append((pos, parts[i], parts[:i] + parts[i + 1 :]))
    return group, rest


# -- code generation -------------------------------------------------------------------------------
#
# A node is one Python function generated from the plan (_plan), not a tree of closures: on CPython
# a call costs more than the test it makes, and a write-heavy node meets the file rules on most
# events. Inside one function each field is read at most once (a local, read when first needed),
# equality and prefix tests are inline expressions, and the shared tests and the rules left on their
# own are `if`s; only what has no inline form (a `not`, a regex, an `or` of different fields) is a
# call of the Part's own closure. A dispatch table's buckets are functions of their own (built once
# per distinct set of items, through `memo`), called only when the value is in the table.


def _plan(items: list[_Item]) -> tuple[tuple[int, ...], list[tuple[str, list]], list[_Item]]:
    """(positions already true, [(how, group)] for the shared work in order, rules left alone)."""
    done = tuple(pos for pos, parts in items if not parts)
    pending = [it for it in items if it[1]]
    steps: list[tuple[str, list]] = []
    rules: list[_Item] = []
    while pending:
        field, n_eq = _best_eq(pending)
        key, n_key = _best_key(pending)
        pfield, n_pre = _best_prefix(pending)
        # Dispatch first: it narrows to the rules a value can satisfy. A gate only where no field is
        # shared, and never on a `not` (an exception, a benign list: nearly always true, so a gate
        # on it would cost every event a test that each rule makes only after its selective ones).
        if n_pre >= 2 and n_pre > n_eq:
            group, pending = _split(pending, lambda p, f=pfield: p.prefix is not None and p.prefix[0] == f)
            steps.append(("prefix", group))
        elif n_eq >= 2:
            group, pending = _split(pending, lambda p, f=field: p.eq is not None and p.eq[0] == f)
            steps.append(("eq", group))
        elif n_key >= 2:
            group, pending = _split(pending, lambda p, k=key: p.key == k)
            steps.append(("gate", group))
        else:
            rules.extend(pending)
            break
    return done, steps, rules


_UNREAD = object()  # a field's local before it is read
_INLINE_VALUES = 2  # a dispatch on this many values or fewer is an if/elif chain, not a table


class _Gen:
    """Writes one node's function: names for the objects it needs, a local per getter."""

    def __init__(self, memo: dict):
        self.memo = memo
        self.env: dict[str, object] = {"_U": _UNREAD}
        self.names: dict[int, str] = {}  # id(object) -> its name in env
        self.fields: dict[str, str] = {}  # field name -> its local
        self.n = 0

    def const(self, obj: object, hint: str) -> str:
        name = self.names.get(id(obj))
        if name is None:
            name = self.names[id(obj)] = f"{hint}{len(self.env)}"
            self.env[name] = obj
        return name

    def tmp(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def read(self, field: str, get: Callable) -> str:
        """An expression of the field's value, read once per call of the node (the first getter
        asked for it reads it: a field's getters, fast or not, agree on every event they may read)."""
        local = self.fields.get(field)
        if local is None:
            local = self.fields[field] = f"v{len(self.fields)}"
        # a getter may carry its value as an expression over `en` (fields.py's fast getters): inlined
        inline = getattr(get, "inline", None)
        read = f"({inline})" if isinstance(inline, str) else f"{self.const(get, 'g')}(en)"
        return f"({local} if {local} is not _U else ({local} := {read}))"

    def test(self, p: Part) -> str:
        """An expression that is the part's result (its own closure where there is no inline form)."""
        if p.eq is not None:
            field, get, values = p.eq
            if len(values) == 1:
                (want,) = values
                return f"({self.read(field, get)} == {self.const(want, 'k')})"
            return f"({self.read(field, get)} in {self.const(values, 's')})"
        if p.prefix is not None:
            field, get, prefixes, exact = p.prefix
            v = self.tmp()
            alts = [f"{v}.startswith({self.const(prefixes, 'p')})"] if prefixes else []
            if exact:
                alts.insert(0, f"{v} in {self.const(exact, 's')}")
            return f"(({v} := {self.read(field, get)}) is not None and ({' or '.join(alts) or 'False'}))"
        if p.words is not None:
            field, get, words = p.words
            v = self.tmp()
            found = " or ".join(f"{self.const(w, 'k')} in {v}" for w in words)
            return f"(({v} := {self.read(field, get)}) is not None and ({found}))"
        if p.cmp is not None:
            field, get, op, want = p.cmp
            value = self.read(field, get)
            if op == "exists":
                return f"({value} is not None)"
            v, k = self.tmp(), self.const(want, "k")
            test = f"{v}.endswith({k})" if op == "endswith" else f"{v} {op} {k}"
            return f"(({v} := {value}) is not None and {test})"
        if p.neg is not None:
            return f"(not {self.test(p.neg)})"
        if p.conj is not None:
            return "(" + " and ".join(self.test(q) for q in sorted(p.conj, key=lambda q: q.cost)) + ")"
        if p.disj is not None:
            return "(" + " or ".join(self.test(q) for q in p.disj) + ")"
        return f"{self.const(p.fn, 'f')}(en)"

    def function(self, items: list[_Item]) -> Node:
        body = self.block(items, 1)
        inits = "".join(f"    {local} = _U\n" for local in self.fields.values())
        src = "def node(en, out):\n" + inits + "".join(body) + "    return None\n"
        code = compile(src, "<detect.index>", "exec")  # noqa: S102 (our own plan, no input text)
        env = dict(self.env)
        exec(code, env)  # noqa: S102
        node = env["node"]
        node.source = src  # for tests and debugging
        return node

    def block(self, items: list[_Item], depth: int) -> list[str]:
        ind = "    " * depth
        done, steps, rules = _plan(items)
        out: list[str] = []
        if len(done) == 1:
            out.append(f"{ind}out.append({done[0]})\n")
        elif done:
            out.append(f"{ind}out.extend({done!r})\n")
        for pos, parts in rules:
            tests = " and ".join(self.test(p) for p in sorted(parts, key=lambda q: q.cost))
            out.append(f"{ind}if {tests}:\n{ind}    out.append({pos})\n")
        for how, group in steps:
            out += getattr(self, "_" + how)(group, depth)
        return out

    def _gate(self, group: list[tuple[int, Part, tuple]], depth: int) -> list[str]:
        """The shared conjunct once; only when it holds do the rules behind it run."""
        ind = "    " * depth
        inner = self.block([(pos, rest) for pos, _, rest in group], depth + 1)
        return [f"{ind}if {self.test(group[0][1])}:\n", *inner] if inner else []

    def _eq(self, group: list[tuple[int, Part, tuple]], depth: int) -> list[str]:
        """Read the shared field once; its value picks, by one dict lookup, the rules it satisfies
        (a field with one value, file.open.write = true, is an `if` and its rules inline)."""
        ind = "    " * depth
        get = group[0][1].eq[1]
        buckets: dict[object, list[_Item]] = {}
        for pos, part, rest in group:
            for value in part.eq[2]:
                buckets.setdefault(value, []).append((pos, rest))
        if len(buckets) <= _INLINE_VALUES:  # file.open.write = true / false: an if, the rules inline
            out: list[str] = []
            for value, items in buckets.items():
                inner = self.block(items, depth + 1)
                if inner:
                    kw = "elif" if out else "if"
                    out += [f"{ind}{kw} {self.read(group[0][1].eq[0], get)} == {self.const(value, 'k')}:\n", *inner]
            return out
        table = self.const({value: _build(items, self.memo) for value, items in buckets.items()}, "d")
        sub = self.tmp()
        # None (the field absent) is never a key: no rule's test holds
        return [f"{ind}{sub} = {table}.get({self.read(group[0][1].eq[0], get)})\n", f"{ind}if {sub} is not None:\n",
                f"{ind}    {sub}(en, out)\n"]

    def _prefix(self, group: list[tuple[int, Part, tuple]], depth: int) -> list[str]:
        """Read the shared path once; the rules whose prefix test holds are found by dict lookups of
        the path's heads (and of the whole value, for pmatch's exact entries). Only the heads that
        can be there are tried: the prefixes are grouped by their first component (`/etc/` of
        `/etc/cron.d/`), so a path costs one find, one lookup of its first component and one lookup
        per prefix length under it (a path under /var/lib meets none of /etc's prefixes). A prefix
        without a '/' after its first character (`/`, `/et`) is tried on every path. A rule with
        nested prefixes (/usr and /usr/bin) can be reached twice: RuleIndex.match removes repeats."""
        ind = "    " * depth
        get = group[0][1].prefix[1]
        heads: dict[str, list[_Item]] = {}
        exact: dict[str, list[_Item]] = {}
        for pos, part, rest in group:
            _, _, prefixes, exacts = part.prefix
            for p in prefixes:
                heads.setdefault(p, []).append((pos, rest))
            for e in exacts:
                exact.setdefault(e, []).append((pos, rest))
        by_head = {p: _build(items, self.memo) for p, items in heads.items()}
        under: dict[str, set[int]] = {}  # first component -> lengths of the prefixes that start with it
        short: set[int] = set()
        for p in heads:
            j = p.find("/", 1)
            if j < 0:
                short.add(len(p))
            else:  # every value that starts with p has p's first component as its own
                under.setdefault(p[: j + 1], set()).add(len(p))
        h = self.const(by_head, "d")
        v, j, lens, n, sub = (self.tmp() for _ in range(5))
        out = [f"{ind}{v} = {self.read(group[0][1].prefix[0], get)}\n", f"{ind}if {v} is not None:\n"]
        ind2 = ind + "    "
        if exact:
            ex = self.const({e: _build(items, self.memo) for e, items in exact.items()}, "d")
            out += [f"{ind2}{sub} = {ex}.get({v})\n", f"{ind2}if {sub} is not None:\n", f"{ind2}    {sub}(en, out)\n"]
        loop = [f"{ind2}    {n} = len({v})\n",
                f"{ind2}    for L in {lens}:\n", f"{ind2}        if L > {n}:\n", f"{ind2}            break\n",
                f"{ind2}        {sub} = {h}.get({v}[:L])\n", f"{ind2}        if {sub} is not None:\n",
                f"{ind2}            {sub}(en, out)\n"]
        if short:
            out += [f"{ind2}if True:\n", f"{ind2}    {lens} = {self.const(tuple(sorted(short)), 'k')}\n", *loop]
        if under:
            table = self.const({first: tuple(sorted(ns)) for first, ns in under.items()}, "d")
            out += [f"{ind2}{j} = {v}.find('/', 1)\n",
                    f"{ind2}{lens} = {table}.get({v}[: {j} + 1]) if {j} >= 0 else None\n",
                    f"{ind2}if {lens} is not None:\n", *loop]
        return out


# -- the per-kind pre-condition -----------------------------------------------------------------------


def _anchors(parts: Sequence[Part]) -> list[Part] | None:
    """Tests of which one must hold for the conjunction `parts` to hold (equality, prefix, suffix or
    `contains` Parts); None when none can be named. The conjunct most likely to be selective is
    taken (_rank); an `or` whose alternatives all have anchors gives the union of theirs."""
    best: tuple[int, list[Part]] | None = None
    for p in parts:
        rank = _rank(p)
        if rank is not None:
            cand = (rank, [p])
        elif p.conj is not None:
            sub = _anchors(p.conj)
            cand = (max(map(_rank, sub)), sub) if sub is not None else None
        elif p.disj is not None:  # every alternative needs one: the union of theirs
            alts = [_anchors(q.conj or (q,)) for q in p.disj]
            ok = all(a is not None for a in alts)
            union = [a for alt in alts if alt for a in alt]
            cand = (max(map(_rank, union)) + 1, union) if ok and union else None
        else:
            cand = None
        if cand is not None and (best is None or cand[0] < best[0]):
            best = cand
    return best[1] if best is not None else None


def _rank(p: Part) -> int | None:
    """How selective a test is likely to be, lower first: a set of numbers (ports, uids), a set of
    strings (program names, file names), a path prefix or suffix, a substring, a list field's
    names (open flags, mode bits); a bool last (file.open.write = true holds on half the opens)."""
    if p.eq is not None:
        values = p.eq[2]
        if all(isinstance(v, bool) for v in values):
            return 6
        return 0 if all(isinstance(v, int) for v in values) else 1
    if p.prefix is not None or (p.cmp is not None and p.cmp[2] == "endswith"):
        return 2
    if p.anyin is not None:  # flag and mode names: a few values, often set (O_TRUNC)
        return 4
    return 3 if p.words is not None else None


Test = tuple  # (getter, exact, heads, short, suffixes, words, anyin, guard): see _spec


def _spec(items: list[_Item]) -> tuple[Test, ...] | None:
    """The pre-condition of one kind's items (the module's docstring, 6): tests of which one holds on
    every event that can match an item, or None when there is none. One test per field read:
    (getter, exact values, ((first component, prefixes), ...), prefixes tried on every value,
    suffixes, substrings, values one of a list's elements may be, (getter, values) of a guard that
    must hold as well); None for what it has not. Anchors are merged per field and guard."""
    anchors: list[tuple[Part, Part | None]] = []  # (anchor, the item's guard)
    for _, parts in items:
        got = _anchors(parts)
        if got is None:
            return None  # an item true on every event of the kind, or with no test to anchor on
        guard = _guard(parts, got)
        anchors.extend((a, guard) for a in got)
    # a field tested without a guard for one rule is tested so for all: one test, not one per guard
    bare = {_field(a) for a, guard in anchors if guard is None}
    anchors = [(a, None if _field(a) in bare else guard) for a, guard in anchors]
    # (field, guard) -> (getter, exact, prefixes, suffixes, words, guard)
    per: dict[tuple, tuple[Callable, set, set, set, set, Part | None]] = {}
    tests: list[tuple[int, Test]] = []

    def slot(field: str, get: Callable) -> tuple[Callable, set, set, set, set, Part | None]:
        return per.setdefault((field, guard.key if guard is not None else None),
                              (get, set(), set(), set(), set(), guard))

    for a, guard in anchors:
        if a.eq is not None:
            field, get, values = a.eq
            slot(field, get)[1].update(values)
        elif a.prefix is not None:
            field, get, prefixes, exact = a.prefix
            slot(field, get)[1].update(exact)
            slot(field, get)[2].update(prefixes)
        elif a.anyin is not None:  # a list field: a test of its own
            _, get, values = a.anyin
            tests.append((4, (get, None, None, None, None, None, frozenset(values), _guard_test(guard))))
        elif a.cmp is not None:  # endswith
            field, get, _, want = a.cmp
            slot(field, get)[3].add(want)
        else:
            field, get, words = a.words
            slot(field, get)[4].update(words)
    for get, exact, prefixes, suffixes, words, guard in per.values():
        heads: dict[str, list[str]] = {}
        short: list[str] = []
        for p in sorted(prefixes):
            j = p.find("/", 1)
            if j < 0:
                short.append(p)  # no '/' after the first character: tried on every value
            else:  # a value that starts with p has p's first component as its own
                heads.setdefault(p[: j + 1], []).append(p)
        rank = 0 if not (prefixes or suffixes or words) else 2 if words else 1  # set lookups first
        tests.append((rank, (get, frozenset(exact) or None,
                             tuple((h, tuple(ps)) for h, ps in heads.items()) or None, tuple(short) or None,
                             tuple(sorted(suffixes)) or None, tuple(sorted(words)) or None, None,
                             _guard_test(guard))))
    tests.sort(key=lambda t: t[0])
    return tuple(t for _, t in tests)


def _field(a: Part) -> str:
    return (a.eq or a.prefix or a.anyin or a.cmp or a.words)[0]


def _guard(parts: Sequence[Part], anchors: list[Part]) -> Part | None:
    """A second necessary test of an item, on a number or a bool (file.open.write = true): the item's
    anchors count only where it holds too. It costs one compare, and spares an open for reading the
    path tests of the rules about writes (and the node, for a read of /etc/ssl/certs). Only a value
    the compiled pre-condition reads itself (_access): calling a getter would cost more than it saves."""
    for p in parts:
        if (p.eq is not None and all(p is not a for a in anchors) and not any(isinstance(v, str) for v in p.eq[2])
                and isinstance(_access(p.eq[1]), tuple)):
            return p
    return None


def _guard_test(guard: Part | None) -> tuple | None:
    """(getter, values) of a guard, or None."""
    return (guard.eq[1], frozenset(guard.eq[2])) if guard is not None else None


def _python(tests: tuple[Test, ...]) -> Prefilter:
    """The spec as generated Python (the reference, and what runs without the compiled module)."""
    gen = _Gen({})
    exprs: list[str] = []
    def read(get: Callable) -> str:
        inline = getattr(get, "inline", None)  # read in place where the getter has a text form
        return f"({inline})" if isinstance(inline, str) else f"{gen.const(get, 'g')}(en)"

    for get, exact, heads, short, suffixes, words, anyin, guard in tests:
        value = read(get)
        v = gen.tmp()
        alts = []
        if exact is not None:
            alts.append(f"{v} in {gen.const(exact, 's')}")
        if heads is not None:
            h = gen.tmp()
            table = gen.const(dict(heads), "d")
            alts.append(f"(({h} := {table}.get({v}[: {v}.find('/', 1) + 1])) is not None and {v}.startswith({h}))")
        if short is not None:
            alts.append(f"{v}.startswith({gen.const(short, 'p')})")
        if suffixes is not None:
            alts.append(f"{v}.endswith({gen.const(suffixes, 'p')})")
        alts += [f"{gen.const(w, 'k')} in {v}" for w in words or ()]
        if anyin is not None:
            alts.append(f"not {gen.const(anyin, 's')}.isdisjoint({v})")
        test = f"(({v} := {value}) is not None and ({' or '.join(alts)}))"
        if guard is not None:
            test = f"(({read(guard[0])} in {gen.const(guard[1], 's')}) and {test})"
        exprs.append(test)
    src = ("def prefilter(events, where):\n"
           "    keep = []\n"
           "    for i in where:\n"
           "        en = events[i]\n"
           "        try:\n"
           f"            if {' or '.join(exprs) or 'False'}:\n"
           "                keep.append(i)\n"
           "        except Exception:  # the node judges it (and reports what raised)\n"
           "            keep.append(i)\n"
           "    return keep\n")
    code = compile(src, "<detect.prefilter>", "exec")  # noqa: S102 (our own plan, no input text)
    env = dict(gen.env)
    exec(code, env)  # noqa: S102
    fn = env["prefilter"]
    fn.source = src
    return fn


_CHAIN = r"en(?:\.[A-Za-z_]\w*)+"
_ACCESS = re.compile(rf"(?P<mchain>{_CHAIN}) & (?P<mask>\d+) != (?P<ne>\d+)|"
                     rf"(?P<chains>{_CHAIN}(?: or {_CHAIN})*)(?P<none> or None)?|"
                     rf"\((?P<pchains>{_CHAIN}(?: or {_CHAIN})*)\)(?P<base>\.rpartition\(\"/\"\)\[2\])?")


def _access(get: Callable) -> object:
    """How the compiled pre-condition reads a getter's value: (chains of attribute names, flags) for a
    fast getter whose inline text is attribute reads joined by `or` (fields.py's `en.event.path`,
    `(en.path_resolved or en.event.path).rpartition("/")[2]`, `en.event.path2 or None`): flags bit 0
    takes the part after the last '/', bit 1 reads a false value as None; (chain, 4, mask, n) for
    `chain & mask != n` (file.open.write, .read); else the getter, called."""
    inline = getattr(get, "inline", None)
    m = _ACCESS.fullmatch(inline) if isinstance(inline, str) else None
    if m is None:
        return get
    if m["mchain"]:  # file.open.write's `en.event.flags & 3 != 0`: flags bit 2, with the mask and the number
        chain = tuple(sys.intern(a) for a in m["mchain"].split(".")[1:])
        return (chain,), 4, int(m["mask"]), int(m["ne"])
    text = m["chains"] or m["pchains"]
    chains = tuple(tuple(sys.intern(a) for a in c.split(".")[1:]) for c in text.split(" or "))
    return chains, (1 if m["base"] else 0) | (2 if m["none"] else 0)


def compiled_tests(tests: tuple[Test, ...]) -> tuple:
    """The spec as agent/detect/_prefilter.c takes it: (reads, tests), each getter as _access gives it,
    read once per event however many tests read it (file.name and file.resolved_path both read
    `en.path_resolved or en.event.path`), each test naming its read by position."""
    reads: dict[object, int] = {}
    out = []
    for t in tests:
        access = _access(t[0])
        base = False
        if isinstance(access, tuple) and access[1] & 1:  # per test: the read it applies to is shared
            base = True
            access = (access[0], access[1] & ~1, *access[2:])
        guard = (-1, None)
        if t[7] is not None:
            guard = (reads.setdefault(_access(t[7][0]), len(reads)), t[7][1])
        out.append((reads.setdefault(access, len(reads)), base, *t[1:7], *guard))
    return tuple(reads), tuple(out)
