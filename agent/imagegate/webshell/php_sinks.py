"""The PHP reader's vocabulary and values: PHP's request sources, code and command sinks and
callback-taking builtins; the abstract value `V` with the request sources (taint) it carries; the
per-file context and scopes; and how evidence is rendered and recorded (`_raw`). No analysis here:
php_eval and php_calls walk the code, php_families turns what they recorded into Hits."""

from __future__ import annotations

from collections import Counter

from agent.imagegate.webshell.common import Budget
from agent.imagegate.webshell.php_fold import to_str
from agent.imagegate.webshell.php_parse import ClassDef, FuncDef

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
           "php_version": "8.2.0", "php_os_family": "Linux",
           "pathinfo_dirname": 1, "pathinfo_basename": 2, "pathinfo_extension": 4, "pathinfo_filename": 8}

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

    __slots__ = ("s", "t", "d", "cls", "fn", "h", "chain", "tail", "head")

    def __init__(self, s=None, t=frozenset(), d=False, cls=None, fn=None, h=None, chain=(), tail="", head=""):
        self.s = s
        self.t = t
        self.d = d
        self.cls = cls
        self.fn = fn
        self.h = h
        self.chain = chain
        self.tail = tail  # an unknown string's known end ($_SERVER['DOCUMENT_ROOT'] . '/x.php')
        self.head = head  # and its known start (a payload written before a file's old contents)


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
        self.db_query = ""  # a whole SQL statement from the request (a database client page)
        self.db_connect = ""  # database credentials from the request
        self.db_dump = False  # lists a server's tables or databases (a dump tool)
        self.passwd_read = False  # reads /etc/passwd (the account list)
        self.home_walk = False  # touches /home/<account>/... paths built at run time
        self.byref: dict = {}  # memo key of a user-function analysis -> its by-reference parameters' final values
        self.last_call = None
        self.db_all = False  # reads every row (or the definition) of a table named at run time
        self.self_delete = False  # unlink(__FILE__): removes its own traces
        self.pw_gate = False  # compares a request value with a fixed password or its digest
        self.unrolled = 0  # for-loop iterations run with known values (bounded: MAX_UNROLL)
        self.precise = 0  # inside such an iteration: known conditions pick their branch
        self.opaque_args: list[str] = []  # constant strings handed to callees we could not name (bounded: 16)
        self.picked: set[str] = set()  # loop variables given one value of a constant list (see php_eval's foreach)
        self.shell_pipes: set[str] = set()  # `$pipes` of proc_open(<a shell>, …): its [0] is the shell's stdin


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


def _strong(v: V) -> bool:
    """The value IS request data (not mixed, not only a register_globals guess)."""
    return v.d and any(not x.startswith(_WEAK) for x in v.t)


def _strongish(v: V) -> bool:
    """Carries request data (mixed or not), beyond register_globals guesses."""
    return any(not x.startswith(_WEAK) for x in v.t)


def _computed(chain: tuple) -> bool:
    """The value was computed by obfuscation (a decoder, string XOR, the file's own name, a doc
    comment), not merely passed in as a parameter."""
    return any(not c.startswith("param:") for c in chain)


def _packed(chain: tuple) -> bool:
    """As _computed, less the file's own name: code that merely mentions __FILE__ is not packed."""
    return any(not c.startswith("param:") and c != "__FILE__" for c in chain)


def _weak(t: frozenset) -> frozenset:
    return frozenset(x if x.startswith(_WEAK) else "~" + x for x in t)

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
