"""The policy's `runtime:` section: in-kernel exec rules (deny by name or path, drift), as data.

agent/enforce/execkill.py turns these into BPF map entries; this module only models and validates
them. Scope: `containers` (default: every container the agent knows, from its create on), `host`
(processes outside any container), or `both`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.sensors.common import PREFIX_MAX

SCOPES = ("containers", "host", "both")
COMM_LEN = 15  # TASK_COMM_LEN - 1: the kernel keeps this much of a program's name
_GLOB = re.compile(r"[*?\[]")
_MODES = ("off", "alert", "block")


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
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise RuleError(f"{where}: expected a mapping")
        unknown = set(data) - {"deny_exec", "drift", "action", "scope"}
        if unknown:
            raise RuleError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r} "
                            "(known: action, deny_exec, drift, scope)")
        scope = str(data.get("scope", "containers")).lower()
        if scope not in SCOPES:
            raise RuleError(f"{where}.scope must be containers, host or both, not {scope!r}")
        drift = str(data.get("drift", "off")).lower() if data.get("drift") is not False else "off"
        action = str(data.get("action", "block")).lower()
        if drift not in _MODES:
            raise RuleError(f"{where}.drift must be off, alert or block, not {drift!r}")
        if action not in ("alert", "block"):
            raise RuleError(f"{where}.action must be alert or block, not {action!r}")
        items = data.get("deny_exec") or []
        if not isinstance(items, list):
            raise RuleError(f"{where}.deny_exec: expected a list of {{name: PROGRAM}} or {{path: PATH}}")
        rules = []
        for i, item in enumerate(items):
            at = f"{where}.deny_exec[{i}]"
            if not isinstance(item, dict) or len(set(item) & {"name", "path"}) != 1 \
                    or not {"name", "path", "scope"} >= set(item):
                raise RuleError(f"{at}: expected {{name: PROGRAM}} or {{path: PATH}}, optionally with scope")
            if not all(isinstance(v, str) for v in item.values()):
                raise RuleError(f"{at}: name, path and scope are strings")
            rscope = item.get("scope", scope).lower()
            if rscope not in SCOPES:
                raise RuleError(f"{at}.scope must be containers, host or both, not {rscope!r}")
            rule = ExecRule(name=item.get("name", ""), path=item.get("path", ""), scope=rscope)
            _check(rule, at)
            rules.append(rule)
        return cls(tuple(rules), drift, action, scope)


def _check(rule: ExecRule, at: str) -> None:
    if rule.name:
        if "/" in rule.name or not rule.name.strip():
            raise RuleError(f"{at}: name {rule.name!r} is a program name, not a path")
        return
    p = rule.path
    if not p.startswith("/"):
        raise RuleError(f"{at}: path {p!r} must be absolute")
    body = p[:-1] if p.endswith("*") else p
    if _GLOB.search(body):
        raise RuleError(f"{at}: path {p!r}: the kernel enforces exact paths and prefixes ending in '*' only")
    if len(body.encode()) + (0 if p.endswith("*") else 1) > PREFIX_MAX:
        raise RuleError(f"{at}: path {p!r} is longer than {PREFIX_MAX - 1} bytes")
