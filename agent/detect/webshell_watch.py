"""Web shells written at run time: files written under a web root are scanned when their writer closes
them, and a hit is an alert (rule malware.webshell), with the policy's `webshell.action: block` also the
file quarantined and its writer killed (issue 11).

When a file is scanned:
- at its close: the file probe remembers, in the kernel, each fd opened for writing below a web root
  (webshell.web_roots, the close_prefix trie) and sends file.close when that fd is closed
  (probes/file.bpf.c);
- at its writer's exit, and once more webshell.linger_s after its open: the writing opens come here
  anyway (every writing open is reported), so a file whose writer wrote through a dup'ed or inherited fd,
  exited without close(2), or matched only a glob (webshell.globs, `*/webapps/*`: no kernel prefix) is
  still scanned. "The next open by another process" is not used: the linger bounds the wait instead;
- when a rename puts a file below a web root (written in /tmp, then moved in: the content is complete).
A file is scanned once per (device, inode, mtime, size): the later triggers of an unchanged file cost
an fstat; and a file is in the queue at most once (a loop of writes to one file takes one slot).

How the file is read: through the writer's mount namespace, /proc/<pid>/root, after checking that pid is
still in the event's mount namespace (a reused pid would name another root); when the writer has gone, a
live process of its container (the container's init, from the container table through the event's
enrichment); a host process's file through the host's init (/proc/1/root, in the host's mount namespace),
or the agent's own root when the writer shared the agent's mount namespace. The path is resolved with
openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) below that root, and its last component is never
followed: a symlink planted in the container cannot make the agent read, or quarantine, a file of the
host. It is looked up as O_PATH and opened for reading only when it is a regular file (a FIFO would block
the scanner, a device's open has effects). At most webshell.max_file_bytes are read.

Never on the event path: the pipeline's worker only files the event (a dict update, a queue put); one
scanner thread here reads and scans. The queue is bounded (webshell.queue_size): a full queue drops the
file, counted as the `webshell.scan` drop (the agent's drop metrics and agent.drops events). A file that
could not be read for another reason than having been removed is counted as `webshell.unreadable`.

Block: the writer is killed first (agent/enforce/userkill.py: a pidfd, after checking the pid was not
reused), so it cannot rewrite the file, then the file is renamed aside in its own directory to
`.<name>.nw-quarantine-<unix time>` and its mode set to 000; each is an enforcement.block (points
user.kill and file.quarantine) with the old and new path. Only inside containers unless the policy's
webshell.allow_host says so; outside, the alert says `alert`.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import hashlib
import logging
import os
import posixpath
import queue
import re
import stat
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from agent.config import WebshellConfig
from agent.enforce.userkill import ProcessKiller
from agent.events import AlertEvent, EnforcementEvent, Enriched, ExitEvent, FileEvent, Finding, Op
from agent.imagegate import webshell
from agent.policy.webshell import WebshellPolicy
from agent.ratelog import RateLog
from agent.sensors.common import PREFIX_MAX
from agent.vocab import Severity

log = logging.getLogger("nodewarden.webshell")

RULE_ID = "malware.webshell"
RULE_NAME = "Web shell written at run time"
TECHNIQUE = "T1505.003"  # MITRE ATT&CK: Server Software Component: Web Shell
TACTIC = "persistence"
_NO_CONTAINER = ("", "host", "unknown")
_AT_FDCWD = -100
_O_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
_CLOSE, _OPEN, _RENAME = Op.FILE_CLOSE, Op.FILE_OPEN, Op.FILE_RENAME  # observe runs on every event
_HEAD = 512  # bytes read first: enough for webshell.language_of to say whether the file is web code

# openat2(2), Linux >= 5.6; the same number on every architecture (the unified syscall table).
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(rootfd: int, path: str, flags: int) -> int:
    """A fd for `path` resolved inside the directory `rootfd` as if it were `/` (symlinks and `..` never
    leave it), the last component not followed. OSError as os.open raises it."""
    how = _OpenHow(flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, rootfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


@dataclass(frozen=True, slots=True)
class _Settings:
    roots: tuple[str, ...]
    globs: re.Pattern | None
    # the longest literal part of each glob ("/webapps/" of "*/webapps/*"): a path holding none of them
    # cannot match, and the test costs a substring search instead of the regex's backtracking (~1 us)
    literals: tuple[str, ...]
    max_bytes: int
    block: bool
    allow_host: bool


@dataclass(slots=True)
class _Job:
    path: str  # absolute, as the writer sees it
    en: Enriched  # the event behind it (its process and container): the alert's subject
    why: str  # close, exit, linger, rename, evicted


class NullWebshellWatch:
    """webshell.enabled: false: nothing is watched (the pipeline does not call observe)."""

    enabled = False

    def observe(self, en: Enriched) -> None:
        pass

    def drops(self) -> dict[str, int]:
        return {}

    def status(self) -> dict | None:
        return None

    def set_policy(self, policy) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class WebshellWatch:
    """observe(en) on the pipeline's worker for every event; one scanner thread (start/stop). `emit`
    takes the typed records (alert, enforcement.block); `probes` (a ProbeSet) gets the web roots as its
    close prefixes; `hashdb` has lookup(hex sha256) -> label or None (agent/imagegate/hashdb.py)."""

    enabled = True

    def __init__(self, cfg: WebshellConfig, emit, policy: WebshellPolicy | None = None, probes=None,
                 killer: ProcessKiller | None = None, hashdb=None, proc_root: str = "/proc"):
        self.cfg = cfg
        self._emit = emit
        self._probes = probes
        self._killer = killer or ProcessKiller(proc_root)
        self._hashdb = hashdb
        self._proc = proc_root
        self._q: queue.Queue[_Job] = queue.Queue(maxsize=max(1, cfg.queue_size))
        self._lock = threading.Lock()  # pending and by_pid: the worker files, the scanner lingers
        self._pending: OrderedDict[tuple[int, str], tuple[Enriched, float]] = OrderedDict()
        self._by_pid: dict[int, set[str]] = {}
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        # (mount namespace, path) of the files in the queue: a file written again while it waits (a loop of
        # writes, a log) takes one slot, not one per close. Added on the worker, removed by the scanner.
        self._queued: set[tuple[int, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._interest: tuple | None = None  # (settings, interest()): rebuilt when the settings change
        self._host_mntns = _mntns(os.path.join(proc_root, "1"))
        self._self_mntns = _mntns(os.path.join(proc_root, "self"))
        self._drops: Counter[str] = Counter({"webshell.scan": 0, "webshell.unreadable": 0})
        self.counts: Counter[str] = Counter(dict.fromkeys(
            ("queued", "coalesced", "scanned", "repeat", "gone", "not_web", "shells", "known_bad", "quarantined",
             "killed"), 0))
        self._rlog = RateLog(log)
        self.settings = self._settings(policy or WebshellPolicy())

    # -- configuration ------------------------------------------------------------------------------

    def _settings(self, p: WebshellPolicy) -> _Settings:
        """The settings in force; ValueError naming a config web root the kernel cannot match (the policy's
        are checked by its loader), so a bad config stops the agent at construction, before anything starts."""
        c = self.cfg
        for root in c.web_roots:
            if not root.startswith("/") or not 0 < len(root.encode("utf-8", "surrogatepass")) <= PREFIX_MAX:
                raise ValueError(f"webshell.web_roots: {root!r} must be an absolute path of at most {PREFIX_MAX} bytes")
        globs = c.globs if p.globs is None else p.globs
        pattern = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)) if globs else None
        literals = tuple(max(re.split(r"[*?\[\]]", g), key=len) for g in globs)
        if not all(literals):
            literals = ()  # a glob of wildcards only ("*"): every path goes to the regex
        return _Settings(tuple(c.web_roots if p.web_roots is None else p.web_roots), pattern, literals,
                         c.max_file_bytes if p.max_file_bytes is None else p.max_file_bytes,
                         p.action == "block", p.allow_host)

    def set_policy(self, policy: WebshellPolicy) -> None:
        """A new policy's webshell section (a reload): one assignment; the kernel's prefixes follow."""
        self.settings = s = self._settings(policy)
        if self._started and self._probes is not None:
            self._probes.set_close_prefixes(s.roots)

    def start(self) -> None:
        """After the probes are loaded (the close prefixes go into their maps)."""
        if self._probes is not None:
            self._probes.set_close_prefixes(self.settings.roots)
        self._started = True
        self._thread = threading.Thread(target=self._loop, name="nw-webshell", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def drops(self) -> dict[str, int]:
        return dict(self._drops)

    def status(self) -> dict:
        """For `nodewarden status`: active when it blocks; what it watches and what it has done."""
        s = self.settings
        where = " (the host too)" if s.allow_host else " (in containers)"
        return {"active": s.block, "detail": f"web shells written at run time: {'block' if s.block else 'alert'}"
                f"{where if s.block else ''}; {len(s.roots)} web roots in the kernel, globs "
                f"{'on' if s.globs is not None else 'off'}; " + ", ".join(f"{n} {k}" for k, n in self.counts.items())}

    # -- the event path: file the event, never read a file here ----------------------------------------

    def observe(self, en: Enriched) -> None:
        ev = en.event
        if type(ev) is ExitEvent:
            if ev.pid in self._by_pid:
                self._writer_exited(ev.pid)
            return
        if type(ev) is not FileEvent:
            return
        op = ev.op
        if op is _CLOSE:
            path = _path(en)
            if path:
                self._queue(_Job(path, en, "close"))
        elif op is _OPEN:
            if ev.ret >= 0 and ev.flags & _O_WRITES:
                path = _path(en)
                if path and self._matches(path):
                    self._remember(ev.pid, path, en)
        elif op is _RENAME and ev.ret == 0:
            target = _rename_target(en)
            if target and self._matches(target):
                self._queue(_Job(target, en, "rename"))

    def interest(self) -> tuple:
        """What observe() can act on, for the pipeline's compiled loop (Pipeline._watch): ({op: 1 every event,
        2 when its path, 3 when its path2 may match}, the web roots, the globs' literals, or None when a glob
        has none and every path may match). The same tuple while the settings last (identity: no rebuild)."""
        s = self.settings
        cached = self._interest
        if cached is not None and cached[0] is s:
            return cached[1]
        literals = () if s.globs is None else (s.literals or None)
        out = ({int(Op.EXIT): 1, int(_CLOSE): 1, int(_OPEN): 2, int(_RENAME): 3}, s.roots, literals)
        self._interest = (s, out)
        return out

    def _matches(self, path: str) -> bool:
        s = self.settings
        if path.startswith(s.roots):
            return True
        if s.globs is None:
            return False
        for lit in s.literals:  # a loop, not any(): a generator costs more than the searches
            if lit in path:
                break
        else:
            if s.literals:
                return False
        return s.globs.match(path) is not None

    def _remember(self, pid: int, path: str, en: Enriched) -> None:
        evicted = None
        with self._lock:
            key = (pid, path)
            old = self._pending.get(key)
            self._pending[key] = (en, old[1] if old is not None else time.monotonic())
            self._by_pid.setdefault(pid, set()).add(path)
            if len(self._pending) > self.cfg.pending_max:
                (opid, opath), (oen, _t) = self._pending.popitem(last=False)
                self._forget(opid, opath)
                evicted = _Job(opath, oen, "evicted")
        if evicted is not None:  # never forgotten unscanned: scanned now instead
            self._queue(evicted)

    def _forget(self, pid: int, path: str) -> None:
        paths = self._by_pid.get(pid)
        if paths is not None:
            paths.discard(path)
            if not paths:
                del self._by_pid[pid]

    def _writer_exited(self, pid: int) -> None:
        with self._lock:
            jobs = [_Job(path, self._pending.pop((pid, path))[0], "exit") for path in self._by_pid.pop(pid, ())]
        for job in jobs:
            self._queue(job)

    def _queue(self, job: _Job) -> None:
        key = (job.en.event.mntns, job.path)
        if key in self._queued:  # waiting already: scanned once, as it is when its turn comes
            self.counts["coalesced"] += 1
            return
        try:
            self._q.put_nowait(job)
            self._queued.add(key)
            self.counts["queued"] += 1
        except queue.Full:
            self._drops["webshell.scan"] += 1
            self._rlog.warning("queue", "web-shell scan queue full (%d): %s not scanned", self._q.maxsize, job.path)

    # -- the scanner thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._q.get(timeout=0.2)
            except queue.Empty:
                job = None
            if job is not None:
                self.run(job)
            self._linger()

    def _linger(self) -> None:
        """Scan the written files whose open is linger_s old (their writer still runs)."""
        limit = time.monotonic() - self.cfg.linger_s
        due = []
        with self._lock:
            while self._pending:
                (pid, path), (en, since) = next(iter(self._pending.items()))
                if since > limit:
                    break
                del self._pending[(pid, path)]
                self._forget(pid, path)
                due.append(_Job(path, en, "linger"))
        for job in due:
            self.run(job)

    def run(self, job: _Job) -> None:
        """Scan one file and act on it; never raises (a stage never stops the agent)."""
        self._queued.discard((job.en.event.mntns, job.path))
        try:
            self._scan(job)
        except Exception as e:
            self._drops["webshell.unreadable"] += 1
            self._rlog.error("scan", "web-shell check of %s failed: %r", job.path, e)

    def _root(self, en: Enriched) -> int | None:
        """An O_PATH fd of the root the writer sees, or None when none is left to read it through."""
        ev = en.event
        c = en.container
        host = c is None or c.id in _NO_CONTAINER
        # (pid, the mount namespace it must be in; 0: any): the writer itself (a reused pid would name
        # another root), else its container's init, else for a host process the host's init
        candidates = [(ev.pid, ev.mntns)]
        if not host and c.pid and c.pid != ev.pid:
            candidates.append((c.pid, 0))
        if host and ev.mntns == self._host_mntns:
            candidates.append((1, ev.mntns))
        for pid, mntns in candidates:
            base = os.path.join(self._proc, str(pid))
            if mntns and _mntns(base) != mntns:
                continue
            try:
                return os.open(os.path.join(base, "root"), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
        if host and ev.mntns and ev.mntns == self._self_mntns:
            return os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # a process in the agent's own view
        return None

    def _scan(self, job: _Job) -> None:
        s = self.settings
        rootfd = self._root(job.en)
        if rootfd is None:
            self._drops["webshell.unreadable"] += 1
            self._rlog.warning("root", "web-shell check: no process left to read %s through", job.path)
            return
        try:
            try:
                fd = _open_regular(rootfd, job.path)
            except OSError as e:
                if isinstance(e, _NotRegular) or e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                    # removed or renamed since, a symlink (never followed), not a regular file (never opened)
                    self.counts["gone"] += 1
                else:
                    self._drops["webshell.unreadable"] += 1
                    self._rlog.warning("open", "web-shell check: cannot open %s: %s", job.path, e.strerror)
                return
            try:
                self._check(job, s, rootfd, fd)
            finally:
                os.close(fd)
        finally:
            os.close(rootfd)

    def _check(self, job: _Job, s: _Settings, rootfd: int, fd: int) -> None:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if key in self._seen:
            self.counts["repeat"] += 1
            return
        self._seen[key] = None
        while len(self._seen) > self.cfg.seen_max:
            self._seen.popitem(last=False)
        data = _read(fd, min(_HEAD, s.max_bytes))
        web = webshell.language_of(job.path, data) is not None
        hashes = self._hashdb is not None and getattr(self._hashdb, "db", self._hashdb) is not None  # a store is open
        if not web and not hashes:
            self.counts["not_web"] += 1
            return
        if len(data) == _HEAD:
            data += _read(fd, s.max_bytes - len(data))
        self.counts["scanned"] += 1
        hits = webshell.scan(job.path, data, webshell.Limits(max_bytes=s.max_bytes)) if web else []
        shell = [h for h in hits if h.confidence >= webshell.THRESHOLD]
        label = None
        if hashes and st.st_size <= s.max_bytes:  # a digest of part of a file matches nothing
            label = self._hashdb.lookup(hashlib.sha256(data).hexdigest())
        if not shell and label is None:
            return
        self.counts["shells" if shell else "known_bad"] += 1
        self._act(job, s, shell, label, rootfd, fd, st)

    # -- acting on a hit -----------------------------------------------------------------------------------

    def _act(self, job: _Job, s: _Settings, shell: list, label: str | None, rootfd: int, fd: int, st) -> None:
        en, c = job.en, job.en.container
        in_container = c is not None and c.id not in _NO_CONTAINER
        block = s.block and (in_container or s.allow_host)
        findings = [Finding("malware", h.severity, f"webshell.{h.rule}", job.path, h.detail, source=h.source,
                            sink=h.sink, snippet=h.snippet, confidence=h.confidence, family=h.family)
                    for h in shell]
        if label is not None:
            findings.append(Finding("malware", Severity.CRITICAL, "hashdb", job.path, f"known-bad sha256: {label}",
                                    confidence=1.0))
        severity = max(f.severity for f in findings)
        now = time.time_ns()
        self._emit(AlertEvent(now, RULE_ID, RULE_NAME, _describe(job.path, c), severity, (TACTIC,), (TECHNIQUE,),
                              subject=en, output=_output(job, findings), action="kill" if block else "alert",
                              findings=tuple(findings)))
        if not block:
            return
        ev = en.event
        start = en.process.start_ns if en.process is not None and en.process.pid == ev.pid else 0
        outcome = self._killer.kill(ev.pid, ev.ts_ns, start)
        self.counts["killed"] += outcome == "killed"
        done = time.time_ns()
        self._emit(EnforcementEvent(done, "user.kill", "kill", f"{RULE_ID}: the writer of {job.path}",
                                    severity, outcome=outcome, subject=en, duration_ms=max(0, done - ev.ts_ns) / 1e6,
                                    rule_name=RULE_ID, rule_category="webshell"))
        moved, outcome = _quarantine(rootfd, fd, job.path, st)
        self.counts["quarantined"] += moved is not None
        self._emit(EnforcementEvent(time.time_ns(), "file.quarantine", "quarantine",
                                    f"{RULE_ID}: {job.path}" + (f" -> {moved}" if moved else ""), severity,
                                    outcome=outcome, subject=en, rule_name=RULE_ID, rule_category="webshell",
                                    quarantine_path=moved or ""))


class _NotRegular(OSError):
    """The path names a FIFO, socket, device node or directory: never opened for reading."""


def _open_regular(rootfd: int, path: str) -> int:
    """A read fd of `path` below `rootfd`, only if it is a regular file: it is looked up as O_PATH first, so a
    FIFO, socket or device node planted under a web root is never opened (an open of a device has effects,
    a FIFO's blocks), then reopened for reading through that very inode."""
    pfd = open_in_root(rootfd, path, os.O_PATH)
    try:
        if not stat.S_ISREG(os.fstat(pfd).st_mode):
            raise _NotRegular(path)
        return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(pfd)


def _quarantine(rootfd: int, fd: int, path: str, st) -> tuple[str | None, str]:
    """Rename the file aside in its own directory and make it mode 000: (new path, outcome)."""
    parent, name = posixpath.split(path)
    new = f".{name}.nw-quarantine-{int(time.time())}"
    try:
        dfd = open_in_root(rootfd, parent or "/", os.O_PATH | os.O_DIRECTORY)
    except OSError as e:
        return None, f"quarantine failed: {parent}: {e.strerror}"
    try:
        now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return None, "quarantine failed: the file was replaced since it was scanned (not moved)"
        os.rename(name, new, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fchmod(fd, 0)  # the scanned inode itself, wherever its name is now
        return posixpath.join(parent, new), f"quarantined: renamed to {posixpath.join(parent, new)}, mode 000"
    except OSError as e:
        return None, f"quarantine failed: {e.strerror}"
    finally:
        os.close(dfd)


def _path(en: Enriched) -> str:
    ev = en.event
    if en.path_resolved:
        return en.path_resolved
    path = ev.path
    if path.startswith("/"):
        return posixpath.normpath(path) if "/." in path or "//" in path else path  # normpath costs ~0.5 us
    return ""  # relative to a directory fd: not resolvable here (known gap)


def _rename_target(en: Enriched) -> str:
    """A rename's new name, absolute: a relative one joined to the process's cwd as the process table knows it
    (from its exec: `cd /var/www/html && mv /tmp/x.php .` runs mv there), when the call was relative to the cwd."""
    ev = en.event
    target = ev.path2
    if not target.startswith("/"):
        cwd = en.process.cwd if en.process is not None and ev.dirfd == _AT_FDCWD else ""
        if not cwd:
            return ""
        target = posixpath.join(cwd, target)
    return posixpath.normpath(target)


def _mntns(proc_pid: str) -> int:
    try:
        return os.stat(os.path.join(proc_pid, "ns", "mnt")).st_ino
    except OSError:
        return 0


def _read(fd: int, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _describe(path: str, c) -> str:
    where = f"container {c.name or c.id[:12]}" if c is not None and c.id not in _NO_CONTAINER else "the host"
    return f"A file written at run time in {where} under a web root is a web shell: {path}"


def _output(job: _Job, findings: list[Finding]) -> str:
    f = findings[0]
    what = f.family or f.rule
    flow = f" {f.source} -> {f.sink}" if f.source or f.sink else ""
    snippet = f": {f.snippet}" if f.snippet else ""
    return f"web shell {job.path} ({what}{flow}, confidence {f.confidence:.2f}, seen at {job.why}){snippet}"
