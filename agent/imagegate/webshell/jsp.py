"""JSP and JSPX reader: Java in scriptlets, declarations and expressions (and their JSPX element
forms, XML entities decoded), plus EL expressions in the template text.

The Java is lexed after its unicode escapes (Java applies them first), folded (jsp_lex) and
taint-tracked (jsp_flow) from request data to command execution, script and EL evaluation,
reflection on Runtime/ProcessBuilder, class definition from request bytes and file writes. The
Behinder and Godzilla loaders are recognised by their shape (AES or XOR over the request body,
a key kept in the session, a ClassLoader subclass calling defineClass)."""

from __future__ import annotations

import html
import re

from agent.imagegate.webshell import jsp_flow, jsp_lex, relay
from agent.imagegate.webshell.common import Hit, clip
from agent.vocab import Severity

_JSP_COMMENT = re.compile(r"<%--.*?(?:--%>|\Z)", re.S)
_SCRIPTLET = re.compile(r"<%(?P<k>[!=@]?)(?P<body>.*?)(?:%>|\Z)", re.S)
_JSPX = re.compile(r"<jsp:(?P<k>scriptlet|declaration|expression)\b[^>]*>(?P<body>.*?)(?:</jsp:(?P=k)\s*>|\Z)",
                   re.S | re.I)
_CDATA = re.compile(r"<!\[CDATA\[(.*?)(?:\]\]>|\Z)", re.S)
_EL = re.compile(r"[$#]\{(?P<body>[^{}]{1,4000}?)\}")

_F = 0
_REQ = r"(?:\b\w*[rR]eq\w*|getRequest\(\)|\bpageContext\.getRequest\(\)|\))"
SOURCES = [re.compile(p) for p in (
    r"\.(?:getParameter|getParameterValues|getParameterMap|getParameterNames|getHeader|getHeaders|getQueryString"
    r"|getCookies|getPart|getParts)\(",
    _REQ + r"\.(?:getInputStream|getReader)\(\)",
    r"\bpageContext\.request\.",
)]
EL_SOURCES = SOURCES + [re.compile(p) for p in (
    r"\bparam(?:Values)?(?:\.|\[)",  # EL implicit objects, in ${...} and evaluated EL strings only
    r"\bheader(?:Values)?(?:\.|\[)",
    r"\bcookie(?:\.|\[)",
)]

_S = jsp_flow.Sink
_RUNTIME = re.compile(r'"java\.lang\.(?:Runtime|ProcessBuilder|ProcessImpl|UNIXProcess)"|getRuntime|ProcessBuilder'
                      r'|"exec"|"start"|"javax\.script\.ScriptEngineManager"|"(?:eval|evaluate|defineClass)"')
