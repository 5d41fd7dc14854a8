"""Detection rules as policy: the `detect:` section of the policy file and the rule files it names.

A rule file is a YAML list of items, each one of `- rule:`, `- list:` or `- macro:`. Two dialects load
through the same walker: ours (`id`, `name`, `description`, `severity`, `scope`, `output: [fields]`,
`action`) and Falco's (`rule` as the name, `desc`, `priority`, `output` as a format string,
`required_engine_version`, `source`). `action: kill` kills the process that matched
(agent/enforce/detectkill.py says where: in the kernel at exec when it can, else from user space); it
needs `scope: container` or `allow_host_kill: true`, so that no rule kills host processes by accident.
A later item with `append: true` extends an earlier one of the same name (a list's items, a macro's
or rule's condition with `and`-free Falco semantics: the text is appended; a rule's exceptions are
added); `override: {field: append|replace}` names per field what to do. Files load in order: the
bundled set first, then `detect.rules_files`, then the policy's own `detect.rules`, so a user file can
change a bundled rule by name.

Exceptions are compiled into the condition text here, as `and not (...)`, so the compiler
(agent/detect/condition.py, a higher layer that this module must not import) sees one condition.
Every error names file:line:col through the one Walker; conditions are checked by the detector
when it is built (agent/detect/engine.py), which maps a compiler offset back to the rule's line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

import yaml

from agent.policy.nodes import Walker, is_null
from agent.vocab import Severity

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "detect", "rules")
DETECT_KEYS = ("enabled", "rules_files", "enable", "disable", "rules", "fold_window", "rate_limit")
_OUR_RULE_KEYS = ("id", "name", "description", "condition", "severity", "tags", "scope", "output", "exceptions",
                  "enabled", "action", "allow_host_kill", "append", "override")
_FALCO_RULE_KEYS = ("rule", "desc", "priority", "source", "warn_evttypes", "skip-if-unknown-filter",
                    "required_engine_version", "required_plugin_versions")
_RULE_KEYS = tuple(dict.fromkeys(_OUR_RULE_KEYS + _FALCO_RULE_KEYS))
_LIST_KEYS = ("list", "items", "append", "override")
_MACRO_KEYS = ("macro", "condition", "append", "override")
_ITEM_KINDS = ("rule", "list", "macro", "required_engine_version", "required_plugin_versions")
_SCOPES = ("host", "container", "both")
_ACTIONS = ("alert", "kill")
_MAX_FILE = 4 << 20
# Falco priorities -> our severities: the syslog levels, folded onto five steps (EMERGENCY, ALERT and
# CRITICAL are all critical; ERROR is high; WARNING medium; NOTICE low; INFORMATIONAL and DEBUG info).
FALCO_PRIORITY = {"emergency": Severity.CRITICAL, "alert": Severity.CRITICAL, "critical": Severity.CRITICAL,
                  "error": Severity.HIGH, "warning": Severity.MEDIUM, "notice": Severity.LOW,
                  "informational": Severity.INFO, "info": Severity.INFO, "debug": Severity.INFO}


@dataclass(frozen=True)
class Exception_:
    """One named exception (Falco's): fields compared with comps against each tuple of values."""

    name: str
    fields: tuple[str, ...]
    comps: tuple[str, ...]
    values: tuple[tuple, ...]  # one tuple per alternative; `single`: the values themselves
    single: bool = False  # Falco's `fields: f` (not a list): `values` is a flat list for one comparison


@dataclass(frozen=True)
class RuleSpec:
    id: str
    name: str
    description: str
    condition: str  # as written (with appends); exceptions are added by `full_condition`
    severity: Severity
    tags: tuple[str, ...] = ()
    scope: str = "both"
    output: tuple[str, ...] = ()  # field names the alert carries (ours), or ()
    output_format: str = ""  # Falco's output string with %field references, or ""
    exceptions: tuple[Exception_, ...] = ()
    enabled: bool = True
    action: str = "alert"  # "alert", or "kill": the process that matched is killed (agent/enforce/detectkill.py)
    allow_host_kill: bool = False  # action kill outside containers (scope host or both) is meant
    origin: str = ""  # "file:line:col" of the rule, for errors and reports
    cond_origin: str = ""  # "file:line:col" of its condition
    source: str = "syscall"
    dialect: str = "nodewarden"  # "falco": written in Falco's format (a rule we cannot run is skipped, listed)

    @property
    def full_condition(self) -> str:
        text = f"({self.condition})"
        for ex in self.exceptions:
            if ex.values:
                text += f" and not ({_exception_text(ex)})"
        return text


@dataclass(frozen=True)
class RuleSet:
    """Every rule, list and macro after merging, in file order; `skipped`: rules left out at load
    (another source than syscall), by name with the reason."""

    rules: tuple[RuleSpec, ...] = ()
    lists: dict = field(default_factory=dict)
    macros: dict = field(default_factory=dict)
    skipped: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Selection:
    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def matches(self, rule: RuleSpec) -> bool:
        return rule.id in self.ids or rule.name in self.ids or bool(set(self.tags) & set(rule.tags))


@dataclass(frozen=True)
class DetectSection:
    """The policy's `detect:` section (defaults: the bundled rules, on)."""

    enabled: bool = True
    rules_files: tuple[str, ...] = ()
    enable: Selection = Selection()
    disable: Selection = Selection()
    fold_window: float = 60.0  # seconds identical alerts fold into one
    rate_limit: float = 20.0  # alerts per second per rule (a bucket of 5 s of them), 0 = none
    ruleset: RuleSet | None = None  # None: not loaded yet (DetectSection() alone); load_section fills it


def _exception_text(ex: Exception_) -> str:
    if ex.single:  # `f in (a, b)`, or `f startswith a or f startswith b` for a scalar operator
        f, comp = ex.fields[0], ex.comps[0]
        if comp in ("in", "pmatch", "intersects"):
            return f"{f} {comp} {_literal(tuple(ex.values))}"
        return " or ".join(f"{f} {comp} {_literal(v)}" for v in ex.values)
    alts = []
    for tup in ex.values:
        parts = [f"{f} {comp} {_literal(val)}" for f, comp, val in zip(ex.fields, ex.comps, tup, strict=False)]
        alts.append("(" + " and ".join(parts) + ")")
    return " or ".join(alts)


_BARE = re.compile(r"^[A-Za-z_][\w.-]*$")


def _literal(val, in_list: bool = False) -> str:
    if isinstance(val, tuple):
        return "(" + ", ".join(_literal(v, True) for v in val) + ")"
    if in_list and _BARE.match(str(val)):  # bare inside a list: a list's name expands (Falco's exceptions)
        return str(val)
    s = str(val)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- walking one file --------------------------------------------------------------------------------------


class _State:
    """What the files loaded so far define, merged in order."""

    def __init__(self) -> None:
        self.rules: dict[str, RuleSpec] = {}
        self.lists: dict[str, list] = {}
        self.macros: dict[str, str] = {}
        self.skipped: list[tuple[str, str]] = []


def load_files(paths: list[str], extra=None, extra_name: str = "<policy>") -> tuple[RuleSet, list[str]]:
    """(RuleSet, errors): every file in `paths` (files or directories of *.yaml), then `extra` (the
    policy's own `detect.rules` node, walked with the policy's file name)."""
    st, errors = _State(), []
    for path in _expand(paths, errors):
        text = _read(path, errors)
        if text is None:
            continue
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            pos = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
            errors.append(f"{path}:{pos}: invalid YAML: {getattr(e, 'problem', None) or e}")
            continue
        errors += _walk_items(root, path, st)
    if extra is not None:
        errors += _walk_items(extra, extra_name, st)
    errors += _kill_scope_errors(st.rules.values())
    return RuleSet(tuple(st.rules.values()), dict(st.lists), dict(st.macros), tuple(st.skipped)), errors


def _kill_scope_errors(specs) -> list[str]:
    """A kill rule must say it means to kill host processes: a wrong condition on scope host or both
    (the default) kills the node's own daemons, not a container's. Checked once the files are merged, as
    a later item may change a rule's action, scope or allow_host_kill."""
    return [f"{r.origin}: rule {r.id}: action kill with scope {r.scope} also kills host processes: "
            "set scope: container, or allow_host_kill: true to mean it"
            for r in specs if r.action == "kill" and r.scope != "container" and not r.allow_host_kill]


def _expand(paths: list[str], errors: list[str]) -> list[str]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, n) for n in os.listdir(p) if n.endswith((".yaml", ".yml")))
        elif os.path.exists(p):
            out.append(p)
        else:
            errors.append(f"{p}: rules file not found")
    return out


