"""GateServer: verdicts, deadlines, timeout action, peer check, socket mode, and the wrapper's ask() against it."""

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from agent.enforce import runc_wrapper as rw
from agent.enforce.ocigate import Decision, GateRequest, GateServer

PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def _req(image="", deadline_ms=2000, cid="c1"):
    return {"v": 1, "op": "create", "namespace": "ns1", "id": cid, "bundle": f"/b/ns1/{cid}", "image": image,
            "annotations": {"a": "b", "bad": 1}, "args": ["/bin/sh", 3], "deadline_ms": deadline_ms}


def _by_image(req: GateRequest) -> Decision:
    if "evil" in req.image:
        return Decision(False, f"image {req.image}: verdict block (malware)")
    return Decision(True, "clean")


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "run" / "gate.sock")


def _server(path, decide=_by_image, **kw):
    kw.setdefault("allowed_uids", (os.getuid(),))
    return GateServer(path, decide, kw.pop("timeout", 1.0), **kw)


def test_allow_and_block(sock_path):
    seen = []

    def decide(req):
        seen.append(req)
        return _by_image(req)

    with _server(sock_path, decide) as gs:
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
        reply, why = rw.ask(sock_path, _req("docker.io/x/clean:1"), 2.0)
        assert why == "" and reply == {"allow": True, "message": "clean", "reason": "decided"}
        reply, _ = rw.ask(sock_path, _req("docker.io/x/evil:1"), 2.0)
        assert reply["allow"] is False and "verdict block" in reply["message"]
        st = gs.status()
    assert (st["requests"], st["allowed"], st["blocked"], st["listening"]) == (2, 1, 1, True)
    r = seen[0]
    assert (r.namespace, r.id, r.bundle, r.peer_pid) == ("ns1", "c1", "/b/ns1/c1", os.getpid())
    assert r.annotations == {"a": "b"} and r.args == ("/bin/sh",)  # non-strings dropped
    assert not os.path.exists(sock_path)  # stop() removed its socket


@pytest.mark.parametrize("action", ["allow", "block"])
def test_hung_decide_gets_the_timeout_action_in_time(sock_path, action):
    release = threading.Event()
    with _server(sock_path, lambda req: release.wait(30) or Decision(True), timeout=0.3,
                 timeout_action=action) as gs:
        t = time.monotonic()
        reply, _ = rw.ask(sock_path, _req(), 2.0)
        took = time.monotonic() - t
        release.set()
        assert reply["allow"] is (action == "allow") and reply["reason"] == "timeout"
        assert f"timeout action: {action}" in reply["message"]
        assert 0.25 < took < 0.8
        assert gs.status()["timeouts"] == 1


def test_timeout_values_read_at_each_request(sock_path):
    """Callables (the policy in force, in the agent) are read per request; a broken one falls back to
    the documented defaults instead of failing the gate."""
    release = threading.Event()
    current = {"timeout": 0.2, "action": "allow"}

    def action():
        if current["action"] == "boom":
            raise RuntimeError("no policy")
        return current["action"]

    with _server(sock_path, lambda req: release.wait(30) or Decision(True), timeout=lambda: current["timeout"],
                 timeout_action=action) as gs:
        try:
            assert rw.ask(sock_path, _req(), 2.0)[0]["allow"] is True
            current["action"] = "block"
            reply, _ = rw.ask(sock_path, _req(cid="c2"), 2.0)
            assert reply["allow"] is False and "no verdict within 0.2s; timeout action: block" in reply["message"]
            assert gs.status()["timeout_action"] == "block"
            current["action"] = "boom"
            assert rw.ask(sock_path, _req(cid="c3"), 2.0)[0]["allow"] is True  # on_timeout's default: allow
        finally:
            release.set()


def test_wrapper_deadline_shorter_than_server_timeout_wins(sock_path):
    release = threading.Event()
    with _server(sock_path, lambda req: release.wait(30) or Decision(True), timeout=5.0, timeout_action="block"):
        t = time.monotonic()
        reply, _ = rw.ask(sock_path, _req(deadline_ms=500), 0.5)
        took = time.monotonic() - t
        release.set()
    # The server answers deadline - REPLY_MARGIN after accept: before the wrapper gives up.
    assert reply is not None and reply["allow"] is False and took < 0.5


