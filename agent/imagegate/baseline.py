"""Baseline checks on a container's OCI runtime spec and its image config.

Each finding names its CIS Docker Benchmark v1.6.0 recommendation (section 4: images, section 5:
container runtime). The OCI spec has no "privileged" flag: a privileged container is recognized
by what the runtime does for one (every capability in the bounding set, no masked paths, all
devices allowed), which is also what `ctr run --privileged` and CRI write.
"""

from __future__ import annotations

import os

from agent.imagegate.model import Finding, Severity

CIS = "CIS Docker Benchmark v1.6.0"

# Docker's default capability set: adding anything beyond it is what 5.3 asks to justify.
DEFAULT_CAPS = frozenset(
    "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP NET_BIND_SERVICE "
    "SYS_CHROOT KILL AUDIT_WRITE".split()
)
# Capabilities that give a path to the host (module loading, raw devices, namespaces, tracing).
DANGEROUS_CAPS = frozenset(
    "SYS_ADMIN SYS_MODULE SYS_RAWIO SYS_PTRACE SYS_BOOT SYS_TIME NET_ADMIN DAC_READ_SEARCH BPF PERFMON "
    "MAC_ADMIN MAC_OVERRIDE SYSLOG SYS_RESOURCE LINUX_IMMUTABLE SYS_PACCT WAKE_ALARM BLOCK_SUSPEND".split()
)
SENSITIVE_HOST_PATHS = (
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/lib",
    "/lib64",
    "/usr",
    "/bin",
    "/sbin",
    "/root",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/docker",
    "/run/containerd",
    "/var/run/containerd",
    "/etc/kubernetes",
    "/var/log",
)


# Namespaces a container should have of its own: OCI spec type -> (/proc/<pid>/ns file, severity, CIS).
HOST_NAMESPACES = {
    "pid": ("pid", Severity.HIGH, "5.15"),
    "ipc": ("ipc", Severity.HIGH, "5.16"),
    "network": ("net", Severity.HIGH, "5.9"),
    "uts": ("uts", Severity.LOW, "5.20"),
}


def _f(sev: Severity, rule: str, cis: str, detail: str, path: str = "") -> Finding:
    return Finding("baseline", sev, rule, path=path, detail=detail, cis=f"{CIS} {cis}")


# The spec is the runtime's (or, for `nodewarden scan --spec`, the user's): a field of the wrong
# type reads as absent, which is the unsafe reading (findings, never a crash).
def _d(v) -> dict:
    return v if isinstance(v, dict) else {}


def _seq(v) -> list | tuple:
    return v if isinstance(v, list | tuple) else ()


def _caps(spec: dict) -> set[str]:
    caps = _d(_d(spec.get("process")).get("capabilities"))
    bounding = _seq(caps.get("bounding")) or _seq(caps.get("effective"))
    return {str(c).upper().removeprefix("CAP_") for c in bounding if isinstance(c, str)}


def _privileged(spec: dict, caps: set[str]) -> bool:
    linux = _d(spec.get("linux"))
    all_devices = any(
        isinstance(d, dict) and d.get("allow") and d.get("type", "a") in ("a", "", None) and d.get("major") is None
        for d in _seq(_d(linux.get("resources")).get("devices"))
    )
    return len(caps) >= 38 or ("SYS_ADMIN" in caps and not linux.get("maskedPaths") and all_devices)


def _uid(user: dict) -> int:
    """The process uid; one that is not a non-negative integer counts as root (the unsafe reading)."""
    uid = user.get("uid", 0)
    return uid if type(uid) is int and uid >= 0 else 0


