"""cgroup v2 and mount-namespace identity of a process, as the kernel reports it to BPF.

`bpf_get_current_cgroup_id()` returns the kernfs node id of the task's cgroup in the default (v2)
hierarchy, which is the inode number of that cgroup's directory under the cgroup2 mount. So the id of
a container is `stat(<cgroup2 mount>/<path from the "0::" line of /proc/<pid>/cgroup>).st_ino`. On a
hybrid host (v1 controllers, cgroup2 at /sys/fs/cgroup/unified) runc still gives every container its
own v2 directory, so the id still tells containers apart. kernfs ids are 64-bit (inode | generation
<< 32), so an id is never reused by a later cgroup; mount-namespace inodes (nsfs) are, which is why the
mount namespace is only a fallback key.

Parsers are pure and take text, so tests run them on fixture files; the readers take a procfs root so
an agent in a DaemonSet can point them at the host's /proc.
"""

from __future__ import annotations

import os
import re

# /proc/<pid>/mountinfo escapes space, tab, newline and backslash as \ooo.
_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_cgroup2_mount(mountinfo: str) -> str | None:
    """Mount point of the cgroup2 hierarchy from a mountinfo text; None when there is none.

    A mount of the hierarchy's root ("/" in field 4) wins over a bind mount of a sub-cgroup, since
    paths in /proc/<pid>/cgroup are relative to the root (or to our cgroup namespace's root).
    """
    best: str | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or not rfields or rfields[0] != "cgroup2":
            continue
        point = _unescape(fields[4])
        if fields[3] == "/":
            return point
        best = best or point
    return best


def parse_proc_cgroup(text: str) -> str | None:
    """The cgroup v2 path (the "0::" line) of a /proc/<pid>/cgroup text; None when absent."""
    for line in text.splitlines():
        hier, _, rest = line.partition(":")
        if hier != "0":
            continue
        controllers, sep, path = rest.partition(":")
        if sep and controllers == "" and path.startswith("/"):
            # "(deleted)" is appended when the cgroup was removed under a still-running process.
            return path.removesuffix(" (deleted)")
    return None


def expand_systemd_slice(slice_name: str) -> str:
    """systemd's slice nesting as a path: "a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice" (as runc does)."""
    if slice_name in ("", "-.slice"):
        return "/"
    if not slice_name.endswith(".slice") or "/" in slice_name:
        return ""
    stem = slice_name.removesuffix(".slice")
    parts, path, prefix = stem.split("-"), "", ""
    if "" in parts:  # "a--b.slice" or a leading/trailing dash is invalid for systemd
        return ""
    for part in parts:
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def cgroup_path_from_spec(cgroups_path: str) -> str:
    """The cgroup v2 path runc uses for an OCI spec's linux.cgroupsPath; "" when it cannot say.

    cgroupfs driver: the path as is ("/k8s.io/<id>", "/<ns>/<id>" for ctr). systemd driver:
    "slice:prefix:name" -> "<slice path>/<prefix>-<name>.scope" (CRI with SystemdCgroup = true).
    """
    if not cgroups_path:
        return ""
    if cgroups_path.startswith("/"):
        return os.path.normpath(cgroups_path)
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        return ""
    slice_name, prefix, name = parts
    base = expand_systemd_slice(slice_name or "system.slice")
    if not base or not name:
        return ""
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return os.path.join(base, unit)


class CgroupResolver:
    """Reads cgroup ids and mount namespaces of live processes; every method returns 0/"" on error."""

    def __init__(self, proc_root: str = "/proc", cgroup2_mount: str | None = None):
        self.proc_root = proc_root.rstrip("/") or "/"
        if cgroup2_mount is None:
            cgroup2_mount = self._find_mount()
        self.cgroup2_mount = cgroup2_mount  # None: no cgroup2 here, ids are unknown

    def _find_mount(self) -> str | None:
        try:
            with open(os.path.join(self.proc_root, "self", "mountinfo")) as f:
                return parse_cgroup2_mount(f.read())
        except OSError:
            return None

    def pid_cgroup_path(self, pid: int) -> str:
        try:
            with open(os.path.join(self.proc_root, str(pid), "cgroup")) as f:
                return parse_proc_cgroup(f.read()) or ""
        except (OSError, ValueError):
            return ""

    def cgroup_id(self, path: str) -> int:
        """Inode of <cgroup2 mount>/<path>, i.e. the id BPF sees; 0 when it does not exist (any more)."""
        if not self.cgroup2_mount or not path.startswith("/"):
            return 0
        full = os.path.normpath(os.path.join(self.cgroup2_mount, path.lstrip("/")))
        base = self.cgroup2_mount.rstrip("/") + "/"
        if full != self.cgroup2_mount and not full.startswith(base):  # ".." in a path from a spec
            return 0
        try:
            return os.stat(full).st_ino
        except OSError:
            return 0

    def mntns(self, pid: int) -> int:
        try:
            return os.stat(os.path.join(self.proc_root, str(pid), "ns", "mnt")).st_ino
        except OSError:
            return 0

    def resolve_pid(self, pid: int) -> tuple[str, int, int]:
        """(cgroup v2 path, cgroup id, mount-ns inode) of a live pid; empty/0 for what is unknown."""
        if pid <= 0:
            return "", 0, 0
        path = self.pid_cgroup_path(pid)
        return path, self.cgroup_id(path) if path else 0, self.mntns(pid)

    def start_ns(self, pid: int) -> int:
        """Wall-clock start time of a pid in ns (from /proc/<pid>/stat and the boot time); 0 if unknown."""
        try:
            with open(os.path.join(self.proc_root, str(pid), "stat")) as f:
                stat = f.read()
            with open(os.path.join(self.proc_root, "stat")) as f:
                btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
            # comm (field 2) may contain spaces and parentheses: fields resume after the last ")".
            ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
            return btime * 1_000_000_000 + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, StopIteration):
            return 0


def cgroup2_root(given: str | None = None) -> str:
    """Where the cgroup2 hierarchy is mounted: `given` when set, else this mount namespace's (from
    /proc/self/mountinfo), else /sys/fs/cgroup."""
    if given:
        return given
    try:
        with open("/proc/self/mountinfo") as f:
            return parse_cgroup2_mount(f.read()) or "/sys/fs/cgroup"
    except OSError:
        return "/sys/fs/cgroup"
