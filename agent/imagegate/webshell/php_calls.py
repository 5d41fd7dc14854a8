"""The PHP reader's calls: builtins, user functions (re-analysed per call site with the arguments'
values, bounded), methods, callbacks, the code and command sinks, file writes, uploads and includes,
and decoded code handed to eval & co., which is read again as PHP in the same scope."""

from __future__ import annotations

import re

from agent.imagegate.webshell.common import clip, entropy
from agent.imagegate.webshell.php_families import _finish
from agent.imagegate.webshell.php_fold import DECODERS, FOLDABLE, NOTHING, Capped, fold, preg_fold, to_str
from agent.imagegate.webshell.php_lex import tokenize
from agent.imagegate.webshell.php_parse import FuncDef, TooDeep, parse
from agent.imagegate.webshell.php_sinks import (
    _CLEAN,
    _DIR_LIST,
    _EMPTY,
    _FS_READ,
    _FS_WRITE,
    _HT_DIRECTIVES,
    _PHP_EXT,
    _READ_SOURCES,
    _SOCKETS,
    _WEAK,
    CALLBACKS,
    CODE_SINKS,
    EXEC_SINKS,
    MAX_ANALYSES,
    MAX_ARRAY,
    MAX_CALL_DEPTH,
    MAX_CONST,
    MAX_PER_FUNC,
    SINKS,
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
    _show,
    _strong,
    _strongish,
    _sv,
)


# -- calls --------------------------------------------------------------------------------------
def _call(ctx: Ctx, node, sc: Scope) -> V:
    callee, argn = node[1], node[2]
    if callee[0] == "name":
        return _named(ctx, callee[1].lower(), argn, None, node, sc)
    cv = _ev(ctx, callee, sc)
    return _dynamic(ctx, cv, argn, None, node, sc)


def _same_list_call(node, argn) -> bool:
    """`$x[0]($x[1])`: the callee and an argument are elements of the same variable (constant keys)."""
    callee = node[1] if isinstance(node, tuple) and len(node) > 1 else None
    if not (isinstance(callee, tuple) and callee[0] == "idx" and isinstance(callee[1], tuple)
            and callee[1][0] == "var" and callee[2] is not None):
        return False
    return any(isinstance(a, tuple) and a[0] == "idx" and a[1] == callee[1] and a[2] is not None
               and a[2] != callee[2] for a in argn)


def _fetch_url(v: V) -> bool:
    """A path that names a URL: built from request data, or with a known "http(s)://" start or "?" query part."""
    if v.s is not None:
        return False
    if any(not x.startswith(_WEAK) for x in v.t):
        return True
    return v.head.lower().startswith(("http://", "https://")) or "?" in v.head or "?" in v.tail


def _dynamic(ctx: Ctx, cv: V, argn: list, avs: list[V] | None, node, sc: Scope, via: str = "") -> V:
    """A call through a value: `$f(...)`, a callback, an invoked object."""
    fn = cv.fn
    if isinstance(fn, tuple):
        args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
        return _call_user(ctx, fn[0], args, None, fn[1])
    if isinstance(fn, str) and fn.startswith("name:"):
        return _named(ctx, fn[5:], argn, avs, node, sc, dynamic=True, via=via)
    name = _sv(cv) if not isinstance(cv.s, dict) else None
    if isinstance(cv.s, dict) and len(cv.s) == 2:  # [$obj, 'method'] / ['Class', 'method']
        obj, meth = _elem(cv, 0), _elem(cv, 1)
        m = _sv(meth)
        if m is not None:
            args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
            cname = obj.cls or (_sv(obj) or "").lower()
            return _invoke_method(ctx, cname, m.lower(), args, obj)
    if cv.t and (name is None or cv.d):
        args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
        data = _join(args) if args else UNKNOWN
        strong_args = any(a.d and any(not x.startswith(_WEAK) for x in a.t) for a in args)
        if cv.d and any(not x.startswith(_WEAK) for x in cv.t):
            conf = 0.95 if data.t else 0.85
        elif strong_args or (via and any(a.t for a in args)):
            conf = 0.7  # a computed or unknown function name called with request data as its argument
        elif _same_list_call(node, argn) and any(not x.startswith(_WEAK) for x in cv.t) or \
                any(a.t & cv.t for a in args) and any(not x.startswith(_WEAK) for x in cv.t):
            # `$x = explode('~', base64_decode($_POST['x'])); $x[0]($x[1])`: one decoded request list
            # names the function and gives its argument; no dispatcher calls an element of a list with another.
            # The same when the two were copied out of it first (`$f = $x[0]; $a = $x[1]; $f($a)`): one request
            # value (a header split in two) that is both the function and its argument
            conf = 0.7
        else:
            conf = 0.45
        _raw(ctx, "php.request-function", "critical", conf, _label(cv), via or "$function(…)",
             f"{via + '(' if via else ''}{_show(cv)}({', '.join(_show(a) for a in args[:3])}){')' if via else ''}",
             "the function called is named by the request")
        return V(None, cv.t | data.t, False)
    if name is not None:
        name = name.strip().lstrip("\\").lower()
        if "::" in name:
            cname, _, m = name.partition("::")
            args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
            return _invoke_method(ctx, cname, m, args, V(cls=cname))
        if name in SINKS and cv.t and any(not x.startswith(_WEAK) for x in cv.t) and name not in ctx.funcs:
            # a variable the request sets, then overwritten with a sink's name (`$fe = $_POST['fe'];
            # if ($fe == 1) $fe = 'exec'; ... $fe($cmd)`): the request picks which sink runs
            _raw(ctx, "php.request-function", "critical", 0.75, _label(cv), "$function(…)",
                 f"{_show(cv)} = {_q(name)} ({_label(cv)} picks it)",
                 "the request picks which code or command sink runs")
        if name in SINKS and _packed(cv.chain) and name not in ctx.funcs:
            # a code or command sink whose name is spelled by obfuscation (characters picked out of a
            # scrambled alphabet, strrev, a decoder, XOR): whatever it runs, hiding the name is the shell's
            args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
            chain = "(".join(reversed(list(dict.fromkeys(cv.chain))[-4:]))
            shown = ", ".join(_show(a) for a in args[:2])
            _raw(ctx, "php.hidden-sink", "critical", 0.6, _label(_join(args)) if args else "", name,
                 f"{chain}(…) = {_q(name, 30)}({shown})", "calls a code or command sink by a name built to hide it")
            return _named(ctx, name, [], args, node, sc, dynamic=True, via=via)
        if _computed(cv.chain) and name not in ctx.funcs and name not in SINKS and name not in CALLBACKS:
            # a name computed by obfuscation (XOR, decoders, cut from __FILE__) that is not a sink we
            # know, called with request data: what PHP calls depends on bytes we could not know
            # (the file's own name) or on a real function hidden this way; either is a shell's habit
            args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
            if any(_strongish(a) for a in args):
                d = _join(args)
                _raw(ctx, "php.computed-function", "critical", 0.65, _label(d), via or "$function(…)",
                     f"{'('.join(reversed(list(dict.fromkeys(cv.chain))))}(…) = {_q(name, 30)}({_show(d)})",
                     "request data is passed to a function whose name is computed by obfuscation")
            return _named(ctx, name, [], args, node, sc, dynamic=True, via=via)
        return _named(ctx, name, argn, avs, node, sc, dynamic=True, via=via)
    if cv.cls:
        args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
        return _invoke_method(ctx, cv.cls, "__invoke", args, cv)
    args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
    for a in args[:2]:
        if isinstance(a.s, str) and len(a.s) >= 24 and len(ctx.opaque_args) < 16:
            ctx.opaque_args.append(a.s)  # what an unknown callee is handed: read as a dormant payload later
    if "getDocComment" in cv.chain:
        d = _join(args) if args else UNKNOWN
        _raw(ctx, "php.obfuscated-eval", "high", 0.65, _label(d), via or "$function(…)",
             f"(function named in a doc comment)({_show(d)})", "calls a function whose name is hidden in a comment")
    if _computed(cv.chain) and any(_strongish(a) for a in args):
        d = _join(args)
        chain = "(".join(reversed(list(dict.fromkeys(cv.chain))))
        _raw(ctx, "php.computed-function", "critical", 0.6, _label(d), via or "$function(…)",
             f"{via + '(' if via else ''}{chain}(…)({_show(d)}){')' if via else ''}",
             "request data is passed to a function whose name is computed by obfuscation")
    return V(None, _EMPTY.union(*(a.t for a in args)) if args else _EMPTY)


