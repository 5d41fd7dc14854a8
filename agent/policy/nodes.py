"""Walking a composed YAML node tree with every error kept beside its position.

The policy is composed into nodes (not loaded into dicts) so that each error names the line and
column of the offending value: `policy.yaml:7:12: categories.malware.block: unknown severity`.
Every section (agent/policy/loader.py, agent/policy/runtime.py) validates through one Walker, which
collects all errors; the caller rejects the file if there is any.
"""

from __future__ import annotations

import yaml

_SHOW = 80  # characters of an offending value quoted in a message (a value may be a megabyte)


class Walker:
    """Collects errors, each prefixed with `name:line:col:` (without position when a node has no
    mark: nodes made from data by RuntimeRules.from_dict)."""

    def __init__(self, name: str):
        self.name = name
        self.errors: list[str] = []
        self._at: list[tuple[int, int]] = []

    def err(self, node, where: str, msg: str) -> None:
        mark = getattr(node, "start_mark", None)
        head = f"{self.name}:{mark.line + 1}:{mark.column + 1}" if mark else self.name
        self.errors.append(": ".join(p for p in (head, where, msg) if p))
        self._at.append((mark.line, mark.column) if mark else (-1, -1))

    def add_placed(self, errors: list[str]) -> None:
        """Errors of other files, already prefixed with their own file:line:col (they sort with the unplaced ones)."""
        self.errors.extend(errors)
        self._at.extend([(-1, -1)] * len(errors))

    def in_file_order(self) -> list[str]:
        """The errors by position (sections are validated in no particular order)."""
        order = sorted(range(len(self.errors)), key=lambda i: self._at[i])
        return [self.errors[i] for i in order]

    def mapping(self, node, where: str, keys: tuple[str, ...] | None = None) -> dict:
        """{key: (key node, value node)}; null is an empty mapping; unknown and duplicate keys are errors."""
        if is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.err(node, where, f"expected a mapping, got {kind(node)}")
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
                self.err(k, where, f"unknown key {key[:_SHOW]!r} (known: {', '.join(keys)})")
            else:
                out[key] = (k, v)
        return out

    def scalar(self, node, where: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.err(node, where, f"expected a value, got {kind(node)}")
            return None
        return node.value

    def string(self, node, where: str) -> str | None:
        """A value YAML reads as a string: `5`, `true` or `~` are not (quote them to mean the text)."""
        if not isinstance(node, yaml.ScalarNode) or not node.tag.endswith(":str"):
            self.err(node, where, f"expected a string, got {kind(node)}")
            return None
        return node.value

    def sequence(self, node, where: str, what: str = "a list") -> list:
        """The items of a list; null is an empty list."""
        if is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, where, f"expected {what}, got {kind(node)}")
            return []
        return list(node.value)

    def strings(self, node, where: str) -> list[tuple[object, str]]:
        out = []
        for i, item in enumerate(self.sequence(node, where)):
            v = self.scalar(item, f"{where}[{i}]")
            if v is not None:
                if v == "":
                    self.err(item, f"{where}[{i}]", "empty string")
                else:
                    out.append((item, v))
        return out


def is_null(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def kind(node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.tag.rsplit(':', 1)[-1]} {node.value[:_SHOW]!r}"
