"""Load and validate the policy file as a whole (image gate, runtime rules, detection rules).

The YAML is composed into nodes (not just loaded) so that every error names its line and column:
`policy.yaml:7:12: categories.malware.block: unknown severity 'hgih' (info, low, medium, high,
critical, off)`. Every section, the runtime rules included (agent/policy/runtime.py), is walked
with one Walker (agent/policy/nodes.py) that collects every error; one error rejects the file
(PolicyError, one line per error, first error first), so a half-valid policy never takes effect.
Nothing in a file, however malformed, raises anything but PolicyError (tests/unit/test_policy_fuzz.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat

import yaml

from agent.policy import profiles, rules, runtime, signatures, webshell
from agent.policy.model import DEFAULT_THRESHOLDS, ImagePolicy, Selector, Thresholds
from agent.policy.nodes import Walker
from agent.vocab import CATEGORIES, Severity

_MAX_BYTES = 1 << 20
_SEVERITIES = "info, low, medium, high, critical, off"
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)?\s*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
TOP_KEYS = ("categories", "scope", "whitelist", "on_timeout", "on_error", "runtime", "detect", "webshell", "profiles",
            "signatures", "rejudge")


class PolicyError(Exception):
    """The policy file is rejected; str() is one line per error, first error first."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def parse_duration(text: str) -> float | None:
    m = _DURATION.match(str(text))
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def _severity(v: Walker, node, where: str) -> tuple[bool, Severity | None]:
    text = v.scalar(node, where)
    if text is None:
        return False, None
    if node.tag.endswith(":bool") and text.lower() in ("off", "no", "false"):
        return True, None  # YAML 1.1 reads a bare `off` as false
    if text.lower() == "off":
        return True, None
    try:
        return True, Severity.parse(text)
    except ValueError:
        v.err(node, where, f"unknown severity {text[:80]!r} ({_SEVERITIES})")
        return False, None


def _categories(v: Walker, node) -> dict[str, Thresholds]:
    out = {c: Thresholds(*t) for c, t in DEFAULT_THRESHOLDS.items()}
    for cat, (_kn, vn) in v.mapping(node, "categories", CATEGORIES).items():
        fields = v.mapping(vn, f"categories.{cat}", ("alert", "block"))
        alert, block = out[cat].alert, out[cat].block
        if "alert" in fields:
            ok, sev = _severity(v, fields["alert"][1], f"categories.{cat}.alert")
            alert = sev if ok else alert
        if "block" in fields:
            ok, sev = _severity(v, fields["block"][1], f"categories.{cat}.block")
            block = sev if ok else block
        if alert is not None and block is not None and block < alert:
            v.err(
                vn, f"categories.{cat}", f"block ({block.label}) is below alert ({alert.label}): alert must be <= block"
            )
        out[cat] = Thresholds(alert, block)
    return out


