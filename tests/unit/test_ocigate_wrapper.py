"""nodewarden-runc: runc argv parsing, the request it sends, the shell wrapper's dispatch, block/fail paths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.enforce import runc_wrapper as rw

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc123"
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


# --- argv parsing ----------------------------------------------------------------------------------


def test_shim_create_line():
    # What containerd 1.6's runc.v2 shim ran here (seen through a logging BinaryName).
    argv = ["--root", "/run/containerd/runc/k8s.io", "--log", f"{BUNDLE}/log.json", "--log-format", "json",
            "create", "--bundle", BUNDLE, "--pid-file", f"{BUNDLE}/init.pid", "abc123"]
    inv = rw.parse_argv(argv)
    assert (inv.subcommand, inv.container_id, inv.bundle) == ("create", "abc123", BUNDLE)
    assert (inv.root, inv.log, inv.log_format) == ("/run/containerd/runc/k8s.io", f"{BUNDLE}/log.json", "json")
    assert inv.flags["create.pid-file"] == f"{BUNDLE}/init.pid"
    assert rw.namespace_of(inv) == "k8s.io"


@pytest.mark.parametrize("argv", [
    ["--systemd-cgroup", "--root", "/r/ns", "create", "-b", BUNDLE, "--console-socket", "/tmp/c.sock", "abc123"],
    ["--debug", "--log=/x/log.json", "--log-format=json", "--root=/r/ns", "create", f"--bundle={BUNDLE}",
     "--no-pivot", "--no-new-keyring", "--preserve-fds", "2", "abc123"],
    ["-root", "/r/ns", "--criu", "/usr/sbin/criu", "--rootless", "false", "create", "--pid-file", "p", "-b",
     BUNDLE, "abc123"],
    ["--root", "/r/ns", "create", "--bundle", BUNDLE, "--", "abc123"],
])
def test_global_and_create_flags(argv):
    inv = rw.parse_argv(argv)
    assert (inv.subcommand, inv.container_id, inv.bundle) == ("create", "abc123", BUNDLE)
    assert rw.namespace_of(inv) == "k8s.io"  # from the bundle path, whatever the root


def test_bundle_defaults_to_cwd_and_namespace_falls_back_to_root():
    inv = rw.parse_argv(["--root", "/run/containerd/runc/default", "create", "c1"], cwd="/some/where")
    assert (inv.bundle, inv.container_id) == ("/some/where", "c1")
    assert rw.namespace_of(inv) == "default"


def test_run_is_gated_too():
    inv = rw.parse_argv(["run", "--detach", "--bundle", "/b/ns/c2", "c2"])
    assert inv.subcommand in rw.GATED and inv.container_id == "c2"


@pytest.mark.parametrize("argv,sub", [
    (["--root", "/r", "--log", "/l", "--log-format", "json", "start", "c1"], "start"),
    (["--root", "/r", "state", "c1"], "state"),
    (["--root", "/r", "delete", "--force", "c1"], "delete"),
    (["--root", "/r", "exec", "--process", "/p.json", "--detach", "c1"], "exec"),
    (["--root", "/r", "kill", "c1", "9"], "kill"),
    (["--version"], ""),
    ([], ""),
])
def test_other_subcommands_are_not_gated(argv, sub):
    inv = rw.parse_argv(argv)
    assert inv.subcommand == sub and inv.subcommand not in rw.GATED
    assert inv.container_id == ""  # nothing past the subcommand is parsed for them


def test_request_takes_the_spec_excerpt(tmp_path):
    spec = {
        "process": {"args": ["/bin/sh", "-c", "x" * 10000]},
        "root": {"path": "rootfs"},
        "linux": {"cgroupsPath": "kubepods-pod1.slice:cri-containerd:abc123"},
        "annotations": {rw.ANN_IMAGE: "docker.io/library/nginx:1", rw.ANN_TYPE: "container",
                        rw.ANN_POD: "web-0", rw.ANN_POD_NS: "prod", rw.ANN_NAME: "nginx"},
    }
    bundle = tmp_path / "k8s.io" / "abc123"
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(spec))
    inv = rw.parse_argv(["--root", "/r/k8s.io", "create", "--bundle", str(bundle), "abc123"])
    req = rw.build_request(inv, rw.read_spec(str(bundle)), 1900)
    assert req["v"] == rw.PROTOCOL_VERSION and req["op"] == "create" and req["deadline_ms"] == 1900
    assert (req["namespace"], req["id"], req["image"]) == ("k8s.io", "abc123", "docker.io/library/nginx:1")
    assert (req["pod"], req["pod_namespace"], req["name"], req["container_type"]) == ("web-0", "prod", "nginx",
                                                                                      "container")
    assert req["cgroups_path"] == spec["linux"]["cgroupsPath"] and req["rootfs"] == "rootfs"
    assert len(req["args"][2]) == 4096  # clipped


def test_bad_spec_still_asks(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    assert rw.read_spec(str(tmp_path)) == {}
    assert rw.read_spec(str(tmp_path / "missing")) == {}
    inv = rw.parse_argv(["create", "--bundle", str(tmp_path), "c"])
    req = rw.build_request(inv, {"annotations": "nope", "linux": [], "process": {"args": "x"}}, 5)
    assert req["annotations"] == {} and req["args"] == [] and req["cgroups_path"] == ""


def test_config_from_env_clamps():
    cfg = rw.Config.from_env({"NODEWARDEN_GATE_TIMEOUT": "1e9", "NODEWARDEN_GATE_FAIL": "Closed",
                              "NODEWARDEN_RUNC": "/x/runc", "NODEWARDEN_GATE_SOCKET": "/s"})
    assert (cfg.timeout, cfg.fail_closed, cfg.runc, cfg.socket) == (30.0, True, "/x/runc", "/s")
    cfg = rw.Config.from_env({"NODEWARDEN_GATE_TIMEOUT": "nan"})
    assert cfg.timeout == rw.DEFAULT_TIMEOUT and not cfg.fail_closed and cfg.socket == rw.DEFAULT_SOCKET
    assert rw.Config.from_env({"NODEWARDEN_GATE_TIMEOUT": "bogus"}).timeout == rw.DEFAULT_TIMEOUT


def test_runc_log_records_parse_as_the_shim_reads_them(tmp_path):
    inv = rw.parse_argv(["--log", str(tmp_path / "log.json"), "--log-format", "json", "create", "c"])
    rw.runc_log(inv, "warning", "w")
    rw.runc_log(inv, "error", "nodewarden: blocked")
    recs = [json.loads(line) for line in (tmp_path / "log.json").read_text().splitlines()]
    assert [r["level"] for r in recs] == ["warning", "error"] and recs[-1]["msg"] == "nodewarden: blocked"
    assert recs[0]["time"].endswith("Z") and "T" in recs[0]["time"]  # RFC 3339, as Go's time.Time wants


# --- the shell wrapper -----------------------------------------------------------------------------


def test_packaged_wrapper_is_the_rendered_default():
    assert (REPO / "packaging" / "nodewarden-runc").read_text() == rw.render_shell()
    assert os.access(REPO / "packaging" / "nodewarden-runc", os.X_OK)


def test_render_refuses_bad_settings():
    with pytest.raises(ValueError):
        rw.render_shell(fail="maybe")
    with pytest.raises(ValueError):
        rw.render_shell(timeout=0)


def test_install_refuses_to_wrap_itself(tmp_path):
    with pytest.raises(ValueError):
        rw.install(str(tmp_path), name="runc", runc=str(tmp_path / "runc"))


def _fake(path: Path, tag: str) -> str:
    """A stand-in runc / python that records its argv (one per line) and exits 0."""
    path.write_text(f'#!/bin/sh\n{{ echo {tag}; for a; do echo "$a"; done; }} > "{path}.out"\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("argv,expect", [
    (["--root", "/r", "--log", "/l", "--log-format", "json", "state", "c1"], "runc"),
    (["--root", "/r", "--log", "/l", "--log-format", "json", "delete", "--force", "create"], "runc"),
    (["--systemd-cgroup", "--log=/l", "start", "c1"], "runc"),
    (["--version"], "runc"),
    (["--root", "/r", "--log", "/l", "--log-format", "json", "create", "--bundle", "/b", "c1"], "helper"),
    (["--root", "/r", "run", "c1"], "helper"),
])
def test_shell_dispatch(tmp_path, argv, expect):
    runc, python = _fake(tmp_path / "runc", "runc"), _fake(tmp_path / "python", "helper")
    path = rw.install(str(tmp_path / "bin"), runc=runc, python=python)
    subprocess.run([path, *argv], check=True, timeout=10)
    out = Path((runc if expect == "runc" else python) + ".out").read_text().splitlines()
    assert out[0] == expect
    if expect == "runc":
        assert out[1:] == argv  # argv passed through untouched
    else:
        assert out[1:] == ["-I", "-S", str(tmp_path / "bin" / rw.HELPER_NAME), *argv]


# --- the helper end to end against a fake runc (no agent, no root) ---------------------------------


def _bundle(tmp_path: Path, cid: str = "c1") -> Path:
    b = tmp_path / "state" / "ns1" / cid
    b.mkdir(parents=True)
    (b / "config.json").write_text(json.dumps({"process": {"args": ["/bin/true"]}}))
    return b


def _run_helper(tmp_path, env_extra, cid="c1"):
    bundle = _bundle(tmp_path, cid)
    runc = _fake(tmp_path / "runc", "runc")
    env = {"PATH": "/usr/bin:/bin", "NODEWARDEN_RUNC": runc, **env_extra}
    argv = ["--root", "/r/ns1", "--log", str(bundle / "log.json"), "--log-format", "json",
            "create", "--bundle", str(bundle), cid]
    r = subprocess.run([PYTHON, "-I", "-S", rw.__file__, *argv], env=env, capture_output=True, text=True,
                       timeout=20)
    ran = Path(runc + ".out").exists()
    log = bundle / "log.json"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return r, ran, records


def test_fail_open_execs_runc_and_logs_a_warning(tmp_path):
    r, ran, records = _run_helper(tmp_path, {"NODEWARDEN_GATE_SOCKET": str(tmp_path / "absent.sock")})
    assert r.returncode == 0 and ran
    assert records and records[-1]["level"] == "warning" and "failed open" in records[-1]["msg"]
    assert r.stderr == ""  # stderr may be the container's: nothing written there on the way to runc


def test_fail_closed_refuses_without_running_runc(tmp_path):
    r, ran, records = _run_helper(tmp_path, {"NODEWARDEN_GATE_SOCKET": str(tmp_path / "absent.sock"),
                                             "NODEWARDEN_GATE_FAIL": "closed"})
    assert r.returncode == 1 and not ran
    assert records[-1]["level"] == "error" and "gate failed closed" in records[-1]["msg"]
    assert "blocked" in r.stderr and "agent unreachable" in r.stderr