SINKS = [
    _S(re.compile(r"\.exec\("), "Runtime.exec", "exec", needs=re.compile(r"Runtime|\bexec\b")),
    _S(re.compile(r"\bnew (?:java\.lang\.)?ProcessBuilder\("), "new ProcessBuilder", "exec"),
    _S(re.compile(r"\.command\("), "ProcessBuilder.command", "exec", needs=re.compile(r"ProcessBuilder")),
    _S(re.compile(r"\.start\(\)"), "ProcessBuilder.start", "exec", receiver=True,
       needs=re.compile(r"ProcessBuilder|ProcessImpl")),
    _S(re.compile(r"\.invoke\("), "Method.invoke", "exec", receiver=True, needs=_RUNTIME),
    _S(re.compile(r"\bClass\.forName\("), "Class.forName", "reflect"),
    _S(re.compile(r"\.(?:getMethod|getDeclaredMethod)\("), "getMethod", "reflect"),
    _S(re.compile(r"\.eval\("), "ScriptEngine.eval", "eval",
       needs=re.compile(r"ScriptEngine|getEngineBy|ELProcessor|Interpreter|GroovyShell|JShell")),
    _S(re.compile(r"\.(?:createValueExpression|createMethodExpression|parseExpression|evaluate|getValue|createScript"
                  r"|createExpression)\("),
       "expression evaluation", "eval",
       needs=re.compile(r"ExpressionFactory|ELProcessor|ELContext|SpelExpressionParser|Ognl|GroovyShell"
                        r"|ExpressionParser|MVEL|Velocity|Jexl")),
    _S(re.compile(r"\b(?:Ognl\.getValue|MVEL\.(?:eval\w*|compileExpression))\("), "OGNL/MVEL", "eval"),
    # Rhino's Context.evaluateString and a FreeMarker template made from request text (its ?new builtin runs
    # any class): script and template engines handed the request's source
    _S(re.compile(r"\.(?:evaluateString|evaluateReader|compileString|compileReader)\("), "Rhino", "eval",
       needs=re.compile(r"mozilla|rhino", re.I)),
    _S(re.compile(r"\bnew (?:freemarker\.template\.)?Template\("), "FreeMarker template", "eval",
       needs=re.compile(r"freemarker")),
    # an XSLT stylesheet from the request: Xalan's extension functions call any Java method
    _S(re.compile(r"\.(?:newTransformer|newTemplates)\("), "XSLT from the request", "eval"),
    _S(re.compile(r"\b(?:defineClass\w*|defineAnonymousClass|defineHiddenClass)\("), "defineClass", "classload"),
    # a native library the request names (or uploaded): its initialiser runs as the server
    _S(re.compile(r"\b(?:System|Runtime\.getRuntime\(\))\.(?:load|loadLibrary)\("), "System.load", "classload"),
    # TemplatesImpl's _bytecodes set by reflection: the class in them is defined on newTransformer()
    _S(re.compile(r"\.set\("), "TemplatesImpl._bytecodes", "classload", needs=re.compile(r'"_bytecodes"')),
    # a page that deserialises the request body: any gadget chain on the class path runs
    _S(re.compile(r"\bnew (?:java\.io\.)?ObjectInputStream\("), "ObjectInputStream", "deser"),
    # the other deserialisers that build any class the input names: XMLDecoder runs method calls written in
    # its XML, SnakeYAML's default constructor and XStream instantiate what the document says
    _S(re.compile(r"\bnew (?:java\.beans\.)?XMLDecoder\("), "XMLDecoder", "deser"),
    _S(re.compile(r"\.(?:load|loadAs|loadAll)\("), "Yaml.load", "deser",
       needs=re.compile(r"\bnew (?:[\w.]+\.)?Yaml\(")),
    _S(re.compile(r"\.fromXML\("), "XStream.fromXML", "deser", needs=re.compile(r"XStream")),
    _S(re.compile(r"\.newInstance\(\)"), "Class.newInstance", "classload", receiver=True,
       needs=re.compile(r"defineClass|ClassLoader")),
    _S(re.compile(r"\bnew (?:java\.net\.)?URLClassLoader\("), "URLClassLoader", "classload"),
    _S(re.compile(r"\.loadClass\("), "ClassLoader.loadClass", "classload"),
    _S(re.compile(r"\bnew (?:java\.io\.)?(?:FileOutputStream|FileWriter|RandomAccessFile|PrintWriter)\("),
       "file write", "write"),
    _S(re.compile(r"\bFiles\.(?:write|copy|writeString|newOutputStream)\("), "Files.write", "write"),
    # a java.util.logging FileHandler opened on a request path: every record logged (the request's text) is
    # written there, a file writer that never names an output stream
    _S(re.compile(r"\bnew (?:java\.util\.logging\.)?FileHandler\("), "logging FileHandler", "write"),
    _S(re.compile(r"\bFileUtils\.(?:writeStringToFile|writeByteArrayToFile|copyInputStreamToFile|write|writeLines)\("),
       "FileUtils.write", "write"),
    # Java source from the request compiled in the server's JVM
    _S(re.compile(r"\.(?:run|getTask)\("), "JavaCompiler", "eval",
       needs=re.compile(r"getSystemJavaCompiler|JavaCompiler")),
    _S(re.compile(r"\.(?:write|print|println)\("), "stream write", "writedata", receiver=False,
       needs=re.compile(r"FileOutputStream|FileWriter|RandomAccessFile")),
    _S(re.compile(r"\bnew (?:java\.io\.)?File\("), "new File", "files"),
    # the NIO spelling of the same path (a file manager over Files.list/delete/readAllBytes)
    _S(re.compile(r"\b(?:Paths\.get|Path\.of)\("), "Paths.get", "files"),
    # sun.net.www.MimeLauncher runs its execPath field as a command: setting it by reflection is an exec
    _S(re.compile(r"\.set\("), "MimeLauncher.execPath", "exec", needs=re.compile(r'"sun\.net\.www\.MimeLauncher"')),
    _S(re.compile(r"\bnew (?:java\.beans\.)?(?:Statement|Expression)\("), "java.beans.Statement", "exec",
       needs=re.compile(r"java\.beans|Runtime|ProcessBuilder")),
    _S(re.compile(r"\.(?:lookup|setDataSourceName)\("), "JNDI lookup", "jndi",
       needs=re.compile(r"InitialContext|JdbcRowSetImpl|Context\b|jndi")),
    _S(re.compile(r"\.newInstance\("), "Constructor.newInstance", "classload", receiver=False,
       needs=re.compile(r"loadClass|defineClass")),
    _S(re.compile(r"\bnew (?:java\.net\.)?(?:Socket|InetSocketAddress)\(|\bSocketChannel\.open\("), "socket",
       "tunnel"),
    _S(re.compile(r"\.(?:executeQuery|executeUpdate|execute|prepareStatement|addBatch)\("), "SQL", "sql",
       needs=re.compile(r"java\.sql|DriverManager|Connection")),
    _S(re.compile(r"\bDriverManager\.getConnection\(|\bClass\.forName\("), "SQL connection", "sqlconn",
       needs=re.compile(r"DriverManager")),
]
LANG = jsp_flow.Lang("java", SOURCES, SINKS)
# In a page the path the client asked for is request data too (`/shell.jsp/ls -la`); in a servlet class it
# is what the container routes on (Tomcat's CGI servlet runs the script the path names), so classes leave it.
LANG_PAGE = jsp_flow.Lang("java", SOURCES + [re.compile(r"\.(?:getRequestURI|getRequestURL|getPathInfo)\(\)")], SINKS)
LANG_EL = jsp_flow.Lang("el", EL_SOURCES, SINKS)

