"""Pages that show what a remote host sends: SEO parasites and remote-controlled pages (ASP, ASP.NET,
JSP), read over a folded program's canonical text (jsp_flow.Program.text).

A planted page of this kind holds no command sink: it reports the site it sits on (HTTP_HOST,
SCRIPT_NAME, the query) to a host its author runs, fetches from there, and writes the answer into the
page, often only for search-engine crawlers (cloaking), or sends the crawlers elsewhere. Its author
changes the page's content at will, without touching the server again. Two shapes count:

- relay: a server-side HTTP fetch of a constant remote URL, the site's own address or a crawler test in
  the page, and the fetched content written out;
- crawler gate: the User-Agent or Referer compared with search-engine names, and the answer a remote
  fetch (a redirect alone is not enough: forums send spam bots away the same way).

Benign pages fetch remote content too (a feed, a weather box), but do not pass the site's own address
to it and do not answer crawlers differently from people; those two are what the shapes need."""

from __future__ import annotations

import re

from agent.imagegate.webshell.common import Hit, clip
from agent.vocab import Severity

_I = re.I
_FETCH = re.compile(r"xmlhttp|winhttp|msxml2\.|\bnew (?:system\.net\.)?webclient\b|httpwebrequest|webrequest\.create"
                    r"|\.openconnection\(|\.openstream\(|\bhttpclient\b|\.downloadstring\b", _I)
_FETCH_WORDS = ("xmlhttp", "winhttp", "msxml2.", "webclient", "httpwebrequest", "webrequest.create", "openconnection(",
                "openstream(", "httpclient", "downloadstring")
# a constant URL of another host (not this one, not a loopback address)
_REMOTE = re.compile(r'"https?://(?!localhost\b|127\.|\[::1\])[\w.-]{1,253}\.[\w-]{1,63}(?::\d+)?'
                     r'(?:/[^"\s]{0,2000})?"', _I)
_SELF = re.compile(r'servervariables[(\[]"(?:http_host|server_name|script_name|url|query_string|path_info)"'
                   r"|\bRequest\.Url\b|\.(?:getRequestURL|getServerName|getRequestURI|getQueryString)\(", _I)
_CRAWLER = re.compile(r'"[^"]{0,40}(?:baidu|googlebot|google|360spider|haosou|sogou|soso|yisou|bingbot|yahoo|'
                      r'spider|bot\b)[^"]{0,40}"', _I)
_UA = re.compile(r"http_user_agent|http_referer|user-agent|\bUserAgent\b|\bUrlReferrer\b|\"referer\"", _I)
_ECHO = re.compile(r"response\.(?:write|binarywrite)\b|\bout\.(?:print|println|write)\(|\.getWriter\(\)", _I)


def remote_relay(text: str, found: list, lang: str, language: str) -> None:
    """Appends one Hit when the program's text (folded, canonical) is a relay or a crawler gate."""
    if len(text) > 400_000:
        return  # a planted page is small; a large tool has its own shapes
    low = text.lower()
    if not any(w in low for w in _FETCH_WORDS):
        return  # every shape needs a server-side fetch (plain substring tests: most pages have none)
    fetch = _FETCH.search(text)
    remote = _REMOTE.search(text)
    crawler = _CRAWLER.search(text) if _UA.search(text) else None
    m = None
    if fetch and remote and (_SELF.search(text) or crawler) and _ECHO.search(text):
        m, what = remote, "writes what a remote host sends into the page, given the site's own address" \
            if not crawler else "writes what a remote host sends into the page for search-engine crawlers"
    elif crawler and fetch and remote:
        m, what = crawler, "answers search-engine crawlers with another site's content (cloaking)"
    if m is None:
        return
    found.append(Hit(rule=f"{lang}.remote-relay", language=language, severity=Severity.HIGH, confidence=0.6,
                     source="remote host", sink=(fetch.group(0) if fetch else "redirect"),
                     snippet=clip(text[max(0, m.start() - 120): m.end() + 120]), family="seo-parasite",
                     detail=what))


# --- an open proxy: the server fetches what the request names and hands it back ------------------------

_HTTP_OBJ = re.compile(r'\b(\w+)=(?:server\.)?(?:createobject|new activexobject)\("[^"]*(?:xmlhttp|winhttp)', _I)
_ECHO_FETCHED = re.compile(r"\.response(?:text|body|stream)\b|\.(?:DownloadString|DownloadData|OpenRead)\("
                           r"|\.(?:openStream|openConnection|getInputStream)\(", _I)
_CS_FETCH = re.compile(r"\.(?:DownloadString|DownloadData|OpenRead)\(|\bWebRequest\.Create\("
                       r"|\bnew (?:java\.net\.)?URL\(")
_MAX_OPENS = 32


def request_proxy(prog, found: list, lang: str) -> None:
    """A server-side HTTP request to a URL the request gives, its answer written back: a proxy through the
    server (to the intranet, to file:// paths the HTTP object also reads) that the page hands any client.
    `prog` is the page's folded program (jsp_flow.Program)."""
    text = prog.text
    low = text.lower()
    if not any(w in low for w in _FETCH_WORDS) or not _ECHO.search(text) or not _ECHO_FETCHED.search(text):
        return
    objs = {m.group(1).lower() for m in _HTTP_OBJ.finditer(text)}
    calls = []
    for m in re.finditer(r"\b(\w+)\.open\b", text, _I):
        if m.group(1).lower() in objs:
            calls.append(m)
        if len(calls) >= _MAX_OPENS:
            break
    calls += list(_CS_FETCH.finditer(text))[:_MAX_OPENS]
    for m in calls:
        a = prog.tok_at(m.end() - 1) + 1
        b = min(prog.stmt_end(a), a + 200)  # (the URL is among the first arguments: a bounded window)
        segs = prog._split(a, b)
        # open(method, url, ...) / DownloadString(url): the URL argument
        seg = segs[1] if m.group(0).lower().endswith("open") and len(segs) > 1 else segs[0] if segs else None
        if seg is None:
            continue
        head = prog.toks[seg[0]]
        if head[0] == "s" and re.match(r"(?i)\s*https?://[^/\s]+", str(head[1])):
            continue  # a fixed host the request only adds a path or a query to: an API call, not a proxy
        label = prog.taint_of(*seg)
        if label:
            found.append(Hit(rule=f"{lang}.request-proxy", language=lang, severity=Severity.HIGH, confidence=0.55,
                             source=clip(label, 80), sink="server-side HTTP request",
                             snippet=clip(prog.code(prog.tok_at(m.start()), min(b + 1, len(prog.toks)))),
                             detail="fetches the URL the request names and writes the answer back"))
            return
