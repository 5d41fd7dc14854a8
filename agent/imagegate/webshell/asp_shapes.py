"""Page-level shapes of classic ASP and ASP.NET tools that no single source-to-sink flow shows.

Each function reads one folded program (jsp_flow.Program) and appends Hits: a file browser over raw
request paths, a page that writes request data into itself, code pieced together from constants
through home-made decoders and then executed, an executable carried in the page and dropped, a
Serv-U local-admin exploit, a sweep of every registry hive, request-reading code hidden in base64,
and JScript.NET `eval(x, "unsafe")`. Benign pages keep their paths under Server.MapPath, never carry
a PE image, and never evaluate strings in unsafe mode, which is what keeps these below on them."""

from __future__ import annotations

import base64
import binascii
import re

from agent.imagegate.webshell import asp_vb, jsp_flow
from agent.imagegate.webshell.common import Hit, clip
from agent.vocab import Severity

_I = re.I
_CLOSURE_STMTS = 64  # statements followed back from one expression (bounded: a page may have thousands)


def closure(prog: jsp_flow.Program, a: int, b: int, depth: int = 4) -> list[tuple[int, int]]:
    """The statements assigning the names used in toks[a:b], followed back `depth` levels: where an
    expression's value came from, as token ranges."""
    toks = prog.toks
    key = prog._key
    names = {key(t[1]) for t in toks[a:b] if t[0] == "i"}
    seen: set[str] = set()
    out: list[tuple[int, int]] = []
    index = _assignments(prog)
    for _ in range(depth):
        new: set[str] = set()
        for n in names - seen:
            for sa, sb in index.get(n, ())[:8]:
                out.append((sa, sb))
                new |= {key(t[1]) for t in toks[sa:sb] if t[0] == "i"}
                if len(out) >= _CLOSURE_STMTS:
                    return out
        seen |= names
        names = new - seen
        if not names:
            break
    return out


def _assignments(prog: jsp_flow.Program) -> dict[str, list[tuple[int, int]]]:
    cached = getattr(prog, "_assign_index", None)
    if cached is not None:
        return cached
    toks = prog.toks
    index: dict[str, list[tuple[int, int]]] = {}
    for sa, sb in prog.stmts:
        # `x = ...`, `Set x = ...`, `var x = ...`, `String x = ...`: the name right before the first '='
        for k in range(sa, min(sb, sa + 6)):
            if toks[k] == ("o", "=") and k > sa and toks[k - 1][0] == "i":
                index.setdefault(prog._key(toks[k - 1][1]), []).append((sa, sb))
                break
    prog._assign_index = index  # type: ignore[attr-defined]
    return index


def _strings(prog, spans) -> list[str]:
    return [str(t[1]) for sa, sb in spans for t in prog.toks[sa:sb] if t[0] == "s"]


# --- code pieced together from constants -------------------------------------------------------

_REQ_CODE = re.compile(r"\brequest\s*(?:\.\s*(?:form|querystring|item|params|cookies)\s*)?[(\[]"
                       r"|\brequest\.(?:binaryread|inputstream)\b|\.getParameter\(", _I)


