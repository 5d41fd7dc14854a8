"""The condition language: parser, compiler, operators one by one, precedence, macros, lists, Falco
aliases, kinds, and errors with their columns, evaluated on events decoded from kernel records."""

from __future__ import annotations

import os

import pytest

from agent.detect.condition import BoolOp, Cmp, ConditionError, Not, Ref, compile, parse
from agent.events import EVENT_NAMES, Op
from tests.unit.detect_events import (
    GRANDPARENT,
    PARENT,
    connect_en,
    enriched,
    exec_en,
    file_rec,
    net_rec,
    open_en,
    sys_en,
)

EXEC = exec_en("/usr/bin/curl", ["curl", "-s", "http://pool.example:3333/x"], comm=b"curl")
SHELL = exec_en("/bin/bash", ["bash", "-i"], comm=b"bash")
OPEN = open_en("/etc/shadow", flags=os.O_RDONLY, comm=b"cat")
WRITE = open_en("/etc/cron.d/job", flags=os.O_WRONLY | os.O_CREAT, comm=b"tee", uid=0)
CONNECT = connect_en("10.0.0.7", 3333, comm=b"xmrig")
UNLINK = enriched(file_rec(Op.FILE_UNLINK, "/root/.bash_history"))


def m(text: str, en, **kw) -> bool:
    return compile(text, **kw).match(en)


def err(text: str, **kw) -> ConditionError:
    with pytest.raises(ConditionError) as e:
        compile(text, **kw)
    return e.value


# -- operators ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "en", "want"), [
    ("process.name = curl", EXEC, True),
    ("process.name == curl", EXEC, True),
    ("process.name = wget", EXEC, False),
    ("process.name != wget", EXEC, True),
    ("process.name != curl", EXEC, False),
    ("user.id < 1001", EXEC, True),
    ("user.id <= 1000", EXEC, True),
    ("user.id > 1000", EXEC, False),
    ("user.id >= 1000", EXEC, True),
    ("network.peer.port in (3333, 4444, 5555)", CONNECT, True),
    ("network.peer.port in (80, 443)", CONNECT, False),
    ("process.command_line contains pool.example", EXEC, True),
    ("process.command_line contains 'POOL'", EXEC, False),
    ("process.command_line icontains 'POOL.Example'", EXEC, True),
    ("file.path startswith /etc/", OPEN, True),
    ("file.path endswith shadow", OPEN, True),
    ("file.path endswith passwd", OPEN, False),
    ("file.path glob '/etc/*dow'", OPEN, True),
    ("file.path glob '/etc/?hadow'", OPEN, True),
    ("file.path glob '/tmp/*'", OPEN, False),
    ("file.path iglob '/ETC/SHA*'", OPEN, True),
    (r"process.command_line regex '.*:[0-9]{4}/.*'", EXEC, True),
    (r"process.command_line regex ':[0-9]{4}'", EXEC, False),  # whole-value match, as Falco's
    ("file.path exists", OPEN, True),
    ("file.path exists", EXEC, False),
    ("file.path pmatch (/etc, /usr/bin)", OPEN, True),
    ("file.path pmatch (/etc/shadow)", OPEN, True),  # equal to a prefix
    ("file.path pmatch (/et, /usr)", OPEN, False),  # /etc/shadow is not below /et
    ("file.path pmatch (/etc/)", OPEN, True),
    ("file.path pmatch (/e*)", OPEN, True),  # globs in prefixes, per component
    ("file.path pmatch (/*/shadow)", OPEN, True),
    ("file.path pmatch (/*/sha)", OPEN, False),
    ("file.path pmatch (/*dow)", OPEN, False),  # * does not cross a '/'
    ("file.path pmatch (/[!x]tc, /nope)", OPEN, True),
    ("process.args intersects (-s, -k)", EXEC, True),
    ("process.args intersects (-k)", EXEC, False),
    ("process.args contains pool", EXEC, True),  # any element
    ("process.args = -s", EXEC, True),
    ("process.args != -s", EXEC, False),  # no element equal
    ("process.args != -k", EXEC, True),
    ("file.open.write = true", WRITE, True),
    ("file.open.write = false", OPEN, True),
    ("file.open.flags = 0", OPEN, True),
    ("file.open.flags > 0", WRITE, True),
    ("user.id = 0x3e8", EXEC, True),  # numbers as Python reads them: 0x, 0o
    ("file.mode = 0o644", OPEN, True),
])
def test_operator(text, en, want):
    assert m(text, en) is want


