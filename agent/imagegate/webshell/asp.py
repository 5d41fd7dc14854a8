"""Classic ASP (VBScript, JScript) and ASP.NET (C#, VB.NET, JScript.NET) reader.

A page's server code is gathered from `<% %>`, `<%= %>` and `<script runat=server>` blocks (and,
for .ashx/.asmx handlers, everything after the directive), each in its own language; script
encoded with the Microsoft Script Encoder (`#@~^...^#~@`) is decoded first (asp_vbe). The code
is folded (asp_vb for VB, jsp_lex for the C family) and taint-tracked (jsp_flow) from Request
data to Execute/Eval, WScript.Shell and Process.Start, Assembly.Load of request bytes, CodeDom
compilation, file writes and uploads, and file-manager operations."""

from __future__ import annotations

import re

from agent.imagegate.webshell import asp_vb, asp_vbe, jsp_flow, jsp_lex
from agent.imagegate.webshell.common import Hit, clip
from agent.vocab import Severity

_BLOCK = re.compile(r"<%(?P<k>[@=#:$]?)(?P<body>.*?)(?:%>|\Z)", re.S)
_SCRIPT = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)(?:</script\s*>|\Z)", re.S | re.I)
_LANG_ATTR = re.compile(r"""\blanguage\s*=\s*["']?\s*([\w#.]+)""", re.I)
_RUNAT = re.compile(r"""\brunat\s*=\s*["']?server""", re.I)
_COMMENT = re.compile(r"<%--.*?(?:--%>|\Z)", re.S)
_HANDLER = re.compile(r"<%@\s*(?:WebHandler|WebService)\b[^%]*%>", re.I)

_I = re.I
SOURCES = [re.compile(p, _I) for p in (
    r"\brequest(?:\.(?:form|querystring|cookies|servervariables|item|params|headers|files|unvalidated|query"
    r"|body))?[(\[]",
    r"\brequest\.(?:binaryread|inputstream|getbufferlessinputstream|form|querystring|params|headers|cookies|files"
    r"|item|rawurl|body|totalbytes)\b",
)]
_WSH = re.compile(r'wscript\.shell|shell\.application|"\{?72C24DD5|"\{?13709620|wscript\.network', _I)
_FSO = re.compile(r"scripting\.filesystemobject|adodb\.stream|\{?0D43FE01", _I)
_PROC = re.compile(r"\bProcess\b|ProcessStartInfo", _I)

