"""Classic ASP (VBScript, JScript) and ASP.NET (C#, VB.NET, JScript.NET) reader.

A page's server code is gathered from `<% %>`, `<%= %>` and `<script runat=server>` blocks (and,
for .ashx/.asmx handlers, everything after the directive), each in its own language; script
encoded with the Microsoft Script Encoder (`#@~^...^#~@`) is decoded first (asp_vbe). The code
is folded (asp_vb for VB, jsp_lex for the C family) and taint-tracked (jsp_flow) from Request
data to Execute/Eval, WScript.Shell and Process.Start, Assembly.Load of request bytes, CodeDom
compilation, file writes and uploads, and file-manager operations."""

from __future__ import annotations

import re

from agent.imagegate.webshell import asp_shapes, asp_vb, asp_vbe, jsp_flow, jsp_lex, relay
from agent.imagegate.webshell.common import Hit, clip
from agent.vocab import Severity

_BLOCK = re.compile(r"<%\s*(?P<k>[@=#:$]?)(?P<body>.*?)(?:%>|\Z)", re.S)
_SCRIPT = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)(?:</script\s*>|\Z)", re.S | re.I)
_LANG_ATTR = re.compile(r"""\blanguage\s*=\s*["']?\s*([\w#.]+)""", re.I)
_RUNAT = re.compile(r"""\brunat\s*=\s*["']?server""", re.I)
_COMMENT = re.compile(r"<%--.*?(?:--%>|\Z)", re.S)
_HANDLER = re.compile(r"<%\s*@\s*(?:(?:WebHandler|WebService|ServiceHost)\b[^%]*|[^%]*\bClass\s*=[^%]*)%>", re.I)
_CONTROL = re.compile(r"""<(?:asp:\w+|input|textarea|select)\b[^>]*?\bid\s*=\s*["']?(\w+)[^>]*>""", re.I)
_OPEN_DIRECTIVE = re.compile(r"<%\s*@([^%<]{0,2000})(?=<%)")
_UTF7 = re.compile(r"codepage\s*=\s*[\"']?65000", re.I)

_I = re.I
SOURCES = [re.compile(p, _I) for p in (
    r"\brequest(?:\.(?:form|querystring|cookies|item|params|headers|files|unvalidated|query|body))?[(\[]",
    r"\brequest\.(?:binaryread|inputstream|getbufferlessinputstream|getbufferedinputstream|form|querystring|params"
    r"|headers|cookies|files|item|rawurl|url|body|totalbytes|unvalidated)\b",
    # the Request object itself kept in a name (`HttpRequest r = context.Request;`, VB `Set r = Request`) or
    # handed to a helper: what is read through the alias is the request's
    r"(?<![\w\[\"])request(?=[;\n)]|$)",
    # the server's own variables (SCRIPT_NAME, REMOTE_ADDR ...) are not the client's; these are
    r'\brequest\.servervariables[(\[]"(?:HTTP_\w+|QUERY_STRING|ALL_\w+|CONTENT_\w+|PATH_INFO|URL)"',
    r'\beval\("request"\)',  # JScript/VB: eval("request") is the Request object
)]
# (the class named with its namespace too: `new System.Data.SqlClient.SqlCommand(`)
_SQL_CLASS = r"(?:\w+\.){0,4}(?:Sql|OleDb|Odbc|MySql|Oracle|Npgsql|SQLite)"
_SQL_RUN = r"\bnew " + _SQL_CLASS + r"Command\(|\.(?:ExecuteReader|ExecuteNonQuery|ExecuteScalar|execute)\b"
_SQL_CONN = r"\.(?:ConnectionString=|open\b)|\bnew " + _SQL_CLASS + r"Connection\("
# (by class id too, as a string or GetObject's moniker: `GetObject("new:72C24DD5-...")` is a WScript.Shell)
_WSH = re.compile(r'wscript\.shell|shell\.application|wscript\.network'
                  r'|"(?:new:|clsid:)?\{?(?:72C24DD5|13709620|F935DC22)', _I)
_FSO = re.compile(r"scripting\.filesystemobject|adodb\.stream|\{?0D43FE01", _I)
_PROC = re.compile(r"\bProcess\b|ProcessStartInfo", _I)
_PS = re.compile(r"Runspace|\bPowerShell\b|System\.Management\.Automation", _I)
_WMI = re.compile(r"Win32_Process", _I)

