"""The NRI gate on the real CRI + NRI path: containerd 2.3.4 (NRI v0.12.0) driven with crictl, the real
agent (`python -m agent.cli run`) as its NRI plugin. Fail-open containerd (the bundle's config.toml).

One containerd for the module; one agent at a time (AgentSlot), restarted only when a test needs
another policy or stopped it. The bundle comes from $NODEWARDEN_CONTAINERD2 (default
../shared/containerd2/); without it every test here skips, saying so. docs/nri.md says what each
test shows.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from tests.harness.containerd import unique_id, wait_until
from tests.harness.containerd2 import AgentSlot, missing_requirements, running_containerd2
from tests.harness.oci import build_image
from tests.unit.imagegate_helpers import EICAR

_WHY = missing_requirements()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_WHY is not None, reason=f"containerd 2.x CRI + NRI: {_WHY}")]

BLOCK_MALWARE = "categories:\n  malware: {alert: low, block: high}\n"
# A slow image's scan, begun when it is imported, ends ~0.5-1 s after the create that follows the import
# here; the pause image's (cached) takes a few ms.
TIMEOUT_ALLOW = BLOCK_MALWARE + "on_timeout: {after: 50ms, action: allow}\n"
TIMEOUT_BLOCK = BLOCK_MALWARE + "on_timeout: {after: 200ms, action: block}\n"
REQUEST_TIMEOUT_S = 2.0  # plugin_request_timeout in the bundle's config.toml
HOST_NAMESPACE_RULES = {"host-pid-namespace", "host-ipc-namespace", "host-uts-namespace", "host-network-namespace"}


@pytest.fixture(scope="module")
def cd(tmp_path_factory):
    with running_containerd2(tmp_path_factory.mktemp("cd2")) as c:
        yield c


@pytest.fixture(scope="module")
def slot(cd, tmp_path_factory):
    s = AgentSlot(cd, tmp_path_factory.mktemp("cd2-agents"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def build(cd, tmp_path_factory):
    out = tmp_path_factory.mktemp("cd2-images")

    def make(name: str, extra_files=None):
        safe = name.replace("/", "_").replace(":", "_")
        return cd.import_image(build_image(out / f"{safe}.tar", name, extra_files))

    return make


@pytest.fixture(scope="module")
def clean(build):
    return build("nodewarden.test/cri-clean:1")


@pytest.fixture(scope="module")
def eicar(build):
    return build("nodewarden.test/cri-eicar:1", {"/opt/eicar.com": EICAR})


@pytest.fixture(scope="module")
def slow_eicars(tmp_path_factory):
    """Two EICAR images with ~128 MB of incompressible files each to hash and match, built but not
    imported: the agent scans an image as soon as containerd has it, so a test imports one and
    creates a container of it at once, while that scan still runs."""
    out = tmp_path_factory.mktemp("cd2-slow")
    yield [build_image(out / f"slow{n}.tar", f"nodewarden.test/cri-slow-eicar-{n}:1",
                       {"/opt/eicar.com": EICAR, **{f"/opt/pad{i}": os.urandom(32 << 20) for i in range(4)}})
           for n in range(2)]
    shutil.rmtree(out, ignore_errors=True)  # 2 x 128 MB that pytest would keep for three runs


@pytest.fixture
def pod(cd):
    pod_id = cd.run_pod()
    yield pod_id
    cd.remove_pod(pod_id)


def _verdict_of(agent, cid: str, timeout: float = 30.0) -> dict:
    return agent.wait_for(lambda r: r.get("event.name") == "image.verdict" and r.get("container.id") == cid,
                          timeout=timeout)


def _wait_state(cd, cid: str, state: str, timeout: float = 20.0) -> str:
    return wait_until(lambda: cd.state(cid) == state and state, timeout=timeout, interval=0.1) or cd.state(cid)


# --- (a), (b): the gate itself ------------------------------------------------------------------


def test_clean_image_is_created_and_runs(cd, slot, pod, clean):
    agent = slot.use(BLOCK_MALWARE)
    c = cd.create(pod, clean)
    assert c.ok, c.error
    cd.start_container(c.id)
    assert _wait_state(cd, c.id, "CONTAINER_RUNNING") == "CONTAINER_RUNNING"
    assert _verdict_of(agent, c.id)["image.verdict"] in ("allow", "alert")
    assert not agent.find(lambda r: r.get("event.name") == "enforcement.block")


def test_eicar_create_fails_naming_the_verdict(cd, slot, pod, eicar):
    agent = slot.use(BLOCK_MALWARE)
    name = unique_id("eicar")
    c = cd.create(pod, eicar, name=name)
    assert not c.ok, "CreateContainer of an EICAR image succeeded"
    assert "PermissionDenied" in c.error and "failed to get NRI adjustment" in c.error, c.error
    assert f"nodewarden: container '{name}'" in c.error and "image verdict block: malware/" in c.error, c.error
    assert "/opt/eicar.com" in c.error, c.error
    block = agent.wait_for(lambda r: r.get("event.name") == "enforcement.block" and r.get("container.name") == name)
    assert block["enforcement.point"] == "nri.create_container"
    assert block["enforcement.action"] == "deny"
    assert block["container.image.name"] == eicar.name
    assert block["enforcement.reason"].startswith("image verdict block: malware/")
    assert name not in cd.crictl("ps", "-a", "-o", "json").stdout  # nothing was created


# --- (c): a verdict not ready in time -----------------------------------------------------------


def test_timeout_allow_creates_then_kills_a_blocked_image(cd, slot, pod, slow_eicars):
    """Created by the timeout action; the block verdict comes later, when the container runs, and the
    post-start kill ends it (or, had it come before the start, NRI's StartContainer would refuse it)."""
    agent = slot.use(TIMEOUT_ALLOW)
    name = unique_id("late")
    c = cd.create(pod, cd.import_image(slow_eicars[0]), name=name)
    assert c.ok, f"timeout action allow, yet CreateContainer failed: {c.error}"
    assert c.seconds < REQUEST_TIMEOUT_S, c.seconds
    started = cd.start_container(c.id, check=False)
    if started.returncode != 0:
        assert "image verdict block: malware/" in started.stderr, started.stderr
        return
    verdict = agent.wait_for(lambda r: r.get("event.name") == "image.verdict" and r.get("container.id") == c.id
                             and r.get("image.verdict") == "block", timeout=60)
    block = agent.wait_for(lambda r: r.get("event.name") == "enforcement.block" and r.get("container.id") == c.id,
                           timeout=15)
    assert block["enforcement.point"] == "containerd.kill" and block["enforcement.outcome"] == "killed", (
        block, verdict["image.scan.duration_ms"])
    assert _wait_state(cd, c.id, "CONTAINER_EXITED") == "CONTAINER_EXITED"


def test_timeout_block_fails_create_with_a_retriable_error(cd, slot, slow_eicars):
    # The post-start kill off: with action block, the gate also sends the block timeout verdict of every
    # running container whose scan waits behind a slow one (the pod sandbox too), and the post-start
    # kill acts on it. Only the pre-start answer is under test here.
    agent = slot.use(TIMEOUT_BLOCK, env={"NODEWARDEN_ENFORCE_POST_START_KILL": "false"})
    pod_id = cd.run_pod()
    try:
        _refused_then_judged(cd, agent, pod_id, cd.import_image(slow_eicars[1]))
    finally:
        cd.remove_pod(pod_id)


def _refused_then_judged(cd, agent, pod_id, image) -> None:
    name = unique_id("wait")
    c = cd.create(pod_id, image, name=name)
    assert not c.ok, "timeout action block, yet CreateContainer succeeded"
    # UNAVAILABLE, not PERMISSION_DENIED: the kubelet retries CreateContainer with backoff.
    assert "code = Unavailable" in c.error and "PermissionDenied" not in c.error, c.error
    assert "scan not finished after 0." in c.error and "on_timeout.action block" in c.error, c.error
    assert c.seconds < REQUEST_TIMEOUT_S, c.seconds
    block = agent.wait_for(lambda r: r.get("event.name") == "enforcement.block" and r.get("container.name") == name)
    assert block["enforcement.point"] == "nri.create_container"
    # The kubelet's retries: refused as early while the scan runs, then for what the image is.
    deadline, again = time.monotonic() + 60, c
    while "code = Unavailable" in again.error and time.monotonic() < deadline:
        time.sleep(0.5)
        again = cd.create(pod_id, image, name=name)
    assert not again.ok and "PermissionDenied" in again.error and "malware/" in again.error, again.error


# --- (h): CRI pod containers join the sandbox's namespaces by path -----------------------------


def test_pod_container_has_no_host_namespace_findings(cd, slot, clean):
    """A pod with its own network namespace: its containers join the sandbox's pid, ipc, uts and
    network namespaces by path, none of them the host's, so the baseline must not say otherwise."""
    agent = slot.use(BLOCK_MALWARE)
    pod_id = cd.run_pod(host_network=False)
    try:
        c = cd.create(pod_id, clean)
        assert c.ok, c.error
        cd.start_container(c.id)
        rules = {f["rule"] for f in _verdict_of(agent, c.id).get("image.findings", [])}
        assert not rules & HOST_NAMESPACE_RULES, sorted(rules & HOST_NAMESPACE_RULES)
        if _host_namespaces_readable():  # else the agent cannot compare, and says so (unverified-*)
            assert not {r for r in rules if r.startswith("unverified-")}, sorted(rules)
    finally:
        cd.remove_pod(pod_id)


def test_host_network_pod_container_shares_only_the_host_network(cd, slot, pod, clean):
    """The control: a host-network pod's container does share the host's network namespace (joined by
    path, through the sandbox), but its pid and ipc namespaces are the sandbox's."""
    agent = slot.use(BLOCK_MALWARE)
    c = cd.create(pod, clean)
    assert c.ok, c.error
    cd.start_container(c.id)
    rules = {f["rule"] for f in _verdict_of(agent, c.id).get("image.findings", [])}
    assert not rules & {"host-pid-namespace", "host-ipc-namespace"}, sorted(rules)
    if _host_namespaces_readable():
        assert "host-network-namespace" in rules, sorted(rules)
    else:  # neither pid 1 nor kthreadd shows its namespaces: the agent says it cannot tell
        assert "unverified-network-namespace" in rules, sorted(rules)


def _host_namespaces_readable() -> bool:
    """Whether the agent has a reference for the host's namespaces here (pid 1's, else kthreadd's)."""
    from agent.imagegate.baseline import host_namespace

    return host_namespace("/proc/self/ns/net", "network") is not None  # the tests run in the host's


# --- (f): containerd restarted -----------------------------------------------------------------


def test_plugin_reconnects_after_containerd_restart_and_blocks_again(cd, slot, eicar):
    agent = slot.use(BLOCK_MALWARE)
    cd.cleanup()  # no tasks across the restart: their shims would outlive a failed test
    since = cd.log_size()
    cd.restart()
    assert cd.wait_plugin(since, timeout=30), "the plugin did not register again after containerd restarted"
    assert any("nri: disconnected" in line for line in agent.stderr), agent.stderr[-20:]
    pod_id = cd.run_pod()
    try:
        name = unique_id("eicar")
        c = cd.create(pod_id, eicar, name=name)
        assert not c.ok and "image verdict block: malware/" in c.error, c.error
        agent.wait_for(lambda r: r.get("event.name") == "enforcement.block" and r.get("container.name") == name)
    finally:
        cd.remove_pod(pod_id)


# --- (d): the agent away: fail-open, and never a wait past the request timeout ------------------


def test_agent_stopped_fails_open_without_waiting(cd, slot, pod, eicar):
    """Fail-open (no validator): with the agent gone, containerd creates without asking it, at once."""
    slot.use(BLOCK_MALWARE)
    since = cd.log_size()
    slot.stop()
    assert wait_until(lambda: "10-nodewarden" in cd.log_since(since) and "closed" in cd.log_since(since), 10)
    c = cd.create(pod, eicar)
    assert c.ok, f"fail-open, yet CreateContainer failed with the agent stopped: {c.error}"
    assert c.seconds < 1.0, c.seconds


def test_agent_hung_never_holds_a_create_past_the_request_timeout(cd, slot, pod, clean):
    """An agent that is there but does not answer (SIGSTOP): containerd gives up on it after its
    request timeout, drops it and creates the container; the plugin registers again once it runs."""
    agent = slot.use(BLOCK_MALWARE)
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        c = cd.create(pod, clean)
        since = cd.log_size()
        second = cd.create(pod, clean)  # the hung plugin is gone now: no wait at all
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    assert c.ok and second.ok, (c.error, second.error)
    assert c.seconds < REQUEST_TIMEOUT_S + 1.0, f"a create waited {c.seconds:.2f}s"
    assert second.seconds < 1.0, second.seconds
    assert cd.wait_plugin(since, timeout=30), "the plugin did not register again after it was dropped"
    t0 = time.monotonic()
    slot.stop()
    assert time.monotonic() - t0 < 30
