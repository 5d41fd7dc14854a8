"""The optional statistical layer of the web-shell detector: a few shallow trees over what the readers
already found and cheap byte-level measures of the file, which may ADD a finding to a file the readers
left just under THRESHOLD. It never removes or changes a reader's hit.

The model is a JSON data file shipped beside this module (model.json, written by
scripts/train_webshell_model.py from the tune split of the MANIFEST, whose hash it records). Inference is
ours and tiny: walk each tree, sum, sigmoid, Platt-calibrate. The layer is switched by
`Limits.model` (a path; "" turns it off); a missing or unreadable file makes it the null object (no
finding), logged once. Feature extraction is bounded: a handful of linear regex passes over the bytes the
scan already read (at most Limits.max_bytes), no second parse.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass

from agent.imagegate.webshell.common import THRESHOLD, Hit, clip, entropy
from agent.vocab import Severity

log = logging.getLogger("nodewarden.imagegate.webshell")

FORMAT = 1
# One model per reader family: ASP and ASP.NET share one (few benign samples each); ColdFusion, Perl and
# Python have no benign samples to pick a threshold on, so no model.
GROUP = {"php": "php", "jsp": "jsp", "asp": "asp", "aspx": "asp"}

# Tokens counted in the lower-cased bytes, by kind. Counts are per file; densities per KB come from them.
_TOKENS: dict[str, tuple[str, ...]] = {
    "sink": (
        "eval", "assert", "system", "exec", "passthru", "shell_exec", "popen", "proc_open", "pcntl_exec",
        "create_function", "call_user_func", "call_user_func_array", "array_map", "array_filter", "usort",
        "preg_replace", "register_shutdown_function", "reflectionfunction", "include", "require",
        "include_once", "require_once", "runtime", "getruntime", "processbuilder", "defineclass",
        "classloader", "scriptengine", "executeglobal", "execute", "wscript", "createobject",
        "process", "assembly", "invoke", "getmethod", "forname",
    ),
    "decode": (
        "base64_decode", "gzinflate", "gzuncompress", "gzdecode", "str_rot13", "strrev", "hex2bin",
        "convert_uudecode", "pack", "chr", "ord", "urldecode", "rawurldecode", "openssl_decrypt",
        "mcrypt_decrypt", "base64decoder", "decodebuffer", "frombase64string", "cipher", "xor",
        "str_replace", "substr", "strtr",
    ),
    "request": (
        "_get", "_post", "_request", "_cookie", "_server", "_files", "getallheaders", "php://input",
        "getparameter", "getinputstream", "getheader", "querystring", "form", "request", "getreader",
    ),
    "files": (
        "opendir", "readdir", "scandir", "unlink", "rmdir", "chmod", "fopen", "fwrite", "fputs",
        "file_put_contents", "file_get_contents", "move_uploaded_file", "copy", "rename", "mkdir",
        "is_writable", "fileperms", "posix_getpwuid", "disk_free_space", "php_uname", "ini_get",
        "safe_mode", "getcwd", "filemanager", "fileoutputstream", "listfiles", "savefile", "fsockopen",
        "socket", "mysql_connect", "mail",
    ),
    "words": (
        "shell", "cmd", "command", "upload", "password", "pass", "pwd", "hack", "backdoor", "bypass",
        "uname", "whoami", "passwd", "root", "c99", "r57", "wso",
    ),
    "frame": (
        "namespace", "class", "function", "public", "private", "protected", "static", "return", "use",
        "param", "license", "copyright", "interface", "extends", "implements", "package", "import",
        "this",
    ),
}
_WORD = re.compile(
    rb"\$?[a-z_][a-z0-9_]*(?:://[a-z]+)?"  # identifiers, $_GET (the $ dropped below), php://input
)
_KIND = {t: k for k, ts in _TOKENS.items() for t in ts}
_B64 = re.compile(rb"[A-Za-z0-9+/]{40,}={0,2}")
_HEX_ESC = re.compile(rb"\\x[0-9a-fA-F]{2}|\\[0-7]{3}")
_NONTEXT = bytes(range(0, 9)) + bytes(range(14, 32)) + bytes(range(127, 256))
_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WORD_SAMPLE = 512 * 1024  # tokens are counted over the first 512 KB: a 2 MB literal costs no more


def features(lang: str, data: bytes, hits: list[Hit]) -> dict[str, float]:
    """The measures the model reads, by name. Linear in len(data); `hits` are the readers' hits."""
    n = len(data)
    kb = max(n, 1) / 1024.0
    f: dict[str, float] = {"size_log2": math.log2(n + 1), "lang_aspx": float(lang == "aspx")}
    lines = data.count(b"\n") + 1
    f["lines"] = float(lines)
    f["avg_line"] = n / lines
    f["max_line"] = float(max(map(len, data.split(b"\n", 10_000)))) if data else 0.0
    f["entropy"] = entropy(data[:65536].decode("latin-1"))
    longest = total = 0
    for m in _B64.finditer(data):
        k = m.end() - m.start()
        total += k
        longest = max(longest, k)
    f["b64_longest_log2"] = math.log2(longest + 1)
    f["b64_ratio"] = total / max(n, 1)
    f["hex_esc_per_kb"] = len(_HEX_ESC.findall(data)) / kb
    f["nontext_ratio"] = (n - len(data.translate(None, _NONTEXT))) / max(n, 1)
    f["upper_ratio"] = (n - len(data.translate(None, _UPPER))) / max(n, 1)  # one pass, not 26 counts
    f["dollar_per_kb"] = data.count(b"$") / kb
    f["quote_per_kb"] = (data.count(b'"') + data.count(b"'")) / kb
    f["at_per_kb"] = data.count(b"@") / kb  # PHP's error silencing: shells hide their warnings
    f["html_input"] = float(data.count(b"<input") + data.count(b"<INPUT"))
    f["html_form"] = float(data.count(b"<form") + data.count(b"<FORM"))
    counts: dict[str, int] = {}
    kinds: dict[str, int] = dict.fromkeys(_TOKENS, 0)
    sample = data[:_WORD_SAMPLE].lower()
    for w, c in Counter(_WORD.findall(sample)).items():  # Counter counts in C; the loop is per distinct word
        w = w.lstrip(b"$").decode("latin-1")
        k = _KIND.get(w)
        if k is not None:
            counts[w] = counts.get(w, 0) + c
            kinds[k] += c
    skb = max(len(sample), 1) / 1024.0
    for t in _KIND:
        f["tok:" + t] = float(counts.get(t, 0))
    for k, c in kinds.items():
        f[k + "_count"] = float(c)
        f[k + "_per_kb"] = c / skb
    _hit_features(hits, f)
    return f