# Shapes of the encrypted loaders, over the folded code.
_AES = re.compile(r'Cipher\.getInstance\("AES|SecretKeySpec\(|"AES"')
_SESSION_KEY = re.compile(r'session\.(?:putValue|setAttribute)\("\w*",\w+\)')
_BEHINDER = re.compile(r"\.newInstance\(\)\.equals\((?:pageContext|request|new Object)|\.putValue\(\"u\"")
_GODZILLA = re.compile(r'(?:getAttribute|setAttribute)\("payload"|\.equals\(arrOut\)|'
                       r'new String\(md5\(|"payload"')
_XOR = re.compile(r"\[\w+\]\^\w+\[|\^=|\[\w+\]\^")
_CLASSLOADER = re.compile(r"\bextends(?: java\.lang\.)? (?:ClassLoader|URLClassLoader|SecureClassLoader)\b"
                          r"|defineClass")
_ANTSWORD = re.compile(r'"ant"|antsword', re.I)
_FILEOPS = re.compile(r"\.(?:listFiles|delete|renameTo|mkdirs?|setLastModified|list)\(")
_DB_TABLES = re.compile(r'\.getTables\(|"\s*show tables'
                        r'|\b(?:(?:user|all|dba)_tab(?:les|_comments)|information_schema\.tables|sysobjects)\b', re.I)
_DB_SELECT = re.compile(r'"\s*select \* from \s*"\+', re.I)
_DB_FILE = re.compile(r"\bnew (?:java\.io\.)?(?:FileOutputStream|FileWriter|PrintWriter|RandomAccessFile)\(")
_ROOTED = re.compile(r"getRealPath|getServletContext|getResource|getContextPath|\bbaseDir|\brootDir|getCanonicalPath"
                     r"|normalize\(|startsWith\(")
_FILEREAD = re.compile(r"\bnew (?:java\.io\.)?(?:FileInputStream|FileReader|RandomAccessFile)\("
                       r"|\bFiles\.(?:readAllBytes|readAllLines|readString|newInputStream|newBufferedReader|lines)\(")

_SEV = {"deser": Severity.HIGH, "exec": Severity.CRITICAL, "eval": Severity.CRITICAL, "classload": Severity.CRITICAL,
        "reflect": Severity.CRITICAL, "write": Severity.HIGH, "writedata": Severity.HIGH,
        "files": Severity.HIGH, "tunnel": Severity.HIGH, "jndi": Severity.CRITICAL, "sql": Severity.HIGH,
        "sqlconn": Severity.HIGH}
_CONF = {"deser": 0.6, "exec": 0.95, "eval": 0.9, "classload": 0.95, "reflect": 0.85, "write": 0.6, "writedata": 0.55,
         "files": 0.4, "tunnel": 0.7, "sql": 0.3, "sqlconn": 0.3, "jndi": 0.45}
_REVERSE = re.compile(r"/dev/tcp/|/dev/udp/|bash -i"
                      r"|\bnc(?:\.exe)?\b.{0,60}\s-[ec]\b|mkfifo|powershell.{0,40}\s-(?:e|enc)\b"
                      r"|\bsh -i\b", re.I)
_JAVA_SOURCE = re.compile(r"^\s*(?:package|import)\s+[\w.]+(?:\.\*)?\s*;", re.M)
_JAVA_FILE = re.compile(r"^\s*(?:package|import)\s+[\w.]+|\bclass\s+\w+[^{;]*\{", re.M)


def extract(text: str, budget) -> tuple[str, str]:
    """(Java code, EL code) of a JSP/JSPX page; expressions become print statements."""
    text = _JSP_COMMENT.sub(" ", text)
    parts: list[str] = []
    for m in _JSPX.finditer(text):
        budget.spend(0)
        body = _CDATA.sub(lambda c: c.group(1), m.group("body"))
        body = html.unescape(body) if "&" in body else body
        parts.append(_wrap({"scriptlet": "", "declaration": "!"}.get(m.group("k").lower(), "="), body))
    if parts:
        text_wo = _JSPX.sub(" ", text)
    else:
        text_wo = text
    for m in _SCRIPTLET.finditer(text_wo):
        budget.spend(0)
        k = m.group("k")
        if k == "@":
            continue
        parts.append(_wrap(k, m.group("body")))
    els = [m.group("body") for m in _EL.finditer(_SCRIPTLET.sub(" ", text_wo))]
    return "\n".join(parts), ";\n".join(els)


def _wrap(kind: str, body: str) -> str:
    if kind == "=":
        return f"out.print({body});"
    return body


def scan(data: bytes, lang: str, budget, hits: list) -> None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", "replace")
    else:
        text = data.decode("utf-8", "replace")
    scan_text(text, budget, hits, 0)


