"""Build the agent's OCI image without a registry or a container engine: `make image`.

Three steps, each cached under build/image/cache/ by a key over its inputs, so a second build with
nothing changed takes a second and a source change redoes only the last step:

1. base: a Debian 12 root file system made by mmdebstrap from Debian's own packages (`--variant=apt`:
   apt, dpkg and what the packages below pull in; no man pages, docs or locales), put into an OCI layout
   by umoci as the image's first layer. Debian, because bcc is Debian's python3-bpfcc, built for
   Debian's python3; linux-headers-amd64 because bcc compiles against headers (agent/kernel/headers.py).
2. wheels: every dependency of pyproject.toml as a wheel, made on this machine by pip. The image's
   python3 is Debian 12's, the same as the host's (checked below), so the host's wheels fit.
3. app: the source tree (the files .containerignore lets through) at /opt/nodewarden, a venv with
   --system-site-packages (it sees Debian's bcc) at /opt/nodewarden/.venv, the project installed into it
   in editable mode from the wheels only (`--no-index`), and the protobuf code generated, all inside a
   chroot of the base; /opt/nodewarden alone becomes the second layer.

The agent runs from its source tree, as from a checkout: agent/config.py finds probes/ beside agent/,
and nwwire/genproto.py proto/ beside nwwire/ (a wheel install would carry neither).

Output: build/image/oci/ (an OCI layout) and build/image/nodewarden-agent-<version>.oci.tar (the same as
one archive, for `ctr images import` and `kind load image-archive`), the image named
docker.io/nodewarden/agent:<version>. docs/image.md says more.

Usage: python3 packaging/image/build.py [--out DIR] [--name REF] [--quiet]
Needs root (mmdebstrap's root mode, chroot), mmdebstrap, umoci and network access to Debian and PyPI
(or their mirrors: NODEWARDEN_IMAGE_MIRROR, pip's own settings).
"""

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# Debian's packages for the agent: bcc (python3-bpfcc) for Debian's python3, the venv module, CA roots for
# the exporter's TLS. Nothing is recommended in.
PACKAGES = ("python3", "python3-venv", "python3-bpfcc", "ca-certificates")
# bcc's compiler wants kernel headers (agent/kernel/headers.py). Debian's linux-headers-<ver>-amd64 package
# depends on gcc, perl and kbuild (about 170 MB) for building out-of-tree modules, which bcc never does: the
# header packages' files are unpacked instead (dpkg-deb -x) of installed, keeping only the headers.
HEADERS = "linux-headers-amd64"
_HEADERS_HOOK = (
    # Resolved and downloaded by the image's apt (its sources, its lists), unpacked by the host's dpkg-deb.
    'chroot "$1" sh -ec \''
    f'cd /tmp; v=$(apt-cache depends {HEADERS} | sed -n "s/^ *Depends: //p" | head -n1); '
    'c=$(apt-cache depends "$v" | sed -n "s/^ *Depends: \\(linux-headers-.*-common\\)$/\\1/p" | head -n1); '
    'test -n "$v" && test -n "$c"; apt-get download -q=2 "$v" "$c"\' && '
    # --keep-directory-symlink: the packages' ./lib/ must not replace merged-/usr's /lib -> usr/lib; their
    # /lib/modules/<ver>/build link is left out (a DaemonSet mounts the host's /lib/modules there).
    'for d in "$1"/tmp/*.deb; do dpkg-deb --fsys-tarfile "$d" | tar -x -C "$1" --keep-directory-symlink '
    '--wildcards --exclude=./lib --exclude="./usr/share/doc/*/changelog*"; done && rm -f "$1"/tmp/*.deb && '
    'ls -d "$1"/usr/src/linux-headers-*-common')
_MIRROR = os.environ.get("NODEWARDEN_IMAGE_MIRROR", "http://deb.debian.org/debian")
_SECURITY = os.environ.get("NODEWARDEN_IMAGE_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
SOURCES = (f"deb {_MIRROR} {SUITE} main", f"deb {_MIRROR} {SUITE}-updates main",
           f"deb {_SECURITY} {SUITE}-security main")
# Kept out of the image by dpkg itself (the packages' copyright files stay: their licences ask for them).
_DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*",
                  "/usr/share/lintian/*", "/usr/share/bug/*")