def _hit_features(hits: list[Hit], f: dict[str, float]) -> None:
    """What the readers saw, even below THRESHOLD: the best confidence, and each rule, family, sink and
    source name's best confidence (the model keeps only the names it was trained on)."""
    confs = sorted((h.confidence for h in hits), reverse=True)
    f["hits"] = float(len(hits))
    f["best_conf"] = confs[0] if confs else 0.0
    f["second_conf"] = confs[1] if len(confs) > 1 else 0.0
    f["conf_sum"] = sum(confs)
    f["with_source"] = float(sum(1 for h in hits if h.source))
    f["with_sink"] = float(sum(1 for h in hits if h.sink))
    for h in hits:
        for key in ("rule:" + h.rule, "family:" + h.family if h.family else "", "sink:" + _name(h.sink),
                    "source:" + _name(h.source)):
            if key and not key.endswith(":") and f.get(key, -1.0) < h.confidence:
                f[key] = h.confidence


_NAME = re.compile(r"[$A-Za-z_][\w.]*")


def _name(text: str) -> str:
    """A sink's or source's leading name, lower-cased (`$_POST['x']` -> `$_post`, `Runtime.exec(` ->
    `runtime.exec`), so one spelling of a name is one feature."""
    m = _NAME.search(text[:80])
    return m.group(0).lower()[:40] if m else ""


@dataclass(frozen=True, slots=True)
class Tree:
    feature: tuple[int, ...]  # -1 at a leaf
    threshold: tuple[float, ...]
    left: tuple[int, ...]  # taken when value <= threshold (as scikit-learn splits)
    right: tuple[int, ...]
    value: tuple[float, ...]  # every node's value, learning rate applied: contributions come from the path


@dataclass(frozen=True, slots=True)
class GroupModel:
    names: tuple[str, ...]
    base: float
    trees: tuple[Tree, ...]
    platt_a: float
    platt_b: float
    threshold: float  # calibrated probability at or above which the layer adds a finding

    def raw(self, x: list[float]) -> tuple[float, list[float]]:
        """The trees' summed score and each feature's share of it (the path's value changes)."""
        score = self.base
        contrib = [0.0] * len(self.names)
        for t in self.trees:
            node = 0
            while t.feature[node] >= 0:
                fi = t.feature[node]
                nxt = t.left[node] if x[fi] <= t.threshold[node] else t.right[node]
                contrib[fi] += t.value[nxt] - t.value[node]
                node = nxt
            score += t.value[node]
        return score, contrib

    def probability(self, raw: float) -> float:
        z = self.platt_a * raw + self.platt_b
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


