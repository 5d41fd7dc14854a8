"""Kernel headers for bcc, and tracefs.

bcc's compiler wants kernel headers even though our probes take every struct offset from BTF
(it includes its own helpers against them). Where the host has /lib/modules/$(uname -r)/build we
use it. Else (containers, nodes without headers) we build one merged tree of symlinks from the
distribution's generic headers package (Debian splits it into -common and -<arch> trees) and
point bcc at it with BCC_KERNEL_SOURCE, which leaves /lib/modules alone: it is read-only in a
DaemonSet. The headers' version does not need to match: no struct layout is taken from them.
"""

from __future__ import annotations

import glob
import os
import platform


class HeadersError(Exception):
    pass


def _host_build_dir(release: str) -> str | None:
    d = f"/lib/modules/{release}/build"
    return d if os.path.isdir(os.path.join(d, "include")) else None


def _generic_trees(src_root: str = "/usr/src") -> list[str]:
    """Header trees to overlay, lowest first: a Debian -common tree, then its arch tree."""
    arch_trees = sorted(
        d for d in glob.glob(os.path.join(src_root, "linux-headers-*")) if not d.endswith("-common")
    )
    for arch in reversed(arch_trees):  # the newest version first
        if not os.path.isdir(os.path.join(arch, "include")):
            continue
        stem = arch.rsplit("-", 1)[0]  # linux-headers-6.1.0-56-amd64 -> linux-headers-6.1.0-56
        common = stem + "-common"
        return [common, arch] if os.path.isdir(common) else [arch]
    return []


def _merge(trees: list[str], dst: str) -> None:
    """Symlink every file (and symlinked dir) of each tree into dst; later trees win."""
    tmp = dst + ".tmp"
    if os.path.lexists(tmp):
        import shutil

        shutil.rmtree(tmp)
    for tree in trees:
        for root, dirs, files in os.walk(tree):
            rel = os.path.relpath(root, tree)
            os.makedirs(os.path.join(tmp, rel), exist_ok=True)
            for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                link = os.path.join(tmp, rel, name)
                if os.path.lexists(link):
                    os.unlink(link)
                os.symlink(os.path.join(root, name), link)
    with open(os.path.join(tmp, ".nodewarden-trees"), "w") as f:
        f.write("\n".join(trees))
    os.replace(tmp, dst)


def kernel_source(cache_dir: str, src_root: str = "/usr/src") -> str | None:
    """The directory to give bcc as BCC_KERNEL_SOURCE, or None when the host's own build dir works."""
    if _host_build_dir(platform.release()):
        return None
    trees = _generic_trees(src_root)
    if not trees:
        raise HeadersError(
            f"no kernel headers: neither /lib/modules/{platform.release()}/build nor "
            f"{src_root}/linux-headers-* (install linux-headers-amd64 or linux-headers-generic)"
        )
    dst = os.path.join(cache_dir, "kheaders-" + os.path.basename(trees[-1]))
    marker = os.path.join(dst, ".nodewarden-trees")
    if not (os.path.exists(marker) and open(marker).read() == "\n".join(trees)):
        os.makedirs(cache_dir, exist_ok=True)
        _merge(trees, dst)
    return dst


def ensure_tracefs() -> str:
    """Path of a mounted tracefs, mounting it when the kernel has it but nobody mounted it."""
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(os.path.join(d, "events")):
            return d
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", b"/sys/kernel/tracing", b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise HeadersError(f"tracefs is not mounted and mounting it failed: {os.strerror(err)}")
    return "/sys/kernel/tracing"


def tracepoint_exists(tracefs: str, category: str, event: str) -> bool:
    return os.path.isdir(os.path.join(tracefs, "events", category, event))