# methods that register a callable PHP later calls (SQLite user functions, Memcache failure callbacks ...)
_CALLBACK_METHODS = frozenset({"createfunction", "sqlitecreatefunction", "createaggregate", "sqlitecreateaggregate",
                               "addserver", "setsaslauthdata", "registerphpfunctions", "setcallback"})
_CALLABLE_SINKS = frozenset({"assert", "passthru", "shell_exec", "proc_open", "pcntl_exec", "popen", "system", "exec"})


def _callable_args(ctx: Ctx, where: str, args: list[V], node, sc: Scope) -> None:
    """An API we do not model that is handed a callable and request data (CallbackFilterIterator,
    Memcache::addServer, PDO FETCH_FUNC, yaml_parse callbacks ...) may call one with the other."""
    data = [a for a in args if a.t]
    if not data:
        return
    for a in args:
        if isinstance(a.fn, tuple):
            _call_user(ctx, a.fn[0], data[:4], None, a.fn[1])
        elif isinstance(a.s, str) and a.chain and a.s.strip().lower() in _CALLABLE_SINKS:
            d = _join(data)
            _raw(ctx, "php.callback-sink", "critical", 0.75, _label(d), f"{where}({a.s})",
                 f"{where}(…{_q(a.s)}…, {_show(d)})", "a code or command sink is handed over as a callback")
        elif isinstance(a.s, str) and a.s.strip().lower() in ("assert", "passthru", "shell_exec", "proc_open"):
            d = _join(data)
            _raw(ctx, "php.callback-sink", "critical", 0.7, _label(d), f"{where}({a.s})",
                 f"{where}(…{_q(a.s)}…, {_show(d)})", "a code or command sink is handed over as a callback")


def _invoke_method(ctx: Ctx, cname: str, m: str, args: list[V], obj: V) -> V:
    fd = _find_method(ctx, cname, m)
    if fd is not None:
        return _call_user(ctx, fd, args, obj if obj.cls else V(cls=cname))
    return V(None, _EMPTY.union(*(a.t for a in args)) if args else _EMPTY)


def _find_method(ctx: Ctx, cname: str, m: str) -> FuncDef | None:
    seen = 0
    c = ctx.classes.get(cname or "")
    while c is not None and seen < 16:
        fd = c.methods.get(m)
        if fd is not None:
            return fd
        for tname in c.traits:  # a trait's method overrides the one inherited
            t = ctx.classes.get(tname)
            if t is not None and m in t.methods:
                return t.methods[m]
        c = ctx.classes.get(c.parent)
        seen += 1
    cands = ctx.methods.get(m)  # an unknown class, or a method a trait brings in
    if cands:
        return cands[0]
    return None


def _method_call(ctx: Ctx, node, sc: Scope) -> V:
    obj = _ev(ctx, node[1], sc)
    nv = _ev(ctx, node[2], sc)
    args = [_ev(ctx, a, sc) for a in node[3]]
    m = (_sv(nv) or "").lower()
    if nv.t:
        _raw(ctx, "php.request-method", "critical" if any(a.t for a in args) else "high",
             0.85 if _strong(nv) else 0.4, _label(nv), "$obj->$method()", f"{_render(node[1])}->{_show(nv)}(…)",
             "the method called is named by the request")
    if isinstance(obj.fn, str) and obj.fn.startswith("name:") and m in ("invoke", "invokeargs", "__invoke", "call"):
        if m == "invokeargs" and args:
            arr = args[0]
            args = [_elem(arr, i) for i in range(len(arr.s))] if isinstance(arr.s, dict) else [arr]
        return _named(ctx, obj.fn[5:], [], args, node, sc, dynamic=True, via="ReflectionFunction->" + m)
    if m == "eval" and (obj.cls or "").lstrip("\\").lower() == "perl" and args:
        # the Perl extension (`new Perl()`) runs Perl code in the PHP process: Perl's system() and
        # backticks are a command sink that disable_functions does not cover
        _sink(ctx, "exec", "Perl->eval", args[0], node, sc, args)
        _feature_cmd(ctx, args[0])
        return V(None, args[0].t, False)
    if m == "getdoccomment":
        # code hidden in a doc comment, cut out and run: comments are what a reviewer skips
        return V(None, chain=("getDocComment",))
    if isinstance(obj.fn, str) and obj.fn.startswith("rclass:") and m in ("newinstance", "newinstanceargs"):
        if m == "newinstanceargs" and args:
            arr = args[0]
            args = [_elem(arr, i) for i in range(min(len(arr.s), 8))] if isinstance(arr.s, dict) else [arr]
        return _construct(ctx, obj.fn[7:], args)
    if isinstance(obj.fn, tuple) and m in ("call", "__invoke", "bindto", "bind"):
        if m in ("bindto", "bind"):
            return obj
        return _call_user(ctx, obj.fn[0], args[1:] if m == "call" else args, None, obj.fn[1])
    if obj.t and m in ("invoke", "invokeargs"):
        _raw(ctx, "php.request-function", "critical", 0.9, _label(obj), "ReflectionFunction->" + m,
             f"(new ReflectionFunction({_show(obj)}))->{m}(…)", "the function invoked is named by the request")
    if m:
        fd = _find_method(ctx, obj.cls or "", m)
        if fd is not None:
            return _call_user(ctx, fd, args, obj if obj.cls else V(cls=fd.cls))
    if m in _CALLBACK_METHODS:
        cb = next((a for a in args if _strong(a)), None)
        if cb is not None:
            _raw(ctx, "php.request-function", "critical", 0.8, _label(cb), "->" + m,
                 f"{_render(node[1])}->{m}(…{_show(cb)}…)", "a callback named by the request is registered")
    # an unknown method's result carries what it was given, not what its object came from
    t = _EMPTY.union(*(a.t for a in args)) if args else _EMPTY
    ctx.calls["->" + m] += 1
    _callable_args(ctx, "->" + m, args + [obj], node, sc)
    return V(None, t, False)


def _static_call(ctx: Ctx, node, sc: Scope) -> V:
    cls = node[1]
    cname = cls[1].lower() if cls[0] == "name" else (_ev(ctx, cls, sc).cls or "")
    mv = _ev(ctx, node[2], sc)
    m = (_sv(mv) or "").lower()
    args = [_ev(ctx, a, sc) for a in node[3]]
    if cname == "closure" and m == "fromcallable" and args:
        n = _sv(args[0])
        return V(None, args[0].t, False, fn="name:" + n.lower()) if n else args[0]
    if cname in ("self", "static", "parent") and sc.func is not None:
        owner = ctx.classes.get(sc.func.cls)
        cname = (owner.parent if cname == "parent" and owner else sc.func.cls) or ""
    if mv.t:
        _raw(ctx, "php.request-method", "high", 0.8 if _strong(mv) else 0.4, _label(mv), "Class::$method()",
             f"{cname}::{_show(mv)}(…)", "the method called is named by the request")
    fd = _find_method(ctx, cname, m)
    if fd is not None:
        return _call_user(ctx, fd, args, V(cls=cname))
    ctx.calls[f"{cname}::{m}"] += 1
    return V(None, _EMPTY.union(*(a.t for a in args)) if args else _EMPTY)


def _new(ctx: Ctx, node, sc: Scope) -> V:
    cls = node[1]
    cv = _ev(ctx, cls, sc) if cls[0] != "name" else V(cls[1])
    args = [_ev(ctx, a, sc) for a in node[2]]
    if cv.t:
        _raw(ctx, "php.request-class", "high", 0.8 if _strong(cv) else 0.4, _label(cv), "new $class",
             f"new {_show(cv)}(…)",
             "the class instantiated is named by the request")
        return V(None, cv.t)
    cname = (_sv(cv) or "").lstrip("\\").lower().rsplit("\\", 1)[-1]
    if cname in ("reflectionfunction", "reflectionmethod") and args:
        n = _sv(args[0])
        if n is not None:
            return V(None, _EMPTY, False, fn="name:" + n.strip().lower())
        return V(None, args[0].t, args[0].d)
    if cname == "reflectionclass" and args:
        n = _sv(args[0])
        if n is not None:  # ->newInstance(...) runs the class's constructor
            return V(None, _EMPTY, False, cls="reflectionclass", fn="rclass:" + n.strip().lstrip("\\").lower())
    if cname == "com" and args:
        prog = (_sv(args[0]) or "").strip().lower()
        if prog in _COM_SHELLS or prog.startswith("iis://"):
            _raw(ctx, "php.com-shell", "high", 0.6, "", "new COM", f"new COM({_q(prog)})",
                 "drives a Windows shell or server object from a web page")
    if cname not in ctx.classes:
        _callable_args(ctx, "new " + cname, args, node, sc)
    if cname in ctx.classes:
        return _construct(ctx, cname, args)
    return V(None, _EMPTY.union(*(a.t for a in args)) if args else _EMPTY, cls=cname or None)