def _replace_pairs(prog: jsp_flow.Program, spans) -> list[tuple[str, str]]:
    """(old, new) of the Replace()/Split() calls in the spans and in the bodies of the page's own
    functions they call: a home-made decoder of the constants."""
    toks = prog.toks
    pairs: list[tuple[str, str]] = []
    bodies = list(spans)
    for sa, sb in spans:
        for k in range(sa, sb - 1):
            t = toks[k]
            if t[0] == "i" and toks[k + 1] == ("o", "(") and prog._key(t[1]) in prog.funcs:
                _p, fa, fb = prog.funcs[prog._key(t[1])]
                bodies.append((fa, min(fb, fa + 2000)))
    for sa, sb in bodies:
        for k in range(sa, sb - 1):
            t = toks[k]
            if t[0] != "i" or t[1].lower() not in ("replace", "split") or toks[k + 1] != ("o", "("):
                continue
            j = prog.close(k + 1)
            segs = prog._split(k + 2, j)
            vals = [toks[s0][1] if s1 - s0 == 1 and toks[s0][0] == "s" else None for s0, s1 in segs]
            if t[1].lower() == "replace" and len(vals) >= 3 and isinstance(vals[1], str) and vals[1] \
                    and isinstance(vals[2], str):
                pairs.append((vals[1], vals[2]))
            elif t[1].lower() == "split" and len(vals) >= 2 and isinstance(vals[1], str) and vals[1]:
                pairs.append((vals[1], ""))  # split on a separator and joined back
            if len(pairs) >= 64:
                return pairs
    return pairs


_MAX_PIECED = 16  # Execute calls followed back per program: a page of thousands stays bounded


def pieced_eval(prog: jsp_flow.Program, f: jsp_flow.Flow) -> tuple[float, str]:
    """Execute/Eval of a value built from constants through Replace/Split/unescape and the page's own
    replace-only decoders: (confidence, decoded text) when the decoded text reads the request."""
    calls = getattr(prog, "_pieced_calls", 0)
    if calls >= _MAX_PIECED:
        return 0.0, ""
    prog._pieced_calls = calls + 1  # type: ignore[attr-defined]
    spans = closure(prog, f.start, f.end)
    consts = [c for c in _strings(prog, spans + [(f.start, f.end)]) if len(c) >= 8][:32]
    if not consts:
        return 0.0, ""
    pairs = _replace_pairs(prog, spans + [(f.start, f.end)])
    prog.budget.spend(sum(len(c) for c in consts) * (len(pairs) + 2))
    cands = []
    for c in consts + ["".join(consts)]:
        c = c[:100000]
        for old, new in pairs:
            c = c.replace(old, new)
        cands.append(c)
        if "%" in c:
            cands.append(asp_vb.unescape(c))
    for c in cands:
        if _REQ_CODE.search(c) and re.search(r"\b(?:eval|execute|executeglobal|set|dim|createobject|response|\w+\s*=)",
                                             c, _I):
            return 0.8, c
    return 0.0, ""


# --- an executable carried in the page ---------------------------------------------------------

def dropper_pe(prog: jsp_flow.Program, found: list, lang: str) -> None:
    text = prog.text
    for t in prog.toks:
        if t[0] == "s" and len(t[1]) >= 64 and ("This program cannot be run in DOS mode" in t[1]
                                               or t[1].startswith("MZ\x90\x00")):
            if re.search(r"createtextfile|savetofile|\.write\b|WriteAllBytes|FileStream", text, _I):
                found.append(Hit(rule=f"{lang}.drops-executable", language=lang, severity=Severity.CRITICAL,
                                 confidence=0.85, sink="file write", snippet=clip(repr(t[1][:120])),
                                 detail="a Windows executable carried in the page, written to disk"))
            return


# --- file browser over raw request paths -------------------------------------------------------

_LIST = re.compile(r"getfolder|getfiles|getdirectories|directoryinfo|enumerate\w+|subfolders|getparent", _I)
_READ = re.compile(r"opentextfile\([^,)]*(?:,1\b|\))|readall|loadfromfile|writefile|transmitfile|readall\w*"
                   r"|openread|opentext|streamreader|getfile\b", _I)
_MODIFY = re.compile(r"delete|move|copy|rename|attributes|createfolder", _I)
_WRITE = re.compile(r"createtextfile|opentextfile\([^,)]*,\s*[28]|savetofile|streamwriter|filestream|writeall"
                    r"|appendall|createtext|saveas", _I)
_ROOTED = re.compile(r"mappath|getrealpath|physicalapplicationpath|app_data|\"~/|apppath|appdomain", _I)


_MAX_FLOWS = 200  # file flows followed back per program


