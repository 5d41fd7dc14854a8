"""The NRI plugin against a stand-in runtime, over a real unix socket.

The stand-in plays containerd's part as NRI's protocol defines it (containerd/nri pkg/adaptation,
pkg/net/multiplex; containerd/ttrpc PROTOCOL.md), with its own framing code, not the plugin's:
  - it listens on the NRI socket, serves Runtime.RegisterPlugin on mux conn 2 and calls the
    plugin's Configure, Synchronize (split in two, `more` set on the first) and events on conn 1;
  - it writes ttrpc messages the way Go's bufio.Writer does (a first 4096-byte frame, then the
    rest of a large message as one big frame), and reads them the way Go's bufio.Reader over the
    mux does (a frame longer than the buffer offered is ENOMEM, and the connection is dropped);
  - a call unanswered within the request timeout drops the plugin, as containerd does.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from concurrent.futures import Future

import pytest

from agent.enforce import nri
from agent.enforce.nri import Decision, NriConfig, NriPlugin
from agent.enforce.ttrpc import pb as ttrpc_pb

pytestmark = pytest.mark.e2e

PLUGIN_CONN, RUNTIME_CONN = 1, 2
PLUGIN_SVC, RUNTIME_SVC = "nri.pkg.api.v1alpha1.Plugin", "nri.pkg.api.v1alpha1.Runtime"
GO_BUF = 4096


class StandInRuntime:
    def __init__(self, path: str, request_timeout: float = 2.0):
        self.path = path
        self.request_timeout = request_timeout
        self.registered = threading.Event()
        self.synced = threading.Event()
        self.registrations: list[tuple[str, str]] = []
        self.events_mask = None
        self.sync_replies: list[bool] = []
        self.errors: list[str] = []
        self._lsock = None
        self._conn = None
        self._wlock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._next_id = 1
        self._threads: list[threading.Thread] = []

    # -- lifecycle
    def start(self) -> StandInRuntime:
        self.registered.clear()
        self.synced.clear()
        self._lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._lsock.bind(self.path)
        self._lsock.listen(1)
        self._spawn(self._accept, self._lsock)
        return self

    def stop(self) -> None:
        for s in (self._lsock, self._conn):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self._conn = None
        if os.path.exists(self.path):
            os.unlink(self.path)
        for t in self._threads:
            t.join(5)
        self._threads = []

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self, lsock) -> None:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        self._conn, self._next_id, self._pending = conn, 1, {}
        self._spawn(self._read, conn)

    def drop_plugin(self) -> None:
        try:
            self._conn.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):  # already gone
            pass

    # -- writing, like Go's ttrpc over a bufio.Writer over the mux
    def _write(self, conn_id: int, sid: int, mtype: int, data: bytes) -> None:
        msg = struct.pack(">IIBB", len(data), sid, mtype, 0) + data
        chunks = [msg] if len(msg) <= GO_BUF else [msg[:GO_BUF], msg[GO_BUF:]]
        with self._wlock:
            self._conn.sendall(b"".join(struct.pack(">II", conn_id, len(c)) + c for c in chunks))

    # -- reading, like Go's mux + bufio.Reader + ttrpc channel
    def _read(self, conn) -> None:
        buf, streams = b"", {PLUGIN_CONN: [b"", 0], RUNTIME_CONN: [b"", 0]}
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 8:
                    cid, n = struct.unpack(">II", buf[:8])
                    if len(buf) < 8 + n:
                        break
                    payload, buf = buf[8 : 8 + n], buf[8 + n :]
                    self._conn_data(cid, payload, streams[cid])
        except OSError as e:
            self.errors.append(str(e))
        finally:
            conn.close()
            for fut in list(self._pending.values()):  # as Go's client does when its conn closes
                if not fut.done():
                    fut.set_exception(ConnectionError("plugin connection closed"))

    def _conn_data(self, cid: int, payload: bytes, st: list) -> None:
        cap = st[1] if st[1] >= GO_BUF else GO_BUF
        if len(payload) > cap:
            raise OSError(f"ENOMEM: {len(payload)}-byte mux frame, reader offered {cap}")
        st[0] += payload
        while len(st[0]) >= 10:
            n, sid, mtype, _ = struct.unpack(">IIBB", st[0][:10])
            if len(st[0]) < 10 + n:
                st[1] = 10 + n - len(st[0])
                return
            data, st[0] = st[0][10 : 10 + n], st[0][10 + n :]
            if cid == RUNTIME_CONN and mtype == 1:
                self._serve(sid, ttrpc_pb().Request.FromString(data))
            elif cid == PLUGIN_CONN and mtype == 2 and sid in self._pending:
                self._pending.pop(sid).set_result(ttrpc_pb().Response.FromString(data))
        st[1] = 0

    def _serve(self, sid: int, req) -> None:
        env = ttrpc_pb()
        if (req.service, req.method) != (RUNTIME_SVC, "RegisterPlugin"):
            resp = env.Response(status=env.Status(code=12, message="unimplemented"))
        else:
            reg = nri.pb().RegisterPluginRequest.FromString(req.payload)
            self.registrations.append((reg.plugin_name, reg.plugin_idx))
            resp = env.Response(payload=b"")
            # As the Go adaptation does: configure and synchronize after answering registration.
            self._spawn(self._configure_and_sync)
        self._write(RUNTIME_CONN, sid, 2, resp.SerializeToString())
        self.registered.set()

    def _configure_and_sync(self) -> None:
        api = nri.pb()
        cfg = api.ConfigureRequest(runtime_name="standin", runtime_version="v2.x", registration_timeout=5000,
                                   request_timeout=int(self.request_timeout * 1000), NRI_version="v0.10.0")
        code, _, payload = self.call("Configure", cfg)
        if code != 0:
            return
        self.events_mask = api.ConfigureResponse.FromString(payload).events
        for more in (True, False):
            req = api.SynchronizeRequest(pods=[api.PodSandbox(id="p0", name="old")], more=more)
            code, _, payload = self.call("Synchronize", req)
            self.sync_replies.append(code == 0 and api.SynchronizeResponse.FromString(payload).more == more)
        self.synced.set()

    # -- calling the plugin, with the runtime's request timeout
    def call(self, method: str, msg) -> tuple[int, str, bytes]:
        """(status code, message, payload); code -1 when the plugin did not answer in time."""
        with self._wlock:
            sid, self._next_id = self._next_id, self._next_id + 2
            fut = self._pending[sid] = Future()
        req = ttrpc_pb().Request(service=PLUGIN_SVC, method=method, payload=msg.SerializeToString(),
                                 timeout_nano=int(self.request_timeout * 1e9))
        self._write(PLUGIN_CONN, sid, 1, req.SerializeToString())
        try:
            resp = fut.result(self.request_timeout)
        except TimeoutError:
            self.drop_plugin()  # containerd closes a plugin that misses its deadline
            return -1, "timeout", b""
        except ConnectionError as e:
            return -2, str(e), b""
        return resp.status.code, resp.status.message, resp.payload

    def create(self, name="app", image="reg.example/app:1", **container):
        api = nri.pb()
        pod = api.PodSandbox(id="pod1", name="web-0", namespace="shop", uid="u-1")
        ctr = api.Container(id=f"id-{name}", pod_sandbox_id="pod1", name=name, image=api.Image(name=image),
                            **container)
        return self.call("CreateContainer", api.CreateContainerRequest(pod=pod, container=ctr))


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "nri.sock")


@pytest.fixture
def runtime(sock_path):
    rt = StandInRuntime(sock_path).start()
    yield rt
    rt.stop()


@pytest.fixture
def make_plugin(sock_path):
    made = []

    def make(decide, **cfg):
        cfg = {"socket_path": sock_path, "plugin_index": "42", "reconnect_min": 0.05, "reconnect_max": 0.3, **cfg}
        p = NriPlugin(decide, NriConfig(**cfg))
        made.append(p)
        p.start()
        return p

    yield make
    for p in made:
        p.stop()


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_registration_handshake(runtime, make_plugin):
    plugin = make_plugin(lambda pod, ctr: Decision(True))
    assert runtime.synced.wait(5)
    assert runtime.registrations == [("nodewarden", "42")]
    assert runtime.events_mask == (1 << 3) | (1 << 5)  # CREATE_CONTAINER, START_CONTAINER
    assert runtime.sync_replies == [True, True]  # `more` echoed on the split sync
    assert wait_for(lambda: plugin.status().connected)
    st = plugin.status()
    assert st.runtime == "standin v2.x" and st.request_timeout_s == 2.0 and st.counters["connects"] == 1
    plugin.stop()
    assert plugin.status().reason == "stopped" and not plugin.status().connected
    assert wait_for(lambda: runtime.errors or runtime._conn is None or runtime._conn.fileno() == -1)


def test_create_container_allowed(runtime, make_plugin):
    seen = []
    make_plugin(lambda pod, ctr: seen.append((pod, ctr)) or Decision(True, "clean"))
    assert runtime.synced.wait(5)
    cgroups = "kubepods-besteffort-podu_1.slice:cri-containerd:id-app"
    code, msg, payload = runtime.create(args=["/bin/app", "--serve"],
                                        linux=nri.pb().LinuxContainer(cgroups_path=cgroups))
    assert (code, msg, payload) == (0, "", b"")  # an empty CreateContainerResponse: no adjustment
    pod, ctr = seen[0]
    assert (pod.namespace, pod.name, ctr.name, ctr.image, ctr.args) == (
        "shop", "web-0", "app", "reg.example/app:1", ("/bin/app", "--serve"))
    assert ctr.cgroups_path == cgroups  # what the exec rules cover the container by, from its create on


def test_create_container_rejected_with_the_verdict(runtime, make_plugin):
    verdict = "verdict block: malware EICAR-Test-File in /eicar.com (policy rule no-malware)"
    plugin = make_plugin(lambda pod, ctr: Decision(False, verdict))
    assert runtime.synced.wait(5)
    code, msg, _ = runtime.create(name="bad", image="reg.example/eicar:1")
    assert code == 7  # PERMISSION_DENIED
    assert verdict in msg and "reg.example/eicar:1" in msg and "bad" in msg
    assert runtime.create(name="again")[0] == 7
    assert plugin.status().counters["blocked"] == 2


def test_retriable_block_is_unavailable(runtime, make_plugin):
    make_plugin(lambda pod, ctr: Decision(False, "scan failed: registry unreachable", retriable=True))
    assert runtime.synced.wait(5)
    code, msg, _ = runtime.create()
    assert code == 14 and "registry unreachable" in msg


@pytest.mark.parametrize("action", ["allow", "block"])
def test_timeout_action(runtime, make_plugin, action):
    release = threading.Event()

    def slow(pod, ctr):
        release.wait(10)
        return Decision(False, "too late")

    plugin = make_plugin(slow, decision_timeout=0.3, timeout_action=action)
    try:
        assert runtime.synced.wait(5)
        t0 = time.monotonic()
        code, msg, _ = runtime.create()
        took = time.monotonic() - t0
        assert took < 1.0  # well inside the runtime's 2 s, so the plugin is not dropped
        if action == "allow":
            assert code == 0 and plugin.status().counters["timeout_allowed"] == 1
        else:
            assert code == 14 and "no verdict yet" in msg and "retry" in msg
        assert plugin.status().connected
    finally:
        release.set()


def test_timeout_action_read_at_each_create(runtime, sock_path):
    """A timeout_action callable (the policy in force, in the agent) is read per create; a broken one
    leaves the configured action in force."""
    release, current = threading.Event(), {"action": "block"}

    def action():
        if current["action"] == "boom":
            raise RuntimeError("no policy")
        return current["action"]

    plugin = NriPlugin(lambda pod, ctr: release.wait(10) or Decision(True),
                       NriConfig(socket_path=sock_path, plugin_index="42", decision_timeout=0.3,
                                 timeout_action="allow"), timeout_action=action)
    plugin.start()
    try:
        assert runtime.synced.wait(5)
        assert runtime.create(name="a")[0] == 14
        current["action"] = "allow"
        assert runtime.create(name="b")[0] == 0
        current["action"] = "boom"
        assert runtime.create(name="c")[0] == 0  # the configured action: allow
    finally:
        release.set()
        plugin.stop()


def test_budget_stays_under_a_short_runtime_timeout(sock_path, make_plugin):
    rt = StandInRuntime(sock_path, request_timeout=0.4).start()
    try:
        make_plugin(lambda pod, ctr: time.sleep(5) or Decision(True), decision_timeout=1.5, timeout_action="block")
        assert rt.synced.wait(5)
        code, _, _ = rt.create()
        assert code == 14  # answered (retriable block) before the 0.4 s runtime deadline
    finally:
        rt.stop()


def test_start_container_and_old_state_change(runtime, make_plugin):
    verdicts = {"late": Decision(False, "verdict block: miner xmrig"), "ok": Decision(True)}
    make_plugin(lambda pod, ctr: verdicts[ctr.name])
    assert runtime.synced.wait(5)
    api = nri.pb()
    pod = api.PodSandbox(id="p", name="p", namespace="n")
    late = api.StartContainerRequest(pod=pod, container=api.Container(name="late"))
    code, msg, _ = runtime.call("StartContainer", late)
    assert code == 7 and "xmrig" in msg
    # NRI before v0.7 (containerd 1.7) sends START_CONTAINER through StateChange.
    evt = api.StateChangeEvent(event=nri.EVENT_START_CONTAINER, pod=pod, container=api.Container(name="late"))
    code, msg, _ = runtime.call("StateChange", evt)
    assert code == 7 and "xmrig" in msg
    evt = api.StateChangeEvent(event=nri.EVENT_START_CONTAINER, pod=pod, container=api.Container(name="ok"))
    assert runtime.call("StateChange", evt)[0] == 0
    assert runtime.call("RemoveContainer", api.Empty())[0] == 12  # not subscribed: UNIMPLEMENTED


def test_large_messages_both_ways(runtime, make_plugin):
    # ~300 KB request (the stand-in sends it as a 4096-byte frame then one big frame) and a ~60 KB
    # error answer, which the plugin must cut into frames the Go reader can take.
    long_verdict = "verdict block: " + "file flagged; " * 4000
    make_plugin(lambda pod, ctr: Decision(False, long_verdict) if ctr.annotations else Decision(True))
    assert runtime.synced.wait(5)
    annotations = {f"k{i}": "v" * 3000 for i in range(100)}
    code, msg, _ = runtime.create(annotations=annotations, env=["A=" + "x" * 1000] * 10)
    assert code == 7 and long_verdict in msg
    assert runtime.errors == []  # no ENOMEM on the runtime's side
    assert runtime.create()[0] == 0


def test_reconnect_after_runtime_restart(runtime, make_plugin):
    plugin = make_plugin(lambda pod, ctr: Decision(False, "verdict block: x"))
    assert runtime.synced.wait(5) and wait_for(lambda: plugin.status().connected)
    runtime.stop()
    assert wait_for(lambda: not plugin.status().connected)
    assert "disconnected" in plugin.status().reason or "cannot connect" in plugin.status().reason
    assert wait_for(lambda: "cannot connect" in plugin.status().reason)
    runtime.start()
    assert runtime.synced.wait(5) and wait_for(lambda: plugin.status().connected)
    assert runtime.registrations == [("nodewarden", "42")] * 2
    assert runtime.create()[0] == 7
    assert plugin.status().counters["connects"] == 2


def test_reconnect_after_being_dropped_for_a_timeout(runtime, make_plugin):
    release = threading.Event()
    # A decision budget longer than the runtime's timeout (misconfiguration) gets the plugin dropped,
    # as containerd does; the plugin must come back on its own.
    plugin = make_plugin(lambda pod, ctr: release.wait(10) or Decision(True), decision_timeout=5.0)
    plugin._budget = lambda session, deadline: 5.0
    try:
        assert runtime.synced.wait(5)
        assert runtime.create()[0] == -1  # the stand-in timed out and dropped the plugin
        assert wait_for(lambda: not plugin.status().connected)
        release.set()
        runtime._lsock.close()
        os.unlink(runtime.path)
        runtime.start()
        assert runtime.synced.wait(5) and wait_for(lambda: plugin.status().connected)
    finally:
        release.set()


def test_status_when_no_runtime(sock_path, make_plugin):
    plugin = make_plugin(lambda pod, ctr: Decision(True))
    assert wait_for(lambda: "cannot connect" in plugin.status().reason)
    st = plugin.status()
    assert not st.connected and sock_path in st.reason and "NRI disabled" in st.reason
