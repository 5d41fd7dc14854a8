"""ColdFusion, Perl CGI and Python CGI reader.

Each language is brought to the token shape of jsp_lex and taint-tracked by jsp_flow:
- CFML: tags become calls (`<cfexecute name="#form.cmd#">` is `cfexecute(form.cmd)`, `<cffile
  action="write" file=... output=...>` is `cffile_write(...)`), `#expr#` in text becomes an
  expression and `<cfscript>` is read as script; sources are the form/url/cookie scopes and
  getHttpRequestData(); sinks cfexecute, evaluate(), Runtime.exec through createObject("java"),
  file writes, uploads and file-manager actions.
- Perl: a small lexer (POD, comments, interpolated strings, backticks and qx, q/qq, here-docs)
  with the sigils dropped; sources param(), %ENV's CGI variables and STDIN; sinks system, exec,
  backticks/qx, open with a pipe and string eval.
- Python: the standard tokenizer; sources cgi.FieldStorage, os.environ's CGI variables,
  sys.stdin and framework request objects; sinks os.system/popen, subprocess, exec/eval."""

from __future__ import annotations

import ast
import io
import re
import tokenize

from agent.imagegate.webshell import jsp_flow, jsp_lex
from agent.imagegate.webshell.common import Hit, clip
from agent.vocab import Severity

_I = re.I
_S = jsp_flow.Sink

# --- ColdFusion ------------------------------------------------------------------------------

CFM_SOURCES = [re.compile(p, _I) for p in (
    r"\b(?:form|url|cookie)\.\w+", r"\b(?:form|url|cookie)\[", r"\bgetHttpRequestData\(\)",
    r"\bcgi\.(?:query_string|http_\w+|path_info)\b",
)]
CFM_SINKS = [
    _S(re.compile(r"\bcfexecute\(", _I), "cfexecute", "exec"),
    _S(re.compile(r"\b(?:evaluate|precisionEvaluate|iif|de)\(", _I), "evaluate", "eval"),
    _S(re.compile(r"\.exec\(", _I), "Runtime.exec", "exec", needs=re.compile(r"runtime", _I)),
    _S(re.compile(r"\bcreateObject\(", _I), "createObject", "eval"),
    _S(re.compile(r"\bcfquery_whole\(", _I), "cfquery", "sql"),
    _S(re.compile(r"\bcffile_(?:write|append|upload|uploadall)\(|\bfileWrite\(", _I), "cffile write", "write"),
    _S(re.compile(r"\bcffile_(?:delete|rename|move|copy|read|readbinary)\(|\bcfdirectory_\w+\(|\bfile(?:Delete|Move"
                  r"|Copy|Read)\(|\bdirectoryList\(", _I), "cffile", "files"),
]
CFM = jsp_flow.Lang("cfml", CFM_SOURCES, CFM_SINKS, flags=_I)

_CF_COMMENT = re.compile(r"<!---.*?(?:--->|\Z)", re.S)
_CF_SCRIPT = re.compile(r"<cfscript\b[^>]*>(.*?)(?:</cfscript\s*>|\Z)", re.S | re.I)
_CF_TAG = re.compile(r"<cf(\w+)\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>", re.I)
_CF_ATTR = re.compile(r"""(\w+)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""")
_CF_HASH = re.compile(r"#([^#\n]{1,400})#")
_CF_QUERY = re.compile(r"<cfquery\b[^>]*>(.*?)</cfquery\s*>", re.S | re.I)