def test_all_workers_hung_answers_busy_at_once(sock_path):
    release = threading.Event()
    with _server(sock_path, lambda req: release.wait(30) or Decision(True), timeout=0.2, max_concurrency=1,
                 timeout_action="block") as gs:
        rw.ask(sock_path, _req(), 2.0)  # times out, its decide still hangs
        t = time.monotonic()
        reply, _ = rw.ask(sock_path, _req(), 2.0)
        assert reply["reason"] == "busy" and reply["allow"] is False and time.monotonic() - t < 0.15
        release.set()
        deadline = time.monotonic() + 5
        while gs.status()["inflight"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gs.status()["inflight"] == 0 and gs.status()["busy"] == 1


def test_decide_errors_follow_the_timeout_action(sock_path):
    def boom(req):
        raise KeyError("x")

    with _server(sock_path, boom, timeout_action="block") as gs:
        reply, _ = rw.ask(sock_path, _req(), 2.0)
        assert reply["allow"] is False and reply["reason"] == "error" and "KeyError" in reply["message"]
    with _server(sock_path, lambda req: "yes", timeout_action="allow") as gs:
        reply, _ = rw.ask(sock_path, _req(), 2.0)
        assert reply["allow"] is True and reply["reason"] == "error"
        assert gs.status()["errors"] == 1


def test_resolver_fills_the_image(sock_path):
    with _server(sock_path, resolve=lambda req: f"registry/{req.id}-evil:1"):
        reply, _ = rw.ask(sock_path, _req(image=""), 2.0)
        assert reply["allow"] is False and "registry/c1-evil:1" in reply["message"]
        reply, _ = rw.ask(sock_path, _req(image="annotated/clean:1"), 2.0)  # annotation wins
        assert reply["allow"] is True


def test_peer_with_another_uid_gets_no_verdict(sock_path):
    with _server(sock_path, allowed_uids=(os.getuid() + 4242,)) as gs:
        reply, _ = rw.ask(sock_path, _req("evil"), 2.0)
        assert reply == {"allow": False, "message": f"peer uid {os.getuid()} not allowed", "reason": "peer"}
        assert gs.status()["peer_rejected"] == 1


def test_bad_requests_are_dropped_and_the_server_goes_on(sock_path):
    with _server(sock_path) as gs:
        for junk in (b"not json\n", b'{"v": 99}\n', b"[1,2]\n", b"x" * 300_000):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            try:
                s.sendall(junk)
            except OSError:
                pass
            s.settimeout(3)
            try:
                assert s.recv(100) == b""  # no reply: the wrapper falls back to its own failure mode
            except ConnectionResetError:  # closed with part of the oversized request unread
                pass
            s.close()
        reply, _ = rw.ask(sock_path, _req("ok"), 2.0)
        assert reply["allow"] is True
        assert gs.status()["bad_requests"] == 4


def test_start_replaces_a_stale_socket_but_not_a_file(sock_path):
    os.makedirs(os.path.dirname(sock_path))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock_path)
    stale.close()
    with _server(sock_path):
        assert rw.ask(sock_path, _req(), 2.0)[0]["allow"] is True
    with open(sock_path, "w") as f:
        f.write("not a socket")
    with pytest.raises(FileExistsError):
        _server(sock_path).start()


def test_ask_gives_up_at_its_deadline_on_a_silent_listener(tmp_path):
    path = str(tmp_path / "silent.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)  # connects and sends succeed, nobody ever answers
    try:
        t = time.monotonic()
        reply, why = rw.ask(path, _req(), 0.3)
        assert reply is None and "no answer" in why and 0.25 < time.monotonic() - t < 0.6
    finally:
        s.close()
    reply, why = rw.ask(str(tmp_path / "absent.sock"), _req(), 0.3)
    assert reply is None and "unreachable" in why


def test_helper_blocks_through_the_server(sock_path, tmp_path):
    bundle = tmp_path / "state" / "ns1" / "evil-1"
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"annotations": {rw.ANN_IMAGE: "x/evil:1"}}))
    runc = tmp_path / "runc"
    runc.write_text(f"#!/bin/sh\ntouch {tmp_path}/runc-ran\n")
    runc.chmod(0o755)
    env = {"NODEWARDEN_RUNC": str(runc), "NODEWARDEN_GATE_SOCKET": sock_path}
    argv = ["--root", "/r/ns1", "--log", str(bundle / "log.json"), "--log-format", "json", "create", "--bundle",
            str(bundle), "evil-1"]
    with _server(sock_path):
        r = subprocess.run([PYTHON, "-I", "-S", rw.__file__, *argv], env=env, capture_output=True, text=True,
                           timeout=20)
    assert r.returncode == 1 and not (tmp_path / "runc-ran").exists()
    last = json.loads((bundle / "log.json").read_text().splitlines()[-1])
    assert last["level"] == "error"
    assert last["msg"] == "nodewarden: container evil-1 blocked: image x/evil:1: verdict block (malware)"


def test_connection_flood_is_answered_at_once_not_queued(sock_path):
    with _server(sock_path, max_concurrency=1, timeout_action="block") as gs:
        idle = []
        for _ in range(4):  # max_concurrency * 4 connections that never send hold every slot
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            idle.append(s)
        time.sleep(0.1)
        t = time.monotonic()
        reply, why = rw.ask(sock_path, _req(), 2.0)
        # Usually the busy answer; if the accept won the race with the send, a reset (the wrapper's own
        # failure mode). Never a wait for a slot.
        assert time.monotonic() - t < 0.5
        assert (reply is not None and reply["reason"] == "busy" and reply["allow"] is False) or reply is None, why
        assert gs.status()["busy"] == 1
        for s in idle:
            s.close()
