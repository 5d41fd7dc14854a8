"""Microsoft Script Encoder (`#@~^...^#~@`, .vbe/.jse and `language="VBScript.Encode"` pages).

The encoding is a fixed substitution: each printable character below 128 is replaced by one of
three values, the column picked by the character's position modulo 64 in a fixed sequence, and
'<', '>', '@', CR and LF are escaped with '@'. The tables below are the published constants of
the format (one column per hex string, entries for codes 9..127); the block's 8-character
header and trailer (length and checksum) are skipped."""

from __future__ import annotations

import re

_COLS = [bytes(9) + bytes.fromhex(h) for h in (
    "574a0b0c4a0e0f101112131415161718191a1b1c1d1e1f2e477a56426a2f26494134325b7672433839704568714f09624423754a7e4a5e"
    "40774a615d224b6f4e3b4c50672a7d74542b2d2c306e6b66352521644d52633f7b7829287359337f6d55537c3a5f65465831696c5a48"
    "275c3d24793760512036",
    "6e4c0b0c4c0e0f101112131415161718191a1b1c1d1e1f2d755260715e495c627d2936207c7a7f6b63332b68516676316454434c3a4c7e"
    "4c452c2a7427374479592f6f26726a397b3f387767534734785d30235a5b6c485570692e4c21244e5009567335614b583b57226d4d25"
    "28464a32413d5f4f4265",
    "7b410b0c410e0f101112131415161718191a1b1c1d1e1f323021295b38333d583a3565395c5673664e456b6259785e7d4a6d71416041"
    "5340422748727531374d5222546a47642d207f2e4c5d7e6c6f797443267625242b28234134092a443f773b55696163506751494f4668"
    "7c36706e7a2f5f4b5a2c57",
)]
_PICK = "0120121221210212021200122102122100212120200120210212001220012021"
_ESC = {"&": "\n", "#": "\r", "*": ">", "!": "<", "$": "@"}
_BLOCK = re.compile(r"#@~\^[A-Za-z0-9+/]{6}==(.*?)(?:[A-Za-z0-9+/]{6}==\^#~@|\Z)", re.S)


def decode(body: str, dbcs: bool = False) -> str:
    """One block's body (its header and trailer off). `body` holds the page's bytes one per character
    (latin-1). With `dbcs`, a byte >= 0x81 starts a two-byte character of a double-byte code page (GBK,
    Big5, Shift-JIS), which the encoder copied as it was, its trail byte (often in the ASCII range)
    neither encoded nor counted."""
    out = []
    index = -1
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if dbcs and "\x80" < ch < "\xff" and i + 1 < n:
            out.append(body[i:i + 2])
            i += 2
            continue
        if ch == "@" and i + 1 < n and body[i + 1] in _ESC:
            ch = _ESC[body[i + 1]]
            i += 1
        i += 1
        c = ord(ch)
        if c < 128:
            index += 1
        if (c == 9 or 31 < c < 128) and c not in (60, 62, 64):
            ch = chr(_COLS[int(_PICK[index % 64])][c])
        out.append(ch)
    return "".join(out)


# Words every VBScript/JScript page uses: how the right reading of a block is told from the wrong one.
_WORDS = re.compile(r"(?i)\b(?:end|if|then|else|dim|set|response|request|server|function|sub|var|return|for|next)\b")
_HIGH = re.compile(r"[\x81-\xfe]")


def _best(body: str, budget) -> str:
    budget.spend(len(body))
    plain = decode(body)
    if not _HIGH.search(body):
        return plain
    # Non-ASCII bytes: single-byte code page (each byte one character) or double-byte (a lead byte and a
    # trail byte copied as they are); the wrong guess turns the rest of the block into noise.
    budget.spend(len(body))
    wide = decode(body, dbcs=True)
    return wide if len(_WORDS.findall(wide)) > len(_WORDS.findall(plain)) else plain


def decode_all(text: str, budget) -> str:
    """The text with every encoded block decoded in place (the language attribute left as is). `text`
    holds the page's bytes one per character (latin-1), so that code-page bytes are seen as the encoder
    saw them."""
    text = _BLOCK.sub(lambda m: _best(m.group(1), budget), text)
    # `language="VBScript.Encode"` now holds plain VBScript
    return re.sub(r"(?i)(vbscript|jscript)\.encode", r"\1", text)