_S = jsp_flow.Sink
VB_SINKS = [
    _S(re.compile(r"(?<![.\w])(?:execute|executeglobal|eval)\b", _I), "Execute/Eval", "eval", rest=True),
    _S(re.compile(r"\.(?:run|exec|shellexecute)\b", _I), "WScript.Shell.Run", "exec", rest=True, receiver=True,
       needs=_WSH),
    _S(re.compile(r"\bcreateobject\(", _I), "CreateObject", "eval"),
    _S(re.compile(r"\.(?:addcode|executestatement)\b", _I), "ScriptControl", "eval", rest=True),
    _S(re.compile(r"\.eval\b", _I), "ScriptControl", "eval", rest=True, needs=re.compile(r"scriptcontrol", _I)),
    _S(re.compile(_SQL_RUN, _I), "SQL", "sql", rest=True),
    _S(re.compile(r"\.commandtext=", _I), "SQL", "sql", rest=True),
    _S(re.compile(_SQL_CONN, _I), "SQL connection", "sqlconn", rest=True,
       needs=re.compile(r"adodb\.connection|connection", _I)),
    _S(re.compile(r"\bprocess\.start\b", _I), "Process.Start", "exec", rest=True),
    _S(re.compile(r"\bnew (?:system\.diagnostics\.)?processstartinfo\b", _I), "ProcessStartInfo", "exec", rest=True),
    _S(re.compile(r"\.(?:filename|arguments)=", _I), "ProcessStartInfo", "exec", needs=_PROC),
    _S(re.compile(r"\.start\b", _I), "Process.Start", "exec", receiver=True, rest=True, needs=_PROC),
    _S(re.compile(r"\.standardinput\.(?:write|writeline)\b", _I), "process stdin", "exec", rest=True, needs=_PROC),
    # VB.NET's Shell() / Interaction.Shell, PowerShell runspaces, WMI's Win32_Process.Create
    _S(re.compile(r"(?<![.\w])shell\(|\binteraction\.shell\b", _I), "Shell()", "exec", rest=True),
    _S(re.compile(r"\.(?:addscript|addcommand)\b", _I), "PowerShell", "exec", rest=True, needs=_PS),
    _S(re.compile(r"\.invokemethod\b", _I), "WMI Win32_Process", "exec", rest=True, needs=_WMI),
    # GetObject("winmgmts:...Win32_Process").Create cmd: WMI starts the process (no WScript.Shell needed)
    _S(re.compile(r"\.create\b", _I), "WMI Win32_Process.Create", "exec", rest=True, needs=_WMI),
    _S(re.compile(r"\b(?:assembly|(?:current)?domain)\.(?:load\w*|executeassembly\w*)\b", _I), "Assembly.Load",
       "classload", rest=True),
    # GetObject("script:<url>"): a Windows Script Component fetched and run (a remote scriptlet)
    _S(re.compile(r"\bgetobject\(", _I), "GetObject(script:)", "eval", needs=re.compile(r'"script:', _I)),
    _S(re.compile(r"\.(?:createtextfile|opentextfile|savetofile)\b", _I), "file write", "write", rest=True),
    _S(re.compile(r"(?<!response)(?<!\bout)\.(?:write|writeline|writetext)\b", _I), "file write", "writedata",
       rest=True, needs=_FSO),
    _S(re.compile(r"\.saveas\b", _I), "SaveAs", "upload", rest=True),
    # VB.NET CallByName(shell, "Run", ...): WScript.Shell's Run by name
    _S(re.compile(r"\bcallbyname\(", _I), "CallByName", "exec", rest=True, needs=_WSH),
    _S(re.compile(r"\.regwrite\b", _I), "WScript.Shell.RegWrite", "registry", rest=True, needs=_WSH),
    # cmd.exe started with WScript.Shell's Exec and fed the request on its stdin
    _S(re.compile(r"\.stdin\.(?:write|writeline)\b", _I), "process stdin", "exec", rest=True, needs=_WSH),
    # a scheduled task (Task Scheduler's COM object) whose action runs what the request says
    _S(re.compile(r"\.(?:path|arguments)=", _I), "scheduled task action", "exec", rest=True,
       needs=re.compile(r'"schedule\.service"', _I)),
    _S(re.compile(r"\.downloadfile(?:async)?\b", _I), "WebClient.DownloadFile", "write", rest=True),
    _S(re.compile(r"\b(?:file\.(?:writeall\w*|appendall\w*|createtext|appendtext)|io\.file\.writeall\w*)\b"
                  r"|\bnew (?:system\.io\.)?(?:streamwriter|filestream)\b", _I), "File.Write", "write", rest=True),
    _S(re.compile(r"\.(?:deletefile|deletefolder|movefile|copyfile|getfolder|createfolder|movefolder|copyfolder)\b"
                  r"|\b(?:directory\.(?:getfiles|getdirectories|delete)|file\.(?:delete|move|copy))\b", _I),
       "file manager", "files", rest=True),
    # reads and listings: a hit only with other file operations on raw request paths (asp_shapes)
    _S(re.compile(r"\.(?:loadfromfile|getfile|subfolders|readall)\b|\bresponse\.(?:writefile|transmitfile)\b", _I),
       "file read", "fsread", rest=True),
]
C_SINKS = [
    _S(re.compile(r"\beval\("), "eval", "eval"),
    _S(re.compile(r"\.(?:AddCode|ExecuteStatement)\(", _I), "ScriptControl", "eval"),
    _S(re.compile(_SQL_RUN), "SQL", "sql"),
    _S(re.compile(_SQL_CONN), "SQL connection", "sqlconn"),
    _S(re.compile(r"\bnew (?:TcpClient|Socket|IPEndPoint)\(|\.Connect\(|\bDns\.GetHost\w*\("), "socket", "tunnel"),
    _S(re.compile(r"\.OpenSubKey\("), "registry", "registry"),
    _S(re.compile(r"\b(?:new )?Function\("), "new Function", "eval", needs=re.compile(r"\bnew Function\(")),
    _S(re.compile(r"\.CompileAssemblyFrom\w+\("), "CodeDom compile", "eval"),
    _S(re.compile(r"\bJScriptEvaluate\("), "JScript.NET evaluate", "eval"),
    # a COM object made from a ProgID and driven by name: WScript.Shell's Run without the word Run(
    _S(re.compile(r"\.InvokeMember\("), "COM InvokeMember", "exec",
       needs=re.compile(r"GetTypeFromProgID|" + _WSH.pattern, _I)),
    _S(re.compile(r"\.(?:Run|Exec|ShellExecute)\(", _I), "WScript.Shell.Run", "exec", receiver=True, needs=_WSH),
    _S(re.compile(r"\bProcess\.Start\("), "Process.Start", "exec"),
    _S(re.compile(r"\bnew (?:System\.Diagnostics\.)?ProcessStartInfo\("), "ProcessStartInfo", "exec"),
    _S(re.compile(r"\.(?:FileName|Arguments)="), "ProcessStartInfo", "exec", needs=_PROC),
    # the same properties set in an object initialiser (`new Process { StartInfo = { Arguments = ... } }`)
    _S(re.compile(r"(?<=[{,])(?:FileName|Arguments)="), "ProcessStartInfo", "exec",
       needs=re.compile(r"ProcessStartInfo(?:\([^()]*\))?\{|StartInfo=\{")),
    _S(re.compile(r"\.Start\(\)"), "Process.Start", "exec", receiver=True, needs=_PROC),
    # a command object's text set from the request (`cmd.CommandText = Request["sql"]`): the query it runs
    _S(re.compile(r"\.CommandText="), "SQL", "sql"),
    _S(re.compile(r"\bInteraction\.Shell\("), "Shell()", "exec"),
    _S(re.compile(r"\.(?:AddScript|AddCommand)\("), "PowerShell", "exec", needs=_PS),
    _S(re.compile(r"\.InvokeMethod\("), "WMI Win32_Process", "exec", needs=_WMI),
    _S(re.compile(r"\.Create\(", _I), "WMI Win32_Process.Create", "exec", needs=_WMI),
    # Process.Start reached by reflection: Type.GetType("System.Diagnostics.Process").GetMethod("Start")
    _S(re.compile(r"\.Invoke\("), "Process.Start (reflective)", "exec",
       needs=re.compile(r'"System\.Diagnostics\.Process"|typeof\((?:System\.Diagnostics\.)?Process\)\.GetMethod\('
                        r'|GetMethod\("Start"')),
    # Roslyn scripting: C# source from the request compiled and run in the worker process
    _S(re.compile(r"\bCSharpScript\.(?:EvaluateAsync|RunAsync|Create|Evaluate)\b"), "CSharpScript", "eval"),
    # a URL's content saved to disk (the URL or the path the request's): a downloader planting files
    _S(re.compile(r"\.DownloadFile(?:Async|TaskAsync)?\("), "WebClient.DownloadFile", "write"),
    # what a started process reads on stdin: cmd.exe kept open and fed the request
    _S(re.compile(r"\.StandardInput\.(?:Write|WriteLine)\("), "process stdin", "exec", needs=_PROC),
    _S(re.compile(r"\b(?:Assembly|(?:Current)?Domain)\.(?:Load\w*|ExecuteAssembly\w*)\("), "Assembly.Load",
       "classload"),
    # a Process's StartInfo filled by reflection (`GetProperty("Arguments").SetValue(si, ...)`)
    _S(re.compile(r"\.SetValue\("), "ProcessStartInfo (reflective)", "exec",
       needs=re.compile(r'GetProperty\("(?:Arguments|FileName)"\)')),
    _S(re.compile(r"\bGetObject\(", _I), "GetObject(script:)", "eval", needs=re.compile(r'"script:', _I)),
    # a page that deserialises what the request sent: any gadget chain in the GAC runs
    _S(re.compile(r"\.(?:Deserialize|ReadObject|DeserializeObject)\("), "Deserialize", "deser",
       needs=re.compile(r"BinaryFormatter|LosFormatter|ObjectStateFormatter|SoapFormatter|NetDataContractSerializer"
                        r"|TypeNameHandling\.(?:All|Objects|Auto|Arrays)|SimpleTypeResolver")),
    # XAML builds any object graph it names (ObjectDataProvider calls Process.Start)
    _S(re.compile(r"\bXamlReader\.(?:Parse|Load)\("), "XamlReader", "deser"),
    # a stylesheet from the request loaded with scripts allowed: its msxsl:script is compiled and run
    _S(re.compile(r"\.Load\("), "XslCompiledTransform (trusted)", "eval",
       needs=re.compile(r"XsltSettings\.TrustedXslt|new (?:System\.Xml\.Xsl\.)?XsltSettings\(true")),
    _S(re.compile(r"\.CreateInstance\("), "Assembly.CreateInstance", "classload", receiver=True,
       needs=re.compile(r'Assembly\.Load|Domain\.Load|GetMethod\("Load"')),
    _S(re.compile(r"\.Invoke\("), "Assembly.Load (reflective)", "classload", needs=re.compile(r'GetMethod\("Load"')),
    _S(re.compile(r"\.(?:CreateTextFile|OpenTextFile|SaveToFile)\(", _I), "file write", "write"),
    _S(re.compile(r"(?<!Response)(?<!\bout)\.(?:Write|WriteLine|WriteText)\(", _I), "file write", "writedata",
       needs=_FSO),
    _S(re.compile(r"\.SaveAs\("), "SaveAs", "upload"),
    _S(re.compile(r"\bFile\.(?:WriteAll\w+|AppendAll\w+|Create|CreateText|AppendText|OpenWrite)\("
                  r"|\bnew (?:System\.IO\.)?(?:FileStream|StreamWriter)\("), "File.Write", "write"),
    _S(re.compile(r"\.(?:CreateText|AppendText|OpenWrite)\(\)"), "FileInfo.CreateText", "write", receiver=True,
       needs=re.compile(r"FileInfo")),
    _S(re.compile(r"\bDirectory\.(?:GetFiles|GetDirectories|Delete|EnumerateFiles|Move)\("
                  r"|\bnew (?:System\.IO\.)?DirectoryInfo\("
                  r"|\bFile\.(?:Delete|Move|Copy)\(|\.(?:DeleteFile|DeleteFolder|MoveFile|CopyFile|GetFolder)\(", _I),
       "file manager", "files"),
    _S(re.compile(r"\bResponse\.(?:WriteFile|TransmitFile)\(|\bFile\.(?:ReadAll\w+|OpenRead|OpenText)\("
                  r"|\bnew (?:System\.IO\.)?StreamReader\(|\bDirectory\.GetParent\(", _I), "file read", "fsread"),
]
VB = jsp_flow.Lang("vb", SOURCES, VB_SINKS, breaks=frozenset({"\n"}), flags=_I,
                   func_kw=frozenset({"function", "sub"}))