def _read(path: str, errors: list[str]) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as e:
        errors.append(f"{path}: cannot read: {e.strerror}")
        return None
    if len(data) > _MAX_FILE:
        errors.append(f"{path}: larger than {_MAX_FILE} bytes")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        errors.append(f"{path}: not UTF-8 text (byte {e.start})")
        return None


def _walk_items(root, name: str, st: _State) -> list[str]:
    v = Walker(name)
    for i, item in enumerate(v.sequence(root, "", "a list of rule, list and macro items")):
        if not isinstance(item, yaml.MappingNode) or not item.value:
            v.err(item, f"[{i}]", "expected a mapping with rule, list or macro")
            continue
        keys = [n.value for n, _v in item.value if isinstance(n, yaml.ScalarNode)]
        kind = next((k for k in keys if k in ("rule", "list", "macro")), keys[0] if keys else None)
        if kind == "rule":
            _walk_rule(v, item, st)
        elif kind == "list":
            _walk_list(v, item, st)
        elif kind == "macro":
            _walk_macro(v, item, st)
        elif kind not in _ITEM_KINDS:
            v.err(item, f"[{i}]", f"unknown item {str(kind)[:80]!r} (rule, list, macro)")
    return v.in_file_order()


def _merge_mode(v: Walker, m: dict, where: str, fields: tuple[str, ...]) -> dict[str, str]:
    """{field: 'append'|'replace'} from `append: true` (every listed field appends) or `override:`."""
    modes: dict[str, str] = {}
    if "append" in m and _bool(v, m["append"][1], f"{where}.append"):
        modes = dict.fromkeys(fields, "append")
    if "override" in m:
        for key, (_kn, vn) in v.mapping(m["override"][1], f"{where}.override").items():
            how = v.scalar(vn, f"{where}.override.{key}")
            if how not in ("append", "replace"):
                v.err(vn, f"{where}.override.{key}", f"expected append or replace, got {str(how)[:80]!r}")
            else:
                modes[key] = how
    return modes