def test_quoted_strings_single_double_and_escapes():
    en = exec_en("/bin/sh", ["sh", "-c", "echo 'hi there'"])
    assert m("""process.command_line contains "'hi there'" """, en)
    assert m(r"process.command_line contains 'echo \'hi'", en)
    assert m('process.command_line = "sh -c echo \'hi there\'"', en)
    assert m("process.name in ('sh', \"bash\")", en)


def test_missing_field_is_false_and_not_of_it_true():
    """A comparison on a field the event lacks is false, even !=; `not` of it is true (Falco's)."""
    assert not m("file.path = /etc/shadow", EXEC)
    assert not m("file.path != /etc/shadow", EXEC)
    assert not m("network.peer.port < 10", EXEC)
    assert m("not file.path startswith /etc", EXEC)
    assert m("not container.id exists", exec_en("/bin/sh", ["sh"], container=None))


# -- structure ----------------------------------------------------------------------------------


def test_precedence_not_then_and_then_or():
    # a or b and c == a or (b and c)
    assert m("process.name = curl or process.name = x and user.id = 5", EXEC)
    assert not m("(process.name = curl or process.name = x) and user.id = 5", EXEC)
    # not a and b == (not a) and b
    assert m("not process.name = x and process.name = curl", EXEC)
    assert not m("not (process.name = x or process.name = curl)", EXEC)
    assert m("not not process.name = curl", EXEC)


def test_parse_tree():
    node = parse("a and (b or not c.d = 1)")
    assert isinstance(node, BoolOp) and node.op == "and"
    left, right = node.items
    assert left == Ref("a", 0)
    assert isinstance(right, BoolOp) and right.op == "or"
    assert isinstance(right.items[1], Not)
    cmp = right.items[1].item
    assert isinstance(cmp, Cmp) and (cmp.field, cmp.op, cmp.values[0].text, cmp.offset) == ("c.d", "=", "1", 16)
    assert parse("x.y in ()").values == ()


def test_no_spaces_around_symbols_and_falco_bare_values():
    assert m("process.name=curl and user.id>=1000", EXEC)
    assert m("process.name!=bash", EXEC)
    node = parse("evt.dir=< and evt.type=open")  # Falco's direction reads as a bare value
    assert node.items[0].values[0].text == "<"


def test_macros_expand_nest_and_cycles_are_refused():
    macros = {"shell_procs": "process.name in (bash, sh, zsh)",
              "spawned_shell": "evt.type = execve and shell_procs",
              "loop_a": "loop_b and user.id = 0", "loop_b": "loop_a"}
    assert m("spawned_shell", SHELL, macros=macros)
    assert not m("spawned_shell", EXEC, macros=macros)
    assert m("not shell_procs", EXEC, macros=macros)
    e = err("user.id = 1 or loop_a", macros=macros)
    assert "macro cycle: loop_a -> loop_b -> loop_a" in e.message and e.offset == 15
    e = err("spawned_shell", macros={"spawned_shell": "process.name in (a b)"})
    assert e.message.startswith("in macro 'spawned_shell' at column 20:") and e.offset == 0


def test_lists_by_name_nested_and_mixed_with_values():
    lists = {"shells": ["bash", "sh"], "more": ["shells", "zsh"], "ports": [3333, "4444"],
             "etc_dirs": ["/etc"], "self": ["self"], "a": ["b"], "b": ["a"]}
    assert m("process.name in (more)", SHELL, lists=lists)
    assert m("process.name in (fish, shells)", SHELL, lists=lists)
    assert not m("process.name in ('shells')", SHELL, lists=lists)  # quoted: the word, not the list
    assert m("network.peer.port in (ports)", CONNECT, lists=lists)
    assert m("file.path pmatch (etc_dirs)", OPEN, lists=lists)
    assert m("process.args intersects (more)", SHELL, lists=lists)
    assert not m("process.name in (empty)", SHELL, lists={"empty": []})
    quoted = {"nets": ['"10.0.0.0/8"', "'192.168.0.0/16'"], "names": ['"curl"', "'x"]}
    assert m("fd.rnet in (nets)", CONNECT, lists=quoted)  # Falco's lists carry quotes of their own
    assert m("proc.name in (names)", EXEC, lists=quoted)
    assert "list cycle: a -> b -> a" in err("process.name in (a)", lists=lists).message
    assert "list cycle" in err("process.name in (self)", lists=lists).message
    assert "is a number; 'x' is not" in err("user.id in (ids)", lists={"ids": [1, "x"]}).message