_SHELL_PROG = re.compile(r"\s*(?:(?:/usr)?/bin/)?(?:sh|bash|dash|zsh|ksh|csh|tcsh)(?:\s+-i)?\s*$|"
                         r"\s*(?:[a-z]:\\[\w\\ .()-]*\\)?(?:cmd|powershell)(?:\.exe)?(?:\s+/[qk])?\s*$", re.I)
_PIPE0 = re.compile(r"f(?:write|puts)\(\s*(\$\w+)\s*\[\s*0\s*\]")


def _is_shell(v: V, arg) -> bool:
    """proc_open's command is a shell interpreter itself (not a command line for one)."""
    s = _sv(v) if not isinstance(v.s, dict) else None
    if s is not None:
        return bool(_SHELL_PROG.match(s))
    return "'COMSPEC'" in _render(arg) or '"COMSPEC"' in _render(arg)


# COM objects that run commands, manage accounts or the web server (PHP on Windows)
_COM_SHELLS = frozenset({"wscript.shell", "shell.application", "shell.users", "wscript.network"})


def _construct(ctx: Ctx, cname: str, args: list[V]) -> V:
    obj = V(cls=cname)
    fd = _find_method(ctx, cname, "__construct") if cname in ctx.classes else None
    if fd is not None:
        _call_user(ctx, fd, args, obj)
    return obj


def _call_user(ctx: Ctx, fd: FuncDef, args: list[V], this: V | None, captured=None) -> V:
    ctx.analysed.add(id(fd))
    shape = tuple((a.s if isinstance(a.s, (str, int)) and (not isinstance(a.s, str) or len(a.s) < 512) else None,
                   a.t, a.d) for a in args[:8])
    key = (id(fd), shape, this.cls if this else None)
    if key in ctx.memo:
        ctx.last_call = key
        return ctx.memo[key]
    if ctx.call_depth >= MAX_CALL_DEPTH or ctx.analyses >= MAX_ANALYSES or ctx.per_func[id(fd)] >= MAX_PER_FUNC:
        t = _EMPTY.union(*(a.t for a in args)) if args else _EMPTY
        return V(None, t, bool(t))  # conservative: what goes in comes out
    ctx.per_func[id(fd)] += 1
    ctx.analyses += 1
    ctx.memo[key] = V(None, _EMPTY.union(*(a.t for a in args)) if args else _EMPTY)  # recursion guard
    sc = Scope(fd)
    if isinstance(captured, Scope):
        sc.vars.update(captured.vars)
        sc.sticky.update(captured.sticky)
    elif captured:
        for name, v in captured.items():
            _set(ctx, name, v, sc)
    if this is not None:
        sc.vars["this"] = this
    for i, (pname, default, _byref, variadic) in enumerate(fd.params):
        if variadic:
            rest = args[i:]
            _set(ctx, pname, V(dict(enumerate(rest)), _EMPTY.union(*(a.t for a in rest)) if rest else _EMPTY), sc)
        elif i < len(args):
            _set(ctx, pname, args[i], sc)
        elif default is not None:
            _set(ctx, pname, _ev(ctx, default, sc), sc)
        else:
            # a required parameter the call leaves out (`run();`, call_user_func('run')): a kit's
            # fragment that gets its command elsewhere; read as a parameter nobody passes (php_sinks)
            sc.vars[pname] = V(None, chain=(f"param:${pname}",))
    sc.vars["__args"] = V(dict(enumerate(args)), _EMPTY.union(*(a.t for a in args)) if args else _EMPTY)
    ctx.call_depth += 1
    try:
        _stmts(ctx, fd.body, sc)
    finally:
        ctx.call_depth -= 1
    ret = _join(sc.returns)
    ctx.memo[key] = ret
    refs = {i: sc.vars[p[0]] for i, p in enumerate(fd.params) if p[2] and p[0] in sc.vars}
    if refs:
        ctx.byref[key] = refs  # what by-reference parameters hold at the end (the caller's variables get it)
    ctx.last_call = key
    return ret


