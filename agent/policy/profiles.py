"""The policy's `profiles:` section: how long each workload's behaviour profile learns, and the mode it
takes after learning (agent/detect/profile/ learns and enforces; this module only models and validates).

    profiles:
      learn: 1h            # learning window: container run time summed over all live replicas
      quiet: 10m           # learning ends early once this much run time passed with nothing new (off: never)
      after_learning: monitoring   # monitoring | protecting | learning (= never switch automatically)
      overrides:           # first match wins; fnmatch globs on the workload's fields
        - {namespace: "prod-*", after_learning: protecting}
        - {image: "docker.io/library/nginx*", after_learning: monitoring, learn: 30m}
      exclude: [{namespace: kube-system}]   # workloads never profiled

A selector (an override's or an exclude entry's) names at least one of namespace, image, kind, owner,
container; every field it names must match. `image` also matches the image digest (`sha256:...`). An
empty glob ("") matches the empty field: `{kind: ""}` is every container outside a Kubernetes pod.
A setting an override leaves out is the section's. Validated by the same Walker as the rest of the file:
a bad value rejects the whole policy with its line and field.

The policy stage sits below agent/detect (tests/unit/test_layers.py), so a workload is taken by its
fields (agent/detect/profile/key.py Workload has them), not by its type.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol

import yaml

from agent.policy.nodes import Walker, is_null, kind

AFTER = ("monitoring", "protecting", "learning")  # learning: stays learning until locked by hand
FIELDS = ("namespace", "image", "kind", "owner", "container")  # what a selector may name
_KEYS = ("learn", "quiet", "after_learning", "overrides", "exclude")
_SETTINGS = ("learn", "quiet", "after_learning")
_MAX_S = 8760 * 3600.0  # a year of run time: beyond it a window is a typo, and 1e400 is not a duration
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h)?\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}
_OFF = ("off", "false", "no", "never")  # YAML 1.1 reads a bare off/no as false
_SHOW = 80


class WorkloadLike(Protocol):
    namespace: str
    kind: str
    owner: str
    container: str
    image: str
    image_digest: str


@dataclass(frozen=True)
class WorkloadPolicy:
    learn_s: float  # learning window in container run time (all replicas)
    quiet_s: float  # learning ends early after this much run time with nothing new; inf: never
    after: str  # one of AFTER


@dataclass(frozen=True)
class Selector:
    """(field, glob) pairs, all of which must match."""

    globs: tuple[tuple[str, str], ...]

    def matches(self, w: WorkloadLike) -> bool:
        for name, glob in self.globs:
            value = getattr(w, name, "") or ""
            if name == "image":
                if not (fnmatchcase(value, glob) or fnmatchcase(getattr(w, "image_digest", "") or "", glob)):
                    return False
            elif not fnmatchcase(value, glob):
                return False
        return True


@dataclass(frozen=True)
class Override:
    select: Selector
    learn_s: float | None = None  # None: the section's
    quiet_s: float | None = None
    after: str | None = None


@dataclass(frozen=True)
class ProfilePolicy:
    learn_s: float = 3600.0
    quiet_s: float = 600.0
    after: str = "monitoring"
    overrides: tuple[Override, ...] = ()
    exclude: tuple[Selector, ...] = ()
    # The policy of a workload no override names, made once: most workloads get this very object.
    _default: WorkloadPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_default", WorkloadPolicy(self.learn_s, self.quiet_s, self.after))

    def for_workload(self, w: WorkloadLike) -> WorkloadPolicy | None:
        """The workload's window and after-mode (the first override that matches), None when excluded."""
        for sel in self.exclude:
            if sel.matches(w):
                return None
        for o in self.overrides:
            if o.select.matches(w):
                return WorkloadPolicy(self.learn_s if o.learn_s is None else o.learn_s,
                                      self.quiet_s if o.quiet_s is None else o.quiet_s,
                                      o.after or self.after)
        return self._default


