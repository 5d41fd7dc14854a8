"""The agent's image (`make image`) under the real containerd 2.x through CRI, run as the Helm DaemonSet runs
it: host PID and network, not privileged, all capabilities dropped but the DaemonSet's, read-only root file
system, the DaemonSet's env and mounts (tests/harness/agent_image.py). From the agent's CRI log file: it gets
ready, reports a program run on the host, attributes a container's events to its container and pod, and
registers as containerd's NRI plugin (containerd's log and the agent's own).

The image is built once per session by packaging/image/build.py, the script `make image` runs, with its
cache in build/image/. Skipped only where mmdebstrap and umoci cannot be installed, or where the
Containerd2 bundle is missing (tests/harness/containerd2.py says why).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

from tests.harness.agent_image import (
    AgentPod,
    build_agent_image,
    ensure_tools,
    free_port,
    run_host_command,
    run_workload,
)
from tests.harness.containerd import unique_id, wait_until
from tests.harness.containerd2 import REPO_ROOT, missing_requirements, running_containerd2
from tests.harness.oci import build_image

_WHY = missing_requirements()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_WHY is not None, reason=f"containerd 2.x CRI + NRI: {_WHY}")]

# The first start on a kernel compiles every probe family with bcc: 50-80 s here when the machine is quiet,
# over 4 minutes while other suites load its two cores.
READY_TIMEOUT_S = 480
EVENT_TIMEOUT_S = 90  # a loaded host's event flood can keep the agent's queue behind by tens of seconds


@pytest.fixture(scope="session")
def agent_image():
    why = ensure_tools()
    if why:
        pytest.skip(f"image tools: {why}")
    return build_agent_image()


@pytest.fixture(scope="module")
def cd(tmp_path_factory):
    with running_containerd2(tmp_path_factory.mktemp("cd2-image")) as c:
        yield c


@pytest.fixture(scope="module")
def agent(cd, agent_image, tmp_path_factory):
    cd.ctr("images", "import", agent_image["archive"], timeout=300)
    since = cd.log_size()
    pod = AgentPod(cd, agent_image["name"], tmp_path_factory.mktemp("agent-pod"), free_port())
    try:
        pod.start()
        pod.wait_for(lambda r: r.get("event.name") == "agent.ready", timeout=READY_TIMEOUT_S, what="agent.ready")
        pod.nri_log_offset = since
        yield pod
    finally:
        pod.stop()


def test_containerignore_lets_in_the_agents_files_only(tmp_path):
    """build.py's reading of .containerignore (Docker's rules: last match wins, a pattern covers what is under
    the directories it names), on the repository and on a tree with the cases that matter."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nw_image_build", REPO_ROOT / "packaging/image/build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    files = build.file_list()
    assert {f.split("/")[0] for f in files} == {"agent", "collector", "nwwire", "probes", "proto",
                                                "pyproject.toml", "README.md"}
    assert "agent/cli.py" in files and "probes/events.h" in files and "proto/nodewarden/v1/event.proto" in files
    assert not [f for f in files if "__pycache__" in f or f.startswith(("nwwire/gen/", "agent/gen/"))]
    for rel in ("agent/a.py", "agent/__pycache__/a.pyc", "agent/sub/x.db", "nwwire/gen/g.py", "tests/t.py",
                ".venv/bin/python", "README.md", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert build.file_list(tmp_path, REPO_ROOT / ".containerignore") == ["README.md", "agent/a.py"]


def test_image_holds_only_what_the_agent_needs(agent_image):
    """The layers' file list: the sources .containerignore names, their venv and generated code, no more."""
    layout = agent_image["layout"]
    index = json.load(open(f"{layout}/index.json"))
    (desc,) = index["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == agent_image["name"]
    manifest = json.load(open(f"{layout}/blobs/sha256/{desc['digest'].split(':')[1]}"))
    config = json.load(open(f"{layout}/blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
    assert config["config"]["Entrypoint"] == ["/opt/nodewarden/.venv/bin/nodewarden"]
    assert config["config"]["Cmd"] == ["run", "--json", "--config", "/etc/nodewarden/config.yaml"]
    app = manifest["layers"][-1]["digest"].split(":")[1]
    names = subprocess.run(["tar", "-tzf", f"{layout}/blobs/sha256/{app}"], capture_output=True, text=True,
                           check=True, timeout=120).stdout.split()
    top = {n.split("/")[2] for n in names if n.count("/") >= 3 or (n.count("/") == 2 and not n.endswith("/"))}
    assert top == {"agent", "collector", "nwwire", "probes", "proto", "pyproject.toml", "README.md", ".venv",
                   "build"}, top
    assert "opt/nodewarden/nwwire/gen/nodewarden/v1/event_pb2.py" in names
    assert "opt/nodewarden/.venv/bin/nodewarden" in names
    # build/ holds only the compiled decoders (agent/sensors/native.py) and the rules' pre-condition
    # (agent/detect/native.py), one object each, made on the build machine
    built = [n for n in names if n.startswith("opt/nodewarden/build/") and not n.endswith("/")]
    assert sorted(n.split("/")[-1].split(".")[0] for n in built) == ["_nwnative", "_nwrules"], built
    assert all(n.startswith("opt/nodewarden/build/native/") for n in built), built
    ours = [n for n in names if n.count("/") >= 2 and not n.startswith("opt/nodewarden/.venv/")]
    assert not [n for n in ours if n.split("/")[2] in ("tests", ".git", "bench") or n.endswith(".db")]


def test_agent_ready_with_the_daemonsets_privileges(agent, cd):
    info = cd.inspect(agent.cid)
    spec = info["info"]["runtimeSpec"]
    assert info["status"]["state"] == "CONTAINER_RUNNING"
    assert spec["root"]["readonly"] is True
    caps = spec["process"]["capabilities"]
    # The DaemonSet's seven, less any the runtime does not hold itself (it cannot grant those): on this
    # machine containerd runs without CAP_SYS_RESOURCE, which only kernels before 5.11 need (memlock).
    assert agent.container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(agent.caps_lacking) <= {"SYS_RESOURCE"}, agent.caps_lacking
    want = sorted(f"CAP_{c}" for c in agent.caps)
    assert sorted(caps["effective"]) == want and sorted(caps["bounding"]) == want
    assert spec["process"].get("noNewPrivileges") is True
    # hostPID / hostNetwork: CRI joins the sandbox's namespaces by path, and those are the host's
    ns = {n["type"]: n.get("path", "") for n in spec["linux"]["namespaces"]}
    for kind, proc_name in (("pid", "pid"), ("network", "net")):
        host = os.stat(f"/proc/self/ns/{proc_name}").st_ino
        assert kind not in ns or (ns[kind] and os.stat(ns[kind]).st_ino == host), (kind, ns)
    # the kubelet's readiness probe: /readyz on the metrics port (host network)
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/readyz", timeout=5) as r:
        assert r.status == 200


def test_nri_plugin_registered_from_inside_the_pod(agent, cd):
    assert cd.wait_plugin(agent.nri_log_offset, timeout=60), cd.log_since(agent.nri_log_offset)[-2000:]
    agent.wait_stderr("nri: registered as", timeout=30)
    # status.json (written every 5 s, read by `nodewarden status`) in the state dir, a host path
    status = wait_until(lambda: "registered as 10-nodewarden" in json.dumps(
        (_status(agent) or {}).get("enforcement", {})), timeout=30, interval=0.5)
    assert status, f"status.json never said the NRI plugin registered: {_status(agent)}"


def _status(agent):
    try:
        return json.loads((agent.host_dir("state") / "status.json").read_text())
    except (OSError, ValueError):
        return None


def test_host_exec_reported(agent):
    marker = unique_id("nwimg-host")
    run_host_command(agent.workdir, marker)
    ex = agent.wait_for(lambda r: r.get("event.name") == "process.exec" and r.get("process.args") == [
        str(agent.workdir / marker), marker], timeout=EVENT_TIMEOUT_S, what=f"process.exec of {marker}")
    assert not ex.get("container.id"), ex  # the host's own program: no container


def test_container_event_attributed(agent, cd, tmp_path):
    img = cd.import_image(build_image(tmp_path / "busybox.tar", "nodewarden.test/image-e2e:1"))
    pod_name, marker = unique_id("nwimg-pod"), unique_id("nwimg-ctr")
    cmd = ["/bin/sh", "-c", f"sleep 1; /bin/true {marker}; exec sleep 600"]
    pod_id, cid = run_workload(cd, tmp_path, img.name, cmd, pod=pod_name, namespace="shop", container="web")
    try:
        try:
            ex = agent.wait_for(lambda r: r.get("event.name") == "process.exec"
                                and r.get("process.args") == ["/bin/true", marker], timeout=EVENT_TIMEOUT_S,
                                what="container exec")
        except AssertionError as e:
            mine = [{k: r.get(k) for k in ("event.name", "process.args", "container.id")} for r in agent.records()
                    if r.get("container.id") == cid or marker in str(r.get("process.args"))]
            raise AssertionError(f"{e}\nits container's records: {mine[:10]}; state {cd.state(cid)}") from None
        assert (ex["container.id"], ex["container.name"], ex["k8s.pod.name"], ex["k8s.namespace.name"]) == (
            cid, "web", pod_name, "shop"), ex
        assert ex["container.image.name"] == img.name
        # (Its image verdict is not awaited: the gate scans the agent's own 650 MB image first, minutes on a
        # loaded CI machine; tests/e2e/test_cri_nri.py covers the verdicts.)
    finally:
        cd.remove_pod(pod_id)
