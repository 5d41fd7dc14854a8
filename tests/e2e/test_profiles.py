"""Behaviour profiles end to end (issue 13): a real container under the real agent learns its workload's
profile, which then alerts on (monitoring) or kills (protecting) what the workload never did; the profile
survives an agent restart, and a second agent (another node: its own state dir, the same collector) enforces
it on the first container of that workload it sees.

The workload is a fixed service script in an image built here: two busybox web servers on the container's
own loopback, and a loop that runs programs (date, wget, cat), fetches a page from one server and writes
under /tmp/app. It is a Deployment's pod as far as the agent can tell (ctr labels, as the CRI plugin sets
them: pod `svc-7d4b9c8f6-xxxxx` in namespace `nwprof`, container `svc`), so every replica shares one profile.
A control directory of the test's, bind-mounted read-only at /ctl, turns on what the learned profile lacks:
a program it never ran (/usr/bin/newtool), a connect to the other server's port, a write into a directory
it never wrote. `[ -e ]` is a shell builtin (a stat, no event), so the controls add nothing of their own.
/tmp/app/data is a host directory too: the test reads what the learned programs wrote, and newtool's marker.

The learning window is short through the policy (`profiles: {learn: 6s, quiet: 3s, ...}`): the loop's
behaviour is all there within its first pass, so the quiet period ends learning after about 3 s.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from tests.harness.containerd import unique_id
from tests.kernel.conftest import AgentProcess

pytestmark = pytest.mark.e2e

POD_NS, OWNER, CONTAINER = "nwprof", "svc", "svc"
TEMPLATE_HASH = "7d4b9c8f6"  # a ReplicaSet's pod-template-hash
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' name-suffix alphabet (rand.SafeEncodeString)

SERVICE = b"""#!/bin/sh
# The fixed service of tests/e2e/test_profiles.py (see its docstring).
[ -e /ctl/exec ] && /usr/bin/newtool
/bin/nc -h > /dev/null 2>&1  # a network tool: a bundled rule flags it, so the profile never learns it
/bin/httpd -p 127.0.0.1:8080 -h /www
/bin/httpd -p 127.0.0.1:8081 -h /www
while :; do
  /bin/date > /tmp/app/data/now
  /bin/wget -q -O /tmp/app/cache/index.html http://127.0.0.1:8080/index.html
  /bin/cat /tmp/app/cache/index.html > /dev/null
  [ -e /ctl/exec ] && /usr/bin/newtool
  [ -e /ctl/port ] && /bin/wget -q -O /dev/null http://127.0.0.1:8081/index.html
  [ -e /ctl/write ] && echo x > /tmp/app/new/file
  /bin/sleep 0.2
done
"""
# newtool's only act is its marker, in a directory the service writes anyway: its exec is the one new item
NEWTOOL = b"#!/bin/sh\necho ran > /tmp/app/data/newtool-ran\n"
NEW_EXEC, NEW_PEER, NEW_DIR = "/usr/bin/newtool", "127.0.0.1:8081", "/tmp/app/new"


def _policy(after: str, learn: str = "6s", quiet: str = "3s") -> str:
    return f"profiles: {{learn: {learn}, quiet: {quiet}, after_learning: {after}}}\n"


@pytest.fixture(scope="module")
def image(image_builder):
    return image_builder("nodewarden.test/profile-svc:1", {
        "/usr/bin/service": (SERVICE, 0o755),
        "/usr/bin/newtool": (NEWTOOL, 0o755),
        "/www/index.html": b"<html>hello</html>\n",
        "/tmp/app/cache/.keep": b"",
        "/tmp/app/new/.keep": b"",
    }, cmd=["/usr/bin/service"])


@pytest.fixture
def work():
    """A short directory of the test's own (unix socket paths are limited to 108 bytes)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with tempfile.TemporaryDirectory(prefix="nwprof-", dir="/tmp") as d:
        yield Path(d)


def _pod() -> str:
    return f"{OWNER}-{TEMPLATE_HASH}-" + "".join(random.choice(_SAFE) for _ in range(5))