def test_falco_aliases_and_event_types():
    assert m("evt.type = execve and proc.name = curl and proc.pname = nginx", EXEC)
    assert m("evt.type in (open, openat, openat2) and fd.name = /etc/shadow and fd.directory = /etc", OPEN)
    assert m("evt.type = connect and fd.sport = 3333 and fd.sip = 10.0.0.7 and fd.l4proto = tcp", CONNECT)
    assert m('fd.sport = "3333"', CONNECT)  # Falco rules quote numbers too
    assert m("evt.type = unlink and fd.filename = .bash_history", UNLINK)
    assert m("container.image.repository = registry.local/team/nginx and k8s.ns.name = shop", EXEC)
    assert m("proc.aname[1] = nginx and proc.aname[0] = curl", EXEC)
    chain = (PARENT, GRANDPARENT)
    assert m("proc.aname[2] = containerd-shim", EXEC, ancestors=lambda en: chain)
    assert m("proc.aname in (containerd-shim)", EXEC, ancestors=lambda en: chain)
    assert m("process.ancestors[1].executable.path startswith /usr/bin/", EXEC, ancestors=lambda en: chain)
    assert m("evt.is_open_write = true and fd.typechar = f", WRITE)
    assert m("evt.arg.flags contains O_CREAT and not evt.arg.flags contains O_TRUNC", WRITE)
    assert m("file.open.flag_names intersects (O_WRONLY, O_RDWR)", WRITE)
    chmod = enriched(file_rec(Op.FILE_CHMOD, "/tmp/x", mode=0o2755))
    assert m("evt.arg.mode contains S_ISGID", chmod) and not m("evt.arg.mode contains S_ISUID", chmod)
    assert m("evt.type in (execve, execveat) and evt.dir = <", SHELL)  # Falco's spawned_process
    # Falco's `container` macro reads the same here: container.id is absent outside a container
    host_shell = exec_en("/bin/bash", ["bash"], comm=b"bash", container=None)
    assert m("container.id != host", SHELL) and not m("container.id != host", host_shell)
    assert m("falco.container.id = host", host_shell)


def test_networks_cidr_and_addresses():
    lists = {"rfc_1918": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}
    assert m("fd.snet in (rfc_1918)", CONNECT, lists=lists)
    assert m("fd.rnet = 10.0.0.0/24", CONNECT)
    assert m("fd.rnet = 10.0.0.7", CONNECT)  # an address is a /32
    assert not m("fd.rnet in (192.168.0.0/16, fd00::/8)", CONNECT)
    assert m("fd.rnet != 192.168.0.0/16", CONNECT)
    assert not m("fd.rnet != 10.0.0.0/8", CONNECT)
    assert not m("fd.rnet = 10.0.0.0/8", OPEN) and not m("fd.rnet != 10.0.0.0/8", OPEN)  # absent
    v6 = connect_en("fd00::1", 443)
    assert m("fd.rnet = fd00::/8", v6) and not m("fd.rnet = 10.0.0.0/8", v6)
    assert "is a network; 'nope' is not" in err("fd.snet = nope").message
    assert "fd.snet is net" in err("fd.snet startswith 10").message
    assert "is a network: use" in err("fd.snet intersects (10.0.0.0/8)").message


# -- kinds, fields, notes -----------------------------------------------------------------------