CS = jsp_flow.Lang("c#", SOURCES, C_SINKS)
# JScript is case-sensitive: a call of `Function(...)` (no `new`) is the constructor too, building a function
# from the string it is handed (`Function(Request("x"))()`); the keyword is `function`
JS_SINKS = C_SINKS + [_S(re.compile(r"(?<![\w.])Function\("), "Function()", "eval")]
JS = jsp_flow.Lang("jscript", SOURCES, JS_SINKS, func_kw=frozenset({"function"}))

_SEV = {"exec": Severity.CRITICAL, "eval": Severity.CRITICAL, "classload": Severity.CRITICAL,
        "write": Severity.HIGH, "writedata": Severity.HIGH, "upload": Severity.HIGH, "files": Severity.HIGH,
        "sql": Severity.HIGH, "sqlconn": Severity.HIGH, "tunnel": Severity.HIGH, "registry": Severity.HIGH,
        "deser": Severity.HIGH}
_RULE = {"exec": "request-to-exec", "eval": "request-to-eval", "classload": "request-to-classload",
         "write": "request-to-file-write", "writedata": "request-to-file-write", "upload": "upload",
         "files": "file-manager", "sql": "sql-console", "sqlconn": "sql-console", "tunnel": "request-to-socket",
         "registry": "registry-browser", "deser": "request-to-deserialisation"}
