"""The Helm chart (packaging/helm/nodewarden) and the plain manifest (packaging/daemonset.yaml), offline.

No helm binary can be installed here (Debian 12, PyPI and npm ship none), so the chart keeps to a small
subset of Helm's template language and tests/harness/helm_render.py renders exactly that subset (it
refuses anything else). Every rendered manifest is validated with kubernetes-validate against the
Kubernetes 1.30 schemas (strict: an unknown field is an error), and the security facts are checked:
no privileged container, the agent's capabilities are exactly the seven it needs on top of drop ALL,
host PID, the NRI, gate and containerd sockets under host mounts at the host's own paths,
system-node-critical, the node name from the downward API. The configs the chart renders are loaded
by the agent's and the collector's own config loaders, so a key either does not know fails here.
"""

from __future__ import annotations

import argparse
import base64
import posixpath
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from agent import config
from agent.commands import collector as collector_cmd
from tests.harness.helm_render import Chart, TemplateError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "packaging" / "helm" / "nodewarden"
MANIFEST = ROOT / "packaging" / "daemonset.yaml"
K8S = "1.30.0"
CAPS = {"BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE", "DAC_OVERRIDE", "DAC_READ_SEARCH", "KILL"}
TOKEN = {"collector": {"token": "s3cret"}}
FULL = {"collector": {"token": "s3cret", "postgres": {"url": "postgresql://nw:pw@pg:5432/nw"},
                      "nats": {"url": "nats://nats:4222"}, "replicas": 3},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "agent": {"priorityQuota": {"enabled": True}}}


def _render(values=None) -> list[dict]:
    return Chart(CHART).manifests(values)


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _validate(doc: dict) -> None:
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        # A CRD: not in Kubernetes' schemas; its shape is checked in test_service_monitor.
        return
    kubernetes_validate.validate(doc, K8S, strict=True)


def _agent_pod(docs: list[dict]) -> dict:
    return _one(docs, "DaemonSet")["spec"]["template"]


def _agent(docs: list[dict]) -> dict:
    (c,) = [c for c in _agent_pod(docs)["spec"]["containers"] if c["name"] == "agent"]
    return c