def _named(ctx: Ctx, name: str, argn: list, avs: list[V] | None, node, sc: Scope,
           dynamic: bool = False, via: str = "") -> V:
    name = name.rsplit("\\", 1)[-1]
    if name in ("extract", "parse_str", "mb_parse_str", "import_request_variables") and avs is None:
        args = [_ev(ctx, a, sc) for a in argn]
        if args and args[0].t:
            if name in ("parse_str", "mb_parse_str") and len(argn) > 1:
                _assign(ctx, argn[1], V(None, args[0].t, True), sc)
            else:
                sc.extracted = sc.extracted or f"{_label(args[0])} ({name})"
        return UNKNOWN
    if name in ("preg_match", "preg_match_all") and avs is None and len(argn) >= 3:
        args = [_ev(ctx, a, sc) for a in argn]
        if args[1].t:
            _assign(ctx, argn[2], V(None, args[1].t, True), sc)
        return UNKNOWN
    if name == "func_get_args" and avs is None:
        return sc.vars.get("__args", UNKNOWN)
    if name == "func_get_arg" and avs is None:
        a = _ev(ctx, argn[0], sc) if argn else UNKNOWN
        return _elem(sc.vars.get("__args", UNKNOWN), _key(a))
    args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
    ctx.budget.spend(0)
    fd = ctx.funcs.get(name)
    if fd is not None and name in ("getallheaders", "apache_request_headers"):
        # the polyfill a page defines where the builtin is missing (`if (!function_exists(...))`):
        # it returns the request's headers all the same
        _call_user(ctx, fd, args, None)
        return V(None, frozenset({name + "()"}), True, fn="src:" + name + "()")
    if fd is not None:
        ctx.last_call = None
        r = _call_user(ctx, fd, args, None)
        refs = ctx.byref.get(ctx.last_call) if ctx.last_call is not None and avs is None else None
        if refs:
            # function f(&$v) { $v .= 't'; } f($a): the caller's $a is what the function left in $v
            for i, v in refs.items():
                if i < len(argn) and argn[i][0] in ("var", "idx", "prop"):
                    _assign(ctx, argn[i], v, sc)
        return r
    ctx.calls[name] += 1
    a0 = args[0] if args else UNKNOWN
    if name in _HOME_WALK and isinstance(a0.s, str) and a0.s.strip().startswith("/etc/passwd"):
        ctx.passwd_read = True
    elif name in _HOME_WALK and a0.s is None and a0.head.startswith("/home/") and len(a0.head) <= 16:
        ctx.home_walk = True  # `/home/$user/...`: every account's files, one by one
    wi = 2 if name == "curl_setopt" else 0  # curl_setopt($ch, CURLOPT_URL, 'file://' . $path)
    if (name in _WRAPPER_READS or name == "curl_setopt") and len(argn) > wi and avs is None and \
            _strongish(args[wi]):
        a0w, arg = args[wi], argn[wi]
        pre = arg[2][0] if arg[0] == "bin" and arg[1] == "." and arg[2] else None
        if pre is not None and pre[0] == "str" and pre[1].lower().startswith(_BYPASS_WRAPPERS):
            # a stream wrapper in front of a request path: the safe_mode / open_basedir bypasses
            _raw(ctx, "php.wrapper-bypass", "high", 0.6, _label(a0w), name, f"{name}({_q(pre[1])} . {_show(a0w)})",
                 "reads a file the request names through a stream wrapper that skips PHP's path checks")
    if name in ("putenv", "proc_open", "pcntl_exec") and _preloads(name, args):
        # a library preloaded into the next program PHP starts (mail()'s sendmail, error_log ...):
        # the disable_functions bypass (Chankro, bypass_disablefunc): native code runs, no sink needed
        source = _label(_join(args)) if any(_strongish(a) for a in args) else ""
        _raw(ctx, "php.ld-preload", "critical", 0.75, source, name,
             f"{name}({', '.join(_show(a) for a in args[:2])}{', …env LD_PRELOAD' if name != 'putenv' else ''})",
             "preloads a library into the programs PHP starts (a disable_functions bypass)")
    if name in ("yaml_parse", "yaml_parse_file", "yaml_parse_url") and len(args) > 3:
        # tag => callable: the document's tagged values are handed to each (the YAML callback shells);
        # a tag the request names leaves the key unknown, so the array literal is read as written too
        cbs = list(args[3].s.items())[:16] if isinstance(args[3].s, dict) else []
        if avs is None and argn[3][0] == "array":
            cbs += [(_render(k) if k is not None else i, _ev(ctx, item, sc)) for i, (k, item) in
                    enumerate(argn[3][1][:16]) if item[0] != "spread"]
        for k, cb in cbs:
            cbn = _sv(cb) if isinstance(cb, V) and not isinstance(cb.s, dict) else (cb if isinstance(cb, str) else None)
            if cbn and cbn.strip().lower() in SINKS | {"preg_replace", "call_user_func", "call_user_func_array"}:
                _raw(ctx, "php.callback-sink", "critical", 0.75, _label(_join(args)) if any(_strongish(a) for a in args)
                     else "", f"{name}({cbn})", f"{name}(…, array({_q(str(k), 30)} => {_q(cbn)}))",
                     "YAML tags are mapped to a code or command sink")
                break
    if name == "proc_open" and len(argn) > 2 and avs is None and _is_shell(a0, argn[0]):
        # an interactive shell (cmd.exe, /bin/sh) with pipes: what the page writes to its stdin runs
        pipes = _render(argn[2]).strip()
        if pipes.startswith("$") and len(ctx.shell_pipes) < 8:
            ctx.shell_pipes.add(pipes)
    if name in EXEC_SINKS:
        data = _join(args[:2]) if name in ("proc_open", "pcntl_exec") else a0
        _sink(ctx, "exec", name, data, node, sc, args, via)
        _feature_cmd(ctx, a0)
        return V(None, data.t, data.d)
    if name in CODE_SINKS:
        code = args[1] if name == "create_function" and len(args) > 1 else a0
        if name == "create_function" and args and args[0].t:
            code = _join([args[0], code])
        if name != "create_function" and not code.t and code.s is None and avs is None and argn:
            _own_decoder(ctx, name, argn[0], sc)
        _sink(ctx, "code", name, code, node, sc, args, via)
        if name == "create_function":
            return _lambda(ctx, args)
        return UNKNOWN
    if name in ("preg_replace", "preg_filter", "mb_ereg_replace", "mb_eregi_replace"):
        return _preg(ctx, name, args, node, sc)
    if name in CALLBACKS:
        return _callback(ctx, name, args, node, sc)
    if name in ("file_put_contents", "fwrite", "fputs", "fopen", "move_uploaded_file", "copy", "rename"):
        r = _file_op(ctx, name, args, node, sc)
        if r is not None:
            return r
    if name in _FS_WRITE and a0.t and a0.d:
        ctx.req_fs.add(name)
    if name in ("chmod", "chown", "chgrp") and len(args) >= 2 and _strongish(a0) and args[1].s in (0o777, 0o666, 0o757):
        # any file the request names made world-writable: the permission tool of a defacer's kit
        # (php_families weighs it: alone in a small flat page, not an installer's fixed directories)
        _raw(ctx, "php.request-chmod", "high", 0.55, _label(a0), name, f"{name}({_show(a0)}, 0{args[1].s:o})",
             "makes a file the request names writable by anyone")
    if name in ("symlink", "link") and len(args) >= 2 and _strongish(a0):
        # any path the request names linked into the site: the symlink bypass of shared hosting (the web
        # server then serves another account's files, open_basedir never asked); php_families weighs it as chmod
        _raw(ctx, "php.request-symlink", "high", 0.55, _label(a0), name, f"{name}({_show(a0)}, {_show(args[1])})",
             "links a path the request names into the site (a symlink bypass to read any file)")
    if name in _FS_READ and isinstance(a0.s, str) and a0.s.strip().startswith(("/etc/passwd", "/etc/shadow")):
        ctx.strings.append(a0.s)  # reads the account list: recon, as `cat /etc/passwd` is
    if name in _FS_READ and a0.t:
        ctx.req_read.add(name)
    if name in _DIR_LIST and a0.t and any(not x.startswith(_WEAK) for x in a0.t):
        ctx.req_dir.add(name)
    if name in ("include", "require"):
        _include(ctx, node, a0, sc)
        return UNKNOWN
    # sources
    if name in _READ_SOURCES and a0.s is not None and isinstance(a0.s, str) and a0.s.lower().startswith("php://input"):
        return V(None, frozenset({"php://input"}), True)
    if name in ("getallheaders", "apache_request_headers", "http_get_request_body", "http_get_request_headers"):
        return V(None, frozenset({name + "()"}), True, fn="src:" + name + "()")
    if name in ("filter_input", "filter_input_array"):
        return V(None, frozenset({f"{name}(…)"}), True)
    if name == "getenv" and isinstance(a0.s, str) and a0.s.startswith("HTTP_"):
        return V(None, frozenset({f"getenv({_q(a0.s, 30)})"}), True)
    addr = args[1:3] if name == "socket_bind" else args[:1]  # not the socket itself (a "socket" source)
    if name in ("socket_bind", "stream_socket_server") and any(_strong(a) and not a.t <= {"socket"} for a in addr):
        _raw(ctx, "php.socket-listener", "high", 0.6, _label(_join([a for a in addr if a.t])), name,
             f"{name}({', '.join(_show(a) for a in args[:3])})",
             "opens a network listener on an address the request names (a tunnel or bind shell)",
             family="reverse-shell")
    host = args[1] if name == "socket_connect" and len(args) > 1 else a0 if name in (
        "fsockopen", "pfsockopen", "stream_socket_client") else None
    if host is not None and _strongish(host) and not host.t <= {"socket"}:
        # a connection to a host the request names: the tunnels (reGeorg), port scanners and
        # back-connect shells; weighed against framework and access checks in php_families
        _raw(ctx, "php.request-connect", "high", 0.55, _label(host), name,
             f"{name}({', '.join(_show(a) for a in args[:3])})",
             "opens a network connection to a host the request names (a tunnel, scanner or back-connect)",
             family="tunnel")
    if name in _SOCKETS:
        return V(None, frozenset({"socket"}), True)
    if name in ("file_get_contents", "file") and a0.s == THIS_FILE and ctx.root_src is not None:
        src = ctx.root_src
        if name == "file_get_contents":
            return V(src)
        return V({i: V(x) for i, x in enumerate(src.splitlines(True)[:MAX_ARRAY])})
    if name in ("file_get_contents", "file", "fopen", "readfile", "get_headers", "simplexml_load_file") and \
            isinstance(a0.s, str) and a0.s.lower().startswith(("http://", "https://", "ftp://")):
        return V(None, frozenset({f"remote {_q(a0.s, 60)}"}), True)
    if name == "curl_exec":
        return V(None, frozenset({"remote (curl_exec)"}), True)
    if name == "exif_read_data":
        return V(None, frozenset({"exif_read_data()"}), True)
    if name in ("unlink", "@unlink") and a0.s is not None and "__FILE__" in a0.chain and a0.s == THIS_FILE:
        ctx.self_delete = True
    if name in _DB_QUERY and any(isinstance(a.s, str) and _DUMP.search(a.s) for a in args[:2]):
        ctx.db_dump = True
    if name in _DB_QUERY and any(_DUMP_EACH.fullmatch(a.head) for a in args[:2] if a.s is None and a.head):
        ctx.db_all = True  # `SELECT * FROM $table` / `SHOW CREATE TABLE $table`: every row of a table it was handed
    if name in _DB_QUERY and any(_strong(a) for a in args[:2]):
        ctx.db_query = ctx.db_query or _label(next(a for a in args[:2] if _strong(a)))
    if name in _DB_CONNECT and any(_strong(a) for a in args[:4]):
        ctx.db_connect = ctx.db_connect or _label(next(a for a in args[:4] if _strong(a)))
    if name in _DB_QUERY and ctx.db_connect and any(_strongish(a) for a in args[:2]):
        # on a server the request named, a statement built with request data is the request's too
        ctx.db_query = ctx.db_query or _label(next(a for a in args[:2] if _strongish(a)))
    if name == "mail" and len(args) >= 3 and _strongish(a0) and (_strongish(args[2]) or (
            len(args) >= 4 and _strongish(args[3]) and _sv(args[2]) == "")):
        # (a message carried in the headers, MIME parts and all, with an empty body is the same)
        # recipients and message both from the request: a spam mailer, not a contact form
        _raw(ctx, "php.mailer", "medium", 0.55, _label(args[2]), "mail",
             f"mail({_show(a0)}, {_show(args[1])}, {_show(args[2])})", "mails request text to request recipients",
             family="mailer")
    if name == "unserialize" and a0.t and _strong(a0):
        _object_injection(ctx, a0)
    if name in ("filter_var", "filter_var_array") and len(args) >= 3 and isinstance(args[2].s, dict) and a0.t:
        cb = _elem(args[2], "options")  # FILTER_CALLBACK: the options callback gets the value
        if cb.s is not None or cb.fn is not None:
            return _dynamic(ctx, cb, [], [a0], node, sc, via=name)
    if name in ("openssl_decrypt", "mcrypt_decrypt", "mcrypt_generic", "mdecrypt_generic") and any(a.t for a in args):
        ctx.decrypt_taint = True
    if name in ("function_exists", "is_callable") and isinstance(a0.s, str) and a0.s.lower() in EXEC_SINKS:
        ctx.probes.add(a0.s.lower())  # probing which exec function survives disable_functions
    if name == "empty" and avs is None and args and a0.s is not None and not a0.t and not isinstance(a0.s, dict):
        return V(not (a0.s not in (None, False, 0, 0.0, "", "0")))
    if name in ("count", "sizeof") and len(args) == 1 and isinstance(a0.s, dict) and not a0.t:
        # a known array's length (no copy made): loops over it (letter tables, encoded names, the
        # index arrays of the '%x5c%x7824' obfuscator) run as PHP runs them, MAX_UNROLL bounding the work
        return V(len(a0.s))
    if name in _CLEAN:
        if name in FOLDABLE and all(a.s is not None and not a.t for a in args) and args:
            r = fold(name, [a.s if not isinstance(a.s, dict) else _plain(a.s) for a in args], 0)
            return V(r) if r is not NOTHING else UNKNOWN
        if name == "escapeshellarg" and _strong(a0):
            # quoted, the request's value is still a whole word: run as the entire command it names the
            # program. Marked on `fn`, which a concatenation drops: `'convert ' . escapeshellarg($f)` is clean
            return V(None, fn="escaped:" + _label(a0))
        if name == "ord" and a0.t:
            # a byte's code still carries the request: `'%' . dechex(ord($c[$i]))` or `chr(ord($c[$i]) ^ $k)` in a
            # loop re-spells request bytes (URL escapes, XOR, shifted letters) that are then decoded and run
            return V(None, a0.t, False)
        return UNKNOWN
    if name == "array_map" and False:
        return UNKNOWN
    t = _EMPTY.union(*(a.t for a in args)) if args else _EMPTY
    if name in FOLDABLE and args:
        if not t and all(a.s is not None for a in args):
            return _fold(ctx, name, args)
        if not t and name in ("str_replace", "str_ireplace") and len(args) >= 3 and isinstance(args[2].s, str) \
                and len(args[2].s) > 64:
            # a template filled with values we do not know ('{$PASSWORD}' -> a hash): read it with
            # the placeholders emptied, so the code it carries is still seen
            filled = [a if a.s is not None else V("") for a in args[:3]]
            return _fold(ctx, name, filled)
        d = a0.d if name in DECODERS or name in ("gzinflate", "gzuncompress", "gzdecode") else False
        chain = a0.chain + (name,) if name in _PACKERS else a0.chain
        return V(None, t, d, chain=chain)
    if name in ("array_values", "array_merge", "array_slice", "array_diff", "array_pop", "array_shift", "end", "reset",
                "current", "next", "array_rand", "array_keys", "array_unique", "array_flip", "array_combine",
                "compact", "array_change_key_case"):
        return _array_fn(name, args, t)
    if name in ("file_get_contents", "file") and not a0.d and _fetch_url(a0):
        # a page fetched from a URL built from the request or from a "?query": not request data, but code
        # read from it is code from the network (a shell's updater or stager); only the code sinks look at it
        return V(None, chain=("fetched",))
    if name in ("file_get_contents", "file", "fread", "fgets", "fgetc", "stream_get_contents", "readfile", "gzfile",
                "parse_ini_file", "simplexml_load_file", "file_exists") and not a0.d:
        return UNKNOWN  # a file picked with some request data in its path is not request data itself
    if name in ("session_start", "error_reporting", "set_time_limit", "ini_set", "ignore_user_abort", "header",
                "ob_end_clean", "ob_get_clean", "ob_get_contents", "flush", "define"):
        if name == "define" and len(args) >= 2:
            n = _sv(args[0])
            if n is not None:
                ctx.consts[n.lower()] = args[1]
        return UNKNOWN
    if t:
        _callable_args(ctx, name, args, node, sc)
    return V(None, t, bool(t) and all(a.d or not a.t for a in args) and len(args) <= 2)


