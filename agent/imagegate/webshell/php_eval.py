"""The PHP reader's abstract interpreter, statements and expressions: reads a file's parse tree
with values (`V`: a constant or unknown, plus the request sources it derives from), folding
constants as PHP computes them and following request data through variables, arrays, properties,
string building and arithmetic. Calls, sinks and decoded code are php_calls' part; the two are
mutually recursive, so each imports the other at its end."""

from __future__ import annotations

import re
import time

from agent.imagegate.webshell.php_fold import to_int, to_str
from agent.imagegate.webshell.php_lex import tokenize
from agent.imagegate.webshell.php_parse import ClassDef, parse
from agent.imagegate.webshell.php_payloads import (
    candidates,
    embedded_programs,
    scan_payloads,
    scan_transformed,
    source_runs,
)
from agent.imagegate.webshell.php_sinks import (
    _CONSTS,
    _EMPTY,
    _SERVER_SAFE,
    MAX_ANALYSES,
    MAX_ARRAY,
    MAX_CONST,
    SOURCES,
    THIS_FILE,
    UNKNOWN,
    Ctx,
    Scope,
    V,
    _computed,
    _join,
    _label,
    _packed,
    _q,
    _raw,
    _render,
    _strong,
    _strongish,
    _sv,
    _weak,
)


def _run_file(ctx: Ctx, src: str, php_mode: bool) -> None:
    toks, stats = tokenize(src, ctx.budget, php_mode)
    ctx.stats = stats  # type: ignore[attr-defined]
    ctx.namespace = any(t == ("id", "namespace") for t in toks[:400])  # type: ignore[attr-defined]
    stmts, classes, deep = parse(toks, ctx.budget)
    encoded = candidates(toks)  # long literals that may be encoded code (read last, when nothing else was found)
    del toks
    ctx.too_deep |= deep
    _register(ctx, stmts, classes)
    top = Scope()
    ctx.globals = top
    for _ in range(2):  # twice: taint assigned late in the file reaches uses above it
        _stmts(ctx, stmts, top)
    for fd in list(ctx.funcs.values()) + [m for ms in ctx.methods.values() for m in ms]:
        if id(fd) not in ctx.analysed and ctx.analyses < MAX_ANALYSES:
            # a parameter of a function nobody calls is marked in its chain, not as taint: only
            # eval of it (an eval wrapper) counts, and nothing else sees it as request data
            params = [V(None, chain=(f"param:${p[0]}",)) for p in fd.params]
            _call_user(ctx, fd, params, V(cls=fd.cls) if fd.cls else None)
    for fd, cap in ctx.closures:
        if id(fd) not in ctx.analysed and ctx.analyses < MAX_ANALYSES:
            _call_user(ctx, fd, [], None, cap)
    if not ctx.strong:
        # nothing seen running: the encoded constants may hold the shell (reached a way we could not follow)
        runs = source_runs(src) if ctx.decode_depth == 0 else []
        scan_payloads(ctx, ctx.opaque_args + encoded + runs, "encoded constant")
        if not ctx.strong and ctx.decode_depth == 0:
            scan_transformed(ctx, src)
        if not ctx.strong and ctx.decode_depth == 0:
            embedded_programs(ctx, encoded + runs)


def _register(ctx: Ctx, stmts: list, classes: list[ClassDef]) -> None:
    stack = [stmts]
    while stack:
        for st in stack.pop():
            if st[0] == "func":
                ctx.funcs.setdefault(st[1].name, st[1])
                stack.append(st[1].body)
            else:
                stack.extend(_nested(st))
    for c in classes:
        ctx.classes[c.name] = c
        for name, fd in c.methods.items():
            ctx.methods.setdefault(name, []).append(fd)
            stack.append(fd.body)
    while stack:  # functions declared inside methods
        for st in stack.pop():
            if st[0] == "func":
                ctx.funcs.setdefault(st[1].name, st[1])
            else:
                stack.extend(_nested(st))
    for c in classes:
        for name, node in c.consts:
            ctx.consts[f"{c.name}::{name}"] = _ev(ctx, node, Scope())
        for name, node in c.props:
            if node is not None:
                ctx.props.setdefault(f"{c.name}->{name}", _ev(ctx, node, Scope()))


def _nested(st) -> list:
    """The statement lists inside a block, an if chain (`if (!function_exists('x')) { function x() ...`)
    or a for loop's body."""
    if st[0] == "block":
        return [st[1]]
    if st[0] == "if":
        return [b for _, b in st[1]] + [st[2]]
    if st[0] == "for":
        return [st[4]]
    return []


