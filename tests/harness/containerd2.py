"""A private containerd 2.x with CRI and NRI for tests, driven through crictl like a kubelet would.

Debian ships containerd 1.6 (no NRI), so the binaries come from a bundle beside the checkout:
`$NODEWARDEN_CONTAINERD2` (default `../shared/containerd2/` from the repository root) holds a
`containerd-2*.tar.gz` with containerd, containerd-shim-runc-v2, ctr and crictl, and the sample
`config.toml` / `config-failclosed.toml` / `crictl.yaml` with RUNDIR placeholders (its README.md
lists the pitfalls met on this machine). `Containerd2` unpacks the bundle into its own directory,
writes the sample config with RUNDIR replaced by that directory, and starts containerd with that
directory first on PATH: containerd finds its shim through PATH, and Debian's 1.6 shim must not win.

Shared state, handled here:
- runc keeps container state under one root per namespace, by default /run/containerd/runc/k8s.io
  for every containerd on the machine. Our config points runc's `Root` at a private directory, and
  `cleanup()` still removes every pod and container (tasks first) before containerd stops, since a
  containerd stopped with running tasks leaves shims and processes behind.
- CRI names pods and containers by metadata; tests give each a unique name (`unique_id()`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .containerd import ContainerdProcess, _unmount_under, unique_id, wait_until
from .oci import OciImage, build_image

ENV_BUNDLE = "NODEWARDEN_CONTAINERD2"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO_ROOT.parent / "shared" / "containerd2"
NAMESPACE = "k8s.io"  # CRI's containerd namespace
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"  # the sample config pins this sandbox image
BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr", "crictl")
# A CNI plugin that configures nothing but answers as if it had: pods get a network namespace of their
# own (made by containerd, joined by path) with only a loopback device, and CRI gets the eth0 address it
# insists on. Enough for pods with a private network namespace where there are no CNI plugins.
_NOOP_CNI = """#!/bin/sh
# Installed as "nw-noop" and as "loopback" (containerd adds a loopback network of its own).
ip=10.88.0.2/32; [ "$CNI_IFNAME" = lo ] && ip=127.0.0.1/8
ifc='{"name":"'$CNI_IFNAME'","sandbox":"'$CNI_NETNS'"}'
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","interfaces":['$ifc'],"ips":[{"address":"'$ip'","interface":0}]}' ;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}' ;;
esac
"""
_NOOP_CNI_CONF = '{"cniVersion": "1.0.0", "name": "nw-noop", "plugins": [{"type": "nw-noop"}]}'
# Where the sample's runc options end; runc's private state root goes after it.
_RUNC_OPTIONS_ANCHOR = "SystemdCgroup = false"


def bundle_dir() -> Path:
    return Path(os.environ.get(ENV_BUNDLE) or DEFAULT_BUNDLE)


def bundle_tarball(directory: Path | None = None) -> Path | None:
    found = sorted((directory or bundle_dir()).glob("containerd-2*.tar.gz"))
    return found[-1] if found else None


def missing_requirements() -> str | None:
    """Why the containerd 2.x tests cannot run here, or None."""
    d = bundle_dir()
    if bundle_tarball(d) is None:
        return (f"no containerd 2.x bundle (containerd-2*.tar.gz) in {d}: set {ENV_BUNDLE} to the directory "
                "holding it (see ../shared/containerd2/README.md)")
    for sample in ("config.toml", "config-failclosed.toml", "crictl.yaml"):
        if not (d / sample).is_file():
            return f"{d / sample} missing: the bundle's sample configs are needed"
    if os.geteuid() != 0:
        return "needs root (containerd and runc)"
    if not shutil.which("runc"):
        return "runc not installed (scripts/setup.sh installs Debian's runc)"
    if not os.path.exists("/bin/busybox"):
        return "/bin/busybox missing (Debian's busybox-static builds the test images)"
    return None


@dataclass(frozen=True)
class Created:
    """What `crictl create` answered: the container id, or the error and how long it took."""

    id: str
    error: str
    seconds: float

    @property
    def ok(self) -> bool:
        return bool(self.id)


class Containerd2(ContainerdProcess):
    """containerd 2.x on `base` (bin/, root/, state/, sockets), with crictl and ctr bound to it."""

    def __init__(self, base: str | os.PathLike, failclosed: bool = False):
        self.base = Path(base)
        self.bundle = bundle_dir()
        self.bin = self.base / "bin"
        self.socket = self.base / "containerd.sock"
        self.nri_socket = self.base / "nri.sock"
        self.config = self.base / "config.toml"
        self.crictl_config = self.base / "crictl.yaml"
        self.log = self.base / "containerd.log"
        self.sample = "config-failclosed.toml" if failclosed else "config.toml"
        self.proc: subprocess.Popen | None = None
        self._images: dict[str, str] = {}
        self._pods: dict[str, Path] = {}  # pod id -> its config, which crictl create needs again

    # --- set-up ----------------------------------------------------------------------------------

    def _unpack(self) -> None:
        if all((self.bin / b).exists() for b in BINARIES):
            return
        self.bin.mkdir(parents=True, exist_ok=True)
        tarball = bundle_tarball(self.bundle)
        with tarfile.open(tarball) as tar:
            # Only the four binaries, as plain files by their base names: nothing the archive names
            # can land outside bin/ (this Python's extractall has no `filter`).
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            for b in BINARIES:
                if b not in members:
                    raise RuntimeError(f"{tarball} has no {b}")
                with tar.extractfile(members[b]) as src, open(self.bin / b, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                (self.bin / b).chmod(0o755)

    def _write_configs(self) -> None:
        text = (self.bundle / self.sample).read_text()
        if _RUNC_OPTIONS_ANCHOR not in text:
            raise RuntimeError(f"{self.bundle / self.sample}: no {_RUNC_OPTIONS_ANCHOR!r} to put runc's Root after")
        # runc's state root private to this containerd, so that nothing is shared with other runtimes.
        text = text.replace(_RUNC_OPTIONS_ANCHOR, f'{_RUNC_OPTIONS_ANCHOR}\n        Root = "RUNDIR/runc"')
        self.config.write_text(text.replace("RUNDIR", str(self.base)))
        crictl = (self.bundle / "crictl.yaml").read_text().replace("RUNDIR", str(self.base))
        self.crictl_config.write_text(crictl)
        for d in ("nri-plugins", "nri-conf.d", "cni-bin", "cni-conf", "podlogs", "runc"):
            (self.base / d).mkdir(exist_ok=True)
        for name in ("nw-noop", "loopback"):
            plugin = self.base / "cni-bin" / name
            plugin.write_text(_NOOP_CNI)
            plugin.chmod(0o755)
        (self.base / "cni-conf" / "10-nw-noop.conflist").write_text(_NOOP_CNI_CONF)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}

    # --- process ---------------------------------------------------------------------------------

    _name = "containerd 2.x"

    def _prepare(self) -> None:
        self._unpack()
        self._write_configs()

    def _command(self) -> list[str]:
        return [str(self.bin / "containerd"), "--config", str(self.config)]

    def _ping(self) -> bool:
        return self.crictl("version", check=False, timeout=5).returncode == 0

    def start(self, timeout: float = 30.0) -> Containerd2:
        return super().start(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)

    # --- log -------------------------------------------------------------------------------------

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def wait_plugin(self, since: int, name: str = "nodewarden", timeout: float = 30.0) -> bool:
        """Whether containerd logged our NRI plugin connected and synchronized after log offset `since`."""
        pat = re.compile(rf'plugin \\?"\d\d-{re.escape(name)}\\?" connected and synchronized')
        return bool(wait_until(lambda: pat.search(self.log_since(since)), timeout=timeout, interval=0.1))

    # --- ctr, crictl -----------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / "ctr"), "-a", str(self.socket), "-n", NAMESPACE, *args]
        return _run(cmd, check, timeout, self.env())

    def crictl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / "crictl"), "-c", str(self.crictl_config), *args]
        return _run(cmd, check, timeout, self.env())

    def import_image(self, image: OciImage) -> OciImage:
        if self._images.get(image.name) != image.manifest_digest:
            self.ctr("images", "import", str(image.path))
            self._images[image.name] = image.manifest_digest
        return image

    def import_pause(self, workdir: Path) -> None:
        """The pinned sandbox image, built locally: nothing is pulled."""
        pause = build_image(workdir / "pause.tar", PAUSE_IMAGE, cmd=("/bin/sleep", "2147483647"))
        self.import_image(pause)

    # --- pods and containers ---------------------------------------------------------------------

    def _pod_config(self, name: str, annotations: dict | None, host_network: bool) -> Path:
        # No hostname: runc refuses one without a private UTS namespace (host network implies the host's).
        # CRI NamespaceMode: 0 = POD (the sandbox's own, through the no-op CNI plugin), 2 = NODE.
        cfg = {"metadata": {"name": name, "namespace": "nwtest", "uid": f"uid-{name}", "attempt": 1},
               "log_directory": str(self.base / "podlogs" / name),
               "annotations": dict(annotations or {}),
               "linux": {"security_context": {"namespace_options": {"network": 2 if host_network else 0}}}}
        path = self.base / f"pod-{name}.json"
        path.write_text(json.dumps(cfg))
        return path

    def run_pod(self, name: str | None = None, annotations: dict | None = None, host_network: bool = True) -> str:
        """RunPodSandbox of a new pod (host network unless told otherwise); returns its id."""
        path = self._pod_config(name or unique_id("pod"), annotations, host_network)
        pod_id = self.crictl("runp", str(path), timeout=90).stdout.strip()
        self._pods[pod_id] = path
        return pod_id

    def create(self, pod_id: str, image: OciImage | str, *cmd: str, name: str | None = None) -> Created:
        """CreateContainer in the pod; never raises on a refusal (the tests look at the error)."""
        name = name or unique_id("ctr")
        cfg = {"metadata": {"name": name}, "image": {"image": image.name if isinstance(image, OciImage) else image},
               "command": list(cmd or ("/bin/sleep", "600")), "log_path": f"{name}.log", "linux": {}}
        path = self.base / f"ctr-{name}.json"
        path.write_text(json.dumps(cfg))
        t0 = time.monotonic()
        r = self.crictl("create", pod_id, str(path), str(self._pods[pod_id]),
                        check=False, timeout=60)
        took = time.monotonic() - t0
        if r.returncode == 0:
            return Created(r.stdout.strip(), "", took)
        return Created("", r.stderr.strip() or r.stdout.strip(), took)

    def start_container(self, cid: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.crictl("start", cid, check=check, timeout=60)

    def state(self, cid: str) -> str:
        """CONTAINER_CREATED / _RUNNING / _EXITED, or "" when CRI does not know it."""
        r = self.crictl("inspect", "-o", "json", cid, check=False)
        if r.returncode != 0:
            return ""
        return json.loads(r.stdout)["status"]["state"]

    def inspect(self, cid: str) -> dict:
        return json.loads(self.crictl("inspect", "-o", "json", cid).stdout)

    def remove_pod(self, pod_id: str) -> None:
        """Stop and remove a pod and its containers (forced: tasks are killed first); quiet if absent."""
        self.crictl("stopp", pod_id, check=False, timeout=60)
        self.crictl("rmp", "-f", pod_id, check=False, timeout=60)

    def cleanup(self) -> None:
        """Every pod and container gone, tasks killed and deleted (before containerd stops)."""
        if not self.running:
            return
        self.crictl("rm", "-a", "-f", check=False, timeout=60)
        self.crictl("rmp", "-a", "-f", check=False, timeout=60)
        # Anything CRI lost track of: kill and delete through containerd's own API.
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid, check=False)
            wait_until(lambda c=cid: self.ctr("tasks", "delete", c, check=False).returncode == 0
                       or not self._has_task(c), timeout=10, interval=0.1)
            self.ctr("containers", "delete", cid, check=False)

    def _has_task(self, cid: str) -> bool:
        return any(line.split()[0] == cid for line in self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
                   if line.split())

    def destroy(self) -> None:
        """cleanup(), stop, unmount and remove our files. Safe to call twice."""
        try:
            self.cleanup()
        finally:
            self.stop()
            _unmount_under(self.base)
            shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_containerd2(base: Path, failclosed: bool = False):
    """A started containerd 2.x with the pause image imported; destroyed (tasks first) on exit."""
    c = Containerd2(base, failclosed=failclosed)
    try:
        c.start()
        c.import_pause(base)
        yield c
    finally:
        c.destroy()


def _run(cmd: list[str], check: bool, timeout: float, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


class Agent:
    """`python -m agent.cli run --json` against a Containerd2: NRI socket, containerd socket and a policy
    of the test's; its own state dir and image cache; the OCI gate off (its socket is machine-wide).
    stdout records are collected as dicts, stderr lines too (the plugin's state shows there)."""

    def __init__(self, cd: Containerd2, policy: Path, workdir: Path, *extra: str, env: dict | None = None,
                 ready_timeout: float = 90.0):
        import orjson  # noqa: F401  (fail here, not in the reader thread)

        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ,
               "NODEWARDEN_AGENT_STATE_DIR": str(workdir / "state"),
               "NODEWARDEN_IMAGEGATE_CACHE_PATH": str(workdir / "cache.db"),
               "NODEWARDEN_ENFORCE_NRI": "true",
               "NODEWARDEN_ENFORCE_NRI_SOCKET": str(cd.nri_socket),
               "NODEWARDEN_ENFORCE_OCI_GATE": "false",
               "NODEWARDEN_ENFORCE_GATE_SOCKET": str(workdir / "gate.sock"),
               **(env or {})}
        self.records: list[dict] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--json", "--families", "process",
             "--containerd-socket", str(cd.socket), "--policy", str(policy), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.wait_for(lambda r: r.get("event.name") == "agent.ready", timeout=ready_timeout)

    def _read(self) -> None:
        import orjson

        for line in self.proc.stdout:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            with self._cond:
                self.records.append(rec)
                self._cond.notify_all()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.stderr.append(line.decode(errors="replace").rstrip())
                self._cond.notify_all()

    def find(self, pred) -> list[dict]:
        with self._cond:
            return [r for r in self.records if pred(r)]

    def wait_for(self, pred, timeout: float = 30.0) -> dict:
        """The first record matching pred; AssertionError (with the agent's last stderr) on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.records:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "\n".join(self.stderr[-30:])
                    seen = [r for r in self.records if not r.get("event.name", "").startswith("process.")][-10:]
                    raise AssertionError(f"no matching agent record in {timeout}s (rc={self.proc.poll()}):\n{tail}\n"
                                         f"last records: {seen}")
                self._cond.wait(min(left, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class AgentSlot:
    """At most one agent at a time on a Containerd2: two would register the same NRI plugin name.
    use(policy) returns a running agent with that policy, registered with containerd, starting a new
    one (and stopping the old) only when the policy differs or the last one was stopped."""

    def __init__(self, cd: Containerd2, workdir: Path):
        self.cd, self.workdir = cd, workdir
        self.agent: Agent | None = None
        self._policy: tuple = ()
        self._n = 0

    def use(self, policy: str, env: dict | None = None) -> Agent:
        """env: NODEWARDEN_* settings of the agent (a different env is a different agent, too)."""
        want = (policy, tuple(sorted((env or {}).items())))
        if self.agent is not None and self.agent.proc.poll() is None and want == self._policy:
            return self.agent
        self.stop()
        self._n += 1
        path = self.workdir / f"policy-{self._n}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(policy)
        since = self.cd.log_size()
        self.agent = Agent(self.cd, path, self.workdir / f"agent-{self._n}", env=env)
        self._policy = want
        if not self.cd.wait_plugin(since):
            raise AssertionError("the agent's NRI plugin did not register:\n" + "\n".join(self.agent.stderr[-20:]))
        return self.agent

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.agent is not None:
            self.agent.stop(sig)
        self.agent = None
