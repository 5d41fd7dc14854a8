"""The pre-start gates as Agent wires them, over real sockets: the NRI plugin against the stand-in runtime
of test_nri_plugin.py, the OCI gate asked the way nodewarden-runc asks it. containerd is a socket that
accepts and never answers, so no verdict is ever ready and the gate's timeout action decides.

- A policy reload reaches both gates' timeout action (issue 9: agent/node.py copied it once at start, so a
  reload to `on_timeout: {action: block}` still allowed by timeout). The policy file is rewritten and the
  store's own reload thread picks it up.
- Exec rules from a container's create on, through NRI: CreateContainer carries linux.cgroups_path, and the
  container's cgroup is under the rules from its mkdir on, before anything in it can exec, whatever the
  verdict's delay. The test plays runc's part: it makes the cgroup directory (systemd driver form, as the
  kubelet sends it, and cgroupfs form) and execs in it.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from agent.config import Config
from agent.enforce import nri
from agent.enforce import runc_wrapper as rw
from agent.enrich.cgroups import cgroup_path_from_spec
from agent.node import Agent
from tests.e2e.test_nri_plugin import StandInRuntime
from tests.harness.cgexec import run_in

pytestmark = pytest.mark.e2e

POLICY = "on_timeout: {{after: 10s, action: {action}}}\n"  # longer than either gate waits


@pytest.fixture
def short_dir():
    # unix socket paths are limited to 108 bytes: keep them out of pytest's deep tmp paths.
    with tempfile.TemporaryDirectory(prefix="nwrl-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def silent_containerd(short_dir):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(short_dir / "containerd.sock"))
    s.listen(64)
    yield str(short_dir / "containerd.sock")
    s.close()


@pytest.fixture
def make_agent(short_dir, silent_containerd):
    made = []

    def make(**enforce) -> Agent:
        cfg = Config()
        cfg.agent.state_dir = str(short_dir / "state")
        cfg.agent.policy_file = str(short_dir / "policy.yaml")
        cfg.containers.containerd_socket = silent_containerd
        cfg.imagegate.cache_path = ""
        cfg.imagegate.advisory_db = ""
        cfg.enforce.nri_socket = str(short_dir / "nri.sock")
        cfg.enforce.gate_socket = str(short_dir / "gate.sock")
        for k, v in enforce.items():
            setattr(cfg.enforce, k, v)
        a = Agent(cfg, lambda records: None)
        a.policy.interval = 0.1
        made.append(a)
        return a

    yield make
    for a in made:
        for part in (a.nri, a.oci, a.gate, a.policy):
            if part is not None:
                part.stop()


def _reload(agent: Agent, path: Path, action: str) -> None:
    n = agent.policy.reloads
    time.sleep(0.01)  # a new mtime even on coarse clocks
    path.write_text(POLICY.format(action=action) + f"# {time.time_ns()}\n")
    deadline = time.monotonic() + 10
    while agent.policy.reloads == n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.policy.current.timeout_action == action


def test_reload_reaches_the_nri_timeout_action(short_dir, make_agent):
    (short_dir / "policy.yaml").write_text(POLICY.format(action="allow"))
    agent = make_agent(oci_gate=False)
    runtime = StandInRuntime(str(short_dir / "nri.sock")).start()
    try:
        agent.policy.start()
        agent.gate.start()
        agent.nri.start()
        assert runtime.synced.wait(10)
        code, msg, _ = runtime.create(name="first", image="reg.example/first:1")
        assert code == 0, msg  # no verdict in time; allowed by the policy's timeout action
        _reload(agent, short_dir / "policy.yaml", "block")
        code, msg, _ = runtime.create(name="second", image="reg.example/second:1")
        assert code == 14 and "timeout_action=block" in msg, (code, msg)  # retriable: UNAVAILABLE
        _reload(agent, short_dir / "policy.yaml", "allow")
        code, msg, _ = runtime.create(name="third", image="reg.example/third:1")
        assert code == 0, (code, msg)
        c = agent.nri.status().counters  # each image its own scan, none finished: every answer a timeout
        assert (c["timeout_allowed"], c["timeout_blocked"]) == (2, 1)
    finally:
        runtime.stop()


def test_reload_reaches_the_oci_gate_timeout_action(short_dir, make_agent):
    if os.geteuid() != 0:
        pytest.skip("the OCI gate answers root peers only")
    (short_dir / "policy.yaml").write_text(POLICY.format(action="allow"))
    agent = make_agent(nri=False)
    agent.policy.start()
    agent.gate.start()
    agent.oci.start()
    req = {"v": 1, "op": "create", "namespace": "default", "id": "c1", "bundle": "/b/default/c1",
           "image": "reg.example/app:1", "deadline_ms": 1000}
    reply, why = rw.ask(agent.cfg.enforce.gate_socket, req, 2.0)
    assert why == "" and reply["allow"] is True and reply["reason"] == "timeout", reply
    _reload(agent, short_dir / "policy.yaml", "block")
    reply, _ = rw.ask(agent.cfg.enforce.gate_socket, {**req, "id": "c2", "image": "reg.example/other:1"}, 2.0)
    assert reply["allow"] is False and "timeout action: block" in reply["message"], reply
    assert agent.oci.status()["timeout_action"] == "block"


def _rmdirs(root: str, rel: str) -> None:
    parts = rel.strip("/").split("/")
    for i in range(len(parts), 0, -1):
        d = os.path.join(root, *parts[:i])
        if os.path.isdir(d):
            with open(os.path.join(root, "cgroup.procs"), "w") as f:
                for pid in open(os.path.join(d, "cgroup.procs")).read().split():
                    f.write(pid)
            os.rmdir(d)


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_nri_create_covers_the_cgroup_before_its_first_exec(short_dir, make_agent, driver):
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF)")
    (short_dir / "policy.yaml").write_text("on_timeout: {after: 10s, action: allow}\n"
                                           "runtime:\n  deny_exec:\n    - path: /bin/true\n")
    agent = make_agent(oci_gate=False)
    tag = uuid.uuid4().hex[:8]
    spec = (f"nwtest{tag}-pod1.slice:cri-containerd:{tag}" if driver == "systemd" else f"/nwtest{tag}/{tag}")
    rel = cgroup_path_from_spec(spec)
    root = agent.enforcer._root()
    runtime = StandInRuntime(str(short_dir / "nri.sock")).start()
    agent.probes.start()
    try:
        agent.enforcer.start()
        agent.gate.start()
        agent.nri.start()
        assert runtime.synced.wait(10)
        code, msg, _ = runtime.create(name="app", image=f"reg.example/app-{tag}:1",
                                      linux=nri.pb().LinuxContainer(cgroups_path=spec))
        assert code == 0, msg  # allowed by the timeout action: the verdict never came
        os.makedirs(os.path.join(root, rel.lstrip("/")))  # what runc does next
        path = os.path.join(root, rel.lstrip("/"))
        assert run_in(path, ["/bin/true"]) == -signal.SIGKILL  # covered by the kernel at the mkdir
        assert run_in(path, ["/bin/echo"]) == 0
    finally:
        runtime.stop()
        _rmdirs(root, rel)
        agent.probes.stop()
