"""cgroup v2 directories as they are created, from fanotify: the watcher's own cgroup source.

Why: the watcher learns a task's cgroup id by reading /proc/<pid>/cgroup and stat()ing that directory
when containerd's /tasks/create event reaches it. A task that lives a few milliseconds (a `ctr run
--rm` job, a crash-looping init) has exited and runc has removed its cgroup by then whenever the
node is busy: containerd, the gRPC stream and our reader thread all wait for a CPU, and there is
nothing left to read. Measured here with `stress-ng --cpu 4` on 2 cores: 1 to 9 of 50 such
containers ended with no cgroup id (tests/e2e/test_containerd_watcher.py).

fanotify on the cgroup2 filesystem (FAN_MARK_FILESYSTEM, FAN_CREATE | FAN_ONDIR) tells us of each
new directory the moment runc makes it, long before containerd's event (the directory lives through
runc create, start, the run and the delete). The kernel reports the parent as a file handle (kernfs:
the parent's 64-bit node id) and the name; we stat() the new directory at once and hand (path, id)
to the container table (`note_cgroup`), which resolves the container from its spec's cgroup path
even after the directory is gone. kernfs creates directories without a dentry inode, so the kernel
cannot report the child's own id at the mkdir (FAN_REPORT_TARGET_FID yields nothing here), and on
a busy node even that stat() can come after runc's delete. So FAN_MODIFY too: the creator's first
write inside the new directory (runc writes the task's pid to its cgroup.procs) is reported with
the directory's own handle, its kernfs id taken in the kernel at the write; paired with the
creator's pending mkdir by pid, that gives the id however late we read it. In the agent the
cgroup probe (probes/cgroup.bpf.c) captures the id in the kernel too; both feed the same table.

Needs CAP_SYS_ADMIN (a filesystem mark) and Linux >= 5.9 (FAN_REPORT_DFID_NAME); without them
start() returns False and says why once: attribution then falls back to the pid and the spec's path.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger("nodewarden.containerd")

# linux/fanotify.h
_FAN_CLASS_NOTIF = 0x0
_FAN_REPORT_FID = 0x200
_FAN_REPORT_DIR_FID = 0x400
_FAN_REPORT_NAME = 0x800
_FAN_CLOEXEC = 0x1
_FAN_NONBLOCK = 0x2
_FAN_MARK_ADD = 0x1
_FAN_MARK_FILESYSTEM = 0x100
_FAN_MODIFY = 0x2
_FAN_CREATE = 0x100
_FAN_ONDIR = 0x40000000
_FAN_Q_OVERFLOW = 0x4000
_INFO_DFID_NAME = 2
_AT_FDCWD = -100

_META = struct.Struct("<IBBHQii")  # struct fanotify_event_metadata
_INFO = struct.Struct("<BBH")  # struct fanotify_event_info_header
_FH = struct.Struct("<Ii")  # struct file_handle: handle_bytes, handle_type
_PARENTS = 4096  # directory handle -> path, bounded
_PENDING = 256  # directories whose stat() came too late, waiting for a write inside them
_KERNFS = 0xFE  # FILEID_KERNFS: f_handle is the node's 64-bit id, the cgroup id

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]


class CgroupNotifier:
    """Calls on_cgroup(path relative to the cgroup2 mount, cgroup id) for each new cgroup directory."""

    def __init__(self, mount: str, on_cgroup: Callable[[str, int], None]):
        self.mount = mount.rstrip("/") or "/"
        self.on_cgroup = on_cgroup
        self.counters = {"created": 0, "paired": 0, "missed": 0, "overflows": 0, "unknown_parent": 0}
        self._fd = -1
        self._mount_fd = -1
        self._parents: OrderedDict[bytes, str] = OrderedDict()
        self._pending: OrderedDict[tuple[int, str], None] = OrderedDict()  # (creator pid, path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Open the notification group and start the reader thread; False (warned once) when unavailable."""
        if not self._open():
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nw-cgroup-notify", daemon=True)
        self._thread.start()
        return True

    def _open(self) -> bool:
        flags = _FAN_CLASS_NOTIF | _FAN_REPORT_FID | _FAN_REPORT_DIR_FID | _FAN_REPORT_NAME | _FAN_NONBLOCK
        fd = _libc.fanotify_init(flags | _FAN_CLOEXEC, os.O_RDONLY)
        if fd < 0:
            return self._unavailable("fanotify_init", ctypes.get_errno())
        mask = _FAN_CREATE | _FAN_ONDIR | _FAN_MODIFY
        if _libc.fanotify_mark(fd, _FAN_MARK_ADD | _FAN_MARK_FILESYSTEM, mask, _AT_FDCWD, self.mount.encode()) != 0:
            err = ctypes.get_errno()
            os.close(fd)
            return self._unavailable(f"fanotify_mark({self.mount})", err)
        self._fd = fd
        self._mount_fd = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return True

    def _unavailable(self, call: str, err: int) -> bool:
        log.warning("cgroup notifications unavailable (%s: %s): short-lived containers may go unattributed "
                    "unless the cgroup probe runs", call, os.strerror(err))
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        for fd in (self._fd, self._mount_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._mount_fd = -1

    def _run(self) -> None:
        poll = select.poll()
        poll.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if not poll.poll(500):
                continue
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError as e:
                log.warning("cgroup notifications stopped: %s", e)
                return
            self._events(data)

    def _events(self, data: bytes) -> None:
        off = 0
        while off + _META.size <= len(data):
            length, _, _, meta_len, mask, fd, pid = _META.unpack_from(data, off)
            if length < _META.size:
                return
            if fd >= 0:
                os.close(fd)
            if mask & _FAN_Q_OVERFLOW:
                self.counters["overflows"] += 1  # the kernel queue overflowed: the pid path has to do
            else:
                self._event(data[off + meta_len : off + length], mask, pid)
            off += length

    def _event(self, info: bytes, mask: int, pid: int) -> None:
        off = 0
        while off + _INFO.size <= len(info):
            itype, _, ilen = _INFO.unpack_from(info, off)
            if ilen == 0:
                return
            if itype == _INFO_DFID_NAME:
                body = info[off + _INFO.size + 8 : off + ilen]  # after the fsid
                nbytes, _ = _FH.unpack_from(body)
                handle = body[: _FH.size + nbytes]
                name = body[_FH.size + nbytes :].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if mask & _FAN_CREATE:
                    self._created(handle, name, pid)
                else:
                    self._modified(handle, pid)
            off += ilen

    def _created(self, handle: bytes, name: str, pid: int) -> None:
        parent = self._parent_path(handle)
        if parent is None:
            self.counters["unknown_parent"] += 1
            return
        rel = f"{parent.rstrip('/')}/{name}"
        try:
            cg_id = os.stat(self.mount + rel).st_ino
        except OSError:
            # Gone already (a busy node, a task of milliseconds): the creator's first write inside it
            # (runc puts the task in with cgroup.procs) carries the directory's id; wait for that.
            self._pending[(pid, rel)] = None
            while len(self._pending) > _PENDING:
                self._pending.popitem(last=False)
                self.counters["missed"] += 1
            return
        self.counters["created"] += 1
        self._known(cg_id, rel)

    def _modified(self, handle: bytes, pid: int) -> None:
        """A write to a file in a cgroup directory: the kernel reported that directory's id at the write."""
        if handle in self._parents or not self._pending:
            return
        nbytes, htype = _FH.unpack_from(handle)
        if htype != _KERNFS or nbytes != 8:
            return
        mine = [key for key in self._pending if key[0] == pid]
        if not mine:
            return
        key = mine[-1]  # the creator's newest directory: runc makes one per task, nested ones parent first
        del self._pending[key]
        self.counters["paired"] += 1
        self._known(struct.unpack_from("<Q", handle, _FH.size)[0], key[1])

    def _known(self, cg_id: int, rel: str) -> None:
        self._remember(struct.pack("<IiQ", 8, _KERNFS, cg_id), rel)  # the parent handle of its children
        self.on_cgroup(rel, cg_id)

    def _parent_path(self, handle: bytes) -> str | None:
        path = self._parents.get(handle)
        if path is not None:
            self._parents.move_to_end(handle)
            return path
        fd = _libc.open_by_handle_at(self._mount_fd, handle, os.O_PATH | os.O_CLOEXEC)
        if fd < 0:
            if ctypes.get_errno() not in (errno.ESTALE, errno.ENOENT):
                log.debug("open_by_handle_at: %s", os.strerror(ctypes.get_errno()))
            return None
        try:
            full = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if full != self.mount and not full.startswith(self.mount.rstrip("/") + "/"):
            return None
        rel = full[len(self.mount.rstrip("/")) :] or "/"
        self._remember(handle, rel)
        return rel

    def _remember(self, handle: bytes, rel: str) -> None:
        self._parents[handle] = rel
        while len(self._parents) > _PARENTS:
            self._parents.popitem(last=False)