def test_kinds_from_event_names_and_fields():
    assert compile("evt.type = execve").kinds == {"process.exec"}
    assert compile("evt.type in (open, openat, connect)").kinds == {"file.open", "network.connect"}
    assert compile("event.name = file.open and file.path startswith /etc").kinds == {"file.open"}
    assert compile("file.path startswith /etc").kinds == {"file.open", "file.unlink", "file.rename",
                                                          "file.chmod", "file.chown", "file.symlink", "file.link",
                                                          "file.close"}
    # a connect's or a send's server is its peer, a bind's or listen's the local end; an accept has none
    assert compile("evt.type = execve or fd.sport = 1").kinds == {"process.exec", "network.connect",
                                                                 "network.sendto", "network.bind", "network.listen"}
    assert compile("fd.rport = 1").kinds == {"network.connect", "network.accept", "network.sendto", "network.dup"}
    assert compile("evt.type in (ptrace, setresuid, finit_module)").kinds == {"system.ptrace", "system.setuid",
                                                                             "system.module_load"}
    assert compile("ptrace.request = 16 or namespace.types = net").kinds == {"system.ptrace", "system.unshare",
                                                                             "system.setns"}
    assert compile("syscall.return = 0").kinds == {n for n in EVENT_NAMES.values()
                                                   if n.startswith(("file.", "network.", "system."))}
    assert compile("process.name = sh").kinds is None
    assert compile("evt.type = execve or process.name = sh").kinds is None
    assert compile("not evt.type = execve").kinds is None  # not: true on every other kind
    assert compile("evt.type != execve").kinds is None
    c = compile("evt.type = execve and file.path = /x")
    assert c.kinds == frozenset() and any("never matches" in n for n in c.notes)
    assert compile("proc.name = x and fd.name = y").fields == {"process.name", "file.resolved_path"}


def test_unknown_syscalls_are_noted_not_fatal():
    c = compile("evt.type in (io_uring_setup, execve)")
    assert c.kinds == {"process.exec"} and c.match(SHELL)
    assert c.notes == ("evt.type 'io_uring_setup': no such event here",)
    c = compile("evt.type = io_uring_setup")
    assert c.kinds == frozenset() and not c.match(SHELL)


def test_event_name_not_equal_and_our_own_names():
    assert m("evt.type != open", EXEC)
    assert not m("event.name != process.exec", EXEC)
    assert m("event.name in (process.exec, file.open)", OPEN)


# -- errors with columns ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message", "column"), [
    ("", "empty condition", 1),
    ("process.name =", "expected a value after '=', got the end of the condition", 15),
    ("process.name = curl and", "expected a field, a macro, 'not' or '(', got the end", 24),
    ("(process.name = curl", "expected ')' to close the '(' at column 1", 21),
    ("process.name = curl)", "unexpected ')'", 20),
    ("process.name = 'curl", "unterminated string", 16),
    ("process.name = curl process.pid = 1", "unexpected 'process.pid'", 21),
    ("proc.nope = 1", "unknown field 'proc.nope'", 1),
    ("user.id = abc", "user.id is a number; 'abc' is not", 11),
    ("user.id contains 1", "'contains' needs a string field; user.id is int", 1),
    ("process.name < 3", "'<' needs a number field; process.name is str", 1),
    ("file.open.write = maybe", "file.open.write is a bool; 'maybe' is not true or false", 19),
    ("file.open.write contains t", "'contains' needs a string field", 1),
    ("process.name in curl", "expected '(' after 'in', got 'curl'", 17),
    ("process.name in (a b)", "expected ',' or ')' in the 'in' list, got 'b'", 20),
    ("process.name in (a,", "expected a value in the 'in' list, got the end", 20),
    ("process.name regex '('", "bad regex '('", 20),
    ("process.name bcontains x", "operator 'bcontains' is not supported", 14),
    ("no_such_macro", "unknown macro 'no_such_macro'", 1),
    ("user.id = 1 and process.name", "field 'process.name' needs an operator", 17),
    ("process.name = a or or", "expected a field", 21),
])
def test_errors_name_the_problem_and_its_column(text, message, column):
    e = err(text)
    assert message in e.message, e.message
    assert e.offset + 1 == column, (e.offset + 1, column)
    assert str(e).endswith(f"(column {column})")