_S = jsp_flow.Sink
VB_SINKS = [
    _S(re.compile(r"(?<![.\w])(?:execute|executeglobal|eval)\b", _I), "Execute/Eval", "eval", rest=True),
    _S(re.compile(r"\.(?:run|exec|shellexecute)\b", _I), "WScript.Shell.Run", "exec", rest=True, receiver=True,
       needs=_WSH),
    _S(re.compile(r"\bcreateobject\(", _I), "CreateObject", "eval"),
    _S(re.compile(r"\bprocess\.start\b", _I), "Process.Start", "exec", rest=True),
    _S(re.compile(r"\bnew (?:system\.diagnostics\.)?processstartinfo\b", _I), "ProcessStartInfo", "exec", rest=True),
    _S(re.compile(r"\.(?:filename|arguments)=", _I), "ProcessStartInfo", "exec", needs=_PROC),
    _S(re.compile(r"\.start\b", _I), "Process.Start", "exec", receiver=True, rest=True, needs=_PROC),
    _S(re.compile(r"\b(?:assembly|domain)\.load\w*\b", _I), "Assembly.Load", "classload", rest=True),
    _S(re.compile(r"\.(?:createtextfile|opentextfile|savetofile)\b", _I), "file write", "write", rest=True),
    _S(re.compile(r"\.(?:write|writeline|writetext)\b", _I), "file write", "writedata", rest=True, needs=_FSO),
    _S(re.compile(r"\.saveas\b", _I), "SaveAs", "upload", rest=True),
    _S(re.compile(r"\b(?:file\.(?:writeall\w*|appendall\w*)|io\.file\.writeall\w*)\b", _I), "File.Write", "write",
       rest=True),
    _S(re.compile(r"\.(?:deletefile|deletefolder|movefile|copyfile|getfolder|createfolder|movefolder|copyfolder)\b"
                  r"|\b(?:directory\.(?:getfiles|getdirectories|delete)|file\.(?:delete|move|copy))\b", _I),
       "file manager", "files", rest=True),
]
C_SINKS = [
    _S(re.compile(r"\beval\("), "eval", "eval"),
    _S(re.compile(r"\b(?:new )?Function\("), "new Function", "eval", needs=re.compile(r"\bnew Function\(")),
    _S(re.compile(r"\.CompileAssemblyFrom\w+\("), "CodeDom compile", "eval"),
    _S(re.compile(r"\.(?:Run|Exec|ShellExecute)\(", _I), "WScript.Shell.Run", "exec", receiver=True, needs=_WSH),
    _S(re.compile(r"\bProcess\.Start\("), "Process.Start", "exec"),
    _S(re.compile(r"\bnew (?:System\.Diagnostics\.)?ProcessStartInfo\("), "ProcessStartInfo", "exec"),
    _S(re.compile(r"\.(?:FileName|Arguments)="), "ProcessStartInfo", "exec", needs=_PROC),
    _S(re.compile(r"\.Start\(\)"), "Process.Start", "exec", receiver=True, needs=_PROC),
    _S(re.compile(r"\b(?:Assembly|Domain)\.Load\w*\("), "Assembly.Load", "classload"),
    _S(re.compile(r"\.CreateInstance\("), "Assembly.CreateInstance", "classload", receiver=True,
       needs=re.compile(r"Assembly\.Load|Domain\.Load")),
    _S(re.compile(r"\.(?:CreateTextFile|OpenTextFile|SaveToFile)\(", _I), "file write", "write"),
    _S(re.compile(r"\.(?:Write|WriteLine|WriteText)\(", _I), "file write", "writedata", needs=_FSO),
    _S(re.compile(r"\.SaveAs\("), "SaveAs", "upload"),
    _S(re.compile(r"\bFile\.(?:WriteAll\w+|AppendAll\w+|Create|OpenWrite)\(|\bnew (?:FileStream|StreamWriter)\("),
       "File.Write", "write"),
    _S(re.compile(r"\bDirectory\.(?:GetFiles|GetDirectories|Delete|EnumerateFiles|Move)\(|\bnew DirectoryInfo\("
                  r"|\bFile\.(?:Delete|Move|Copy)\(|\.(?:DeleteFile|DeleteFolder|MoveFile|CopyFile|GetFolder)\(", _I),
       "file manager", "files"),
]
VB = jsp_flow.Lang("vb", SOURCES, VB_SINKS, breaks=frozenset({"\n"}), flags=_I,
                   func_kw=frozenset({"function", "sub"}))
CS = jsp_flow.Lang("c#", SOURCES, C_SINKS)
JS = jsp_flow.Lang("jscript", SOURCES, C_SINKS, func_kw=frozenset({"function"}))

_SEV = {"exec": Severity.CRITICAL, "eval": Severity.CRITICAL, "classload": Severity.CRITICAL,
        "write": Severity.HIGH, "writedata": Severity.HIGH, "upload": Severity.HIGH, "files": Severity.HIGH}
_RULE = {"exec": "request-to-exec", "eval": "request-to-eval", "classload": "request-to-classload",
         "write": "request-to-file-write", "writedata": "request-to-file-write", "upload": "upload",
         "files": "file-manager"}
_CRYPTO = re.compile(r"RijndaelManaged|CreateDecryptor|AesManaged|Aes\.Create|AesCryptoServiceProvider", _I)
_FILEOPS = re.compile(r"\.(?:deletefile|deletefolder|movefile|copyfile|getfolder|createfolder|movefolder|copyfolder"
                      r"|getfiles|getdirectories|delete|move|copy|createtextfile|opentextfile|savetofile)\b", _I)


def _norm_lang(name: str, default: str) -> str:
    n = name.lower().strip()
    if n in ("c#", "cs", "csharp"):
        return "c#"
    if n in ("vb", "vbscript", "vbs", "visualbasic", "vb.net", "vbscript.encode"):
        return "vb" if not n.endswith("encode") else "vbe"
    if n.startswith("jscript") or n in ("javascript", "js"):
        return "jscript" if not n.endswith("encode") else "jse"
    return default