def check_spec(spec: dict, proc_root: str = "/proc", host_ns_dir: str = "") -> list[Finding]:
    """Findings for one OCI runtime spec (config.json as containerd stores it). proc_root: where
    the host's /proc is mounted; host_ns_dir: the host's namespace files (default: its pid 1's,
    proc_root/1/ns)."""
    out: list[Finding] = []
    if not isinstance(spec, dict):
        return out
    proc = _d(spec.get("process"))
    linux = _d(spec.get("linux"))
    caps = _caps(spec)
    if _privileged(spec, caps):
        out.append(
            _f(Severity.CRITICAL, "privileged", "5.4", "container runs privileged (all capabilities, host devices)")
        )
    else:
        danger = sorted(caps & DANGEROUS_CAPS)
        if danger:
            out.append(_f(Severity.HIGH, "dangerous-capabilities", "5.3", f"capabilities added: {', '.join(danger)}"))
        extra = sorted(caps - DEFAULT_CAPS - DANGEROUS_CAPS)
        if extra:
            out.append(
                _f(
                    Severity.MEDIUM,
                    "added-capabilities",
                    "5.3",
                    f"capabilities beyond the default set: {', '.join(extra)}",
                )
            )
        if "NET_RAW" in caps:
            out.append(
                _f(Severity.LOW, "net-raw", "5.3", "NET_RAW kept (raw sockets: ARP/DNS spoofing on the node network)")
            )
    if _uid(_d(proc.get("user"))) == 0:
        out.append(_f(Severity.MEDIUM, "runs-as-root", "4.1", "process runs as uid 0"))
    out += namespace_findings(linux.get("namespaces"), proc_root, host_ns_dir)
    out += _mounts(_seq(spec.get("mounts")))
    if not proc.get("noNewPrivileges"):
        out.append(
            _f(
                Severity.MEDIUM,
                "no-new-privileges-off",
                "5.25",
                "no_new_privileges not set (setuid binaries can gain privileges)",
            )
        )
    if not _d(spec.get("root")).get("readonly"):
        out.append(_f(Severity.LOW, "writable-rootfs", "5.12", "root filesystem is writable"))
    if not linux.get("seccomp"):
        out.append(_f(Severity.MEDIUM, "seccomp-unconfined", "5.21", "no seccomp profile (every syscall allowed)"))
    if not proc.get("apparmorProfile") and not proc.get("selinuxLabel"):
        out.append(_f(Severity.LOW, "no-lsm-profile", "5.1", "no AppArmor profile or SELinux label"))
    res = _d(linux.get("resources"))
    if not _d(res.get("memory")).get("limit"):
        out.append(_f(Severity.LOW, "no-memory-limit", "5.10", "no memory limit"))
    if not _d(res.get("pids")).get("limit"):
        out.append(_f(Severity.LOW, "no-pids-limit", "5.28", "no PIDs limit (fork bombs reach the node)"))
    host_devs = [str(d.get("path", "")) for d in _seq(linux.get("devices")) if isinstance(d, dict)]
    if host_devs:
        out.append(_f(Severity.MEDIUM, "host-devices", "5.17", f"host devices exposed: {', '.join(host_devs[:8])}"))
    return out


def namespace_findings(namespaces, proc_root: str = "/proc", host_ns_dir: str = "") -> list[Finding]:
    """Host-namespace findings for a spec's linux.namespaces. A type that is absent is the
    runtime's own namespace, the host's; one without a path is new, the container's own; one with
    a path is joined, and CRI containers join their pod sandbox's by path, so a path is the host's
    only when it names the host's namespace (host_namespace()). A path that cannot be checked is
    its own, lower finding ("cannot verify"), not a host one: a HIGH host finding on every pod
    would have a baseline block at high kill ordinary pods."""
    by_type: dict[str, dict] = {}
    for n in _seq(namespaces):
        if isinstance(n, dict) and isinstance(n.get("type"), str):
            by_type.setdefault(n["type"], n)
    out = []
    for ns, (_file, sev, cis) in HOST_NAMESPACES.items():
        n = by_type.get(ns)
        path = n.get("path") if n is not None else None
        if n is None:
            out.append(_f(sev, f"host-{ns}-namespace", cis, f"shares the host's {ns} namespace"))
        elif not path:
            continue
        elif (host := host_namespace(path, ns, proc_root, host_ns_dir)) is None:
            lower = Severity(max(Severity.INFO, sev - 1))
            out.append(_f(lower, f"unverified-{ns}-namespace", cis,
                          f"joins the {ns} namespace at {str(path)[:200]}, which cannot be compared with the host's"))
        elif host:
            out.append(_f(sev, f"host-{ns}-namespace", cis, f"joins the host's {ns} namespace ({str(path)[:200]})"))
    return out


