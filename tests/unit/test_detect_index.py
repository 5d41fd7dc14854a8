"""RuleIndex: rules indexed by kind, equality dispatch and shared conjuncts give exactly what each
rule's own `match` gives, in rule order, on events decoded from kernel records."""

from __future__ import annotations

import os
import random
import re

from agent.detect.condition import compile
from agent.detect.index import RuleIndex
from agent.events import Op
from tests.unit.detect_events import connect_en, enriched, exec_en, file_rec, net_rec, open_en
from tests.unit.replay_records import PID, exit_rec, fork_rec

LISTS = {"shells": ["bash", "sh", "zsh"], "web": ["nginx", "httpd"], "miner_ports": [3333, 4444],
         "bin_dirs": ["/bin", "/usr/bin"], "pkg": ["apt", "dpkg"]}
MACROS = {"spawned": "evt.type in (execve, execveat)",
          "open_write": "evt.type in (open, openat) and evt.is_open_write = true",
          "shell": "proc.name in (shells)"}
RULES = [
    "spawned and shell and proc.pname in (web)",
    "spawned and shell and container.id exists",
    "spawned and proc.name in (nc, ncat) and not proc.pname in (pkg)",
    "spawned and proc.exepath pmatch (/tmp, /dev/shm)",
    "open_write and fd.name pmatch (bin_dirs) and not proc.name in (pkg)",
    "open_write and fd.name pmatch (/etc)",
    "open_write and fd.name startswith /etc/cron",
    "evt.type = connect and fd.rport in (miner_ports)",
    "evt.type in (unlink, rename) and fd.filename = .bash_history",
    "proc.name = bash",  # every kind
    "not proc.name in (shells) and user.uid = 0",
    "proc.name in (shells) or fd.sport = 4444",
    "evt.type = execve and fd.name = /x",  # no kind: never
]


def _events():
    return [
        exec_en("/bin/bash", ["bash"], comm=b"bash"),
        exec_en("/bin/bash", ["bash"], comm=b"bash", container=None),
        exec_en("/tmp/x", ["x"], comm=b"x"),
        exec_en("/usr/bin/nc", ["nc", "-l"], comm=b"nc"),
        exec_en("/usr/bin/make", ["make"], comm=b"make", parent=None),
        open_en("/usr/bin/ls", flags=os.O_WRONLY, comm=b"cp"),
        open_en("/usr/bin/ls", flags=os.O_WRONLY, comm=b"dpkg"),
        open_en("/etc/cron.d/x", flags=os.O_RDWR, comm=b"bash", uid=0),
        open_en("/etc/passwd", flags=os.O_RDONLY, comm=b"cat"),
        connect_en("10.0.0.1", 3333, comm=b"bash"),
        connect_en("10.0.0.1", 4444, comm=b"curl", uid=0),
        connect_en("10.0.0.1", 443, comm=b"curl"),
        enriched(file_rec(Op.FILE_UNLINK, "/root/.bash_history", comm=b"rm", uid=0)),
        enriched(file_rec(Op.FILE_RENAME, "/home/u/.bash_history", "/tmp/h", comm=b"mv")),
        enriched(net_rec(Op.NET_BIND, "0.0.0.0", 4444, comm=b"python3")),
        enriched(fork_rec(PID + 1, comm=b"bash")),
        enriched(exit_rec(0, comm=b"sh", uid=0)),
    ]


def _want(compiled, en) -> list[int]:
    return [i for i, c in enumerate(compiled) if c.match(en)]


def test_index_agrees_with_each_rule_and_keeps_rule_order():
    compiled = [compile(r, MACROS, LISTS) for r in RULES]
    index = RuleIndex(compiled)
    hits = 0
    for en in _events():
        got = index.match(en)
        assert got == _want(compiled, en), en.event.name
        hits += len(got)
    assert hits >= 12  # the events were chosen to match: the agreement is not vacuous
    assert index.met["process.fork"] == 3  # the rules of every kind only
    assert index.met["process.exec"] == 7  # 4 spawned rules and the 3 of every kind


def test_a_kind_without_rules_meets_nothing():
    index = RuleIndex([compile("evt.type = execve")])
    assert index.match(open_en("/etc/passwd")) == []
    assert index.match(exec_en("/bin/sh", ["sh"])) == [0]
    assert RuleIndex([]).match(exec_en("/bin/sh", ["sh"])) == []


# Random conditions from these parts (with shared macros, so shared conjuncts and dispatch happen)
_ATOMS = [
    "proc.name = bash", "proc.name in (shells)", "proc.name in (nc, curl, cat)", "proc.pname in (web)",
    "user.uid = 0", "user.uid > 100", "fd.name startswith /etc", "fd.name pmatch (bin_dirs)",
    "fd.rport in (miner_ports)", "fd.rport = 443", "evt.type = execve", "evt.type in (open, connect)",
    "evt.is_open_write = true", "container.id exists", "fd.name pmatch (/usr, /usr/bin)",
    "fd.name pmatch (/etc/cron.d/x)", "fd.name startswith /usr/b", "proc.exepath startswith /tmp",
    "fd.name pmatch (/)", "proc.exepath pmatch (/usr/bin, /tmp)", "fd.name pmatch (/usr/*, /etc)",
    "proc.exepath glob '/tmp/*'", "spawned",
    "open_write", "shell", "fd.filename = .bash_history", "evt.type != fork", "fd.sport = 4444",
]


