"""A lenient PHP parser for the web-shell reader: tokens -> statements of expression trees.

It keeps what the analysis needs (expressions, assignments, calls, function and class bodies, the
loops that bind variables) and reads control flow loosely: `if (c) {...} else {...}` is the
condition as an expression then the blocks in order, since the analysis that follows is
flow-insensitive within a function anyway. It never fails: an unexpected token is skipped.

Expression nodes are tuples whose first item is the kind:
  ("var", name) ("varvar", e) ("str", s) ("num", n) ("istr", [str|node]) ("shell", [str|node])
  ("const", name) ("name", name) ("call", callee, args) ("mcall", obj, namenode, args)
  ("scall", cls, namenode, args) ("new", clsnode, args) ("idx", base, key|None) ("prop", obj, namenode)
  ("sprop", cls, namenode) ("bin", op, [operands]) ("un", op, e) (op "post++"/"post--": $i++) ("cast", type, e)
  ("assign", op, target, value) ("tern", c, a|None, b) ("array", [(key|None, value)])
  ("closure", FuncDef, uses) ("include", kind, e) ("match", subject, [results]) ("spread", e)
Statements: ("expr", e) ("exprs", [e]) ("echo", [e]) ("return", e|None) ("foreach", e, key|None, value)
  ("for", [init], [condition], [step], [body]) ("if", [(condition, [body])], [else body])
  ("global", [names]) ("block", [stmts]) ("func", FuncDef) ("class", ClassDef) ("html", text)
  ("const", [(name, e)])
"""

from __future__ import annotations

from agent.imagegate.webshell.common import Budget

MAX_NEST = 90  # nested expressions/blocks; deeper input is hostile (the Python stack is the limit)


class TooDeep(Exception):
    pass


class FuncDef:
    __slots__ = ("name", "params", "body", "cls")

    def __init__(self, name: str, params: list, body: list, cls: str = ""):
        self.name = name  # lower-case; "" for closures
        self.params = params  # [(name, default node|None, byref, variadic)]
        self.body = body
        self.cls = cls


class ClassDef:
    __slots__ = ("name", "parent", "methods", "props", "consts", "traits")

    def __init__(self, name: str, parent: str):
        self.name = name
        self.parent = parent
        self.traits: list[str] = []  # `use T;` inside the class: T's methods come before the parent's
        self.methods: dict[str, FuncDef] = {}
        self.props: list[tuple[str, object]] = []
        self.consts: list[tuple[str, object]] = []


_BIN = {
    "or": 1, "xor": 2, "and": 3,
    "??": 6, "||": 7, "&&": 8, "|": 9, "^": 10, "&": 11,
    "==": 12, "!=": 12, "===": 12, "!==": 12, "<>": 12, "<=>": 12,
    "<": 13, "<=": 13, ">": 13, ">=": 13,
    ".": 14, "<<": 15, ">>": 15, "+": 16, "-": 16, "*": 17, "/": 17, "%": 17,
    "instanceof": 18, "**": 20,
}
_RIGHT = {"??", "**"}
_ASSIGN = {"=", "+=", "-=", "*=", "/=", ".=", "%=", "&=", "|=", "^=", "<<=", ">>=", "**=", "??="}
_LVALUE = {"var", "varvar", "idx", "prop", "sprop", "array"}
_TERNARY_BP = 5
_UNARY_BP = 19
_MODIFIERS = {"public", "private", "protected", "static", "var", "abstract", "final", "readonly"}
_KW_STOP = {"as", "endif", "endwhile", "endfor", "endforeach", "endswitch", "enddeclare", "else", "elseif"}


