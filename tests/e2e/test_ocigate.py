"""The OCI pre-start gate with the real containerd 1.6 and runc: nodewarden-runc as runc's binary
(`ctr run --runc-binary`, what BinaryName does for CRI), a GateServer deciding by image name.

A container's command writes a marker into a host directory bind-mounted at /mark: a blocked container
must fail at create with the verdict in ctr's error and leave no marker (it never ran an instruction).
"""

import statistics
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agent.enforce.ocigate import Decision, GateServer, containerd_image_resolver
from agent.enforce.runc_wrapper import install
from tests.harness.containerd import unique_id

pytestmark = pytest.mark.e2e

MARK_CMD = ("/bin/sh", "-c", "echo ran > /mark/ran")
DEADLINE = 1.0  # the wrapper's deadline in these tests
SLACK = 1.5  # ctr run itself (shim start, mounts, runc start/delete) on a busy 2-core machine


def _by_image(req):
    # A stand-in for the image gate's verdict.
    if "evil" in req.image:
        return Decision(False, f"image {req.image}: verdict block (test policy: name contains 'evil')")
    return Decision(True, "clean")


@pytest.fixture(scope="module")
def images(image_builder):
    return {
        "clean": image_builder("nodewarden.test/ocigate-clean:1", cmd=MARK_CMD),
        "evil": image_builder("nodewarden.test/ocigate-evil:1", cmd=MARK_CMD),
    }