def extract(text: str, lang: str, budget) -> list[tuple[str, str]]:
    """[(language, code)] of a page: its server blocks, in order, grouped by language."""
    text = _COMMENT.sub(" ", text)
    default = "vb" if lang == "asp" else "c#"
    m = re.search(r"<%@[^%]*?\blanguage\s*=\s*[\"']?\s*([\w#.]+)", text, re.I)
    if m:
        default = _norm_lang(m.group(1), default)
    units: dict[str, list[str]] = {}
    h = _HANDLER.search(text)
    if h and lang == "aspx":
        units.setdefault(default, []).append(text[h.end():])
    for s in _SCRIPT.finditer(text):
        budget.spend(0)
        attrs = s.group("attrs")
        if not _RUNAT.search(attrs):
            continue
        la = _LANG_ATTR.search(attrs)
        units.setdefault(_norm_lang(la.group(1), default) if la else default, []).append(s.group("body"))
    rest = _SCRIPT.sub(lambda s: " " if _RUNAT.search(s.group("attrs")) else s.group(0), text) if units else text
    for b in _BLOCK.finditer(rest):
        budget.spend(0)
        k = b.group("k")
        if k == "@":
            continue
        body = b.group("body")
        if k in ("=", ":"):
            body = f"response.write({body})" if default in ("vb", "vbe") else f"Response.Write({body});"
        units.setdefault(default, []).append(body)
    if lang == "aspx" and not units and text.lstrip().startswith("@"):
        units["c#"] = [text]  # Razor (.cshtml): read the whole page as C#
    return [(la, "\n".join(parts) if la in ("vb", "vbe") else ";\n".join(parts)) for la, parts in units.items()]


def scan(data: bytes, lang: str, budget, hits: list) -> None:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16", "replace")
    else:
        text = data.decode("utf-8", "replace")
    if "#@~^" in text:
        text = asp_vbe.decode_all(text, budget)
    found: list[Hit] = []
    for la, code in extract(text, lang, budget):
        if not code.strip():
            continue
        if la in ("vb", "vbe"):
            toks = asp_vb.fold(asp_vb.lex(code, budget), budget)
            prog = jsp_flow.Program(toks, VB, budget)
        else:
            toks = jsp_lex.fold(jsp_lex.lex(code, budget, single_quote_string=la != "c#"), budget)
            prog = jsp_flow.Program(toks, CS if la == "c#" else JS, budget)
        _judge(prog, found, lang, la, len(code))
    seen: dict[tuple[str, str], Hit] = {}
    for h in found:
        k = (h.rule, h.sink)
        if k not in seen or h.confidence > seen[k].confidence:
            seen[k] = h
    hits.extend(sorted(seen.values(), key=lambda h: -h.confidence))


def _family(text: str, kinds: set, size: int) -> str:
    if re.search(r"assembly\.load|domain\.load", text, _I):
        if re.search(r'"payload"|createinstance\("ly"\)', text, _I):
            return "godzilla"
        if _CRYPTO.search(text) and re.search(r"session|equals\(this\)|\.Equals\(", text, _I):
            return "behinder"
    if re.search(r"aspxspy", text, _I):
        return "aspxspy"
    if "eval" in kinds and size < 600:
        return "china-chopper"
    return ""


def _judge(prog: jsp_flow.Program, found: list[Hit], lang: str, la: str, size: int) -> None:
    text = prog.text
    flows = prog.flows()
    has_source = any(s is not None for s in prog.src)
    kinds = {f.sink.kind for f in flows if f.state == "tainted"}
    family = _family(text, kinds, size)
    for f in flows:
        k = f.sink.kind
        if f.state == "tainted":
            conf = {"exec": 0.95, "eval": 0.95, "classload": 0.95, "write": 0.6, "writedata": 0.55,
                    "upload": 0.55, "files": 0.4}[k]
            if k == "upload":
                params = not re.search(r"\bfiles\b", f.source, _I)
                checked = re.search(r"GetExtension|\.Extension\b|EndsWith|App_Data|allowed|whitelist|ContentType",
                                    text, _I)
                conf = 0.75 if params else 0.4 if checked else 0.55
            if k == "files":
                ops = len({m.lower() for m in _FILEOPS.findall(text)})
                if ops < 2:
                    continue
                conf = 0.5 + 0.1 * min(ops, 4)
            if k == "eval" and f.sink.name == "CreateObject":
                conf = 0.7
        elif f.state == "unknown" and k in ("exec", "eval", "classload"):
            conf = 0.45 if has_source else 0.35
            if k == "classload" and family in ("behinder", "godzilla"):
                conf = 0.9
            elif k == "eval" and f.sink.name == "CreateObject":
                continue
        else:
            continue
        rule = _RULE[k] if f.state == "tainted" else _RULE[k].replace("request-to-", "dynamic-")
        found.append(Hit(rule=f"{lang}.{rule}", language=lang, severity=_SEV[k] if conf >= 0.5 else Severity.LOW,
                         confidence=round(conf, 2), source=clip(f.source, 80), sink=f.sink.name,
                         snippet=clip(f.snippet), family=family, detail=f"{la}: {f.state}"))