def _bool(v: Walker, node, where: str) -> bool:
    text = v.scalar(node, where)
    if text is None:
        return False
    if text.lower() in ("true", "yes", "on"):
        return True
    if text.lower() not in ("false", "no", "off"):
        v.err(node, where, f"expected true or false, got {text[:80]!r}")
    return False


def _walk_list(v: Walker, item, st: _State) -> None:
    m = v.mapping(item, "list", _LIST_KEYS)
    name = v.scalar(m["list"][1], "list") if "list" in m else None
    if not name:
        v.err(item, "list", "a list needs a name")
        return
    items = []
    for n in v.sequence(m["items"][1], f"list {name}.items") if "items" in m else []:
        if isinstance(n, yaml.ScalarNode):
            items.append(n.value)
        else:
            v.err(n, f"list {name}.items", "expected a value")
    modes = _merge_mode(v, m, f"list {name}", ("items",))
    if modes.get("items") == "append":
        if name not in st.lists:
            v.err(item, f"list {name}", "append to a list that is not defined")
            return
        st.lists[name] = st.lists[name] + items
    else:
        st.lists[name] = items


def _walk_macro(v: Walker, item, st: _State) -> None:
    m = v.mapping(item, "macro", _MACRO_KEYS)
    name = v.scalar(m["macro"][1], "macro") if "macro" in m else None
    if not name:
        v.err(item, "macro", "a macro needs a name")
        return
    cond = v.scalar(m["condition"][1], f"macro {name}.condition") if "condition" in m else None
    if cond is None:
        if "condition" not in m:
            v.err(item, f"macro {name}", "a macro needs a condition")
        return
    if _merge_mode(v, m, f"macro {name}", ("condition",)).get("condition") == "append":
        if name not in st.macros:
            v.err(item, f"macro {name}", "append to a macro that is not defined")
            return
        cond = f"{st.macros[name]} {cond}"
    st.macros[name] = cond


def _pos(name: str, node) -> str:
    mark = getattr(node, "start_mark", None)
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name