APP_DIR = "/opt/nodewarden"
VENV = f"{APP_DIR}/.venv"
# Entry point and default arguments: those of packaging/Containerfile (keep the two in sync). The Helm
# DaemonSet passes its own args (its config file is mounted at /etc/nodewarden/config/).
ENTRYPOINT = (f"{VENV}/bin/nodewarden",)
CMD = ("run", "--json", "--config", "/etc/nodewarden/config.yaml")
PATH_ENV = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bumped when a step's recipe changes in a way its key does not see.
_RECIPE = 2


class BuildError(Exception):
    """A step failed; the message is one line saying which and why."""


def log(msg: str) -> None:
    if not _QUIET:
        print(f"image: {msg}", file=sys.stderr, flush=True)


_QUIET = False


# --- the file list ----------------------------------------------------------------------------------


def _pattern_re(pattern: str) -> re.Pattern:
    """A .containerignore pattern (Docker's .dockerignore syntax: `*`, `?`, `**`, `[...]`) as a regex
    over a slash-separated relative path."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            j = pattern.find("]", i) if pattern[i] == "[" else -1
            if j > i:
                out.append(fnmatch.translate(pattern[i:j + 1])[4:-3])  # fnmatch's class, unanchored
                i = j + 1
            else:
                out.append(re.escape(pattern[i]))
                i += 1
    return re.compile("".join(out) + r"\Z")


def read_ignore(path: Path) -> list[tuple[bool, re.Pattern]]:
    """(is_exception, regex) per pattern line, in order; the last pattern matching a path decides."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pat = os.path.normpath(line[1:] if keep else line).lstrip("/")
        rules.append((keep, _pattern_re(pat)))
    return rules


