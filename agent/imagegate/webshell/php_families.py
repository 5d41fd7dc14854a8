"""The PHP reader's verdict: what php_eval and php_calls recorded, weighed into Hits with a
confidence (framework and access-check guards lower it, shell habits raise it), and the family
recognisers (Behinder, Godzilla, China Chopper, file managers ...)."""

from __future__ import annotations

import re

from agent.imagegate.webshell.common import Hit, clip
from agent.imagegate.webshell.php_sinks import _AUTH, _DIR_LIST, _FRAMEWORK, _PHP_EXT, _RECON, _SYSINFO, EXEC_SINKS, Ctx
from agent.vocab import Severity

# -- families and confidence --------------------------------------------------------------------
_SEV = {"critical": Severity.CRITICAL, "high": Severity.HIGH, "medium": Severity.MEDIUM, "low": Severity.LOW}


_GLOBALS_CONFIRM = frozenset({"php.request-to-exec", "php.request-to-code", "php.request-function",
                              "php.request-include"})
_FIELD = re.compile(r"""<(?:input|textarea|select)\b[^>]*?\bname\s*=\s*\\?["']?([A-Za-z_][A-Za-z0-9_]*)""", re.I)


def _form_fields(ctx: Ctx) -> frozenset:
    """Names of the form fields the file's own HTML posts (bounded: the first 512)."""
    src = ctx.root_src or ""
    if "name" not in src:
        return frozenset()
    out = set()
    for m in _FIELD.finditer(src):
        out.add(m.group(1))
        if len(out) >= 512:
            break
    return frozenset(out)


_CAPTURE = frozenset({"ob_get_contents", "ob_get_clean", "fread", "stream_get_contents", "fgets", "join", "implode"})
# `$_GET['cmd']` read (often only in isset()) and `$cmd` used: the register_globals idiom
_REQ_KEY = re.compile(r"""\$_(?:GET|POST|REQUEST|COOKIE)\s*\[\s*\\?["']([A-Za-z_][A-Za-z0-9_]*)\\?["']\s*\]""")
# a command line that starts a compiler or an interpreter (b374k's "run this in C / Java / Perl ...")
_INTERP_RUN = re.compile(r"""["'](?:nohup\s+|cd\s+[^;"'$]{0,64};\s*)?"""
                         r"""(?:gcc|g\+\+|tcc|javac|java|python[23]?|perl|ruby|node|nodejs|lua|tclsh)\s""")


# a command line that deletes shell histories or login records: anti-forensics, not administration
_LOGS = r"(?:bash_history|sh_history|/var/log/|/var/run/utmp|wtmp|btmp|lastlog)"
_LOG_WIPE = re.compile(r"""["'][^"'\n]{0,120}?(?:\b(?:rm\s+-[a-z]*f|shred)\b[^"'\n]{0,80}?""" + _LOGS +
                       r"""|""" + _LOGS + r"""[^"'\n]{0,80}?(?:-exec\s+rm\b|-delete\b))""")