def _stmts(ctx: Ctx, stmts: list, sc: Scope) -> None:
    spend = ctx.budget.spend
    for st in stmts:
        spend(0)
        k = st[0]
        if k == "expr":
            _ev(ctx, st[1], sc)
        elif k == "exprs":
            for e in st[1]:
                _ev(ctx, e, sc)
        elif k == "echo":
            for e in st[1]:
                v = _ev(ctx, e, sc)
                if v.t:
                    ctx.echo_taint |= v.t  # what an output-buffer callback will be handed
                elif isinstance(v.s, str) and len(v.s) > 200 and (_packed(v.chain) or (
                        ctx.unrolled and v.s[:64] not in (ctx.root_src or ""))):
                    _packed_text(ctx, v)  # decoded by a decoder, or by a loop we ran
        elif k == "block":
            _stmts(ctx, st[1], sc)
        elif k == "return":
            sc.returns.append(_ev(ctx, st[1], sc) if st[1] is not None else UNKNOWN)
        elif k == "foreach":
            subj = _ev(ctx, st[1], sc)
            if isinstance(subj.s, dict) and subj.s:
                vals = [x if isinstance(x, V) else V(x) for x in list(subj.s.values())[:64]]
                elem = _join(vals)
                if elem.s is None and vals[0].s is not None and not subj.t:
                    # a loop over constants ('_POST', '_GET'): one iteration's value, so names
                    # built from it (variable variables) still resolve
                    elem = V(vals[0].s, elem.t, False, chain=elem.chain)
                    if st[3] is not None and st[3][0] == "var":
                        ctx.picked.add(st[3][1])
                if subj.t:
                    elem = V(elem.s, elem.t | subj.t, subj.d, elem.cls, elem.fn)
            else:
                elem = V(None, subj.t, subj.d)
            if st[3] is not None:
                _assign(ctx, st[3], elem, sc)
            if st[2] is not None:
                _assign(ctx, st[2], V(None, subj.t, subj.d), sc)
        elif k == "for":
            _for(ctx, st, sc)
        elif k == "if":
            _if(ctx, st, sc)
        elif k == "global":
            sc.globals.update(st[1])
        elif k == "const":
            for name, node in st[1]:
                ctx.consts[name.lower()] = _ev(ctx, node, sc)
        elif k == "func" or k == "class" or k == "html":
            pass


MAX_UNROLL = 20_000  # for-loop iterations run with known values, per file
LOOP_SECONDS = 1.0  # and the CPU one loop may take so, when its body builds a string (a decoder's; 0.3 s cut
# real decoders of 12 kB short on a loaded node, where CPU seconds stretch: MAX_UNROLL bounds the rest)
LOOP_SECONDS_OTHER = 0.05  # or when it does not (counting, a test's million iterations)


def _builds_string(body: list) -> bool:
    """Whether a loop body appends to a string or writes by index (`$d .= chr(...)`, `$s[$i] = ...`)."""
    stack: list = [body]
    seen = 0
    while stack and seen < 400:
        x = stack.pop()
        seen += 1
        if isinstance(x, tuple):
            if x and x[0] == "assign" and (x[1] == ".=" or (x[1] == "=" and x[2][0] == "idx")):
                return True
            stack.extend(y for y in x if isinstance(y, (tuple, list)))
        elif isinstance(x, list):
            stack.extend(x)
    return False


def _truthy(s) -> bool:
    return not (s is None or s is False or s == 0 or s == "" or s == "0" or (isinstance(s, dict) and not s))


def _if(ctx: Ctx, st, sc: Scope) -> None:
    """Every branch is read, in order (the analysis is flow-insensitive), except inside a for loop
    being run with known values, where a known condition picks its branch as PHP does."""
    branches, other = st[1], st[2]
    for i, (cond, body) in enumerate(branches):
        c = _ev(ctx, cond, sc) if cond is not None else UNKNOWN
        if ctx.precise and c.s is not None and not c.t and not isinstance(c.s, dict):
            if _truthy(c.s):
                _stmts(ctx, body, sc)
                return
            continue  # known false: the next branch
        if ctx.precise:  # unknown: every branch from here on, as outside a loop
            for cond2, _body in branches[i + 1:]:
                if cond2 is not None:
                    _ev(ctx, cond2, sc)
            ctx.precise, keep = 0, ctx.precise
            try:
                _stmts(ctx, body, sc)
                for _, body2 in branches[i + 1:]:
                    _stmts(ctx, body2, sc)
                _stmts(ctx, other, sc)
            finally:
                ctx.precise = keep
            return
        _stmts(ctx, body, sc)
    _stmts(ctx, other, sc)


def _for(ctx: Ctx, st, sc: Scope) -> None:
    """A for loop whose condition stays known is run as PHP runs it (bounded): decoders that loop
    over a constant string (`for ($i = 0; $i < strlen($s); $i++) $d .= chr(ord($s[$i]) ^ 7);`)
    then yield their text. Once the condition is unknown the body is read once, as before."""
    _, init, cond, step, body = st
    for e in init:
        _ev(ctx, e, sc)
    n = 0
    until = time.process_time() + (LOOP_SECONDS if _builds_string(body) else LOOP_SECONDS_OTHER)
    while True:
        c = None
        for e in cond:
            c = _ev(ctx, e, sc)  # the last expression of the condition decides
        known = c is not None and c.s is not None and not c.t and not isinstance(c.s, dict)
        if known and not _truthy(c.s) and n:
            break
        if known and _truthy(c.s):
            ctx.precise += 1
            try:
                _stmts(ctx, body, sc)
            finally:
                ctx.precise -= 1
        else:
            _stmts(ctx, body, sc)
        for e in step:
            _ev(ctx, e, sc)
        n += 1
        if not known or not _truthy(c.s) or ctx.unrolled >= MAX_UNROLL:
            break
        ctx.unrolled += 1
        if n & 63 == 0:
            ctx.budget.spend(0)
            if time.process_time() > until:
                break  # a long loop of real work (a test's million iterations) is not a decoder


