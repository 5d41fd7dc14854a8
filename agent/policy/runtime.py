"""The policy's `runtime:` section: in-kernel exec rules (deny by name or path, drift), as data.

agent/enforce/execkill.py turns these into BPF map entries; this module only models and validates
them. Scope: `containers` (default: every container the agent knows, from its create on), `host`
(processes outside any container), or `both`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from agent.policy.nodes import Walker
from agent.sensors.common import PREFIX_MAX

SCOPES = ("containers", "host", "both")
COMM_LEN = 15  # TASK_COMM_LEN - 1: the kernel keeps this much of a program's name
_GLOB = re.compile(r"[*?\[]")
_MODES = ("off", "alert", "block")
_KEYS = ("action", "deny_exec", "drift", "scope")
_ONE = "{name: PROGRAM} or {path: PATH}, optionally with scope"
_LIST = "a list of {name: PROGRAM} or {path: PATH}"


class RuleError(ValueError):
    """A runtime rule the kernel cannot enforce; the message names it."""


@dataclass(frozen=True)
class ExecRule:
    name: str = ""  # program name, as `comm` (first 15 bytes)
    path: str = ""  # exact path, or a prefix glob ending in `*` ("/tmp/*")
    scope: str = "containers"  # where it applies: one of SCOPES

    def describe(self) -> str:
        return f"name={self.name}" if self.name else f"path={self.path}"


@dataclass(frozen=True)
class RuntimeRules:
    deny_exec: tuple[ExecRule, ...] = ()
    drift: str = "off"  # off | alert | block
    action: str = "block"  # what a deny_exec match does: alert | block
    scope: str = "containers"  # the default scope of deny_exec entries that name none

    @classmethod
    def from_dict(cls, data, where: str = "runtime") -> RuntimeRules:
        """Rules held as data (code, tests): represented as YAML nodes and walked by the same
        validator as the policy file; RuleError with the first problem."""
        try:
            node = yaml.representer.SafeRepresenter().represent_data(data)
        except yaml.representer.RepresenterError as e:
            raise RuleError(f"{where}: cannot represent {e}") from None
        w = Walker("")
        rules = walk(w, node, where)
        if w.errors:
            raise RuleError(w.errors[0])
        return rules


def walk(w: Walker, node, where: str = "runtime") -> RuntimeRules:
    """The runtime section from its node; each problem goes to `w` at the offending value's position
    (the defaults come back when there is any, and the caller rejects the whole file)."""
    fields = w.mapping(node, where, _KEYS)
    scope = _choice(w, fields.get("scope"), f"{where}.scope", SCOPES, "containers")
    drift = _choice(w, fields.get("drift"), f"{where}.drift", _MODES, "off")
    action = _choice(w, fields.get("action"), f"{where}.action", ("alert", "block"), "block")
    items = w.sequence(fields["deny_exec"][1], f"{where}.deny_exec", _LIST) if "deny_exec" in fields else []
    rules = [_rule(w, item, f"{where}.deny_exec[{i}]", scope) for i, item in enumerate(items)]
    if w.errors:
        return RuntimeRules()
    return RuntimeRules(tuple(rules), drift, action, scope)


def _choice(w: Walker, pair, where: str, allowed: tuple[str, ...], default: str) -> str:
    """One of `allowed` (any case), or an error at the value and the default."""
    if pair is None:
        return default
    node = pair[1]
    text = w.scalar(node, where)
    if text is None:
        return default
    choice = text.lower()
    if node.tag.endswith(":bool") and choice in ("no", "false"):
        choice = "off"  # YAML 1.1 reads a bare `off` as false; `drift: false` means off too
    if choice not in allowed:
        w.err(node, "", f"{where} must be {', '.join(allowed[:-1])} or {allowed[-1]}, not {text[:80]!r}")
        return default
    return choice


def _rule(w: Walker, node, at: str, default_scope: str) -> ExecRule | None:
    if not isinstance(node, yaml.MappingNode):
        w.err(node, at, f"expected {_ONE}")
        return None
    fields = w.mapping(node, at, ("name", "path", "scope"))
    if len({"name", "path"} & set(fields)) != 1:
        w.err(node, at, f"expected {_ONE}")
        return None
    key = "name" if "name" in fields else "path"
    value_node = fields[key][1]
    value = w.string(value_node, f"{at}.{key}")
    scope = _choice(w, fields.get("scope"), f"{at}.scope", SCOPES, default_scope)
    if value is None:
        return None
    problem = _check(key, value)
    if problem:
        w.err(value_node, f"{at}.{key}", problem)
    return ExecRule(**{key: value}, scope=scope)


def _check(key: str, p: str) -> str:
    """What the kernel cannot enforce about a rule's name or path ('' when it can)."""
    if "\0" in p:  # the kernel compares C strings: "/bin/true\0x" would deny /bin/true
        return f"{key} {p[:80]!r} contains a NUL character"
    try:
        p.encode()  # the BPF maps hold UTF-8 bytes; a lone surrogate (from data, not YAML) has none
    except UnicodeEncodeError:
        return f"{key} {p[:80]!r} is not valid Unicode text"
    if key == "name":
        if "/" in p or not p.strip():
            return f"name {p[:80]!r} is a program name, not a path"
        return ""
    if not p.startswith("/"):
        return f"path {p[:80]!r} must be absolute"
    body = p[:-1] if p.endswith("*") else p
    if _GLOB.search(body):
        return f"path {p[:80]!r}: the kernel enforces exact paths and prefixes ending in '*' only"
    if len(body.encode()) + (0 if p.endswith("*") else 1) > PREFIX_MAX:
        return f"path {p[:80]!r} is longer than {PREFIX_MAX - 1} bytes"
    return ""