def scan_text(text: str, budget, hits: list, depth: int) -> None:
    code, el = extract(text, budget)
    found: list[Hit] = []
    if depth == 0:
        from agent.imagegate.webshell.asp_shapes import image_include

        image_include(text, found, "jsp")  # <%@ include file="x.jpg" %>: the image compiled as JSP
    if not code.strip() and (not el.strip() or _JAVA_SOURCE.search(text[:20000])):
        # no scriptlet: a Java source (its `${...}` are strings, not EL), or a page of template text only
        if _JAVA_FILE.search(text[:20000]):
            _scan_class(jsp_lex.java_unicode(text), budget, found, depth)
        hits.extend(_best(found))
        return
    if code.strip():
        _scan_java(jsp_lex.java_unicode(code), budget, found, "jsp", depth, el=False)
        _memory_shell(code, found)
    if el.strip():
        _scan_java(el, budget, found, "jsp.el", depth, el=True)
    if depth == 0 and not any(h.confidence >= 0.5 for h in found):
        from agent.imagegate.webshell.asp_shapes import encoded_request_code

        encoded_request_code(text, budget, found, "jsp")  # request-reading code kept in a base64 constant
    hits.extend(_best(found))


_INJECT = re.compile(r"\.(?:addFilterDef|addFilterMapBefore|addFilterMap|addServletMappingDecoded|addServletMapping"
                     r"|addApplicationEventListener|addValve|registerMapping)\s*\(")
_CONTAINER = re.compile(r"StandardContext|ApplicationContext|ApplicationFilterConfig|FilterDef|getPipeline\(\)"
                        r"|RequestMappingHandlerMapping|StandardWrapper|createWrapper")


def _memory_shell(code: str, found: list) -> None:
    """A page that registers a filter, servlet, listener, valve or controller in the running container:
    a memory-shell injector (what it registers keeps answering after the page is deleted). Pages only:
    the container's own classes make these calls for a living."""
    calls = set(_INJECT.findall(code))
    m = _INJECT.search(code)
    if m and (len(calls) >= 2 or _CONTAINER.search(code)):
        found.append(Hit(rule="jsp.memory-shell-injector", language="jsp", severity=Severity.CRITICAL,
                         confidence=0.8, sink=m.group(0).strip(". ("), snippet=clip(_around(code, m.group(0))),
                         detail="registers a component in the running container from a page"))


def _scan_java(code: str, budget, found: list, prefix: str, depth: int, el: bool) -> None:
    toks = jsp_lex.fold(jsp_lex.lex(code, budget, single_quote_string=el), budget)
    prog = jsp_flow.Program(toks, _lang_for(code, LANG_EL if el else LANG_PAGE), budget)
    _seed_messages(prog)
    _process_sinks(prog)
    _judge(prog, found, prefix, el=el, depth=depth)
    if not el and depth == 0:
        relay.remote_relay(prog.text, found, prefix, "jsp")  # a page's (a class's methods are judged one by one)
        relay.request_proxy(prog, found, prefix)


# Names of every critical sink, plus what hides names (escapes, reflection, decoding, quoted code).
_CLASS_SINK_WORDS = re.compile(r"exec|ProcessBuilder|ProcessImpl|invoke|eval|defineClass|newInstance|loadClass|lookup"
                               r"|DataSourceName|java\.beans|Statement|Expression|ClassLoader|getValue|Socket"
                               r"|Script|\\u|forName|decode|Base64|onMessage|handle\w*Message|listFiles")


_SOCKET_VAR = re.compile(r"\b(\w+)\s*=\s*(?:new\s+(?:java\.net\.)?Socket\s*\(|\w+\.accept\s*\(\s*\))")


_PART_VAR = re.compile(r"\b(\w+)\s*(?:=\s*(?:\(\s*[\w.]+\s*\)\s*)?[\w.()]*\.getPart\s*\(|:\s*[\w.()]*\.getParts\s*\()"
                       # a servlet Part, a commons-fileupload item
                       r"|\b(?:Part|FileItem|DiskFileItem)\s+(\w+)\s*[=:;)]")


# A name declared as a servlet request, whatever it is called (`HttpServletRequest q`): its body is request data
# (the SOURCES' body readers go by a receiver named like a request, as a socket's getInputStream is not one).
_REQ_VAR = re.compile(r"\b(?:Http)?ServletRequest(?:Wrapper)?\s+(\w+)\s*[,)=;]")


