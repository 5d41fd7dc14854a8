"""The DaemonSet as shipped (packaging/daemonset.yaml) gives the agent every socket its config names.

The sockets: containerd's (the watcher, post-start kills), containerd's NRI socket (the NRI gate
connects to it) and the OCI gate's (the agent serves it for nodewarden-runc on the host). Each must
sit under a hostPath volume mounted at the host's own path, else the agent and the runtime do not
meet: a socket made inside the pod is invisible to containerd, and one of the host's is invisible
to the agent.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import pytest
import yaml

from agent import config

MANIFEST = Path(__file__).resolve().parents[2] / "packaging" / "daemonset.yaml"
TOLERATE_ANNOTATION = "nodewarden.io/tolerate-missing-gate"  # docs/nri.md, the bundle's config-failclosed.toml


def _docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def _one(kind: str) -> dict:
    (doc,) = [d for d in _docs() if d.get("kind") == kind]
    return doc


def _shipped_config(tmp_path) -> config.Config:
    path = tmp_path / "config.yaml"
    path.write_text(_one("ConfigMap")["data"]["config.yaml"])
    return config.load(str(path), env={})


def _sockets(cfg: config.Config) -> dict[str, str]:
    return {"containers.containerd_socket": cfg.containers.containerd_socket,
            "enforce.nri_socket": cfg.enforce.nri_socket,
            "enforce.gate_socket": cfg.enforce.gate_socket}


def _host_dir_for(path: str) -> tuple[str, dict] | None:
    """The (mountPath, volume) of the agent container's mount that holds `path`, deepest first."""
    spec = _one("DaemonSet")["spec"]["template"]["spec"]
    (agent,) = [c for c in spec["containers"] if c["name"] == "agent"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = sorted(agent.get("volumeMounts", []), key=lambda m: len(m["mountPath"]), reverse=True)
    for m in mounts:
        root = m["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            return root, volumes[m["name"]]
    return None


def _check(name: str, sock: str) -> None:
    found = _host_dir_for(sock)
    assert found is not None, f"{name} {sock}: no volume of the DaemonSet holds it"
    root, volume = found
    host = volume.get("hostPath")
    assert host is not None, f"{name} {sock}: mounted from {volume}, not from the host"
    assert host["path"].rstrip("/") == root, f"{name} {sock}: the host's {host['path']} is mounted at {root}"
    # A directory, not the socket file itself: a socket re-created by a restart must still be seen.
    assert root == posixpath.dirname(sock) or host.get("type") != "Socket", f"{name}: {host}"


@pytest.mark.parametrize("which", ["defaults", "shipped"])
def test_every_socket_of_the_config_is_under_a_host_mount_at_the_same_path(tmp_path, which):
    cfg = config.Config() if which == "defaults" else _shipped_config(tmp_path)
    for name, sock in _sockets(cfg).items():
        _check(name, sock)


def test_shipped_config_uses_the_default_socket_paths(tmp_path):
    """The manifest names them for the reader; they must not drift from what the agent uses anyway."""
    assert _sockets(_shipped_config(tmp_path)) == _sockets(config.Config())
    assert _shipped_config(tmp_path).enforce.nri and _shipped_config(tmp_path).enforce.oci_gate


def test_gate_socket_dirs_are_created_when_missing():
    """Neither directory need exist when the pod starts (NRI makes its own when containerd starts;
    nobody but the agent makes /run/nodewarden), so the kubelet must create them, not refuse the pod."""
    for sock in (config.EnforceConfig().nri_socket, config.EnforceConfig().gate_socket):
        _root, volume = _host_dir_for(sock)
        assert volume["hostPath"].get("type") == "DirectoryOrCreate", volume


def test_agent_pod_tolerates_a_missing_gate():
    """With NRI fail-closed (required_plugins), the agent's own pod must start while no plugin is there."""
    annotations = _one("DaemonSet")["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get(TOLERATE_ANNOTATION) == "true"
