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

from agent.imagegate.webshell import jsp_flow, jsp_lex
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
    r"\bparam(?:Values)?(?:\.|\[)",  # EL implicit objects (in ${...} only; scriptlet names rarely collide)
    r"\bpageContext\.request\.",
    r"\bheader(?:Values)?\[",
)]

_S = jsp_flow.Sink
_RUNTIME = re.compile(r'"java\.lang\.(?:Runtime|ProcessBuilder|ProcessImpl|UNIXProcess)"|getRuntime|ProcessBuilder'
                      r'|"exec"|"start"')
SINKS = [
    _S(re.compile(r"\.exec\("), "Runtime.exec", "exec", needs=re.compile(r"Runtime|\bexec\b")),
    _S(re.compile(r"\bnew(?: java\.lang\.)? ProcessBuilder\("), "new ProcessBuilder", "exec"),
    _S(re.compile(r"\.command\("), "ProcessBuilder.command", "exec", needs=re.compile(r"ProcessBuilder")),
    _S(re.compile(r"\.start\(\)"), "ProcessBuilder.start", "exec", receiver=True,
       needs=re.compile(r"ProcessBuilder|ProcessImpl")),
    _S(re.compile(r"\.invoke\("), "Method.invoke", "exec", receiver=True, needs=_RUNTIME),
    _S(re.compile(r"\bClass\.forName\("), "Class.forName", "reflect"),
    _S(re.compile(r"\.(?:getMethod|getDeclaredMethod)\("), "getMethod", "reflect"),
    _S(re.compile(r"\.eval\("), "ScriptEngine.eval", "eval",
       needs=re.compile(r"ScriptEngine|getEngineBy|ELProcessor|Interpreter|GroovyShell")),
    _S(re.compile(r"\.(?:createValueExpression|createMethodExpression|parseExpression|evaluate|getValue)\("),
       "expression evaluation", "eval",
       needs=re.compile(r"ExpressionFactory|ELProcessor|ELContext|SpelExpressionParser|Ognl|GroovyShell"
                        r"|ExpressionParser|MVEL")),
    _S(re.compile(r"\b(?:Ognl\.getValue|MVEL\.eval)\("), "OGNL/MVEL", "eval"),
    _S(re.compile(r"\bdefineClass\w*\("), "defineClass", "classload"),
    _S(re.compile(r"\.newInstance\(\)"), "Class.newInstance", "classload", receiver=True,
       needs=re.compile(r"defineClass|ClassLoader")),
    _S(re.compile(r"\bnew(?: java\.net\.)? URLClassLoader\("), "URLClassLoader", "classload"),
    _S(re.compile(r"\.loadClass\("), "ClassLoader.loadClass", "classload"),
    _S(re.compile(r"\bnew(?: java\.io\.)? (?:FileOutputStream|FileWriter|RandomAccessFile|PrintWriter)\("),
       "file write", "write"),
    _S(re.compile(r"\bFiles\.(?:write|copy|writeString|newOutputStream)\("), "Files.write", "write"),
    _S(re.compile(r"\.(?:write|print|println)\("), "stream write", "writedata", receiver=False,
       needs=re.compile(r"FileOutputStream|FileWriter|RandomAccessFile")),
    _S(re.compile(r"\bnew(?: java\.io\.)? File\("), "new File", "files"),
]
LANG = jsp_flow.Lang("java", SOURCES, SINKS)

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

_SEV = {"exec": Severity.CRITICAL, "eval": Severity.CRITICAL, "classload": Severity.CRITICAL,
        "reflect": Severity.CRITICAL, "write": Severity.HIGH, "writedata": Severity.HIGH,
        "files": Severity.HIGH}


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
    text = data.decode("utf-8", "replace") if not data.startswith(b"\xff\xfe") else data.decode("utf-16", "replace")
    code, el = extract(text, budget)
    if not code.strip() and not el.strip():
        return
    code = jsp_lex.java_unicode(code)
    found: list[Hit] = []
    if code.strip():
        toks = jsp_lex.fold(jsp_lex.lex(code, budget, single_quote_string=False), budget)
        prog = jsp_flow.Program(toks, LANG, budget)
        _judge(prog, found, "jsp", el=False)
    if el.strip():
        toks = jsp_lex.fold(jsp_lex.lex(el, budget, single_quote_string=True), budget)
        prog = jsp_flow.Program(toks, LANG, budget)
        _judge(prog, found, "jsp.el", el=True)
    hits.extend(_best(found))


