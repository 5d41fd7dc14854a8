"""The bundled detection rules against real behaviour: the real probes, the real agent
(`nodewarden run --json`, no policy file: the bundled rules are on by default), real syscalls.

Each behaviour runs in its own child process and must raise exactly one alert from that process,
with the rule id, severity and MITRE technique of its rule; each benign look-alike must raise none.
Network behaviour stays on loopback (a listener on 127.0.0.1 at a stratum port, not a pool). The
cloud metadata rule is not exercised here: 169.254.169.254 is a real address outside this machine
(tests/unit/test_detect_engine.py checks it on a synthetic event), and so is the container-only
package-manager rule.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import uuid

import pytest

from tests.kernel.conftest import AgentProcess

TAG = f"nwdet-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def agent():
    a = AgentProcess("--no-containers")
    yield a
    if a.proc.poll() is None:
        a.stop()


@pytest.fixture
def scratch():
    """Paths the behaviours write to, removed afterwards by this process (its own events are not counted)."""
    made: list[str] = []
    yield made
    for p in reversed(made):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.unlink(p)


def _alerts(agent, argv: list[str]) -> list[dict]:
    """Run argv to its end; the alerts raised by it and its children (its exit record follows them)."""
    cmd = " ".join(argv)
    seen = len(agent.find(_exec_of(cmd)))  # the same command may have run before: take the new one
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    if argv[0] == PY:
        return _after_exit(agent, int(p.stdout.split()[-1]))
    return _after_exit(agent, agent.wait_for(_exec_of(cmd), count=seen + 1)[-1]["process.pid"])


def _exec_of(cmd: str):
    return lambda r: r["event.name"] == "process.exec" and r.get("process.command_line") == cmd


def _after_exit(agent, pid: int) -> list[dict]:
    agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == pid)
    return agent.find(lambda r: r["event.name"] == "alert" and (r["process.pid"] == pid
                                                                 or r.get("process.parent_pid") == pid))


# The system interpreter (Debian's python3, which scripts/setup.sh installs), not the venv's: a checkout
# under /tmp (CI clones anywhere) would make every behaviour run from /tmp, which a bundled rule flags.
PY = "/usr/bin/python3"


def _py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code) + "\nimport os; print(os.getpid())"]


def _sh(script: str) -> list[str]:
    # `; :` keeps dash from exec'ing the last command in place: every syscall is the shell's own pid
    return ["/bin/sh", "-c", f"{script}; :", TAG]


def _status(a: AgentProcess) -> dict:
    """status.json of the agent (its state dir: the default, as the agent runs without a config)."""
    import json
    import time

    from agent.config import Config

    path = os.path.join(Config().agent.state_dir, "status.json")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                rep = json.load(f)
            if rep.get("pid") == a.proc.pid:
                return rep
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no status.json of pid {a.proc.pid} at {path}")


def _bundled() -> list[str]:
    from agent.policy.rules import default_section

    return [r.id for r in default_section()[0].ruleset.rules]


def _one(alerts: list[dict], rule: str, severity: str, technique: str) -> dict:
    assert [a["rule.id"] for a in alerts] == [rule], [(a["rule.id"], a.get("alert.output")) for a in alerts]
    a = alerts[0]
    assert a["event.severity"] == severity
    assert technique in a["threat.technique.id"]
    assert a["threat.tactic.name"] and a["rule.name"] and a["rule.description"]
    return a


def _home(scratch) -> str:
    d = f"/tmp/{TAG}-home-{uuid.uuid4().hex[:6]}"
    os.makedirs(f"{d}/.ssh")
    scratch.append(d)
    return d


# -- files -----------------------------------------------------------------------------------------------


def test_write_below_etc(agent, scratch):
    f = f"/etc/{TAG}-{uuid.uuid4().hex[:6]}.conf"
    scratch.append(f)
    a = _one(_alerts(agent, _sh(f"echo x > {f}")), "nw.write_below_etc", "high", "T1543")
    assert a["file.path"] == f and a["trigger.name"] == "file.open"
    assert _alerts(agent, _sh(f"cat {f} >/dev/null; echo x > /tmp/{TAG}-etc-lookalike")) == []
    scratch.append(f"/tmp/{TAG}-etc-lookalike")


def test_rename_and_chmod_below_etc(agent, scratch):
    f = f"/etc/{TAG}-{uuid.uuid4().hex[:6]}"
    scratch += [f, f + ".moved"]
    with open(f, "w"):
        pass
    a = _one(_alerts(agent, ["/bin/mv", f, f + ".moved"]), "nw.write_below_etc", "high", "T1543")
    assert (a["trigger.name"], a["file.target.path"]) == ("file.rename", f + ".moved")
    a = _one(_alerts(agent, ["/bin/chmod", "0600", f + ".moved"]), "nw.write_below_etc", "high", "T1543")
    assert a["trigger.name"] == "file.chmod"


def test_write_below_binary_dir(agent, scratch):
    f = f"/usr/lib/{TAG}-{uuid.uuid4().hex[:6]}.so"
    scratch += [f, f + "c.pyc"]
    _one(_alerts(agent, _sh(f"echo x > {f}")), "nw.write_below_binary_dir", "high", "T1574")
    assert _alerts(agent, _sh(f"echo x > {f}c.pyc")) == []  # python bytecode: the exception


def test_write_below_root(agent, scratch):
    f = f"/root/{TAG}-{uuid.uuid4().hex[:6]}"
    os.makedirs("/root/.cache", exist_ok=True)
    scratch += [f, f"/root/.cache/{TAG}"]
    _one(_alerts(agent, _sh(f"echo x > {f}")), "nw.write_below_root", "medium", "T1546")
    assert _alerts(agent, _sh(f"echo x > /root/.cache/{TAG}")) == []


def test_shell_history_truncated_or_deleted(agent, scratch):
    h = _home(scratch)
    with open(f"{h}/.bash_history", "w") as f:
        f.write("ls\n")
    assert _alerts(agent, _sh(f"echo whoami >> {h}/.bash_history")) == []  # appending: what shells do
    a = _one(_alerts(agent, _sh(f": > {h}/.bash_history")), "nw.clear_shell_history", "high", "T1070.003")
    assert a["file.path"] == f"{h}/.bash_history"
    a = _one(_alerts(agent, ["/bin/rm", f"{h}/.bash_history"]), "nw.clear_shell_history", "high", "T1070.003")
    assert a["trigger.name"] == "file.unlink"


def test_setuid_bit_set_by_chmod(agent, scratch):
    f = f"/tmp/{TAG}-suid-{uuid.uuid4().hex[:6]}"
    scratch.append(f)
    shutil.copy("/bin/true", f)
    assert _alerts(agent, ["/bin/chmod", "0755", f]) == []
    a = _one(_alerts(agent, ["/bin/chmod", "u+s", f]), "nw.setuid_setgid_bit", "high", "T1548.001")
    assert a["file.mode"] & 0o4000
    _one(_alerts(agent, ["/bin/chmod", "g+s", f]), "nw.setuid_setgid_bit", "high", "T1548.001")
    # a mode with the file type bits, as git passes a stat() mode: the kernel keeps the permission bits
    assert _alerts(agent, _py(f"import os; os.chmod({f!r}, 0o100744)")) == []
    _one(_alerts(agent, _py(f"import os; os.chmod({f!r}, 0o104755)")), "nw.setuid_setgid_bit", "high", "T1548.001")


def test_cron_persistence(agent, scratch):
    if not os.path.isdir("/etc/cron.d"):
        os.makedirs("/etc/cron.d")
        scratch.append("/etc/cron.d")
    f = f"/etc/cron.d/{TAG}-{uuid.uuid4().hex[:6]}"
    scratch.append(f)
    _one(_alerts(agent, _sh(f"echo '* * * * * root true' > {f}")), "nw.cron_systemd_persistence", "high",
         "T1053.003")
    staged = f"/etc/{TAG}-job-{uuid.uuid4().hex[:6]}"
    with open(staged, "w") as fh:
        fh.write("* * * * * root true\n")
    scratch += [staged, f + ".moved"]
    a = _one(_alerts(agent, ["/bin/mv", staged, f + ".moved"]), "nw.cron_systemd_persistence", "high", "T1053.003")
    assert (a["trigger.name"], a["file.target.path"]) == ("file.rename", f + ".moved")  # caught where it goes
    os.makedirs(f"/tmp/{TAG}-cron.d", exist_ok=True)
    scratch.append(f"/tmp/{TAG}-cron.d")
    assert _alerts(agent, _sh(f"echo x > /tmp/{TAG}-cron.d/job")) == []


def test_systemd_timer_persistence(agent, scratch):
    f = f"/etc/systemd/system/{TAG}-{uuid.uuid4().hex[:6]}.timer"
    if not os.path.isdir("/etc/systemd/system"):
        pytest.skip("no /etc/systemd/system here")
    scratch.append(f)
    _one(_alerts(agent, _sh(f"echo '[Timer]' > {f}")), "nw.cron_systemd_persistence", "high", "T1053.003")


def test_authorized_keys_changed(agent, scratch):
    h = _home(scratch)
    a = _one(_alerts(agent, _sh(f"echo 'ssh-ed25519 AAAA x' >> {h}/.ssh/authorized_keys")),
             "nw.authorized_keys_modified", "high", "T1098.004")
    assert a["file.path"] == f"{h}/.ssh/authorized_keys"
    assert _alerts(agent, _sh(f"echo 'host ssh-ed25519 AAAA' >> {h}/.ssh/known_hosts")) == []


def test_shell_rc_modified(agent, scratch):
    h = _home(scratch)
    _one(_alerts(agent, _sh(f"echo 'curl x | sh' >> {h}/.bashrc")), "nw.shell_rc_modified", "medium", "T1546.004")
    _one(_alerts(agent, _sh(f"echo x > {h}/.profile")), "nw.shell_rc_modified", "medium", "T1546.004")
    assert _alerts(agent, _sh(f"echo x > {h}/bashrc.txt")) == []


# -- processes -------------------------------------------------------------------------------------------


def test_exec_from_tmp_and_dev_shm(agent, scratch):
    for d in ("/tmp", "/dev/shm", "/var/tmp"):
        f = f"{d}/{TAG}-drop-{uuid.uuid4().hex[:6]}"
        scratch.append(f)
        shutil.copy("/bin/true", f)
        a = _one(_alerts(agent, [f, "--beacon"]), "nw.exec_from_writable_dir", "high", "T1059")
        assert a["process.executable.path"] == f
    assert _alerts(agent, ["/bin/true", f"/tmp/{TAG}-not-run"]) == []  # /tmp in an argument only


def test_network_tools_run(agent, scratch):
    d = f"/run/{TAG}-tools"
    os.makedirs(d, exist_ok=True)
    scratch.append(d)
    for name in ("nc", "ncat", "socat", "nmap"):
        shutil.copy("/bin/true", f"{d}/{name}")  # the rule keys on the program name, as Falco's does
        a = _one(_alerts(agent, [f"{d}/{name}", "-h"]), "nw.network_tool_run", "medium", "T1046")
        assert a["process.name"] == name
    shutil.copy("/bin/true", f"{d}/ncdu")
    assert _alerts(agent, [f"{d}/ncdu"]) == []


def test_miner_command_line(agent):
    a = _one(_alerts(agent, ["/bin/true", "-o", "stratum+tcp://127.0.0.1:3333", "-u", "wallet"]),
             "nw.miner_command_line", "critical", "T1496")
    assert "stratum+tcp://" in a["process.command_line"]
    assert _alerts(agent, ["/bin/echo", "the stratum of rock"]) == []


# -- network (loopback only) -----------------------------------------------------------------------------


def _listener(ports) -> socket.socket:
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        s.listen(8)
        return s
    pytest.skip(f"none of the ports {ports} is free on loopback")


def test_connect_to_a_stratum_port(agent):
    srv = _listener((3333, 14444, 45700, 7777))
    port = srv.getsockname()[1]
    try:
        connect = "import socket; c = socket.create_connection(('127.0.0.1', {})); c.close()"
        a = _one(_alerts(agent, _py(connect.format(port))), "nw.miner_stratum_port", "medium", "T1496")
        assert (a["network.peer.address"], a["network.peer.port"]) == ("127.0.0.1", port)
        other = _listener((0,))
        try:
            assert _alerts(agent, _py(connect.format(other.getsockname()[1]))) == []
        finally:
            other.close()
    finally:
        srv.close()


def test_interpreter_listening(agent):
    a = _one(_alerts(agent, _py("""
        import socket
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1); s.close()
    """)), "nw.interpreter_listening", "high", "T1059")
    assert a["network.local.address"] == "127.0.0.1"
    assert _alerts(agent, _py("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.close()
    """)) == []  # bound, never listening


