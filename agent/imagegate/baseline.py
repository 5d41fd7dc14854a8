"""Baseline checks on a container's OCI runtime spec and its image config.

Each finding names its CIS Docker Benchmark v1.6.0 recommendation (section 4: images, section 5:
container runtime). The OCI spec has no "privileged" flag: a privileged container is recognized
by what the runtime does for one (every capability in the bounding set, no masked paths, all
devices allowed), which is also what `ctr run --privileged` and CRI write.
"""

from __future__ import annotations

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


def _f(sev: Severity, rule: str, cis: str, detail: str, path: str = "") -> Finding:
    return Finding("baseline", sev, rule, path=path, detail=detail, cis=f"{CIS} {cis}")


def _caps(spec: dict) -> set[str]:
    caps = (spec.get("process") or {}).get("capabilities") or {}
    bounding = caps.get("bounding") or caps.get("effective") or []
    return {str(c).upper().removeprefix("CAP_") for c in bounding if isinstance(c, str)}


def _privileged(spec: dict, caps: set[str]) -> bool:
    linux = spec.get("linux") or {}
    all_devices = any(
        isinstance(d, dict) and d.get("allow") and d.get("type", "a") in ("a", "", None) and d.get("major") is None
        for d in ((linux.get("resources") or {}).get("devices") or ())
    )
    return len(caps) >= 38 or ("SYS_ADMIN" in caps and not linux.get("maskedPaths") and all_devices)


def check_spec(spec: dict) -> list[Finding]:
    """Findings for one OCI runtime spec (config.json as containerd stores it)."""
    out: list[Finding] = []
    if not isinstance(spec, dict):
        return out
    proc = spec.get("process") or {}
    linux = spec.get("linux") or {}
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
    user = proc.get("user") or {}
    if int(user.get("uid", 0) or 0) == 0:
        out.append(_f(Severity.MEDIUM, "runs-as-root", "4.1", "process runs as uid 0"))
    ns_types = {n.get("type") for n in linux.get("namespaces") or () if isinstance(n, dict) and not n.get("path")}
    for ns, sev, cis in (
        ("pid", Severity.HIGH, "5.15"),
        ("ipc", Severity.HIGH, "5.16"),
        ("network", Severity.HIGH, "5.9"),
        ("uts", Severity.LOW, "5.20"),
    ):
        if ns not in ns_types:
            out.append(_f(sev, f"host-{ns}-namespace", cis, f"shares the host's {ns} namespace"))
    out += _mounts(spec.get("mounts") or ())
    if not proc.get("noNewPrivileges"):
        out.append(
            _f(
                Severity.MEDIUM,
                "no-new-privileges-off",
                "5.25",
                "no_new_privileges not set (setuid binaries can gain privileges)",
            )
        )
    if not (spec.get("root") or {}).get("readonly"):
        out.append(_f(Severity.LOW, "writable-rootfs", "5.12", "root filesystem is writable"))
    if not linux.get("seccomp"):
        out.append(_f(Severity.MEDIUM, "seccomp-unconfined", "5.21", "no seccomp profile (every syscall allowed)"))
    if not proc.get("apparmorProfile") and not proc.get("selinuxLabel"):
        out.append(_f(Severity.LOW, "no-lsm-profile", "5.1", "no AppArmor profile or SELinux label"))
    res = linux.get("resources") or {}
    if not (res.get("memory") or {}).get("limit"):
        out.append(_f(Severity.LOW, "no-memory-limit", "5.10", "no memory limit"))
    if not (res.get("pids") or {}).get("limit"):
        out.append(_f(Severity.LOW, "no-pids-limit", "5.28", "no PIDs limit (fork bombs reach the node)"))
    host_devs = [d.get("path", "") for d in linux.get("devices") or () if isinstance(d, dict)]
    if host_devs:
        out.append(_f(Severity.MEDIUM, "host-devices", "5.17", f"host devices exposed: {', '.join(host_devs[:8])}"))
    return out


def _mounts(mounts) -> list[Finding]:
    out = []
    for m in mounts:
        if not isinstance(m, dict):
            continue
        opts = [str(o) for o in m.get("options") or ()]
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
    cfg = (config or {}).get("config") or {}
    if not has_spec:
        user = str(cfg.get("User") or "").split(":", 1)[0]
        if user in ("", "0", "root"):
            out.append(_f(Severity.MEDIUM, "image-runs-as-root", "4.1", "image sets no non-root USER"))
    return out