class Parser:
    def __init__(self, toks: list[tuple], budget: Budget):
        self.toks = toks
        self.i = 0
        self.n = len(toks)
        self.depth = 0
        self.budget = budget
        self.steps = 0
        self.classes: list[ClassDef] = []
        self.anon = 0
        self.too_deep = False

    # -- helpers -----------------------------------------------------------------------------
    def peek(self, k: int = 0) -> tuple:
        j = self.i + k
        return self.toks[j] if j < self.n else ("eof", None)

    def is_op(self, text: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t[0] == "op" and t[1] == text

    def is_kw(self, word: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t[0] == "id" and t[1].lower() == word

    def accept(self, text: str) -> bool:
        if self.is_op(text):
            self.i += 1
            return True
        return False

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NEST:
            self.too_deep = True
            raise TooDeep()
        self.steps += 1
        if self.steps & 1023 == 0:
            self.budget.spend(0)

    def skip_balanced(self) -> None:
        """Skip a parenthesised group starting at `(` (used for catch/declare headers)."""
        if not self.is_op("("):
            return
        level = 0
        while self.i < self.n:
            t = self.toks[self.i]
            self.i += 1
            if t[0] == "op":
                if t[1] == "(":
                    level += 1
                elif t[1] == ")":
                    level -= 1
                    if level == 0:
                        return

    def skip_to_semicolon(self) -> None:
        while self.i < self.n and not self.is_op(";"):
            self.i += 1
        self.accept(";")

    # -- statements --------------------------------------------------------------------------
    def parse_file(self) -> list:
        out: list = []
        try:
            while self.i < self.n:
                self.statement_into(out)
        except TooDeep:
            pass
        return out

    def block(self) -> list:
        """Statements up to the matching `}` (the `{` already consumed)."""
        out: list = []
        self.enter()
        try:
            while self.i < self.n and not self.is_op("}"):
                self.statement_into(out)
            self.accept("}")
        finally:
            self.depth -= 1
        return out

    def statement_into(self, out: list) -> None:
        start = self.i
        st = self.statement()
        if st is not None:
            out.append(st)
        if self.i == start:
            self.i += 1  # never stall on a token the grammar above does not know

    def paren_expr(self):
        if self.accept("("):
            e = self.expr()
            self.accept(")")
            return e
        return self.expr()

    def statement(self):
        t = self.peek()
        kind, val = t
        if kind == "html":
            self.i += 1
            return ("html", val)
        if kind == "op":
            if val == ";":
                self.i += 1
                return None
            if val == "{":
                self.i += 1
                return ("block", self.block())
            if val == "}":
                self.i += 1
                return None
        if kind == "id":
            w = val.lower()
            if w == "function" and (self.peek(1)[0] == "id" or (self.is_op("&", 1) and self.peek(2)[0] == "id")):
                self.i += 1
                self.accept("&")
                return ("func", self.funcdef(self.peek()[1].lower().lstrip("\\")))
            if w in ("abstract", "final", "readonly") and self.peek(1)[0] == "id":
                self.i += 1
                return None
            if w in ("class", "interface", "trait", "enum") and self.peek(1)[0] == "id":
                self.i += 1
                return ("class", self.classdef(self.peek()[1]))
            if w == "if":
                return self.if_chain()
            if w in ("elseif", "while", "switch"):
                self.i += 1
                e = self.paren_expr()
                self.accept(":")
                return ("expr", e) if e is not None else None
            if w in ("else", "do", "try", "finally") or w in _KW_STOP:
                self.i += 1
                self.accept(":")
                return None
            if w == "catch" or w == "declare":
                self.i += 1
                self.skip_balanced()
                return None
            if w == "for":
                self.i += 1
                groups: list[list] = [[], [], []]  # init; condition; step
                g = 0
                if self.accept("("):
                    while self.i < self.n and not self.is_op(")"):
                        if self.accept(";"):
                            g = min(g + 1, 2)
                            continue
                        if self.accept(","):
                            continue
                        e = self.expr()
                        if e is None:
                            break
                        groups[g].append(e)
                    self.accept(")")
                if self.accept(":") or self.peek()[0] == "eof":  # for (...): ... endfor; read flat
                    return ("exprs", groups[0] + groups[1] + groups[2])
                body: list = []
                if not self.accept(";"):
                    self.statement_into(body)
                return ("for", groups[0], groups[1], groups[2], body)
            if w == "foreach":
                self.i += 1
                return self.foreach()
            if w == "case":
                self.i += 1
                e = self.expr()
                if not self.accept(":"):
                    self.accept(";")
                return ("expr", e) if e is not None else None
            if w == "default" and (self.is_op(":", 1) or self.is_op(";", 1)):
                self.i += 2
                return None
            if w == "return":
                self.i += 1
                if self.is_op(";") or self.peek()[0] == "eof":
                    return ("return", None)
                return ("return", self.expr())
            if w in ("echo", "print"):
                self.i += 1
                return ("echo", self.expr_list())
            if w == "global":
                self.i += 1
                names = []
                while self.peek()[0] == "var":
                    names.append(self.peek()[1])
                    self.i += 1
                    if not self.accept(","):
                        break
                return ("global", names)
            if w == "static" and self.peek(1)[0] == "var":
                self.i += 1
                return ("exprs", self.expr_list())
            if w == "namespace" and not self.is_op("\\", 1):
                self.i += 1
                if self.peek()[0] == "id":
                    self.i += 1
                if self.accept("{"):
                    return ("block", self.block())
                self.accept(";")
                return None
            if w == "use":
                self.skip_to_semicolon()
                return None
            if w == "const":
                self.i += 1
                items = []
                while self.peek()[0] == "id":
                    name = self.peek()[1]
                    self.i += 1
                    if self.accept("="):
                        items.append((name, self.expr()))
                    if not self.accept(","):
                        break
                return ("const", items)
            if w in ("break", "continue", "goto"):
                self.skip_to_semicolon()
                return None
            if self.is_op(":", 1) and w not in ("parent", "self", "static"):  # a goto label
                self.i += 2
                return None
        e = self.expr()
        if e is None:
            return None
        return ("expr", e)

    def if_chain(self):
        """`if (c) s elseif (c) s else s` as ("if", [(c, [s])], [else s]); the `if (c):` form
        (endif) stays flat: its condition, then the statements that follow."""
        self.i += 1
        branches: list = []
        other: list = []
        cond = self.paren_expr()
        if self.accept(":") or self.peek()[0] == "eof":
            return ("expr", cond) if cond is not None else None
        self.enter()
        try:
            while True:
                body: list = []
                if not self.accept(";"):
                    self.statement_into(body)
                branches.append((cond, body))
                if self.is_kw("elseif") or (self.is_kw("else") and self.is_kw("if", 1)):
                    self.i += 1 if self.is_kw("elseif") else 2
                    cond = self.paren_expr()
                    if self.is_op(":"):  # alternative syntax half way: read the rest flat
                        break
                    continue
                if self.is_kw("else") and not self.is_op(":", 1):
                    self.i += 1
                    if not self.accept(";"):
                        self.statement_into(other)
                break
        finally:
            self.depth -= 1
        return ("if", branches, other)

    def expr_list(self) -> list:
        out = []
        while True:
            e = self.expr()
            if e is None:
                break
            out.append(e)
            if not self.accept(","):
                break
        return out

    def foreach(self):
        if not self.accept("("):
            return None
        subject = self.expr()
        key = value = None
        if self.is_kw("as"):
            self.i += 1
            self.accept("&")
            value = self.expr(_TERNARY_BP)
            if self.accept("=>"):
                key = value
                self.accept("&")
                value = self.expr(_TERNARY_BP)
        while self.i < self.n and not self.is_op(")") and not self.is_op("{") and not self.is_op(";"):
            self.i += 1
        self.accept(")")
        self.accept(":")
        return ("foreach", subject, key, value)

    def params(self) -> list:
        out: list = []
        if not self.accept("("):
            return out
        while self.i < self.n and not self.is_op(")"):
            t = self.peek()
            if t[0] == "var":
                name = t[1]
                self.i += 1
                byref = self.i >= 2 and self.toks[self.i - 2] == ("op", "&")
                variadic = self.i >= 2 and self.toks[self.i - 2] == ("op", "...")
                default = None
                if self.accept("="):
                    default = self.expr(_TERNARY_BP - 1)
                out.append((name, default, byref, variadic))
                continue
            if t[0] == "op" and t[1] in ("{", ";"):
                break  # not a parameter list after all
            self.i += 1  # types, modifiers, `&`, `...`, `,`
        self.accept(")")
        return out

    def skip_return_type(self) -> None:
        if not self.accept(":"):
            return
        while self.i < self.n:
            t = self.peek()
            if t[0] == "id" or (t[0] == "op" and t[1] in ("?", "|", "&", "(", ")", "\\")):
                self.i += 1
            else:
                break

    def funcdef(self, name: str, cls: str = "") -> FuncDef:
        if self.peek()[0] == "id":
            self.i += 1
        params = self.params()
        self.skip_return_type()
        body: list = []
        if self.accept("{"):
            body = self.block()
        else:
            self.accept(";")
        return FuncDef(name, params, body, cls)

    def closure(self):
        """After `function` / `fn` was consumed: a closure expression."""
        self.accept("&")
        arrow = self.toks[self.i - 1][1].lower() == "fn" if self.i else False
        if self.i and self.toks[self.i - 1] == ("op", "&"):
            arrow = self.toks[self.i - 2][1].lower() == "fn"
        params = self.params()
        uses: list | str = []
        if self.is_kw("use"):
            self.i += 1
            uses = [p[0] for p in self.params()]
        self.skip_return_type()
        if arrow:
            self.accept("=>")
            body = [("return", self.expr(_TERNARY_BP - 1))]
            uses = "*"
        elif self.accept("{"):
            body = self.block()
        else:
            body = []
        return ("closure", FuncDef("", params, body), uses)

    def classdef(self, name: str, parent: str = "", has_name: bool = True) -> ClassDef:
        if has_name:
            self.i += 1
        if self.is_kw("extends"):
            self.i += 1
            if self.peek()[0] == "id":
                parent = self.peek()[1].lower().rsplit("\\", 1)[-1]
                self.i += 1
        while self.i < self.n and not self.is_op("{"):
            self.i += 1
        cdef = ClassDef(name.lower().rsplit("\\", 1)[-1], parent)
        self.classes.append(cdef)
        if not self.accept("{"):
            return cdef
        self.enter()
        try:
            while self.i < self.n and not self.is_op("}"):
                start = self.i
                self.member(cdef)
                if self.i == start:
                    self.i += 1
            self.accept("}")
        finally:
            self.depth -= 1
        return cdef

    def member(self, cdef: ClassDef) -> None:
        t = self.peek()
        if t[0] == "id":
            w = t[1].lower()
            if w in _MODIFIERS:
                self.i += 1
                return
            if w == "function":
                self.i += 1
                self.accept("&")
                mname = self.peek()[1].lower() if self.peek()[0] == "id" else ""
                cdef.methods[mname] = self.funcdef(mname, cdef.name)
                return
            if w == "const":
                self.i += 1
                if self.peek()[0] == "id" and self.peek(1)[0] == "id":
                    self.i += 1  # typed constant
                while self.peek()[0] == "id":
                    cname = self.peek()[1]
                    self.i += 1
                    if self.accept("="):
                        cdef.consts.append((cname, self.expr()))
                    if not self.accept(","):
                        break
                self.accept(";")
                return
            if w == "use":
                self.i += 1
                while self.i < self.n and self.peek()[0] == "id" and len(cdef.traits) < 16:
                    cdef.traits.append(self.peek()[1].lower().rsplit("\\", 1)[-1])
                    self.i += 1
                    if not self.accept(","):
                        break
                if self.accept("{"):  # conflict resolution block: `{ A::x insteadof B; }`
                    while self.i < self.n and not self.accept("}"):
                        self.i += 1
                else:
                    self.skip_to_semicolon()
                return
            if w == "case":
                self.skip_to_semicolon()
                return
            self.i += 1  # a property type
            return
        if t[0] == "var":
            self.i += 1
            default = self.expr() if self.accept("=") else None
            cdef.props.append((t[1], default))
            self.accept(",")
            return
        if t[0] == "op" and t[1] in ("?", "|", "&", ";", ","):
            self.i += 1
            return
        self.i += 1

    # -- expressions -------------------------------------------------------------------------
    def expr(self, min_bp: int = 0):
        self.enter()
        try:
            left = self.unary()
            if left is None:
                return None
            while True:
                t = self.peek()
                kind, val = t
                if kind == "op":
                    op = val
                elif kind == "id" and val.lower() in ("and", "or", "xor", "instanceof"):
                    op = val.lower()
                else:
                    break
                if op in _ASSIGN and left[0] in _LVALUE:
                    self.i += 1
                    if op == "=" and self.accept("&"):
                        pass
                    right = self.expr(3)
                    left = ("assign", op, left, right if right is not None else ("const", "null"))
                    continue
                if op == "?":
                    if _TERNARY_BP <= min_bp:
                        break
                    self.i += 1
                    if self.accept(":"):
                        mid = None
                    else:
                        mid = self.expr()
                        self.accept(":")
                    other = self.expr(_TERNARY_BP)
                    left = ("tern", left, mid, other if other is not None else ("const", "null"))
                    continue
                bp = _BIN.get(op)
                if bp is None or bp <= min_bp:
                    break
                self.i += 1
                right = self.expr(bp - 1 if op in _RIGHT else bp)
                if right is None:
                    break
                if left[0] == "bin" and left[1] == op and op not in _RIGHT:
                    left[2].append(right)
                else:
                    left = ("bin", op, [left, right])
            return left
        finally:
            self.depth -= 1

    def unary(self):
        t = self.peek()
        kind, val = t
        if kind == "op":
            if val in ("!", "-", "+", "~", "@", "++", "--", "&"):
                self.i += 1
                e = self.expr(_UNARY_BP)
                if e is None:
                    return None
                if val in ("@", "&", "+"):
                    return e
                return ("un", val, e)
            if val == "...":
                self.i += 1
                e = self.expr(_UNARY_BP)
                return ("spread", e) if e is not None else None
        if kind == "cast":
            self.i += 1
            e = self.expr(_UNARY_BP)
            return ("cast", val, e) if e is not None else None
        if kind == "id":
            w = val.lower()
            if w in ("print", "clone", "throw", "yield"):
                self.i += 1
                if w == "yield" and self.is_kw("from"):
                    self.i += 1
                if self.is_op(";") or self.is_op(")"):
                    return ("const", "null")
                e = self.expr(3 if w != "clone" else _UNARY_BP)
                return ("un", w, e) if e is not None else ("const", "null")
            if w in ("include", "include_once", "require", "require_once"):
                self.i += 1
                e = self.expr(3)
                return ("include", w, e if e is not None else ("const", "null"))
            if w == "new":
                self.i += 1
                return self.postfix(self.new())
        prim = self.primary()
        if prim is None:
            return None
        return self.postfix(prim)

    def new(self):
        t = self.peek()
        if t[0] == "id" and t[1].lower() == "class":
            self.i += 1
            args = self.args() if self.is_op("(") else []
            self.anon += 1
            cdef = self.classdef(f"class@anonymous{self.anon}", has_name=False)
            return ("new", ("name", cdef.name), args)
        if t[0] == "id":
            self.i += 1
            cls = ("name", t[1].lower().rsplit("\\", 1)[-1])
        elif t[0] == "var":
            self.i += 1
            cls = ("var", t[1])
            while self.is_op("->") or self.is_op("::") or self.is_op("["):
                if self.accept("["):
                    cls = ("idx", cls, self.expr())
                    self.accept("]")
                else:
                    self.i += 1
                    nt = self.peek()
                    self.i += 1
                    cls = ("prop", cls, ("str", nt[1]) if nt[0] == "id" else ("var", nt[1]))
        elif self.accept("("):
            cls = self.expr()
            self.accept(")")
        elif self.is_op("$"):
            cls = self.primary()
        else:
            return ("const", "null")
        args = self.args() if self.is_op("(") else []
        return ("new", cls, args)

    def args(self) -> list:
        out: list = []
        if not self.accept("("):
            return out
        while self.i < self.n and not self.is_op(")"):
            if self.peek()[0] == "id" and self.is_op(":", 1):
                self.i += 2  # a named argument
            if self.is_op("...") and self.is_op(")", 1):
                self.i += 1  # first-class callable syntax f(...)
                continue
            e = self.expr()
            if e is None:
                break
            out.append(e)
            if not self.accept(","):
                break
        self.accept(")")
        return out

    def array(self, close: str) -> tuple:
        items: list = []
        while self.i < self.n and not self.is_op(close):
            if self.accept(","):
                items.append((None, ("const", "null")))
                continue
            self.accept("&")
            e = self.expr()
            if e is None:
                break
            if self.accept("=>"):
                self.accept("&")
                v = self.expr()
                items.append((e, v if v is not None else ("const", "null")))
            else:
                items.append((None, e))
            if not self.accept(","):
                break
        self.accept(close)
        return ("array", items)

    def primary(self):
        t = self.peek()
        kind, val = t
        if kind == "var":
            self.i += 1
            return ("var", val)
        if kind == "str":
            self.i += 1
            return ("str", val)
        if kind == "num":
            self.i += 1
            return ("num", val)
        if kind in ("istr", "shell"):
            self.i += 1
            return (kind, [self.part(p) for p in val])
        if kind == "op":
            if val == "(":
                self.i += 1
                e = self.expr()
                self.accept(")")
                return e
            if val == "[":
                self.i += 1
                return self.array("]")
            if val == "$":
                self.i += 1
                if self.accept("{"):
                    e = self.expr()
                    self.accept("}")
                    return ("varvar", e if e is not None else ("str", ""))
                inner = self.primary()
                return ("varvar", inner) if inner is not None else None
            return None
        if kind == "id":
            w = val.lower().lstrip("\\")
            nxt = self.peek(1)
            if w in ("array", "list") and nxt == ("op", "("):
                self.i += 2
                return self.array(")")
            if w in ("function", "fn") or (w == "static" and (self.is_kw("function", 1) or self.is_kw("fn", 1))):
                self.i += 2 if w == "static" else 1
                return self.closure()
            if w in ("exit", "die"):
                self.i += 1
                return ("call", ("name", w), self.args() if self.is_op("(") else [])
            if w == "match" and nxt == ("op", "("):
                self.i += 1
                subj = self.paren_expr()
                results: list = []
                if self.accept("{"):
                    while self.i < self.n and not self.is_op("}"):
                        e = self.expr()
                        if e is None:
                            self.i += 1
                            continue
                        if self.accept("=>"):
                            r = self.expr()
                            if r is not None:
                                results.append(r)
                        self.accept(",")
                    self.accept("}")
                return ("match", subj, results)
            if w in _KW_STOP or w in ("case", "default", "else", "endif"):
                return None
            self.i += 1
            if nxt == ("op", "("):
                return ("call", ("name", w.rsplit("\\", 1)[-1]), self.args())
            if nxt == ("op", "::"):
                return ("name", w.rsplit("\\", 1)[-1])
            return ("const", val.lstrip("\\"))
        return None

    def part(self, p):
        if isinstance(p, str):
            return ("str", p)
        if p[0] == "var":
            return ("var", p[1])
        if p[0] == "idx":
            key = p[2]
            if isinstance(key, tuple):
                knode = ("var", key[1])
            else:
                knode = ("num", key) if isinstance(key, int) else ("str", key)
            return ("idx", ("var", p[1]), knode)
        if p[0] == "prop":
            return ("prop", ("var", p[1]), ("str", p[2]))
        # {$expr} / ${expr}: the expression's own tokens, parsed here
        from agent.imagegate.webshell.php_lex import tokenize

        toks, _ = tokenize(p[1], self.budget, php_mode=True)
        sub = Parser(toks, self.budget)
        sub.depth = self.depth
        try:
            e = sub.expr()
        except TooDeep:
            e = None
        return e if e is not None else ("str", "")

    def postfix(self, left):
        while True:
            t = self.peek()
            if t[0] != "op":
                return left
            op = t[1]
            if op == "[":
                self.i += 1
                if self.accept("]"):
                    left = ("idx", left, None)
                    continue
                key = self.expr()
                self.accept("]")
                left = ("idx", left, key)
            elif op == "{" and left[0] in ("var", "idx", "prop") and self.toks[self.i - 1] != ("op", ")"):
                self.i += 1
                key = self.expr()
                self.accept("}")
                left = ("idx", left, key)
            elif op in ("->", "?->"):
                self.i += 1
                nt = self.peek()
                if nt[0] == "id":
                    self.i += 1
                    name = ("str", nt[1])
                elif nt[0] == "var":
                    self.i += 1
                    name = ("var", nt[1])
                elif self.accept("{"):
                    name = self.expr() or ("str", "")
                    self.accept("}")
                else:
                    return left
                if self.is_op("("):
                    left = ("mcall", left, name, self.args())
                else:
                    left = ("prop", left, name)
            elif op == "::":
                self.i += 1
                nt = self.peek()
                if nt[0] == "id":
                    self.i += 1
                    name = ("str", nt[1])
                    if self.is_op("("):
                        left = ("scall", left, name, self.args())
                    else:
                        left = ("sprop", left, ("str", "const:" + nt[1]))
                elif nt[0] == "var":
                    self.i += 1
                    if self.is_op("("):
                        left = ("scall", left, ("var", nt[1]), self.args())
                    else:
                        left = ("sprop", left, ("str", nt[1]))
                elif self.accept("{"):
                    name = self.expr() or ("str", "")
                    self.accept("}")
                    left = ("scall", left, name, self.args())
                else:
                    return left
            elif op == "(":
                left = ("call", left, self.args())
            elif op in ("++", "--"):
                self.i += 1
                left = ("un", "post" + op, left)  # $i++ is the old value, ++$i the new one
            else:
                return left


def parse(toks: list[tuple], budget: Budget) -> tuple[list, list[ClassDef], bool]:
    p = Parser(toks, budget)
    stmts = p.parse_file()
    return stmts, p.classes, p.too_deep
