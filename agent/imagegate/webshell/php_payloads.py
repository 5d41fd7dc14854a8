"""Dormant payloads: encoded PHP code a file carries without our reader seeing it run.

Shells often keep their working part as one base64 or hex constant and reach it through a path the
static reader cannot follow (a callee named by bytes we could not fold, a relay that prints the
payload for another page to include, a broken quote around a bareword). Wherever it is reached
from, the constant itself says what it does: decoded, it is PHP code in which request data reaches
a code or command sink. This module finds such constants (the file's string literals and
barewords, and constants handed to callees we could not name), decodes them statically (base64
or hex, then an optional zlib layer; nothing is run) and reads the result as a PHP file of its own,
on the same Budget. Ordinary code ships base64 too (images, fonts, keys, test fixtures); those
decode to binary or to text without PHP's request variables and sinks, so they cost a regex.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib

from agent.imagegate.webshell.php_sinks import Ctx, _raw

MIN_LEN = 24  # shorter encoded strings cannot hold a request-to-sink statement
MAX_CANDIDATES = 48  # encoded constants decoded per file (bounded work on a file of blobs)
MAX_ENCODED = 1 << 20  # longer constants are not decoded here (the budget still bounds the rest)

_B64 = re.compile(rf"[A-Za-z0-9+/_-]{{{MIN_LEN},}}={{0,2}}")
_HEX = re.compile(rf"(?:[0-9a-fA-F]{{2}}){{{MIN_LEN // 2},}}")
_WS = re.compile(r"\s+")
# an encoded string mixes digits with letters (hex) or both cases with digits or +/ (base64);
# identifiers and prose (camelCase names, snake_case words, sentences) are passed over unread
_HEXSTART = re.compile(r"\s*[0-9a-fA-F]{24}")
_LOWER = re.compile(r"[a-z]")
_UPPER = re.compile(r"[A-Z]")
_DIGIT = re.compile(r"[0-9+/]")


def _mixed(x: str) -> bool:
    h = x[:256]
    return bool(_HEXSTART.match(h) or (_LOWER.search(h) and _UPPER.search(h) and _DIGIT.search(h)))
# what decoded PHP with a shell in it shows before any reading: a request variable or a
# decoder, next to a code or command sink
_CODEISH = re.compile(
    r"\$_(?:GET|POST|REQUEST|COOKIE|SERVER|FILES)\b|php://input|getallheaders|"
    r"\b(?:eval|assert|system|exec|passthru|shell_exec|popen|proc_open|create_function|"
    r"base64_decode|gzinflate|gzuncompress|str_rot13|move_uploaded_file|fsockopen)\s*\(", re.I)
_SINKISH = re.compile(r"\b(?:eval|assert|system|exec|passthru|shell_exec|popen|proc_open|pcntl_exec|"
                      r"create_function|preg_replace|call_user_func|move_uploaded_file|file_put_contents|"
                      r"include|require)\b|`", re.I)
_SKIP_RULES = frozenset({"budget", "reader-error", "php.nesting", "php.decode-depth"})


def _printable(b: bytes) -> bool:
    if not b:
        return False
    good = sum(1 for c in b[:4096] if 32 <= c < 127 or c in (9, 10, 13))
    return good >= 0.9 * min(len(b), 4096)


def _inflate(b: bytes) -> bytes | None:
    """One zlib layer (raw deflate, zlib or gzip framing), bounded to 1 MB out."""
    for wbits in (-15, 15, 31):
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(b, 1 << 20)
            if out:
                return out
        except zlib.error:
            continue
    return None


def decode(text: str) -> str | None:
    """The PHP-looking text an encoded constant holds, or None (binary, prose, not encoded)."""
    s = _WS.sub("", text)
    if len(s) < MIN_LEN or len(s) > MAX_ENCODED:
        return None
    raw = None
    if _HEX.fullmatch(s):
        try:
            raw = binascii.unhexlify(s)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None and _B64.fullmatch(s) and not s.isalpha() and not s.isdigit():
        body = s.rstrip("=").replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
    if raw is None:
        return None
    if not _printable(raw):
        raw = _inflate(raw)
        if raw is None or not _printable(raw):
            return None
    out = raw.decode("latin-1")
    if not _CODEISH.search(out) or not _SINKISH.search(out):
        return None
    return out


def candidates(toks: list) -> list[str]:
    """The long string literals and barewords of a token list that may be encoded code."""
    # one comprehension over the tokens (this runs on every file): long literals and barewords only
    picked = [(k, v) for k, v in toks if (k == "str" or k == "id" or k == "istr") and len(v) >= (
        MIN_LEN if k != "istr" else 2)]
    long = [v for k, v in picked if k != "istr" and isinstance(v, str)]
    # a web shell written out as plain text inside another script (an exploit's payload, a dropper's
    # template): its constant parts, read as code
    plain = [v for v in long if "<?" in v and _SINKISH.search(v)]
    plain += ["".join(p for p in v if isinstance(p, str)) for k, v in picked if k == "istr" and len(v) < 64
              and any(isinstance(p, str) and "<?" in p for p in v)][:MAX_CANDIDATES]
    return list(dict.fromkeys([x for x in long if _mixed(x)] + plain))[: MAX_CANDIDATES * 4]


_RUN = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{64,}={0,2}")  # from a run's start only (no rescans)


def source_runs(src: str) -> list[str]:
    """Long base64 runs anywhere in a file's text: a payload cut apart by a broken quote is not one
    token, and one kept in a comment or an HTML part is not a literal at all."""
    out = []
    for m in _RUN.finditer(src):
        out.append(m.group(0))
        if len(out) >= MAX_CANDIDATES:
            break
    return out


def scan_payloads(ctx: Ctx, texts: list[str], where: str) -> None:
    """Decode each candidate; read the PHP it holds; record what a shell in it does."""
    if ctx.decode_depth >= ctx.budget.limits.max_decode_depth:
        return
    from agent.imagegate.webshell.php_calls import _subscan  # the reader, re-entered (same budget)

    tried = 0
    for text in texts:
        if tried >= MAX_CANDIDATES:
            break
        if len(_WS.sub("", text[:64])) < 8:
            continue
        ctx.budget.spend(len(text) // 8)
        lit = text.find("<?")
        code = text[lit:] if lit >= 0 and _CODEISH.search(text) and _SINKISH.search(text) else decode(text)
        if code is None:
            continue
        tried += 1
        key = ("payload", code[:200])
        if key in ctx.seen:
            continue
        ctx.seen.add(key)
        ctx.budget.spend(len(code))
        inner = _subscan(ctx, code if code.lstrip().startswith("<?") else "<?php " + code)
        best = max((h for h in inner if h["rule"] not in _SKIP_RULES), key=lambda h: h["conf"], default=None)
        if best is None or best["conf"] < 0.5:
            continue
        _raw(ctx, "php.encoded-payload", "high", round(min(0.85, best["conf"]), 3), best["source"],
             where if lit < 0 else "embedded script", best["snippet"],
             f"carries {'encoded ' if lit < 0 else ''}PHP code "
             f"({best['rule']}: {best['source'] or 'no request source'})",
             family=best["family"])


_PROGRAM_MARKS = (b"socket", b"system(", b"system ", b"exec ", b"exec(", b"wget ", b"curl ", b"/bin/sh", b"fork")


def _b64head(s: str) -> bytes | None:
    body = s[: len(s) // 4 * 4]
    try:
        return base64.b64decode(body, validate=True) if body else None
    except (binascii.Error, ValueError):
        return None


def _program(text: str) -> str:
    """What executable a base64 constant holds ("a Windows program", "an ELF program", "a Perl
    script" ...), or "" when it holds none. Only the head is decoded (bounded work)."""
    s = _WS.sub("", text[:2048])
    for _ in range(2):  # once more for a program encoded twice
        raw = _b64head(s[:1024])
        if raw is None or len(raw) < 64:
            return ""
        if raw[:2] == b"MZ" and (b"PE\0\0" in raw or b"program" in raw):
            return "a Windows program"
        if raw[:4] == b"\x7fELF":
            return "an ELF program"
        body = raw.split(b"\n", 1)[-1]  # past the #! line, which names the interpreter itself
        if raw[:2] == b"#!" and any(m in body for m in _PROGRAM_MARKS):
            first = raw[:64].split(b"\n", 1)[0].decode("latin-1", "replace").strip()
            return f"a script ({first[:40]})"
        if not _B64.fullmatch(raw[:256].decode("latin-1")):
            return ""
        s = raw.decode("latin-1")
    return ""


def embedded_programs(ctx: Ctx, texts: list[str]) -> None:
    """A program or a shell-side script carried as a base64 constant: the dropper's payload (a
    back-connect binary, a local exploit, a Perl bind shell) that the page writes out and starts.
    Web code has no reason to ship an executable inside its source."""
    tried = 0
    for text in texts:
        if tried >= MAX_CANDIDATES:
            break
        if len(text) < 96:
            continue
        tried += 1
        what = _program(text)
        if what:
            ctx.budget.spend(2048)
            _raw(ctx, "php.embedded-program", "high", 0.6, "", "encoded constant",
                 f"base64 constant ({len(text)} bytes) = {what}", f"carries {what} encoded in its source")
            return


_ROT13 = str.maketrans("ABCDEFGHIJKLMabcdefghijklmNOPQRSTUVWXYZnopqrstuvwxyz",
                       "NOPQRSTUVWXYZnopqrstuvwxyzABCDEFGHIJKLMabcdefghijklm")


def scan_transformed(ctx: Ctx, src: str) -> None:
    """A whole file kept reversed or in rot13 (`;)]'a'[TSOP_$(lave` ... `php?<`): a payload store that
    another script reads back with strrev/str_rot13 and runs. Read the text as PHP the way it is used."""
    if ctx.decode_depth >= ctx.budget.limits.max_decode_depth or len(src) < MIN_LEN:
        return
    from agent.imagegate.webshell.php_calls import _subscan

    low = src.lower()
    forms = []
    # reversed PHP: its open tag, or its keywords read backwards (a store with the tag cut off)
    if "php?<" in low or low.count("noitcnuf") + low.count("nruter") + low.count("ohce ") >= 3:
        forms.append(("reversed file", src[::-1]))
    if "<?cuc" in low:
        forms.append(("rot13 file", src.translate(_ROT13)))
    for where, text in forms:
        ctx.budget.spend(len(text))
        inner = _subscan(ctx, text if "<?" in text[:4096] else "<?php " + text)
        best = max((h for h in inner if h["rule"] not in _SKIP_RULES), key=lambda h: h["conf"], default=None)
        if best is not None and best["conf"] >= 0.5:
            _raw(ctx, "php.encoded-payload", "high", round(min(0.85, best["conf"]), 3), best["source"], where,
                 best["snippet"], f"a {where} holding PHP code ({best['rule']})", family=best["family"])
            return
