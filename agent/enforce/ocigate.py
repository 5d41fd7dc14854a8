"""The agent side of the OCI pre-start gate: a unix-socket server that answers nodewarden-runc (docs/ocigate.md).

Protocol (version 1), one request and one reply per connection, each one JSON object on one line:
    wrapper -> agent  {"v": 1, "op": "create", "namespace", "id", "bundle", "image", "container_type", "pod",
                       "pod_namespace", "name", "annotations", "cgroups_path", "rootfs", "args", "deadline_ms"}
    agent -> wrapper  {"allow": bool, "message": str, "reason": "decided" | "timeout" | "error" | "busy" | "peer"}
`deadline_ms` is what the wrapper has left of its own deadline when it sends; the server answers before that,
by the decide callback's verdict or, failing that, by the configured timeout action, so a hung or slow
decide never holds container creation longer than the wrapper's deadline. Only peers with an allowed uid
(root) are answered with a verdict; the socket file is 0600 as well, the uid check guards against a
socket handed over by fd.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import orjson

from agent.enforce.decide import Decision

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/nodewarden/gate.sock"  # keep in sync with runc_wrapper.DEFAULT_SOCKET
PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 256 << 10
# Time kept back from the wrapper's deadline for the reply to travel and the wrapper to act on it.
REPLY_MARGIN = 0.15
_READ_TIMEOUT = 1.0  # a peer that does not send its one line in this long is dropped
_SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)


@dataclass(frozen=True, slots=True)
class GateRequest:
    """One `runc create` waiting for a verdict. `image` comes from the CRI annotation, or from the resolver."""

    namespace: str
    id: str
    bundle: str = ""
    image: str = ""
    container_type: str = ""  # CRI: "sandbox" (the pause container) or "container"; "" outside CRI
    pod: str = ""
    pod_namespace: str = ""
    name: str = ""
    cgroups_path: str = ""
    rootfs: str = ""
    args: tuple[str, ...] = ()
    annotations: dict = field(default_factory=dict)
    op: str = "create"
    peer_pid: int = 0
    deadline_ms: int = 0

    @classmethod
    def from_json(cls, obj: dict, peer_pid: int = 0) -> GateRequest:
        def s(key: str) -> str:
            v = obj.get(key, "")
            return v if isinstance(v, str) else ""

        ann = obj.get("annotations")
        args = obj.get("args")
        deadline = obj.get("deadline_ms")
        return cls(
            namespace=s("namespace"), id=s("id"), bundle=s("bundle"), image=s("image"),
            container_type=s("container_type"), pod=s("pod"), pod_namespace=s("pod_namespace"), name=s("name"),
            cgroups_path=s("cgroups_path"), rootfs=s("rootfs"), op=s("op") or "create",
            args=tuple(a for a in args if isinstance(a, str)) if isinstance(args, list) else (),
            annotations={k: v for k, v in ann.items() if isinstance(k, str) and isinstance(v, str)}
            if isinstance(ann, dict) else {},
            peer_pid=peer_pid,
            deadline_ms=deadline if isinstance(deadline, int) and deadline > 0 else 0,
        )  # fmt: skip


Decide = Callable[[GateRequest], Decision]
Resolver = Callable[[GateRequest], str]


def containerd_image_resolver(client) -> Resolver:
    """Image name of a container from containerd's record, for containers started outside CRI (ctr,
    nerdctl): their OCI spec carries no image annotation, but the record exists before `runc create`."""

    def resolve(req: GateRequest) -> str:
        c = client.container(req.namespace, req.id)
        return getattr(c, "image", "") if c is not None else ""

    return resolve


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix stream socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


class GateServer:
    """Answers nodewarden-runc on `path`: decide(request) -> Decision, within `timeout` seconds.

    When decide does not answer in time (or raises, or every worker is still busy with earlier requests)
    the reply follows `timeout_action` ("allow" or "block"). A decide that hangs keeps its worker; at most
    `max_concurrency` decide calls run at once and further requests get the timeout action at once.
    `resolve(request) -> image name` fills in `image` when the spec did not carry it; it runs inside the
    same deadline as decide."""

    def __init__(
        self,
        path: str = DEFAULT_SOCKET,
        decide: Decide | None = None,
        timeout: float | Callable[[], float] = 1.5,
        *,
        timeout_action: str | Callable[[], str] = "allow",
        max_concurrency: int = 8,
        allowed_uids: tuple[int, ...] = (0,),
        resolve: Resolver | None = None,
    ):
        if not callable(timeout_action) and timeout_action not in ("allow", "block"):
            raise ValueError(f"timeout_action must be 'allow' or 'block', not {timeout_action!r}")
        if decide is None:
            raise ValueError("decide callback required")
        self.path = path
        self.decide = decide
        # Callables are read at each request (the policy in force, so that a reload reaches them).
        self._timeout = timeout if callable(timeout) else float(timeout)
        self._timeout_action = timeout_action
        self.max_concurrency = max(1, int(max_concurrency))
        self.allowed_uids = tuple(allowed_uids)
        self.resolve = resolve
        self._sock: socket.socket | None = None
        self._inode = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight = 0  # decide calls submitted and not finished (hung ones included)
        self._conns = threading.BoundedSemaphore(self.max_concurrency * 4)
        self._counts = dict.fromkeys(
            ("requests", "allowed", "blocked", "timeouts", "errors", "busy", "bad_requests", "peer_rejected"), 0)
        self._max_latency = 0.0
        self._last_latency = 0.0

    @property
    def timeout(self) -> float:
        t = self._timeout
        if not callable(t):
            return t
        try:
            return max(0.0, float(t()))
        except Exception:  # a broken source must not break the gate
            return 1.5

    @property
    def timeout_action(self) -> str:
        a = self._timeout_action
        if not callable(a):
            return a
        try:
            action = a()
        except Exception:
            return "allow"  # the documented default of on_timeout.action
        return action if action in ("allow", "block") else "allow"

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> GateServer:
        if self._thread is not None:
            return self
        self._sock = self._listen()
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="ocigate-accept", daemon=True)
        self._thread.start()
        log.info("OCI gate listening on %s (timeout %.2fs, on timeout: %s)", self.path, self.timeout,
                 self.timeout_action)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        self._sock = None
        self._unlink_ours()

    def __enter__(self) -> GateServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def status(self) -> dict:
        with self._lock:
            return {
                "listening": self._thread is not None and self._thread.is_alive(),
                "path": self.path,
                "timeout_s": self.timeout,
                "timeout_action": self.timeout_action,
                "inflight": self._inflight,
                "last_latency_ms": round(self._last_latency * 1000, 3),
                "max_latency_ms": round(self._max_latency * 1000, 3),
                **self._counts,
            }

    def _listen(self) -> socket.socket:
        """Bind under a temporary name, chmod 0600, then rename over `path`: the socket is never reachable
        with a wider mode (no process-wide umask change, which would race other threads)."""
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, mode=0o755, exist_ok=True)
        tmp = os.path.join(d, f".{os.path.basename(self.path)}.{os.getpid()}")
        _unlink_socket(tmp)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(tmp)
            os.chmod(tmp, 0o600)
            s.listen(128)
            if os.path.lexists(self.path) and not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise FileExistsError(f"{self.path} exists and is not a socket; refusing to replace it")
            os.rename(tmp, self.path)
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            s.close()
            _unlink_socket(tmp)
            raise
        s.settimeout(0.25)  # the accept loop checks for stop() this often
        return s

    def _unlink_ours(self) -> None:
        """Remove the socket file only if it is still ours (a newer agent may have replaced it)."""
        try:
            if self._inode and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        self._inode = 0

    # --- serving ---------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        sock = self._sock
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)  # EMFILE and the like: do not spin
                continue
            accepted = time.monotonic()
            if not self._conns.acquire(blocking=False):
                # Flooded: answer with the timeout action right here rather than queue past the deadline.
                self._count("busy")
                _drain_nowait(conn)
                self._reply(conn, self._fallback("busy", "too many pending gate requests"), accepted)
                continue
            threading.Thread(target=self._serve, args=(conn, accepted), name="ocigate-conn", daemon=True).start()

    def _serve(self, conn: socket.socket, accepted: float) -> None:
        try:
            # Read the request before any reply, even a refusal: closing a unix socket with unread data
            # resets it, and the peer would lose the reply queued for it.
            obj = self._read_request(conn)
            pid, uid, _ = peer_credentials(conn)
            if uid not in self.allowed_uids:
                self._count("peer_rejected")
                log.warning("OCI gate: refused peer pid %d uid %d", pid, uid)
                self._reply(conn, {"allow": False, "message": f"peer uid {uid} not allowed", "reason": "peer"},
                            accepted, record=False)
                return
            if obj is None:
                self._count("bad_requests")
                conn.close()
                return
            req = GateRequest.from_json(obj, peer_pid=pid)
            self._reply(conn, self._answer(req, accepted), accepted)
        except Exception:  # one bad connection never takes the server down
            log.exception("OCI gate: request failed")
            self._count("errors")
            self._reply(conn, self._fallback("error", "internal error in the gate"), accepted)
        finally:
            self._conns.release()

    def _read_request(self, conn: socket.socket) -> dict | None:
        conn.settimeout(_READ_TIMEOUT)
        buf = b""
        try:
            while b"\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buf += chunk
                if len(buf) > MAX_REQUEST_BYTES:
                    return None
            obj = orjson.loads(buf.split(b"\n", 1)[0])
        except (OSError, orjson.JSONDecodeError):
            return None
        return obj if isinstance(obj, dict) and obj.get("v") == PROTOCOL_VERSION else None

    def _budget(self, req: GateRequest, accepted: float, timeout: float) -> float:
        budget = timeout
        if req.deadline_ms:
            budget = min(budget, req.deadline_ms / 1000 - REPLY_MARGIN)
        return max(0.0, budget - (time.monotonic() - accepted))

    def _answer(self, req: GateRequest, accepted: float) -> dict:
        with self._lock:
            if self._inflight >= self.max_concurrency:
                busy = True
            else:
                busy = False
                self._inflight += 1
        if busy:
            self._count("busy")
            return self._fallback("busy", "every gate worker is busy")
        try:
            call = _Call(self._decide, req, self._done)
        except RuntimeError:  # no thread to be had (process limit): answer, do not leak the slot
            self._done()
            self._count("errors")
            return self._fallback("error", "cannot start a decide thread")
        timeout = self.timeout
        if not call.wait(self._budget(req, accepted, timeout)):
            self._count("timeouts")
            log.warning("OCI gate: no verdict for %s/%s in time; %s", req.namespace, req.id, self.timeout_action)
            return self._fallback("timeout", f"no verdict within {timeout:g}s")
        if call.error is not None:
            e = call.error
            self._count("errors")
            log.warning("OCI gate: decide failed for %s/%s: %s", req.namespace, req.id, e)
            return self._fallback("error", f"gate error: {type(e).__name__}: {e}")
        d = call.result
        if not isinstance(d, Decision):
            self._count("errors")
            return self._fallback("error", f"decide returned {type(d).__name__}, not a Decision")
        return {"allow": bool(d.allow), "message": str(d.message), "reason": "decided"}

    def _decide(self, req: GateRequest) -> Decision:
        if not req.image and self.resolve is not None:
            try:
                image = self.resolve(req)
            except Exception as e:  # the verdict may not need the image; decide sees it empty
                log.warning("OCI gate: cannot resolve the image of %s/%s: %s", req.namespace, req.id, e)
                image = ""
            if image:
                req = replace(req, image=image)
        return self.decide(req)

    def _done(self) -> None:
        with self._lock:
            self._inflight -= 1

    def _fallback(self, reason: str, why: str) -> dict:
        action = self.timeout_action
        return {
            "allow": action == "allow",
            "message": f"{why}; timeout action: {action}",
            "reason": reason,
        }

    def _reply(self, conn: socket.socket, reply: dict, accepted: float, record: bool = True) -> None:
        if record:  # counted before sending, so status() agrees with what a wrapper has already seen
            latency = time.monotonic() - accepted
            with self._lock:
                self._counts["requests"] += 1
                self._counts["allowed" if reply["allow"] else "blocked"] += 1
                self._last_latency = latency
                self._max_latency = max(self._max_latency, latency)
        try:
            conn.settimeout(0.5)
            conn.sendall(orjson.dumps(reply) + b"\n")
        except OSError:
            pass  # the wrapper gave up already: it acts on its own deadline
        finally:
            conn.close()

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1


class _Call:
    """decide() on a daemon thread of its own: a decide that never returns costs one thread (bounded by
    max_concurrency) and never holds a reply or the agent's exit, as a pool's joined workers would."""

    __slots__ = ("result", "error", "_event", "_fn", "_arg", "_done")

    def __init__(self, fn, arg, done: Callable[[], None]):
        self.result = None
        self.error: BaseException | None = None
        self._event = threading.Event()
        self._fn, self._arg, self._done = fn, arg, done
        threading.Thread(target=self._run, name="ocigate-decide", daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = self._fn(self._arg)
        except Exception as e:
            self.error = e
        finally:
            self._event.set()
            self._done()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


def _drain_nowait(conn: socket.socket) -> None:
    """Read what the peer already sent without waiting (see _serve on resets). A wrapper that had not sent
    yet gets EPIPE and falls back to its own failure mode, which is what a flood should come to anyway."""
    conn.setblocking(False)
    try:
        for _ in range(MAX_REQUEST_BYTES // 65536 + 1):
            if not conn.recv(65536):
                break
    except OSError:
        pass


def _unlink_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass
