"""The NRI pre-start gate: an NRI plugin that lets containerd create a container only if the image
gate allows it.

How it talks to the runtime (github.com/containerd/nri: pkg/stub, pkg/adaptation, pkg/api):
  1. connect to the runtime's NRI socket (/var/run/nri/nri.sock) and multiplex it (mux.py): we
     serve the Plugin service on conn 1 and call the Runtime service on conn 2, both over ttrpc;
  2. call Runtime.RegisterPlugin(name, two-digit index);
  3. the runtime calls Plugin.Configure: we subscribe to CREATE_CONTAINER and START_CONTAINER;
  4. the runtime calls Plugin.Synchronize with the pods and containers it has: we answer with no
     updates, echoing `more` (a runtime that split its state drops a plugin that does not);
  5. then one call per subscribed event. An error answer to CreateContainer fails the CRI
     CreateContainer call; an error to StartContainer fails the start before the task runs.

The runtime waits at most its request timeout (2 s by default, sent in Configure) for each answer;
a plugin that misses it is disconnected and the container is created anyway. The runtime also holds
one lock across all plugin calls, so a slow answer delays every container start on the node. So
each decision gets a budget under that timeout, and when no verdict is ready in time the configured
timeout action answers instead: "allow" (the container starts; scanning goes on) or "block" (a
retriable error: the kubelet retries CreateContainer with backoff, by which time the verdict is
cached). The decision callback runs on a small pool of its own and keeps running after a timeout,
so that its result can be cached by the image gate for the retry.

When the runtime goes away (containerd restart, or it dropped us) we reconnect with exponential
backoff. status() says whether we are registered, with which runtime, and if not, why.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from agent import genproto
from agent.enforce import ttrpc
from agent.enforce.decide import Decision
from agent.enforce.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from agent.enforce.ttrpc import Code, TtrpcError

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/nri/nri.sock"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
# Set by containerd's CRI plugin on every container; the only image reference older runtimes
# (NRI < v0.10, without Container.image) give us.
IMAGE_NAME_ANNOTATION = "io.kubernetes.cri.image-name"
DEFAULT_REQUEST_TIMEOUT_S = 2.0  # NRI's DefaultPluginRequestTimeout, for runtimes that do not send it
_REPLY_MARGIN_S = 0.15  # left of the runtime's deadline for encoding and sending our answer
_RUNTIME_SLACK_S = 0.3  # a decision ends this long before the runtime's request timeout, at the latest
_CONNECT_TIMEOUT_S = 2.0
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")  # NRI's CheckPluginName
_INDEX_RE = re.compile(r"^[0-9]{2}$")  # NRI's CheckPluginIndex

# NRI event numbers (api.proto enum Event); a subscription sets bit (event - 1).
EVENT_CREATE_CONTAINER = 4
EVENT_START_CONTAINER = 6


def event_mask(*events: int) -> int:
    return sum(1 << (e - 1) for e in set(events))


SUBSCRIBED_EVENTS = event_mask(EVENT_CREATE_CONTAINER, EVENT_START_CONTAINER)


@functools.cache
def pb():
    """The generated NRI API module (proto/nri/api/api.proto)."""
    return genproto.load("nri.api.api_pb2")


@dataclass(frozen=True, slots=True)
class PodInfo:
    id: str
    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    name: str
    pod_id: str
    image: str  # reference, from Container.image or the CRI image-name annotation; "" if neither
    image_digest: str  # manifest/index digest when the runtime sends it (NRI >= v0.10), else ""
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    args: tuple[str, ...]
    cgroups_path: str = ""  # linux.cgroups_path: cgroupfs "/kubepods/..." or systemd "slice:prefix:name"
    at_start: bool = False  # asked at StartContainer (a verdict that came after the create), not CreateContainer


Decide = Callable[[PodInfo, ContainerInfo], Decision]


@dataclass
class NriConfig:
    socket_path: str = DEFAULT_SOCKET
    plugin_name: str = "nodewarden"
    plugin_index: str = "10"  # two digits; lower indexes are called first
    # Capped at the runtime's request timeout less 0.3 s. A little longer than the image policy's
    # own wait (1.5 s by default), so that the policy's timeout verdict, which says why, is what we
    # answer; the timeout action here is the backstop for a decide() that does not return.
    decision_timeout: float = 1.7
    timeout_action: str = "allow"  # "allow" or "block" (retriable error) when no verdict is ready
    register_timeout: float = 5.0  # for RegisterPlugin, and again for Configure + Synchronize
    reconnect_min: float = 0.5
    reconnect_max: float = 10.0
    decision_workers: int = 4

    def validate(self) -> None:
        if not _NAME_RE.match(self.plugin_name):
            raise ValueError(f"nri plugin_name {self.plugin_name!r}: only [A-Za-z0-9_.+-] allowed")
        if not _INDEX_RE.match(self.plugin_index):
            raise ValueError(f"nri plugin_index {self.plugin_index!r}: must be two digits")
        if self.timeout_action not in ("allow", "block"):
            raise ValueError(f"nri timeout_action {self.timeout_action!r}: must be 'allow' or 'block'")
        if self.decision_timeout <= 0 or self.register_timeout <= 0:
            raise ValueError("nri timeouts must be positive")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("nri reconnect_min must be positive and at most reconnect_max")


@dataclass(frozen=True)
class NriStatus:
    connected: bool
    reason: str  # what we are doing, or why we are not connected
    since: float  # wall-clock time of the last change of `connected`
    runtime: str = ""  # "containerd v2.1.0", once configured
    request_timeout_s: float = 0.0
    counters: Mapping[str, int] = field(default_factory=dict)


class _Session:
    """What one connection to the runtime learned; handlers of that connection share it."""

    def __init__(self):
        self.runtime = ""
        self.request_timeout_s = DEFAULT_REQUEST_TIMEOUT_S
        self.synced = False
        self.shutdown = False
        self.wake = threading.Event()  # set when synced, and when the connection ends


def _pod_info(pod) -> PodInfo:
    return PodInfo(id=pod.id, name=pod.name, namespace=pod.namespace, uid=pod.uid,
                   labels=dict(pod.labels), annotations=dict(pod.annotations))


def _container_info(ctr, at_start: bool = False) -> ContainerInfo:
    annotations = dict(ctr.annotations)
    image = ctr.image.name if ctr.HasField("image") and ctr.image.name else annotations.get(IMAGE_NAME_ANNOTATION, "")
    return ContainerInfo(id=ctr.id, name=ctr.name, pod_id=ctr.pod_sandbox_id, image=image,
                         image_digest=ctr.image.digest if ctr.HasField("image") else "",
                         labels=dict(ctr.labels), annotations=annotations, args=tuple(ctr.args),
                         cgroups_path=ctr.linux.cgroups_path if ctr.HasField("linux") else "", at_start=at_start)


def _describe(pod: PodInfo, ctr: ContainerInfo) -> str:
    return f"container {ctr.name or ctr.id[:12]!r} of pod {pod.namespace}/{pod.name} (image {ctr.image or 'unknown'})"


class NriPlugin:
    """The gate. start() runs it on a thread of its own; stop() disconnects; status() reports."""

    def __init__(self, decide: Decide, config: NriConfig | None = None,
                 timeout_action: Callable[[], str] | None = None):
        """timeout_action: read at each decision (the policy in force, so that a reload reaches it);
        None: config.timeout_action, fixed."""
        self.cfg = config or NriConfig()
        self.cfg.validate()
        self._decide_fn = decide
        self._timeout_action = timeout_action
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._mux: Mux | None = None
        self._thread: threading.Thread | None = None
        # ttrpc handlers: the runtime calls one at a time (it holds a lock across plugin calls),
        # but Configure must be served while our RegisterPlugin call is still waiting.
        self._handlers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nri-rpc")
        self._decisions = ThreadPoolExecutor(max_workers=self.cfg.decision_workers, thread_name_prefix="nri-decide")
        self._status = NriStatus(False, "not started", time.time())
        self._counters = dict.fromkeys(
            ("connects", "allowed", "blocked", "timeout_allowed", "timeout_blocked", "decide_errors",
             "start_blocked"), 0)

    # -- public ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("NriPlugin already started")
        self._thread = threading.Thread(target=self._loop, name="nri-plugin", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            mux = self._mux
        if mux is not None:
            mux.close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._handlers.shutdown(wait=False, cancel_futures=True)
        self._decisions.shutdown(wait=False, cancel_futures=True)
        self._set_status(False, "stopped")

    def status(self) -> NriStatus:
        with self._lock:
            return NriStatus(self._status.connected, self._status.reason, self._status.since,
                             self._status.runtime, self._status.request_timeout_s, dict(self._counters))

    # -- connection ------------------------------------------------------------------------------

    def _loop(self) -> None:
        backoff = self.cfg.reconnect_min
        while not self._stop.is_set():
            try:
                synced = self._session_once()
            except Exception as e:  # never let the gate's thread die: report, back off, retry
                log.exception("nri: session failed")
                self._set_status(False, f"internal error: {type(e).__name__}: {e}")
                synced = False
            if synced:
                backoff = self.cfg.reconnect_min
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.cfg.reconnect_max)

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(_CONNECT_TIMEOUT_S)
            sock.connect(self.cfg.socket_path)
            sock.settimeout(None)
            return sock
        except OSError as e:
            sock.close()
            down = isinstance(e, FileNotFoundError | ConnectionRefusedError)
            hint = " (NRI disabled, or the runtime is down?)" if down else ""
            self._set_status(False, f"cannot connect to {self.cfg.socket_path}: {e.strerror or e}{hint}")
            return None

    def _session_once(self) -> bool:
        """One connection, from connect to its end; True if it got registered and synchronized."""
        sock = self._connect()
        if sock is None:
            return False
        session = _Session()
        mux = Mux(sock)
        server = ttrpc.Server(functools.partial(mux.send, PLUGIN_SERVICE_CONN), self._service(session), self._handlers)
        client = ttrpc.Client(functools.partial(mux.send, RUNTIME_SERVICE_CONN))
        mux.register(PLUGIN_SERVICE_CONN, server.feed)
        mux.register(RUNTIME_SERVICE_CONN, client.feed)
        with self._lock:
            self._mux = mux
        if self._stop.is_set():
            mux.close()
        ended: list[str] = []

        def read() -> None:
            ended.append(mux.run())
            client.close(ended[0])
            session.wake.set()

        reader = threading.Thread(target=read, name="nri-mux", daemon=True)
        reader.start()
        why = "internal error"
        try:
            why = self._register(session, client)
            if why is None:
                self._set_status(True, f"registered as {self.cfg.plugin_index}-{self.cfg.plugin_name}",
                                 runtime=session.runtime, request_timeout_s=session.request_timeout_s)
                self._count("connects")
                reader.join()
                why = "runtime sent Shutdown" if session.shutdown else ended[0] if ended else "closed"
            return session.synced
        finally:
            mux.close()
            reader.join(2.0)
            with self._lock:
                self._mux = None
            if not self._stop.is_set():
                self._set_status(False, f"disconnected: {why}")

    def _register(self, session: _Session, client: ttrpc.Client) -> str | None:
        """RegisterPlugin, then wait for Configure and Synchronize; None on success, else why not."""
        self._set_status(False, "registering")
        req = pb().RegisterPluginRequest(plugin_name=self.cfg.plugin_name, plugin_idx=self.cfg.plugin_index)
        try:
            client.call(RUNTIME_SERVICE, "RegisterPlugin", req.SerializeToString(), self.cfg.register_timeout)
        except (TtrpcError, TimeoutError, ttrpc.ConnectionClosed, ttrpc.ProtocolError, OSError) as e:
            return f"RegisterPlugin failed: {e}"
        # Configure and Synchronize each get the runtime's request timeout; allow for both.
        session.wake.wait(self.cfg.register_timeout + 2 * session.request_timeout_s)
        if not session.synced:
            return "runtime did not configure and synchronize the plugin in time"
        return None

    def _service(self, session: _Session) -> dict[tuple[str, str], ttrpc.Handler]:
        def bind(fn):
            return functools.partial(fn, session)

        return {
            (PLUGIN_SERVICE, "Configure"): bind(self._on_configure),
            (PLUGIN_SERVICE, "Synchronize"): bind(self._on_synchronize),
            (PLUGIN_SERVICE, "Shutdown"): bind(self._on_shutdown),
            (PLUGIN_SERVICE, "CreateContainer"): bind(self._on_create),
            (PLUGIN_SERVICE, "StartContainer"): bind(self._on_start),
            (PLUGIN_SERVICE, "StateChange"): bind(self._on_state_change),
        }

    # -- handlers (run on the ttrpc handler pool) -------------------------------------------------

    def _on_configure(self, session: _Session, payload: bytes, deadline: float | None) -> bytes:
        req = pb().ConfigureRequest.FromString(payload)
        session.runtime = f"{req.runtime_name} {req.runtime_version}".strip()
        if req.request_timeout > 0:
            session.request_timeout_s = req.request_timeout / 1000
        log.info("nri: configured by %s (NRI %s, request timeout %.1fs)", session.runtime or "runtime",
                 req.NRI_version or "unknown", session.request_timeout_s)
        return pb().ConfigureResponse(events=SUBSCRIBED_EVENTS).SerializeToString()

    def _on_synchronize(self, session: _Session, payload: bytes, deadline: float | None) -> bytes:
        req = pb().SynchronizeRequest.FromString(payload)
        if not req.more:
            session.synced = True
            session.wake.set()
        return pb().SynchronizeResponse(more=req.more).SerializeToString()

    def _on_shutdown(self, session: _Session, payload: bytes, deadline: float | None) -> bytes:
        session.shutdown = True
        return pb().Empty().SerializeToString()

    def _on_create(self, session: _Session, payload: bytes, deadline: float | None) -> bytes:
        req = pb().CreateContainerRequest.FromString(payload)
        self._gate(session, req.pod, req.container, deadline, at_start=False)
        return pb().CreateContainerResponse().SerializeToString()

    def _on_start(self, session: _Session, payload: bytes, deadline: float | None) -> bytes:
        req = pb().StartContainerRequest.FromString(payload)
        self._gate(session, req.pod, req.container, deadline, at_start=True)
        return pb().StartContainerResponse().SerializeToString()

    def _on_state_change(self, session: _Session, payload: bytes, deadline: float | None) -> bytes:
        # Runtimes before NRI v0.7 (containerd 1.7) deliver START_CONTAINER here, not as StartContainer.
        evt = pb().StateChangeEvent.FromString(payload)
        if evt.event == EVENT_START_CONTAINER:
            self._gate(session, evt.pod, evt.container, deadline, at_start=True)
        return pb().Empty().SerializeToString()

    # -- the decision ----------------------------------------------------------------------------

    def _budget(self, session: _Session, deadline: float | None) -> float:
        budget = min(self.cfg.decision_timeout, session.request_timeout_s - _RUNTIME_SLACK_S)
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic() - _REPLY_MARGIN_S)
        return max(0.0, budget)

    def _gate(self, session: _Session, pod_pb, ctr_pb, deadline: float | None, at_start: bool) -> None:
        """Return to let the container go on; raise TtrpcError to stop it."""
        pod, ctr = _pod_info(pod_pb), _container_info(ctr_pb, at_start)
        what = _describe(pod, ctr)
        decision, why = self._decide(pod, ctr, self._budget(session, deadline))
        if decision is not None and decision.allow:
            if not at_start:
                self._count("allowed")
            return
        if decision is not None:
            self._count("start_blocked" if at_start else "blocked")
            code = Code.UNAVAILABLE if decision.retriable else Code.PERMISSION_DENIED
            log.warning("nri: blocked %s at %s: %.500s", what, "start" if at_start else "create", decision.message)
            raise TtrpcError(code, f"nodewarden: {what} blocked: {decision.message}")
        if at_start:
            # CreateContainer already applied the timeout action; StartContainer only enforces a
            # verdict that arrived in between.
            return
        if self._action() == "allow":
            self._count("timeout_allowed")
            log.warning("nri: no verdict for %s (%s); allowed by timeout_action=allow", what, why)
            return
        self._count("timeout_blocked")
        raise TtrpcError(Code.UNAVAILABLE, f"nodewarden: no verdict yet for {what} ({why}); "
                                           "blocked by timeout_action=block, retry later")

    def _decide(self, pod: PodInfo, ctr: ContainerInfo, budget: float) -> tuple[Decision | None, str]:
        try:
            fut = self._decisions.submit(self._decide_fn, pod, ctr)
        except RuntimeError:  # the pool is shut down: we are stopping
            return None, "plugin stopping"
        try:
            decision = fut.result(timeout=budget)
        except TimeoutError:
            return None, f"verdict not ready within {budget:.2f}s"
        except Exception as e:  # the callback failed: no verdict, so the timeout action decides
            self._count("decide_errors")
            log.error("nri: decide() failed for %s: %s: %s", _describe(pod, ctr), type(e).__name__, e)
            return None, f"decision failed: {type(e).__name__}: {e}"
        if not isinstance(decision, Decision):
            self._count("decide_errors")
            return None, f"decide() returned {type(decision).__name__}, not Decision"
        return decision, ""

    def _action(self) -> str:
        """The timeout action now: the callback's (the policy in force), or the configured one."""
        if self._timeout_action is None:
            return self.cfg.timeout_action
        try:
            action = self._timeout_action()
        except Exception as e:  # a broken source must not break the gate: the configured action stands
            log.error("nri: timeout action unavailable (%s); using %s", e, self.cfg.timeout_action)
            return self.cfg.timeout_action
        return action if action in ("allow", "block") else self.cfg.timeout_action

    # -- bookkeeping -----------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def _set_status(self, connected: bool, reason: str, runtime: str = "", request_timeout_s: float = 0.0) -> None:
        with self._lock:
            old = self._status
            if old.connected == connected and old.reason == reason:
                return
            since = old.since if old.connected == connected else time.time()
            self._status = NriStatus(connected, reason, since, runtime, request_timeout_s)
        # Log changes only: a runtime that stays away would otherwise log every backoff step.
        level = logging.INFO if connected or reason in ("registering", "stopped") else logging.WARNING
        log.log(level, "nri: %s%s", reason, f" ({runtime})" if runtime else "")
