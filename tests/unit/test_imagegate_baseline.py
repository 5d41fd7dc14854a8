"""Baseline namespace checks against real namespace files: a namespace joined by path is the
host's only when its inode is the host's (CRI containers join their pod sandbox's by path); a
path that cannot be read is its own, lower "cannot verify" finding.

The host's namespaces are pid 1's by default; where pid 1's are unreadable (here: a non-dumpable
init) the tests name the reference with host_ns_dir, the test's own namespaces, which are the ones
outside the sandbox it makes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from agent.imagegate import baseline
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.decide import decide
from agent.imagegate.model import Severity
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import open_path
from agent.policy.model import ImagePolicy, Thresholds
from tests.unit.imagegate_helpers import busybox_layer, write_layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")

SELF = "/proc/self/ns"
FILES = {"network": "net", "pid": "pid", "ipc": "ipc", "uts": "uts"}
HARDENED = {
    "process": {"user": {"uid": 1000}, "noNewPrivileges": True, "apparmorProfile": "default"},
    "root": {"readonly": True},
    "linux": {
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"},
        "resources": {"memory": {"limit": 1 << 28}, "pids": {"limit": 100}},
    },
}


@pytest.fixture(scope="module")
def sandbox():
    """A pod sandbox's stand-in: a process in new network, ipc, uts and pid namespaces."""
    p = subprocess.Popen(["unshare", "-n", "-i", "-u", "-p", "-f", "--kill-child", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        child = None
        while time.monotonic() < deadline:
            kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
            if kids and os.stat(f"/proc/{kids[0]}/ns/net").st_ino != os.stat(f"{SELF}/net").st_ino:
                child = int(kids[0])
                break
            time.sleep(0.02)
        assert child, "unshare made no sandbox"
        yield child
    finally:
        p.kill()
        p.wait(timeout=10)


def _spec(paths: dict[str, str | None]) -> dict:
    ns = [{"type": t, **({"path": p} if p else {})} for t, p in paths.items()]
    return {**HARDENED, "linux": {**HARDENED["linux"], "namespaces": [*ns, {"type": "mount"}]}}


def _rules(findings):
    return {f.rule: f for f in findings}


def test_sandbox_namespaces_are_the_pods_not_the_hosts(sandbox):
    spec = _spec({t: f"/proc/{sandbox}/ns/{f}" for t, f in FILES.items()})
    assert baseline.check_spec(spec, host_ns_dir=SELF) == []


def test_host_namespace_by_path_is_host(sandbox):
    got = _rules(baseline.check_spec(_spec({t: f"{SELF}/{f}" for t, f in FILES.items()}), host_ns_dir=SELF))
    assert set(got) == {f"host-{t}-namespace" for t in FILES}
    assert got["host-network-namespace"].severity == Severity.HIGH and "/proc/self/ns/net" in \
        got["host-network-namespace"].detail
    assert got["host-uts-namespace"].severity == Severity.LOW


def test_absent_is_host_and_new_is_own(sandbox):
    got = _rules(baseline.check_spec(_spec({"network": None, "uts": None}), host_ns_dir=SELF))
    assert set(got) == {"host-pid-namespace", "host-ipc-namespace"}


def test_unreadable_path_cannot_be_verified(tmp_path, sandbox):
    missing = str(tmp_path / "gone")
    got = _rules(baseline.check_spec(_spec({"network": missing, "uts": missing, "pid": None, "ipc": None}),
                                     host_ns_dir=SELF))
    assert set(got) == {"unverified-network-namespace", "unverified-uts-namespace"}
    assert got["unverified-network-namespace"].severity == Severity.MEDIUM  # below host-network's HIGH
    assert got["unverified-uts-namespace"].severity == Severity.INFO
    assert missing in got["unverified-network-namespace"].detail
    # no readable reference: every joined namespace is "cannot verify", never "host"
    got = _rules(baseline.check_spec(_spec({t: f"{SELF}/{f}" for t, f in FILES.items()}),
                                     host_ns_dir=str(tmp_path)))
    assert set(got) == {f"unverified-{t}-namespace" for t in FILES}


def test_paths_under_proc_read_through_proc_root(tmp_path, sandbox):
    # A fixture proc root (the host's /proc at /host/proc in a DaemonSet): its pid 1 is the test
    # process and its pid <sandbox> the sandbox, both real namespace files behind the links.
    root = tmp_path / "hostproc"
    (root / "1").mkdir(parents=True)
    os.symlink(SELF, root / "1" / "ns")
    os.symlink(f"/proc/{sandbox}", root / str(sandbox))
    assert baseline.host_namespace("/proc/1/ns/net", "network", str(root)) is True
    assert baseline.host_namespace(f"/proc/{sandbox}/ns/net", "network", str(root)) is False
    assert baseline.host_namespace("/proc/424242/ns/net", "network", str(root)) is None
    assert baseline.host_namespace("relative/ns", "network", str(root)) is None
    # A CNI network namespace bind-mounted in the host's /var/run/netns, which the agent's own
    # mount namespace does not show: read through the host's root, proc_root/1/root.
    netns = f"nw-test-{os.getpid()}"
    (tmp_path / "hostroot" / "run" / "netns").mkdir(parents=True)
    os.symlink(f"/proc/{sandbox}/ns/net", tmp_path / "hostroot" / "run" / "netns" / netns)
    os.symlink(tmp_path / "hostroot", root / "1" / "root")
    assert not os.path.exists(f"/run/netns/{netns}")
    assert baseline.host_namespace(f"/run/netns/{netns}", "network", str(root)) is False
    assert baseline.host_namespace("/run/netns/none-such", "network", str(root)) is None
    assert baseline.host_namespace(5, "network", str(root)) is None


def _host_readable() -> bool:
    if os.access("/proc/1/ns/net", os.R_OK):
        return True
    try:
        return open("/proc/2/comm").read().strip() == "kthreadd" and os.access("/proc/2/ns/net", os.R_OK)
    except OSError:
        return False


@pytest.mark.skipif(not _host_readable(), reason="neither pid 1's nor kthreadd's namespaces readable here")
def test_default_reference_is_the_hosts(sandbox):
    # The tests run in the host's namespaces: ours are the host's, by pid 1's or kthreadd's reference.
    assert baseline.host_namespace("/proc/self/ns/net", "network") is True
    assert baseline.host_namespace(f"/proc/{sandbox}/ns/net", "network") is False


def test_pod_container_not_blocked_by_a_baseline_block_at_high(tmp_path, sandbox):
    built = write_layout(tmp_path, [busybox_layer()])
    scanner = ImageScanner(ImageGateConfig(cache_path="", advisory_db=""), host_ns_dir=SELF)
    policy = ImagePolicy(categories={**ImagePolicy().categories,
                                     "baseline": Thresholds(alert=Severity.MEDIUM, block=Severity.HIGH)})
    pod = _spec({t: f"/proc/{sandbox}/ns/{f}" for t, f in FILES.items()})
    assert decide(scanner.scan(open_path(str(built.path)), pod), policy).verdict == "allow"
    host = _spec({t: f"{SELF}/{f}" for t, f in FILES.items()})
    v = decide(scanner.scan(open_path(str(built.path)), host), policy)
    assert v.verdict == "block" and "host-" in v.reason


def _fake_proc(tmp_path, pid2_comm: str):
    """A proc root whose pid 1 has no readable namespaces and whose pid 2 is `pid2_comm` with the real
    namespaces of this test (links to /proc/self/ns/*, as the host's would be)."""
    root = tmp_path / f"proc-{pid2_comm}"
    (root / "1" / "ns").mkdir(parents=True)
    (root / "2" / "ns").mkdir(parents=True)
    (root / "2" / "comm").write_text(pid2_comm + "\n")
    for f in FILES.values():
        os.symlink(f"{SELF}/{f}", root / "2" / "ns" / f)
    return root


def test_host_reference_falls_back_to_kthreadd(tmp_path, sandbox):
    """Where pid 1's namespaces cannot be read (this VM), kthreadd's are the host's: a joined host
    namespace is still recognised, and a pod's is still its own."""
    root = _fake_proc(tmp_path, "kthreadd")
    host_net = f"{root}/2/ns/net"
    assert baseline.host_namespace(host_net, "network", str(root)) is True
    assert baseline.host_namespace(f"{root}/2/ns/net", "network", str(_fake_proc(tmp_path, "sleep"))) is None