# -- variables ----------------------------------------------------------------------------------
def _lookup(ctx: Ctx, name: str, sc: Scope) -> V:
    if name in SOURCES:
        return V(None, frozenset({"$" + name}), True, fn="src:" + name)
    if name == "_SERVER":
        return V(None, _EMPTY, False, fn="src:_SERVER")
    if name == "GLOBALS":
        return V(None, _EMPTY, False, fn="globals")
    if name == "_SESSION":
        return V(ctx.session.s, ctx.session.t, ctx.session.d, fn="session")
    if name in sc.globals and ctx.globals is not None and sc is not ctx.globals:
        sc = ctx.globals
    v = sc.vars.get(name)
    if v is None:
        if sc.extracted:
            t = frozenset({sc.extracted})
            if "variable variables" in sc.extracted:
                # as with register_globals below: read before the page gives it a default, it stays the request's
                sc.sticky.setdefault(name, t)
            return V(None, t, True)
        if sc.func is None and name != "this":
            # with register_globals (PHP < 5.4, the era of many shells still in use) an
            # undefined variable at file level is request data: a weak source
            # undefined variable at file level is request data: a weak source. Its value is ""
            # otherwise, which is what obfuscators rely on: `$f = $f . 'sys'; $f = $f . 'tem';`
            # Read before it is set (`if ($cmd == "") $cmd = "dir";`), it keeps that guess when the
            # code later gives it a default: the default is only taken when the request sent none.
            weak = frozenset({f"~${name} (register_globals)"})
            sc.sticky.setdefault(name, weak)
            return V("", weak, True)
        return UNKNOWN
    return v


def _set(ctx: Ctx, name: str, v: V, sc: Scope) -> None:
    if name == "_SESSION":
        ctx.session_write = True
        ctx.session = V(v.s, ctx.session.t | _weak(v.t), bool(v.t))
        return
    if name in sc.globals and ctx.globals is not None:
        sc = ctx.globals
    if ctx.precise and isinstance(v.s, str) and "loop" not in v.chain and not v.t:
        # a value a loop we ran computed (a decoder's output): marked, as a decoder's would be
        v = V(v.s, v.t, v.d, v.cls, v.fn, v.h, v.chain[:15] + ("loop",), v.tail, v.head)
    st = sc.sticky.get(name, _EMPTY)
    if v.t:
        st = st | v.t
        sc.sticky[name] = st
    if st and not st <= v.t:
        v = V(v.s, v.t | st, v.d, v.cls, v.fn, v.h, v.chain)
    sc.vars[name] = v