# a Perl/Python/C back-connect script: a socket, then the shell's standard streams tied to it
_BACKCONNECT = re.compile(
    r"open\s*\(?\s*STD(?:IN|OUT|ERR)\s*,\s*[\"'][<>]&\s*\w+"  # Perl's open takes no parentheses too
    r"|dup2\s*\(\s*\w+(?:\.fileno\(\))?\s*,\s*[012]\s*\).*?(?:/bin/sh|/bin/bash|subprocess|pty\.spawn|execl)"
    r"|/bin/(?:ba)?sh\s+-i\s*[<>]&\s*/dev/tcp/", re.S)
_WRAPPER_READS = frozenset({"copy", "fopen", "file_get_contents", "readfile", "file", "highlight_file", "show_source",
                            "gzopen", "gzfile", "readgzfile", "simplexml_load_file", "parse_ini_file", "curl_init"})
_BYPASS_WRAPPERS = ("compress.zlib://", "compress.bzip2://", "glob://", "zip://", "phar://", "file:")

# a database client page: the request names the server and credentials and sends the statement
_DB_QUERY = frozenset({"mysql_query", "mysql_unbuffered_query", "mysql_db_query", "mysqli_query", "mysqli_multi_query",
                       "mysqli_real_query", "pg_query", "pg_send_query", "mssql_query", "sqlsrv_query", "oci_parse",
                       "odbc_exec", "sqlite_query", "ibase_query"})
_DUMP = re.compile(r"^\s*show\s+(?:full\s+)?(?:tables|databases)\b", re.I)
_DUMP_EACH = re.compile(r"\s*(?:select\s+\*\s+from|show\s+create\s+table)\s*[`\"]?", re.I)
_DB_CONNECT = frozenset({"mysql_connect", "mysql_pconnect", "mysqli_connect", "mysqli_real_connect", "pg_connect",
                         "mssql_connect", "sqlsrv_connect", "oci_connect", "odbc_connect", "ibase_connect"})


# what a config grabber or symlink tool does with each account's home
_HOME_WALK = _FS_READ | _DIR_LIST | frozenset({"symlink", "is_readable", "file_exists", "copy", "link"})


def _own_decoder(ctx: Ctx, sink: str, arg, sc: Scope) -> None:
    """eval(f($_POST['x'])) with f the file's own function: a custom decoder (a cipher, a Bacon or
    substitution code) whose output our taint loses when it is built from constants the request
    only selects. Code made from request data by the page's own routine is still the request's."""
    if arg[0] != "call" or arg[1][0] != "name" or arg[1][1].lower() not in ctx.funcs:
        return
    inner = [_ev(ctx, a, sc) for a in arg[2][:4]]
    src = next((a for a in inner if _strong(a)), None)
    if src is not None:
        _raw(ctx, "php.request-to-code", "critical", 0.8, _label(src), sink,
             f"{sink}({arg[1][1]}({_show(src)}))", "request data decoded by the file's own function runs as code")


def _preloads(name: str, args: list[V]) -> bool:
    """putenv('LD_PRELOAD=...') or an environment array with LD_PRELOAD for proc_open/pcntl_exec."""
    if name == "putenv":
        s = (_sv(args[0]) if args and not isinstance(args[0].s, dict) else None) or (args[0].head if args else "")
        return (s or "").lstrip().upper().startswith(("LD_PRELOAD", "LD_LIBRARY_PATH="))
    env = args[4] if name == "proc_open" and len(args) > 4 else args[2] if name == "pcntl_exec" and len(args) > 2 \
        else None
    if env is None:
        return False
    if isinstance(env.s, dict):
        return any(str(k).upper() == "LD_PRELOAD" or (isinstance(v, V) and isinstance(v.s, str) and
                   v.s.upper().startswith("LD_PRELOAD=")) for k, v in env.s.items())
    return False


