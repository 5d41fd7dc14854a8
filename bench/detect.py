"""Detection rules: the added cost per event of judging rules indexed by event kind (no root).

Events are decoded from packed kernel records by the real sensors' decoders and wrapped in
Enriched as enrich does (a parent, a container); a mix of exec, file and network events, almost
all benign, as a node sees them. Rules are compiled once with agent/detect/condition.py and
indexed by the kinds each can match (None = every kind), so an event meets only its kind's rules.
The added cost is the time of that judging loop minus the same loop over an empty index, per event.

(a) 30 rules of the shapes issue 10's bundled set needs (writes below /etc and binary dirs,
    sensitive reads, exec from /tmp and /dev/shm, shells under web servers, miner ports, network
    tools, history deletion, cron/ssh persistence ...), with shared macros and lists;
(b) 500 synthetic rules of the same shapes over different names, paths and ports;
(c) the rules NodeWarden ships (agent/detect/rules), as agent/policy/rules.py loads them, when present.
Target: <= 1 us per event for (a) and (c).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LISTS = {
    "shell_binaries": ["sh", "bash", "dash", "zsh", "ksh", "ash", "csh", "tcsh", "fish"],
    "web_servers": ["nginx", "httpd", "apache2", "lighttpd", "caddy", "php-fpm", "tomcat"],
    "db_servers": ["mysqld", "postgres", "mongod", "redis-server"],
    "jvms": ["java"],
    "network_tools": ["nc", "ncat", "netcat", "socat", "nmap", "masscan", "tcpdump", "telnet"],
    "remote_copy": ["scp", "rsync", "sftp", "ftp"],
    "package_mgmt": ["apt", "apt-get", "dpkg", "yum", "dnf", "rpm", "apk", "pip", "pip3", "npm"],
    "user_mgmt": ["useradd", "userdel", "usermod", "groupadd", "passwd", "chpasswd", "adduser"],
    "miner_ports": [3333, 4444, 5555, 6666, 7777, 8888, 9999, 14444, 45700],
    "bin_dirs": ["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"],
    "lib_dirs": ["/lib", "/lib64", "/usr/lib", "/usr/lib64"],
    "sensitive_files": ["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d", "/etc/pam.d",
                        "/root/.ssh"],
    "trusted_readers": ["sshd", "sudo", "su", "login", "passwd", "unix_chkpwd", "systemd", "cron"],
    "writable_dirs": ["/tmp", "/dev/shm", "/var/tmp", "/run/user"],
    "history_files": [".bash_history", ".zsh_history", ".ash_history", ".history"],
    "shell_rc": [".bashrc", ".bash_profile", ".profile", ".zshrc", "/etc/profile", "/etc/bash.bashrc"],
    "escape_paths": ["/proc/sys/kernel/core_pattern", "/sys/fs/cgroup/release_agent",
                     "/proc/sys/fs/binfmt_misc"],
    "metadata_ips": ["169.254.169.254", "100.100.100.200", "fd00:ec2::254"],
}
MACROS = {
    "spawned": "evt.type in (execve, execveat)",
    "open_write": "evt.type in (open, openat, openat2) and evt.is_open_write = true",
    "open_read": "evt.type in (open, openat, openat2) and evt.is_open_read = true and evt.is_open_write = false",
    "container": "container.id exists",
    "shell": "proc.name in (shell_binaries)",
    "benign_writers": "proc.name in (package_mgmt, systemd, containerd, nodewarden, dockerd, kubelet)",
}
BUNDLED = [
    "open_write and fd.name pmatch (/etc) and not benign_writers",
    "open_write and fd.name pmatch (bin_dirs) and not benign_writers",
    "open_write and fd.name pmatch (lib_dirs) and not benign_writers",
    "open_write and fd.name pmatch (/root) and not fd.name pmatch (/root/.cache)",
    "open_read and fd.name pmatch (sensitive_files) and not proc.name in (trusted_readers)",
    "open_read and fd.name = /var/run/secrets/kubernetes.io/serviceaccount/token and not proc.name in (kubelet)",
    "open_read and fd.name glob '/proc/*/environ' and not proc.name in (ps, top)",
    "spawned and proc.exepath pmatch (writable_dirs)",
    "spawned and container and proc.is_exe_upper_layer = true",
    "spawned and proc.is_exe_from_memfd = true",
    "spawned and shell and proc.pname in (web_servers)",
    "spawned and shell and proc.pname in (db_servers, jvms)",
    "spawned and container and shell and proc.args contains '-i'",
    "spawned and proc.name in (network_tools)",
    "spawned and proc.name in (remote_copy) and container",
    "spawned and proc.name in (curl, wget) and proc.cmdline regex '.*\\|\\s*(ba)?sh.*'",
    "spawned and proc.cmdline icontains 'stratum+tcp'",
    "spawned and proc.name in (grep, egrep, find) and proc.cmdline contains private_key",
    "spawned and container and proc.name in (package_mgmt)",
    "spawned and proc.name in (user_mgmt) and not proc.pname in (package_mgmt)",
    "evt.type in (unlink, unlinkat, rename) and fd.filename in (history_files)",
    "open_write and fd.filename in (history_files) and evt.arg.flags contains O_TRUNC",
    "evt.type in (unlink, unlinkat) and fd.name pmatch (/var/log)",
    "open_write and (fd.name endswith .bashrc or fd.name endswith .profile or fd.name in (shell_rc))",
    "open_write and fd.name pmatch (/etc/cron.d, /etc/crontab, /var/spool/cron, /etc/systemd/system)",
    "open_write and fd.name endswith /.ssh/authorized_keys",
    "open_write and fd.name in (escape_paths)",
    "evt.type = connect and fd.rport in (miner_ports)",
    "evt.type = connect and container and fd.rip in (metadata_ips)",
    "evt.type in (listen, bind) and proc.name in (shell_binaries, python, python3, perl, ruby) and fd.lport > 0",
]


def _synthetic(n: int) -> list[str]:
    shapes = [
        "spawned and proc.name = tool{i} and not proc.pname in (web_servers)",
        "open_write and fd.name pmatch (/opt/app{i}) and not benign_writers",
        "evt.type = connect and fd.rport = {port} and container",
        "open_read and fd.name startswith /srv/secret{i}/ and proc.name != reader{i}",
        "spawned and proc.cmdline contains 'flag{i}' and proc.exepath glob '/opt/*/bin{i}'",
    ]
    return [shapes[i % len(shapes)].format(i=i, port=20000 + i) for i in range(n)]


def _events():
    from agent.events import Op
    from tests.unit.detect_events import connect_en, enriched, exec_en, file_rec, open_en
    from tests.unit.replay_records import PID, exit_rec, fork_rec

    mix = []
    for i in range(40):
        mix.append(open_en(f"/usr/lib/x86_64-linux-gnu/lib{i}.so", comm=b"python3"))  # read-only: most opens
    for i in range(10):
        mix.append(open_en(f"/home/app/data/{i}.json", flags=os.O_WRONLY | os.O_CREAT, comm=b"app"))
    for i in range(20):
        mix.append(exec_en(f"/usr/bin/tool{i % 7}", [f"tool{i % 7}", "--flag", str(i)], comm=b"make"))
    mix.append(exec_en("/bin/sh", ["sh", "-c", "ls"], comm=b"sh"))
    for i in range(12):
        mix.append(connect_en(f"10.1.0.{i}", 443 + i, comm=b"app"))
    for _ in range(8):
        mix.append(enriched(fork_rec(PID + 1)))
        mix.append(enriched(exit_rec(0)))
    # three attacks among them, so the rules are seen to fire: a shell under nginx (the parent the
    # events carry), a cron file written, a miner pool port
    mix.append(exec_en("/bin/bash", ["bash", "-c", "id"], comm=b"bash"))
    mix.append(open_en("/etc/cron.d/job", flags=os.O_WRONLY | os.O_CREAT, comm=b"tee"))
    mix.append(connect_en("10.1.0.99", 3333, comm=b"xmrig"))
    mix.append(enriched(file_rec(Op.FILE_UNLINK, "/tmp/build/obj.o")))
    mix.append(enriched(file_rec(Op.FILE_RENAME, "/home/app/a.tmp", "/home/app/a")))
    return mix


def _compiled(conditions: list[str]) -> list:
    from agent.detect.condition import compile

    return [compile(text, MACROS, LISTS) for text in conditions]


def _naive(compiled: list) -> Callable:
    """Each rule's own match, the rules indexed by kind only."""
    from agent.events import EVENT_NAMES

    by_name = {n: op for op, n in EVENT_NAMES.items()}
    index: dict = {op: [] for op in EVENT_NAMES}
    for pos, c in enumerate(compiled):
        for op in EVENT_NAMES if c.kinds is None else [by_name[k] for k in c.kinds]:
            index[op].append((pos, c.match))
    frozen = {op: tuple(v) for op, v in index.items()}
    empty = ()

    def match(en) -> list[int]:
        return [pos for pos, fn in frozen.get(en.event.op, empty) if fn(en)]

    return match