def _cf_value(v: str) -> str:
    """An attribute value as an expression: "#form.x#" -> form.x, "a #b# c" -> "a " & b & " c"."""
    if v[:1] in "\"'":
        v = v[1:-1]
    parts = []
    last = 0
    for m in _CF_HASH.finditer(v):
        if m.start() > last:
            parts.append(_quote(v[last:m.start()]))
        parts.append("(" + m.group(1) + ")")
        last = m.end()
    if last < len(v) or not parts:
        parts.append(_quote(v[last:]))
    return " + ".join(parts)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cfml_code(text: str, budget) -> str:
    text = _CF_COMMENT.sub(" ", text)
    out = []
    for m in _CF_SCRIPT.finditer(text):
        out.append(m.group(1))
    rest = _CF_SCRIPT.sub(" ", text)
    for m in _CF_TAG.finditer(rest):
        budget.spend(0)
        tag = m.group(1).lower()
        body = m.group(2)
        if tag in ("set", "if", "elseif", "return"):
            out.append(body.strip() + ";")
            continue
        attrs = {k.lower(): _cf_value(v) for k, v in _CF_ATTR.findall(body)}
        if tag == "execute":
            out.append("cfexecute(" + attrs.get("name", '""') + ", " + attrs.get("arguments", '""') + ");")
        elif tag in ("file", "directory"):
            action = re.sub(r"\W", "", attrs.get("action", '"read"' if tag == "file" else '"list"')).lower() or "read"
            args = [attrs[k] for k in ("file", "source", "destination", "directory", "output", "filefield")
                    if k in attrs]
            out.append(f"cf{tag}_{action}(" + (", ".join(args) or '""') + ");")
        elif tag == "invoke" or tag == "object":
            out.append("createObject(" + (", ".join(attrs.values()) or '""') + ");")
    for m in _CF_QUERY.finditer(rest):
        # a query that is one request value from end to end: a SQL console (not a query with values in it)
        body = m.group(1).strip()
        if _CF_HASH.fullmatch(body):
            out.append(f"cfquery_whole({body[1:-1]});")
    for m in _CF_HASH.finditer(_CF_TAG.sub(" ", rest)):
        out.append(f"out({m.group(1)});")
    return "\n".join(out)


# --- Perl ------------------------------------------------------------------------------------

PERL_SOURCES = [re.compile(p) for p in (
    r"(?<![$\w])param\(", r"->(?:param|url_param|Vars|upload|cookie)\(", r"\bCGI::(?:param|Vars)\b",
    r"\$ENV\{\"?(?:QUERY_STRING|HTTP_\w+|CONTENT_\w+|REQUEST_URI|PATH_INFO|REQUEST_METHOD)\"?\}",
    r"<STDIN>", r"(?<![$\w])STDIN\b", r"\bReadParse\(", r"(?<![$\w])recv\(",
)]
PERL_SINKS = [
    _S(re.compile(r"(?<![$\w])(?:system|exec)\b"), "system", "exec", rest=True),
    _S(re.compile(r"(?<![$\w])qx\("), "backticks", "exec"),
    _S(re.compile(r"(?<![$\w])open[23]\b"), "IPC::Open3", "exec", rest=True),
    _S(re.compile(r"(?<![$\w])open\b"), "open", "open", rest=True),
    _S(re.compile(r"(?<![$\w])eval\b(?!\{)"), "eval", "eval", rest=True),
]
PERL = jsp_flow.Lang("perl", PERL_SOURCES, PERL_SINKS, breaks=frozenset({";"}), extra={"hash_index": True})

_PERL_TOKEN = re.compile(
    r"""
    (?P<pod>^=[a-zA-Z].*?(?:^=cut\b[^\n]*|\Z))
  | (?P<end>^__(?:END|DATA)__\b.*)
  | (?P<ws>\s+)
  | (?P<cm>\#[^\n]*)
  | (?P<heredoc><<\s*(?P<hq>["']?)(?P<hid>[A-Za-z_]\w*)(?P=hq)[^\n]*\n(?P<hbody>.*?)^(?P=hid)\s*$)
  | (?P<dq>"(?:[^"\\]|\\.)*"?)
  | (?P<sq>'(?:[^'\\]|\\.)*'?)
  | (?P<bt>`(?:[^`\\]|\\.)*`?)
  | (?P<qop>\b(?:qq|qx|qw|q)\s*(?P<qd>[^\w\s]))
  | (?P<re>(?<=[=!]~)\s*(?:m|s|tr|y)?\s*(?P<rd>[/{#|!(\[]))
  | (?P<var>[$@%]\{\^?\w+\}|[$@%&]\#?\^?\w+(?:::\w+)*|\$[^\w\s{])
  | (?P<num>0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?)
  | (?P<id>[A-Za-z_]\w*(?:::\w+)*)
  | (?P<op>=>|->|=~|!~|==|!=|<=|>=|&&|\|\||\.=|\+=|\S)
    """,
    re.S | re.M | re.X,
)
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_INTERP = re.compile(r"[$@]\{?(\w+(?:::\w+)*)\}?((?:(?:->)?[\[{][^\]}\s]{0,40}[\]}])*)")