def _lang_for(code: str, base: jsp_flow.Lang) -> jsp_flow.Lang:
    """What a socket the code opens (or accepts) sends is request data too: a reverse or bind shell. An
    uploaded Part's write(name) is a file write, counted when the name is the request's (the part itself
    is always request data, so only the argument is followed)."""
    names = sorted(set(_SOCKET_VAR.findall(code)))[:20] if "Socket" in code or "accept" in code else []
    parts = sorted({a or b for a, b in _PART_VAR.findall(code)})[:20] \
        if "getPart" in code or "FileItem" in code else []
    reqs = sorted({n for n in _REQ_VAR.findall(code) if "req" not in n.lower()})[:20] \
        if "ServletRequest" in code else []
    if not names and not parts and not reqs:
        return base
    sources, sinks = list(base.sources), list(base.sinks)
    if reqs:
        sources.append(re.compile(r"\b(?:" + "|".join(map(re.escape, reqs)) + r")\.(?:getInputStream|getReader)\(\)"))
    if names:
        sources.append(re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\.getInputStream\(\)"))
    if parts:
        # (FileItem.write too)
        sinks.append(_S(re.compile(r"\b(?:" + "|".join(map(re.escape, parts)) + r")\.write\("), "Part.write", "write"))
    return jsp_flow.Lang(base.name, sources, sinks, base.breaks, base.flags, base.func_kw)


def _scan_class(code: str, budget, found: list, depth: int) -> None:
    """A servlet, filter or listener class: each method read on its own, with request data followed into
    the helpers it is passed to (a call in one method's scope taints the callee's parameters). File-wide
    taint, right for a page, is too generous for framework classes of thousands of lines."""
    if not _CLASS_SINK_WORDS.search(code):
        return  # in a class only code execution and class loading count, and none of their names is here
    toks = jsp_lex.fold(jsp_lex.lex(code, budget, single_quote_string=False), budget)
    lang = _lang_for(code, LANG)
    whole = jsp_flow.Program(toks, lang, budget, propagate=False)
    spans: dict[str, tuple[int, int]] = {}
    done = -1
    for name, (_p, a, b) in sorted(whole.funcs.items(), key=lambda kv: kv[1][1]):
        if a >= done:
            spans[name] = (a, b)
            done = b
    seeds: dict[str, dict[str, str]] = _annotated_params(whole, spans)
    progs: dict[str, jsp_flow.Program] = {}
    for _round in range(4):
        budget.spend(0)
        changed = False
        for name, (a, b) in spans.items():
            if name in progs and name not in seeds:
                continue
            prog = progs.get(name) or jsp_flow.Program(toks[a:b + 1], lang, budget)
            progs[name] = prog
            for pname, label in seeds.pop(name, {}).items():
                prog.seed([pname], label)
            for callee, params in _tainted_calls(prog, whole.funcs):
                if callee in spans:
                    known = progs.get(callee)
                    new = {p: lab for p, lab in params.items() if known is None or p not in known.tainted}
                    if new:
                        seeds.setdefault(callee, {}).update(new)
                        changed = True
        if not changed:
            break
    classes = set(re.findall(r"\bclass (\w+)", whole.text))
    _inserted_code(toks, budget, found, depth)
    for i in range(len(toks) - 1):
        if toks[i] == ("i", "static") and toks[i + 1] == ("o", "{"):
            # a static initialiser runs when the class is loaded: one that runs a command is a payload
            end = whole.close(i + 1)
            mine: list[Hit] = []
            _payload_class(jsp_flow.Program(toks[i + 1:end + 1], LANG, budget), mine, "readObject")
            found.extend(mine)
    for name, prog in progs.items():
        if name in _MESSAGE_HANDLERS:
            ps = whole.funcs[name][0]
            if ps:
                prog.seed(ps[:1], "WebSocket message")
        payload = name in classes or name == "readObject"
        if name in classes and whole.funcs[name][0]:
            prog.seed(whole.funcs[name][0], _PAYLOAD)
        _process_sinks(prog)
        mine: list[Hit] = []
        _judge(prog, mine, "jsp", el=False, depth=depth)
        if payload:
            mine = [h for h in mine if not h.source.startswith(_PAYLOAD[:20])]
            _payload_class(prog, mine, name)
        for h in mine:
            if h.rule.endswith("file-manager") and h.confidence >= 0.7 and not _ROOTED.search(prog.text):
                pass  # lists and reads (or changes) files at raw request paths, none under the web app's root
            elif h.rule.endswith("request-to-reflection") and h.confidence < 0.8 and h.confidence >= 0.5:
                # Class.forName of a configured name with nothing of Runtime about it: a plugin loader
                h = Hit(rule=h.rule, language=h.language, severity=Severity.LOW, confidence=0.45, source=h.source,
                        sink=h.sink, snippet=h.snippet, family=h.family, detail=h.detail + " (in a class)")
            elif h.severity != Severity.CRITICAL and h.confidence >= 0.5:
                # servlets handle uploads and files for a living; in a class only code execution counts
                h = Hit(rule=h.rule, language=h.language, severity=Severity.LOW, confidence=0.45, source=h.source,
                        sink=h.sink, snippet=h.snippet, family=h.family, detail=h.detail + " (in a class)")
            found.append(h)


_PAYLOAD = "payload class constructor parameter"

# Parameters a web framework fills from the request: Spring MVC, JAX-RS.
_REQUEST_ANNOTATIONS = frozenset({"RequestParam", "RequestHeader", "RequestBody", "PathVariable", "CookieValue",
                                  "RequestPart", "MatrixVariable", "QueryParam", "FormParam", "HeaderParam",
                                  "PathParam", "CookieParam", "BeanParam"})


_ANNOTATED = re.compile(r"@(?:" + "|".join(sorted(_REQUEST_ANNOTATIONS)) + r")\b")


def _annotated_params(whole: jsp_flow.Program, spans: dict) -> dict[str, dict[str, str]]:
    """{method: {parameter: label}} for the parameters annotated as request data (`@RequestParam String
    cmd`): a controller method's request, as getParameter is a servlet's."""
    toks = whole.toks
    out: dict[str, dict[str, str]] = {}
    if not _ANNOTATED.search(whole.text):
        return out
    for name, (_params, a, _b) in whole.funcs.items():
        if name not in spans or a < 2 or toks[a - 1] != ("o", ")"):
            continue
        depth, k = 0, a - 1
        while k > 0 and a - k < 400:
            if toks[k] == ("o", ")"):
                depth += 1
            elif toks[k] == ("o", "("):
                depth -= 1
                if depth == 0:
                    break
            k -= 1
        for seg in whole._split(k + 1, a - 1):
            segt = toks[seg[0]:seg[1]]
            ann = [segt[q + 1][1] for q in range(len(segt) - 1) if segt[q] == ("o", "@") and segt[q + 1][0] == "i"]
            if any(x in _REQUEST_ANNOTATIONS for x in ann):
                names = [t[1] for t in segt if t[0] == "i"]
                if names:
                    label = "@" + next(x for x in ann if x in _REQUEST_ANNOTATIONS) + " " + names[-1]
                    out.setdefault(name, {})[names[-1]] = label
    return out


# Javassist (and kin) compile Java source handed to them as strings into a loaded class: an agent that
# inserts code into the container's filter chain carries the shell's code as such a string.
_INSERT_CALLS = frozenset({"insertBefore", "insertAfter", "setBody", "insertAt", "make", "addCatch"})


def _inserted_code(toks, budget, found: list, depth: int) -> None:
    if depth >= 2:
        return
    parts = []
    for i in range(2, len(toks) - 2):
        if (toks[i][0] == "i" and toks[i][1] in _INSERT_CALLS and toks[i - 1] == ("o", ".")
                and toks[i + 1] == ("o", "(")):
            for t in toks[i + 2:i + 40]:
                if t == ("o", ";"):
                    break
                if t[0] == "s" and len(t[1]) > 12 and re.search(r"[;(]", t[1]):
                    parts.append(str(t[1]))
        if len(parts) >= 16:
            break
    if not parts:
        return
    mine: list[Hit] = []
    _scan_java("\n".join("{" + p + "}" for p in parts), budget, mine, "jsp", depth + 1, el=False)
    for h in mine:
        if h.confidence >= 0.5:
            found.append(Hit(rule="jsp.inserted-code", language="jsp", severity=h.severity, confidence=h.confidence,
                             source=h.source, sink=h.sink, snippet=h.snippet, family=h.family,
                             detail="code compiled into a loaded class (Javassist insertBefore/setBody): " + h.rule))


def _payload_class(prog: jsp_flow.Program, mine: list, name: str) -> None:
    """A class whose constructor runs its argument as a command, or whose readObject runs one: the
    payload a JNDI or deserialisation exploit makes the server instantiate."""
    for f in prog.flows():
        if f.sink.kind != "exec":
            continue
        if (f.state == "tainted" and f.source == _PAYLOAD) or (name == "readObject" and f.state != "tainted"):
            mine.append(_hit("jsp", "exec", 0.75, f, "", rule="payload-class"))
            return


def _tainted_calls(prog: jsp_flow.Program, funcs: dict):
    """(callee, {param: label}) for each call in `prog` passing request data to a method of the class."""
    toks = prog.toks
    for i in range(len(toks) - 1):
        t = toks[i]
        if t[0] != "i" or toks[i + 1] != ("o", "(") or t[1] not in funcs:
            continue
        if i and toks[i - 1][0] == "i" and toks[i - 1][1] not in ("return", "new", "throw"):
            continue  # a declaration
        params = funcs[t[1]][0]
        j = prog.close(i + 1)
        segs = prog._split(i + 2, j)
        out = {}
        for pos, seg in enumerate(segs):
            label = prog.taint_of(*seg)
            if label and pos < len(params):
                out[params[pos]] = label
        if out:
            yield t[1], out


_MESSAGE_HANDLERS = frozenset({"onMessage", "handleTextMessage", "handleMessage"})


def _seed_messages(prog: jsp_flow.Program) -> None:
    """A WebSocket endpoint's message handler: its first parameter is what the client sent."""
    for name, (ps, _a, _b) in prog.funcs.items():
        if name in _MESSAGE_HANDLERS and ps:
            prog.seed(ps[:1], "WebSocket message")


def _process_sinks(prog: jsp_flow.Program) -> None:
    """Writes to a started process's stdin (an interactive shell fed by the request)."""
    procs = set(re.findall(r"\b(\w+)=(?:\(\w+\))?[\w.]*(?:\([^()]*\))?(?:\.exec\(|\.start\(\))", prog.text))
    if not procs:
        return
    alt = "|".join(map(re.escape, sorted(procs)[:50]))
    writers = set(re.findall(r"\b(\w+)=new [\w.]+\((?:new [\w.]+\()?(?:" + alt + r")\.getOutputStream\(\)", prog.text))
    sinks = [_S(re.compile(r"\b(?:" + alt + r")\.getOutputStream\(\)\.(?:write|print|println)\("), "process stdin",
                "exec")]
    if writers:
        sinks.append(_S(re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(writers)[:50])) +
                                   r")\.(?:write|print|println|append)\("), "process stdin", "exec"))
    base = prog.lang
    prog.lang = jsp_flow.Lang(base.name, base.sources, base.sinks + sinks, base.breaks, base.flags, base.func_kw)


