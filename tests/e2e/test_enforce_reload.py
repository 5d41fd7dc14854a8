"""A policy reload reaches both pre-start gates' timeout action (issue 9: agent/node.py copied it once
at start, so a reload to `on_timeout: {action: block}` still allowed by timeout).

The gates are the ones Agent wires, over real sockets: the NRI plugin against the stand-in runtime of
test_nri_plugin.py, the OCI gate asked the way nodewarden-runc asks it. containerd is a socket that
accepts and never answers, so no verdict is ever ready and the gate's timeout action decides; the
policy file is rewritten and the store's own reload thread picks it up.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from agent.config import Config
from agent.enforce import runc_wrapper as rw
from agent.node import Agent
from tests.e2e.test_nri_plugin import StandInRuntime

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