def _labels(v: Walker, node, where: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for key, (_kn, vn) in v.mapping(node, where).items():
        val = v.scalar(vn, f"{where}.{key}")
        if val is not None:
            pairs.append((key, val))
    return tuple(pairs)


def _action(v: Walker, node, where: str) -> str | None:
    text = v.scalar(node, where)
    if text is not None and text not in ("allow", "block"):
        v.err(node, where, f"expected allow or block, got {text[:80]!r}")
        return None
    return text


def _scope(v: Walker, node) -> dict:
    kw: dict = {}
    scope = v.mapping(node, "scope", ("namespaces", "labels"))
    if "namespaces" in scope:
        ns = v.mapping(scope["namespaces"][1], "scope.namespaces", ("include", "exclude"))
        inc = [s for _n, s in v.strings(ns["include"][1], "scope.namespaces.include")] if "include" in ns else ["*"]
        exc = [s for _n, s in v.strings(ns["exclude"][1], "scope.namespaces.exclude")] if "exclude" in ns else []
        kw["namespaces"] = Selector(tuple(inc), tuple(exc))
    if "labels" in scope:
        lab = v.mapping(scope["labels"][1], "scope.labels", ("include", "exclude"))
        if "include" in lab:
            kw["label_include"] = _labels(v, lab["include"][1], "scope.labels.include")
        if "exclude" in lab:
            kw["label_exclude"] = _labels(v, lab["exclude"][1], "scope.labels.exclude")
    return kw


def _whitelist(v: Walker, node) -> dict:
    kw: dict = {}
    wl = v.mapping(node, "whitelist", ("images", "digests"))
    if "images" in wl:
        kw["whitelist_images"] = tuple(s for _n, s in v.strings(wl["images"][1], "whitelist.images"))
    if "digests" in wl:
        digests = []
        for i, (n, s) in enumerate(v.strings(wl["digests"][1], "whitelist.digests")):
            if _DIGEST.match(s):
                digests.append(s)
            else:
                v.err(n, f"whitelist.digests[{i}]", f"not a sha256 digest: {s[:80]!r}")
        kw["whitelist_digests"] = tuple(digests)
    return kw


def _on_timeout(v: Walker, node) -> dict:
    kw: dict = {}
    ot = v.mapping(node, "on_timeout", ("after", "action"))
    if "after" in ot:
        after = v.scalar(ot["after"][1], "on_timeout.after")
        secs = parse_duration(after) if after is not None else None
        if after is not None and (secs is None or not 0 < secs <= 600):
            v.err(ot["after"][1], "on_timeout.after",
                  f"expected a duration like 1.5s or 500ms (max 10m), got {after[:80]!r}")
        elif secs is not None:
            kw["timeout"] = secs
    if "action" in ot and (a := _action(v, ot["action"][1], "on_timeout.action")):
        kw["timeout_action"] = a
    return kw


def _on_error(v: Walker, node) -> dict:
    oe = v.mapping(node, "on_error", ("action",))
    if "action" in oe and (a := _action(v, oe["action"][1], "on_error.action")):
        return {"error_action": a}
    return {}


def _rejudge(v: Walker, node) -> dict:
    rj = v.mapping(node, "rejudge", ("action",))
    if "action" in rj:
        text = v.scalar(rj["action"][1], "rejudge.action")
        if text is not None and text not in ("alert", "kill"):
            v.err(rj["action"][1], "rejudge.action", f"expected alert or kill, got {text[:80]!r}")
        elif text is not None:
            return {"rejudge_action": text}
    return {}


def _compose(text: str, name: str):
    """The node tree, or PolicyError at the position the YAML reader had reached."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader checks every character here
        return loader.get_single_node()
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as e:
        raise PolicyError([f"{name}:{_position(e, text, loader)}: invalid YAML: {_problem(e)}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _position(e: Exception, text: str, loader) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        return _pos(e.problem_mark or e.context_mark)
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, a lone surrogate)
        line, line_start = text.count("\n", 0, e.position) + 1, text.rfind("\n", 0, e.position) + 1
        return f"{line}:{e.position - line_start + 1}"
    if isinstance(e, RecursionError):  # the composer recurses once per nesting level
        return "1:1"
    return _pos(loader.get_mark() if loader is not None else None)  # a bad escape: the scanner's position


def _problem(e: Exception) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        return str(e.problem or e.context)
    if isinstance(e, yaml.reader.ReaderError):
        return f"{e.reason} (#x{e.character:04x})"
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, ValueError | OverflowError):  # PyYAML's scanner calls chr() unguarded on a \U escape:
        return f"escape out of range ({e})"  # ValueError beyond U+10FFFF, OverflowError from U+80000000 on
    return " ".join(str(e).split())


def _pos(mark) -> str:
    return f"{mark.line + 1}:{mark.column + 1}" if mark else "?"


_SECTIONS = {"categories": lambda v, n: {"categories": _categories(v, n)}, "scope": _scope, "whitelist": _whitelist,
             "on_timeout": _on_timeout, "on_error": _on_error, "rejudge": _rejudge,
             "runtime": lambda v, n: {"runtime": runtime.walk(v, n)},
             # detection rules (agent/policy/rules.py): rules_files are relative to the policy file
             "detect": lambda v, n: {"detect": rules.walk_section(v, n, os.path.dirname(v.name) or ".")},
             "webshell": lambda v, n: {"webshell": webshell.walk(v, n)},  # the run-time web-shell check
             "profiles": lambda v, n: {"profiles": profiles.walk(v, n)},  # behaviour profiles (issue 13)
             # who must have signed which images (issue 16); key files are relative to the policy file
             "signatures": lambda v, n: {"signatures": signatures.walk(v, n, os.path.dirname(v.name) or ".")}}


def parse(text: str, name: str = "<policy>", fingerprint: str | None = None) -> ImagePolicy:
    """ImagePolicy from YAML text, or PolicyError listing every problem with its line.
    `fingerprint`: of the file's bytes (load passes it); default the sha256 of the text as UTF-8."""
    root = _compose(text, name)
    v = Walker(name)
    kw: dict = {}
    for key, (_kn, node) in (v.mapping(root, "", TOP_KEYS) if root is not None else {}).items():
        kw.update(_SECTIONS[key](v, node))
    if v.errors:
        raise PolicyError(v.in_file_order())
    fp = fingerprint or hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return ImagePolicy(**kw, source=name, fingerprint=fp)


def load(path: str) -> ImagePolicy:
    try:
        # O_NONBLOCK: a FIFO (or a device) at the path must not hang the reload thread in open()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PolicyError([f"{path}: not a regular file"])
            data = f.read(_MAX_BYTES + 1)
    except OSError as e:
        raise PolicyError([f"{path}: cannot read: {e.strerror}"]) from None
    if len(data) > _MAX_BYTES:
        raise PolicyError([f"{path}: larger than {_MAX_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError([f"{path}: not UTF-8 text (byte {e.start})"]) from None
    return parse(text, path, hashlib.sha256(data).hexdigest()[:12])