def _delimited(code: str, i: int, d: str) -> tuple[str, int]:
    """Body of a quote-like operator whose opening delimiter d sits before code[i]; (body, end)."""
    close = _PAIRS.get(d, d)
    depth = 1
    j = i
    while j < len(code):
        c = code[j]
        if c == "\\":
            j += 2
            continue
        if c == d and close != d:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return code[i:j], j + 1
        j += 1
    return code[i:], len(code)


def _interp(body: str, toks: list) -> None:
    """An interpolating string as a parenthesised concatenation of its text and variables."""
    toks.append(("o", "("))
    last = 0
    first = True
    for m in _INTERP.finditer(body):
        if not first:
            toks.append(("o", "+"))
        first = False
        toks.append(("s", body[last:m.start()]))
        toks.append(("o", "+"))
        toks.append(("i", "$" + m.group(1)))
        if m.group(2):
            key = re.sub(r"[\[\]{}'\"]|->", "", m.group(2))
            toks.extend([("o", "{"), ("s", key), ("o", "}")])
        last = m.end()
    if not first:
        toks.append(("o", "+"))
    toks.append(("s", body[last:]))
    toks.append(("o", ")"))


def perl_lex(code: str, budget) -> list:
    toks: list = []
    budget.spend(len(code))
    i = 0
    n = len(code)
    count = 0
    while i < n:
        count += 1
        if not count & 0xFFF:
            budget.spend(0)
        m = _PERL_TOKEN.match(code, i)
        if m is None:
            i += 1
            continue
        kind = m.lastgroup if m.lastgroup not in ("hq", "hid", "hbody", "qd", "rd") else None
        for g in ("pod", "end", "ws", "cm", "heredoc", "dq", "sq", "bt", "qop", "re", "var", "num", "id", "op"):
            if m.group(g) is not None:
                kind = g
                break
        t = m.group(kind)
        i = m.end()
        if kind in ("pod", "ws", "cm"):
            continue
        if kind == "end":
            break
        if kind == "heredoc":
            body = m.group("hbody")
            if m.group("hq") == "'":
                toks.append(("s", body))
            else:
                _interp(body, toks)
        elif kind == "dq":
            _interp(t[1:-1] if len(t) > 1 and t.endswith('"') else t[1:], toks)
        elif kind == "sq":
            toks.append(("s", (t[1:-1] if len(t) > 1 and t.endswith("'") else t[1:]).replace("\\'", "'")))
        elif kind == "bt":
            toks.extend([("i", "qx"), ("o", "(")])
            _interp(t[1:-1] if len(t) > 1 and t.endswith("`") else t[1:], toks)
            toks.append(("o", ")"))
        elif kind == "qop":
            op = t.split()[0].rstrip(m.group("qd")).strip()
            body, i = _delimited(code, i, m.group("qd"))
            if op == "qx":
                toks.extend([("i", "qx"), ("o", "(")])
                _interp(body, toks)
                toks.append(("o", ")"))
            elif op == "qq":
                _interp(body, toks)
            else:
                toks.append(("s", body))
        elif kind == "re":
            d = m.group("rd")
            body, i = _delimited(code, i, d)
            if re.match(r"\s*(?:s|tr|y)\b", t):
                if d in _PAIRS:
                    rest = re.match(r"\s*([^\w\s])", code[i:])
                    if rest:
                        _b2, i = _delimited(code, i + rest.end(), rest.group(1))
                else:
                    _b2, i = _delimited(code, i, d)
            while i < n and code[i].isalpha():
                i += 1  # flags
            toks.append(("s", body))
        elif kind == "var":
            # one name per variable whatever its sigil: $x[0] is an element of @x, $h{k} of %h
            name = t.lstrip("$@%&#").strip("{}^")
            toks.append(("i", "$" + name if name and t[0] != "&" else name or t))
        elif kind == "num":
            toks.append(("n", int(t, 16) if t[:2].lower() == "0x" else int(float(t))))
        elif kind == "id":
            toks.append(("i", t))
        else:
            toks.append(("o", t))
            if t in ("=~", "!~"):
                r = re.compile(r"\s*(m|s|tr|y)?\s*([^\w\s])").match(code, i)
                if r:
                    body, i = _delimited(code, r.end(), r.group(2))
                    if r.group(1) in ("s", "tr", "y"):
                        d = r.group(2)
                        if d in _PAIRS:
                            rest = re.compile(r"\s*([^\w\s])").match(code, i)
                            if rest:
                                _b2, i = _delimited(code, rest.end(), rest.group(1))
                        else:
                            _b2, i = _delimited(code, i, d)
                    while i < n and code[i].isalpha():
                        i += 1  # flags
                    toks.append(("s", body))
    return toks