class Replica:
    """One container of the workload: its id, pod name, data and control directories."""

    def __init__(self, containerd, image, base: Path, wrapper: str | None = None, controls: tuple[str, ...] = ()):
        self.containerd, self.pod, self.cid = containerd, _pod(), unique_id("prof")
        self.data, self.ctl = base / f"{self.cid}-data", base / f"{self.cid}-ctl"
        self.data.mkdir()
        self.ctl.mkdir()
        for c in controls:
            self.on(c)
        labels = {"io.kubernetes.pod.name": self.pod, "io.kubernetes.pod.namespace": POD_NS,
                  "io.kubernetes.container.name": CONTAINER}
        args = ["run", "-d", "--null-io", *(["--runc-binary", wrapper] if wrapper else []),
                "--mount", f"type=bind,src={self.data},dst=/tmp/app/data,options=rbind:rw",
                "--mount", f"type=bind,src={self.ctl},dst=/ctl,options=rbind:ro"]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        containerd.ctr(*args, image.name, self.cid, timeout=60)

    def on(self, control: str) -> None:
        (self.ctl / control).touch()

    def off(self, control: str) -> None:
        (self.ctl / control).unlink(missing_ok=True)

    @property
    def marker(self) -> Path:
        return self.data / "newtool-ran"

    def now(self) -> str:
        """What the loop's /bin/date last wrote ("" while the shell has truncated it and date has not run)."""
        try:
            return (self.data / "now").read_text()
        except OSError:
            return ""

    def remove(self) -> None:
        self.containerd.remove(self.cid)


def _agent(containerd, base: Path, name: str, policy: str, monkeypatch, *extra: str) -> AgentProcess:
    """`nodewarden run` with its own state dir (base/name), policy, gate socket and image cache."""
    (base / f"{name}.yaml").write_text(policy)
    monkeypatch.setenv("NODEWARDEN_AGENT_STATE_DIR", str(base / name))
    monkeypatch.setenv("NODEWARDEN_PROFILES_FLUSH_S", "1")  # profile files and collector pushes within a second
    monkeypatch.setenv("NODEWARDEN_IMAGEGATE_CACHE_PATH", str(base / f"{name}-cache.db"))
    monkeypatch.setenv("NODEWARDEN_ENFORCE_GATE_SOCKET", str(base / f"{name}-gate.sock"))
    monkeypatch.setenv("NODEWARDEN_ENFORCE_NRI", "false")
    return AgentProcess("--containerd-socket", str(containerd.socket), "--policy", str(base / f"{name}.yaml"),
                        *extra)


def _is_ours(r: dict) -> bool:
    return r.get("k8s.namespace.name") == POD_NS and r.get("container.name") == CONTAINER


def _changed_to(agent: AgentProcess, mode: str, timeout: float = 30.0) -> dict:
    (ch,) = agent.wait_for(lambda r: r["event.name"] == "profile.change" and _is_ours(r)
                           and r.get("profile.mode") == mode, timeout=timeout)
    return ch


def _deviations(agent: AgentProcess, cid: str) -> list[dict]:
    return agent.find(lambda r: r["event.name"] == "alert" and r.get("rule.id") == "behavior.deviation"
                      and r.get("container.id") == cid)


def _describe(alerts: list[dict]) -> list[str]:
    return [a.get("alert.output", "") for a in alerts]


def _blocks(agent: AgentProcess, cid: str) -> list[dict]:
    return agent.find(lambda r: r["event.name"] == "enforcement.block" and r.get("container.id") == cid)


def _seen(agent: AgentProcess, rep: Replica, timeout: float = 30.0) -> None:
    """The agent attributes the replica's events: its container table has it, so its listeners (the profiles'
    on_container, which covers a protecting profile's cgroup) have run or are about to."""
    agent.wait_for(lambda r: r["event.name"] == "process.exec" and r.get("container.id") == rep.cid
                   and r.get("process.executable.path") == "/bin/date", timeout=timeout)
    time.sleep(0.5)


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "agent.cli", "profile", "--state-dir", str(state), *args],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"nodewarden profile {' '.join(args)}: rc {p.returncode}: {p.stderr.strip()}"
    return p


def _export(state: Path, key: str) -> dict:
    return orjson.loads(_cli(state, "export", key).stdout)


def _learned(doc: dict) -> dict[str, set[str]]:
    return {kind: set(items) for kind, items in doc["items"].items() if items}


def _learned_ones_run(rep: Replica, seconds: float = 1.5) -> None:
    """The loop's /bin/date keeps writing: the shell truncates the file, date fills it (killed, it would stay
    empty), and the second changes."""
    deadline, seen = time.monotonic() + seconds + 3.0, set()
    while time.monotonic() < deadline and len(seen) < 2:
        if v := rep.now():
            seen.add(v)
        time.sleep(0.1)
    assert len(seen) >= 2, f"the learned /bin/date did not run on: {seen}"