def test_errors_never_crash_on_junk():
    for junk in ("((((", ")", "and", "not", "= = =", "'", "a in (", "a[", "x.y in ((a))", "a exists b",
                 "process.name = \\", "!x", "proc.aname[ = 1"):
        try:
            compile(junk)
        except ConditionError:
            pass


def test_token_soup_gives_condition_errors_only():
    """Random sequences of the language's own tokens: a ConditionError or a compiled condition
    that runs, never another exception."""
    import random

    vocab = ["proc.name", "fd.name", "user.uid", "evt.type", "proc.aname[2]", "fd.snet", "process.args",
             "and", "or", "not", "(", ")", ",", "=", "!=", "<", ">=", "in", "pmatch", "exists", "glob",
             "regex", "contains", "icontains", "intersects", "'x'", '"/etc"', "1", "-1", "true", "0x1f",
             "10.0.0.0/8", "[", "]", "mac", "lst", "'", "\\", "open", "execve", "'('", "*"]
    rng = random.Random(7)
    events = [EXEC, OPEN, CONNECT, WRITE, UNLINK]
    compiled = 0
    for _ in range(3000):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 9)))
        try:
            c = compile(text, macros={"mac": "proc.name = x"}, lists={"lst": ["a", 1]})
        except ConditionError:
            continue
        compiled += 1
        for en in events:
            assert c.match(en) in (True, False), text
    assert compiled > 5  # some soups are valid conditions: those ran too


def test_falco_filter_only_and_never_true_idioms():
    assert not m("evt.num = 0", EXEC) and m("not (evt.num = 0)", EXEC)  # never_true: events unnumbered here
    assert m("fd.ip != 0.0.0.0 and fd.net != 127.0.0.0/8 and fd.port = 3333", CONNECT)
    bind = enriched(net_rec(Op.NET_BIND, "127.0.0.1", 8080))
    assert m("fd.net = 127.0.0.0/8 and fd.port = 8080", bind)


def test_conditions_on_the_system_family_and_the_new_file_and_network_ops():
    attach = sys_en(Op.PTRACE, "ptrace", arg=16, target_pid=4242, comm=b"inject")
    assert compile("evt.type = ptrace and evt.arg.request contains PTRACE_ATTACH").match(attach)
    # Falco's ptrace_attach_or_injection reads the enter event (evt.dir=>): ours carries the arguments too
    assert compile("evt.type=ptrace and evt.dir=> and evt.arg.request contains PTRACE_ATTACH").match(attach)
    assert compile("evt.type=ptrace and evt.dir=<").match(attach)
    assert not compile("ptrace.request_name = PTRACE_TRACEME").match(attach)
    assert compile("ptrace.request in (4, 5, 16, 16902) and target.pid > 0").match(attach)
    assert not compile("mount.target exists").match(attach)  # a ptrace carries no mount member
    caps = sys_en(Op.CAPSET, "capset", caps=(1 << 21 | 1 << 0, 1 << 21, 0), target_pid=0)
    assert compile("capabilities.effective_names in (CAP_SYS_ADMIN, CAP_SYS_MODULE)").match(caps)
    assert not compile("capabilities.permitted_names = CAP_CHOWN").match(caps)
    ns = sys_en(Op.UNSHARE, "unshare", arg=0x10000000 | 0x00020000)
    assert compile("evt.type = unshare and namespace.types in (user)").match(ns)
    assert not compile("namespace.types = net").match(ns)
    root = sys_en(Op.SETUID, "setresuid", ids=(0, 0, 0))
    assert compile("evt.type = setuid and syscall.name = setresuid and setid.effective = 0").match(root)
    link = enriched(file_rec(Op.FILE_SYMLINK, "/tmp/s", "/etc/shadow"))
    assert compile("evt.type = symlinkat and file.link.target = /etc/shadow and file.path = /tmp/s").match(link)
    assert compile("evt.arg.target = /etc/shadow and evt.arg.linkpath = /tmp/s").match(link)
    assert not compile("file.target.path exists").match(link)  # a rename's destination, not a link's
    dup = enriched(net_rec(Op.NET_DUP, "10.0.0.5", 4444, fd=3, fd2=0))
    assert compile("evt.type = dup2 and network.dup.new_fd in (0, 1, 2) and fd.rport = 4444").match(dup)
