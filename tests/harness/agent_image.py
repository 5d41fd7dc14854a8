"""The agent's own image (`make image`) run as the Helm DaemonSet runs it, under a Containerd2 through CRI.

`build_agent_image()` runs packaging/image/build.py, the script `make image` runs, into build/image/ (its
cache there makes a second build quick). `AgentPod` renders the chart (tests/harness/helm_render.py) and
starts the image the way the kubelet would start the DaemonSet's pod from it: the pod's hostPID and
hostNetwork as CRI NODE namespaces; the container's args, env (the downward API's node name filled in),
securityContext (privileged, capabilities, readOnlyRootFilesystem, allowPrivilegeEscalation as
no_new_privs, runAsUser, seccomp and AppArmor types) and volume mounts, taken from the rendered pod spec,
so the test follows the chart. The volumes become host paths: a hostPath is the host's own path (the
host's /proc, /sys/kernel/btf, tracefs, /sys/fs/cgroup, /lib/modules when it exists), except the node's
paths that belong to the test's containerd or would touch the node's state (containerd's and NRI's socket
directories become the Containerd2's sockets, bind-mounted at the paths the agent expects under the
mount; the state, gate and pod-resources directories are the test's); a configMap is a directory of the
test holding the rendered ConfigMap's files; an emptyDir is an empty directory of the test.

The agent's stdout and stderr are read from its CRI log file (`<time> <stream> <P|F> <text>` lines).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .containerd import unique_id, wait_until
from .containerd2 import REPO_ROOT, Containerd2

BUILD_SCRIPT = REPO_ROOT / "packaging" / "image" / "build.py"
CHART = REPO_ROOT / "packaging" / "helm" / "nodewarden"
OUT_DIR = REPO_ROOT / "build" / "image"
TOOLS = {"mmdebstrap": "mmdebstrap", "umoci": "umoci"}
_CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
             "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_ADMIN": 12, "NET_RAW": 13,
             "IPC_LOCK": 14, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_ADMIN": 21, "SYS_NICE": 23,
             "SYS_RESOURCE": 24, "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31, "SYSLOG": 34, "PERFMON": 38,
             "BPF": 39, "CHECKPOINT_RESTORE": 40}
_PROFILE = {"RuntimeDefault": 0, "Unconfined": 1}  # CRI SecurityProfile.ProfileType


def ensure_tools() -> str | None:
    """None when mmdebstrap and umoci are there (installed with apt when missing), else why not."""
    missing = [pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"{', '.join(missing)} missing and not root to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"cannot install {', '.join(missing)}: {' '.join(cmd[:2])}: {e}"
        if r.returncode != 0:
            tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:]
            return f"cannot install {', '.join(missing)}: {' '.join(cmd[:2])} failed: {' '.join(tail)}"
    return None


def build_agent_image(out_dir: Path = OUT_DIR, timeout: float = 1200) -> dict:
    """Build (or find cached) the image with `make image`'s script; its image.json as a dict."""
    r = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--out", str(out_dir)], capture_output=True,
                       text=True, timeout=timeout, cwd=REPO_ROOT)
    if r.returncode != 0:
        raise AssertionError(f"packaging/image/build.py failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def host_has_caps(*caps: str) -> set[str]:
    """Which of these capabilities this process's bounding set holds: a container cannot be given one
    its runtime does not hold (runc's capset fails)."""
    with open("/proc/self/status") as f:
        bnd = int(next(line for line in f if line.startswith("CapBnd:")).split()[1], 16)
    return {c for c in caps if bnd >> _CAP_BITS[c] & 1}


def daemonset(values: dict | None = None) -> tuple[dict, dict[str, dict]]:
    """The rendered chart's agent pod spec, and its ConfigMaps' data by name."""
    from .helm_render import Chart

    docs = Chart(CHART).manifests(values)
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    return ds["spec"]["template"], maps


def parse_cri_log(text: str, parts: dict | None = None) -> list[tuple[str, str]]:
    """(stream, line) per whole line of a CRI log file; partial (P) pieces joined to their final (F).
    parts: pieces still waiting for their F line, kept between calls on one file."""
    out, parts = [], ({} if parts is None else parts)
    for raw in text.splitlines():
        bits = raw.split(" ", 3)
        if len(bits) < 3:
            continue
        _, stream, tag = bits[:3]
        text = bits[3] if len(bits) == 4 else ""
        parts.setdefault(stream, []).append(text)
        if tag == "F":
            out.append((stream, "".join(parts.pop(stream))))
    return out


class AgentPod:
    """The agent image's pod on `cd`, made from the rendered DaemonSet; `records()` its JSON stdout records.
    values: chart values (no collector, a free metrics port, by default)."""

    def __init__(self, cd: Containerd2, image: str, workdir: Path, metrics_port: int, values: dict | None = None):
        self.cd, self.image, self.workdir, self.metrics_port = cd, image, workdir, metrics_port
        self.name = unique_id("nodewarden-agent")
        self.template, self.config_maps = daemonset(
            {"collector": {"enabled": False}, "agent": {"metricsPort": metrics_port}, **(values or {})})
        self.spec = self.template["spec"]
        (self.container,) = [c for c in self.spec["containers"] if c["name"] == "agent"]
        sc = self.container["securityContext"]
        want = sc["capabilities"]["add"]
        self.caps = [c for c in want if c in host_has_caps(*want)]
        self.caps_lacking = [c for c in want if c not in self.caps]
        self.log_dir = cd.base / "podlogs" / self.name
        self.pod_id = self.cid = ""
        self._offset, self._partial, self._records, self._stderr = 0, {}, [], []

    # --- the pod and its container, as the kubelet makes them from the DaemonSet -----------------

    def _namespaces(self) -> dict:
        return {"network": 2 if self.spec.get("hostNetwork") else 0, "pid": 2 if self.spec.get("hostPID") else 1}

    def _pod_config(self) -> dict:
        meta = self.template["metadata"]
        return {"metadata": {"name": self.name, "namespace": "nodewarden", "uid": f"uid-{self.name}", "attempt": 0},
                "log_directory": str(self.log_dir),
                "annotations": {k: str(v) for k, v in meta.get("annotations", {}).items()},
                "labels": {**{k: str(v) for k, v in meta.get("labels", {}).items()},
                           **kubelet_labels(self.name, "nodewarden")},
                "linux": {"security_context": {"namespace_options": self._namespaces()}}}

    def _volume_paths(self, vol: dict, mount_path: str) -> list[tuple[str, str]]:
        """(container path, host path) pairs for one volume mounted at mount_path."""
        w, name = self.workdir / "volumes", vol["name"]
        if "configMap" in vol:
            d = w / name
            d.mkdir(parents=True, exist_ok=True)
            for fname, text in self.config_maps[vol["configMap"]["name"]].items():
                (d / fname).write_text(text)
            return [(mount_path, str(d))]
        if "emptyDir" in vol:
            d = w / name
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o1777 if mount_path == "/tmp" else 0o755)
            return [(mount_path, str(d))]
        host = vol["hostPath"]["path"]
        if host == "/run/containerd":  # the node's containerd: here the test's, its socket where the agent looks
            return [(f"{mount_path}/containerd.sock", str(self.cd.socket))]
        if host == "/var/run/nri":
            return [(f"{mount_path}/nri.sock", str(self.cd.nri_socket))]
        if host in ("/proc", "/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup") or (
                host == "/lib/modules" and os.path.isdir(host)):
            return [(mount_path, host)]
        # the node's state, the gate's socket directory, the kubelet's pod-resources, a missing /lib/modules:
        # the test's own directories, so that nothing of the host's is written or read
        d = w / name
        d.mkdir(parents=True, exist_ok=True)
        return [(mount_path, str(d))]

    def mounts(self) -> list[dict]:
        vols = {v["name"]: v for v in self.spec["volumes"]}
        out = []
        for m in self.container["volumeMounts"]:
            for cpath, hpath in self._volume_paths(vols[m["name"]], m["mountPath"]):
                out.append({"container_path": cpath, "host_path": hpath, "readonly": bool(m.get("readOnly"))})
        return out

    def env(self) -> dict[str, str]:
        out = {}
        for e in self.container.get("env", []):
            if "value" in e:
                out[e["name"]] = str(e["value"])
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
                out[e["name"]] = os.uname().nodename
            else:
                raise AssertionError(f"the DaemonSet's env {e['name']}: no test equivalent for {e}")
        return out

    def _container_config(self) -> dict:
        sc = self.container["securityContext"]
        return {"metadata": {"name": self.container["name"]}, "image": {"image": self.image},
                "args": list(self.container["args"]),
                "envs": [{"key": k, "value": v} for k, v in self.env().items()],
                "mounts": self.mounts(), "log_path": "agent.log",
                "labels": kubelet_labels(self.name, "nodewarden", self.container["name"]),
                "linux": {"security_context": {
                    "privileged": bool(sc.get("privileged")),
                    "capabilities": {"drop_capabilities": list(sc["capabilities"]["drop"]),
                                     "add_capabilities": self.caps},
                    "namespace_options": self._namespaces(),
                    "run_as_user": {"value": int(sc.get("runAsUser", 0))},
                    "no_new_privs": sc.get("allowPrivilegeEscalation") is False,
                    "readonly_rootfs": bool(sc.get("readOnlyRootFilesystem")),
                    "seccomp": {"profile_type": _PROFILE[sc["seccompProfile"]["type"]]},
                    "apparmor": {"profile_type": _PROFILE[sc["appArmorProfile"]["type"]]}}}}

    def start(self) -> AgentPod:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pod_cfg = self.workdir / "pod.json"
        pod_cfg.write_text(json.dumps(self._pod_config()))
        self.pod_id = self.cd.crictl("runp", str(pod_cfg), timeout=90).stdout.strip()
        ctr_cfg = self.workdir / "agent.json"
        ctr_cfg.write_text(json.dumps(self._container_config()))
        self.cid = self.cd.crictl("create", self.pod_id, str(ctr_cfg), str(pod_cfg), timeout=90).stdout.strip()
        self.cd.crictl("start", self.cid, timeout=60)
        return self

    def host_dir(self, volume: str) -> Path:
        """The test's directory standing for a volume (state, tmp, config ...)."""
        return self.workdir / "volumes" / volume

    def stop(self) -> None:
        if self.pod_id:
            self.cd.remove_pod(self.pod_id)

    # --- what it says ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Parse what the CRI log file gained since the last call (whole lines only): the agent logs every
        event of a busy host, so re-reading the whole file on every poll would not keep up."""
        try:
            with open(self.log_dir / "agent.log", "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for stream, line in parse_cri_log(chunk[:end].decode(errors="replace"), self._partial):
            if stream == "stderr":
                self._stderr.append(line)
            elif line.startswith("{"):
                try:
                    self._records.append(json.loads(line))
                except ValueError:
                    continue

    def records(self) -> list[dict]:
        self._refresh()
        return self._records

    def stderr(self) -> list[str]:
        self._refresh()
        return self._stderr

    def state(self) -> str:
        return self.cd.state(self.cid) if self.cid else ""

    def wait_for(self, pred, timeout: float = 30.0, what: str = "record") -> dict:
        """The first stdout record matching pred; AssertionError with the agent's last words if none."""
        seen = 0

        def look():
            nonlocal seen
            recs = self.records()
            hit = next((r for r in recs[seen:] if pred(r)), None)
            seen = len(recs)
            return hit or (self.state() == "CONTAINER_EXITED" and "exited")

        found = wait_until(look, timeout=timeout, interval=0.2)
        if isinstance(found, dict):
            return found
        tail = "\n".join(self.stderr()[-25:])
        seen = [r.get("event.name") for r in self.records() if not str(r.get("event.name", "")).startswith("process.")]
        raise AssertionError(f"no {what} from the agent's container in {timeout}s (state {self.state()}):\n{tail}\n"
                             f"non-process records: {seen[-15:]}")

    def wait_stderr(self, needle: str, timeout: float = 30.0) -> str:
        found = wait_until(lambda: next((line for line in self.stderr() if needle in line), None), timeout=timeout,
                           interval=0.2)
        if not found:
            raise AssertionError(f"the agent never logged {needle!r}:\n" + "\n".join(self.stderr()[-25:]))
        return found