def _best(found: list[Hit]) -> list[Hit]:
    """One hit per rule and sink, the most confident first."""
    seen: dict[tuple[str, str], Hit] = {}
    for h in found:
        k = (h.rule, h.sink)
        if k not in seen or (h.confidence, _shows(h)) > (seen[k].confidence, _shows(seen[k])):
            seen[k] = h
    return sorted(seen.values(), key=lambda h: -h.confidence)


def _shows(h: Hit) -> bool:
    """The snippet holds the source itself: the clearest evidence of several equal hits."""
    return bool(h.source) and h.source[:40] in h.snippet


def _judge(prog: jsp_flow.Program, found: list[Hit], prefix: str, el: bool, depth: int) -> None:
    text = prog.text
    flows = prog.flows()
    has_source = any(s is not None for s in prog.src)
    family = _family(text)
    kinds = {f.sink.kind for f in flows if f.state == "tainted"}
    for f in flows:
        k = f.sink.kind
        if f.state == "tainted":
            conf = _CONF[k]
            if k == "files":
                # reading the file the request names counts as one more operation (a browser that lists
                # and shows any file); a page that only lists one folder stays below
                ops = len(set(_FILEOPS.findall(text))) + bool(_FILEREAD.search(text))
                if ops < 2:
                    continue
                conf = 0.5 + 0.1 * min(ops, 4)
            elif f.sink.name == "Part.write" and not re.search(r"getParameter|getHeader|getQueryString", f.source):
                continue  # saved under the name the upload itself gave: what every upload page does
            elif k in ("write", "writedata") and "files" in kinds:
                conf = max(conf, 0.7)
            elif k == "reflect" and not _RUNTIME.search(text) and "exec" not in kinds:
                conf = 0.6
            elif k == "jndi" and re.search(r"JdbcRowSetImpl|trustURLCodebase|setDataSourceName", text):
                conf = 0.9  # JNDI injection on purpose: a remote class loaded from an LDAP/RMI name
            elif k == "jndi" and _initial_lookup(f, text):
                # the name looked up is the request's, on an InitialContext (where ldap:// and rmi:// names
                # resolve): the server loads a remote class; a lookup in java:comp/env stays below
                conf = 0.6
            elif k in ("sql", "sqlconn"):
                if not {"sql", "sqlconn"} <= kinds:
                    continue
                conf = 0.7  # a SQL console: driver, server and query all from the request
            found.append(_hit(prefix, k, conf, f, family))
        elif f.state == "constant" and k == "exec" and _REVERSE.search(f.snippet):
            found.append(_hit(prefix, k, 0.9, f, family, rule="reverse-shell"))
        elif f.state == "constant" and k == "exec" and has_source and _bare_shell(prog, f):
            # a shell interpreter started with no command: what it runs is written to its stdin later,
            # from the request (an interactive shell kept in the session or a thread)
            found.append(_hit(prefix, k, 0.75, f, family, rule="interactive-shell"))
        elif f.state in ("constant", "unknown") and k == "eval" and depth < 3 and _inner(prog, f):
            inner = _inner(prog, f)
            if len(inner) > 6:
                before = len(found)
                _scan_java(inner, prog.budget, found, prefix, depth + 1, el=True)
                for q in range(before, len(found)):
                    h = found[q]
                    found[q] = Hit(rule=h.rule, language=h.language, severity=h.severity, confidence=h.confidence,
                                   source=h.source, sink=h.sink, snippet=h.snippet, family=h.family or family,
                                   detail=h.detail + " (inside evaluated constant)")
                if len(found) == before and re.search(r"\brequest\.get\w+\(|\bparam\.\w", inner):
                    # the evaluated code, pieced together, reads the request itself
                    found.append(_hit(prefix, k, 0.8, f, family))
        elif f.state in ("unknown", "constant") and k in ("exec", "eval", "classload", "reflect"):
            conf = 0.35
            if f.state == "unknown" and has_source:
                conf = 0.45
            if k == "classload" and family:
                conf = 0.9
            elif k == "classload" and _AES.search(text) and has_source:
                conf = 0.8
            elif k == "classload" and (re.search(r'"defineClass"|\$\$BCEL\$\$', text) or _long_b64(prog)):
                conf = 0.8  # bytecode carried in the page and defined at run time (a memory-shell injector)
            elif k == "classload" and re.search(r'"https?://[^"]+\.(?:jar|class)"', f.snippet):
                conf = 0.7
            elif k == "reflect" and _runtime_reflection(text):
                conf = 0.75 if has_source else 0.6
            elif f.state == "constant":
                continue
            found.append(_hit(prefix, k, conf, f, family))
    if family and not any(h.confidence >= 0.5 for h in found):
        # a loader shape whose taint we could not follow (the body read through a helper we do not model)
        if _CLASSLOADER.search(text) and (has_source or "session" in text):
            found.append(Hit(rule=f"{prefix}.{family}-loader", language="jsp", severity=Severity.CRITICAL,
                             confidence=0.85, source="request body", sink="defineClass",
                             snippet=clip(_around(text, "defineClass")), family=family,
                             detail="encrypted class loader shape"))
    if not el and _DB_TABLES.search(text) and _DB_SELECT.search(text) and _DB_FILE.search(text):
        # every table of a database read out and written to files: a dumper left on the server (the
        # credentials in the page, nothing from the request needed)
        m = _DB_SELECT.search(text)
        found.append(Hit(rule=f"{prefix}.db-dumper", language="jsp", severity=Severity.HIGH, confidence=0.6,
                         sink="every table to a file", snippet=clip(text[max(0, m.start() - 120): m.end() + 120]),
                         family=family, detail="dumps each table of the database to files"))
    if el and not found and _runtime_reflection(text):
        found.append(Hit(rule="jsp.el.reflection", language="jsp", severity=Severity.CRITICAL,
                         confidence=0.7, sink="reflection in EL", snippet=clip(_around(text, "forName")),
                         family=family, detail="EL reaches java.lang.Runtime by reflection"))
    for h in jsp_flow.embedded_hits(prog.toks, prog.budget, depth, "jsp"):
        found.append(Hit(rule=f"{prefix}.writes-web-shell", language="jsp", severity=Severity.CRITICAL,
                         confidence=0.85, source=h.source, sink=h.sink, snippet=h.snippet, family=h.family,
                         detail="a string constant is itself a web shell: " + h.rule))