_FALLBACK = re.compile(r"\?\?\s*(?:\w+\.)*(?:mappath|getrealpath|physicalapplicationpath)", _I)


def raw_path(prog: jsp_flow.Program, f: jsp_flow.Flow) -> bool:
    """The sink's arguments, and every assignment they come from, are free of Server.MapPath and kin. An
    assignment of a mapped path that holds no request data (`If p = "" Then p = Server.MapPath(".")`,
    `Request["d"] ?? Server.MapPath(".")`) is the default for an empty field, not a root the request's
    path is kept under."""
    if _ROOTED.search(_FALLBACK.sub(" ", f.snippet)):
        return False
    for sa, sb in closure(prog, f.start, f.end):
        code = _FALLBACK.sub(" ", prog.code(sa, sb))
        if not _ROOTED.search(code):
            continue
        eq = max((k for k in range(sa, sb) if prog.toks[k] == ("o", "=")), default=sa - 1)
        if prog.taint_of(eq + 1, sb) is not None:
            return False  # the request's value goes through MapPath (or is joined to a mapped root)
    return True


def raw_path_browser(prog: jsp_flow.Program, flows, found: list, lang: str) -> None:
    """Listing, reading, changing or writing files at paths the request names, none of them under
    Server.MapPath: a file browser of the whole disk. (A page that lets the request pick a file
    under its own folder maps the path first.)"""
    cats: dict[str, jsp_flow.Flow] = {}
    todo = [f for f in flows if f.state == "tainted" and f.sink.kind in ("files", "write", "writedata", "upload",
                                                                      "fsread")]
    for f in todo[:_MAX_FLOWS]:
        code = f.snippet
        if not raw_path(prog, f):
            continue
        for cat, pat in (("list", _LIST), ("read", _READ), ("modify", _MODIFY), ("write", _WRITE)):
            if pat.search(code):
                cats.setdefault(cat, f)
    if len(cats) < 2 or "list" not in cats:
        return  # reading or deleting a named file is an admin page's job too; a browser lists folders
    f = cats.get("modify") or cats.get("write") or cats.get("read") or cats["list"]
    found.append(Hit(rule=f"{lang}.file-browser", language=lang, severity=Severity.HIGH,
                     confidence=0.6 if len(cats) == 2 else 0.7, source=clip(f.source, 80), sink=f.sink.name,
                     snippet=clip(f.snippet), detail="files anywhere on disk, by request path: " +
                     ", ".join(sorted(cats))))


# --- a page that writes request data into itself ----------------------------------------------

_SELF = re.compile(r'servervariables[(\[]"(?:SCRIPT_NAME|PATH_INFO|URL|PATH_TRANSLATED)"'
                   r"|\.(?:PhysicalPath|FilePath|CurrentExecutionFilePath)\b", _I)
_OTHER_EXT = re.compile(r'"[^"]*\.(?:log|txt|dat|xml|csv|json|ini|bak|mdb|tmp|cache|html?)"', _I)
_PAGE_EXT = re.compile(r'"[^"]*\.(?:asp|aspx|asa|cer|ashx|asmx|config)"', _I)


def self_write(prog: jsp_flow.Program, flows, found: list, lang: str) -> None:
    """A file write whose path is the page's own (its SCRIPT_NAME or physical path) or a new server page
    beside it, with request data or a server page going in: a page that rewrites itself or plants one."""
    content = any(g.state == "tainted" and g.sink.kind in ("writedata", "write") for g in flows)
    for f in [g for g in flows if g.sink.kind in ("write", "writedata")][:_MAX_FLOWS]:
        spans = closure(prog, f.start, f.end)
        where = f.snippet + " " + " ".join(prog.code(sa, sb) for sa, sb in spans)
        if not _SELF.search(where) or _OTHER_EXT.search(where):
            continue  # (page.asp & ".log" is a log beside the page, not the page)
        if content or _PAGE_EXT.search(where):
            found.append(Hit(rule=f"{lang}.writes-itself", language=lang, severity=Severity.HIGH, confidence=0.65,
                             source=clip(f.source, 80), sink=f.sink.name, snippet=clip(f.snippet),
                             detail="writes into its own page (or a server page beside it)"))
            return