# --- Python ----------------------------------------------------------------------------------

PY_SOURCES = [re.compile(p) for p in (
    r"\b(?:cgi\.)?FieldStorage\(", r"\bos\.environ(?:\.get\(|\[)\"(?:QUERY_STRING|HTTP_\w+|CONTENT_\w+|REQUEST_URI"
    r"|PATH_INFO)\"", r"\bsys\.stdin\b",
    r"\brequest\.(?:args|form|values|data|json|files|cookies|headers|get_json|GET|POST|body|query_params"
    r"|get_data|params|query)\b",
    r"\.(?:getvalue|getfirst|getlist)\(", r"\.recv\(",
)]
PY_SINKS = [
    _S(re.compile(r"\bos\.(?:system|popen\d?|exec\w*|spawn\w*)\(|\bsubprocess\.\w+\(|\bcommands\.get\w+\("
                  r"|\bpty\.spawn\(|\bpopen2\.\w+\("), "os.system/subprocess", "exec"),
    _S(re.compile(r"(?<![.\w])(?:eval|exec|compile|execfile)\("), "eval/exec", "eval"),
    _S(re.compile(r"\b__import__\("), "__import__", "eval"),
]
PY = jsp_flow.Lang("python", PY_SOURCES, PY_SINKS, breaks=frozenset({";"}), func_kw=frozenset({"def"}))
_FSTR = re.compile(r"\{([A-Za-z_][\w.]*)[^{}]*\}")


def py_lex(code: str, budget) -> list:
    budget.spend(len(code))
    toks: list = []
    try:
        for k, t in enumerate(tokenize.generate_tokens(io.StringIO(code).readline)):
            if not k & 0xFFF:
                budget.spend(0)
            typ, s = t.type, t.string
            if typ in (tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING):
                continue
            if typ in (tokenize.NEWLINE, tokenize.NL):
                if toks and toks[-1] != ("o", ";"):
                    toks.append(("o", ";"))
            elif typ == tokenize.NAME:
                toks.append(("i", s))
            elif typ == tokenize.NUMBER:
                try:
                    toks.append(("n", int(s, 0)))
                except ValueError:
                    toks.append(("n", 0))
            elif typ == tokenize.STRING:
                _py_string(s, toks)
            elif typ == tokenize.OP:
                toks.append(("o", s))
            elif getattr(tokenize, "FSTRING_START", None) is not None and typ in (
                    tokenize.FSTRING_START, tokenize.FSTRING_MIDDLE, tokenize.FSTRING_END):
                toks.append(("s", s) if typ == tokenize.FSTRING_MIDDLE else ("o", "+"))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a broken file: what was read so far
    return toks


def _py_string(s: str, toks: list) -> None:
    prefix = re.match(r"[A-Za-z]*", s).group().lower()
    if "f" in prefix:
        body = s[len(prefix):].strip("\"'")
        toks.append(("o", "("))
        last = 0
        for m in _FSTR.finditer(body):
            toks.extend([("s", body[last:m.start()]), ("o", "+"), ("i", m.group(1).split(".")[0]), ("o", "+")])
            last = m.end()
        toks.extend([("s", body[last:]), ("o", ")")])
        return
    try:
        v = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        v = s.strip("\"'")
    toks.append(("s", v if isinstance(v, str) else v.decode("latin-1") if isinstance(v, bytes) else str(v)))


# --- reading ---------------------------------------------------------------------------------

_SEV = {"exec": Severity.CRITICAL, "eval": Severity.CRITICAL, "write": Severity.HIGH, "files": Severity.HIGH,
        "open": Severity.CRITICAL, "sql": Severity.HIGH}