def _request_keys(ctx: Ctx) -> frozenset:
    """The superglobal keys the file names as literals (bounded: the first 512)."""
    src = ctx.root_src or ""
    if "$_" not in src:
        return frozenset()
    out = set()
    for m in _REQ_KEY.finditer(src):
        out.add(m.group(1))
        if len(out) >= 512:
            break
    return frozenset(out)


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
    fields = _form_fields(ctx) | _request_keys(ctx)
    code_run = _code_run(ctx, framework)
    if code_run is not None:
        hits.append(code_run)
    if not framework and not ctx.classes and ctx.calls.keys() & EXEC_SINKS:
        m = _LOG_WIPE.search(ctx.root_src or "")
        if m is not None:
            hits.append(Hit(rule="php.log-wipe", language="php", severity=Severity.HIGH, confidence=0.6,
                            sink=", ".join(sorted(ctx.calls.keys() & EXEC_SINKS)), snippet=clip(m.group(0)),
                            detail="runs commands that delete shell histories or system logs (an intruder's cleanup)"))
    for r in ctx.raw:
        fam = r["family"]
        conf = r["conf"]
        if r["rule"] in _GLOBALS_CONFIRM and conf < 0.5 and r["source"].endswith(" (register_globals)") \
                and r["source"][1:-len(" (register_globals)")] in fields and not framework:
            # the register_globals guess confirmed: the page's own form posts a field of that name, or
            # the page reads the same key from $_GET/$_POST itself (`if (isset($_GET['cmd'])) … $cmd`)
            conf += 0.3
        if r["rule"] in ("php.request-chmod", "php.request-symlink") and (
                framework or auth or ctx.classes or ctx.size >= 4096):
            conf -= 0.3
        if fallback and r["rule"] in ("php.request-to-exec", "php.request-include", "php.request-to-code") \
                and conf < 0.5 and r["source"]:
            conf += 0.2
        if r["rule"] == "php.exec-wrapper" and fallback and not auth:
            conf += 0.3
        elif r["rule"] == "php.exec-wrapper" and small and ctx.size < 2048 and not ctx.classes and \
                len(ctx.funcs) <= 3 and not auth and not framework and calls.keys() & _CAPTURE:
            # a page of little more than "run this command, hand me its output": the exec helper a
            # shell kit drops alone (its output captured through the output buffer or the pipe)
            conf += 0.25
        if r["rule"] == "php.uploader":
            conf = 0.75 if r["extra"].get("dest_tainted") or r["extra"].get("dest_script") else 0.45
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
        elif r["rule"] in ("php.request-file-write", "php.mailer", "php.request-connect"):
            if framework or auth:
                conf -= 0.3
            if r["rule"] == "php.request-connect" and (ctx.classes or library):
                conf -= 0.3  # a mail or HTTP client class connects where its caller says; tunnels are flat pages
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
    xsl = _xsl_callback(ctx)
    if xsl is not None:
        hits.append(xsl)
    fm = _file_manager(ctx, auth, framework)
    if fm is not None:
        hits.append(fm)
    if ctx.db_query or (ctx.db_connect and ctx.db_dump):
        conf = 0.55 + (0.2 if ctx.db_connect and ctx.db_query else 0.0)
        conf -= (0.3 if auth else 0.0) + (0.3 if framework else 0.0)
        snip = (f"query({ctx.db_query})" if ctx.db_query else "SHOW TABLES") + (
            f", connect({ctx.db_connect})" if ctx.db_connect else "")
        hits.append(Hit(rule="php.sql-client", language="php", severity=Severity.HIGH,
                        confidence=round(max(conf, 0), 3), source=ctx.db_query or ctx.db_connect, sink="SQL query",
                        family="sql-client", snippet=clip(snip),
                        detail=("runs SQL statements the request sends" if ctx.db_query else
                                "lists the tables of a database") + (
                            " on a server and account the request names" if ctx.db_connect else "")))
    if ctx.db_dump and ctx.db_all and not ctx.db_query and not ctx.db_connect and not ctx.classes \
            and not framework and not auth and len(ctx.funcs) < 8:
        # SHOW TABLES, then every row of each: a flat script that copies out a whole database
        hits.append(Hit(rule="php.db-dump", language="php", severity=Severity.HIGH, confidence=0.55,
                        source="", sink="SQL query", family="sql-client",
                        snippet="SHOW TABLES; SELECT * FROM <each table>",
                        detail="dumps every table of a database (a database theft script)"))
    if ctx.passwd_read and ctx.home_walk and not framework:
        # the account list read, then each account's home visited: the config grabbers and symlink
        # tools of shared hosting (every site's wp-config.php, one after another)
        hits.append(Hit(rule="php.account-crawl", language="php", severity=Severity.HIGH, confidence=0.6,
                        source="/etc/passwd", sink="/home/<user>/…", family="config-grabber",
                        snippet="read /etc/passwd; open /home/<each user>/…",
                        detail="walks every account's home directory from the system's account list"))
    if not code_hit and ctx.decrypt_taint and ctx.session_write and calls.keys() & {"eval", "assert"}:
        hits.append(Hit(rule="php.encrypted-payload", language="php", severity=Severity.CRITICAL, confidence=0.8,
                        source="request body", sink="eval", snippet="openssl_decrypt(request, session key) -> eval",
                        family="behinder", detail="decrypts the request with a session key and runs it"))
    if ctx.too_deep:
        hits.append(Hit(rule="php.nesting", language="php", severity=Severity.LOW, confidence=0.3,
                        detail="nesting deeper than the reader follows"))


def _code_run(ctx: Ctx, framework: bool) -> Hit | None:
    """Request data written to a file, and a compiler or interpreter started: code the request sends
    run in another language (C, Java, Perl, Python ...), out of reach of PHP's own sinks."""
    if framework or ctx.classes or not (ctx.calls.keys() & EXEC_SINKS):
        return None
    write = next((r for r in ctx.raw if r["rule"] == "php.request-file-write" and r["source"]), None)
    if write is None:
        return None
    m = _INTERP_RUN.search(ctx.root_src or "")
    if m is None:
        return None
    prog = m.group(0).strip("\"' ").split()[-1]
    return Hit(rule="php.request-code-run", language="php", severity=Severity.CRITICAL, confidence=0.7,
               source=write["source"], sink=prog, snippet=clip(f"{write['snippet']}; {m.group(0).strip()} …"),
               detail=f"request data written to a file that {prog} then compiles or runs")


# XSLT / XPath with PHP callbacks: `php:function('assert', ...)` in a stylesheet or an XPath query
# (XSLTProcessor::registerPHPFunctions, DOMXPath::registerPhpFunctions) calls a sink by name
_XSL_NS = re.compile(r"http://php\.net/(?:xsl|xpath)", re.I)
_XSL_CALL = re.compile(
    r"\b[A-Za-z_][\w-]*:function(?:String)?\(\s*\\?['\"]\s*(assert|system|exec|passthru|shell_exec|popen|"
    r"proc_open|eval|create_function|call_user_func|call_user_func_array|pcntl_exec)\s*\\?['\"]", re.I)


def _xsl_callback(ctx: Ctx) -> Hit | None:
    src = ctx.root_src or ""
    if "function" not in src or not _XSL_NS.search(src):
        return None
    m = _XSL_CALL.search(src)
    if m is None:
        return None
    return Hit(rule="php.xsl-callback", language="php", severity=Severity.CRITICAL, confidence=0.75,
               source="XML/XPath input", sink=m.group(1).lower(), snippet=clip(m.group(0)),
               detail="an XSLT stylesheet or XPath query calls a code or command sink through PHP callbacks")


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
    if ctx.self_delete:
        score += 0.15  # unlink(__FILE__): a tool that removes itself when done
    if ctx.pw_gate and not auth and not framework:
        score += 0.15  # behind its own fixed password
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
