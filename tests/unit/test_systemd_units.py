"""The systemd units (systemd/), their default configs and install script, and sd_notify (agent/sdnotify.py).

Real tools, no stand-ins: Debian's `systemd-analyze verify` and `security --offline` on the units as
install.sh writes them; sd_notify against a real unix datagram socket; and the real agent started with the
shipped config, the unit's capability bounding set and no_new_privs applied as systemd applies them (this
build machine has no systemd as PID 1, so the unit itself cannot be started here), reporting READY=1 after
agent.ready, watchdog pings and STOPPING=1 on that socket.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import config as agent_config
from agent import sdnotify

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
NODEWARDEN = REPO / ".venv" / "bin" / "nodewarden"
AGENT_UNIT, COLLECTOR_UNIT = "nodewarden.service", "nodewarden-collector.service"

# Exposure scores (`systemd-analyze security --offline=true`, systemd 252): 9.6 "UNSAFE" for the unit before
# issue 15. The agent's floor is set by what it is: root with 6 capabilities (BPF, PERFMON, SYS_PTRACE,
# DAC_*...), the host's network (it exports), the process tree (it watches it), devices (GPU poller), bpf(2)
# and perf_event_open(2) in its syscall filter, no MemoryDenyWriteExecute (bcc's in-process LLVM). The
# collector has no privilege at all; what is left is the network it serves on.
AGENT_MAX_EXPOSURE = 2.8
COLLECTOR_MAX_EXPOSURE = 1.1

# linux/capability.h
CAPS = {"CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_KILL": 5, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21,
        "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38, "CAP_BPF": 39}
# Not CAP_SYS_RESOURCE: LimitMEMLOCK=infinity does what it did (this machine's root lacks it, and the agent
# attaches every probe here); not CAP_SYS_ADMIN.
AGENT_CAPS = {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_KILL"}

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing (apt-get install systemd)")


def _unit(path: Path) -> dict[str, list[str]]:
    """A unit file's settings, every assignment of a key kept in order (systemd allows repeats)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The units and configs as systemd/install.sh installs them (into a root of our own)."""
    root = tmp_path_factory.mktemp("root")
    r = subprocess.run(["bash", str(SYSTEMD / "install.sh"), "--root", str(root), "--prefix", str(REPO)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return root


# -- install.sh ------------------------------------------------------------------------------------------------


def test_install_puts_units_for_the_checkout_and_keeps_an_edited_config(installed, tmp_path):
    units = installed / "etc/systemd/system"
    assert {p.name for p in units.iterdir()} == {AGENT_UNIT, COLLECTOR_UNIT}
    agent = _unit(units / AGENT_UNIT)
    assert agent["ExecStart"] == [f"{NODEWARDEN} run --json --config /etc/nodewarden/config.yaml"]
    conf = installed / "etc/nodewarden"
    assert (conf / "config.yaml").read_text() == (SYSTEMD / "nodewarden.yaml").read_text()
    assert (conf / "collector.yaml").stat().st_mode & 0o777 == 0o644  # the collector's dynamic user reads it
    # a second install keeps what the admin changed
    root = tmp_path / "r"
    (root / "etc/nodewarden").mkdir(parents=True)
    (root / "etc/nodewarden/config.yaml").write_text("agent: {}\n")
    r = subprocess.run(["bash", str(SYSTEMD / "install.sh"), "--root", str(root), "--prefix", str(REPO)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "kept" in r.stdout
    assert (root / "etc/nodewarden/config.yaml").read_text() == "agent: {}\n"


@pytest.mark.parametrize("prefix,why", [("relative/dir", "absolute"), ("/home/me/nodewarden", "home directory"),
                                        ("/opt/node warden", "characters")])
def test_install_refuses_a_prefix_the_unit_cannot_run(tmp_path, prefix, why):
    r = subprocess.run(["bash", str(SYSTEMD / "install.sh"), "--root", str(tmp_path), "--prefix", prefix],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "etc").exists()


# -- the units, as systemd reads them --------------------------------------------------------------------------


@needs_analyze
def test_units_verify_clean(installed):
    units = installed / "etc/systemd/system"
    r = subprocess.run(["systemd-analyze", "verify", AGENT_UNIT, COLLECTOR_UNIT], cwd=units,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # verify prints problems of other units it loads (the host's) too: ours must have none
    ours = [line for line in r.stderr.splitlines() if "nodewarden" in line]
    assert ours == []


def _exposure(unit: Path) -> tuple[float, str]:
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit.name], cwd=unit.parent,
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1)), r.stdout


@needs_analyze
@pytest.mark.parametrize("unit,bound", [(AGENT_UNIT, AGENT_MAX_EXPOSURE), (COLLECTOR_UNIT, COLLECTOR_MAX_EXPOSURE)])
def test_exposure_score(installed, unit, bound):
    score, report = _exposure(installed / "etc/systemd/system" / unit)
    assert score <= bound, report


def test_agent_unit_settings():
    u = _unit(SYSTEMD / AGENT_UNIT)
    assert u["Type"] == ["notify"] and u["NotifyAccess"] == ["main"] and "WatchdogSec" in u
    assert set(u["CapabilityBoundingSet"][0].split()) == AGENT_CAPS  # not CAP_SYS_ADMIN (docs/systemd.md)
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
                       "StateDirectory": "nodewarden", "CacheDirectory": "nodewarden", "RuntimeDirectory": "nodewarden",
                       "SystemCallArchitectures": "native", "LockPersonality": "yes", "ProtectClock": "yes",
                       "ProtectHostname": "yes", "ProtectKernelLogs": "yes", "ProtectKernelTunables": "yes",
                       "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "RestrictNamespaces": "yes",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK"}.items():
        assert u.get(key) == [value], key
    assert "User" not in u  # root: bcc and the probes' maps; everything else is taken away


def test_collector_unit_has_no_privilege():
    u = _unit(SYSTEMD / COLLECTOR_UNIT)
    assert u["DynamicUser"] == ["yes"] and u["CapabilityBoundingSet"] == [""] and u["AmbientCapabilities"] == [""]
    assert u["MemoryDenyWriteExecute"] == ["yes"] and u["PrivateDevices"] == ["yes"]
    assert u["ExecStart"] == ["/opt/nodewarden/.venv/bin/nodewarden collector --config /etc/nodewarden/collector.yaml"]


# -- the default configs ----------------------------------------------------------------------------------------


def _under(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def test_default_agent_config_loads_and_writes_only_where_the_unit_lets_it():
    cfg = agent_config.load(str(SYSTEMD / "nodewarden.yaml"), env={})
    u = _unit(SYSTEMD / AGENT_UNIT)
    writable = ["/var/lib/" + u["StateDirectory"][0], "/var/cache/" + u["CacheDirectory"][0],
                "/run/" + u["RuntimeDirectory"][0]]
    written = {"agent.state_dir": cfg.agent.state_dir, "probes.cache_dir": cfg.probes.cache_dir,
               "enforce.gate_socket": cfg.enforce.gate_socket, "imagegate.cache_path": cfg.imagegate.cache_path}
    for key, path in written.items():
        assert _under(path, writable), f"{key} = {path} is read-only under ProtectSystem=strict"
    # the unit passes --json; the file must not contradict the unit with anything it cannot load
    assert cfg.agent.metrics_listen.startswith("127.0.0.1:")


def test_default_collector_config_loads_and_stores_in_the_state_directory():
    from agent.commands import collector

    p = argparse.ArgumentParser()
    collector.add_arguments(p)
    cfg = collector.build_config(p.parse_args(["--config", str(SYSTEMD / "collector.yaml")]))
    u = _unit(SYSTEMD / COLLECTOR_UNIT)
    assert _under(cfg.db, ["/var/lib/" + u["StateDirectory"][0]])
    assert cfg.listen == ["127.0.0.1:7470"] and cfg.retention_age_s == 7 * 86400 and cfg.retention_bytes == 1 << 30


# -- sd_notify -------------------------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    s.bind(path)
    s.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield s
    s.close()


def test_notify_sends_one_datagram_per_state(notify_socket):
    assert sdnotify.ready("watching\nnode-1")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=watching node-1"  # a newline would start an assignment
    assert sdnotify.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_notify_to_an_abstract_socket(monkeypatch):
    name = f"nodewarden-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.status("loading probes")
        assert s.recv(4096) == b"STATUS=loading probes"


@pytest.mark.parametrize("value", [None, "", "relative/path"])
def test_notify_outside_systemd_is_a_no_op(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    before = sdnotify.failed
    assert sdnotify.ready() is False and sdnotify.failed == before


def test_a_socket_that_went_away_costs_the_message_not_the_agent(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    before = sdnotify.failed
    assert sdnotify.ready() is False
    assert sdnotify.failed == before + 1


def test_watchdog_interval(monkeypatch):
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None  # not for us
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert sdnotify.watchdog_interval({}) is None


def test_watchdog_pings_while_healthy_and_stops_when_not(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    healthy = [True]
    w = sdnotify.Watchdog(lambda: healthy[0])
    w.start()
    try:
        assert notify_socket.recv(64) == b"WATCHDOG=1"
        assert notify_socket.recv(64) == b"WATCHDOG=1"
        healthy[0] = False
        deadline = time.monotonic() + 2
        while w.missed == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.missed > 0
        notify_socket.settimeout(0.3)
        while True:  # drain a ping sent before the check failed; then silence
            try:
                notify_socket.recv(64)
            except TimeoutError:
                break
    finally:
        w.stop()


# -- the real agent, as the unit starts it ---------------------------------------------------------------------


def _bounded(caps: set[str]):
    """What systemd does before exec for CapabilityBoundingSet= and NoNewPrivileges= (root keeps only these)."""
    keep = {CAPS[c] for c in caps}
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())

    def apply():
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in range(last + 1):
            if cap not in keep and libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                os._exit(120)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            os._exit(121)

    held = int(re.search(r"CapBnd:\s*(\w+)", Path("/proc/self/status").read_text()).group(1), 16)
    return apply, sum(1 << c for c in keep) & held  # a capability we lack ourselves the agent cannot get


def _run_agent(tmp_path, caps: set[str], duration: str = "3"):
    """The shipped config with test-local paths, under `caps` and no_new_privs; the notify socket bound.
    tracefs is mounted first, as systemd mounts it at boot (sys-kernel-tracing.mount): the unit's capabilities
    do not include mounting it, and on a fresh machine no earlier test may have."""
    from agent.kernel.headers import ensure_tracefs

    ensure_tracefs()
    preexec, mask = _bounded(caps)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000",
           # where a test may write, instead of the unit's directories; the rest is the shipped file
           "NODEWARDEN_AGENT_STATE_DIR": str(tmp_path / "state"),
           "NODEWARDEN_ENFORCE_GATE_SOCKET": str(tmp_path / "run" / "gate.sock"),
           "NODEWARDEN_AGENT_METRICS_LISTEN": "127.0.0.1:0"}
    out, err = tmp_path / "out.jsonl", tmp_path / "err.txt"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([str(NODEWARDEN), "run", "--json", "--config", str(SYSTEMD / "nodewarden.yaml"),
                                 "--duration", duration], env=env, stdout=o, stderr=e, preexec_fn=preexec)
    return proc, sock, mask, out, err


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent loads BPF probes: root only")
def test_real_agent_with_the_units_capabilities_notifies_ready_watchdog_and_stopping(tmp_path):
    u = _unit(SYSTEMD / AGENT_UNIT)
    proc, sock, mask, out, err = _run_agent(tmp_path, set(u["CapabilityBoundingSet"][0].split()))
    messages: list[bytes] = []
    capbnd = capeff = None
    deadline = time.monotonic() + 300  # the first start on a kernel compiles the probes
    sock.settimeout(1.0)
    try:
        while time.monotonic() < deadline:
            try:
                m = sock.recv(4096)
            except TimeoutError:
                if proc.poll() is not None:
                    break
                continue
            messages.append(m)
            if m.startswith(b"READY=1"):  # what the agent holds once systemd counts it started
                status = Path(f"/proc/{proc.pid}/status").read_text()
                capbnd = int(re.search(r"CapBnd:\s*(\w+)", status).group(1), 16)
                capeff = int(re.search(r"CapEff:\s*(\w+)", status).group(1), 16)
            if m.startswith(b"STOPPING=1"):
                break
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    stderr = err.read_text(errors="replace")
    assert rc == 0, stderr
    kinds = [m.split(b"=", 1)[0].decode() for m in messages]
    assert kinds[0] == "STATUS" and b"loading probes" in messages[0], messages
    ready = kinds.index("READY")
    assert b"STATUS=watching" in messages[ready]
    assert kinds[-1] == "STOPPING"
    assert kinds[ready + 1:-1] and set(kinds[ready + 1:-1]) == {"WATCHDOG"}, messages  # ~6 in 3 s
    assert capbnd == capeff == mask  # the probes attached with these and nothing else
    records = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert records[0]["event.name"] == "agent.ready"
    assert "Traceback" not in stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent loads BPF probes: root only")
def test_real_agent_without_cap_bpf_fails_in_one_line_and_never_says_ready(tmp_path):
    """The unit's set is not larger than needed at its core: without CAP_BPF no probe loads, and systemd,
    which waits for READY=1, sees the start fail (exit status 1) instead of a half-working agent."""
    proc, sock, _, out, err = _run_agent(tmp_path, AGENT_CAPS - {"CAP_BPF"})
    try:
        rc = proc.wait(timeout=300)
        sock.setblocking(False)
        messages = []
        while True:
            try:
                messages.append(sock.recv(4096))
            except BlockingIOError:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    stderr = err.read_text(errors="replace")
    assert rc == 1, stderr
    assert not any(m.startswith(b"READY=1") for m in messages), messages
    assert "Traceback" not in stderr and b"agent.ready" not in out.read_bytes()
    last = stderr.strip().splitlines()[-1]  # the unit runs `run --json`: diagnostics are JSON lines too
    assert json.loads(last)["log.level"] == "error" and "probes" in json.loads(last)["message"], stderr


def test_sdnotify_imports_nothing_beyond_the_standard_library():
    r = subprocess.run([sys.executable, "-c", "import sys, agent.sdnotify; "
                        "print(sorted(m for m in sys.modules if m.startswith('agent')))"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "['agent', 'agent.sdnotify']", r.stdout + r.stderr


def test_real_collector_notifies_ready_once_listening_and_stopping(notify_socket, tmp_path):
    """The collector unit is Type=notify: `nodewarden collector` says READY=1 once it listens, STOPPING=1 at SIGTERM."""
    notify_socket.settimeout(30.0)
    exe = os.path.join(os.path.dirname(sys.executable), "nodewarden")
    p = subprocess.Popen([exe, "collector", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "events.db")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msg = notify_socket.recv(4096).decode()
        assert msg.startswith("READY=1") and "listening on 127.0.0.1:" in msg
        p.terminate()
        assert "STOPPING=1" in notify_socket.recv(4096).decode()
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