_STUB = re.compile(r"<!--\s*#include\b|<%|\brunat\s*=\s*[\"']?server", _I)


def plants_page(prog: jsp_flow.Program, flows, found: list, lang: str) -> None:
    """A server page (.aspx, .asp ...) created with a short constant that is itself server code or an
    include of one: a stub planted to load a shell kept elsewhere. (A site that generates pages writes
    them from templates, not from a one-line constant.)"""
    stubs = [str(t[1]) for t in prog.toks if t[0] == "s" and len(t[1]) < 400 and _STUB.search(t[1])]
    if not stubs:
        return
    for f in flows:
        if f.sink.kind == "write" and _PAGE_EXT.search(f.snippet):
            found.append(Hit(rule=f"{lang}.plants-page", language=lang, severity=Severity.HIGH, confidence=0.6,
                             sink=f.sink.name, snippet=clip(f.snippet + " <- " + stubs[0]),
                             detail="creates a server page holding server code"))
            return


# --- known tools -------------------------------------------------------------------------------

_RAW_SOCKET = re.compile(r"\bSocketType\.Raw\b")
_RECEIVE_ALL = re.compile(r"\bIOControlCode\.ReceiveAll\b|\bSIO_RCVALL\b|\b0x98000001\b", _I)


def known_tools(prog: jsp_flow.Program, found: list, lang: str) -> None:
    strs = " ".join(str(t[1]) for t in prog.toks if t[0] == "s")[:400000]
    if re.search(r"SITE MAINTENANCE", strs, _I) and re.search(r"-SETUSERSETUP|site exec", strs, _I):
        found.append(Hit(rule=f"{lang}.serv-u-exploit", language=lang, severity=Severity.CRITICAL, confidence=0.8,
                         sink="Serv-U local administration", snippet=clip(_around(strs, "SITE MAINTENANCE")),
                         detail="talks to Serv-U's local admin port to add a user and run commands"))
    if _RAW_SOCKET.search(prog.text) and _RECEIVE_ALL.search(prog.text):
        # a raw socket switched to receive every packet of the interface: a password sniffer run from a page
        found.append(Hit(rule=f"{lang}.packet-sniffer", language=lang, severity=Severity.CRITICAL, confidence=0.75,
                         sink="raw socket, receive all", snippet=clip(_around(prog.text, "SocketType.Raw")),
                         detail="captures every packet on the server's network interface"))
    hives = set(re.findall(r"\bRegistry\.(ClassesRoot|CurrentUser|LocalMachine|Users|CurrentConfig|PerformanceData"
                           r"|DynData)\b", prog.text))
    if len(hives) >= 4:
        found.append(Hit(rule=f"{lang}.registry-sweep", language=lang, severity=Severity.HIGH, confidence=0.6,
                         sink="every registry hive", snippet=clip(_around(prog.text, "Registry.")),
                         detail="walks every registry hive (a search for writable paths or credentials)"))


def _around(text: str, word: str, n: int = 120) -> str:
    i = text.find(word)
    return text[max(0, i - n): i + n] if i >= 0 else text[:200]


# --- request-reading code in base64 ------------------------------------------------------------

_B64_LIT = re.compile(r"""["']([A-Za-z0-9+/]{16,}={0,2})["']""")