def _assign(ctx: Ctx, target, v: V, sc: Scope) -> None:
    k = target[0]
    if k == "var":
        _set(ctx, target[1], v, sc)
    elif k == "varvar":
        name = _ev(ctx, target[1], sc)
        n = _sv(name)
        if n is not None:
            _set(ctx, n, v, sc)
            if target[1][0] == "var" and target[1][1] in ctx.picked and _strong(v) and not sc.extracted:
                # `foreach (explode(' ', 'cmd dir file …') as $n) $$n = $_POST[$n];`: the loop names many
                # variables and we read one pass (the first name), so any the page reads unset is the request's
                # (a register_globals emulation, how old shells kept working after PHP dropped it)
                sc.extracted = _label(v).split("[", 1)[0] + "[…] (variable variables)"
        elif name.t:
            sc.extracted = sc.extracted or _label(name) + " (variable variable)"
    elif k == "idx":
        base = target[1]
        if base[0] == "var" and base[1] not in sc.vars and base[1] not in sc.globals and not sc.extracted \
                and base[1] not in SOURCES and base[1] not in ("_SERVER", "_SESSION", "GLOBALS", "this"):
            cur = V("")  # `$h[k] = v` on an undefined $h makes a new array: no register_globals guess
        else:
            cur = _ev(ctx, base, sc)
        if cur.fn == "globals":
            key = _sv(_ev(ctx, target[2], sc)) if target[2] is not None else None
            if key is not None and ctx.globals is not None:
                _set(ctx, key, v, ctx.globals)
            return
        key = _ev(ctx, target[2], sc) if target[2] is not None else None
        if cur.fn == "session" or (base[0] == "idx" and base[1] == ("var", "_SESSION")):
            ctx.session_write = True
            ctx.session = V(None, ctx.session.t | _weak(v.t), bool(v.t))
            return
        # an unknown value that carries request data may be a string: indexing it builds no array;
        # nor does one a decoder produced (a string whose bytes a loop rewrites)
        arr = cur.s if isinstance(cur.s, dict) else (
            {} if (cur.s is None and not cur.t and not cur.chain) or cur.s == "" else None)
        if isinstance(cur.s, str) and cur.s and len(cur.s) <= 4096 and not cur.t and key is not None:
            k, c = _key(key), _sv(v)
            if isinstance(k, int) and 0 <= k <= len(cur.s) and c:
                # `$s[$i] = 'x'` rewrites one byte (small strings only: a loop over a large one
                # would copy it at every step)
                _assign(ctx, base, V(cur.s[:k] + c[0] + cur.s[k + 1:], chain=cur.chain), sc)
                return
        if arr is None and isinstance(cur.s, str) and cur.s:
            # a known string with a byte rewritten by what we cannot compute: an unknown string
            # still (marked, so a later `$s[$i] = ...` does not take it for a new array)
            _assign(ctx, base, V(None, cur.t | v.t, False, chain=(cur.chain or v.chain or ())[:15] + ("loop",)), sc)
            return
        if arr is not None and len(arr) < MAX_ARRAY:
            arr = dict(arr)
            if key is None:
                last = next(reversed(arr), None) if arr else -1
                if isinstance(last, int) and last == len(arr) - 1:
                    nxt = len(arr)  # a list (0..n-1): the next index without a scan of every key
                else:
                    nxt = max((kk for kk in arr if isinstance(kk, int)), default=-1) + 1
                arr[nxt] = v
            else:
                ks = _key(key)
                if ks is None:
                    arr = None
                else:
                    arr[ks] = v
        else:
            arr = None
        _assign(ctx, base, V(arr, cur.t | v.t, False, cur.cls, chain=cur.chain or v.chain), sc)
    elif k == "prop":
        name = _ev(ctx, target[2], sc)
        n = _sv(name)
        if n is not None:
            n = _prop_key(ctx, target[1], n, sc)
            old = ctx.props.get(n)
            t = v.t | (old.t if old is not None else _EMPTY)
            ctx.props[n] = V(v.s, t, v.d, v.cls, v.fn, v.h, v.chain)
    elif k == "sprop":
        n = _sv(_ev(ctx, target[2], sc))
        if n is not None:
            ctx.props["::" + n] = v
    elif k == "array":  # list($a, $b) = ... / [$a, $b] = ...
        i = 0
        for key, item in target[1]:
            if item is None or item == ("const", "null"):
                i += 1
                continue
            if key is not None:
                kv = _key(_ev(ctx, key, sc))
            else:
                kv, i = i, i + 1
            _assign(ctx, item, _elem(v, kv), sc)


def _prop_key(ctx: Ctx, obj, name: str, sc: Scope) -> str:
    """Properties are one slot per class and name (per name when the class is unknown)."""
    if obj[0] == "var" and obj[1] == "this":
        this = sc.vars.get("this")
        cls = this.cls if this is not None else None
    else:
        cls = _ev(ctx, obj, sc).cls if obj[0] in ("var", "prop") else None
    return f"{cls}->{name}" if cls else name


def _key(v: V):
    s = v.s
    if isinstance(s, bool):
        return int(s)
    if isinstance(s, float):
        return int(s)
    if isinstance(s, str) and s.lstrip("-").isdigit() and (s == "0" or not s.startswith("0")) and len(s) < 18:
        return int(s)
    if isinstance(s, (int, str)):
        return s
    return None


def _elem(v: V, key) -> V:
    if isinstance(v.s, dict) and key is not None:
        e = v.s.get(key)
        if e is not None:
            e = e if isinstance(e, V) else V(e)
            if v.t:
                return V(e.s, e.t | v.t, e.d, e.cls, e.fn, e.h, e.chain)
            return e
    return V(None, v.t, v.d)


