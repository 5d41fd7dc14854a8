"""Rules indexed by event kind, with the work rules share done once per event.

`RuleIndex(compiled)` takes the compiled conditions of a rule set (agent/detect/condition.py) and
`match(en)` returns the positions of those that match, in the order given (the conditions must
come from compile() calls with the same `ancestors`, as one rules load makes them: equal keys then
mean equal results). Three things keep the
cost per event low, all decided once at build time:

1. by kind: an event meets only the rules whose `kinds` hold its event name (None = every kind),
   and within a kind the rule's top-level `evt.type`/`event.name` tests are dropped (known true);
2. dispatch on equality: where several rules of a kind test `field = v` / `field in (...)` on the
   same field (proc.name in (shell_binaries), fd.sport in (miner_ports) ...), the field is read once
   and one dict lookup finds the rules whose value set holds it; likewise for path prefixes
   (`startswith`, `pmatch`): one lookup per distinct prefix length finds the rules whose prefix
   the value has;
3. shared conjuncts: a sub-condition several rules `and` with (a macro such as open_write, which
   has one canonical key wherever it is expanded) is evaluated once and gates all of them;
4. per kind, an `or` keeps only the alternatives that can hold on that kind (the bundled
   `(open and write) or event.name in (rename, unlink)` is just `write` on an open, true on a
   rename), and the getters skip their type checks (Field.fast).
What is left of a rule after that runs as its own closure, cheap parts first. Conditions are pure
functions of the event, so none of this changes a result; tests/unit/test_detect_index.py checks
that the index and each rule's own `match` agree, on fixed and on random rule sets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from agent.detect.compare import all_of, any_of
from agent.detect.condition import Compiled, Part
from agent.events import EVENT_NAMES, Enriched, Op

Node = Callable[[Enriched, list], None]
_Item = tuple[int, tuple[Part, ...]]  # (rule position, conjuncts still to test)


class RuleIndex:
    def __init__(self, compiled: Sequence[Compiled]):
        self.size = len(compiled)
        self._by_op: dict[Op, Node] = {}
        self.met: dict[str, int] = {}  # rules each kind meets (for metrics and the bench)
        for op, name in EVENT_NAMES.items():
            items = [item for pos, c in enumerate(compiled) for item in _for_kind(pos, c, name)]
            self.met[name] = len({pos for pos, _ in items})
            if items:
                self._by_op[op] = _build(items, {})

    def node(self, op: Op) -> Node | None:
        """The node of one kind: node(en, out) appends the positions that match (repeats possible:
        match() removes them); None when no rule can match that kind."""
        return self._by_op.get(op)

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
        hit = memo[ident] = (_build_new(items, memo), items)
    return hit[0]


def _build_new(items: list[_Item], memo: dict) -> Node:
    done = tuple(pos for pos, parts in items if not parts)
    pending = [it for it in items if it[1]]
    nodes: list[Node] = []
    rules: list[tuple[int, tuple[Part, ...]]] = []
    while pending:
        field, n_eq = _best_eq(pending)
        key, n_key = _best_key(pending)
        pfield, n_pre = _best_prefix(pending)
        # Dispatch first: it narrows to the rules a value can satisfy. A gate only where no field is
        # shared, and never on a `not` (an exception, a benign list: nearly always true, so a gate
        # on it would cost every event a test that each rule makes only after its selective ones).
        if n_pre >= 2 and n_pre > n_eq:
            group, pending = _split(pending, lambda p, f=pfield: p.prefix is not None and p.prefix[0] == f)
            nodes.append(_by_prefix(group, memo))
        elif n_eq >= 2:
            group, pending = _split(pending, lambda p, f=field: p.eq is not None and p.eq[0] == f)
            nodes.append(_dispatch(group, memo))
        elif n_key >= 2:
            group, pending = _split(pending, lambda p, k=key: p.key == k)
            nodes.append(_gate(group, memo))
        else:
            rules.extend(pending)
            break
    return _seq(done, rules, nodes)


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


def _dispatch(group: list[tuple[int, Part, tuple]], memo: dict) -> Node:
    """Read the shared field once; its value picks, by one dict lookup, the rules it satisfies."""
    get = group[0][1].eq[1]
    buckets: dict[object, list[_Item]] = {}
    for pos, part, rest in group:
        for value in part.eq[2]:
            buckets.setdefault(value, []).append((pos, rest))
    table = {value: _build(items, memo) for value, items in buckets.items()}

    def node(en: Enriched, out: list) -> None:
        sub = table.get(get(en))  # None (field absent) is never a key: no rule's test holds
        if sub is not None:
            sub(en, out)

    return node


def _by_prefix(group: list[tuple[int, Part, tuple]], memo: dict) -> Node:
    """Read the shared path once; the rules whose prefix test holds are found by dict lookups of the
    path's heads (and of the whole value, for pmatch's exact entries). Only the heads that can be
    there are tried: the prefixes are grouped by their first component (`/etc/` of `/etc/cron.d/`),
    so a path costs one find, one lookup of its first component and one lookup per prefix length
    under it (a path under /var/lib meets none of /etc's prefixes). A prefix without a '/' after its
    first character (`/`, `/et`) is tried on every path. A rule with nested prefixes (/usr and
    /usr/bin) can be reached twice: RuleIndex.match removes repeats."""
    get = group[0][1].prefix[1]
    heads: dict[str, list[_Item]] = {}
    exact: dict[str, list[_Item]] = {}
    for pos, part, rest in group:
        _, _, prefixes, exacts = part.prefix
        for p in prefixes:
            heads.setdefault(p, []).append((pos, rest))
        for e in exacts:
            exact.setdefault(e, []).append((pos, rest))
    by_head = {p: _build(items, memo) for p, items in heads.items()}
    by_value = {e: _build(items, memo) for e, items in exact.items()}
    under: dict[str, set[int]] = {}  # first component -> lengths of the prefixes that start with it
    short: set[int] = set()
    for p in heads:
        j = p.find("/", 1)
        if j < 0:
            short.add(len(p))
        else:  # every value that starts with p has p's first component as its own
            under.setdefault(p[: j + 1], set()).add(len(p))
    lengths_under = {first: tuple(sorted(ns)) for first, ns in under.items()}
    short_t = tuple(sorted(short))

    def node(en: Enriched, out: list) -> None:
        v = get(en)
        if v is None:
            return
        if by_value:
            sub = by_value.get(v)
            if sub is not None:
                sub(en, out)
        n = len(v)
        for length in short_t:
            if length > n:
                break
            sub = by_head.get(v[:length])
            if sub is not None:
                sub(en, out)
        j = v.find("/", 1)
        if j < 0:
            return
        lengths = lengths_under.get(v[: j + 1])
        if lengths is None:
            return
        for length in lengths:
            if length > n:
                break
            sub = by_head.get(v[:length])
            if sub is not None:
                sub(en, out)

    return node


def _gate(group: list[tuple[int, Part, tuple]], memo: dict) -> Node:
    """Evaluate the shared conjunct once; only when it holds do the rules behind it run."""
    test = group[0][1].fn
    inner = _build([(pos, rest) for pos, _, rest in group], memo)

    def node(en: Enriched, out: list) -> None:
        if test(en):
            inner(en, out)

    return node


def _seq(done: tuple[int, ...], rules: list[tuple[int, tuple[Part, ...]]], nodes: list[Node]) -> Node:
    """Rules left on their own run inline in one loop (a call less per rule than a node each)."""
    singles = tuple((pos, parts[0].fn) for pos, parts in rules if len(parts) == 1)
    multis = tuple((pos, tuple(p.fn for p in sorted(parts, key=lambda p: p.cost)))
                   for pos, parts in rules if len(parts) > 1)
    nodes_t = tuple(nodes)
    if not done and not multis and not nodes_t:
        return _singles(singles)
    if not singles and not multis and len(nodes_t) == 1 and not done:
        return nodes_t[0]

    def node(en: Enriched, out: list) -> None:
        if done:
            out.extend(done)
        for pos, fn in singles:
            if fn(en):
                out.append(pos)
        for pos, fns in multis:
            for fn in fns:
                if not fn(en):
                    break
            else:
                out.append(pos)
        for n in nodes_t:
            n(en, out)

    return node


def _singles(singles: tuple) -> Node:
    """Only one-test rules left (the common leaf after a dispatch): one loop, nothing else."""
    if len(singles) == 1:
        ((pos, fn),) = singles

        def one(en: Enriched, out: list) -> None:
            if fn(en):
                out.append(pos)

        return one

    def node(en: Enriched, out: list) -> None:
        for pos, fn in singles:
            if fn(en):
                out.append(pos)

    return node
