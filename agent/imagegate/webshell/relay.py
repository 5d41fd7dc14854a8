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
_REMOTE = re.compile(r'"https?://(?!localhost\b|127\.|\[::1\])[\w.-]{1,253}\.[\w-]{1,63}(?::\d+)?(?:/[^"\s]{0,2000})?"', _I)
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
