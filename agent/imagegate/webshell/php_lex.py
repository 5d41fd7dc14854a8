"""PHP tokenizer for the web-shell reader: PHP's token rules, no execution.

Text is handled as latin-1, so every byte is one character and a string literal's value is its
bytes (what base64_decode and friends see in PHP). Tokens are tuples `(kind, value)`:

  html   inline text outside <?php ... ?>         var    `$name` (value: name)
  str    a constant string literal (decoded)      istr   an interpolated string: list of parts
  shell  a backtick string: list of parts         num    int or float
  id     identifier or keyword (namespaces kept)  cast   `(int)`, `(string)` ... (value: type)
  op     operator or punctuation

Parts of `istr`/`shell` are str (constant text) or ("var", name), ("idx", name, key), where key is
a str/int/("var", name), ("prop", name, prop) or ("code", source) for `{$expr}` / `${expr}`.
Comments are dropped; `?>` becomes `;`. Unterminated strings, comments and heredocs run to the
end of the file, as PHP's own lexer would read them before failing."""

from __future__ import annotations

import re

from agent.imagegate.webshell.common import Budget

MAX_TOKENS = 600_000  # a 2 MB file of operators; past this the rest is not read

_OPEN = re.compile(r"<\?(?:php(?=[\s;]|$)|=|(?!xml))|<script\s+language\s*=\s*[\"']?php[\"']?\s*>", re.I)
_SCRIPT_CLOSE = re.compile(r"</script\s*>", re.I)
_WS_ID = r"[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*"
_TOKEN = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<var>\$" + _WS_ID + r")"
    r"|(?P<id>\\?" + _WS_ID + r"(?:\\" + _WS_ID + r")*)"
    r"|(?P<num>0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*)?\.\d[\d_]*(?:[eE][+-]?\d+)?"
    r"|\d[\d_]*(?:\.(?!\.)[\d_]*)?(?:[eE][+-]?\d+)?)"
    r"|(?P<cast>\(\s*(?:int|integer|bool|boolean|float|double|real|string|binary|array|object|unset)\s*\))"
    r"|(?P<op><<=|>>=|\*\*=|\.\.\.|<=>|===|!==|\?\?=|\?->|\*\*|\+\+|--|->|=>|::|==|!=|<>|<=|>=|&&|\|\||\?\?"
    r"|\+=|-=|\*=|/=|\.=|%=|&=|\|=|\^=|<<|>>|[-+*/%=<>!.,;:?()\[\]{}&|^~@$\\])",
    re.I,
)
_DQ_ESC = re.compile(
    r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|u\{([0-9a-fA-F]{1,6})\}|(.))|(\$\{|\{\$|\$" + _WS_ID + r")",
    re.S,
)
_SIMPLE_ESC = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "e": "\x1b", "f": "\f", "\\": "\\", "$": "$", "0": "\0"}
_KEY = re.compile(r"\[(-?\d+|" + _WS_ID + r"|\$" + _WS_ID + r")\]")
_PROP = re.compile(r"->(" + _WS_ID + r")")
_HEREDOC = re.compile(r"<<<[ \t]*(['\"]?)(" + _WS_ID + r")\1\r?\n")


def _u8(cp: int) -> str:
    # \u{...} is UTF-8 bytes in PHP; as latin-1 characters here.
    try:
        return chr(cp).encode("utf-8").decode("latin-1")
    except (ValueError, UnicodeEncodeError):
        return ""


def _find_close(s: str, pos: int, quote: str) -> int:
    """Index of the unescaped closing quote at or after pos, or -1."""
    while True:
        i = s.find(quote, pos)
        if i < 0:
            return -1
        j = i - 1
        while j >= pos and s[j] == "\\":
            j -= 1
        if (i - 1 - j) % 2 == 0:
            return i
        pos = i + 1


_DQ_SPECIAL = {q: re.compile(r"\\.|\{\$|" + re.escape(q), re.S) for q in ('"', "`")}
MAX_BRACE = 4096  # a `{$expr}` longer than this is not one (the quote inside it closes the string)


