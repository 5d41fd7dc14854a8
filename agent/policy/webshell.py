"""The policy's `webshell:` section: what the run-time web-shell check does with a file it flags.

    webshell:
      action: block          # alert (default) | block: quarantine the file and kill its writer
      allow_host: false      # block outside containers too (else a host file is only alerted on)
      web_roots: [/var/www/] # replaces the agent config's webshell.web_roots (kernel prefixes)
      globs: ["*/webapps/*"] # replaces webshell.globs
      max_file_bytes: 2097152

A key left out keeps the agent config's value (agent/config.py WebshellConfig). Validated by the same
Walker as the rest of the file: a bad value rejects the whole policy with its line.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from agent.policy.nodes import Walker, is_null
from agent.sensors.common import PREFIX_MAX

_KEYS = ("action", "allow_host", "web_roots", "globs", "max_file_bytes")
_ACTIONS = ("alert", "block")
_MAX_BYTES = 256 << 20  # a larger cap would let one file hold the scanner for minutes


@dataclass(frozen=True)
class WebshellPolicy:
    action: str = "alert"
    allow_host: bool = False
    web_roots: tuple[str, ...] | None = None  # None: the agent config's
    globs: tuple[str, ...] | None = None
    max_file_bytes: int | None = None


def walk(w: Walker, node, where: str = "webshell") -> WebshellPolicy:
    fields = w.mapping(node, where, _KEYS)
    kw: dict = {}
    if "action" in fields:
        v = fields["action"][1]
        text = w.scalar(v, f"{where}.action")
        if text is not None and text.lower() not in _ACTIONS:
            w.err(v, f"{where}.action", f"must be alert or block, not {text[:80]!r}")
        elif text is not None:
            kw["action"] = text.lower()
    if "allow_host" in fields:
        v = fields["allow_host"][1]
        if not (isinstance(v, yaml.ScalarNode) and v.tag.endswith(":bool")):
            w.err(v, f"{where}.allow_host", "expected true or false")
        else:
            kw["allow_host"] = v.value.lower() in ("true", "yes", "on", "y")
    if "web_roots" in fields:
        kw["web_roots"] = _roots(w, fields["web_roots"][1], f"{where}.web_roots")
    if "globs" in fields:
        kw["globs"] = tuple(g for _n, g in w.strings(fields["globs"][1], f"{where}.globs"))
    if "max_file_bytes" in fields:
        v = fields["max_file_bytes"][1]
        text = w.scalar(v, f"{where}.max_file_bytes")
        n = int(text) if text is not None and text.isdigit() and v.tag.endswith(":int") else None
        if text is not None and (n is None or not 0 < n <= _MAX_BYTES):
            w.err(v, f"{where}.max_file_bytes", f"expected a byte count in 1..{_MAX_BYTES}, got {text[:80]!r}")
        elif n is not None:
            kw["max_file_bytes"] = n
    return WebshellPolicy(**kw)


def _roots(w: Walker, node, where: str) -> tuple[str, ...]:
    if is_null(node):
        return ()
    out = []
    for item, root in w.strings(node, where):
        if not root.startswith("/") or "\0" in root or not len(root.encode("utf-8", "replace")) <= PREFIX_MAX:
            w.err(item, where, f"{root[:80]!r}: an absolute path prefix of at most {PREFIX_MAX} bytes")
            continue
        out.append(root)
    return tuple(out)