def _object_injection(ctx: Ctx, src: V) -> None:
    """unserialize() of request data: the request sets every property of any class, and PHP then
    runs its magic methods. Run them with the properties tainted."""
    for c in list(ctx.classes.values())[:32]:
        magic = [c.methods[m] for m in ("__wakeup", "__destruct", "__tostring", "__unserialize") if m in c.methods]
        if not magic:
            continue
        for pname, _ in c.props:
            ctx.props[f"{c.name}->{pname}"] = V(None, src.t, True)
        for fd in magic:
            _call_user(ctx, fd, [V(None, src.t, True)], V(cls=c.name))


def _lambda(ctx: Ctx, args: list[V]) -> V:
    """create_function('$x', 'body'): a function whose body is the (decoded) code, callable later."""
    params = _sv(args[0]) if args else None
    body = _sv(args[1]) if len(args) > 1 else None
    if params is None or body is None or ctx.decode_depth >= ctx.budget.limits.max_decode_depth:
        return UNKNOWN
    ctx.budget.spend(len(body))
    toks, _ = tokenize("function __lambda(" + params + ") {" + body + "\n}", ctx.budget, php_mode=True)
    stmts, classes, _deep = parse(toks, ctx.budget)
    fd = next((st[1] for st in stmts if st[0] == "func"), None)
    if fd is None:
        return UNKNOWN
    return V(None, _EMPTY, False, fn=(fd, {}))


_PACKERS = frozenset({"base64_decode", "gzinflate", "gzuncompress", "gzdecode", "str_rot13", "strrev", "hex2bin",
                      "convert_uudecode", "zlib_decode"})


