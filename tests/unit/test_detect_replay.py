"""Conditions on events as the agent makes them: packed kernel records played by the replay source,
decoded by the sensors' decoders and enriched by the real Enricher and ProcessTable (lineage from
the process table, not built by hand), then judged by compiled conditions and the RuleIndex."""

from __future__ import annotations

import os

from agent.detect.condition import compile
from agent.detect.index import RuleIndex
from agent.enrich.enricher import Enricher
from agent.enrich.proctable import ProcessTable
from agent.events import Op
from agent.sensors.common import BootClock
from agent.sensors.replay import ReplayProbes
from tests.unit.detect_events import file_rec
from tests.unit.replay_records import PID, exec_rec, fork_rec

NGINX, BASH, SH, ID = PID, PID + 1, PID + 2, PID + 3  # pids no real process has (see replay_records)


def _attack_chain() -> list[bytes]:
    """nginx forks a bash, bash runs `sh -c id`, and the sh writes below /etc."""
    return [
        exec_rec("/usr/sbin/nginx", ["nginx", "-g", "daemon off;"], pid=NGINX, ppid=PID - 1, comm=b"nginx"),
        fork_rec(BASH, pid=NGINX, ppid=PID - 1, comm=b"nginx"),
        exec_rec("/bin/bash", ["bash"], pid=BASH, ppid=NGINX, comm=b"bash"),
        fork_rec(SH, pid=BASH, ppid=NGINX, comm=b"bash"),
        exec_rec("/bin/sh", ["sh", "-c", "id"], pid=SH, ppid=BASH, comm=b"sh"),
        fork_rec(ID, pid=SH, ppid=BASH, comm=b"sh"),
        exec_rec("/usr/bin/id", ["id"], pid=ID, ppid=SH, comm=b"id"),
        file_rec(Op.FILE_OPEN, "/etc/ld.so.preload", flags=os.O_WRONLY | os.O_CREAT, ret=3, pid=SH, ppid=BASH,
                 comm=b"sh", uid=0),
    ]


def _enriched():
    probes = ReplayProbes([_attack_chain()], families=("process", "file"))
    clock, enricher = BootClock(), Enricher(ProcessTable())
    out = []
    for raw in probes.reader().read():
        out.append(enricher.enrich(probes.decoders[raw[0]](raw, clock)))
    return out


def test_lineage_from_the_process_table_reaches_the_conditions():
    events = _enriched()
    last_exec = next(en for en in reversed(events) if en.event.name == "process.exec")
    assert compile("evt.type = execve and proc.name = id and proc.pname = sh and proc.aname[2] = bash "
                   "and proc.aname[3] = nginx").match(last_exec)
    assert compile("process.ancestors[2].executable.path = /usr/sbin/nginx").match(last_exec)
    assert compile("proc.aname in (nginx) and proc.pcmdline = 'sh -c id'").match(last_exec)
    assert not compile("proc.aname[4] exists").match(last_exec)  # nginx's parent is no process (PID - 1)


def test_bundled_shapes_on_the_replayed_chain():
    macros = {"spawned": "evt.type in (execve, execveat)", "shell": "proc.name in (bash, sh, dash)",
              "open_write": "evt.type in (open, openat) and evt.is_open_write = true"}
    rules = ["spawned and shell and proc.aname in (nginx, httpd)",  # a shell whose ancestor is a web server
             "spawned and shell and proc.pname in (nginx, httpd)",  # ... whose parent is one
             "open_write and fd.name pmatch (/etc) and proc.aname[2] = nginx",
             "spawned and proc.name = id"]
    compiled = [compile(r, macros) for r in rules]
    index = RuleIndex(compiled)
    got = [(en.event.name, en.event.comm, index.match(en)) for en in _enriched()]
    assert [g for g in got if g[2]] == [
        ("process.exec", "bash", [0, 1]),
        ("process.exec", "sh", [0]),
        ("process.exec", "id", [3]),
        ("file.open", "sh", [2]),
    ]