# -- the rules as policy, hot-reloaded in the running agent ----------------------------------------------


def test_policy_reload_swaps_the_rules_and_a_broken_rule_keeps_them(tmp_path, scratch):
    pol = tmp_path / "policy.yaml"
    pol.write_text("detect:\n  disable: {ids: [nw.write_below_etc]}\n")
    a = AgentProcess("--no-containers", "--policy", str(pol))
    try:
        f = f"/etc/{TAG}-reload-{uuid.uuid4().hex[:6]}"
        scratch.append(f)
        assert _alerts(a, _sh(f"echo x > {f}")) == []  # disabled by id
        status = _status(a)
        assert status["detection"]["enabled"] and status["detection"]["not_loaded"] == []
        assert status["detection"]["rules"] == len([r for r in _bundled() if r != "nw.write_below_etc"])
        pol.write_text("detect:\n  rules:\n    - rule: t.mine\n      condition: event.name = process.exec and "
                       f"process.command_line contains {TAG}-mine\n      severity: low\n"
                       "      tags: [execution, T1059]\n      description: mine\n"
                       "      output: [process.command_line]\n")
        loaded = lambda r: r["event.name"] == "agent.policy" and not r.get("policy.error")  # noqa: E731
        a.wait_for(loaded, timeout=15, count=len(a.find(loaded)) + 1)
        _one(_alerts(a, _sh(f"echo x > {f}")), "nw.write_below_etc", "high", "T1543")
        _one(_alerts(a, ["/bin/true", f"{TAG}-mine"]), "t.mine", "low", "T1059")
        pol.write_text("detect:\n  rules:\n    - rule: t.broken\n      condition: process.name ===\n"
                       "      severity: low\n")
        (rej,) = a.wait_for(lambda r: r["event.name"] == "agent.policy" and r.get("policy.error"), timeout=15)
        assert f"{pol}:4:33: rule t.broken" in rej["policy.error"]  # the third = of ===
        # the rules in force stayed (another command line: an identical alert would fold into the first)
        _one(_alerts(a, ["/bin/true", f"{TAG}-mine", "again"]), "t.mine", "low", "T1059")
    finally:
        a.stop()