_CRYPTO = re.compile(r"RijndaelManaged|CreateDecryptor|AesManaged|Aes\.Create|AesCryptoServiceProvider", _I)
_FILEOPS = re.compile(r"\.(?:deletefile|deletefolder|movefile|copyfile|getfolder|createfolder|movefolder|copyfolder"
                      r"|getfiles|getdirectories|delete|move|copy|createtextfile|opentextfile|savetofile)\b", _I)


def _norm_lang(name: str, default: str) -> str:
    n = name.lower().strip()
    if n in ("c#", "cs", "csharp"):
        return "c#"
    if n in ("vb", "vbscript", "vbs", "visualbasic", "vb.net"):
        return "vb"
    if n.startswith("jscript") or n.startswith("javascript") or n == "js":
        return "jscript"
    return default


def extract(text: str, lang: str, budget) -> list[tuple[str, str]]:
    """[(language, code)] of a page: its server blocks, in order, grouped by language."""
    text = _COMMENT.sub(" ", text)
    # `<% @Page Language="Jscript"><%eval(...)%>`: a directive left open ends where the next block starts
    # (IIS reads it so); otherwise the code after it would be swallowed as directive text
    text = _OPEN_DIRECTIVE.sub(r"<%@\1%>", text)
    default = "vb" if lang == "asp" else "c#"
    m = re.search(r"<%\s*@[^%]*?\blanguage\s*=\s*[\"']?\s*([\w#.]+)", text, re.I)
    if m:
        default = _norm_lang(m.group(1), default)
    units: dict[str, list[str]] = {}
    h = _HANDLER.search(text)
    if h and lang == "aspx":
        units.setdefault(default, []).append(text[h.end():])
        text = text[:h.start()]
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
            body = f"response.write({body})" if default == "vb" else f"Response.Write({body});"
        units.setdefault(default, []).append(body)
    objects = _server_objects(text)
    if objects and units:
        # `<object runat=server id=sh classid="clsid:72C24DD5-...">` is CreateObject spelled as a tag: each
        # unit sees it as the statement it stands for, so `sh.Run x` reads as WScript.Shell's Run
        for la in list(units):
            stmts = [(f'set {i} = server.createobject("{p}")' if la == "vb"
                      else f'var {i} = Server.CreateObject("{p}")') for i, p in objects]
            units[la].insert(0, "\n".join(stmts) if la == "vb" else ";\n".join(stmts) + ";")
    if not units and "<" not in text[:2000]:
        units[default] = [text]  # bare script saved with a server extension (an include, or IIS mapping)
    if lang == "aspx" and not units and text.lstrip().startswith("@"):
        units["c#"] = [text]  # Razor (.cshtml): read the whole page as C#
    return [(la, "\n".join(parts) if la == "vb" else ";\n".join(parts)) for la, parts in units.items()]


_OBJECT = re.compile(r"<object\b([^>]{0,1000})>", re.I)
_OBJ_ID = re.compile(r"""\bid\s*=\s*["']?(\w+)""", re.I)
_OBJ_PROGID = re.compile(r"""\bprogid\s*=\s*["']?([\w.]+)""", re.I)
_OBJ_CLSID = re.compile(r"""\bclassid\s*=\s*["']?\s*clsid:\s*\{?([0-9a-f-]{36})""", re.I)
# The class ids of the COM objects the sinks know by ProgID (what a server object tag names instead).
_CLSIDS = {
    "72c24dd5-d70a-438b-8a42-98424b88afb8": "WScript.Shell",
    "13709620-c279-11ce-a49e-444553540000": "Shell.Application",
    "0d43fe01-f093-11cf-8940-00a0c9054228": "Scripting.FileSystemObject",
    "f935dc22-1cf0-11d0-adb9-00c04fd58a0b": "WScript.Shell",  # IWshShell2 of the same object
    "093ff999-1ea0-4079-9525-9614c3504b74": "WScript.Network",
    "00000566-0000-0010-8000-00aa006d2ea4": "ADODB.Stream",
    "0e59f1d5-1fbe-11d0-8ff2-00a0d10038bc": "MSScriptControl.ScriptControl",
}


def _server_objects(text: str) -> list[tuple[str, str]]:
    """(id, ProgID) of each `<object runat=server>` tag naming a COM object (at most 16)."""
    out = []
    for m in _OBJECT.finditer(text):
        attrs = m.group(1)
        if not _RUNAT.search(attrs):
            continue
        i = _OBJ_ID.search(attrs)
        p = _OBJ_PROGID.search(attrs)
        c = _OBJ_CLSID.search(attrs)
        prog = p.group(1) if p else _CLSIDS.get(c.group(1).lower()) if c else None
        if i and prog:
            out.append((i.group(1), prog))
            if len(out) >= 16:
                break
    return out