def _plain(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        x = v.s if isinstance(v, V) else v
        out[k] = _plain(x) if isinstance(x, dict) else x
    return out


def _fold(ctx: Ctx, name: str, args: list[V]) -> V:
    vals = []
    for a in args:
        if isinstance(a.s, dict):
            p = _plain(a.s)
            if any(x is None for x in p.values()):
                return UNKNOWN
            vals.append(p)
        else:
            vals.append(a.s)
    # the work is proportional to the input: charge it, so a loop over a large string ends
    ctx.budget.spend(sum(len(v) for v in vals if isinstance(v, str)) // 8)
    cap = min(ctx.budget.limits.max_decoded_bytes - ctx.budget.decoded, MAX_CONST)
    try:
        r = fold(name, vals, cap)
    except Capped as e:
        _raw(ctx, "php.decode-bomb", "medium", 0.45, "", name, f"{name}(…)", f"decoding stopped: {e}")
        return UNKNOWN
    if r is NOTHING:
        return UNKNOWN
    if isinstance(r, str):
        ctx.budget.spend(len(r))
        if len(r) > MAX_CONST:
            return UNKNOWN
    if isinstance(r, dict):
        r = {k: V(v) for k, v in r.items()}
    chain = tuple(x for a in args for x in a.chain)
    if name in DECODERS and name not in ("chr", "implode", "join", "str_replace", "strtr", "stripslashes"):
        chain = chain + (name,)
    return V(r, chain=chain)


def _array_fn(name: str, args: list[V], t: frozenset) -> V:
    a0 = args[0] if args else UNKNOWN
    if a0.fn == "src:_SERVER" and name in ("array_values", "array_slice", "array_reverse", "end", "array_pop"):
        # $_SERVER as a whole holds every request header: its values by position are request data
        return V(None, frozenset({"$_SERVER (by position)"}), True)
    if name == "array_keys" and isinstance(a0.s, dict) and not t and len(args) == 1:
        return V(dict(enumerate(V(k) for k in a0.s)))
    if isinstance(a0.s, dict):
        vals = list(a0.s.values())
        if name in ("array_values", "array_unique") and not t:
            return V(dict(enumerate(vals)))
        if name == "array_diff" and not t and all(isinstance(a.s, dict) for a in args):
            drop = {to_str(x.s if isinstance(x, V) else x) for a in args[1:] for x in a.s.values()}
            return V({k: v for k, v in a0.s.items() if to_str(v.s if isinstance(v, V) else v) not in drop})
        if name in ("end", "array_pop") and vals:
            return _elem(a0, list(a0.s.keys())[-1])
        if name in ("reset", "current", "array_shift") and vals:
            return _elem(a0, list(a0.s.keys())[0])
        if name == "array_merge" and all(isinstance(a.s, dict) for a in args) and not t:
            out: dict = {}
            for a in args:
                for k, v in a.s.items():
                    out[len(out) if isinstance(k, int) else k] = v
            return V(out)
    return V(None, t, bool(t))


def _preg(ctx: Ctx, name: str, args: list[V], node, sc: Scope) -> V:
    pat = args[0] if args else UNKNOWN
    rep = args[1] if len(args) > 1 else UNKNOWN
    subj = args[2] if len(args) > 2 else UNKNOWN
    if name.startswith("mb_"):
        opt = _sv(args[3]) if len(args) > 3 else None
        e_mod = opt is not None and "e" in opt
    else:
        p = _sv(pat) if not isinstance(pat.s, dict) else None
        e_mod = False
        if p is not None and len(p) >= 2:
            p = p.strip()
            delim = {"(": ")", "{": "}", "[": "]", "<": ">"}.get(p[0], p[0])
            end = p.rfind(delim)
            e_mod = end > 0 and "e" in p[end + 1:]
        elif isinstance(pat.s, dict):
            e_mod = any("e" in (to_str(x.s if isinstance(x, V) else x) or "").rsplit("/", 1)[-1]
                        for x in pat.s.values())
    if e_mod:
        ctx.calls[name + "/e"] += 1
        data = _join([rep, subj]) if (rep.t or subj.t) else rep
        _sink(ctx, "code", name + " /e", data, node, sc, args)
        if _packed(pat.chain) and not data.t:
            # an /e pattern that obfuscation built (XOR, decoders): the code it runs is hidden too
            _raw(ctx, "php.obfuscated-eval", "high", 0.6, "", name + " /e",
                 f"{name}({'('.join(reversed(pat.chain))}(…) = {_q(_sv(pat) or '', 30)}, …)",
                 "runs code through a preg_replace /e pattern built by obfuscation")
    elif pat.t and pat.d:
        _raw(ctx, "php.request-regex", "high", 0.7, _label(pat), name, f"{name}({_show(pat)}, …)",
             "the pattern (and so the /e modifier) comes from the request")
    t = _EMPTY.union(*(a.t for a in args[1:3]))
    if not e_mod and not t and not pat.t and not name.startswith("mb_") and len(args) >= 3:
        # constants only: folded, so a sink name spelled with junk and stripped by a regex is seen
        ctx.budget.spend(len(subj.s) if isinstance(subj.s, str) else 0)
        out = preg_fold(name, [pat.s, rep.s, subj.s])
        if out is not NOTHING:
            return V(out, chain=("preg_replace",))
    return V(None, t, False)


def _callback(ctx: Ctx, name: str, args: list[V], node, sc: Scope) -> V:
    ci, di = CALLBACKS[name]
    if not args:
        return UNKNOWN
    cb = args[ci] if -len(args) <= ci < len(args) else UNKNOWN
    if di is None:
        data_args = [a for j, a in enumerate(args) if j != (ci % len(args))]
    else:
        data_args = [args[j] for j in di if j < len(args)]
    # the callback sees the elements of array arguments, not the arrays
    if name in ("call_user_func_array", "forward_static_call_array") and data_args:
        arr = data_args[0]
        cargs = [_elem(arr, i) for i in range(min(len(arr.s), 8))] if isinstance(arr.s, dict) else [arr]
    elif name in ("call_user_func", "register_shutdown_function", "register_tick_function", "forward_static_call"):
        cargs = data_args
    else:
        cargs = [_elem(a, None) if isinstance(a.s, dict) else V(None, a.t, a.d) for a in data_args]
        if isinstance(data_args[0].s if data_args else None, dict):
            vals = list(data_args[0].s.values())[:16]
            if vals:
                j = _join([x if isinstance(x, V) else V(x) for x in vals])
                cargs = [V(j.s, j.t | data_args[0].t, j.d or data_args[0].d)] + cargs[1:]
    cbn = _sv(cb) if not isinstance(cb.s, dict) else None
    if name == "ob_start" and ctx.echo_taint:
        cargs = [V(None, ctx.echo_taint, True), V(8)]
    if name in ("array_walk", "array_walk_recursive") and data_args and isinstance(data_args[0].s, dict) \
            and data_args[0].s and not cb.t:
        arr = data_args[0]
        r = UNKNOWN
        for k in list(arr.s)[:8]:  # the callback gets (value, key): shells build names from both
            r = _dynamic(ctx, cb, [], [_elem(arr, k), V(k)] + data_args[1:2], node, sc, via=name)
        return r
    if name == "ob_start" and cbn is not None and cbn.strip().lower() in SINKS:
        _raw(ctx, "php.callback-sink", "high", 0.75, "", f"ob_start({cbn})", f"ob_start({_q(cbn)})",
             "the page's output is handed to a code or command sink")
        return UNKNOWN
    return _dynamic(ctx, cb, [], cargs, node, sc, via=name)


def _file_op(ctx: Ctx, name: str, args: list[V], node, sc: Scope) -> V | None:
    a0 = args[0] if args else UNKNOWN
    a1 = args[1] if len(args) > 1 else UNKNOWN
    if name == "fopen":
        mode = (_sv(a1) or "r").lower()
        if isinstance(a0.s, str) and a0.s.lower().startswith("php://input"):
            return V(None, frozenset({"php://input"}), True)
        if a0.t:
            ctx.req_fs.add("fopen") if any(c in mode for c in "wax+") else ctx.req_read.add("fopen")
        return V(None, a0.t, a0.d, h=a0)
    if name in ("fwrite", "fputs") and ctx.shell_pipes and (a1.s is None or a1.t):
        m = _PIPE0.match(_render(node))
        if m is not None and m.group(1) in ctx.shell_pipes:
            strong = _strong(a1) or _strongish(a1)
            _raw(ctx, "php.request-to-exec" if a1.t else "php.shell-stdin", "critical", 0.9 if strong else 0.6,
                 _label(a1), "proc_open(shell) stdin", f"{name}({m.group(1)}[0], {_show(a1)})",
                 "commands written to an interactive shell's input")
            return UNKNOWN
    if name in ("fwrite", "fputs"):
        path = a0.h if a0.h is not None else UNKNOWN
        _write(ctx, name, path, a1, node, sc)
        return UNKNOWN
    if name == "file_put_contents":
        _write(ctx, name, a0, a1, node, sc)
        return UNKNOWN
    if name == "copy" and isinstance(a0.s, str) and a0.s.lower().startswith(("http://", "https://", "ftp://")):
        dst = _sv(a1) or ""
        if dst.lower().endswith(_PHP_EXT):
            _raw(ctx, "php.remote-drop", "high", 0.7, f"remote {_q(a0.s, 60)}", name,
                 f"copy({_q(a0.s)}, {_q(dst)})", "downloads a script into place")
        return UNKNOWN
    if name in ("move_uploaded_file", "copy", "rename"):
        if a0.t and any(x.startswith("$_FILES") or x.startswith("$HTTP_POST_FILES") for x in a0.t):
            ctx.upload = True
            ctx.req_fs.add(name)
            _raw(ctx, "php.uploader", "high", 0.0, _label(a0), name,
                 f"{name}({_show(a0)}, {_show(a1, None)})", "an uploaded file is moved into place",
                 extra={"dest_tainted": bool(a1.t), "dest": _sv(a1) or ""})
        elif a0.t or a1.t:
            ctx.req_fs.add(name)
            if name in ("copy", "rename") and _strong(a0) and _strong(a1):
                _raw(ctx, "php.request-file-write", "high", 0.6, _label(a0), name,
                     f"{name}({_show(a0)}, {_show(a1)})", "copies a file (or URL) the request names to a path it names")
        if name == "move_uploaded_file" and not a1.t and (_sv(a1) or "").lower().rstrip().endswith(_PHP_EXT) \
                and not any(x.startswith(("$_FILES", "$HTTP_POST_FILES")) for x in a0.t):
            # an upload (named by register_globals, or by any variable) saved under a fixed script
            # name: whatever is uploaded runs as code
            ctx.upload = True
            _raw(ctx, "php.uploader", "high", 0.0, _label(a0) or "upload", name,
                 f"{name}({_show(a0)}, {_show(a1)})", "an uploaded file is saved as a script",
                 extra={"dest_tainted": False, "dest": _sv(a1) or "", "dest_script": True})
        return UNKNOWN
    return None


# the constant text written just before the request's part ends in a code or command sink's open paren
_CODE_HEAD = re.compile(r"\b(?:eval|assert|system|passthru|shell_exec|popen|proc_open)\s*\(\s*@?\s*$", re.I)


def _write(ctx: Ctx, name: str, path: V, data: V, node, sc: Scope) -> None:
    p = _sv(path) if not isinstance(path.s, dict) else None
    php_path = (p if p is not None else path.tail).lower().rstrip().endswith(_PHP_EXT)
    if path.t:
        ctx.req_fs.add(name)
    if data.t and p is not None and len(ctx.tainted_files) < 64:
        ctx.tainted_files[p] = _label(data)
    if data.t and not data.t <= frozenset({"socket"}):
        remote = all(x.startswith("remote") for x in data.t)
        if p is not None and p.startswith(THIS_FILE):
            conf, why = 0.8, "request data written into the script itself"
        elif p is not None and p.lower().rstrip().endswith((".htaccess", ".user.ini")):
            conf, why = 0.7, "request data written to a server configuration file"
        elif php_path and remote and ctx.size < 8192 and not ctx.classes:
            # a small flat script that fetches code and saves it as a script: a shell installer
            conf, why = 0.6, "downloaded content written to a script file"
        elif php_path and remote:
            conf, why = 0.45, "downloaded content written to a script file"
        elif _CODE_HEAD.search(data.head[-200:]) and data.head.lstrip().startswith("<?"):
            # `fputs(fopen($f, 'w'), "<?php eval($_POST[c]); ?>")`: the double quotes put the request's
            # value inside a PHP sink call of the file written, whatever the path; a one-line shell
            # written by a dropper (compiled templates open with `<?php echo`, never a sink call)
            conf, why = 0.8, "writes a script that runs the request's data as code"
        elif php_path and data.d:
            conf, why = 0.85, "request data written to a script file"
        elif php_path:
            conf, why = 0.45, "request data mixed into a script file"
        elif path.t:
            conf, why = 0.6, "request data written to a path the request names"
        else:
            conf, why = 0.2, "request data written to a file"
        if not any(not x.startswith(_WEAK) for x in data.t | path.t):
            conf = min(conf, 0.3)  # only register_globals guesses: not enough for a write
        _raw(ctx, "php.request-file-write", "high", conf, _label(data), name,
             f"{name}({_show(path)}, {_show(data)})", why, extra={"fm": True})
        return
    code = _sv(data) if not isinstance(data.s, dict) else None
    if code is None and data.head.lstrip().startswith("<?"):
        code = data.head  # a payload put in front of a file's old contents
    if code and p is not None and p.lower().rstrip().endswith((".htaccess", ".user.ini")) and any(
            d in code.lower() for d in _HT_DIRECTIVES):
        _raw(ctx, "php.htaccess-drop", "high", 0.7, "", name, f"{name}({_q(p)}, {_q(code, 100)})",
             "writes a server configuration that makes more files run as code")
        return
    if code and _BACKCONNECT.search(code):
        _raw(ctx, "php.backconnect-drop", "critical", 0.75, "", name, f"{name}({_show(path)}, {_q(code, 100)})",
             "writes a back-connect shell (a script that ties a shell to a network socket)", family="reverse-shell")
        return
    if code and ("<?" in code) and (php_path or path.s is None):
        inner = _subscan(ctx, code)
        best = max(inner, key=lambda h: h["conf"], default=None)
        if best is not None and best["conf"] >= 0.5:
            _raw(ctx, "php.dropper", "high", min(0.95, best["conf"]), best["source"], name,
                 best["snippet"], f"writes a web shell to {p or 'a file'} ({best['rule']})", family=best["family"])


def _include(ctx: Ctx, node, v: V, sc: Scope) -> None:
    s0 = _sv(v) if not isinstance(v.s, dict) else None
    if s0 is not None and s0 in ctx.tainted_files:
        _raw(ctx, "php.request-include", "critical", 0.85, ctx.tainted_files[s0], "include",
             f"include {_q(s0)}", "request data is written to a file that is then run as code")
        return
    if v.t and not v.t <= frozenset({"socket"}):
        strong = any(not x.startswith(_WEAK) for x in v.t)
        conf = (0.8 if v.d else 0.35) if strong else 0.3
        expr = node[2] if node[0] == "include" else None
        if strong and not v.d and expr is not None and expr[0] == "bin" and expr[1] == "." and \
                _strong(_ev(ctx, expr[2][0], sc)):
            conf = 0.6  # the request picks the start of the path: a remote URL (RFI)
        kind = node[1] if node[0] == "include" else "include"
        _raw(ctx, "php.request-include", "high" if v.d else "medium", conf, _label(v), kind,
             f"{kind} {_show(v, node[2] if node[0] == 'include' else None)}",
             "the request names the file that is run as code")
        return
    s = _sv(v) if not isinstance(v.s, dict) else None
    if s and s.strip().lower().startswith("php://input"):
        _raw(ctx, "php.request-include", "critical", 0.9, "php://input", "include", f"include {_q(s)}",
             "the request body is run as code")
        return
    if s and s.lower().startswith(("data:", "php://filter", "data://")):
        _raw(ctx, "php.include-data", "high", 0.7, "", "include", f"include {_q(s)}",
             "code included from a data: or php:// stream")


def _feature_cmd(ctx: Ctx, v: V) -> None:
    s = _sv(v) if not isinstance(v.s, dict) else None
    if s and len(s) < 512:
        ctx.strings.append(s)


def _sink(ctx: Ctx, kind: str, sink: str, v: V, node, sc: Scope, args: list[V], via: str = "") -> None:
    if via:
        sink_txt = f"{via}({sink})" if sink != "`backticks`" else via
    else:
        sink_txt = sink
    if not v.t and v.s is None and v.chain and all(c.startswith("param:") for c in v.chain):
        if kind == "code" and len(v.chain) == 1:
            _raw(ctx, "php.eval-wrapper", "high", 0.5, "parameter " + v.chain[0][6:], sink_txt,
                 f"{sink}({v.chain[0][6:]})", "a function runs its parameter as code")
        elif kind == "exec" and len(v.chain) == 1:
            # weighed in php_families: alone it is any command helper, with the disable_functions
            # fallback chain around it it is a shell's "run this however the host allows"
            _raw(ctx, "php.exec-wrapper", "high", 0.3, "parameter " + v.chain[0][6:], sink_txt,
                 f"{sink}({v.chain[0][6:]})", "a function runs its parameter as a command")
        return
    if v.t:
        strong = any(not x.startswith(_WEAK) for x in v.t)
        if kind == "exec":
            if v.t <= frozenset({"socket"}):
                _raw(ctx, "php.socket-to-exec", "critical", 0.85, "socket", sink_txt, _snip(sink, args, via),
                     "commands read from a network socket are run", family="reverse-shell")
                return
            conf = (0.95 if v.d else 0.85) if strong else 0.45
            _raw(ctx, "php.request-to-exec", "critical", conf, _label(v), sink_txt, _snip(sink, args, via),
                 "request data reaches command execution")
        else:
            conf = (0.95 if v.d else 0.9) if strong else 0.65
            _raw(ctx, "php.request-to-code", "critical" if strong else "high", conf, _label(v), sink_txt,
                 _snip(sink, args, via), "request data reaches code execution", extra={"direct": v.d})
        return
    if kind == "exec":
        a0 = args[0] if args else v
        if isinstance(v.fn, str) and v.fn.startswith("escaped:"):
            _raw(ctx, "php.request-to-exec", "critical", 0.6, v.fn[8:], sink_txt, f"{sink}(escapeshellarg({v.fn[8:]}))",
                 "the request names the whole command (escapeshellarg only quotes it)")
            return
        s = _sv(a0) if not isinstance(a0.s, dict) else None
        if "'REMOTE_PORT'" in _render(node):
            # the client's own connection (address and port) handed to a program: a socket-reuse shell
            _raw(ctx, "php.reverse-shell", "critical", 0.6, "$_SERVER['REMOTE_PORT']", sink_txt,
                 _render(node), "hands the client's connection to a command", family="reverse-shell")
        if s and ctx.calls.keys() & _SOCKETS and any(x in s for x in ("/bin/sh", "/bin/bash", "cmd.exe", "sh -i")):
            _raw(ctx, "php.reverse-shell", "critical", 0.85, "socket", sink_txt, _snip(sink, args, via),
                 "a shell is started on a network socket", family="reverse-shell")
        if s and len(s) >= 8 and set(a0.chain) & _PACKERS:
            # a fixed command shipped encoded (system(base64_decode('...'))): an honest program has
            # no reason to hide the command it runs from the person reading it
            _raw(ctx, "php.obfuscated-exec", "high", 0.6, "", sink_txt,
                 f"{sink}({'('.join(reversed(a0.chain[:4]))}(…) = {_q(s, 60)})",
                 "runs a command that is stored encoded")
        return
    code = _sv(v) if not isinstance(v.s, dict) else None
    if v.s is None and "fetched" in v.chain:
        _raw(ctx, "php.remote-code", "critical", 0.7, "remote page", sink_txt,
             f"{sink_txt}(file_get_contents(<URL>)…)", "runs code fetched from a URL the page builds")
        return
    if code:
        _code(ctx, sink_txt, code, v, sc)
    elif v.s is None and (set(v.chain) & (_PACKERS | {"getDocComment"})):
        # code that a decoder produced from data this reader could not compute (a loop, a file)
        big = ctx.stats.get("longest", 0) if isinstance(getattr(ctx, "stats", None), dict) else 0
        conf = 0.5 + (0.1 if big >= 1000 else 0.0) + (0.2 if "getDocComment" in v.chain else 0.0)
        _raw(ctx, "php.obfuscated-eval", "high", conf, "", sink_txt,
             f"{sink_txt}({'('.join(reversed(v.chain))}(…))", "runs code a decoder produced at run time")


def _snip(sink: str, args: list[V], via: str) -> str:
    inner = f"{sink}({', '.join(_show(a) for a in args[:3])})" if sink != "`backticks`" else \
        "`" + (_show(args[0]) if args else "") + "`"
    if via:
        return f"{via}({_q(sink)}, {', '.join(_show(a) for a in args[:2])})" if sink != "`backticks`" else inner
    return inner


def _code(ctx: Ctx, sink: str, code: str, v: V, sc: Scope) -> None:
    """Constant code handed to eval & co.: read it as PHP, in the same scope (as eval does)."""
    if ctx.decode_depth >= ctx.budget.limits.max_decode_depth:
        _raw(ctx, "php.decode-depth", "medium", 0.6, "", sink, f"{sink}({_q(code, 60)})",
             f"more than {ctx.budget.limits.max_decode_depth} layers of decoded code")
        return
    ctx.budget.spend(len(code))
    ctx.decoded_code += len(code)
    before = ctx.strong
    ctx.decode_depth += 1
    ctx.chain.append(sink + ("(" + "(".join(reversed(v.chain)) if v.chain else ""))
    try:
        cached = ctx.code_cache.get(code)
        if cached is None:
            toks, _ = tokenize(code, ctx.budget, php_mode=not code.lstrip().startswith("<?"))
            stmts, classes, deep = parse(toks, ctx.budget)
            ctx.too_deep |= deep
            cached = (stmts, classes)
            if len(ctx.code_cache) < 256:
                ctx.code_cache[code] = cached
            _register(ctx, stmts, classes)
        _stmts(ctx, cached[0], sc)
    finally:
        ctx.decode_depth -= 1
        ctx.chain.pop()
    found = ctx.strong > before
    if not found and _packed(v.chain):
        # decoded code that runs but shows no request flow: packed code is still a strong sign
        ent = entropy(code)
        conf = 0.55 + (0.1 if len(code) > 2000 else 0) + (0.05 if ent > 5.0 else 0)
        _raw(ctx, "php.obfuscated-eval", "high", conf, "", sink,
             f"{sink}({'('.join(reversed(v.chain))}(…)) = {clip(code, 120)}",
             f"runs code hidden by {' > '.join(reversed(v.chain))}")


def _subscan(ctx: Ctx, code: str) -> list[dict]:
    """Hits in a PHP file the scanned code would write (a dropper's payload), same budget."""
    if ctx.decode_depth >= ctx.budget.limits.max_decode_depth:
        return []
    sub = Ctx(ctx.budget, len(code))
    sub.decode_depth = ctx.decode_depth + 1
    try:
        _run_file(sub, code, php_mode=False)
    except TooDeep:
        pass
    out: list = []
    _finish(sub, out)
    return [{"conf": h.confidence, "source": h.source, "snippet": h.snippet, "rule": h.rule, "family": h.family}
            for h in out]


# the statement and expression half: at the end (as php_eval imports this module at its end), so
# either module may be imported first and each finds the other's names defined
from agent.imagegate.webshell.php_eval import (  # noqa: E402
    _assign,
    _elem,
    _ev,
    _key,
    _register,
    _run_file,
    _set,
    _stmts,
)