_SHELLS = frozenset({"cmd", "cmd.exe", "/bin/sh", "/bin/bash", "sh", "bash", "/bin/zsh", "powershell",
                     "powershell.exe", "c:\\windows\\system32\\cmd.exe", "/bin/ksh", "/bin/csh"})


def _initial_lookup(f: jsp_flow.Flow, text: str) -> bool:
    # (InitialDirContext and InitialLdapContext resolve ldap:// and rmi:// names the same way)
    if re.search(r"Initial(?:Dir|Ldap)?Context\(\)\)*\.lookup\(", f.snippet):
        return True  # new InitialContext().lookup(x), ((Context) new InitialContext()).lookup(x)
    m = re.match(r"(?:new )?([\w.]+?)(?:\(\))?\.lookup\(", f.snippet)
    if not m:
        return False
    recv = m.group(1)
    return recv.endswith(("InitialContext", "InitialDirContext", "InitialLdapContext")) or bool(
        re.search(r"\b" + re.escape(recv) + r"=new (?:javax\.naming\.(?:directory\.|ldap\.)?)?"
                  r"Initial(?:Dir|Ldap)?Context\(", text))


def _bare_shell(prog: jsp_flow.Program, f: jsp_flow.Flow) -> bool:
    strs = [str(t[1]).strip().lower() for t in prog.toks[f.start:f.end] if t[0] == "s"]
    return len(strs) == 1 and strs[0] in _SHELLS


