"""A private containerd for tests: its own root, state dir, socket and config in a temp dir.

It never talks to a containerd the machine may run: every `ctr` call names our socket, and the config
moves every path containerd would otherwise put under /var/lib/containerd, /run/containerd or /opt.
Two things are shared by every containerd on a machine and handled here:
- runc keeps container state under /run/containerd/runc/<namespace>: each test session uses its own
  namespace and unique container ids (`unique_id()`), and the namespace's runc dir is removed at the end;
- a containerd stopped with running tasks leaves shims and container processes behind: `cleanup()`
  kills and deletes every task and container of our namespace before `stop()`.
`stop()`/`start()` on the same dirs is a containerd restart: running tasks survive it (their shims
reconnect), as on a real node.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from .oci import OciImage

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
RUNC_STATE = Path("/run/containerd/runc")

# Plugins a test never needs. CRI would want CNI and a sandbox image; the others are snapshotters
# that probe the host or tracing exporters.
DISABLED_PLUGINS = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


def missing_requirements() -> str | None:
    """Why real containers cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (containerd and runc)"
    for tool in ("containerd", "ctr", "runc"):
        if not shutil.which(tool):
            return f"{tool} not installed (scripts/setup.sh installs Debian's containerd and runc)"
    if not os.path.exists("/bin/busybox"):
        return "/bin/busybox missing (Debian's busybox-static builds the test images)"
    return None


def unique_id(prefix: str = "nw") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def config_toml(root: Path, state: Path, socket: Path) -> str:
    disabled = ", ".join(f'"{p}"' for p in DISABLED_PLUGINS)
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [{disabled}]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


class ContainerdProcess:
    """The life cycle both harnesses share: one containerd process on `self.config`, logging to `self.log`,
    ready once `self._ping()` answers. Subclasses set `proc`, `config`, `log`, `socket` and write the config
    in `_prepare()`."""

    proc: subprocess.Popen | None = None
    _name = "containerd"

    def _prepare(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ping(self) -> bool:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None  # inherit ours

    def start(self, timeout: float = 20.0):
        self.base.mkdir(parents=True, exist_ok=True)
        self._prepare()
        with open(self.log, "ab") as log:
            # A session of its own: a Ctrl-C on pytest must not reach containerd before cleanup runs.
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self._name} exited ({self.proc.returncode}); see {self.log}")
            if self.socket.exists() and self._ping():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self._name} did not come up in {timeout}s; see {self.log}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (then SIGKILL) containerd itself. Running tasks survive (their shims stay): call cleanup() first."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PrivateContainerd(ContainerdProcess):
    """One containerd process on `base`; ctr helpers bound to its socket and a namespace."""

    def __init__(self, base: str | os.PathLike, namespace: str | None = None):
        self.base = Path(base)
        self.root, self.state = self.base / "root", self.base / "state"
        # unix socket paths are limited to 108 bytes; pytest's tmp dirs are short enough.
        self.socket = self.base / "containerd.sock"
        self.config = self.base / "config.toml"
        self.log = self.base / "containerd.log"
        self.namespace = namespace or unique_id("nwtest")
        self.proc: subprocess.Popen | None = None
        self._images: dict[str, str] = {}  # name -> manifest digest imported

    # --- process ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.config.write_text(config_toml(self.root, self.state, self.socket))

    def _command(self) -> list[str]:
        return [CONTAINERD, "--config", str(self.config)]

    def _ping(self) -> bool:
        return self.ctr("version", check=False, timeout=5).returncode == 0

    # --- ctr -------------------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0, namespace: str | None = None):
        cmd = [CTR, "-a", str(self.socket), "-n", namespace or self.namespace, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def import_image(self, image: OciImage) -> OciImage:
        # Keyed by name and manifest: two tests building different images under one name must not
        # silently share the first one.
        if self._images.get(image.name) != image.manifest_digest:
            self.ctr("images", "import", str(image.path))
            self._images[image.name] = image.manifest_digest
        return image

    def run(self, image: OciImage | str, *cmd: str, cid: str | None = None, labels: dict | None = None) -> str:
        """Start a detached container (task running when this returns); returns its id."""
        cid = cid or unique_id()
        name = image.name if isinstance(image, OciImage) else image
        label_args = [a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")]
        self.ctr("run", "-d", "--null-io", *label_args, name, cid, *cmd)
        return cid

    def run_once(self, image: OciImage | str, *cmd: str, cid: str | None = None, timeout: float = 60.0):
        """Run a container in the foreground and remove it (`ctr run --rm`); returns (id, completed)."""
        cid = cid or unique_id()
        name = image.name if isinstance(image, OciImage) else image
        return cid, self.ctr("run", "--rm", name, cid, *cmd, check=False, timeout=timeout)

    def exec(self, cid: str, *cmd: str, exec_id: str | None = None, check: bool = True):
        """`ctr task exec` in a running container, in the foreground; returns the completed ctr."""
        return self.ctr("tasks", "exec", "--exec-id", exec_id or unique_id("x"), cid, *cmd, check=check)

    def task_pid(self, cid: str) -> int:
        for line in self.ctr("tasks", "ls").stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == cid:
                return int(parts[1])
        return 0

    def remove(self, cid: str, timeout: float = 10.0) -> None:
        """Kill the task (SIGKILL, every process), delete it and the container; quiet if absent."""
        self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.ctr("tasks", "delete", cid, check=False)
            if r.returncode == 0 or "not found" in r.stderr:
                break
            time.sleep(0.1)  # the task has not exited yet
        self.ctr("containers", "delete", cid, check=False)

    def containers(self) -> list[str]:
        return self.ctr("containers", "ls", "-q", check=False).stdout.split()

    def cleanup(self) -> None:
        """Kill and delete every task and container of our namespace (before stopping containerd)."""
        if not self.running:
            return
        for cid in self.containers():
            self.remove(cid)

    def destroy(self) -> None:
        """cleanup(), stop, remove our runc state dir and our files. Safe to call twice."""
        try:
            self.cleanup()
        finally:
            self.stop()
            _rmdir_if_empty(RUNC_STATE / self.namespace)
            _unmount_under(self.base)
            shutil.rmtree(self.base, ignore_errors=True)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _unmount_under(base: Path) -> None:
    """Detach any mount left under base (a rootfs of a task that could not be deleted), so that
    removing our files never walks into a container's root filesystem."""
    prefix = str(base.resolve()) + "/"
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)


def wait_until(pred, timeout: float = 10.0, interval: float = 0.05):
    """Poll pred() until it returns something truthy (returned) or the timeout passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v or None
        time.sleep(interval)