def _best(found: list[Hit]) -> list[Hit]:
    """One hit per rule and sink, the most confident first."""
    seen: dict[tuple[str, str], Hit] = {}
    for h in found:
        k = (h.rule, h.sink)
        if k not in seen or h.confidence > seen[k].confidence:
            seen[k] = h
    return sorted(seen.values(), key=lambda h: -h.confidence)


def _judge(prog: jsp_flow.Program, found: list[Hit], prefix: str, el: bool) -> None:
    text = prog.text
    flows = prog.flows()
    has_source = any(s is not None for s in prog.src)
    family = _family(text)
    kinds = {f.sink.kind for f in flows if f.state == "tainted"}
    for f in flows:
        k = f.sink.kind
        if f.state == "tainted":
            conf = {"exec": 0.95, "eval": 0.9, "classload": 0.95, "reflect": 0.85, "write": 0.6,
                    "writedata": 0.55, "files": 0.4}[k]
            if k == "files":
                ops = len(set(_FILEOPS.findall(text)))
                if ops < 2:
                    continue
                conf = 0.5 + 0.1 * min(ops, 4)
            if k in ("write", "writedata") and "files" in kinds:
                conf = max(conf, 0.7)
            if k == "reflect" and not _RUNTIME.search(text) and "exec" not in kinds:
                conf = 0.6
            found.append(_hit(prefix, k, conf, f, family))
        elif f.state == "unknown" and k in ("exec", "eval", "classload", "reflect"):
            conf = 0.35
            if has_source:
                conf = 0.45
            if k == "classload" and family:
                conf = 0.9
            if k == "classload" and _AES.search(text) and has_source:
                conf = max(conf, 0.8)
            if k == "reflect" and _runtime_reflection(text):
                conf = 0.75 if has_source else 0.6
            found.append(_hit(prefix, k, conf, f, family))
    if family and not any(h.confidence >= 0.5 for h in found):
        # a loader shape whose taint we could not follow (the body read through a helper we do not model)
        if _CLASSLOADER.search(text) and (has_source or "session" in text):
            found.append(Hit(rule=f"{prefix}.{family}-loader", language="jsp", severity=Severity.CRITICAL,
                             confidence=0.85, source="request body", sink="defineClass",
                             snippet=clip(_around(text, "defineClass")), family=family,
                             detail="encrypted class loader shape"))
    if el and not found and _runtime_reflection(text):
        found.append(Hit(rule="jsp.el.reflection", language="jsp", severity=Severity.CRITICAL,
                         confidence=0.7, sink="reflection in EL", snippet=clip(_around(text, "forName")),
                         family=family, detail="EL reaches java.lang.Runtime by reflection"))


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


def _hit(prefix: str, kind: str, conf: float, f: jsp_flow.Flow, family: str) -> Hit:
    rule = {"exec": "request-to-exec", "eval": "request-to-eval", "classload": "request-to-classload",
            "reflect": "request-to-reflection", "write": "request-to-file-write", "writedata": "request-to-file-write",
            "files": "file-manager"}[kind]
    if f.state != "tainted":
        rule = rule.replace("request-to-", "dynamic-")
    return Hit(rule=f"{prefix}.{rule}", language="jsp", severity=_SEV[kind] if conf >= 0.5 else Severity.LOW,
               confidence=round(conf, 2), source=clip(f.source, 80), sink=f.sink.name, snippet=clip(f.snippet),
               family=family, detail=f.state)
