"""A minimal renderer for the subset of Helm's template language that packaging/helm/nodewarden uses.

Why not `helm template`: no helm binary is packaged by Debian 12, PyPI or npm, and nothing else may be
fetched here. So the chart keeps to a small subset, and this renders exactly that subset, refusing
anything else with a clear error (a template that strays fails the test instead of rendering wrong):

- actions `{{ pipeline }}`, with `{{-` / `-}}` trimming whitespace as Go's text/template does;
- `define "name"` / `include "name" ctx`, `if` / `else if` / `else`, `range pipeline` (dot becomes each
  item), `with pipeline`, comments `{{/* ... */}}`, `end`;
- operands `.`, `$`, `.A.b.c`, `$.A.b`, "strings", numbers, true/false, `(pipeline)`;
- functions include, toYaml, nindent, indent, quote, default, required, sha256sum, b64enc, not, eq, ne,
  gt, lt, int, and, or, printf (%s/%v/%d), trimSuffix; numbers from values are float64 as in helm;
- .Values (values.yaml deep-merged with overrides, as `--set`/`-f` do, checked against values.schema.json),
  .Release.Name/.Namespace/.Service, .Chart.Name/.Version/.AppVersion; templates/NOTES.txt apart.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from pathlib import Path

import yaml

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(\()|(\))|(\|)|([^\s()|]+))')


class TemplateError(Exception):
    pass


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _floats(v):
    """Numbers as Helm holds values read from YAML: float64 (YAML to JSON to interface{}). So `printf "%d"`
    of a port, or `eq .Values.replicas 1`, fails in helm; rendering them as floats here fails the same way."""
    if isinstance(v, dict):
        return {k: _floats(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_floats(x) for x in v]
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _ints(v):
    """Back from float64 for toYaml: JSON marshalling writes 7470.0 as 7470."""
    if isinstance(v, dict):
        return {k: _ints(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_ints(x) for x in v]
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _kind(v) -> str:
    return "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float" if isinstance(v, float) \
        else "string" if isinstance(v, str) else "nil" if v is None else type(v).__name__


def _compare(op):
    def f(a, b):
        if _kind(a) != _kind(b):  # text/template: errBadComparison, except int against uint
            raise TemplateError(f"incompatible types for comparison: {_kind(a)} and {_kind(b)}")
        return op(a, b)
    return f


def _truthy(v) -> bool:
    return not (v is None or v is False or v == 0 or v == "" or (isinstance(v, (list, dict)) and not v))


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):  # fmt's %v: shortest %g, so 1e6 prints as 1e+06 (roughly: Python's %g)
        return str(int(v)) if v.is_integer() and abs(v) < 1e6 else f"{v:g}"
    if isinstance(v, (dict, list)):
        raise TemplateError(f"printing a {type(v).__name__} needs toYaml: {v!r}")
    return str(v)


def _to_yaml(v) -> str:
    if v is None or v == {} or v == []:
        return "{}" if isinstance(v, dict) or v is None else "[]"
    return yaml.safe_dump(_ints(v), default_flow_style=False, sort_keys=True).rstrip("\n")


def _indent(n, s) -> str:
    return "\n".join((" " * int(n) + line) if line else line for line in _text(s).split("\n"))


def _required(msg, v):
    if not _truthy(v):
        raise TemplateError(msg)
    return v


def _printf(fmt, *args):
    verbs = re.findall(r"%(.)", fmt)
    if set(verbs) - {"s", "v", "d"} or len(verbs) != len(args):
        raise TemplateError(f"printf {fmt!r}: only %s, %v and %d here, one per argument")
    for verb, a in zip(verbs, args, strict=True):
        if verb == "d" and _kind(a) != "int":
            raise TemplateError(f"printf {fmt!r}: %d of a {_kind(a)} prints %!d(...) in helm (values' numbers"
                                " are float64): use %v, or int")
    return re.sub(r"%.", "%s", fmt) % tuple(_text(a) for a in args)


_FUNCS = {
    "toYaml": _to_yaml,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "indent": _indent,
    "quote": lambda *a: " ".join('"' + _text(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in a),
    "default": lambda d, v=None: v if _truthy(v) else d,
    "required": _required,
    "sha256sum": lambda s: hashlib.sha256(_text(s).encode()).hexdigest(),
    "b64enc": lambda s: base64.b64encode(_text(s).encode()).decode(),
    "not": lambda v: not _truthy(v),
    "eq": _compare(lambda a, b: a == b),
    "ne": _compare(lambda a, b: a != b),
    "gt": _compare(lambda a, b: a > b),
    "lt": _compare(lambda a, b: a < b),
    "int": lambda v: int(float(v or 0)),
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
    "printf": _printf,
    "trimSuffix": lambda suf, s: _text(s)[: -len(suf)] if suf and _text(s).endswith(suf) else _text(s),
}


def _parse(src: str, name: str) -> list:
    """Text and actions into a tree: ("text", s) | ("expr", p) | ("if", [(cond, body)...], else) |
    ("range"|"with", p, body, else) | ("define", name, body)."""
    pieces: list = []
    pos = 0
    for m in _ACTION.finditer(src):
        text = src[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        pieces.append(("text", text))
        pieces.append(("action", m.group(2).strip(), bool(m.group(3))))
        pos = m.end()
    pieces.append(("text", src[pos:]))
    # right trim: the text after a `-}}` loses its leading whitespace
    for i, p in enumerate(pieces):
        if p[0] == "action" and p[2] and i + 1 < len(pieces):
            pieces[i + 1] = ("text", pieces[i + 1][1].lstrip())

    def block(i: int, closers: tuple) -> tuple[list, int, str]:
        out: list = []
        while i < len(pieces):
            p = pieces[i]
            if p[0] == "text":
                if p[1]:
                    out.append(p)
                i += 1
                continue
            act = p[1]
            word = act.split(None, 1)[0] if act else ""
            if act.startswith("/*"):
                i += 1
            elif word in ("end", "else") and word in closers:
                return out, i, act
            elif word == "if":
                branches, els = [], None
                cond = act[2:].strip()
                while True:
                    body, i, closer = block(i + 1, ("end", "else"))
                    if cond is None:
                        els = body
                    else:
                        branches.append((cond, body))
                    if closer == "end":
                        break
                    rest = closer[4:].strip()
                    cond = rest[2:].strip() if rest.startswith("if ") else None
                    if rest and cond is None:
                        raise TemplateError(f"{name}: unsupported {{{{ {closer} }}}}")
                out.append(("if", branches, els))
                i += 1
            elif word in ("range", "with"):
                body, i, closer = block(i + 1, ("end", "else"))
                els = None
                if closer != "end":
                    els, i, _ = block(i + 1, ("end",))
                if ":=" in act:
                    raise TemplateError(f"{name}: variables in {word} are not in this subset: {act}")
                out.append((word, act[len(word):].strip(), body, els))
                i += 1
            elif word == "define":
                body, i, _ = block(i + 1, ("end",))
                out.append(("define", _parse_string(act[6:].strip(), name), body))
                i += 1
            elif word in ("end", "else", "block", "template", "template", "tpl"):
                raise TemplateError(f"{name}: unexpected or unsupported {{{{ {act} }}}}")
            else:
                out.append(("expr", act))
                i += 1
        if closers:
            raise TemplateError(f"{name}: missing {{{{ end }}}}")
        return out, i, ""

    tree, _, _ = block(0, ())
    return tree


def _parse_string(tok: str, name: str) -> str:
    if not (tok.startswith('"') and tok.endswith('"')):
        raise TemplateError(f"{name}: expected a quoted name, got {tok}")
    return yaml.safe_load(tok)


class Chart:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        meta = yaml.safe_load((self.root / "Chart.yaml").read_text())
        self.meta = meta
        self.default_values = yaml.safe_load((self.root / "values.yaml").read_text()) or {}
        self.templates: dict[str, list] = {}
        self.defines: dict[str, list] = {}
        self.notes: list = []
        for path in sorted((self.root / "templates").iterdir()):
            if path.suffix not in (".yaml", ".tpl", ".yml") and path.name != "NOTES.txt":
                continue
            tree = _parse(path.read_text(), path.name)
            for node in tree:
                if node[0] == "define":
                    self.defines[node[1]] = node[2]
            if path.name == "NOTES.txt":  # helm prints it after install; not a manifest
                self.notes = _parse(path.read_text(), path.name)
                continue
            if not path.name.startswith("_"):
                self.templates[path.name] = [n for n in tree if n[0] != "define"]

    def render(self, values: dict | None = None, name: str = "nodewarden",
               namespace: str = "nodewarden") -> dict[str, str]:
        """Every template file's output, by file name (as `helm template` prints under `# Source:`)."""
        merged = _floats(_merge(self.default_values, values or {}))
        schema = self.root / "values.schema.json"
        if schema.exists():  # as helm does before rendering
            import json

            import jsonschema

            err = jsonschema.exceptions.best_match(
                jsonschema.Draft7Validator(json.loads(schema.read_text())).iter_errors(merged))
            if err is not None:
                where = ".".join(str(x) for x in err.absolute_path) or "values"
                raise TemplateError(f"values don't meet the schema: {where}: {err.message}")
        root = {
            "Values": merged,
            "Release": {"Name": name, "Namespace": namespace, "Service": "Helm"},
            "Chart": {"Name": self.meta["name"], "Version": str(self.meta["version"]),
                      "AppVersion": str(self.meta.get("appVersion", ""))},
        }
        out = {fname: self._run(tree, root, root, fname) for fname, tree in self.templates.items()}
        self.rendered_notes = self._run(self.notes, root, root, "NOTES.txt")
        return out

    def manifests(self, values: dict | None = None, **kw) -> list[dict]:
        docs = []
        for fname, text in self.render(values, **kw).items():
            try:
                docs.extend(d for d in yaml.safe_load_all(text) if d)
            except yaml.YAMLError as e:
                raise TemplateError(f"{fname}: rendered YAML does not parse: {e}\n{text}") from None
        return docs

    # -- evaluation --

    def _run(self, tree: list, dot, root, where: str) -> str:
        out = []
        for node in tree:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "expr":
                out.append(_text(self._pipeline(node[1], dot, root, where)))
            elif kind == "if":
                for cond, body in node[1]:
                    if _truthy(self._pipeline(cond, dot, root, where)):
                        out.append(self._run(body, dot, root, where))
                        break
                else:
                    if node[2] is not None:
                        out.append(self._run(node[2], dot, root, where))
            elif kind == "range":
                items = self._pipeline(node[1], dot, root, where)
                if isinstance(items, dict):
                    items = [items[k] for k in sorted(items)]
                if _truthy(items):
                    out.extend(self._run(node[2], it, root, where) for it in items)
                elif node[3] is not None:
                    out.append(self._run(node[3], dot, root, where))
            elif kind == "with":
                v = self._pipeline(node[1], dot, root, where)
                if _truthy(v):
                    out.append(self._run(node[2], v, root, where))
                elif node[3] is not None:
                    out.append(self._run(node[3], dot, root, where))
        return "".join(out)

    def _pipeline(self, src: str, dot, root, where: str):
        toks = [next(g for g in m.groups() if g is not None) for m in _TOKEN.finditer(src) if m.group(0).strip()]
        val, rest = self._pipe(toks, dot, root, where)
        if rest:
            raise TemplateError(f"{where}: trailing {' '.join(rest)!r} in {{{{ {src} }}}}")
        return val

    def _pipe(self, toks: list, dot, root, where: str):
        val, have = None, False
        while toks:
            cmd: list = []
            while toks and toks[0] not in ("|", ")"):
                if toks[0] == "(":
                    v, toks = self._pipe(toks[1:], dot, root, where)
                    if not toks or toks[0] != ")":
                        raise TemplateError(f"{where}: missing )")
                    toks = toks[1:]
                    cmd.append(("value", v))
                else:
                    cmd.append(("tok", toks[0]))
                    toks = toks[1:]
            if have:
                cmd.append(("value", val))
            val, have = self._command(cmd, dot, root, where), True
            if toks and toks[0] == "|":
                toks = toks[1:]
            else:
                break
        return val, toks

    def _command(self, cmd: list, dot, root, where: str):
        if not cmd:
            raise TemplateError(f"{where}: empty command")
        head = cmd[0]
        if head[0] == "tok" and head[1] in _FUNCS or head == ("tok", "include"):
            args = [self._operand(c, dot, root, where) for c in cmd[1:]]
            if head[1] == "include":
                tname, ctx = args
                if tname not in self.defines:
                    raise TemplateError(f"{where}: include of undefined {tname!r}")
                return self._run(self.defines[tname], ctx, root, where)
            try:
                return _FUNCS[head[1]](*args)
            except TypeError as e:
                raise TemplateError(f"{where}: {head[1]}: {e}") from None
        if len(cmd) != 1:
            raise TemplateError(f"{where}: unknown function {head[1] if head[0] == 'tok' else head}")
        return self._operand(head, dot, root, where)

    def _operand(self, c, dot, root, where: str):
        if c[0] == "value":
            return c[1]
        tok = c[1]
        if tok.startswith('"'):
            return yaml.safe_load(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if tok == ".":
            return dot
        if tok == "$":
            return root
        if tok.startswith(".") or tok.startswith("$."):
            base = root if tok.startswith("$") else dot
            for part in tok.lstrip("$").strip(".").split("."):
                if not isinstance(base, dict):
                    raise TemplateError(f"{where}: {tok}: {part} of a {type(base).__name__}")
                base = base.get(part)
            return base
        raise TemplateError(f"{where}: not in this subset: {tok}")