def _random_condition(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 2 or roll < 0.35:
        atom = rng.choice(_ATOMS)
        return f"not {atom}" if rng.random() < 0.15 else atom
    op = "and" if roll < 0.8 else "or"
    items = [_random_condition(rng, depth + 1) for _ in range(rng.randint(2, 4))]
    return "(" + f" {op} ".join(items) + ")"


def test_index_agrees_on_random_rule_sets():
    rng = random.Random(10)
    events = _events()
    for _ in range(40):
        compiled = [compile(_random_condition(rng), MACROS, LISTS) for _ in range(rng.randint(1, 60))]
        index = RuleIndex(compiled)
        for en in events:
            assert index.match(en) == _want(compiled, en)


def test_an_or_on_one_field_is_one_dispatchable_test():
    c = compile("fd.name = /x or fd.name startswith /etc/cron or fd.name pmatch (/usr/bin) or fd.name in (/y)")
    (part,) = c.conjuncts
    assert part.prefix is not None and part.prefix[3] == {"/x", "/y", "/usr/bin"}
    for path, want in (("/x", True), ("/y", True), ("/etc/crontab", True), ("/usr/bin/ls", True),
                       ("/usr/binx", False), ("/etc/passwd", False)):
        assert c.match(open_en(path)) is want, path
    assert compile("proc.name = a or proc.name in (b, c)").conjuncts[0].eq[2] == {"a", "b", "c"}


def test_an_or_keeps_only_what_can_hold_on_each_kind():
    rules = ["((evt.type = open and evt.is_open_write = true) or evt.type = unlink) and fd.name startswith /etc",
             "(fd.name startswith /etc or fd.rport = 1) and proc.name = cp"]
    compiled = [compile(r) for r in rules]
    index = RuleIndex(compiled)
    events = [open_en("/etc/a", flags=os.O_WRONLY, comm=b"cp"), open_en("/etc/a", comm=b"cp"),
              enriched(file_rec(Op.FILE_UNLINK, "/etc/b", comm=b"rm")), connect_en("10.0.0.1", 1, comm=b"cp")]
    assert [index.match(en) for en in events] == [[0, 1], [1], [0], [1]]
    assert [index.match(en) for en in events] == [_want(compiled, en) for en in events]


def test_an_or_of_contains_on_one_field_reads_it_once():
    c = compile("proc.cmdline contains stratum+tcp or proc.cmdline contains '--donate' or proc.name = xmrig")
    (part,) = c.conjuncts
    assert len(part.disj) == 2 and part.disj[0].words[2] == ("stratum+tcp", "--donate")
    assert c.match(exec_en("/tmp/m", ["m", "-o", "stratum+tcp://x"]))
    assert c.match(exec_en("/tmp/m", ["m", "--donate-level=1"]))
    assert c.match(exec_en("/tmp/m", ["m"], comm=b"xmrig"))
    assert not c.match(exec_en("/tmp/m", ["m", "-o", "pool"]))
    assert not c.match(open_en("/etc/passwd", comm=b"m"))  # a file event: its process's command line is "sh"


def test_prefix_dispatch_by_first_component_with_short_and_relative_prefixes():
    # "/" and "/et" have no '/' after their first character: tried on every path; "out/" is relative
    rules = ["fd.name startswith /", "fd.name startswith /et", "fd.name pmatch (/etc/cron.d, /etc)",
             "fd.name startswith out/", "fd.name pmatch (/usr/lib, /usr/lib/x86_64)", "fd.name = /etc"]
    compiled = [compile(r) for r in rules]
    index = RuleIndex(compiled)
    paths = ["/etc", "/etc/", "/etc/cron.d", "/etc/cron.d/job", "/etcx", "/e", "/", "out/a.tmp", "out",
             "a/out/b", "/usr/lib/x86_64/libc.so", "/usr/lib", "/usr/libexec/x", "relative", ""]
    for path in paths:
        en = open_en(path, flags=os.O_WRONLY)
        assert index.match(en) == _want(compiled, en), path


def test_an_or_of_dispatchable_tests_on_two_fields_splits_and_counts_once():
    rules = ["open_write and (fd.filename in (.bashrc, .profile) or fd.name startswith /etc/profile.d/)",
             "open_write and fd.name startswith /etc/"]
    compiled = [compile(r, MACROS, LISTS) for r in rules]
    index = RuleIndex(compiled)
    assert index.met["file.open"] == 2  # rules, not the items an or was split into
    for path, want in (("/etc/profile.d/.bashrc", [0, 1]), ("/home/u/.bashrc", [0]), ("/etc/x", [1]),
                       ("/tmp/x", [])):
        en = open_en(path, flags=os.O_WRONLY)
        assert index.match(en) == want == _want(compiled, en), path


def test_a_node_is_one_generated_function_that_reads_each_field_once():
    from agent.detect import fields

    assert fields.resolve("file.path").fast.inline == "en.event.path"  # read inline, not called
    rules = ["event.name = file.open and file.path pmatch (/etc) and not file.path endswith .swp",
             "event.name = file.open and file.path startswith /etc/cron",
             "event.name = file.open and file.path = /etc/passwd"]
    compiled = [compile(r, MACROS, LISTS) for r in rules]
    index = RuleIndex(compiled)
    node = index.node(Op.FILE_OPEN)
    assert "def node(en, out):" in node.source
    en = open_en("/etc/passwd", flags=os.O_WRONLY)
    assert index.match(en) == [0, 2] == _want(compiled, en)
    # read once in this function, though three rules test it: every read is the lazy one into its local
    reads = node.source.count("en.event.path")
    assert reads >= 1 and reads == len(re.findall(r"\(v(\d+) if v\1 is not _U else \(v\1 := \(en\.event\.path\)\)\)",
                                                  node.source)), node.source