def _decode(data: bytes, budget) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16", "replace")
        return asp_vbe.decode_all(text, budget) if "#@~^" in text else text
    if b"#@~^" in data:
        # the encoder works on the page's bytes: decode them one per character, then read the result
        data = asp_vbe.decode_all(data.decode("latin-1"), budget).encode("latin-1", "replace")
    text = data.decode("utf-8", "replace")
    if _UTF7.search(text[:4096]):
        # `<%@ codepage=65000 %>`: IIS reads the page as UTF-7, where `+AGU-` is an `e`
        text = data.decode("utf-7", "ignore")
    return text


def scan(data: bytes, lang: str, budget, hits: list) -> None:
    text = _decode(data, budget)
    if re.search(r"<%@\s*page\b[^%]*\blanguage\s*=\s*[\"']?java\b", text[:4096], _I):
        from agent.imagegate.webshell import jsp  # a JSP page saved under an ASP name

        jsp.scan_text(text, budget, hits, 0)
        return
    scan_text(text, lang, budget, hits, 0)


def scan_text(text: str, lang: str, budget, hits: list, depth: int) -> None:
    controls = sorted(set(_CONTROL.findall(text)))[:200]
    extra = [re.compile(r"\b(?:" + "|".join(map(re.escape, controls)) + r")\.(?:Text|Value|SelectedValue"
                        r"|PostedFile|FileContent|FileBytes|InnerText|InnerHtml)\b", _I)] if controls else []
    found: list[Hit] = []
    for la, code in extract(text, lang, budget):
        if code.strip():
            _scan_code(la, code, lang, budget, found, extra, depth)
    if depth == 0 and not any(h.confidence >= 0.5 for h in found):
        asp_shapes.encoded_request_code(text, budget, found, lang)
        asp_shapes.image_include(text, found, lang)
        asp_shapes.admin_imports(text, found, lang)
    seen: dict[tuple[str, str], Hit] = {}
    for h in found:
        k = (h.rule, h.sink)
        if k not in seen or h.confidence > seen[k].confidence:
            seen[k] = h
    hits.extend(sorted(seen.values(), key=lambda h: -h.confidence))


_INTERP_START = re.compile(r'\$@?"|@\$"')


def _interpolated(code: str) -> str:
    """C#'s `$"/c {Request["c"]}"` as the concatenation it stands for (`"/c " + (Request["c"])`): the lexer
    reads the whole literal as one string, and the request in its hole would be lost. A hole may hold its
    own strings and brackets; each literal is read at most 4000 characters, so the pass stays linear."""
    out: list[str] = []
    i, n = 0, len(code)
    while True:
        m = _INTERP_START.search(code, i)  # $"..." and the verbatim $@"..." / @$"..."
        if m is None or m.start() > 4_000_000:
            out.append(code[i:])
            return "".join(out)
        j = m.start()
        out.append(code[i:j])
        k, parts, text, limit = m.end(), [], [], min(n, j + 4000)
        while k < limit and code[k] != '"' and code[k] != "\n":
            c = code[k]
            if c == "\\" and k + 1 < limit:
                text.append(code[k:k + 2])
                k += 2
            elif code.startswith("{{", k) or code.startswith("}}", k):
                text.append(c)
                k += 2
            elif c == "{":
                depth, q, h = 1, None, k + 1
                while h < limit and depth:
                    ch = code[h]
                    if q:
                        q = None if ch == q else q
                    elif ch in "\"'":
                        q = ch
                    elif ch in "{([":
                        depth += 1
                    elif ch in "})]":
                        depth -= 1
                    h += 1
                hole = code[k + 1:h - 1]
                parts.append('"' + "".join(text) + '"')
                parts.append("(" + hole.split(":", 1)[0] if '"' not in hole else "(" + hole)
                parts[-1] += ")"
                text = []
                k = h
            else:
                text.append(c)
                k += 1
        parts.append('"' + "".join(text) + '"')
        out.append(" + ".join(parts))
        i = k + 1 if k < n and code[k] == '"' else k


def _program(la: str, code: str, budget, extra: list) -> jsp_flow.Program:
    if la == "c#" and ('$"' in code or '$@"' in code or '@$"' in code):
        code = _interpolated(code)
    if la == "vb":
        toks = asp_vb.fold(asp_vb.strip_types(asp_vb.lex(code, budget)), budget)
        base = VB
    else:
        toks = jsp_lex.fold(jsp_lex.lex(code, budget, single_quote_string=la != "c#"), budget)
        base = CS if la == "c#" else JS
    lang = base
    socks = sorted(set(_SOCKET_VAR.findall(code)))[:20] if la != "vb" else []
    if socks:
        # what a socket the page opens (or accepts) sends is the remote side's input: a reverse or bind shell
        # feeding cmd.exe from it is a command run from the network, whatever constant host it dials
        extra = list(extra) + [re.compile(r"\b(?:" + "|".join(map(re.escape, socks)) + r")\.(?:GetStream|Receive)\(")]
    if extra:
        lang = jsp_flow.Lang(base.name, base.sources + extra, base.sinks, base.breaks, base.flags, base.func_kw)
    prog = jsp_flow.Program(toks, lang, budget)
    if la in ("c#", "jscript") or la == "vb" and ("<webmethod" in prog.text or "<operationcontract" in prog.text):
        # WCF/ASMX web methods (C# `[WebMethod]`, JScript.NET `WebMethodAttribute function`, VB.NET
        # `<WebMethod()> Public Function`): their parameters are the request
        params = []
        for m in re.finditer(r"\[(?:WebMethod|OperationContract|WebInvoke|WebGet)\b|\bWebMethodAttribute\b"
                             r"|<(?:webmethod|operationcontract|webinvoke|webget)\b", prog.text):
            k = prog.tok_at(m.start())
            for ps, a, _b in prog.funcs.values():
                if a > k and all(prog.toks[q] != ("o", "[") for q in range(k + 1, min(a, k + 1)))\
                        and a - k < 80:
                    params.extend(ps)
                    break
        if params:
            prog.seed(params, "web method parameter")
    return prog