def encoded_request_code(raw: str, budget, found: list, lang: str) -> None:
    """A base64 constant in the page that decodes to code reading the request: the code is hidden
    so that the page holds no `Request` where a reader would look."""
    for k, m in enumerate(_B64_LIT.finditer(raw[:2_000_000])):
        if k >= 400:
            return
        lit = m.group(1)[:200000]
        budget.spend(len(lit))
        try:
            dec = base64.b64decode(lit + "=" * (-len(lit) % 4)).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
        if _REQ_CODE.search(dec) and len(dec) < 4000:
            found.append(Hit(rule=f"{lang}.encoded-request-code", language=lang, severity=Severity.HIGH,
                             confidence=0.7, source=clip(dec, 80), sink="decoded code",
                             snippet=clip(f"{lit[:60]} -> {dec}"),
                             detail="a base64 constant decodes to code that reads the request"))
            return


def unsafe_eval(prog: jsp_flow.Program, f: jsp_flow.Flow) -> bool:
    """JScript.NET eval(x, "unsafe"): code run with full trust, the China Chopper .aspx shape."""
    return bool(re.search(r',\s*"unsafe"\)', prog.code(f.start, min(f.end + 1, len(prog.toks))), _I))


# Pictures, and the other uploads a site takes without reading them (archives, media, documents): none is
# server code of its own, so a server-side include of one is a shell kept where only those are allowed.
_DATA_EXT = r"(?:jpe?g|gif|png|bmp|ico|webp|tiff?|rar|zip|7z|gz|mp3|mp4|wav|avi|flv|swf|pdf|docx?|xlsx?|pptx?)"
IMAGE_INCLUDE = re.compile(r"""<!--\s*#include\s+(?:file|virtual)\s*=\s*["']?"""
                           r"""([^"'>]+\.""" + _DATA_EXT + r""")["'\s-]"""
                           r"""|<%@\s*include\s+file\s*=\s*["']?([^"'>]+\.""" + _DATA_EXT + r""")["'\s%]"""
                           # <script runat=server src="x.jpg">: the file is read as the block's server code
                           r"""|<script\b(?=[^>]{0,400}\brunat\s*=\s*["']?server)[^>]{0,400}?\bsrc\s*=\s*["']?"""
                           r"""([^"'>\s]+\.""" + _DATA_EXT + r""")["'\s>]""", _I)


def image_include(raw: str, found: list, lang: str) -> None:
    """A server-side include of an image file: the picture's bytes are parsed as server code, the way a
    shell is kept in an upload folder that only accepts images."""
    m = IMAGE_INCLUDE.search(raw[:2_000_000])
    if m:
        found.append(Hit(rule=f"{lang}.includes-image-as-code", language=lang, severity=Severity.HIGH,
                         confidence=0.6, sink="server-side include", snippet=clip(m.group(0)),
                         detail=f"includes {m.group(1) or m.group(2) or m.group(3)} as server code"))


_ADMIN_NS = re.compile(r"""<%@\s*import\s+namespace\s*=\s*["']?"""
                       r"""(System\.Diagnostics|System\.Management|Microsoft\.Win32"""
                       r"""|System\.DirectoryServices|System\.ServiceProcess|System\.Net\.Sockets"""
                       r"""|System\.Runtime\.InteropServices)["'\s%]""", _I)
_ADMIN_CORE = {"system.management", "microsoft.win32", "system.directoryservices", "system.serviceprocess"}


def admin_imports(raw: str, found: list, lang: str) -> None:
    """A page importing the namespaces of processes, WMI, the registry, the directory, services, raw
    sockets and P/Invoke together: the header of an administration shell (ASPXSpy and its kin), which a
    site's own page never needs all at once. It still counts when the shell's code was cut out."""
    ns = {m.lower() for m in _ADMIN_NS.findall(raw[:200000])}
    if len(ns) >= 4 and len(ns & _ADMIN_CORE) >= 2:
        found.append(Hit(rule=f"{lang}.admin-namespaces", language=lang, severity=Severity.HIGH, confidence=0.55,
                         sink="imports", snippet=clip(", ".join(sorted(ns))),
                         detail="imports processes, WMI, registry and services namespaces together"))