def walk(w: Walker, node, where: str = "profiles") -> ProfilePolicy:
    """The section from its node; each problem goes to `w` at the offending value (the defaults come back
    when there is any, and the caller rejects the whole file)."""
    fields = w.mapping(node, where, _KEYS)
    before = len(w.errors)
    kw = _settings(w, fields, where)
    overrides = []
    if "overrides" in fields:
        for i, item in enumerate(w.sequence(fields["overrides"][1], f"{where}.overrides", "a list of mappings")):
            at = f"{where}.overrides[{i}]"
            m = w.mapping(item, at, FIELDS + _SETTINGS)
            sel = _selector(w, item, m, at)
            s = _settings(w, m, at)
            if sel is not None:
                overrides.append(Override(sel, s.get("learn_s"), s.get("quiet_s"), s.get("after")))
    exclude = []
    if "exclude" in fields:
        for i, item in enumerate(w.sequence(fields["exclude"][1], f"{where}.exclude", "a list of mappings")):
            at = f"{where}.exclude[{i}]"
            sel = _selector(w, item, w.mapping(item, at, FIELDS), at)
            if sel is not None:
                exclude.append(sel)
    if len(w.errors) > before:
        return ProfilePolicy()
    return ProfilePolicy(**kw, overrides=tuple(overrides), exclude=tuple(exclude))


def from_dict(data, where: str = "profiles") -> ProfilePolicy:
    """The section held as data (code, tests): represented as YAML nodes and walked by the same validator;
    ValueError with the first problem (one line)."""
    try:
        node = yaml.representer.SafeRepresenter().represent_data(data)
    except yaml.representer.RepresenterError as e:
        raise ValueError(f"{where}: cannot represent {e}") from None
    w = Walker("")
    pol = walk(w, node, where)
    if w.errors:
        raise ValueError(w.errors[0])
    return pol


def _settings(w: Walker, fields: dict, where: str) -> dict:
    kw: dict = {}
    if "learn" in fields:
        secs = _duration(w, fields["learn"][1], f"{where}.learn", off=False)
        if secs is not None:
            kw["learn_s"] = secs
    if "quiet" in fields:
        secs = _duration(w, fields["quiet"][1], f"{where}.quiet", off=True)
        if secs is not None:
            kw["quiet_s"] = secs
    if "after_learning" in fields:
        node = fields["after_learning"][1]
        text = w.scalar(node, f"{where}.after_learning")
        if text is not None and text.lower() not in AFTER:
            w.err(node, f"{where}.after_learning", f"must be monitoring, protecting or learning, not {text[:_SHOW]!r}")
        elif text is not None:
            kw["after"] = text.lower()
    return kw


def _duration(w: Walker, node, where: str, off: bool) -> float | None:
    """Seconds from `90`, `90s`, `10m`, `1.5h`; with `off`, also off (never: inf). None after an error."""
    text = w.scalar(node, where)
    if text is None:
        return None
    if off and text.lower() in _OFF:
        return math.inf
    m = _DURATION.match(text) if not node.tag.endswith((":bool", ":null")) else None
    secs = float(m.group(1)) * _UNIT[m.group(2) or "s"] if m else None
    if secs is None or not 0 < secs <= _MAX_S:
        also = " or off" if off else ""
        w.err(node, where, f"expected a duration like 90s, 10m or 1h (more than 0, at most 8760h){also}, "
                           f"got {text[:_SHOW]!r}")
        return None
    return secs


def _selector(w: Walker, node, fields: dict, where: str) -> Selector | None:
    globs = []
    for name in FIELDS:
        if name in fields:
            vn = fields[name][1]
            if not (isinstance(vn, yaml.ScalarNode) and vn.tag.endswith(":str")):
                w.err(vn, f"{where}.{name}", f"expected a glob (a string; quote \"123\" or \"true\"), got {kind(vn)}")
            else:
                globs.append((name, vn.value))
    named = [n for n in FIELDS if n in fields]
    if not named and not is_null(node) and isinstance(node, yaml.MappingNode):
        w.err(node, where, f"names no workload: give at least one of {', '.join(FIELDS)}")
        return None
    if is_null(node):
        w.err(node, where, f"expected a mapping naming at least one of {', '.join(FIELDS)}")
        return None
    return Selector(tuple(globs)) if len(globs) == len(named) and named else None