# -- expressions --------------------------------------------------------------------------------
def _ev(ctx: Ctx, node, sc: Scope) -> V:
    if node is None:
        return UNKNOWN
    k = node[0]
    if k == "str":
        return V(node[1])
    if k == "num":
        return V(node[1])
    if k == "var":
        return _lookup(ctx, node[1], sc)
    if k == "istr" or k == "shell":
        v = _concat(ctx, [_ev(ctx, p, sc) for p in node[1]])
        if k == "shell":
            _sink(ctx, "exec", "`backticks`", v, node, sc, [v])
            _feature_cmd(ctx, v)
            ctx.calls["shell_exec"] += 1
        return v
    if k == "call":
        return _call(ctx, node, sc)
    if k == "idx":
        return _index(ctx, node, sc)
    if k == "bin":
        return _binary(ctx, node, sc)
    if k == "assign":
        return _assignment(ctx, node, sc)
    if k == "const":
        name = node[1].lower()
        c = ctx.consts.get(name)
        if c is not None:
            return c
        if name == "__file__":
            # self-reading loaders open their own file; in eval'd code PHP appends "(n) : eval()'d code"
            # marked in its chain: a function name cut out of the file's own name (a shell saved as
            # "assert.php" calls substr(__FILE__, -10, 6)) is computed, even though we cannot know it
            return V(THIS_FILE + ("(1) : eval()'d code" if ctx.decode_depth else ""), chain=("__FILE__",))
        if name == "__line__":
            return V(1)
        if name in _CONSTS:
            return V(_CONSTS[name])
        # PHP < 8 read an undefined constant as its own name ("bareword" obfuscation: ~Y0dTO1Wt)
        return V(node[1].lstrip("\\"))
    if k == "name":
        return V(node[1])
    if k == "varvar":
        inner = _ev(ctx, node[1], sc)
        n = _sv(inner)
        sg = _superglobal_prefix(node[1])
        if sg is not None and (n is None or inner.t):
            # ${'_' . $x}[...]: a superglobal picked by a name the request or the code supplies
            return V(None, frozenset({f"${sg}… (variable superglobal)"}), True, fn="src:" + sg + "…")
        if n is not None and len(n) < 256:
            if n.startswith("_") and _computed(inner.chain) and n not in sc.vars and n not in SOURCES \
                    and n not in ("_SERVER", "_SESSION"):
                # a variable name computed by obfuscation that starts like a superglobal: one the
                # reader could not finish (XOR of mangled bytes) stands for the request
                return V(None, frozenset({f"${n[:12]}… (computed superglobal)"}), True, fn="src:" + n[:12] + "…")
            return _lookup(ctx, n, sc)
        return V(None, inner.t, inner.d)
    if k == "prop":
        n = _sv(_ev(ctx, node[2], sc))
        if n is not None:
            return ctx.props.get(_prop_key(ctx, node[1], n, sc), UNKNOWN)
        return UNKNOWN
    if k == "sprop":
        cls = node[1]
        n = _sv(_ev(ctx, node[2], sc)) or ""
        if n.startswith("const:"):
            cname = cls[1].lower() if cls[0] == "name" else ""
            c = ctx.consts.get(f"{cname}::{n[6:]}")
            if c is None:
                c = next((v for kk, v in ctx.consts.items() if kk.endswith("::" + n[6:])), UNKNOWN)
            return c
        return ctx.props.get("::" + n, UNKNOWN)
    if k == "mcall":
        return _method_call(ctx, node, sc)
    if k == "scall":
        return _static_call(ctx, node, sc)
    if k == "new":
        return _new(ctx, node, sc)
    if k == "un":
        return _unary(ctx, node, sc)
    if k == "cast":
        v = _ev(ctx, node[2], sc)
        if node[1] in ("int", "integer", "bool", "boolean", "float", "double", "real"):
            i = to_int(v.s) if v.s is not None else None
            return V(i)
        if node[1] in ("string", "binary"):
            return V(_sv(v), v.t, v.d, chain=v.chain)
        if node[1] == "array" and not isinstance(v.s, dict):
            return V({0: v} if v.s is not None or v.t else None, v.t, v.d)
        return v
    if k == "tern":
        c = _ev(ctx, node[1], sc)
        a = _ev(ctx, node[2], sc) if node[2] is not None else c
        b = _ev(ctx, node[3], sc)
        if c.s is not None and not c.t and not isinstance(c.s, dict) and not (a.t or b.t):
            return a if _truthy(c.s) else b  # a known condition picks (when neither side is request data)
        return _join([a, b])
    if k == "array":
        return _array(ctx, node, sc)
    if k == "closure":
        fd, uses = node[1], node[2]
        if uses == "*":
            cap = sc
        else:
            cap = {u: _lookup(ctx, u, sc) for u in uses}
        if len(ctx.closures) < 64:
            ctx.closures.append((fd, cap))  # read once at the end even if nothing calls it
        return V(None, _EMPTY, False, fn=(fd, cap))
    if k == "include":
        v = _ev(ctx, node[2], sc)
        _include(ctx, node, v, sc)
        return UNKNOWN
    if k == "match":
        _ev(ctx, node[1], sc)
        return _join([_ev(ctx, r, sc) for r in node[2][:64]])
    if k == "spread":
        return _ev(ctx, node[1], sc)
    return UNKNOWN


MAX_HEAD = 256 * 1024  # the known start kept of an unknown string (a dropper's payload)
_SUPERGLOBALS = ("_GET", "_POST", "_REQUEST", "_COOKIE", "_SERVER", "_FILES")


_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32}(?:[0-9a-fA-F]{8})?(?:[0-9a-fA-F]{24})?")
_PW_KEY = re.compile(r"pass|pwd|passwd|pw\b|^p$|^pw|^key$|auth", re.I)