def _inner(prog: jsp_flow.Program, f: jsp_flow.Flow) -> str:
    """The code an eval sink is handed as string constants (the rest of its argument aside)."""
    i = prog.tok_at(prog.starts[f.start]) if f.start < len(prog.starts) else f.start
    toks = prog.toks[i:f.end]
    return " ".join(str(t[1]) for t in toks if t[0] == "s" and len(t[1]) > 6 and re.search(r"[(;.]", t[1]))


def _long_b64(prog: jsp_flow.Program) -> bool:
    return any(t[0] == "s" and len(t[1]) >= 2000 and jsp_lex.b64(t[1][:4000]) is not None for t in prog.toks)


def _runtime_reflection(text: str) -> bool:
    return bool(re.search(r'"java\.lang\.(?:Runtime|ProcessBuilder|ProcessImpl|UNIXProcess)"', text)) and \
        bool(re.search(r'"(?:exec|start|getRuntime|forkAndExec)"|\.invoke\(', text))


def _family(text: str) -> str:
    if _CLASSLOADER.search(text) and _AES.search(text) and (_BEHINDER.search(text) or _SESSION_KEY.search(text)):
        if _GODZILLA.search(text):
            return "godzilla"
        return "behinder"
    if _CLASSLOADER.search(text) and (_GODZILLA.search(text) or (_XOR.search(text) and "session" in text)):
        return "godzilla"
    if _ANTSWORD.search(text) and _CLASSLOADER.search(text):
        return "antsword"
    if re.search(r"JspSpy|jspspy", text):
        return "jspspy"
    return ""


def _around(text: str, word: str, n: int = 120) -> str:
    i = text.find(word)
    if i < 0:
        return text[:200]
    return text[max(0, i - n): i + n]


def _hit(prefix: str, kind: str, conf: float, f: jsp_flow.Flow, family: str, rule: str = "") -> Hit:
    rule = rule or {"exec": "request-to-exec", "eval": "request-to-eval", "classload": "request-to-classload",
                    "reflect": "request-to-reflection", "write": "request-to-file-write",
                    "writedata": "request-to-file-write", "files": "file-manager", "tunnel": "request-to-socket",
                    "sql": "sql-console", "sqlconn": "sql-console", "jndi": "request-to-jndi",
                    "deser": "request-to-deserialisation"}[kind]
    if f.state != "tainted":
        rule = rule.replace("request-to-", "dynamic-")
    return Hit(rule=f"{prefix}.{rule}", language="jsp", severity=_SEV[kind] if conf >= 0.5 else Severity.LOW,
               confidence=round(conf, 2), source=clip(f.source, 80), sink=f.sink.name, snippet=clip(f.snippet),
               family=family, detail=f.state)