_RULE = {"exec": "request-to-exec", "eval": "request-to-eval", "write": "request-to-file-write",
         "files": "file-manager", "open": "request-to-exec", "sql": "sql-console"}


def scan(data: bytes, lang: str, budget, hits: list) -> None:
    text = data.decode("utf-8", "replace")
    if lang == "cfm":
        code = cfml_code(text, budget)
        toks = jsp_lex.fold(jsp_lex.lex(code, budget, single_quote_string=True), budget)
        prog = jsp_flow.Program(toks, CFM, budget)
    elif lang == "perl":
        toks = jsp_lex.fold(perl_lex(text, budget), budget)
        prog = jsp_flow.Program(toks, PERL, budget)
        bufs = re.findall(r"\b(?:read|sysread)\(STDIN,(\$\w+)", prog.text)
        if bufs:
            prog.seed(bufs, "STDIN")
    elif lang == "python":
        toks = jsp_lex.fold(py_lex(text, budget), budget)
        prog = jsp_flow.Program(toks, PY, budget)
    else:
        return
    found = _judge(prog, lang)
    seen: dict[tuple[str, str], Hit] = {}
    for h in found:
        k = (h.rule, h.sink)
        if k not in seen or h.confidence > seen[k].confidence:
            seen[k] = h
    hits.extend(sorted(seen.values(), key=lambda h: -h.confidence))


_SOCKET = re.compile(r"\b(?:socket\(|IO::Socket|socket\.socket\(|SOCK_STREAM)")
_SHELL = re.compile(r"/bin/(?:ba|z|k|c|tc)?sh\b|\bcmd(?:\.exe)?\b|-i\b|\$shell\b|\bshell\b", _I)
_FILE_ACTIONS = re.compile(r"\b(cf(?:file|directory)_\w+)\(|\bfile(Delete|Move|Copy|Read|Write)\(|\b(directoryList)\(",
                           _I)


def _judge(prog: jsp_flow.Program, lang: str) -> list[Hit]:
    found = []
    has_source = any(s is not None for s in prog.src)
    for f in prog.flows():
        k = f.sink.kind
        if k == "open":
            # open() runs a command only through a pipe: "cmd |", "| cmd", "-|"
            pipe = any(t[0] == "s" and (t[1].strip().startswith("|") or t[1].strip().endswith("|")
                                        or t[1].strip() in ("-|", "|-"))
                       for t in prog.toks[f.start:f.end])
            if not pipe:
                continue
        if f.state == "tainted":
            conf = {"exec": 0.95, "eval": 0.9, "write": 0.6, "files": 0.4, "open": 0.9, "sql": 0.7}[k]
            if k == "files":
                ops = {a.lower() for g in _FILE_ACTIONS.findall(prog.text) for a in g if a}
                if len(ops) < 2:
                    continue
                conf = 0.5 + 0.1 * min(len(ops), 4)
            if k == "eval" and f.sink.name == "createObject":
                conf = 0.7
        elif f.state != "tainted" and f.sink.name == "IPC::Open3" and has_source and _SHELL.search(f.snippet):
            conf = 0.7  # a shell kept open, its stdin fed from the request
        elif f.state in ("unknown", "constant") and k in ("exec", "open") and _SOCKET.search(prog.text) \
                and (f.state == "unknown" or _SHELL.search(f.snippet)):
            conf = 0.85  # a shell wired to a socket: a bind or reverse shell
        elif f.state == "unknown" and k in ("exec", "eval", "open"):
            conf = 0.45 if has_source else 0.3
            if f.sink.name == "createObject":
                continue
            if f.sink.name == "cfexecute":
                conf = 0.75  # CFML resolves an unscoped name through the url and form scopes
        else:
            continue
        rule = _RULE[k] if f.state == "tainted" else _RULE[k].replace("request-to-", "dynamic-")
        found.append(Hit(rule=f"{lang}.{rule}", language=lang,
                         severity=_SEV[k] if conf >= 0.5 else Severity.LOW, confidence=round(conf, 2),
                         source=clip(f.source, 80), sink=f.sink.name, snippet=clip(f.snippet), detail=f.state))
    return found