def _password_gate(ctx: Ctx, items: list, vs: list[V], sc: Scope) -> None:
    """`$_POST['pass'] == 'x'` or `md5($_GET['k']) == '<hex>'`: a shell's own login gate."""
    for node, v, other in ((items[0], vs[0], vs[1]), (items[1], vs[1], vs[0])):
        const = other.s if isinstance(other.s, str) and not other.t else None
        if const is None or len(const) < 3:
            continue
        if node[0] == "call" and node[1][0] == "name" and node[1][1].lower() in ("md5", "sha1", "hash") \
                and node[2] and _HEX_DIGEST.fullmatch(const) and _strongish(_ev(ctx, node[2][-1], sc)):
            ctx.pw_gate = True
        elif _strongish(v) and node[0] == "idx" and node[2] is not None and node[2][0] == "str" \
                and _PW_KEY.search(node[2][1]):
            ctx.pw_gate = True


def _packed_text(ctx: Ctx, v: V) -> None:
    """Packed text a page prints: a web shell's source shipped inside another file is one."""
    code = v.s
    if "$" not in code or ";" not in code or ctx.decode_depth >= ctx.budget.limits.max_decode_depth:
        return
    inner = _subscan(ctx, code if code.lstrip().startswith("<?") else "<?php " + code)
    best = max(inner, key=lambda h: h["conf"], default=None)
    if best is not None and best["conf"] >= 0.5:
        _raw(ctx, "php.packed-shell", "high", min(0.8, best["conf"]), best["source"], "echo",
             best["snippet"], f"prints a packed web shell ({' > '.join(reversed(v.chain)) or 'decoded by a loop'}: "
             f"{best['rule']})",
             family=best["family"])


def _superglobal_prefix(node) -> str | None:
    """The constant start of `${'_' . $x}` when it can only begin a superglobal's name, else None."""
    if node[0] != "bin" or node[1] != "." or not node[2] or node[2][0][0] != "str":
        return None
    p = node[2][0][1]
    if p.startswith("_") and any(g.startswith(p) for g in _SUPERGLOBALS):
        return p
    return None


def _concat(ctx: Ctx, vs: list[V]) -> V:
    strs = []
    known = True
    t = _EMPTY
    direct = True
    chain: tuple = ()
    for v in vs:
        if v.t:
            t = t | v.t
            if not v.d:
                direct = False
        else:
            s0 = _sv(v)
            if s0 is None or s0 != "":
                direct = False
        s = _sv(v)
        if s is None or (isinstance(v.s, dict) and v.t):
            known = False
        elif known:
            strs.append(s)
        if v.chain and len(chain) < 16:  # bounded: a thousand XOR-built pieces joined keep 16 marks
            chain = chain + v.chain
    if known:
        total = sum(len(x) for x in strs)
        if total > MAX_CONST:
            return V(None, t, bool(t) and direct)
        if total >= 65536:
            # a large new string is charged as decoded bytes: thousands of copies of one big
            # constant joined to small pieces end at the budget, not in gigabytes of memory
            ctx.budget.spend(total)
        return V("".join(strs), t, bool(t) and direct, chain=chain)
    last = vs[-1] if vs else UNKNOWN
    tail = (_sv(last) or "")[-64:] if last.s is not None and not isinstance(last.s, dict) else last.tail
    first = vs[0] if vs else UNKNOWN
    head = (_sv(first) or "") if first.s is not None and not isinstance(first.s, dict) else first.head
    if len(head) > MAX_HEAD or first.t:
        head = ""  # kept by reference only, never copied: a large head is dropped, not cut
    return V(None, t, bool(t) and direct, chain=chain, tail=tail, head=head)


def _array(ctx: Ctx, node, sc: Scope) -> V:
    arr: dict = {}
    t = _EMPTY
    nxt = 0
    for key, item in node[1][:MAX_ARRAY]:
        if item[0] == "spread":
            sv = _ev(ctx, item[1], sc)
            t |= sv.t
            if isinstance(sv.s, dict):
                for x in sv.s.values():
                    arr[nxt] = x
                    nxt += 1
            continue
        v = _ev(ctx, item, sc)
        t |= v.t
        if key is None:
            arr[nxt] = v
            nxt += 1
        else:
            kev = _ev(ctx, key, sc)
            t |= kev.t  # a request-named key: callbacks over keys (uksort, array_*_ukey) see it
            kv = _key(kev)
            if kv is None:
                continue
            arr[kv] = v
            if isinstance(kv, int) and kv >= nxt:
                nxt = kv + 1
    return V(arr, t, False)