def _walk_rule(v: Walker, item, st: _State) -> None:
    m = v.mapping(item, "rule", _RULE_KEYS)
    rid = _str(v, m, "id", "rule") or _str(v, m, "rule", "rule")
    if not rid:
        v.err(item, "rule", "a rule needs an id (or Falco's rule: name)")
        return
    where = f"rule {rid}"
    source = _str(v, m, "source", where) or "syscall"
    if source != "syscall":  # Falco plugin sources (k8s_audit, aws_cloudtrail ...): not events we see
        st.skipped.append((rid, f"source {source!r}: only syscall rules run here"))
        return
    kw = _rule_fields(v, m, where)
    modes = _merge_mode(v, m, where, ("condition", "exceptions", "output", "tags"))
    old = st.rules.get(rid)
    if old is None:
        if modes:
            v.err(item, where, "append or override of a rule that is not defined")
            return
        if "condition" not in kw or "severity" not in kw:
            v.err(item, where, "a rule needs a condition and a severity (or Falco's priority)")
            return
        kw.setdefault("name", _str(v, m, "rule", where) if "id" in m and "rule" in m else rid)
        kw.setdefault("description", "")
        dialect = "falco" if "priority" in m or "id" not in m and "severity" not in m else "nodewarden"
        st.rules[rid] = RuleSpec(id=rid, origin=_pos(v.name, item), source=source, dialect=dialect, **kw)
        return
    st.rules[rid] = _merged(old, kw, modes)


def _merged(old: RuleSpec, kw: dict, modes: dict[str, str]) -> RuleSpec:
    """An existing rule changed by a later item: fields named `append` extend, the others replace."""
    out = dict(kw)
    if modes.get("condition") == "append" and "condition" in kw:
        out["condition"] = f"{old.condition} {kw['condition']}"
    for key in ("exceptions", "tags", "output"):
        if modes.get(key) == "append" and key in kw:
            out[key] = getattr(old, key) + kw[key]
    return replace(old, **out)


def _str(v: Walker, m: dict, key: str, where: str) -> str | None:
    if key not in m:
        return None
    return v.scalar(m[key][1], f"{where}.{key}")


def _rule_fields(v: Walker, m: dict, where: str) -> dict:
    kw: dict = {}
    for key, attr in (("name", "name"), ("description", "description"), ("desc", "description")):
        if key in m and (text := _str(v, m, key, where)) is not None:
            kw[attr] = " ".join(text.split())
    if "condition" in m and (cond := _str(v, m, "condition", where)) is not None:
        kw["condition"], kw["cond_origin"] = cond, _pos(v.name, m["condition"][1])
    sev = _severity_of(v, m, where)
    if sev is not None:
        kw["severity"] = sev
    if "tags" in m:
        kw["tags"] = tuple(s for _n, s in v.strings(m["tags"][1], f"{where}.tags"))
    for key, allowed in (("scope", _SCOPES), ("action", _ACTIONS)):
        if key in m and (text := _str(v, m, key, where)) is not None:
            if text in allowed:
                kw[key] = text
            else:
                v.err(m[key][1], f"{where}.{key}", f"expected {' or '.join(allowed)}, got {text[:80]!r}")
    for key in ("enabled", "allow_host_kill"):
        if key in m:
            kw[key] = _bool(v, m[key][1], f"{where}.{key}")
    if "output" in m:
        node = m["output"][1]
        if isinstance(node, yaml.SequenceNode):
            kw["output"] = tuple(s for _n, s in v.strings(node, f"{where}.output"))
        elif (text := v.scalar(node, f"{where}.output")) is not None:
            kw["output_format"] = " ".join(text.split())
    if "exceptions" in m:
        kw["exceptions"] = tuple(_exceptions(v, m["exceptions"][1], f"{where}.exceptions"))
    return kw


def _severity_of(v: Walker, m: dict, where: str) -> Severity | None:
    if "severity" in m and (text := _str(v, m, "severity", where)) is not None:
        try:
            return Severity.parse(text)
        except ValueError:
            v.err(m["severity"][1], f"{where}.severity", f"unknown severity {text[:80]!r} "
                                                          "(info, low, medium, high, critical)")
    if "priority" in m and (text := _str(v, m, "priority", where)) is not None:
        sev = FALCO_PRIORITY.get(text.lower())
        if sev is None:
            v.err(m["priority"][1], f"{where}.priority", f"unknown priority {text[:80]!r} "
                                                          "(EMERGENCY, ALERT, CRITICAL, ERROR, WARNING, NOTICE, "
                                                          "INFORMATIONAL, DEBUG)")
        return sev
    return None