@pytest.fixture
def short_dir():
    # unix socket paths are limited to 108 bytes: keep them out of pytest's deep tmp paths.
    with tempfile.TemporaryDirectory(prefix="nwgate-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def client(containerd):
    from agent.enrich.containerd_client import ContainerdClient

    c = ContainerdClient(str(containerd.socket))
    yield c
    c.close()


def _wrapper(d: Path, fail: str = "open", socket_path: str | None = None) -> str:
    return install(str(d / f"bin-{fail}"), socket_path=socket_path or str(d / "gate.sock"), timeout=DEADLINE,
                   fail=fail)


def _run(containerd, wrapper, image, mark: Path, cid=None):
    """`ctr run --rm` in the foreground with the wrapper as runc; (completed, seconds, ran)."""
    cid = cid or unique_id("gate")
    mark.mkdir(exist_ok=True)
    args = ["run", "--rm", "--mount", f"type=bind,src={mark},dst=/mark,options=rbind:rw"]
    if wrapper:
        args += ["--runc-binary", wrapper]
    t = time.monotonic()
    try:
        r = containerd.ctr(*args, image.name, cid, check=False, timeout=30)
    finally:
        took = time.monotonic() - t
        containerd.remove(cid)  # a failed run may leave the container record
    ran = (mark / "ran").exists()
    if ran:
        (mark / "ran").unlink()
    return r, took, ran


def test_blocked_image_never_runs_clean_image_starts(containerd, images, short_dir, client):
    seen = []

    def decide(req):
        seen.append(req)
        return _by_image(req)

    wrapper = _wrapper(short_dir)
    mark = short_dir / "mark"
    with GateServer(str(short_dir / "gate.sock"), decide, 0.8, resolve=containerd_image_resolver(client)) as gs:
        cid = unique_id("evil")
        r, _, ran = _run(containerd, wrapper, images["evil"], mark, cid=cid)
        assert r.returncode != 0 and not ran
        assert "OCI runtime create failed" in r.stderr
        assert (f"nodewarden: container {cid} blocked: image nodewarden.test/ocigate-evil:1: verdict block"
                in r.stderr)
        assert cid not in containerd.containers()

        r, _, ran = _run(containerd, wrapper, images["clean"], mark)
        assert r.returncode == 0 and ran, r.stderr
        st = gs.status()
    assert (st["allowed"], st["blocked"], st["timeouts"]) == (1, 1, 0)
    assert (seen[0].namespace, seen[0].id, seen[0].op) == (containerd.namespace, cid, "create")
    assert seen[0].bundle.endswith(f"/{containerd.namespace}/{cid}") and seen[0].args == MARK_CMD


@pytest.mark.parametrize("fail", ["open", "closed"])
@pytest.mark.parametrize("agent", ["absent", "silent"])
def test_agent_down_fails_as_configured_within_the_deadline(containerd, images, short_dir, fail, agent):
    """absent: no socket file (agent stopped). silent: a socket that accepts and never answers (agent hung)."""
    import socket

    path = short_dir / "gate.sock"
    listener = None
    if agent == "silent":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen(16)
    try:
        r, took, ran = _run(containerd, _wrapper(short_dir, fail), images["evil"], short_dir / "mark")
    finally:
        if listener:
            listener.close()
    assert took < DEADLINE + SLACK, f"create took {took:.2f}s"
    if agent == "silent":
        assert took >= DEADLINE * 0.9  # it did wait for an answer, then gave up at its deadline
    if fail == "open":
        assert r.returncode == 0 and ran, r.stderr
    else:
        assert r.returncode != 0 and not ran
        assert "gate failed closed" in r.stderr
        assert ("agent unreachable" if agent == "absent" else "no answer within") in r.stderr


@pytest.mark.parametrize("action", ["allow", "block"])
def test_hung_decide_answered_by_the_timeout_action(containerd, images, short_dir, action):
    release = threading.Event()
    wrapper = _wrapper(short_dir, "closed")  # so that an allow can only come from the server's answer
    try:
        with GateServer(str(short_dir / "gate.sock"), lambda req: release.wait(20) or Decision(True), 0.5,
                        timeout_action=action) as gs:
            r, took, ran = _run(containerd, wrapper, images["clean"], short_dir / "mark")
            assert gs.status()["timeouts"] == 1
    finally:
        release.set()
    assert took < 0.5 + SLACK
    if action == "allow":
        assert r.returncode == 0 and ran, r.stderr
    else:
        assert r.returncode != 0 and not ran
        assert "no verdict within 0.5s; timeout action: block" in r.stderr


def test_create_latency_with_and_without_the_gate(containerd, images, short_dir, client, capsys):
    """Not a benchmark: a sanity bound, and the numbers for the docs (pytest -s shows them)."""
    wrapper = _wrapper(short_dir)
    mark = short_dir / "mark"
    with GateServer(str(short_dir / "gate.sock"), _by_image, 0.8, resolve=containerd_image_resolver(client)):
        _run(containerd, wrapper, images["clean"], mark)  # warm up
        gated = [_run(containerd, wrapper, images["clean"], mark)[1] for _ in range(5)]
    plain = [_run(containerd, None, images["clean"], mark)[1] for _ in range(5)]
    g, p = statistics.median(gated), statistics.median(plain)
    with capsys.disabled():
        print(f"\nctr run --rm (create+start+exit+delete), median of 5: gated {g * 1000:.0f} ms, "
              f"plain {p * 1000:.0f} ms, difference {(g - p) * 1000:.0f} ms")
    assert g < p + 0.5


def test_whole_node_install_as_runc_on_containerds_path(make_containerd, images, short_dir, monkeypatch):
    """Without BinaryName (ctr, nerdctl, any non-CRI client): the shim runs `runc` from containerd's PATH,
    so the wrapper installed as `runc` in a directory first on that PATH gates every container."""
    install(str(short_dir / "path"), name="runc", socket_path=str(short_dir / "gate.sock"), timeout=DEADLINE,
            fail="closed", runc="/usr/sbin/runc")
    monkeypatch.setenv("PATH", f"{short_dir / 'path'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    cd = make_containerd()  # inherits PATH; the shims it starts do too
    monkeypatch.undo()
    for img in images.values():
        cd.import_image(img)
    # Without a resolver, decide knows the container by id only (the image is in containerd's record).
    def by_id(req):
        return Decision(not req.id.startswith("evil"), f"container {req.id}: verdict block")

    with GateServer(str(short_dir / "gate.sock"), by_id, 0.8) as gs:
        r, _, ran = _run(cd, None, images["evil"], short_dir / "mark", cid=unique_id("evil"))
        assert r.returncode != 0 and not ran and "verdict block" in r.stderr
        r, _, ran = _run(cd, None, images["clean"], short_dir / "mark")
        assert r.returncode == 0 and ran, r.stderr
        assert gs.status()["requests"] == 2