def _index(ctx: Ctx, node, sc: Scope) -> V:
    base = _ev(ctx, node[1], sc)
    key = _ev(ctx, node[2], sc) if node[2] is not None else UNKNOWN
    ks = _sv(key) if not isinstance(key.s, dict) else None
    fn = base.fn
    if isinstance(fn, str):
        if fn == "globals":
            if ks is None:
                return V(None, frozenset({"$GLOBALS[…]"}) if key.t else _EMPTY, bool(key.t))
            if ks in SOURCES or ks == "_SERVER":
                v = _lookup(ctx, ks, sc)
                return V(v.s, v.t, v.d, fn=v.fn) if ks != "_SERVER" else v
            return _lookup(ctx, ks, ctx.globals or sc)
        if fn.startswith("src:"):
            name = fn[4:]
            if name == "_SERVER":
                if ks is not None and (ks in _SERVER_SAFE or not (ks.startswith("HTTP_") or ks in (
                        "QUERY_STRING", "REQUEST_URI", "PHP_SELF", "PATH_INFO", "PATH_TRANSLATED",
                        "PHP_AUTH_PW", "ORIG_PATH_INFO", "REDIRECT_URL", "REDIRECT_QUERY_STRING"))):
                    return UNKNOWN
            label = f"${name}[{_q(ks, 40)}]" if ks is not None else f"${name}[{_render(node[2]) if node[2] else ''}]"
            return V(None, frozenset({label}), True, fn="req:" + label)
        if fn.startswith("req:"):  # $_FILES['f']['tmp_name'] keeps the first key's label
            return V(None, base.t, True, fn=fn)
        if fn == "session":
            return V(None, ctx.session.t, bool(ctx.session.t))
    if isinstance(base.s, dict):
        kv = _key(key)
        if kv is not None:
            return _elem(base, kv)
        vals = list(base.s.values())[:64]
        j = _join([x if isinstance(x, V) else V(x) for x in vals]) if vals else UNKNOWN
        return V(None, j.t | base.t, j.d)  # a request key picks an element; it is not the element
    if isinstance(base.s, str) and base.s and not base.t:
        i = to_int(key.s) if key.s is not None else None
        if i is not None:
            if -len(base.s) <= i < len(base.s):
                # one character picked out of a longer constant: names spelled this way
                # ($a{0}.$a{8}... = 'system') are obfuscation, marked so in the chain
                return V(base.s[i], chain=("pick",) if len(base.s) > 1 else ())
            return V("")
    return V(None, base.t, base.d)


def _binary(ctx: Ctx, node, sc: Scope) -> V:
    op, items = node[1], node[2]
    if op == ".":
        return _concat(ctx, [_ev(ctx, x, sc) for x in items])
    vs = [_ev(ctx, x, sc) for x in items]
    if op in ("==", "!=", "===", "!==", "<>") and len(vs) == 2 and not ctx.pw_gate:
        _password_gate(ctx, items, vs, sc)
    if op in ("==", "!=", "===", "!==", "<>") and len(vs) == 2 and not vs[0].t and not vs[1].t:
        x, y = vs[0].s, vs[1].s
        if x is None or y is None or isinstance(x, dict) or isinstance(y, dict):
            return UNKNOWN
        if op in ("===", "!=="):
            eq = type(x) is type(y) and x == y
        elif isinstance(x, str) and isinstance(y, str) and not (_isnum(x) and _isnum(y)):
            eq = x == y
        else:
            nx, ny = _num(x), _num(y)
            eq = nx == ny if nx is not None and ny is not None else to_str(x) == to_str(y)
        return V(eq if op in ("==", "===") else not eq)
    if op in ("<", "<=", ">", ">=") and len(vs) == 2 and not vs[0].t and not vs[1].t:
        x, y = vs[0].s, vs[1].s
        if isinstance(x, str) and isinstance(y, str) and not (_isnum(x) and _isnum(y)):
            a, b = x, y
        else:
            a, b = _num(x), _num(y)
        if a is None or b is None or isinstance(x, dict) or isinstance(y, dict):
            return UNKNOWN
        return V({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])
    if op in ("&&", "||", "and", "or", "xor", "==", "!=", "===", "!==", "<>", "<", "<=", ">", ">=", "<=>",
              "instanceof"):
        return UNKNOWN
    if op == "??":
        return vs[0] if vs[0].s is not None or vs[0].t else _join(vs)
    t = _EMPTY.union(*(v.t for v in vs))
    if t:
        if op == "^":
            ctx.xor_taint = True
        return V(None, t, False)
    acc = vs[0].s
    for v in vs[1:]:
        acc = _arith(op, acc, v.s)
        if acc is None:
            if op in ("^", "|", "&") and any(isinstance(x.s, str) for x in vs):
                return V(None, chain=("xor",))  # string arithmetic we could not finish: computed code
            return UNKNOWN
    if op in ("^", "|", "&") and isinstance(acc, str):
        # a name built by XOR of strings ('%01' ^ '`' ...): computed, whatever it came to
        chain = tuple(x for v in vs for x in v.chain)[:15]
        return V(acc, chain=chain + ("xor",))
    return V(acc)