def _exceptions(v: Walker, node, where: str) -> list[Exception_]:
    out = []
    for i, en in enumerate(v.sequence(node, where)):
        m = v.mapping(en, f"{where}[{i}]", ("name", "fields", "comps", "values"))
        name = _str(v, m, "name", f"{where}[{i}]") or f"exception{i}"
        w = f"{where}.{name}"
        single = "fields" in m and isinstance(m["fields"][1], yaml.ScalarNode)
        fields = ((m["fields"][1].value,) if single else
                  tuple(s for _n, s in v.strings(m["fields"][1], f"{w}.fields")) if "fields" in m else ())
        if not fields:
            v.err(en, w, "an exception needs fields")
            continue
        comps = _comps(v, m, w, len(fields))
        values = tuple(_values(v, m["values"][1], f"{w}.values", single, len(fields))) if "values" in m else ()
        out.append(Exception_(name, fields, comps, values, single))
    return out


def _comps(v: Walker, m: dict, where: str, n: int) -> tuple[str, ...]:
    if "comps" not in m:  # Falco's defaults: = for each field of a tuple, in for a single field
        return ("=",) * n if n > 1 or "fields" in m and isinstance(m["fields"][1], yaml.SequenceNode) else ("in",)
    node = m["comps"][1]
    comps = ((node.value,) if isinstance(node, yaml.ScalarNode) else
             tuple(s for _n, s in v.strings(node, f"{where}.comps")))
    if len(comps) != n:
        v.err(node, f"{where}.comps", f"{len(comps)} comps for {n} fields")
    return comps


def _values(v: Walker, node, where: str, single: bool, n: int) -> list:
    out = []
    for i, tup in enumerate(v.sequence(node, where)):
        if single:  # fields: one field, values: a flat list
            out.append(_value(v, tup, f"{where}[{i}]"))
            continue
        items = v.sequence(tup, f"{where}[{i}]", "a list of values, one per field")
        if len(items) != n:
            v.err(tup, f"{where}[{i}]", f"{len(items)} values for {n} fields")
            continue
        out.append(tuple(_value(v, it, f"{where}[{i}]") for it in items))
    return out


def _value(v: Walker, node, where: str):
    if isinstance(node, yaml.SequenceNode):
        return tuple(s for _n, s in v.strings(node, where))
    return v.scalar(node, where) or ""


# -- the policy's detect: section ------------------------------------------------------------------------


def walk_section(v: Walker, node, policy_dir: str = ".") -> DetectSection:
    """The `detect:` section (structure only: the rules load in `load_section`)."""
    m = v.mapping(node, "detect", DETECT_KEYS)
    kw: dict = {}
    if "enabled" in m:
        kw["enabled"] = _bool(v, m["enabled"][1], "detect.enabled")
    if "rules_files" in m:
        kw["rules_files"] = tuple(os.path.join(policy_dir, s) for _n, s in
                                  v.strings(m["rules_files"][1], "detect.rules_files"))
    for key in ("enable", "disable"):
        if key in m:
            sel = v.mapping(m[key][1], f"detect.{key}", ("ids", "tags"))
            kw[key] = Selection(*(tuple(s for _n, s in v.strings(sel[k][1], f"detect.{key}.{k}")) if k in sel
                                  else () for k in ("ids", "tags")))
    for key, lo, hi in (("fold_window", 0.0, 3600.0), ("rate_limit", 0.0, 1e6)):
        if key in m and (text := v.scalar(m[key][1], f"detect.{key}")) is not None:
            try:
                val = float(text.rstrip("s"))
                if not lo <= val <= hi:
                    raise ValueError
                kw[key] = val
            except ValueError:
                v.err(m[key][1], f"detect.{key}", f"expected a number from {lo:g} to {hi:g}, got {text[:80]!r}")
    section = DetectSection(**kw)
    if section.enabled:
        ruleset, errors = load_files([BUNDLED_DIR, *section.rules_files],
                                     m["rules"][1] if "rules" in m and not is_null(m["rules"][1]) else None,
                                     v.name)
        v.add_placed(errors)
        section = replace(section, ruleset=ruleset)
    return section


def default_section() -> tuple[DetectSection, list[str]]:
    """The section with no policy file: the bundled rules, on."""
    ruleset, errors = load_files([BUNDLED_DIR])
    return DetectSection(ruleset=ruleset), errors


def selected(section: DetectSection) -> list[RuleSpec]:
    """The rules that run: enabled (or enabled by the section), not disabled by it."""
    rules = section.ruleset.rules if section.ruleset is not None else ()
    return [r for r in rules if (r.enabled or section.enable.matches(r)) and not section.disable.matches(r)]