def _assert_killed_before_it_ran(agent: AgentProcess, rep: Replica, state: Path, also: tuple[str, ...] = ()) -> dict:
    """newtool is killed at exec (as are `also`, and nothing else of the replica's)."""
    try:
        b = agent.wait_for(lambda r: r["event.name"] == "enforcement.block" and r.get("container.id") == rep.cid
                           and r.get("process.executable.path") == NEW_EXEC, timeout=20)[0]
    except AssertionError as e:  # say what the agent's profiles look like, not only that no block came
        changes = [(r.get("profile.mode"), r.get("profile.reason")) for r in agent.records
                   if r["event.name"] == "profile.change"]
        raise AssertionError(f"{e}; newtool ran: {rep.marker.exists()}; profile changes {changes}; "
                             f"status {agent.status(str(state)).get('profiles')}") from None
    assert b["enforcement.point"] == "kernel.exec" and b["enforcement.outcome"] == "killed", b
    assert b["rule.category"] == "profile" and b["k8s.pod.name"] == rep.pod, b
    # SIGKILL, at exec: the process's exit says so
    agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == b["process.pid"]
                   and r.get("process.exit.signal") == 9, timeout=10)
    time.sleep(1.0)  # several passes of the loop, each one's newtool killed at exec
    assert not rep.marker.exists(), "newtool ran an instruction (its marker is there)"
    assert {x["process.executable.path"] for x in _blocks(agent, rep.cid)} == {NEW_EXEC, *also}
    return b


def test_learn_then_alert_then_kill_and_survive_a_restart(containerd, image, work, monkeypatch):
    agent = _agent(containerd, work, "a", _policy("monitoring"), monkeypatch)
    rep = None
    try:
        rep = Replica(containerd, image, work)
        ch = _changed_to(agent, "monitoring")
        key = ch["profile.key"]
        assert key.startswith(f"{POD_NS}/Deployment/{OWNER}/{CONTAINER}@"), key
        assert ch["profile.previous_mode"] == "learning" and ch["profile.reason"], ch
        assert ch["container.image.name"] == image.name
        doc = _export(work / "a", key)
        learned = _learned(doc)
        for exe in ("/usr/bin/service", "/bin/httpd", "/bin/date", "/bin/wget", "/bin/cat", "/bin/sleep"):
            assert exe in learned.get("exec", set()), (exe, learned.get("exec"))
        assert NEW_EXEC not in learned["exec"]
        # what a rule flagged is not learned
        assert agent.find(lambda r: r["event.name"] == "alert" and r.get("rule.id") == "nw.network_tool_run"
                          and r.get("container.id") == rep.cid)
        assert "/bin/nc" not in learned["exec"]
        assert any(p.endswith("127.0.0.1:8080") for p in learned.get("peer", ())), learned.get("peer")
        assert not any(p.endswith(NEW_PEER) for p in learned.get("peer", ()))
        assert {"/tmp/app/data", "/tmp/app/cache"} <= learned.get("write", set()), learned.get("write")
        assert NEW_DIR not in learned["write"]

        # Locked: the same behaviour, pass after pass, raises nothing.
        time.sleep(2.5)
        _learned_ones_run(rep)
        assert _describe(_deviations(agent, rep.cid)) == []

        # Each new item raises exactly one alert, however often it recurs (once per item).
        for c in ("exec", "port", "write"):
            rep.on(c)
        agent.wait_for(lambda r: r["event.name"] == "alert" and r.get("rule.id") == "behavior.deviation"
                       and r.get("container.id") == rep.cid, count=3, timeout=20)
        time.sleep(2.0)  # ten more passes with the new behaviours
        devs = _deviations(agent, rep.cid)
        assert len(devs) == 3, _describe(devs)
        by_item = {}
        for d in devs:
            out = d["alert.output"]
            hits = [item for item in (NEW_EXEC, NEW_PEER, NEW_DIR) if item in out]
            assert len(hits) == 1, out
            by_item[hits[0]] = d
            assert key in out and "stable for" in out, out
            assert (d["container.id"], d["k8s.pod.name"], d["k8s.namespace.name"], d["container.image.name"]) == (
                rep.cid, rep.pod, POD_NS, image.name), d
        assert set(by_item) == {NEW_EXEC, NEW_PEER, NEW_DIR}, _describe(devs)
        assert by_item[NEW_EXEC]["event.severity"] == "high"
        assert by_item[NEW_EXEC]["process.executable.path"] == NEW_EXEC
        assert by_item[NEW_PEER]["network.peer.port"] == 8081
        assert rep.marker.exists()  # monitoring only alerts: newtool ran
        for c in ("exec", "port", "write"):
            rep.off(c)

        # Protecting, by hand: the new exec dies at exec, before its first instruction; the learned ones run.
        _cli(work / "a", "lock", key, "--mode", "protecting")
        ch = _changed_to(agent, "protecting", timeout=10)
        assert ch["profile.previous_mode"] == "monitoring"
        time.sleep(0.5)
        rep.marker.unlink()
        rep.on("exec")
        _assert_killed_before_it_ran(agent, rep, work / "a")
        _learned_ones_run(rep)
        rep.off("exec")
        time.sleep(0.5)

        # A restart: the profile comes back from the state dir, whole, and the kernel enforces it again.
        assert agent.stop() == 0
        before = _export(work / "a", key)
        assert before["mode"] == "protecting" and before["locked_by"] == "user"
        agent = _agent(containerd, work, "a", _policy("monitoring"), monkeypatch)
        _seen(agent, rep)
        after = _export(work / "a", key)
        assert (after["mode"], _learned(after)) == ("protecting", _learned(before))
        assert _learned(after) == learned
        rep.on("exec")
        _assert_killed_before_it_ran(agent, rep, work / "a")
        _learned_ones_run(rep)
        assert agent.proc.poll() is None
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        if rep is not None:
            rep.remove()