def _arith(op: str, a, b):
    if a is None or b is None or isinstance(a, dict) or isinstance(b, dict):
        return None
    if op in ("^", "|", "&") and isinstance(a, str) and isinstance(b, str):
        # PHP's bitwise operators on two strings work byte by byte: a favourite obfuscation
        if op == "^":
            return "".join(chr(ord(x) ^ ord(y)) for x, y in zip(a, b, strict=False))
        if op == "&":
            return "".join(chr(ord(x) & ord(y)) for x, y in zip(a, b, strict=False))
        m = max(len(a), len(b))
        a2, b2 = a.ljust(m, "\0"), b.ljust(m, "\0")
        return "".join(chr(ord(x) | ord(y)) for x, y in zip(a2, b2, strict=False))
    x, y = _num(a), _num(b)
    if x is None or y is None:
        return None
    try:
        if op == "+":
            r = x + y
        elif op == "-":
            r = x - y
        elif op == "*":
            r = x * y
        elif op == "/":
            r = x / y if y else None
            if isinstance(r, float) and r == int(r):
                r = int(r)
        elif op == "%":
            r = int(x) % int(y) if int(y) else None
        elif op == "**":
            r = x ** y if abs(y) < 64 else None
        elif op == "^":
            r = int(x) ^ int(y)
        elif op == "|":
            r = int(x) | int(y)
        elif op == "&":
            r = int(x) & int(y)
        elif op == "<<":
            r = int(x) << int(y) if 0 <= y < 64 else None
        elif op == ">>":
            r = int(x) >> int(y) if 0 <= y < 64 else None
        else:
            r = None
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    if isinstance(r, int) and abs(r) > 1 << 63:
        return None
    return r


def _num(a):
    if isinstance(a, bool):
        return int(a)
    if isinstance(a, (int, float)):
        return a
    if isinstance(a, str):
        s = a.strip()
        try:
            return int(s)
        except ValueError:
            try:
                return float(s) if s else 0
            except ValueError:
                return to_int(s)
    return None


def _unary(ctx: Ctx, node, sc: Scope) -> V:
    op = node[1]
    v = _ev(ctx, node[2], sc)
    if op == "~":
        if isinstance(v.s, str) and not v.t:
            return V("".join(chr(~ord(c) & 0xFF) for c in v.s))
        if isinstance(v.s, int):
            return V(~v.s)
        return V(None, v.t)
    if op == "-":
        n = _num(v.s) if v.s is not None else None
        return V(-n) if n is not None and not v.t else V(None, v.t)
    if op == "!":
        return UNKNOWN
    if op in ("++", "--", "post++", "post--"):
        post, op = op.startswith("post"), op[-2:]
        if v.t or v.s is None:
            if op == "++" and v.s is None and not v.t and node[2][0] == "idx" and node[2][2] is not None:
                # null++ is 1: `$_ = ""; $_[0]++;` makes an array (and "$_" is "Array"), the start
                # of the letters-only obfuscation that counts its way up to "assert"
                base = _ev(ctx, node[2][1], sc)
                if not base.t and (base.s == "" or isinstance(base.s, dict)) and \
                        _key(_ev(ctx, node[2][2], sc)) is not None:
                    _assign(ctx, node[2], V(1), sc)
            return v
        if isinstance(v.s, str) and op == "++" and not _isnum(v.s):
            nv = V(_str_inc(v.s))  # PHP increments letters: "A"++ is "B", "Az"++ is "Ba"
        else:
            n = _num(v.s) if not isinstance(v.s, dict) else None
            nv = V(n + (1 if op == "++" else -1)) if n is not None else UNKNOWN
        if node[2][0] in ("var", "varvar", "idx"):
            _assign(ctx, node[2], nv, sc)
        return v if post else nv
    if op == "clone":
        return v
    return UNKNOWN


def _isnum(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _str_inc(s: str) -> str:
    if s == "":
        return "1"
    out = list(s)
    i = len(out) - 1
    while i >= 0:
        c = out[i]
        if c == "z":
            out[i] = "a"
        elif c == "Z":
            out[i] = "A"
        elif c == "9":
            out[i] = "0"
        elif c.isalnum() and c.isascii():
            out[i] = chr(ord(c) + 1)
            return "".join(out)
        else:
            return "".join(out)
        i -= 1
    first = s[0]
    return ("1" if first == "9" else "a" if first == "z" else "A") + "".join(out)


def _assignment(ctx: Ctx, node, sc: Scope) -> V:
    op, target, value = node[1], node[2], node[3]
    v = _ev(ctx, value, sc)
    if op == ".=":
        v = _concat(ctx, [_ev(ctx, target, sc), v])
    elif op == "??=":
        cur = _ev(ctx, target, sc)
        v = cur if cur.s is not None else _join([cur, v])
    elif op != "=":
        cur = _ev(ctx, target, sc)
        if cur.t or v.t:
            if op == "^=":
                ctx.xor_taint = True
            v = V(None, cur.t | v.t)
        else:
            r = _arith(op[:-1], cur.s, v.s)
            v = V(r) if r is not None else UNKNOWN
    _assign(ctx, target, v, sc)
    return v


# the call half of the interpreter: at the end, so that either module may be imported first
from agent.imagegate.webshell.php_calls import (  # noqa: E402
    _call,
    _call_user,
    _feature_cmd,
    _include,
    _method_call,
    _new,
    _sink,
    _static_call,
    _subscan,
)