def _time(match: Callable, events: list, rounds: int) -> tuple[float, int]:
    hits = 0
    t0 = time.thread_time()  # CPU time: on a shared machine the wall clock counts other processes too
    for _ in range(rounds):
        for en in events:
            hits += len(match(en))
    return time.thread_time() - t0, hits


def per_event_us(match: Callable, events: list, rounds: int, runs: int) -> tuple[float, int, float, float]:
    """(added µs per event: median, min and max of runs, over a call that judges nothing; matches per mix)."""
    n = len(events) * rounds
    samples, hits = [], 0
    for _ in range(runs):
        base, _ = _time(lambda en: (), events, rounds)
        full, hits = _time(match, events, rounds)
        samples.append((full - base) / n * 1e6)
    samples.sort()
    return samples[len(samples) // 2], hits // rounds, samples[0], samples[-1]


def _shipped() -> tuple[list, str]:
    """The bundled rules file's conditions, compiled; ([], why) when it cannot be read here."""
    try:
        from agent.detect.condition import ConditionError, compile
        from agent.policy.rules import BUNDLED_DIR, load_files

        ruleset, errors = load_files([BUNDLED_DIR])
        compiled = [compile(r.full_condition, ruleset.macros, ruleset.lists) for r in ruleset.rules]
    except (ImportError, AttributeError, OSError, ConditionError) as e:
        return [], f"{type(e).__name__}: {e}"
    return compiled, "; ".join(errors)


def _check_agree(compiled: list, index, events: list) -> None:
    for en in events:
        want = [pos for pos, c in enumerate(compiled) if c.match(en)]
        if index.match(en) != want:
            raise SystemExit(f"RuleIndex disagrees with the rules on {en.event.name}: {index.match(en)} != {want}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.detect", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2000, help="passes over the event mix per run")
    ap.add_argument("--runs", type=int, default=5, help="runs; the median is reported")
    args = ap.parse_args(argv)
    events = _events()
    kinds = {}
    for en in events:
        kinds[en.event.name] = kinds.get(en.event.name, 0) + 1
    print(f"event mix ({len(events)} events): " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    from agent.detect.index import RuleIndex

    rows = []
    shipped, why = _shipped()
    sets = [("bundled-like set, 30 rules", _compiled(BUNDLED), 1.0),
            ("synthetic, 500 rules", _compiled(_synthetic(500)), None)]
    if shipped:
        sets.append((f"shipped rules (agent/detect/rules), {len(shipped)} rules", shipped, 1.0))
    else:
        print(f"shipped rules: not measured ({why or 'none found'})")
    for label, compiled, target in sets:
        rounds = args.rounds if len(compiled) < 100 else max(1, args.rounds // 5)
        index = RuleIndex(compiled)
        _check_agree(compiled, index, events)
        met = sum(index.met[en.event.name] for en in events) / len(events)
        us, hits, lo, hi = per_event_us(index.match, events, rounds, args.runs)
        rows.append((f"{label}: RuleIndex (meets {met:.1f} rules/event, {hits} matches/mix)", us, target))
        rows.append((f"  min .. max of {args.runs} runs: {lo:.3f} .. {hi:.3f} us", None, None))
        us, *_ = per_event_us(_naive(compiled), events, rounds, args.runs)
        rows.append(("  each rule's own match, by kind only", us, None))
    w = max(len(r[0]) for r in rows)
    print(f"{'rule cost per event':<{w}}  {'measured':>10}  {'target':>10}")
    for name, us, target in rows:
        if us is None:
            print(name)
            continue
        mark = "" if target is None else ("  ok" if us <= target else "  MISSED")
        tgt = f"<= {target:.1f} us" if target is not None else ""
        print(f"{name:<{w}}  {us:>7.3f} us  {tgt:>10}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