def kubelet_labels(pod: str, namespace: str, container: str = "") -> dict[str, str]:
    """The labels the kubelet puts on a pod sandbox and its containers (the agent names pods from them)."""
    out = {"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": namespace,
           "io.kubernetes.pod.uid": f"uid-{pod}"}
    return {**out, "io.kubernetes.container.name": container} if container else out


def run_workload(cd: Containerd2, workdir: Path, image: str, cmd: list[str], pod: str, namespace: str,
                 container: str = "app") -> tuple[str, str]:
    """A pod with one container, as the kubelet creates them (its labels on both); (pod id, container id)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pod_cfg = workdir / f"pod-{pod}.json"
    pod_cfg.write_text(json.dumps({
        "metadata": {"name": pod, "namespace": namespace, "uid": f"uid-{pod}", "attempt": 0},
        "log_directory": str(cd.base / "podlogs" / pod), "labels": kubelet_labels(pod, namespace),
        "linux": {"security_context": {"namespace_options": {"network": 2}}}}))
    pod_id = cd.crictl("runp", str(pod_cfg), timeout=90).stdout.strip()
    ctr_cfg = workdir / f"ctr-{pod}.json"
    ctr_cfg.write_text(json.dumps({
        "metadata": {"name": container}, "image": {"image": image}, "command": cmd, "log_path": f"{container}.log",
        "labels": kubelet_labels(pod, namespace, container), "linux": {}}))
    cid = cd.crictl("create", pod_id, str(ctr_cfg), str(pod_cfg), timeout=90).stdout.strip()
    cd.crictl("start", cid, timeout=60)
    return pod_id, cid


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_host_command(workdir: Path, marker: str) -> Path:
    """Run a program named `marker` on the host (a copy of /bin/true), to see its exec reported."""
    prog = workdir / marker
    shutil.copy("/bin/true", prog)
    subprocess.run([str(prog), marker], check=True, timeout=10)
    time.sleep(0.1)
    return prog