_SOCKET_VAR = re.compile(r"\b(\w+)\s*=\s*(?:new\s+(?:System\.Net\.Sockets\.)?(?:TcpClient|Socket)\s*\("
                         r"|\w+\.(?:AcceptTcpClient|AcceptSocket|Accept)\s*\(\s*\))")


def _scan_code(la, code, lang, budget, found, extra, depth) -> None:
    prog = _program(la, code, budget, extra)
    _judge(prog, found, lang, la, len(code), depth, extra)


def _family(text: str, kinds: set, size: int) -> str:
    if re.search(r'assembly\.load|domain\.load|GetMethod\("Load"', text, _I):
        if re.search(r'"payload"|createinstance\("ly"\)', text, _I):
            return "godzilla"
        if _CRYPTO.search(text) and re.search(r"session|equals\(this\)|\.Equals\(", text, _I):
            return "behinder"
    if re.search(r"aspxspy", text, _I):
        return "aspxspy"
    if "eval" in kinds and size < 600:
        return "china-chopper"
    return ""


_EVAL_VALUE = re.compile(r"(?<![.\w])eval(?=[,;})\]:]|$)|[:=,(]eval\b(?!\()|\[\s*\"eval\"\s*\]", _I)
_CONF = {"exec": 0.95, "eval": 0.95, "classload": 0.95, "write": 0.6, "writedata": 0.55, "upload": 0.55,
         "files": 0.4, "sql": 0.3, "sqlconn": 0.3, "tunnel": 0.7, "registry": 0.6, "deser": 0.6}


def _judge(prog: jsp_flow.Program, found: list[Hit], lang: str, la: str, size: int, depth: int, extra) -> None:
    text = prog.text
    flows = prog.flows()
    has_source = any(s is not None for s in prog.src)
    kinds = {f.sink.kind for f in flows if f.state == "tainted"}
    family = _family(text, kinds, size)
    console = None
    for f in flows:
        k = f.sink.kind
        conf = 0.0
        if k == "fsread":
            continue  # counted by asp_shapes.raw_path_browser only
        if f.state == "tainted":
            conf = _CONF[k]
            if k == "upload":
                params = not re.search(r"\bfiles\b|PostedFile|FileContent|FileBytes", f.source, _I)
                checked = re.search(r"GetExtension|\.Extension\b|EndsWith|App_Data|allowed|whitelist|ContentType",
                                    text, _I)
                conf = 0.75 if params else 0.4 if checked else 0.55
            elif k == "files":
                ops = len({m.lower() for m in _FILEOPS.findall(text)})
                if ops < 2:
                    continue
                conf = 0.2 * min(ops, 5) - 0.1  # deleting one file a form names is an admin page; a manager does all
            elif k in ("sql", "sqlconn"):
                if console is None:
                    console = _sql_console(prog, flows)
                if console:
                    conf = 0.7  # a SQL console: the server, credentials and the query all come from the request
            elif k == "write" and re.search(r"opentextfile\([^,]+,1\b", f.snippet, _I):
                continue  # opened for reading
            if k in ("write", "writedata", "upload") and lang == "asp" and la != "c#" and not _writes_pages(text) \
                    and len({m.lower() for m in _FILEOPS.findall(text)}) < 4:
                # classic ASP upload components write request bytes to disk for a living; an uploader
                # shell takes both the path and the content from form fields
                both = _PARAM.search(f.source) and any(
                    g.state == "tainted" and g.sink.kind in ("write", "writedata") and g.sink.kind != k
                    and _PARAM.search(g.source) for g in flows)
                if not both and k == "write" and _PARAM.search(f.source) and "instrb" not in text.lower() and not any(
                        t[0] == "s" and re.search(r"\.\w{1,5}$", str(t[1])) for t in prog.toks[f.start:f.end]) and any(
                        g.state == "tainted" and g.sink.kind == "writedata"
                        and re.search(r"\bbinaryread\b", g.snippet, _I) for g in flows):
                    # the body written whole (no multipart parsing, which every upload class does with
                    # InStrB/MidB) to a file the query names, its type too (no fixed extension): an uploader
                    # for any file
                    both = True
                conf = 0.65 if both else min(conf, 0.45)
                if not both and k == "write" and _PARAM.search(f.source) and asp_shapes.raw_path(prog, f) and any(
                        g.state == "tainted" and g.sink.kind == "writedata" for g in flows) \
                        and re.search(r"\bbinaryread\b|\.responsebody\b|\.responsetext\b", text, _I):
                    # the whole path a form field, no Server.MapPath on its way, and the bytes the request
                    # (or a URL it names) sent: anything, anywhere on disk
                    conf = 0.6
            elif k == "eval" and f.sink.name == "CreateObject":
                conf = 0.7
        elif k == "eval" and f.sink.name == "GetObject(script:)" and re.search(r'"script:\s*(?:https?|ftp|\\\\)',
                                                                                   f.snippet, _I):
            conf = 0.75  # runs a scriptlet kept on another server
        elif k == "eval" and f.state == "constant" and depth < 3:
            inner = "".join(str(t[1]) for t in prog.toks[f.start:f.end] if t[0] == "s")
            if len(inner) > 6:
                before = len(found)
                _scan_code(la, inner, lang, prog.budget, found, extra, depth + 1)
                for q in range(before, len(found)):
                    h = found[q]
                    found[q] = Hit(rule=h.rule, language=h.language, severity=h.severity, confidence=h.confidence,
                                   source=h.source, sink=h.sink, snippet=h.snippet, family=h.family or family,
                                   detail=h.detail + " (inside evaluated constant)")
            continue
        elif f.state == "unknown" and k in ("exec", "eval", "classload"):
            conf = 0.45 if has_source else 0.35
            if k == "classload" and family in ("behinder", "godzilla"):
                conf = 0.9
            elif k == "eval" and f.sink.name == "CreateObject":
                continue
            elif k == "eval":
                conf = max(conf, _decoded_eval(prog, f, la, lang, found, extra, depth))
                if la != "vb" and asp_shapes.unsafe_eval(prog, f):
                    conf = max(conf, 0.75)
                if conf < 0.5:
                    conf = max(conf, asp_shapes.pieced_eval(prog, f)[0])
                if re.search(r"\.response(?:text|body)\b", prog.code(f.start, f.end), _I):
                    conf = max(conf, 0.75)  # runs what an HTTP request fetched: code kept on another server
                quoted = "".join(str(t[1]) for t in prog.toks[f.start:f.end] if t[0] == "s")
                if re.search(r"\brequest\s*[(.\[]", quoted, _I):
                    conf = max(conf, 0.8)  # the code it evaluates, pieced together, reads the request
        else:
            continue
        if conf <= 0:
            continue
        rule = _RULE.get(k, k) if f.state == "tainted" else _RULE.get(k, k).replace("request-to-", "dynamic-")
        found.append(Hit(rule=f"{lang}.{rule}", language=lang, severity=_SEV.get(k, Severity.HIGH) if conf >= 0.5
                         else Severity.LOW, confidence=round(conf, 2), source=clip(f.source, 80), sink=f.sink.name,
                         snippet=clip(f.snippet), family=family, detail=f"{la}: {f.state}"))
    if la == "jscript" and has_source and _EVAL_VALUE.search(text):
        # eval stored or returned as a value ({'E': eval}, `return eval`) and called through the alias
        m = _EVAL_VALUE.search(text)
        found.append(Hit(rule=f"{lang}.eval-alias", language=lang, severity=Severity.CRITICAL, confidence=0.8,
                         source=next(s for s in prog.src if s is not None), sink="eval (aliased)",
                         snippet=clip(text[max(0, m.start() - 100): m.end() + 100]), family=family,
                         detail="eval used as a value with request data in the page"))
    _dropper(prog, found, lang)
    asp_shapes.dropper_pe(prog, found, lang)
    asp_shapes.raw_path_browser(prog, flows, found, lang)
    asp_shapes.self_write(prog, flows, found, lang)
    asp_shapes.plants_page(prog, flows, found, lang)
    asp_shapes.known_tools(prog, found, lang)
    relay.remote_relay(text, found, lang, lang)
    relay.request_proxy(prog, found, lang)
    if depth < 2:
        _xslt_scripts(prog, found, lang, extra, depth)
    for h in jsp_flow.embedded_hits(prog.toks, prog.budget, depth, lang):
        found.append(Hit(rule=f"{lang}.writes-web-shell", language=lang, severity=Severity.CRITICAL,
                         confidence=0.85, source=h.source, sink=h.sink, snippet=h.snippet, family=h.family,
                         detail="a string constant is itself a web shell: " + h.rule))