def _find_dq_close(s: str, pos: int, quote: str) -> int:
    """As _find_close for a double-quoted (or backtick) string, whose `{$expr}` parts may hold the
    quote themselves: "{$_GET["x"]}" is one string in PHP."""
    pat = _DQ_SPECIAL[quote]
    while True:
        m = pat.search(s, pos)
        if m is None:
            return -1
        t = m.group()
        if t == quote:
            return m.start()
        if t == "{$":
            end = _match_brace(s, m.start(), m.start() + MAX_BRACE)
            if end < 0:
                pos = m.end()  # unbalanced: read on as before, the next quote closes
            else:
                pos = end
            continue
        pos = m.end()


def _match_brace(s: str, pos: int, limit: int | None = None) -> int:
    """Index after the `}` closing the `{` at pos (strings inside skipped roughly), or len(s);
    with a limit, -1 when no close comes before it."""
    depth = 0
    i, n = pos, len(s)
    stop = n if limit is None else min(n, limit)
    while i < stop:
        c = s[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif c in "'\"":
            j = _find_close(s, i + 1, c)
            if j < 0:
                return n if limit is None else -1
            i = j
        i += 1
    return n if limit is None else -1


def interpolate(body: str, heredoc: bool = False) -> list:
    """A double-quoted/heredoc/backtick body as parts: constant text and interpolated variables."""
    parts: list = []
    buf: list[str] = []
    pos = 0
    for m in _DQ_ESC.finditer(body):
        if m.start() < pos:
            continue
        buf.append(body[pos:m.start()])
        pos = m.end()
        if m.group(5) is None:
            octal, hexa, uni, ch = m.group(1), m.group(2), m.group(3), m.group(4)
            if octal is not None:
                buf.append(chr(int(octal, 8) & 0xFF))
            elif hexa is not None:
                buf.append(chr(int(hexa, 16)))
            elif uni is not None:
                buf.append(_u8(int(uni, 16)))
            elif ch in _SIMPLE_ESC and not (ch == "0"):
                buf.append(_SIMPLE_ESC[ch])
            elif ch == '"' and not heredoc:
                buf.append('"')
            else:
                buf.append("\\" + ch)
            continue
        tok = m.group(5)
        if buf:
            parts.append("".join(buf))
            buf = []
        if tok == "{$":
            end = _match_brace(body, m.start())
            parts.append(("code", body[m.start() + 1:end - 1]))
            pos = end
        elif tok == "${":
            end = _match_brace(body, m.start() + 1)
            inner = body[m.start() + 2:end - 1]
            if re.fullmatch(_WS_ID, inner):
                parts.append(("var", inner))
            else:
                parts.append(("code", "${" + inner + "}"))
            pos = end
        else:
            name = tok[1:]
            k = _KEY.match(body, pos)
            p = _PROP.match(body, pos) if k is None else None
            if k is not None:
                key = k.group(1)
                if key.startswith("$"):
                    keyv: object = ("var", key[1:])
                elif key.lstrip("-").isdigit():
                    keyv = int(key)
                else:
                    keyv = key
                parts.append(("idx", name, keyv))
                pos = k.end()
            elif p is not None:
                parts.append(("prop", name, p.group(1)))
                pos = p.end()
            else:
                parts.append(("var", name))
    buf.append(body[pos:])
    tail = "".join(buf)
    if tail:
        parts.append(tail)
    return parts


def _string_token(parts: list, kind: str = "istr") -> tuple:
    if kind == "istr" and all(isinstance(p, str) for p in parts):
        return ("str", "".join(parts))
    return (kind, parts)


def _number(text: str):
    t = text.replace("_", "").lower()
    try:
        if t.startswith("0x"):
            return int(t[2:] or "0", 16)
        if t.startswith("0b"):
            return int(t[2:] or "0", 2)
        if t.startswith("0o"):
            return int(t[2:] or "0", 8)
        if "." in t or "e" in t:
            return float(t)
        if len(t) > 1 and t.startswith("0"):
            return int(t, 8) if all(c in "01234567" for c in t) else int(t)
        return int(t)
    except ValueError:
        return 0


def tokenize(src: str, budget: Budget, php_mode: bool = False) -> tuple[list[tuple], dict]:
    """Tokens of one PHP file (or of decoded code when php_mode: eval's argument starts in PHP).
    The dict holds statistics the statistical layer uses (longest literal, literal bytes)."""
    toks: list[tuple] = []
    stats = {"longest": 0, "literal_bytes": 0, "html_bytes": 0, "truncated": False}
    n = len(src)
    pos = 0
    if not php_mode:
        pos = _html(src, 0, toks, stats)
    append = toks.append
    since = 0
    while pos < n:
        since += 1
        if since >= 4096:
            since = 0
            budget.spend(0)
            if len(toks) > MAX_TOKENS:
                stats["truncated"] = True
                break
        c = src[pos]
        if c == "'":
            end = _find_close(src, pos + 1, "'")
            body = src[pos + 1:end] if end >= 0 else src[pos + 1:]
            if "\\" in body:
                body = body.replace("\\\\", "\0\0").replace("\\'", "'").replace("\0\0", "\\")
            _lit(stats, len(body))
            append(("str", body))
            pos = end + 1 if end >= 0 else n
            continue
        if c == '"' or c == "`":
            end = _find_dq_close(src, pos + 1, c)
            body = src[pos + 1:end] if end >= 0 else src[pos + 1:]
            _lit(stats, len(body))
            parts = interpolate(body)
            append(_string_token(parts, "istr" if c == '"' else "shell"))
            pos = end + 1 if end >= 0 else n
            continue
        if c == "?" and src.startswith("?>", pos):
            append(("op", ";"))
            pos += 2
            if src.startswith("\n", pos):
                pos += 1
            elif src.startswith("\r\n", pos):
                pos += 2
            pos = _html(src, pos, toks, stats)
            continue
        if c == "#" or (c == "/" and src.startswith("//", pos)):
            nl = src.find("\n", pos)
            close = src.find("?>", pos, nl if nl >= 0 else n)
            if close >= 0:
                pos = close
            else:
                pos = nl if nl >= 0 else n
            continue
        if c == "/" and src.startswith("/*", pos):
            end = src.find("*/", pos + 2)
            if end >= 0:
                pos = end + 2
            else:
                # unterminated: PHP stops here; reading on from the next ?> keeps what an older
                # or more lenient interpreter would have run
                close = src.find("?>", pos + 2)
                pos = close if close >= 0 else n
            continue
        if c == "<" and src.startswith("</", pos) and _SCRIPT_CLOSE.match(src, pos):
            append(("op", ";"))  # <script language="php"> ... </script>
            pos = _html(src, _SCRIPT_CLOSE.match(src, pos).end(), toks, stats)
            continue
        if c == "<" and src.startswith("<<<", pos):
            m = _HEREDOC.match(src, pos)
            if m is not None:
                label = m.group(2)
                close = re.compile(r"\r?\n[ \t]*" + re.escape(label) + r"(?![A-Za-z0-9_\x80-\xff])")
                body_start = m.end()
                cm = close.search(src, body_start - 1)
                if cm is None:
                    body, pos = src[body_start:], n
                else:
                    body, pos = src[body_start:max(body_start, cm.start())], cm.end()
                _lit(stats, len(body))
                if m.group(1) == "'":
                    append(("str", body))
                else:
                    append(_string_token(interpolate(body, heredoc=True)))
                continue
        m = _TOKEN.match(src, pos)
        if m is None:
            pos += 1  # a byte PHP would reject: skip it, keep reading
            continue
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        text = m.group()
        if kind == "var":
            append(("var", text[1:]))
        elif kind == "id":
            append(("id", text))
        elif kind == "num":
            append(("num", _number(text)))
        elif kind == "cast":
            append(("cast", text[1:-1].strip().lower()))
        else:
            append(("op", text))
    return toks, stats


def _lit(stats: dict, n: int) -> None:
    stats["literal_bytes"] += n
    if n > stats["longest"]:
        stats["longest"] = n


def _html(src: str, pos: int, toks: list, stats: dict) -> int:
    """Skip inline HTML from pos; return the index after the next open tag (or len(src))."""
    m = _OPEN.search(src, pos)
    end = m.start() if m else len(src)
    if end > pos:
        toks.append(("html", src[pos:end]))
        stats["html_bytes"] += end - pos
    if m is None:
        return len(src)
    if m.group().endswith("="):
        toks.append(("id", "echo"))
    return m.end()