def host_namespace(path, ns_type: str, proc_root: str = "/proc", host_ns_dir: str = "") -> bool | None:
    """Is the namespace file at `path` the host's namespace of that OCI type ("network", "pid",
    ...)? True when it has the inode (and nsfs device) of the host's (host_ns_dir/<file>, by
    default proc_root/1/ns/<file>, else kthreadd's), False when it is another one, None when either
    cannot be read.

    The path is the runtime's, in the host's mount namespace: one under /proc is read through
    proc_root (the host's /proc, /host/proc in a DaemonSet); another (a CNI netns bind mount,
    /var/run/netns/cni-...) as it is, else through the host's root, proc_root/1/root."""
    if not isinstance(path, str) or not path.startswith("/") or ns_type not in HOST_NAMESPACES:
        return None
    root = proc_root.rstrip("/") or "/proc"
    if path.startswith("/proc/"):
        candidates = [root + path[len("/proc"):]]
    else:
        candidates = [path, f"{root}/1/root{path}"]
    host = _host_ns_stat(HOST_NAMESPACES[ns_type][0], root, host_ns_dir)
    if host is None:
        return None
    for p in candidates:
        try:
            st = os.stat(p)
        except (OSError, ValueError):  # ValueError: a NUL in the path
            continue
        return (st.st_dev, st.st_ino) == (host.st_dev, host.st_ino)
    return None


def _host_ns_stat(name: str, root: str, host_ns_dir: str):
    """stat of the host's namespace file `name`: host_ns_dir's when given; else pid 1's; else, where pid 1's
    cannot be read (not dumpable, as on some VMs), kthreadd's (pid 2, a kernel thread: always in the initial
    namespaces), checked by its name so that a private pid namespace's pid 2 is never taken for the host."""
    if host_ns_dir:
        dirs = [host_ns_dir]
    else:
        dirs = [os.path.join(root, "1", "ns")]
        try:
            with open(os.path.join(root, "2", "comm")) as f:
                if f.read().strip() == "kthreadd":
                    dirs.append(os.path.join(root, "2", "ns"))
        except OSError:
            pass
    for d in dirs:
        try:
            return os.stat(os.path.join(d, name))
        except OSError:
            continue
    return None


def _mounts(mounts) -> list[Finding]:
    out = []
    for m in mounts:
        if not isinstance(m, dict):
            continue
        opts = [str(o) for o in _seq(m.get("options"))]
        if m.get("type") != "bind" and "bind" not in opts and "rbind" not in opts:
            continue
        src = str(m.get("source", "")).rstrip("/") or "/"
        dest = str(m.get("destination", ""))
        rw = "ro" not in opts
        mode = "read-write" if rw else "read-only"
        if src.endswith(".sock") or src in ("/var/run/docker.sock", "/run/docker.sock"):
            out.append(
                _f(
                    Severity.CRITICAL,
                    "runtime-socket-mount",
                    "5.31",
                    f"host socket {src} mounted at {dest} ({mode})",
                    path=dest,
                )
            )
        elif src in SENSITIVE_HOST_PATHS:
            sev = (
                Severity.CRITICAL if src == "/" or (rw and src in ("/etc", "/proc", "/sys", "/dev")) else Severity.HIGH
            )
            out.append(_f(sev, "sensitive-host-mount", "5.5", f"host {src} mounted at {dest} ({mode})", path=dest))
        if any(o in ("shared", "rshared") for o in opts):
            out.append(
                _f(Severity.MEDIUM, "shared-propagation", "5.19", f"mount {dest} uses shared propagation", path=dest)
            )
    return out


def check_config(config: dict, has_spec: bool) -> list[Finding]:
    """Findings for an image config. Without a runtime spec (CLI scans), the image's USER is what
    decides who the process runs as; with one, check_spec covers it."""
    out: list[Finding] = []
    cfg = _d(_d(config).get("config"))
    if not has_spec:
        user = str(cfg.get("User") or "").split(":", 1)[0]
        if user in ("", "0", "root"):
            out.append(_f(Severity.MEDIUM, "image-runs-as-root", "4.1", "image sets no non-root USER"))
    return out
