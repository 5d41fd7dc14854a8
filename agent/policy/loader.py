"""Load and validate an image policy file as a whole.

The YAML is composed into nodes (not just loaded) so that every error names its line and column:
`policy.yaml:7:12: categories.malware.block: unknown severity 'hgih' (info, low, medium, high,
critical, off)`. Every error in the file is collected; one error rejects the file (PolicyError,
whose first line is the first error), so a half-valid policy never takes effect.
"""

from __future__ import annotations

import hashlib
import re

import yaml

from agent.policy.model import DEFAULT_THRESHOLDS, ImagePolicy, Selector, Thresholds
from agent.policy.runtime import RuleError, RuntimeRules
from agent.vocab import CATEGORIES, Severity

_MAX_BYTES = 1 << 20
_SEVERITIES = "info, low, medium, high, critical, off"
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)?\s*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
TOP_KEYS = ("categories", "scope", "whitelist", "on_timeout", "on_error", "runtime")


class PolicyError(Exception):
    """The policy file is rejected; str() is one line per error, first error first."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class _V:
    """Walks the node tree, collecting errors with their positions."""

    def __init__(self, name: str):
        self.name = name
        self.errors: list[str] = []

    def err(self, node, where: str, msg: str) -> None:
        mark = getattr(node, "start_mark", None)
        pos = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
        self.errors.append(f"{self.name}:{pos}: {where}: {msg}" if where else f"{self.name}:{pos}: {msg}")

    def mapping(self, node, where: str, keys: tuple[str, ...] | None = None) -> dict:
        """{key: (key node, value node)}; unknown and duplicate keys are errors."""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.err(node, where, f"expected a mapping, got {_kind(node)}")
            return {}
        out = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            path = f"{where}.{key}" if where else str(key)
            if key is None:
                self.err(k, where, "keys must be plain strings")
            elif key in out:
                self.err(k, path, "duplicate key")
            elif keys is not None and key not in keys:
                self.err(k, path, f"unknown key (known: {', '.join(keys)})")
            else:
                out[key] = (k, v)
        return out

    def scalar(self, node, where: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.err(node, where, f"expected a value, got {_kind(node)}")
            return None
        return node.value

    def strings(self, node, where: str) -> list[tuple[object, str]]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, where, f"expected a list, got {_kind(node)}")
            return []
        out = []
        for i, item in enumerate(node.value):
            v = self.scalar(item, f"{where}[{i}]")
            if v is not None:
                if v == "":
                    self.err(item, f"{where}[{i}]", "empty string")
                else:
                    out.append((item, v))
        return out


def _kind(node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.tag.rsplit(':', 1)[-1]} {node.value!r}"


def parse_duration(text: str) -> float | None:
    m = _DURATION.match(str(text))
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def _severity(v: _V, node, where: str) -> tuple[bool, Severity | None]:
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
        v.err(node, where, f"unknown severity {text!r} ({_SEVERITIES})")
        return False, None


def _categories(v: _V, node) -> dict[str, Thresholds]:
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


def _labels(v: _V, node, where: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for key, (_kn, vn) in v.mapping(node, where).items():
        val = v.scalar(vn, f"{where}.{key}")
        if val is not None:
            pairs.append((key, val))
    return tuple(pairs)


def _action(v: _V, node, where: str) -> str | None:
    text = v.scalar(node, where)
    if text is not None and text not in ("allow", "block"):
        v.err(node, where, f"expected allow or block, got {text!r}")
        return None
    return text


def _runtime(v: _V, node) -> RuntimeRules:
    """The in-kernel exec rules (agent/enforce/execkill.py validates them); errors point at the rule's line."""
    data = yaml.safe_load(yaml.serialize(node))
    try:
        return RuntimeRules.from_dict(data)
    except RuleError as e:
        at = node
        m = re.match(r"runtime\.deny_exec\[(\d+)\]", str(e))
        if m and isinstance(node, yaml.MappingNode):
            for k, val in node.value:
                if k.value == "deny_exec" and isinstance(val, yaml.SequenceNode) and int(m.group(1)) < len(val.value):
                    at = val.value[int(m.group(1))]
        v.err(at, "", str(e))
        return RuntimeRules()


def parse(text: str, name: str = "<policy>") -> ImagePolicy:
    """ImagePolicy from YAML text, or PolicyError listing every problem with its line."""
    v = _V(name)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
        raise PolicyError([f"{name}:{pos}: invalid YAML: {e.problem or e.context}"]) from None
    except yaml.YAMLError as e:
        raise PolicyError([f"{name}: invalid YAML: {e}"]) from None
    kw: dict = {}
    top = v.mapping(root, "", TOP_KEYS) if root is not None else {}
    if "categories" in top:
        kw["categories"] = _categories(v, top["categories"][1])
    if "scope" in top:
        scope = v.mapping(top["scope"][1], "scope", ("namespaces", "labels"))
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
    if "whitelist" in top:
        wl = v.mapping(top["whitelist"][1], "whitelist", ("images", "digests"))
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
    if "on_timeout" in top:
        ot = v.mapping(top["on_timeout"][1], "on_timeout", ("after", "action"))
        if "after" in ot:
            text = v.scalar(ot["after"][1], "on_timeout.after")
            secs = parse_duration(text) if text is not None else None
            if text is not None and (secs is None or not 0 < secs <= 600):
                v.err(
                    ot["after"][1],
                    "on_timeout.after",
                    f"expected a duration like 1.5s or 500ms (max 10m), got {text!r}",
                )
            elif secs is not None:
                kw["timeout"] = secs
        if "action" in ot and (a := _action(v, ot["action"][1], "on_timeout.action")):
            kw["timeout_action"] = a
    if "on_error" in top:
        oe = v.mapping(top["on_error"][1], "on_error", ("action",))
        if "action" in oe and (a := _action(v, oe["action"][1], "on_error.action")):
            kw["error_action"] = a
    if "runtime" in top:
        kw["runtime"] = _runtime(v, top["runtime"][1])
    if v.errors:
        raise PolicyError(v.errors)
    fp = hashlib.sha256(text.encode()).hexdigest()[:12]
    return ImagePolicy(**kw, source=name, fingerprint=fp)


def load(path: str) -> ImagePolicy:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError as e:
        raise PolicyError([f"{path}: cannot read: {e.strerror}"]) from None
    if len(data) > _MAX_BYTES:
        raise PolicyError([f"{path}: larger than {_MAX_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError([f"{path}: not UTF-8 text (byte {e.start})"]) from None
    return parse(text, path)