_PARAM = re.compile(r"\brequest(?:\.(?:form|querystring|item))?\(", _I)
_SQL_WORD = r'"\s*(?:select|insert|update|delete|create|alter|drop|exec|declare|with)\b'


def _templated(prog: jsp_flow.Program, f: jsp_flow.Flow) -> bool:
    """The query is the page's own SQL with request values in it (at worst an injection), not the request's."""
    code = prog.code(f.start, f.end)
    if re.search(_SQL_WORD, code, _I):
        return True
    names = {t[1] for t in prog.toks[f.start:f.end] if t[0] == "i"}
    return any(re.search(r"\b" + re.escape(n) + r"=[^\n;]{0,200}?" + _SQL_WORD, prog.text, _I) for n in names)


_RECORDSET = re.compile(r"\b(\w+)=(?:server\.)?createobject\(\"adodb\.recordset\"\)", _I)
_CONNSTR = re.compile(r"provider=|driver=|data source=|server=|dsn=|uid=|user id=", _I)


def _sql_console(prog: jsp_flow.Program, flows) -> bool:
    """A connection whose string the request supplies, and a query the request supplies whole."""
    conn = query = False
    # ADODB's Recordset.Open takes the query first (`rs.Open Request("sql"), cn`): a query, not a connection
    rsets = set(_RECORDSET.findall(prog.text)) if "recordset" in prog.text.lower() else set()
    for g in flows:
        if g.state != "tainted":
            continue
        if g.sink.kind == "sqlconn" and rsets and g.snippet.split(".", 1)[0].lower() in rsets:
            query |= not _templated(prog, g)
            if conn and query:
                return True
        elif g.sink.kind == "sqlconn":
            # a connection string, or a whole request value (not the page's own SQL: rs.open strsql)
            strs = [t[1] for t in prog.toks[g.start:g.end] if t[0] == "s"]
            conn |= any(_CONNSTR.search(x) for x in strs) or not _templated(prog, g)
            if conn and query:
                return True
        elif g.sink.kind == "sql" and not query and not _templated(prog, g):
            query = True
    return conn and query


def _writes_pages(text: str) -> bool:
    return bool(re.search(r'\.(?:asp|aspx|asa|cer|cdx|php|jsp)"', text, _I))


_MSXSL = re.compile(r"<msxsl:script\b([^>]*)>(.*?)(?:</msxsl:script\s*>|\Z)", re.S | re.I)