def _collector_doc(address: str, key: str) -> dict | None:
    import grpc

    from nwwire.genproto import load

    cpb, gpb = load("nodewarden.v1.collector_pb2"), load("nodewarden.v1.collector_pb2_grpc")
    with grpc.insecure_channel(address) as ch:
        reply = gpb.ProfilesStub(ch).Get(cpb.ProfileGet(key=key), timeout=5)
    return orjson.loads(reply.doc) if reply.doc else None


def test_a_profile_locked_on_one_node_protects_the_first_replica_on_another(containerd, image, work, monkeypatch):
    from agent.enforce.runc_wrapper import install
    from tests.e2e.test_transport_util import start_collector_process

    address = f"unix:{work}/collector.sock"
    collector = start_collector_process(address, work / "collector.db")
    agent = None
    reps: list[Replica] = []
    try:
        # Node A learns; its policy locks into protecting on its own after learning.
        agent = _agent(containerd, work, "a", _policy("protecting"), monkeypatch, "--collector", address)
        reps.append(Replica(containerd, image, work))
        ch = _changed_to(agent, "protecting")
        key = ch["profile.key"]
        deadline = time.monotonic() + 15
        while (doc := _collector_doc(address, key)) is None or doc.get("mode") != "protecting":
            assert time.monotonic() < deadline, f"the collector's profile of {key}: {doc}"
            time.sleep(0.3)
        assert "/bin/date" in doc["items"]["exec"] and NEW_EXEC not in doc["items"]["exec"]
        assert agent.stop() == 0
        reps.pop().remove()

        # Node B: a state dir with no profiles, a policy that would learn for an hour. The first replica it sees
        # is created through the OCI gate (runc create asks the agent before the container runs); its entrypoint
        # runs newtool at once, and newtool must die there: the collector's profile is in the kernel already.
        agent = _agent(containerd, work, "b", _policy("monitoring", learn="1h", quiet="1h"), monkeypatch,
                       "--collector", address)
        assert not list((work / "b" / "profiles").glob("*.json"))
        wrapper = install(str(work / "bin"), socket_path=str(work / "b-gate.sock"), timeout=12.0, fail="closed")
        rep = Replica(containerd, image, work, wrapper=wrapper, controls=("exec",))
        reps.append(rep)
        # the entrypoint's nc, which a rule flagged while A learned, was never learned: it dies there too
        b = _assert_killed_before_it_ran(agent, rep, work / "b", also=("/bin/nc",))
        assert b["k8s.pod.name"] == rep.pod and b["container.image.name"] == image.name
        _learned_ones_run(rep)
        ch = _changed_to(agent, "protecting", timeout=5)
        assert ch["profile.key"] == key and "collector" in ch["profile.reason"], ch
        mine = _export(work / "b", key)
        assert mine["mode"] == "protecting" and "/bin/date" in mine["items"]["exec"]
        time.sleep(2.0)  # B's own pushes (flush_s 1) must not undo the lock for the cluster
        assert _collector_doc(address, key)["mode"] == "protecting"
        assert agent.proc.poll() is None
    finally:
        if agent is not None and agent.proc.poll() is None:
            agent.stop()
        for r in reps:
            r.remove()
        collector.terminate()
        collector.wait(10)
