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
"""

from __future__ import annotations

from collections import Counter

from agent.imagegate.webshell.common import Budget, BudgetExceeded, Hit, clip, entropy
from agent.imagegate.webshell.php_fold import DECODERS, FOLDABLE, NOTHING, Capped, fold, to_int, to_str
from agent.imagegate.webshell.php_lex import tokenize
from agent.imagegate.webshell.php_parse import ClassDef, FuncDef, TooDeep, parse
from agent.vocab import Severity

# -- vocabulary (PHP's own names: sources, sinks, callbacks) --------------------------------------
SOURCES = frozenset({"_GET", "_POST", "_REQUEST", "_COOKIE", "_FILES", "_ENV", "HTTP_RAW_POST_DATA",
                     "HTTP_GET_VARS", "HTTP_POST_VARS", "HTTP_COOKIE_VARS", "HTTP_POST_FILES",
                     "HTTP_ENV_VARS", "HTTP_SERVER_VARS"})
_SERVER_SAFE = frozenset({"DOCUMENT_ROOT", "SCRIPT_FILENAME", "SCRIPT_NAME", "SERVER_NAME", "SERVER_ADDR",
                          "SERVER_PORT", "SERVER_SOFTWARE", "SERVER_PROTOCOL", "REQUEST_METHOD",
                          "REQUEST_TIME", "REQUEST_TIME_FLOAT", "REMOTE_ADDR", "REMOTE_PORT", "HTTPS",
                          "GATEWAY_INTERFACE", "SERVER_ADMIN", "SERVER_SIGNATURE", "PATH", "argv", "argc",
                          "CONTENT_LENGTH", "CONTENT_TYPE", "SystemRoot", "COMSPEC", "WINDIR", "PHP_AUTH_USER"})
EXEC_SINKS = frozenset({"system", "exec", "passthru", "shell_exec", "popen", "proc_open", "pcntl_exec",
                        "expect_popen", "w32api_invoke_function"})
CODE_SINKS = frozenset({"eval", "assert", "create_function"})
SINKS = EXEC_SINKS | CODE_SINKS
# callback-taking builtins: name -> (index of the callback, indexes of the data it is called with; None = the rest)
CALLBACKS = {
    "call_user_func": (0, None), "call_user_func_array": (0, (1,)), "array_map": (0, None),
    "array_filter": (1, (0,)), "array_walk": (1, (0, 2)), "array_walk_recursive": (1, (0, 2)),
    "array_reduce": (1, (0, 2)), "usort": (1, (0,)), "uasort": (1, (0,)), "uksort": (1, (0,)),
    "register_shutdown_function": (0, None), "register_tick_function": (0, None),
    "forward_static_call": (0, None), "forward_static_call_array": (0, (1,)), "iterator_apply": (1, (2,)),
    "preg_replace_callback": (1, (2,)), "mb_ereg_replace_callback": (1, (2,)), "ob_start": (0, ()),
    "header_register_callback": (0, ()), "set_error_handler": (0, ()), "set_exception_handler": (0, ()),
    "spl_autoload_register": (0, ()), "array_diff_ukey": (-1, None), "array_intersect_ukey": (-1, None),
    "array_udiff": (-1, None), "array_uintersect": (-1, None), "array_diff_uassoc": (-1, None),
    "array_intersect_uassoc": (-1, None), "array_udiff_assoc": (-1, None), "array_uintersect_assoc": (-1, None),
}
# functions whose result carries no request data a shell could use (numbers, booleans, hashes)
_CLEAN = frozenset({
    "intval", "floatval", "boolval", "count", "sizeof", "strlen", "mb_strlen", "md5", "sha1", "crc32", "hash",
    "hash_hmac", "isset", "empty", "in_array", "array_key_exists", "file_exists", "is_file", "is_dir",
    "is_readable", "is_writable", "is_writeable", "function_exists", "method_exists", "class_exists", "ord",
    "time", "microtime", "rand", "mt_rand", "uniqid", "escapeshellarg", "preg_match", "preg_match_all",
    "strpos", "stripos", "strrpos", "strcmp", "strcasecmp", "strncmp", "version_compare", "filesize",
    "filemtime", "fileperms", "is_numeric", "is_string", "is_array", "is_int", "ctype_digit", "ctype_alnum",
    "abs", "max", "min", "round", "floor", "ceil", "number_format", "date", "gmdate", "mktime", "strtotime",
    "checkdate", "headers_sent", "password_verify", "hash_equals", "is_uploaded_file", "ini_get",
    "array_search", "json_last_error", "settype", "gettype", "get_class", "is_object", "is_callable",
    "filter_var_int", "ctype_alpha", "ctype_xdigit", "is_bool", "is_null", "array_keys_exists", "key_exists",
})
_READ_SOURCES = frozenset({"file_get_contents", "fopen", "file", "readfile", "stream_get_contents",
                           "fread", "fgets", "parse_ini_file", "simplexml_load_file", "gzopen", "gzfile"})
_FS_WRITE = frozenset({"unlink", "rmdir", "rename", "chmod", "chown", "chgrp", "touch", "mkdir", "copy",
                       "file_put_contents", "move_uploaded_file", "symlink", "link", "fopen", "fwrite",
                       "fputs", "tempnam", "lchown", "ftruncate"})
_FS_READ = frozenset({"file_get_contents", "readfile", "file", "highlight_file", "show_source", "fpassthru",
                      "fopen", "filesize", "fileperms", "is_writable", "stat", "lstat", "fileowner"})
_DIR_LIST = frozenset({"opendir", "scandir", "readdir", "glob", "dir", "is_dir", "filetype", "realpath"})
_SYSINFO = frozenset({"posix_getpwuid", "posix_getgrgid", "posix_geteuid", "posix_getegid", "posix_uname",
                      "disk_free_space", "disk_total_space", "diskfreespace", "php_uname", "getmyuid",
                      "getmygid", "getmypid", "get_current_user", "phpversion", "getmyinode",
                      "fileowner", "filegroup", "ini_get", "gethostbyname", "get_cfg_var", "php_sapi_name"})
_SOCKETS = frozenset({"fsockopen", "pfsockopen", "socket_create", "stream_socket_client", "stream_socket_server",
                      "socket_accept", "stream_socket_accept", "socket_connect"})
_RECON = ("uname -a", "/etc/passwd", "whoami", "netstat", "ps aux", "/bin/sh", "/bin/bash", "cmd.exe",
          "net user", "ipconfig", "ifconfig", "ls -la", "cat /etc", "id;", "wget ", "2>&1")
_AUTH = ("nonce", "csrf", "current_user_can", "user_can", "capabilit", "permission", "authoriz",
         "user_access", "isgranted", "is_granted", "check_admin_referer", "check_ajax_referer", "is_user_logged_in",
         "denyaccess", "access_check", "checkaccess", "_token", "validate_token", "checktoken")
_FRAMEWORK = ("wp_", "esc_", "sanitize_", "apply_filters", "do_action", "add_action", "add_filter", "drupal",
              "get_option", "__", "_e", "t", "pma_", "jtext", "jfactory", "trans", "config")
_HT_DIRECTIVES = ("addtype", "addhandler", "sethandler", "auto_prepend_file", "auto_append_file")
_PHP_EXT = (".php", ".phtml", ".php3", ".php4", ".php5", ".php7", ".pht", ".phar", ".inc", ".shtml", ".asp",
            ".aspx", ".jsp", ".htaccess", ".user.ini")
_CONSTS = {"php_eol": "\n", "directory_separator": "/", "path_separator": ":", "true": "1", "false": "",
           "null": "", "php_os": "Linux", "e_all": 32767, "php_int_max": 9223372036854775807,
           "php_version": "8.2.0", "php_os_family": "Linux"}

THIS_FILE = "/__this_file__.php"
_WEAK = ("~", "^")  # label prefixes: a register_globals guess, a parameter of a function nobody calls
MAX_CALL_DEPTH = 6
MAX_ANALYSES = 400  # user-function analyses per file
MAX_PER_FUNC = 8  # distinct argument shapes analysed per function
MAX_CONST = 4 << 20  # a constant longer than this is kept unknown (a bomb must not grow in memory)
MAX_ARRAY = 4096


class V:
    """An abstract value: `s` a constant (str/int/float/dict for arrays, or None when unknown),
    `t` the request sources it derives from, `d` True when it IS request data (no constant
    mixed in), `cls` the class of an object, `fn` a callable it wraps (FuncDef, captured env) or a
    function name (ReflectionFunction, Closure::fromCallable), `h` the path a file handle opened,
    `chain` the decoders that produced it."""

    __slots__ = ("s", "t", "d", "cls", "fn", "h", "chain")

    def __init__(self, s=None, t=frozenset(), d=False, cls=None, fn=None, h=None, chain=()):
        self.s = s
        self.t = t
        self.d = d
        self.cls = cls
        self.fn = fn
        self.h = h
        self.chain = chain


UNKNOWN = V()
_EMPTY: frozenset = frozenset()


def _join(vs: list[V]) -> V:
    if not vs:
        return UNKNOWN
    if len(vs) == 1:
        return vs[0]
    first = vs[0].s
    same = first is not None and all(v.s == first for v in vs[1:]) if not isinstance(first, dict) else False
    t = _EMPTY.union(*(v.t for v in vs))
    cls = next((v.cls for v in vs if v.cls), None)
    fn = next((v.fn for v in vs if v.fn), None)
    chain = next((v.chain for v in vs if v.chain), ())
    return V(first if same else None, t, any(v.d for v in vs) and bool(t), cls, fn, chain=chain)


def _sv(v: V) -> str | None:
    """The value as a PHP string, when known."""
    if v.s is None:
        return None
    return to_str(v.s)


class Scope:
    __slots__ = ("vars", "sticky", "globals", "returns", "extracted", "func")

    def __init__(self, func: FuncDef | None = None):
        self.vars: dict[str, V] = {}
        self.sticky: dict[str, frozenset] = {}
        self.globals: set[str] = set()
        self.returns: list[V] = []
        self.extracted = ""  # extract($_POST) / parse_str: unknown variables are request data
        self.func = func


class Ctx:
    def __init__(self, budget: Budget, size: int):
        self.budget = budget
        self.size = size
        self.raw: list[dict] = []
        self.seen: set = set()
        self.funcs: dict[str, FuncDef] = {}
        self.classes: dict[str, ClassDef] = {}
        self.methods: dict[str, list[FuncDef]] = {}
        self.props: dict[str, V] = {}
        self.consts: dict[str, V] = {}
        self.session = V()
        self.calls: Counter = Counter()
        self.req_fs: set[str] = set()
        self.req_read: set[str] = set()
        self.decode_depth = 0
        self.chain: list[str] = []
        self.memo: dict = {}
        self.per_func: Counter = Counter()
        self.analyses = 0
        self.call_depth = 0
        self.code_cache: dict[str, tuple] = {}
        self.analysed: set[int] = set()
        self.strings: list[str] = []
        self.xor_taint = False
        self.decrypt_taint = False
        self.session_write = False
        self.too_deep = False
        self.upload = False
        self.globals: Scope | None = None
        self.decoded_code = 0
        self.root_src: str | None = None
        self.echo_taint: frozenset = frozenset()
        self.closures: list = []
        self.probes: set[str] = set()
        self.tainted_files: dict[str, str] = {}
        self.req_dir: set[str] = set()
        self.strong = 0  # hits at or above the threshold, repeats included


# -- rendering (evidence) -----------------------------------------------------------------------
def _q(s: str, n: int = 80) -> str:
    s = s if len(s) <= n else s[: n - 1] + "…"
    return "'" + "".join(c if " " <= c < "\x7f" else f"\\x{ord(c):02x}" for c in s) + "'"


def _label(v: V) -> str:
    strong = sorted(x for x in v.t if not x.startswith(_WEAK))
    if strong:
        return strong[0]
    weak = sorted(v.t)
    return weak[0].lstrip("~^") if weak else ""


def _show(v: V, node=None) -> str:
    if v.t and (v.d or v.s is None):
        return _label(v) if v.d else f"…{_label(v)}…"
    if isinstance(v.s, dict):
        items = list(v.s.values())[:4]
        return "array(" + ", ".join(_show(x) if isinstance(x, V) else _q(str(x), 30) for x in items) + ")"
    s = _sv(v)
    if s is not None:
        return _q(s)
    return _render(node) if node is not None else "…"


def _render(node, depth: int = 0) -> str:
    if node is None or depth > 6:
        return "…"
    k = node[0]
    if k == "var":
        return "$" + node[1]
    if k in ("str",):
        return _q(node[1], 40)
    if k == "num":
        return str(node[1])
    if k in ("const", "name"):
        return node[1]
    if k == "call":
        return _render(node[1], depth + 1) + "(" + ", ".join(_render(a, depth + 1) for a in node[2][:4]) + ")"
    if k == "mcall":
        return _render(node[1], depth + 1) + "->" + _render(node[2], depth + 1) + "(…)"
    if k == "idx":
        return _render(node[1], depth + 1) + "[" + (_render(node[2], depth + 1) if node[2] else "") + "]"
    if k == "prop":
        return _render(node[1], depth + 1) + "->" + _render(node[2], depth + 1)
    if k == "bin":
        return (" " + node[1] + " ").join(_render(x, depth + 1) for x in node[2][:6])
    if k == "varvar":
        return "${" + _render(node[1], depth + 1) + "}"
    return "…"


# -- the scan -----------------------------------------------------------------------------------
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


def _run_file(ctx: Ctx, src: str, php_mode: bool) -> None:
    toks, stats = tokenize(src, ctx.budget, php_mode)
    ctx.stats = stats  # type: ignore[attr-defined]
    ctx.namespace = any(t == ("id", "namespace") for t in toks[:400])  # type: ignore[attr-defined]
    stmts, classes, deep = parse(toks, ctx.budget)
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


def _register(ctx: Ctx, stmts: list, classes: list[ClassDef]) -> None:
    stack = [stmts]
    while stack:
        for st in stack.pop():
            if st[0] == "func":
                ctx.funcs.setdefault(st[1].name, st[1])
                stack.append(st[1].body)
            elif st[0] == "block":
                stack.append(st[1])
    for c in classes:
        ctx.classes[c.name] = c
        for name, fd in c.methods.items():
            ctx.methods.setdefault(name, []).append(fd)
            stack.append(fd.body)
    while stack:  # functions declared inside methods
        for st in stack.pop():
            if st[0] == "func":
                ctx.funcs.setdefault(st[1].name, st[1])
            elif st[0] == "block":
                stack.append(st[1])
    for c in classes:
        for name, node in c.consts:
            ctx.consts[f"{c.name}::{name}"] = _ev(ctx, node, Scope())
        for name, node in c.props:
            if node is not None:
                ctx.props.setdefault(f"{c.name}->{name}", _ev(ctx, node, Scope()))


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
                if subj.t:
                    elem = V(elem.s, elem.t | subj.t, subj.d, elem.cls, elem.fn)
            else:
                elem = V(None, subj.t, subj.d)
            if st[3] is not None:
                _assign(ctx, st[3], elem, sc)
            if st[2] is not None:
                _assign(ctx, st[2], V(None, subj.t, subj.d), sc)
        elif k == "global":
            sc.globals.update(st[1])
        elif k == "const":
            for name, node in st[1]:
                ctx.consts[name.lower()] = _ev(ctx, node, sc)
        elif k == "func" or k == "class" or k == "html":
            pass


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
            return V(None, frozenset({sc.extracted}), True)
        if sc.func is None and name != "this":
            # with register_globals (PHP < 5.4, the era of many shells still in use) an
            # undefined variable at file level is request data: a weak source
            return V(None, frozenset({f"~${name} (register_globals)"}), True)
        return UNKNOWN
    return v


def _set(ctx: Ctx, name: str, v: V, sc: Scope) -> None:
    if name == "_SESSION":
        ctx.session_write = True
        ctx.session = V(v.s, ctx.session.t | _weak(v.t), bool(v.t))
        return
    if name in sc.globals and ctx.globals is not None:
        sc = ctx.globals
    st = sc.sticky.get(name, _EMPTY)
    if v.t:
        st = st | v.t
        sc.sticky[name] = st
    if st and not st <= v.t:
        v = V(v.s, v.t | st, v.d, v.cls, v.fn, v.h, v.chain)
    sc.vars[name] = v


def _strong(v: V) -> bool:
    """The value IS request data (not mixed, not only a register_globals guess)."""
    return v.d and any(not x.startswith(_WEAK) for x in v.t)


def _strongish(v: V) -> bool:
    """Carries request data (mixed or not), beyond register_globals guesses."""
    return any(not x.startswith(_WEAK) for x in v.t)


def _weak(t: frozenset) -> frozenset:
    return frozenset(x if x.startswith(_WEAK) else "~" + x for x in t)


def _assign(ctx: Ctx, target, v: V, sc: Scope) -> None:
    k = target[0]
    if k == "var":
        _set(ctx, target[1], v, sc)
    elif k == "varvar":
        name = _ev(ctx, target[1], sc)
        n = _sv(name)
        if n is not None:
            _set(ctx, n, v, sc)
        elif name.t:
            sc.extracted = sc.extracted or _label(name) + " (variable variable)"
    elif k == "idx":
        base = target[1]
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
        # an unknown value that carries request data may be a string: indexing it builds no array
        arr = cur.s if isinstance(cur.s, dict) else ({} if (cur.s is None and not cur.t) or cur.s == "" else None)
        if arr is not None and len(arr) < MAX_ARRAY:
            arr = dict(arr)
            if key is None:
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
            return V(THIS_FILE + ("(1) : eval()'d code" if ctx.decode_depth else ""))
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
        if n is not None and len(n) < 256:
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
        if v.chain:
            chain = chain + v.chain
    if known:
        total = sum(len(x) for x in strs)
        if total > MAX_CONST:
            return V(None, t, bool(t) and direct)
        return V("".join(strs), t, bool(t) and direct, chain=chain)
    return V(None, t, bool(t) and direct, chain=chain)


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
                return V(base.s[i])
            return V("")
    return V(None, base.t, base.d)


def _binary(ctx: Ctx, node, sc: Scope) -> V:
    op, items = node[1], node[2]
    if op == ".":
        return _concat(ctx, [_ev(ctx, x, sc) for x in items])
    vs = [_ev(ctx, x, sc) for x in items]
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
    if op in ("++", "--"):
        if v.t or v.s is None:
            return v
        if isinstance(v.s, str) and op == "++" and not _isnum(v.s):
            nv = V(_str_inc(v.s))  # PHP increments letters: "A"++ is "B", "Az"++ is "Ba"
        else:
            n = _num(v.s) if not isinstance(v.s, dict) else None
            nv = V(n + (1 if op == "++" else -1)) if n is not None else UNKNOWN
        if node[2][0] in ("var", "varvar", "idx"):
            _assign(ctx, node[2], nv, sc)
        return v
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


# -- calls --------------------------------------------------------------------------------------
def _call(ctx: Ctx, node, sc: Scope) -> V:
    callee, argn = node[1], node[2]
    if callee[0] == "name":
        return _named(ctx, callee[1].lower(), argn, None, node, sc)
    cv = _ev(ctx, callee, sc)
    return _dynamic(ctx, cv, argn, None, node, sc)


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
        return _named(ctx, name, argn, avs, node, sc, dynamic=True, via=via)
    if cv.cls:
        args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
        return _invoke_method(ctx, cv.cls, "__invoke", args, cv)
    args = avs if avs is not None else [_ev(ctx, a, sc) for a in argn]
    if cv.chain and not all(c.startswith("param:") for c in cv.chain) and \
            any(a.d and any(not x.startswith(_WEAK) for x in a.t) for a in args):
        d = _join(args)
        _raw(ctx, "php.computed-function", "critical", 0.6, _label(d), via or "$function(…)",
             f"{via + '(' if via else ''}{'('.join(reversed(cv.chain))}(…)({_show(d)}){')' if via else ''}",
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
    if cname not in ctx.classes:
        _callable_args(ctx, "new " + cname, args, node, sc)
    if cname in ctx.classes:
        fd = _find_method(ctx, cname, "__construct")
        obj = V(cls=cname)
        if fd is not None:
            _call_user(ctx, fd, args, obj)
        return obj
    return V(None, _EMPTY.union(*(a.t for a in args)) if args else _EMPTY, cls=cname or None)


def _call_user(ctx: Ctx, fd: FuncDef, args: list[V], this: V | None, captured=None) -> V:
    ctx.analysed.add(id(fd))
    shape = tuple((a.s if isinstance(a.s, (str, int)) and (not isinstance(a.s, str) or len(a.s) < 512) else None,
                   a.t, a.d) for a in args[:8])
    key = (id(fd), shape, this.cls if this else None)
    if key in ctx.memo:
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
    sc.vars["__args"] = V(dict(enumerate(args)), _EMPTY.union(*(a.t for a in args)) if args else _EMPTY)
    ctx.call_depth += 1
    try:
        _stmts(ctx, fd.body, sc)
    finally:
        ctx.call_depth -= 1
    ret = _join(sc.returns)
    ctx.memo[key] = ret
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
    if fd is not None:
        return _call_user(ctx, fd, args, None)
    ctx.calls[name] += 1
    a0 = args[0] if args else UNKNOWN
    if name in EXEC_SINKS:
        data = _join(args[:2]) if name in ("proc_open", "pcntl_exec") else a0
        _sink(ctx, "exec", name, data, node, sc, args, via)
        _feature_cmd(ctx, a0)
        return V(None, data.t, data.d)
    if name in CODE_SINKS:
        code = args[1] if name == "create_function" and len(args) > 1 else a0
        if name == "create_function" and args and args[0].t:
            code = _join([args[0], code])
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
    if name == "mail" and len(args) >= 3 and _strongish(a0) and _strongish(args[2]):
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
    if name in _CLEAN:
        if name in FOLDABLE and all(a.s is not None and not a.t for a in args) and args:
            r = fold(name, [a.s if not isinstance(a.s, dict) else _plain(a.s) for a in args], 0)
            return V(r) if r is not NOTHING else UNKNOWN
        return UNKNOWN
    if name == "array_map" and False:
        return UNKNOWN
    t = _EMPTY.union(*(a.t for a in args)) if args else _EMPTY
    if name in FOLDABLE and args:
        if not t and all(a.s is not None for a in args):
            return _fold(ctx, name, args)
        d = a0.d if name in DECODERS or name in ("gzinflate", "gzuncompress", "gzdecode") else False
        chain = a0.chain + (name,) if name in _PACKERS else a0.chain
        return V(None, t, d, chain=chain)
    if name in ("array_values", "array_merge", "array_slice", "array_diff", "array_pop", "array_shift", "end", "reset",
                "current", "next", "array_rand", "array_keys", "array_unique", "array_flip", "array_combine",
                "compact", "array_change_key_case"):
        return _array_fn(name, args, t)
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
    elif pat.t and pat.d:
        _raw(ctx, "php.request-regex", "high", 0.7, _label(pat), name, f"{name}({_show(pat)}, …)",
             "the pattern (and so the /e modifier) comes from the request")
    t = _EMPTY.union(*(a.t for a in args[1:3]))
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
        return UNKNOWN
    return None


def _write(ctx: Ctx, name: str, path: V, data: V, node, sc: Scope) -> None:
    p = _sv(path) if not isinstance(path.s, dict) else None
    php_path = p is not None and p.lower().rstrip().endswith(_PHP_EXT)
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
        elif php_path and remote:
            conf, why = 0.45, "downloaded content written to a script file"
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
    if code and p is not None and p.lower().rstrip().endswith((".htaccess", ".user.ini")) and any(
            d in code.lower() for d in _HT_DIRECTIVES):
        _raw(ctx, "php.htaccess-drop", "high", 0.7, "", name, f"{name}({_q(p)}, {_q(code, 100)})",
             "writes a server configuration that makes more files run as code")
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
        s = _sv(a0) if not isinstance(a0.s, dict) else None
        if s and ctx.calls.keys() & _SOCKETS and any(x in s for x in ("/bin/sh", "/bin/bash", "cmd.exe", "sh -i")):
            _raw(ctx, "php.reverse-shell", "critical", 0.85, "socket", sink_txt, _snip(sink, args, via),
                 "a shell is started on a network socket", family="reverse-shell")
        return
    code = _sv(v) if not isinstance(v.s, dict) else None
    if code:
        _code(ctx, sink_txt, code, v, sc)
    elif v.s is None and (set(v.chain) & _PACKERS):
        # code that a decoder produced from data this reader could not compute (a loop, a file)
        big = ctx.stats.get("longest", 0) if isinstance(getattr(ctx, "stats", None), dict) else 0
        conf = 0.5 + (0.1 if big >= 1000 else 0.0)
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
    if not found and v.chain:
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


def _raw(ctx: Ctx, rule: str, sev: str, conf: float, source: str, sink: str, snippet: str, why: str,
         family: str = "", extra: dict | None = None) -> None:
    if conf >= 0.5:
        ctx.strong += 1
    key = (rule, source, sink, snippet[:80])
    if key in ctx.seen:
        return
    ctx.seen.add(key)
    if len(ctx.raw) >= 64:
        return
    chain = " > ".join(ctx.chain)
    ctx.raw.append({"rule": rule, "sev": sev, "conf": conf, "source": source, "sink": sink,
                    "snippet": snippet, "why": why + (f" (decoded from {chain})" if chain else ""),
                    "family": family, "extra": extra or {}, "depth": ctx.decode_depth})


# -- families and confidence --------------------------------------------------------------------
_SEV = {"critical": Severity.CRITICAL, "high": Severity.HIGH, "medium": Severity.MEDIUM, "low": Severity.LOW}


def _guards(ctx: Ctx) -> tuple[bool, bool]:
    names = [n.lower() for n in ctx.calls]
    auth = any(a in n for n in names for a in _AUTH)
    framework = getattr(ctx, "namespace", False) or any(
        n.startswith(f) and (len(f) > 2 or n == f) for n in names for f in _FRAMEWORK)
    return auth, framework


def _finish(ctx: Ctx, hits: list) -> None:
    auth, framework = _guards(ctx)
    calls = ctx.calls
    code_hit = any(r["rule"] == "php.request-to-code" and r["conf"] >= 0.5 for r in ctx.raw)
    library = len(ctx.funcs) + sum(len(ms) for ms in ctx.methods.values()) >= 8
    small = ctx.size < 4096
    # the exec fallback chain (exec, else shell_exec, else system, else passthru ...) probed with
    # function_exists: how shells survive disable_functions; ordinary code picks one way to run a command
    fallback = len(ctx.probes) >= 2 and len((calls.keys() & EXEC_SINKS) | ctx.probes) >= 3 and not framework
    for r in ctx.raw:
        fam = r["family"]
        conf = r["conf"]
        if fallback and r["rule"] in ("php.request-to-exec", "php.request-include", "php.request-to-code") \
                and conf < 0.5 and r["source"]:
            conf += 0.2
        if r["rule"] == "php.uploader":
            conf = 0.75 if r["extra"].get("dest_tainted") else 0.45
            if ctx.size < 3000:
                conf += 0.15  # an uploader alone in a small file is what a dropped uploader looks like
            dest = r["extra"].get("dest", "").lower()
            if dest and not dest.endswith(_PHP_EXT) and not r["extra"].get("dest_tainted"):
                conf = 0.3
            if any(n in calls for n in ("getimagesize", "finfo_open", "finfo_file", "mime_content_type",
                                        "exif_imagetype", "pathinfo", "wp_handle_upload", "imagecreatefromstring")):
                conf -= 0.25
            if auth:
                conf -= 0.35
            if framework:
                conf -= 0.25
            if conf < 0.5 and (calls.keys() & EXEC_SINKS or ctx.req_fs - {"move_uploaded_file", "copy"}):
                conf = max(conf, 0.0)
            fam = fam or "uploader"
        elif r["rule"] in ("php.request-file-write", "php.mailer"):
            if framework or auth:
                conf -= 0.3
            if r["rule"] == "php.mailer" and ctx.classes:
                conf -= 0.3  # mass mailers are flat scripts; a class that mails (a plugin) is an application
        if r["rule"] in ("php.request-to-code", "php.request-function", "php.request-class", "php.request-method") \
                and framework and conf < 0.95:
            conf -= 0.3  # framework code with request data somewhere in a long flow: our taint over-reaches
        elif r["rule"] in ("php.request-to-code", "php.obfuscated-eval"):
            if ctx.decrypt_taint and (ctx.session_write or "openssl_decrypt" in calls):
                fam = fam or "behinder"
            elif ctx.xor_taint and ctx.session_write:
                fam = fam or "godzilla"
            elif r["rule"] == "php.request-to-code" and small and r["conf"] >= 0.9 and not ctx.classes \
                    and not ctx.funcs and r["source"].startswith(("$_POST", "$_GET", "$_REQUEST", "$_COOKIE")):
                fam = fam or "china-chopper"
        elif r["rule"] == "php.request-include":
            if framework or auth:
                conf -= 0.3
        if r["rule"] in ("php.request-to-exec",) and (framework and auth):
            conf -= 0.2
        if r["rule"] == "php.eval-wrapper" and (library or framework or auth):
            conf -= 0.3
        if r["rule"] == "php.request-to-code" and not r["extra"].get("direct") and library:
            # request data mixed into code deep inside a library (a template engine compiling its
            # templates): our flow-insensitive taint over-reaches there; shells eval the request itself
            conf -= 0.45
        conf = max(0.0, min(1.0, conf))
        hits.append(Hit(rule=r["rule"], language="php", severity=_SEV[r["sev"]], confidence=round(conf, 3),
                        source=r["source"], sink=r["sink"], snippet=clip(r["snippet"]), family=fam,
                        detail=r["why"]))
    fm = _file_manager(ctx, auth, framework)
    if fm is not None:
        hits.append(fm)
    if not code_hit and ctx.decrypt_taint and ctx.session_write and calls.keys() & {"eval", "assert"}:
        hits.append(Hit(rule="php.encrypted-payload", language="php", severity=Severity.CRITICAL, confidence=0.8,
                        source="request body", sink="eval", snippet="openssl_decrypt(request, session key) -> eval",
                        family="behinder", detail="decrypts the request with a session key and runs it"))
    if ctx.too_deep:
        hits.append(Hit(rule="php.nesting", language="php", severity=Severity.LOW, confidence=0.3,
                        detail="nesting deeper than the reader follows"))


def _file_manager(ctx: Ctx, auth: bool, framework: bool) -> Hit | None:
    calls = ctx.calls
    fs = ctx.req_fs
    score = 0.14 * min(len(fs), 4)
    if calls.keys() & _DIR_LIST:
        score += 0.12
    if ctx.req_read:
        score += 0.1
    if ctx.req_dir:
        score += 0.1
    sysinfo = len(calls.keys() & _SYSINFO)
    score += 0.05 * min(sysinfo, 4)
    if calls.keys() & EXEC_SINKS:
        score += 0.1
    if len((calls.keys() & EXEC_SINKS) | ctx.probes) >= 3:
        score += 0.15
    recon = sum(1 for s in ctx.strings for r in _RECON if r in s)
    if recon:
        score += 0.1
    if any(r["rule"] in ("php.request-to-exec", "php.request-to-code") for r in ctx.raw):
        score += 0.1
    if auth:
        score -= 0.3
    if framework:
        score -= 0.25
    if len(fs) < 2 and not ((ctx.req_read or ctx.req_dir) and calls.keys() & _DIR_LIST):
        score = min(score, 0.45)
    if ctx.req_dir and ctx.size < 4096 and not auth and not framework:
        score = max(score, 0.5)  # a small page that lists any directory the request names
    if score < 0.35:
        return None
    score = min(score, 0.95)
    return Hit(rule="php.file-manager", language="php", severity=Severity.HIGH, confidence=round(score, 3),
               source="request paths", sink=", ".join(sorted(fs)) or "file reads",
               snippet=clip("file operations on request paths: " + ", ".join(sorted(fs | ctx.req_read | ctx.req_dir))
                            + (f"; system info: {sysinfo} calls" if sysinfo else "")),
               family="file-manager", detail="changes and lists files the request names (c99/r57/WSO style)")
