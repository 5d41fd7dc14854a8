"""containerd client and watcher: keeps a ContainerTable in step with containerd.

The watcher runs one thread (plus a reader for the event stream while connected):
  connect -> subscribe to events -> list namespaces, images, containers, tasks -> replace the table
  -> apply events as they come -> on any error: back off, reconnect, list again.
Subscribing before listing means nothing that happens during the listing is lost (events are
idempotent on the table). Beside it, a fanotify notifier (agent/enrich/cgroupnotify.py) tells the
table each cgroup as runc creates it, so a task gone before its event reaches us still maps to its
cgroup. containerd absent or restarting is a normal state, not an error: the watcher retries
with capped exponential backoff forever and never raises.

Usage:
    table = ContainerTable()
    watcher = ContainerWatcher(ContainerdConfig(socket="/run/containerd/containerd.sock"), table)
    watcher.start()
    info = table.lookup_by_cgroup(event.cgroup_id) or table.lookup_by_mntns(event.mntns)
    watcher.stop()

The API subset we call is proto/containerd/ (containerd's own package names and field numbers);
the namespace of each call goes in the `containerd-namespace` gRPC metadata, as ctr does.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from agent.enrich.cgroupnotify import CgroupNotifier
from agent.enrich.cgroups import CgroupResolver, cgroup_path_from_spec
from agent.enrich.container_table import (
    ContainerTable,
    Entry,
    add_exec,
    clean_labels,
    set_cgroup,
)
from agent.enrich.containerd_client import (
    DEFAULT_SOCKET,
    ContainerdClient,
    ContainerdUnavailable,
    pb_module,
    spec_cgroups_path,
    ts_ns,
)
from agent.enrich.lifecycle import Notice, NullLifecycle
from agent.ratelog import RateLog

__all__ = [
    "ContainerTable",
    "ContainerWatcher",
    "ContainerdClient",
    "ContainerdConfig",
    "ContainerdUnavailable",
]

log = logging.getLogger("nodewarden.containerd")
_IMAGE_CACHE = 1024
_STATES = {1: "created", 2: "running", 3: "stopped", 4: "paused", 5: "paused"}
_MAX_ARGV_BYTES = 32 << 10  # an exec's /proc/<pid>/cmdline read for its container.exec record, at most


@dataclass(frozen=True)
class ContainerdConfig:
    socket: str = DEFAULT_SOCKET
    namespaces: tuple[str, ...] = ()  # () = every namespace containerd has, k8s.io included
    proc_root: str = "/proc"  # /host/proc in a DaemonSet
    rpc_timeout: float = 5.0
    backoff_min: float = 0.2
    backoff_max: float = 10.0
    resync_interval: float = 300.0  # a full relisting now and then heals anything an event missed
    queue_size: int = 4096  # events waiting for the watcher thread; overflow -> dropped + resync
    # Learn cgroup ids as runc creates them (fanotify, agent/enrich/cgroupnotify.py), so a task that is
    # gone before its containerd event reaches us still gets its cgroup. Needs CAP_SYS_ADMIN; off: pid only.
    notify_cgroups: bool = True


_END = object()


class ContainerWatcher:
    """Keeps `table` in step with containerd, on its own thread. start()/stop(); never raises."""

    def __init__(
        self,
        config: ContainerdConfig,
        table: ContainerTable,
        resolver: CgroupResolver | None = None,
        client_factory=ContainerdClient,
        on_image: Callable[[str, str], None] | None = None,
        lifecycle=None,
    ):
        self.config = config
        self.table = table
        self.resolver = resolver or CgroupResolver(self.config.proc_root)
        self._factory = client_factory
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._call = None
        self._resync = False
        self._images: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._early: OrderedDict[tuple[str, str, int], tuple[str, int, int]] = OrderedDict()
        self._early_lock = threading.Lock()
        self._rlog = RateLog(log)
        self._notifier: CgroupNotifier | None = None
        self._events: queue.Queue | None = None  # the session's event queue, while connected
        self._busy = False  # applying an event or a listing
        self.counters = dict.fromkeys(
            (
                "connects",
                "disconnects",
                "syncs",
                "events",
                "events_bad",
                "events_dropped",
                "errors",
                "cgroup_unresolved",
            ),
            0,
        )
        self.connected = False
        # Called with (namespace, image name) for every image containerd lists or reports created or
        # updated (pulled): the image gate scans ahead of any container start. On the watcher thread:
        # it must not block.
        self.on_image = on_image
        # The lifecycle sink (agent/enrich/lifecycle.py): told each container and image step as the table
        # applies it (created, started, exited, oom, deleted, exec; image pulled, deleted), never the
        # listing after a (re)connect. NullLifecycle when lifecycle events are off.
        self.lifecycle = lifecycle if lifecycle is not None else NullLifecycle()
        self._early_argv: OrderedDict[tuple[str, str, str], tuple[str, ...]] = OrderedDict()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        if self.config.notify_cgroups and self._notifier is None and self.resolver.cgroup2_mount:
            notifier = CgroupNotifier(self.resolver.cgroup2_mount, self.table.note_cgroup)
            self._notifier = notifier if notifier.start() else None
        self._thread = threading.Thread(target=self._run, name="nw-containerd", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()  # wakes the reader blocked on the stream
        if self._thread:
            self._thread.join(timeout)
        if self._notifier is not None:
            self._notifier.stop()
            self._notifier = None

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the table holds a full listing from the current connection."""
        return self._synced.wait(timeout)

    def stats(self) -> dict[str, int]:
        n = self._notifier
        notify = {f"cgroup_notify_{k}": v for k, v in n.counters.items()} if n is not None else {}
        return {**self.counters, "connected": int(self.connected), **self.table.stats(), **notify}

    def behind(self) -> bool:
        """True while containerd events wait for the watcher or one is being applied: a container whose
        cgroup was just created may be described any moment (agent/enrich/hold.py holds longer then)."""
        q = self._events
        return self._busy or (q is not None and not q.empty())

    def drops(self) -> dict[str, int]:
        """Losses for the pipeline's accounting (agent.drops, nodewarden_drops_total): containerd events
        the watcher could not take (queue full: a resync follows) or could not decode."""
        c = self.counters
        return {"containerd.events_dropped": c["events_dropped"], "containerd.events_bad": c["events_bad"]}

    def sync_once(self) -> int:
        """One listing into the table, without events (for `nodewarden containers`)."""
        client = None
        try:
            client = self._factory(self.config.socket, self.config.rpc_timeout)
            return self._sync(client)
        except grpc.RpcError as e:
            raise ContainerdUnavailable(
                f"containerd at {self.config.socket}: {e.code().name}: {e.details()}"
            ) from e
        finally:
            if client is not None:
                client.close()

    # --- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.config.backoff_min
        while not self._stop.is_set():
            client = None
            try:
                client = self._factory(self.config.socket, self.config.rpc_timeout)
                self._session(client)
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                if code != grpc.StatusCode.CANCELLED or not self._stop.is_set():
                    self._rlog.warning(
                        "rpc",
                        "containerd at %s unavailable (%s); retrying",
                        self.config.socket,
                        getattr(code, "name", e),
                    )
            except Exception:  # the watcher must outlive any bug in one session
                self.counters["errors"] += 1
                self._rlog.exception(
                    "session", "containerd watcher session failed (%d so far); retrying", self.counters["errors"]
                )
            finally:
                if self.connected:
                    self.counters["disconnects"] += 1
                    backoff = self.config.backoff_min  # it was up: come back quickly after a restart
                self.connected = False
                self._synced.clear()
                self._call = None
                if client is not None:
                    client.close()
            self.table.expire()  # tombstones age out while containerd is away too
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.config.backoff_max)

    def _session(self, client: ContainerdClient) -> None:
        client.version()  # fails fast (UNAVAILABLE) when nothing listens on the socket
        call = client.subscribe()
        self._call = call
        if self._stop.is_set():
            call.cancel()
            return
        q: queue.Queue = queue.Queue(maxsize=max(16, self.config.queue_size))
        done = threading.Event()
        reader = threading.Thread(
            target=self._pump, args=(call, q, done), name="nw-containerd-events", daemon=True
        )
        reader.start()
        self._events = q
        try:
            self._busy = True
            self._sync(client)
            self._busy = False
            self.connected = True
            self.counters["connects"] += 1
            self._synced.set()
            log.info("containerd at %s: connected, %d containers", self.config.socket, len(self.table))
            last_sync = last_expire = time.monotonic()
            while not self._stop.is_set():
                try:
                    item = q.get(timeout=1.0)
                except queue.Empty:
                    item = None
                if item is _END:
                    return
                if isinstance(item, grpc.RpcError):
                    raise item
                if item is not None:
                    self._busy = True
                    try:
                        self._handle(client, item)
                    finally:
                        self._busy = False
                now = time.monotonic()
                if now - last_expire >= 5.0:
                    self.table.expire()
                    last_expire = now
                if self._resync or now - last_sync >= self.config.resync_interval:
                    self._resync = False
                    self._sync(client)
                    last_sync = now
        finally:
            self._events, self._busy = None, False
            done.set()
            call.cancel()
            reader.join(2.0)

    def _pump(self, call, q: queue.Queue, done: threading.Event) -> None:
        """Stream -> bounded queue. Overflow drops the event, counts it and asks for a full resync."""
        end: object = _END
        try:
            for env in call:
                if env.topic == "/tasks/create":
                    self._resolve_early(env)
                elif env.topic == "/tasks/exec-started" and self.lifecycle.enabled:
                    self._argv_early(env)
                try:
                    q.put_nowait(env)
                except queue.Full:
                    self.counters["events_dropped"] += 1
                    self._resync = True
        except grpc.RpcError as e:
            end = e
        while not done.is_set():  # hand over the end marker; the consumer may be busy
            try:
                q.put(end, timeout=0.5)
                return
            except queue.Full:
                continue

    def _resolve_early(self, env) -> None:
        """Read a new task's cgroup on the reader thread, before the event waits in the queue."""
        try:
            ev = pb_module("events.task_pb2").TaskCreate.FromString(env.event.value)
        except Exception:
            return  # counted when the watcher thread decodes it
        res = self.resolver.resolve_pid(ev.pid)
        with self._early_lock:
            self._early[(env.namespace, ev.container_id, ev.pid)] = res
            while len(self._early) > 256:  # bounded: entries the watcher never consumed
                self._early.popitem(last=False)

    def _argv_early(self, env) -> None:
        """Read an exec'd process's command line on the reader thread, before the event waits in the
        queue: `ctr task exec ... sh -c ...` may be gone in a millisecond."""
        try:
            ev = pb_module("events.task_pb2").TaskExecStarted.FromString(env.event.value)
        except Exception:
            return  # counted when the watcher thread decodes it
        argv = _read_argv(self.config.proc_root, ev.pid)
        with self._early_lock:
            self._early_argv[(env.namespace, ev.container_id, ev.exec_id)] = argv
            while len(self._early_argv) > 256:  # bounded: entries the watcher never consumed
                self._early_argv.popitem(last=False)

    def _tell(self, action: str, ns: str, container_id: str, ts: int, **kw) -> None:
        """One lifecycle step to the sink, with the table's record of the container as it is now."""
        if self.lifecycle.enabled:
            info = self.table.lookup(ns, container_id)
            self.lifecycle.notice(Notice(action, ts or time.time_ns(), ns, info, container_id, **kw))

    # --- listing --------------------------------------------------------------------------------

    def _sync(self, client: ContainerdClient) -> int:
        namespaces = list(self.config.namespaces) or client.namespaces()
        entries: list[Entry] = []
        for ns in namespaces:
            digests = {}
            for img in client.images(ns):
                digests[img.name] = img.target.digest
                self._cache_image(ns, img.name, img.target.digest)
                self._image_seen(ns, img.name)
            # containerd 1.6 fills `id` (= the container id) in a listing, leaving container_id empty.
            tasks = {t.container_id or t.id: t for t in client.tasks(ns)}
            for c in client.containers(ns):
                entry = self._entry_from_record(ns, c, digests.get(c.image, ""))
                t = tasks.get(c.id)
                if t is not None:
                    state = _STATES.get(int(t.status), "")
                    # A stopped task's pid may already belong to another process: do not read it.
                    self._apply_task(entry, t.pid if state in ("created", "running", "paused") else 0, state)
                entries.append(entry)
        n = self.table.replace_all(entries)
        self.counters["syncs"] += 1
        return n

    def _entry_from_record(self, ns: str, c, digest: str) -> Entry:
        return Entry(
            namespace=ns,
            id=c.id,
            image=c.image,
            image_digest=digest,
            labels=clean_labels(dict(c.labels)),
            spec_cgroup_path=cgroup_path_from_spec(spec_cgroups_path(c.spec)),
            created_ns=ts_ns(c.created_at),
        )

    def _resolve(
        self, pid: int, spec_path: str, pre: tuple[str, int, int] | None = None
    ) -> tuple[str, int, int]:
        """(cgroup path, cgroup id, mount ns) of a task: from its pid, else from the cgroup path in the
        spec (runc keeps that directory until the task is deleted, after the pid is gone), else from
        what note_cgroup() was told (a cgroup_mkdir source sees it even after it is removed)."""
        path, cg, mnt = pre if pre and pre[1] else self.resolver.resolve_pid(pid)
        if not cg and spec_path:
            path = spec_path
            cg = self.resolver.cgroup_id(spec_path) or self.table.cgroup_for_path(spec_path)
        elif not cg and path:
            cg = self.table.cgroup_for_path(path)
        return path, cg, mnt

    def _apply_task(self, entry: Entry, pid: int, state: str) -> None:
        """Fill pid, cgroup and mount namespace from the live task (outside the table's lock)."""
        entry.pid, entry.state = pid, state
        path, cg, mnt = self._resolve(pid, entry.spec_cgroup_path)
        if not cg and state in ("created", "running", "paused"):
            self.counters["cgroup_unresolved"] += 1
        set_cgroup(entry, path, cg)
        entry.mntns = mnt or entry.mntns
        if pid and not entry.started_ns:
            entry.started_ns = self.resolver.start_ns(pid)

    def _cache_image(self, ns: str, name: str, digest: str) -> None:
        self._images[(ns, name)] = digest
        self._images.move_to_end((ns, name))
        while len(self._images) > _IMAGE_CACHE:
            self._images.popitem(last=False)

    def _image_digest(self, client: ContainerdClient, ns: str, name: str) -> str:
        if not name:
            return ""
        digest = self._images.get((ns, name))
        if digest is None:
            img = client.image(ns, name)
            if img is None:
                return ""  # not cached: the image may be created later (ImageCreate fills it in)
            digest = img.target.digest
            self._cache_image(ns, name, digest)
        return digest

    # --- events ---------------------------------------------------------------------------------

    def _handle(self, client: ContainerdClient, env) -> None:
        self.counters["events"] += 1
        ns = env.namespace
        if self.config.namespaces and ns not in self.config.namespaces:
            return
        spec = _TOPICS.get(env.topic)
        if spec is None:
            return
        module, cls_name, handler = spec
        try:
            ev = getattr(pb_module(module), cls_name).FromString(env.event.value)
        except Exception:  # protobuf's DecodeError, or a payload of another type
            self.counters["events_bad"] += 1
            return
        getattr(self, handler)(client, ns, ev, ts_ns(env.timestamp))

    def _fetch_entry(self, client: ContainerdClient, ns: str, container_id: str, image: str = "") -> Entry:
        c = client.container(ns, container_id)
        if c is None:  # already deleted: keep what the event said
            return Entry(
                namespace=ns, id=container_id, image=image, image_digest=self._image_digest(client, ns, image)
            )
        return self._entry_from_record(ns, c, self._image_digest(client, ns, c.image))

    def _store_record(self, ns: str, fresh: Entry, revive: bool) -> None:
        def fn(e: Entry) -> str:
            e.image, e.image_digest, e.labels = (
                fresh.image,
                fresh.image_digest or e.image_digest,
                fresh.labels,
            )
            e.spec_cgroup_path = fresh.spec_cgroup_path or e.spec_cgroup_path
            e.created_ns = fresh.created_ns or e.created_ns
            return "container"

        self.table.update(ns, fresh.id, fn, revive=revive)

    def _on_container_create(self, client, ns, ev, ts) -> None:
        self._store_record(ns, self._fetch_entry(client, ns, ev.id, ev.image), revive=True)
        self._tell("created", ns, ev.id, ts)

    def _on_container_update(self, client, ns, ev, ts) -> None:
        self._store_record(ns, self._fetch_entry(client, ns, ev.id, ev.image), revive=False)

    def _on_container_delete(self, client, ns, ev, ts) -> None:
        self.table.mark_deleted(ns, ev.id)
        self._tell("deleted", ns, ev.id, ts)

    def _known(self, client, ns: str, container_id: str) -> Entry:
        entry = self.table.get_entry(ns, container_id)
        if entry is None:  # a task event before (or without) its container's: fetch the record
            entry = self._fetch_entry(client, ns, container_id)
            self._store_record(ns, entry, revive=False)
        return entry

    def _on_task_create(self, client, ns, ev, ts) -> None:
        self._task_state(client, ns, ev.container_id, ev.pid, "created", 0)

    def _on_task_start(self, client, ns, ev, ts) -> None:
        self._task_state(client, ns, ev.container_id, ev.pid, "running", ts)
        self._tell("started", ns, ev.container_id, ts, pid=ev.pid)

    def _task_state(self, client, ns: str, container_id: str, pid: int, state: str, started: int) -> None:
        # Read the pid's cgroup before any RPC: a short-lived task may be gone in milliseconds. The
        # event reader thread may have read it already, as soon as the event arrived.
        with self._early_lock:
            pre = self._early.pop((ns, container_id, pid), None)
        path, cg, mnt = pre if pre and pre[1] else self.resolver.resolve_pid(pid)
        entry = self._known(client, ns, container_id)
        if not cg and not entry.cgroup_id:
            path, cg, mnt = self._resolve(pid, entry.spec_cgroup_path, (path, cg, mnt))
        if not cg and not entry.cgroup_id:
            self.counters["cgroup_unresolved"] += 1
        if state == "running" and not started:
            started = self.resolver.start_ns(pid)

        def fn(e: Entry) -> str:
            e.pid, e.state = pid, state
            set_cgroup(e, path, cg)
            e.mntns = mnt or e.mntns
            e.started_ns = started or e.started_ns
            return "task"

        self.table.update(ns, container_id, fn)

    def _on_exec_added(self, client, ns, ev, ts) -> None:
        self._known(client, ns, ev.container_id)

        def fn(e: Entry) -> None:
            add_exec(e, ev.exec_id, 0)

        self.table.update(ns, ev.container_id, fn)

    def _on_exec_started(self, client, ns, ev, ts) -> None:
        # runc exec joins the container's cgroup: the cgroup id already maps it. Resolve from the exec's
        # pid only when the init task's cgroup was never found.
        entry = self._known(client, ns, ev.container_id)
        path, cg, mnt = ("", 0, 0) if entry.cgroup_id else self.resolver.resolve_pid(ev.pid)

        def fn(e: Entry) -> str:
            add_exec(e, ev.exec_id, ev.pid)
            if cg and not e.cgroup_id:
                set_cgroup(e, path, cg)
                e.mntns = e.mntns or mnt
            return "exec"

        self.table.update(ns, ev.container_id, fn)
        if self.lifecycle.enabled:
            with self._early_lock:
                argv = self._early_argv.pop((ns, ev.container_id, ev.exec_id), ())
            self._tell("exec", ns, ev.container_id, ts, pid=ev.pid, exec_id=ev.exec_id, argv=argv)

    def _on_task_exit(self, client, ns, ev, ts) -> None:
        init = ev.id in ("", ev.container_id)

        def fn(e: Entry) -> str | None:
            if init:
                e.state = "stopped"
                return "exit"
            e.execs.pop(ev.id, None)
            return None

        if self.table.get_entry(ns, ev.container_id) is not None:
            self.table.update(ns, ev.container_id, fn)
        if init:
            self._tell("exited", ns, ev.container_id, ts, pid=ev.pid, exit_status=ev.exit_status)

    def _on_task_oom(self, client, ns, ev, ts) -> None:
        self._tell("oom", ns, ev.container_id, ts)

    def _on_task_delete(self, client, ns, ev, ts) -> None:
        if ev.id not in ("", ev.container_id) or self.table.get_entry(ns, ev.container_id) is None:
            return

        def fn(e: Entry) -> None:
            # The cgroup id stays indexed: kernel events of the task may still be in flight.
            e.state, e.pid = "stopped", 0
            e.execs.clear()

        self.table.update(ns, ev.container_id, fn)

    def _image_seen(self, ns: str, name: str) -> None:
        if self.on_image is not None:
            try:
                self.on_image(ns, name)
            except Exception as e:  # a listener never stops the watcher
                self._rlog.warning("on_image", "image listener failed: %s", e)

    def _on_image_change(self, client, ns, ev, ts) -> None:
        previous = self._images.pop((ns, ev.name), "")
        self._image_seen(ns, ev.name)
        if self.lifecycle.enabled:
            digest = self._image_digest(client, ns, ev.name)
            self.lifecycle.notice(Notice("image_pulled", ts or time.time_ns(), ns, image=ev.name, digest=digest,
                                         previous_digest=previous if previous != digest else ""))
        # A container created before its image record (or while it was missing) gets its digest now.
        for info in self.table.snapshot():
            if info.namespace == ns and info.image == ev.name and not info.image_digest:
                digest = self._image_digest(client, ns, ev.name)
                if not digest:
                    return

                def fn(e: Entry, d: str = digest) -> str:
                    e.image_digest = e.image_digest or d
                    return "container"

                self.table.update(ns, info.id, fn)

    def _on_image_delete(self, client, ns, ev, ts) -> None:
        digest = self._images.pop((ns, ev.name), "")
        if self.lifecycle.enabled:
            self.lifecycle.notice(Notice("image_deleted", ts or time.time_ns(), ns, image=ev.name, digest=digest))