@dataclass(frozen=True, slots=True)
class Model:
    groups: dict[str, GroupModel]
    manifest_sha256: str
    sha256: str  # of the model file itself

    def judge(self, lang: str, data: bytes, hits: list[Hit]) -> Hit | None:
        """A `model.<group>` hit when the readers did not flag the file and the model says shell."""
        gm = self.groups.get(GROUP.get(lang, ""))
        if gm is None or any(h.confidence >= THRESHOLD for h in hits):
            return None
        f = features(lang, data, hits)
        if f["request_count"] - f["tok:_server"] <= 0 and not f["with_source"]:
            # a page that never reads the request ($_SERVER alone is mostly the server's own fields; nor in
            # what the readers decoded) runs no one's
            # commands: a tiny `eval($fixed)` scores like a shell on shape alone, and is left to the readers
            return None
        x = [f.get(name, 0.0) for name in gm.names]
        raw, contrib = gm.raw(x)
        p = gm.probability(raw)
        if p < gm.threshold:
            return None
        top = sorted(range(len(x)), key=lambda i: -contrib[i])[:5]
        why = ", ".join(f"{gm.names[i]}={x[i]:.3g} ({contrib[i]:+.2f})" for i in top if contrib[i] > 0)
        best = max(hits, key=lambda h: h.confidence) if hits else None
        return Hit(
            rule=f"model.{GROUP[lang]}",
            language=lang,
            severity=Severity.MEDIUM,
            confidence=round(p, 4),
            source=best.source if best else "",
            sink=best.sink if best else "",
            snippet=clip(why),
            family=best.family if best else "",
            detail=f"statistical model: p={p:.3f} >= {gm.threshold:.3f}"
            + (f", best reader hit {best.rule} {best.confidence:.2f}" if best else ""),
        )


class NullModel:
    """The layer switched off or its file missing: never adds anything."""

    sha256 = ""
    manifest_sha256 = ""
    groups: dict = {}

    def judge(self, lang: str, data: bytes, hits: list[Hit]) -> Hit | None:
        return None


class ModelError(ValueError):
    pass


def parse(raw: bytes) -> Model:
    """A model from its JSON bytes; ModelError on anything malformed (checked, so a bad file is one line)."""
    try:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ModelError(f"format {doc.get('format')!r}, want {FORMAT}")
        groups = {}
        for name, g in doc["groups"].items():
            names = tuple(str(s) for s in g["names"])
            trees = []
            for t in g["trees"]:
                tree = Tree(tuple(map(int, t["f"])), tuple(map(float, t["t"])), tuple(map(int, t["l"])),
                            tuple(map(int, t["r"])), tuple(map(float, t["v"])))
                _check_tree(tree, len(names))
                trees.append(tree)
            groups[name] = GroupModel(names, float(g["base"]), tuple(trees), float(g["platt"][0]),
                                      float(g["platt"][1]), max(float(g["threshold"]), THRESHOLD))
        return Model(groups, str(doc["training"]["manifest_sha256"]), hashlib.sha256(raw).hexdigest())
    except ModelError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise ModelError(f"{type(e).__name__}: {e}") from None


def _check_tree(t: Tree, nfeat: int) -> None:
    n = len(t.feature)
    if not (n == len(t.threshold) == len(t.left) == len(t.right) == len(t.value)) or n == 0:
        raise ModelError("tree arrays of different lengths")
    for i in range(n):
        if t.feature[i] >= nfeat:
            raise ModelError(f"feature index {t.feature[i]} out of range")
        # children always lie after their parent (scikit-learn's depth-first order): the walk ends
        if t.feature[i] >= 0 and not (i < t.left[i] < n and i < t.right[i] < n):
            raise ModelError("tree child index out of order")


@functools.lru_cache(maxsize=4)
def load(path: str) -> Model | NullModel:
    """The model at `path` (read once per process), or the null object when path is "" or the file is
    missing or malformed (logged once: the readers' findings stand alone)."""
    if not path:
        return NullModel()
    try:
        with open(path, "rb") as fh:
            return parse(fh.read())
    except OSError as e:
        log.info("web-shell model not loaded (%s): the readers' findings stand alone", e.strerror)
    except ModelError as e:
        log.warning("web-shell model %s is malformed (%s): the readers' findings stand alone", path, e)
    return NullModel()