def _xslt_scripts(prog, found, lang, extra, depth) -> None:
    """Script inside an XSLT stylesheet held in a string: XslCompiledTransform with TrustedXslt (or
    MSXML's transformNode) compiles and runs it, so it is read as code in its own language."""
    for t in prog.toks:
        if t[0] != "s" or "msxsl:script" not in t[1]:
            continue
        for m in _MSXSL.finditer(t[1]):
            la = _LANG_ATTR.search(m.group(1))
            body = re.sub(r"<!\[CDATA\[|\]\]>|<msxsl:\w+[^>]*/>", " ", m.group(2))
            before = len(found)
            _scan_code(_norm_lang(la.group(1), "c#") if la else "c#", body, lang, prog.budget, found, extra,
                       depth + 1)
            for q in range(before, len(found)):
                h = found[q]
                conf = h.confidence
                if h.rule.endswith("-exec") and conf < 0.8:
                    # a command run from a stylesheet's script: nothing benign starts a shell there, and
                    # the indirection is how such a page hides its sink (the command itself may be fixed)
                    conf = 0.8
                found[q] = Hit(rule=h.rule, language=h.language, severity=Severity.CRITICAL if conf >= 0.5
                               else h.severity, confidence=conf, source=h.source, sink=h.sink, snippet=h.snippet,
                               family=h.family, detail=h.detail + " (XSLT script)")


def _dropper(prog, found, lang) -> None:
    """Fetch a remote file and save it as a server page (XMLHTTP + ADODB.Stream.SaveToFile x.asp)."""
    text = prog.text
    if re.search(r"xmlhttp|WebClient|HttpWebRequest", text, _I) and \
            re.search(r'(?:savetofile|DownloadFile|WriteAllBytes|WriteAllText|createtextfile)\b.{0,200}?\.(?:asp|aspx|'
                      r'asa|cer|php|jsp|ashx)\b', text, _I | re.S):
        m = re.search(r"savetofile|DownloadFile|WriteAll\w+|createtextfile", text, _I)
        found.append(Hit(rule=f"{lang}.dropper", language=lang, severity=Severity.HIGH, confidence=0.75,
                         source="remote download", sink=m.group(0) if m else "save",
                         snippet=clip(text[max(0, m.start() - 160): m.end() + 80] if m else text[:200]),
                         detail="downloads content and saves it as a server page"))


_TRANSFORMS = (
    lambda s: s[::-1],
    lambda s: _unhex(s),
    lambda s: _shift(s, -1), lambda s: _shift(s, 1), lambda s: _shift(s, -2), lambda s: _shift(s, -3),
    lambda s: _shift(s[::-1], -1), lambda s: _shift(s[::-1], 1),
)
_BUILTIN = frozenset({"request", "session", "application", "server", "response", "eval", "execute",
                      "executeglobal", "trim", "cstr", "lcase", "ucase"})
_KEYWORDS = re.compile(r"\b(?:request|execute|eval|createobject|wscript)\b", _I)


def _encoded(c: str) -> bool:
    """A constant that reads as encoded data, not as a name or a path."""
    if re.fullmatch(r"[0-9a-fA-F]{16,}", c):
        return True
    words = len(re.findall(r"[A-Za-z]{3,}", c))
    return len(c) >= 24 and not re.fullmatch(r"[\w\-./ :\\]+", c) and words * 8 < len(c)


def _unhex(s: str) -> str:
    h = re.sub(r"[^0-9a-fA-F]", "", s)
    if len(h) < 8 or len(h) % 2 or len(h) < len(s) * 0.6:
        return ""
    return bytes.fromhex(h).decode("latin-1")


def _shift(s: str, k: int) -> str:
    return "".join(chr((ord(c) + k) % 0x110000) if " " < c < "\x7f" or c in "\x7f" else c for c in s)


def _decoded_eval(prog, f, la, lang, found, extra, depth) -> float:
    """Execute(decoder("constant")): the constant decoded by the usual home-made schemes (reversed, hex,
    shifted characters); when one reads as a web shell, its hits count. Otherwise executing a decoded
    constant is itself the obfuscation (0.6), and so is executing what a loop builds from Chr()."""
    toks = prog.toks
    consts = [t[1] for t in toks[f.start:f.end] if t[0] == "s" and len(t[1]) >= 12]
    calls = any(t[0] == "i" and k + 1 < len(toks) and toks[k + 1] == ("o", "(") and t[1].lower() not in _BUILTIN
                for k, t in enumerate(toks[f.start:f.end], f.start) if k > f.start)
    if consts and calls and depth < 2:
        for c in consts[:4]:
            c = c[:200000]
            for tr in _TRANSFORMS:
                prog.budget.spend(len(c))
                try:
                    cand = tr(c)
                except (ValueError, OverflowError):
                    continue
                if cand and _KEYWORDS.search(cand):
                    before = len(found)
                    _scan_code(la, cand, lang, prog.budget, found, extra, depth + 1)
                    if any(h.confidence >= 0.5 for h in found[before:]):
                        return 0.9
        if any(_encoded(c) for c in consts):
            return 0.6
        return 0.0
    if re.search(r"\bsession\(|\bapplication\(|\bSession\[", prog.code(f.start, f.end), _I):
        return 0.55  # code stored in the session by an earlier request
    # a variable built by a decoding loop: v = v & chr(...)
    args = [t for t in toks[f.start + 1:f.end] if t[0] != "o"]
    names = {t[1] for t in args if t[0] == "i"} if len(args) == 1 else set()
    for n in names:
        # x = "<encoded>" ... x = decoder(x) ... Execute x; or x = fetch("http://...") ... Execute x
        for a, b in prog.stmts:
            if b - a < 3 or toks[a] != ("i", n) or toks[a + 1] != ("o", "="):
                continue
            rhs = toks[a + 2:b]
            if any(t[0] == "s" and _encoded(t[1]) for t in rhs):
                return 0.6
            called = {t[1] for k, t in enumerate(rhs[:-1]) if t[0] == "i" and rhs[k + 1] == ("o", "(")}
            if called & set(prog.funcs) and re.search(r"xmlhttp|winhttp|serverxmlhttp|\.responsetext", prog.text, _I):
                return 0.75  # executes code downloaded at run time
    for n in names:
        if re.search(r"\b" + re.escape(n) + r"=" + re.escape(n) + r"[&+].{0,40}?\b(?:chr|chrw|chrb|mid|fromCharCode)\(",
                     prog.text, _I):
            return 0.6
    return 0.0