def _read_argv(proc_root: str, pid: int) -> tuple[str, ...]:
    """/proc/<pid>/cmdline as argv, () when the process is gone or unreadable; bounded."""
    if pid <= 0:
        return ()
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as f:
            raw = f.read(_MAX_ARGV_BYTES)
    except OSError:
        return ()
    return tuple(os.fsdecode(a) for a in raw.rstrip(b"\0").split(b"\0")) if raw else ()


# topic -> (module under agent.gen.containerd, message, handler). Topics from containerd's
# runtime/events.go (TaskCreateEventTopic ...) and services/{containers,images}.
_TOPICS = {
    "/containers/create": ("events.container_pb2", "ContainerCreate", "_on_container_create"),
    "/containers/update": ("events.container_pb2", "ContainerUpdate", "_on_container_update"),
    "/containers/delete": ("events.container_pb2", "ContainerDelete", "_on_container_delete"),
    "/tasks/create": ("events.task_pb2", "TaskCreate", "_on_task_create"),
    "/tasks/start": ("events.task_pb2", "TaskStart", "_on_task_start"),
    "/tasks/exec-added": ("events.task_pb2", "TaskExecAdded", "_on_exec_added"),
    "/tasks/exec-started": ("events.task_pb2", "TaskExecStarted", "_on_exec_started"),
    "/tasks/exit": ("events.task_pb2", "TaskExit", "_on_task_exit"),
    "/tasks/oom": ("events.task_pb2", "TaskOOM", "_on_task_oom"),
    "/tasks/delete": ("events.task_pb2", "TaskDelete", "_on_task_delete"),
    "/images/create": ("events.image_pb2", "ImageCreate", "_on_image_change"),
    "/images/update": ("events.image_pb2", "ImageUpdate", "_on_image_change"),
    "/images/delete": ("events.image_pb2", "ImageDelete", "_on_image_delete"),
}