def _host_dir_for(docs: list[dict], path: str) -> tuple[str, dict] | None:
    """The (mountPath, volume) of the agent's mount that holds `path`, deepest first."""
    volumes = {v["name"]: v for v in _agent_pod(docs)["spec"]["volumes"]}
    mounts = sorted(_agent(docs)["volumeMounts"], key=lambda m: len(m["mountPath"]), reverse=True)
    for m in mounts:
        root = m["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            return root, volumes[m["name"]]
    return None


def _least_privilege(docs: list[dict]) -> None:
    """The security facts both the chart and the plain manifest must hold."""
    pod = _agent_pod(docs)["spec"]
    agent = _agent(docs)
    sc = agent["securityContext"]
    for d in docs:  # no container of any workload is privileged
        spec = d.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            assert not c.get("securityContext", {}).get("privileged"), (d["kind"], c["name"])
    assert sc.get("privileged") is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPS
    assert len(sc["capabilities"]["add"]) == len(CAPS)
    assert sc.get("allowPrivilegeEscalation") is False
    assert pod["hostPID"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    if pod.get("hostNetwork"):  # else the collector's Service name does not resolve from the pod
        assert pod.get("dnsPolicy") == "ClusterFirstWithHostNet"
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODEWARDEN_AGENT_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # The sockets the agent uses (its defaults are what both ship): each under a hostPath volume mounted at
    # the host's own path, directories created when missing (a socket made in the pod is invisible to the host).
    enforce, containers = config.EnforceConfig(), config.ContainersConfig()
    for name, sock in (("nri", enforce.nri_socket), ("gate", enforce.gate_socket),
                       ("containerd", containers.containerd_socket)):
        found = _host_dir_for(docs, sock)
        assert found is not None, f"{name} socket {sock}: no mount holds it"
        root, volume = found
        assert volume["hostPath"]["path"].rstrip("/") == root == posixpath.dirname(sock), (name, volume)
    for sock in (enforce.nri_socket, enforce.gate_socket):
        assert _host_dir_for(docs, sock)[1]["hostPath"]["type"] == "DirectoryOrCreate"
    for path, ro in (("/sys/kernel/btf", True), ("/sys/fs/cgroup", True), ("/host/proc", True),
                     ("/var/lib/nodewarden", False)):
        (m,) = [m for m in agent["volumeMounts"] if m["mountPath"] == path]
        assert bool(m.get("readOnly")) == ro, m
    assert _agent_pod(docs)["metadata"]["annotations"]["nodewarden.io/tolerate-missing-gate"] == "true"


@pytest.mark.parametrize("values", [TOKEN, FULL, {"collector": {"enabled": False}}],
                         ids=["defaults", "postgres-nats-servicemonitor", "agent-only"])
def test_every_rendered_manifest_validates_against_kubernetes_schemas(values):
    docs = _render(values)
    assert {"DaemonSet", "ConfigMap"} <= {d["kind"] for d in docs}
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("values", [TOKEN, FULL], ids=["defaults", "full"])
def test_agent_daemonset_least_privilege(values):
    _least_privilege(_render(values))


def test_plain_manifest_validates_and_holds_the_same_least_privilege():
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    for doc in docs:
        _validate(doc)
    _least_privilege(docs)


def test_rendered_agent_config_loads_in_the_agent_with_the_chart_env(tmp_path):
    docs = _render(TOKEN)
    cm = _one(docs, "ConfigMap", "nodewarden-agent")
    (tmp_path / "config.yaml").write_text(cm["data"]["config.yaml"])
    env = {e["name"]: e["value"] for e in _agent(docs)["env"] if "value" in e}
    env["NODEWARDEN_AGENT_NODE_NAME"] = "node-a"  # what the downward API gives
    cfg = config.load(str(tmp_path / "config.yaml"), env=env)
    assert cfg.agent.node_name == "node-a"
    assert cfg.export.collector == "nodewarden-collector.nodewarden.svc:7470"
    assert cfg.enforce.nri and cfg.enforce.oci_gate
    # Every file the config names is where the pod mounts it.
    mounts = {m["mountPath"] for m in _agent(docs)["volumeMounts"]}
    for path in (cfg.agent.policy_file, cfg.export.token_file, "/etc/nodewarden/config/config.yaml"):
        assert posixpath.dirname(path) in mounts, path
    assert _agent(docs)["args"][-1] == "/etc/nodewarden/config/config.yaml"
    policy = _one(docs, "ConfigMap", "nodewarden-policy")
    assert posixpath.basename(cfg.agent.policy_file) in policy["data"]
    token = _one(docs, "Secret", "nodewarden-token")
    assert base64.b64decode(token["data"]["token"]).decode() == "s3cret"
    assert posixpath.basename(cfg.export.token_file) in token["data"]


def _collector_cfg(docs, tmp_path):
    secret = _one(docs, "Secret", "nodewarden-collector")
    path = tmp_path / "collector.yaml"
    path.write_bytes(base64.b64decode(secret["data"]["collector.yaml"]))
    p = argparse.ArgumentParser()
    collector_cmd.add_arguments(p)
    return collector_cmd.build_config(p.parse_args(["--config", str(path)]))


def test_rendered_collector_config_loads_in_the_collector(tmp_path):
    docs = _render(TOKEN)
    cfg = _collector_cfg(docs, tmp_path)
    assert cfg.listen == ["0.0.0.0:7470"] and cfg.http_listen == "0.0.0.0:7480"
    assert cfg.token_file == "/etc/nodewarden/token/token" and not cfg.store and not cfg.nats
    assert cfg.retention_age_s == 7 * 86400 and cfg.retention_bytes == 1 << 30
    dep = _one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"  # SQLite: one writer
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    svc = _one(docs, "Service", "nodewarden-collector")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"grpc": 7470, "metrics": 9102, "console": 7480}

    cfg = _collector_cfg(_render(FULL), tmp_path)
    assert cfg.store == "postgresql://nw:pw@pg:5432/nw" and cfg.nats == "nats://nats:4222"
    assert _one(_render(FULL), "Deployment")["spec"]["replicas"] == 3


def test_checksum_annotations_follow_the_config():
    def sums(values):
        docs = _render(values)
        return (_agent_pod(docs)["metadata"]["annotations"],
                _one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"])

    agent0, coll0 = sums(TOKEN)
    agent1, coll1 = sums({**TOKEN, "agent": {"config": {"output": {"format": "text"}}}})
    assert agent0["checksum/config"] != agent1["checksum/config"]
    assert agent0["checksum/policy"] == agent1["checksum/policy"] and coll0 == coll1
    agent2, _ = sums({**TOKEN, "agent": {"policy": {"runtime": {"action": "alert"}}}})
    assert agent2["checksum/policy"] != agent0["checksum/policy"]
    _, coll3 = sums({"collector": {"token": "s3cret", "retentionAge": "1d"}})
    assert coll3["checksum/config"] != coll0["checksum/config"]


def test_service_monitor_only_when_asked():
    assert not [d for d in _render(TOKEN) if d["kind"] == "ServiceMonitor"]
    docs = _render(FULL)
    sm = _one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["metadata"]["labels"]["release"] == "prom"
    selected = [d for d in docs if d["kind"] == "Service"
                and all(d["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())]
    # The agents' metrics and the collector's, each a Service with the port the endpoint names.
    assert {d["metadata"]["name"] for d in selected} == {"nodewarden-agent-metrics", "nodewarden-collector"}
    for d in selected:
        assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in d["spec"]["ports"]}


def test_priority_quota_names_the_agents_class():
    assert not [d for d in _render(TOKEN) if d["kind"] == "ResourceQuota"]
    quota = _one(_render(FULL), "ResourceQuota")
    (expr,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert expr["values"] == [_agent_pod(_render(FULL))["spec"]["priorityClassName"]]
    assert quota["spec"]["hard"]["pods"] == "10000"


def test_notes_name_what_was_installed():
    chart = Chart(CHART)
    chart.render(TOKEN)
    assert "ds/nodewarden-agent" in chart.rendered_notes
    assert "port-forward svc/nodewarden-collector 7480" in chart.rendered_notes
    chart.render({"collector": {"enabled": False}})
    assert "console" not in chart.rendered_notes


def test_bad_values_fail_with_one_line():
    with pytest.raises(TemplateError, match="collector.token is required"):
        _render()
    with pytest.raises(TemplateError, match="needs collector.postgres.url"):
        _render({"collector": {"token": "x", "replicas": 2}})
    with pytest.raises(TemplateError, match="collector.replicas: 'three' is not of type 'integer'"):
        _render({"collector": {"token": "x", "replicas": "three"}})
    with pytest.raises(TemplateError, match="Additional properties"):
        _render({"collector": {"token": "x", "tokn": "y"}})
    with pytest.raises(TemplateError, match="agent.seccompProfile"):
        _render({"collector": {"token": "x"}, "agent": {"seccompProfile": "Off"}})
    assert [d for d in _render({"collector": {"existingSecret": "mine"}}) if d["kind"] == "Secret"
            and d["metadata"]["name"].endswith("-token")] == []


def test_renderer_refuses_what_it_does_not_know(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("name: x\nversion: 0.1.0\n")
    (tmp_path / "values.yaml").write_text("a: 1\n")
    (tmp_path / "templates" / "t.yaml").write_text("v: {{ .Values.a | upper }}\n")
    with pytest.raises(TemplateError, match="unknown function|not in this subset"):
        Chart(tmp_path).render()
    (tmp_path / "templates" / "t.yaml").write_text("{{- if .Values.a }}\nv: {{ .Values.a }}\n")
    with pytest.raises(TemplateError, match="missing"):
        Chart(tmp_path)
    # Helm's numbers from values files are float64: these render wrong or fail in helm, so they fail here.
    for bad, msg in (('p: {{ printf "%d" .Values.a }}', "float64"),
                     ("{{- if eq .Values.a 1 }}x: 1{{- end }}", "incompatible types")):
        (tmp_path / "templates" / "t.yaml").write_text(bad + "\n")
        with pytest.raises(TemplateError, match=msg):
            Chart(tmp_path).render()
    (tmp_path / "templates" / "t.yaml").write_text(
        'p: {{ printf "%v" .Values.a }}\n{{- if gt (int .Values.a) 0 }}\nq: 1{{ end }}\n')
    assert yaml.safe_load(Chart(tmp_path).render()["t.yaml"]) == {"p": 1, "q": 1}
    (tmp_path / "templates" / "t.yaml").write_text("{{- range .Values.l }}\n- {{ . | quote }}\n{{- end }}\n")
    assert yaml.safe_load(Chart(tmp_path).render({"l": ["a", 'b"c']})["t.yaml"]) == ["a", 'b"c']


# -- the capabilities, each checked by dropping it (root: the kernel decides, not our code) --

# One operation the agent performs per capability, run in a child under setpriv with a bounding set
# (a root process's permitted and effective sets are its bounding set after execve). Exit 0: allowed,
# 13: refused (EPERM/EACCES).
_OPS = r'''
import ctypes, errno, os, resource, sys
op, arg = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    fd = libc.syscall(321, cmd, buf, 128)  # __NR_bpf on x86_64
    if fd < 0:
        raise OSError(ctypes.get_errno(), "bpf")
    os.close(fd)
try:
    if op == "bpf":  # BPF_MAP_CREATE, an array of one u32
        bpf(0, (2).to_bytes(4, "little") + (4).to_bytes(4, "little") * 2 + (1).to_bytes(4, "little"))
    elif op == "perfmon":  # BPF_PROG_LOAD of a kprobe program (r0 = 0; exit): the kind the probes are
        insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"), 16)
        lic = ctypes.create_string_buffer(b"GPL")
        attr = (2).to_bytes(4, "little") + (2).to_bytes(4, "little") + \
            ctypes.addressof(insns).to_bytes(8, "little") + ctypes.addressof(lic).to_bytes(8, "little")
        bpf(5, attr)
    elif op == "sys_resource":  # raise the memlock hard limit (maps on kernels that charge it)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (1 << 30, 1 << 30))
    elif op == "sys_ptrace":  # attribution: the executable of another user's process
        os.readlink(f"/proc/{arg}/exe")
    elif op == "kill":  # the kill action, on another user's process (signal 0: the check alone)
        os.kill(int(arg), 0)
    elif op == "dac_override":  # write what another user owns, mode 0600
        open(arg, "ab").close()
    elif op == "dac_read_search":  # read what another user owns, mode 0600
        open(arg, "rb").read()
except (PermissionError, ValueError) as e:  # setrlimit raises ValueError for "not allowed"
    sys.exit(13)
except OSError as e:
    sys.exit(13 if e.errno in (errno.EPERM, errno.EACCES) else 1)
'''


def _run_with(caps: set[str], op: str, arg: str) -> int:
    import subprocess
    import sys

    bounding = "-all" + "".join(f",+{c.lower()}" for c in sorted(caps))
    return subprocess.run(["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", sys.executable,
                           "-c", _OPS, op, arg], timeout=30).returncode


@pytest.fixture
def other_user(tmp_path):
    """A process and a 0600 file of uid 65534 (nobody): what the agent meets on every node."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv (util-linux)")
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    os.chown(secret, 65534, 65534)
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    proc = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60"])
    try:
        yield str(proc.pid), str(secret)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("cap", sorted(CAPS))
def test_each_capability_is_needed_for_what_the_table_says(other_user, cap):
    pid, secret = other_user
    arg = {"SYS_PTRACE": pid, "KILL": pid, "DAC_OVERRIDE": secret, "DAC_READ_SEARCH": secret}.get(cap, "")
    bits = {"DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "KILL": 5, "SYS_PTRACE": 19, "SYS_RESOURCE": 24,
            "PERFMON": 38, "BPF": 39}
    (bnd,) = [int(line.split()[1], 16) for line in Path("/proc/self/status").read_text().splitlines()
              if line.startswith("CapBnd:")]
    if not bnd >> bits[cap] & 1:
        pytest.skip(f"this test's own bounding set lacks CAP_{cap} (a container without it)")
    if cap == "BPF" and Path("/proc/sys/kernel/unprivileged_bpf_disabled").read_text().strip() == "0":
        pytest.skip("unprivileged BPF is on here: map creation needs no capability")
    assert _run_with(CAPS, cap.lower(), arg) == 0, f"{cap}: refused with all seven"
    without = CAPS - {cap}
    if cap == "DAC_READ_SEARCH":  # DAC_OVERRIDE grants reads too: the read is refused only without both
        assert _run_with(CAPS - {"DAC_OVERRIDE"}, cap.lower(), arg) == 0
        without = without - {"DAC_OVERRIDE"}
    assert _run_with(without, cap.lower(), arg) == 13, f"{cap}: still allowed without it"