def _excluded(rel: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    # Docker's rule: a pattern matches a path when it matches the path or one of its parent directories.
    parts = rel.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for keep, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not keep
    return excluded


def file_list(root: Path = REPO, ignore: Path | None = None) -> list[str]:
    """The relative paths (files and symlinks, sorted) that .containerignore lets into the image."""
    rules = read_ignore(ignore or root / ".containerignore")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        reldir = os.path.relpath(dirpath, root)
        reldir = "" if reldir == "." else reldir + "/"
        # Prune a directory that is excluded and that no exception could reach into.
        dirnames[:] = sorted(d for d in dirnames
                             if not (_excluded(reldir + d, rules) and not _reopens(reldir + d, rules)))
        for f in filenames:
            rel = reldir + f
            if not _excluded(rel, rules):
                found.append(rel)
    return sorted(found)


def _reopens(rel: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether an exception pattern names something under the excluded directory `rel`."""
    return any(keep and rx.pattern.startswith(re.escape(rel + "/")) for keep, rx in rules)


# --- helpers ----------------------------------------------------------------------------------------


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    log(f"{what}: {' '.join(cmd[:6])}{' ...' if len(cmd) > 6 else ''}")
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-5:]
        raise BuildError(f"{what} failed ({r.returncode}): {' | '.join(tail)}")
    return r


def _key(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else p.encode()
        h.update(len(b).to_bytes(8, "big") + b)
    return h.hexdigest()[:16]


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        return [m for m in (line.split()[4] for line in f) if m.startswith(prefix) or m + "/" == prefix]


def _rmtree(path: Path) -> None:
    """Remove a build tree, never through a mount point (a chroot's /proc or /dev left mounted by a
    killed build would otherwise be walked into)."""
    if not os.path.lexists(path):
        return
    left = _mounts_under(path)
    if left:
        raise BuildError(f"{path} still has mounts ({', '.join(left[:3])}): umount them, then build again")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _fresh(path: Path) -> Path:
    """path.tmp, empty: a step writes there and renames into place only when it has succeeded."""
    tmp = path.with_name(path.name + ".tmp")
    _rmtree(tmp)
    if tmp.exists():
        tmp.unlink()
    return tmp


def _require(tool: str, package: str) -> None:
    if not shutil.which(tool):
        raise BuildError(f"{tool} not found: apt-get install {package} (scripts/setup.sh test installs it)")


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


# --- step 1: the Debian base ------------------------------------------------------------------------


def _base_key() -> str:
    return _key(str(_RECIPE), SUITE, *PACKAGES, _HEADERS_HOOK, *SOURCES, *_DPKG_EXCLUDES, os.uname().machine)


def build_base(cache: Path) -> Path:
    """The Debian root file system as one uncompressed tar (mmdebstrap's own output), cached."""
    out = cache / f"base-{_base_key()}.tar"
    if out.exists():
        log(f"base: cached {out.name}")
        return out
    _require("mmdebstrap", "mmdebstrap")
    tmp = out.with_name(out.stem + ".part.tar")  # mmdebstrap picks its output format by the suffix
    _rmtree(tmp)
    cmd = ["mmdebstrap", "--variant=apt", "--mode=root", f"--include={','.join(PACKAGES)}",
           '--aptopt=APT::Install-Recommends "false"',
           # No device nodes in the layer: the runtime mounts /dev, and an unprivileged unpacker could
           # not make them.
           "--skip=output/dev"]
    cmd += [f"--dpkgopt=path-exclude={p}" for p in _DPKG_EXCLUDES]
    cmd += ["--dpkgopt=path-include=/usr/share/doc/*/copyright", f"--customize-hook={_HEADERS_HOOK}",
            SUITE, str(tmp), *SOURCES]
    _run(cmd, "base (mmdebstrap)", timeout=1800)
    os.rename(tmp, out)
    return out


def base_layout(cache: Path, base_tar: Path) -> Path:
    """An OCI layout holding the base as its one layer (tag `base`): the final image starts from a
    hard-linked copy of it, so the base is compressed once, not on every build."""
    out = cache / f"{base_tar.stem}-oci"
    if (out / "index.json").exists():
        return out
    _require("umoci", "umoci")
    tmp = _fresh(out)
    _run(["umoci", "init", "--layout", str(tmp)], "base layout")
    _run(["umoci", "new", "--image", f"{tmp}:base"], "base layout")
    _run(["umoci", "raw", "add-layer", "--image", f"{tmp}:base", "--history.created_by",
          f"mmdebstrap --variant=apt {SUITE} +{','.join(PACKAGES)}", str(base_tar)], "base layer (umoci)",
         timeout=1800)
    os.rename(tmp, out)
    return out


# --- step 2: wheels ---------------------------------------------------------------------------------


def _pyver(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def build_wheels(cache: Path) -> Path:
    """Wheels of every dependency, and of setuptools for the editable install's build, made here."""
    deps = list(project()["dependencies"])
    # The editable install builds the project with its build backend, offline: that needs it as a wheel.
    build_req = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    pyver = _pyver(sys.executable)
    out = cache / f"wheels-{_key(str(_RECIPE), pyver, os.uname().machine, *deps, *build_req)}"
    if (out / ".done").exists():
        log(f"wheels: cached {out.name}")
        return out
    tmp = _fresh(out)
    tmp.mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--quiet",
          "--cache-dir", str(cache / "pip"), "--wheel-dir", str(tmp), *deps, *build_req],
         "wheels (pip wheel)", timeout=1800)
    (tmp / ".done").write_text("\n".join(sorted(p.name for p in tmp.glob("*.whl"))) + "\n")
    os.rename(tmp, out)
    return out


# --- step 3: the application layer ------------------------------------------------------------------


def _sources_key(files: list[str]) -> str:
    h = hashlib.sha256()
    for rel in files:
        p = REPO / rel
        h.update(rel.encode() + b"\0")
        h.update(os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
        h.update(b"\1" if os.access(p, os.X_OK) else b"\0")
    return h.hexdigest()[:16]


_CHROOT_SCRIPT = """set -e
/usr/bin/python3 -m venv --system-site-packages {venv}
{venv}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir --no-index \
    --find-links /tmp/wheels -e {app}
cd {app}
{venv}/bin/python -m nwwire.genproto
rm -rf {app}/nodewarden.egg-info
# Bytecode now: the image's root file system is read-only, so Python could not cache it at run time.
{venv}/bin/python -m compileall -q -j 0 {app}/agent {app}/collector {app}/nwwire
{venv}/bin/nodewarden --help >/dev/null
"""


def _in_chroot(rootfs: Path, script: str, what: str) -> None:
    # A private mount namespace: /proc and /dev exist for the chroot's commands and vanish with it.
    outer = (f"mount -t proc proc {rootfs}/proc && mount --rbind /dev {rootfs}/dev && "
             f"mount --make-rslave {rootfs}/dev && exec chroot {rootfs} /bin/sh -c \"$0\"")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
           "PIP_NO_INPUT": "1", "SOURCE_DATE_EPOCH": "0"}
    _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", outer, script], what, env=env,
         timeout=1800)


def _build_native(app: Path) -> None:
    """The compiled decoders (agent/sensors/native.py) and the rules' pre-condition (agent/detect/native.py)
    into the copied tree's build/native/. The image has no compiler; the host's gcc builds them for the host's
    python3, which is the image's (checked by the caller). Without them the agent runs the Python code: correct,
    slower; so a failure is a warning, not an error."""
    for module, what in (("agent.sensors.native_build", "decoders"),
                         ("agent.detect.native_build", "rules pre-condition")):
        done = subprocess.run(["/usr/bin/python3", "-m", module], cwd=app, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"native {what} not built"
            log(f"app: {why} (the image runs the Python {what})")


def build_app(cache: Path, base_tar: Path, wheels: Path, files: list[str], key: str) -> Path:
    """The uncompressed tar of /opt/nodewarden: the sources, their venv, the generated code."""
    out = cache / f"app-{key}.tar"
    if out.exists():
        log(f"app: cached {out.name}")
        return out
    host, image_py = _pyver("/usr/bin/python3"), None
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        _run(["tar", "-xf", str(base_tar), "-C", str(work), "--numeric-owner"], "app: unpack the base")
        for d in ("proc", "dev"):
            (work / d).mkdir(exist_ok=True)
        image_py = sorted(p.name for p in (work / "usr/bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name))
        if image_py != [f"python{host}"]:
            # Wheels with C extensions are built for the host's python; another minor version would not load them.
            raise BuildError(f"the base has {image_py or 'no python3.X'}, the host python{host}: "
                             f"build on Debian {SUITE}")
        app = work / APP_DIR.lstrip("/")
        app.mkdir(parents=True)
        for rel in files:
            src, dst = REPO / rel, app / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
        _build_native(app)
        shutil.copytree(wheels, work / "tmp/wheels")
        _in_chroot(work, _CHROOT_SCRIPT.format(venv=VENV, app=APP_DIR), "app: venv, install, genproto (chroot)")
        tmp = _fresh(out)
        # Deterministic: sorted names, one owner, one mtime, so the same inputs give the same layer digest.
        _run(["tar", "-cf", str(tmp), "-C", str(work), "--sort=name", "--numeric-owner", "--owner=0",
              "--group=0", "--mtime=@0", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
              APP_DIR.lstrip("/")], "app layer (tar)")
        os.rename(tmp, out)
        return out
    finally:
        _rmtree(work)


# --- assembly ---------------------------------------------------------------------------------------


def assemble(base_oci: Path, app_tar: Path, out_dir: Path, name: str, version: str, key: str) -> Path:
    """The final OCI layout (hard links into the cached base layout plus the app layer and config)."""
    layout = out_dir / "oci"
    tag = name.rsplit(":", 1)[1]
    stamp = layout / ".nodewarden-key"
    if stamp.exists() and stamp.read_text() == key:
        log(f"layout: up to date ({layout})")
        return layout
    tmp = _fresh(layout)
    _run(["cp", "-al", str(base_oci), str(tmp)], "layout: copy the base")
    created = "1970-01-01T00:00:00Z"  # no build time in the image: the same inputs give the same digest
    _run(["umoci", "raw", "add-layer", "--image", f"{tmp}:base", "--tag", tag, "--history.created", created,
          "--history.created_by", f"packaging/image/build.py: {APP_DIR} (sources, venv, generated code)",
          str(app_tar)], "app layer (umoci)")
    cfg = ["umoci", "config", "--image", f"{tmp}:{tag}", "--created", created, "--author", "NodeWarden",
           "--history.created", created, "--history.created_by", "packaging/image/build.py: config",
           "--clear", "config.entrypoint", "--clear", "config.cmd", "--config.workingdir", APP_DIR,
           "--config.env", f"PATH={PATH_ENV}", "--config.env", "PYTHONDONTWRITEBYTECODE=1",
           "--config.label", f"org.opencontainers.image.version={version}",
           "--config.label", "org.opencontainers.image.title=nodewarden-agent",
           "--config.label", f"org.opencontainers.image.description={project()['description']}",
           "--config.label", "org.opencontainers.image.licenses=Apache-2.0"]
    cfg += [a for e in ENTRYPOINT for a in ("--config.entrypoint", e)]
    cfg += [a for c in CMD for a in ("--config.cmd", c)]
    _run(cfg, "config (umoci)")
    _run(["umoci", "rm", "--image", f"{tmp}:base"], "layout: drop the base tag")
    _run(["umoci", "gc", "--layout", str(tmp)], "layout: gc")
    _name_in_index(tmp, name)
    stamp_tmp = tmp / ".nodewarden-key"
    stamp_tmp.write_text(key)
    _rmtree(layout)
    os.rename(tmp, layout)
    return layout


def _name_in_index(layout: Path, name: str) -> None:
    """containerd names an imported image from `io.containerd.image.name`; umoci writes only the tag
    (`org.opencontainers.image.ref.name`), which ctr and kind would import without a name."""
    path = layout / "index.json"
    index = json.loads(path.read_text())
    for m in index["manifests"]:
        m.setdefault("annotations", {})["io.containerd.image.name"] = name
    path.write_text(json.dumps(index, sort_keys=True))


def archive(layout: Path, out_dir: Path, version: str) -> Path:
    """The layout as one tar (what `ctr images import` and `kind load image-archive` read)."""
    out = out_dir / f"nodewarden-agent-{version}.oci.tar"
    key = (layout / ".nodewarden-key").read_text()
    stamp = out.with_name(out.name + ".key")
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    tmp = out.with_name(out.name + ".tmp")
    _run(["tar", "-cf", str(tmp), "-C", str(layout), "--sort=name", "--numeric-owner", "--owner=0", "--group=0",
          "--mtime=@0", "--exclude=./.nodewarden-key", "."], "archive (tar)")
    os.rename(tmp, out)
    stamp.write_text(key)
    return out


def _prune(cache: Path, keep: set[str]) -> None:
    """Drop the cached steps this build did not use (each app layer is ~170 MB; sources change often)."""
    for p in cache.iterdir():
        if p.name not in keep and not p.name.startswith("rootfs-"):  # a scratch root of a build under way
            log(f"cache: removing {p.name}")
            _rmtree(p)


def build(out_dir: Path, name: str | None = None) -> dict:
    """Every step; returns what was built (paths, name, digest, sizes, seconds)."""
    if os.geteuid() != 0:
        raise BuildError("needs root (mmdebstrap --mode=root, chroot, unshare)")
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("umoci", "umoci"), ("unshare", "util-linux"),
                      ("chroot", "coreutils")):
        _require(tool, pkg)
    t0 = time.monotonic()
    version = project()["version"]
    name = name or f"docker.io/nodewarden/agent:{version}"
    cache = out_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    # One build at a time per output directory (`make image` and a test session may overlap): they share
    # the cache, the layout's scratch copy and the pruning.
    lock = open(out_dir / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    files = file_list()
    for must in ("pyproject.toml", "agent/cli.py", "probes/events.h"):
        if must not in files:
            raise BuildError(f".containerignore leaves out {must}: the agent cannot run without it")
    base_tar = build_base(cache)
    base_oci = base_layout(cache, base_tar)
    wheels = build_wheels(cache)
    app_key = _key(str(_RECIPE), base_tar.name, wheels.name, _sources_key(files), VENV)
    app_tar = build_app(cache, base_tar, wheels, files, app_key)
    layout = assemble(base_oci, app_tar, out_dir, name, version, _key(app_key, name, *ENTRYPOINT, *CMD))
    tar = archive(layout, out_dir, version)
    _prune(cache, keep={base_tar.name, base_oci.name, wheels.name, app_tar.name, "pip"})
    index = json.loads((layout / "index.json").read_text())
    manifest = index["manifests"][0]["digest"]
    mf = json.loads((layout / "blobs/sha256" / manifest.split(":", 1)[1]).read_text())
    info = {"name": name, "layout": str(layout), "archive": str(tar), "manifest_digest": manifest,
            "layers": [ly["digest"] for ly in mf["layers"]],
            "compressed_bytes": sum(ly["size"] for ly in mf["layers"]),
            "uncompressed_bytes": base_tar.stat().st_size + app_tar.stat().st_size,
            "files": len(files), "seconds": round(time.monotonic() - t0, 1)}
    (out_dir / "image.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    global _QUIET
    ap = argparse.ArgumentParser(description="Build NodeWarden's agent image (OCI layout + archive) without a registry")
    ap.add_argument("--out", default=str(REPO / "build" / "image"), help="output directory (default build/image)")
    ap.add_argument("--name", help="image reference (default docker.io/nodewarden/agent:<version>)")
    ap.add_argument("--list", action="store_true", help="print the files .containerignore lets in, and stop")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    _QUIET = args.quiet
    if args.list:
        print("\n".join(file_list()))
        return 0
    if args.name and ":" not in args.name.rsplit("/", 1)[-1]:
        print(f"image: --name {args.name!r} needs a tag (name:tag)", file=sys.stderr)
        return 2
    try:
        info = build(Path(args.out).resolve(), args.name)
    except (BuildError, OSError, subprocess.TimeoutExpired) as e:
        print(f"image: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
