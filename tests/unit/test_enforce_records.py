"""The enforcement and policy records, now typed events flattened by agent/outputs/record.py, against the
dicts agent/node.py and agent/pipeline.py built by hand before (issue 9): keys are only added, none
renamed, and shared keys keep their values. The `legacy_*` functions are the old code, kept here as
the reference."""

from __future__ import annotations

import orjson

from agent.config import Config
from agent.enforce.decide import nri_block_event, oci_block_event
from agent.enforce.kill import kill_event
from agent.enforce.nri import ContainerInfo as NriContainer
from agent.enforce.nri import PodInfo
from agent.enforce.ocigate import GateRequest
from agent.events import ContainerInfo, Enriched, ExecEvent, Op, PolicyEvent, ProcInfo, Verdict, VerdictEvent
from agent.outputs import record
from agent.pipeline import Pipeline

RULE = ("deny_exec", "deny_exec[0] name=xmrig")
INFO = ContainerInfo(id="c0ffee", name="web", image="reg.example/app:1", image_digest="sha256:ab",
                     namespace="k8s.io", pod_name="web-0", pod_namespace="shop", pid=42, cgroup_id=7,
                     state="running")


def _same_or_more(old: dict, new: dict, ignore=("timestamp",)) -> None:
    missing = {k for k in old if k not in new}
    assert not missing, f"keys dropped or renamed: {sorted(missing)}"
    changed = {k: (old[k], new[k]) for k in old if k not in ignore and old[k] != new[k]}
    assert not changed, f"values changed: {changed}"
    orjson.dumps(new)


# -- kernel.exec ---------------------------------------------------------------------------------


def legacy_kernel_exec(rec: dict, text: str) -> dict:
    block = dict(rec)
    block.update({"event.name": "enforcement.block", "enforcement.point": "kernel.exec",
                  "enforcement.reason": f"exec denied by {text}"})
    return block


def test_kernel_exec_block():
    ev = ExecEvent(Op.EXEC, 1_700_000_000_123_456_789, 100, 100, 1, 0, 0, 7, 4026531840, "xmrig", False,
                   "/usr/bin/xmrig", ("/usr/bin/xmrig", "-o", "pool"), action=2, rule=(1 << 16))
    en = Enriched(ev, ProcInfo(100, 1, "/usr/bin/xmrig", ev.argv, 0, 0), ProcInfo(1, 0, "/bin/sh", ("sh",), 0, 0),
                  INFO)
    p = Pipeline(Config(), [], describe_rule=lambda rule, cg: RULE)
    out: list[dict] = []
    p._records(en, out, [])
    exec_rec, block = out
    assert exec_rec["event.name"] == "process.exec" and exec_rec["rule.name"] == RULE[1]
    _same_or_more(legacy_kernel_exec(exec_rec, RULE[1]), block, ignore=())
    assert block["enforcement.outcome"] == "killed" and block["rule.category"] == "deny_exec"


def test_kernel_exec_alert_only_annotates():
    ev = ExecEvent(Op.EXEC, 1, 100, 100, 1, 0, 0, 7, 1, "xmrig", False, "/usr/bin/xmrig", ("xmrig",),
                   action=1, rule=(1 << 16))
    out: list[dict] = []
    Pipeline(Config(), [], describe_rule=lambda rule, cg: RULE)._records(Enriched(ev, None, None, INFO), out, [])
    assert len(out) == 1 and out[0]["enforcement.action"] == "alert" and out[0]["event.severity"] == "high"


# -- the pre-start gates ---------------------------------------------------------------------------


def legacy_nri(pod, container, msg) -> dict:
    return {"event.name": "enforcement.block", "event.severity": "critical",
            "enforcement.point": "nri.create_container", "enforcement.action": "deny",
            "enforcement.reason": msg, "container.name": container.name,
            "container.image.name": container.image, "k8s.pod.name": pod.name,
            "k8s.namespace.name": pod.namespace}


def test_nri_block():
    pod = PodInfo("p1", "web-0", "shop", "u1", {}, {})
    ctr = NriContainer("c1", "app", "p1", "reg.example/eicar:1", "", {}, {}, ("/app",), "/kubepods/p1/c1")
    msg = "image verdict block: malware EICAR"
    new = record.flatten(nri_block_event(pod, ctr, msg))
    _same_or_more(legacy_nri(pod, ctr, msg), new)
    assert new["container.id"] == "c1" and new["image.verdict"] == "block"
    assert new["enforcement.point"] == "nri.create_container"


def test_nri_block_at_start_names_the_start():
    """A verdict that arrived between create and start is enforced at StartContainer: the record says so."""
    pod = PodInfo("p1", "web-0", "shop", "u1", {}, {})
    ctr = NriContainer("c1", "app", "p1", "reg.example/eicar:1", "", {}, {}, ("/app",), "/kubepods/p1/c1",
                       at_start=True)
    new = record.flatten(nri_block_event(pod, ctr, "image verdict block: malware EICAR"))
    assert new["enforcement.point"] == "nri.start_container" and new["enforcement.outcome"] == "denied"


def legacy_oci(req, msg, image) -> dict:
    return {"event.name": "enforcement.block", "event.severity": "critical",
            "enforcement.point": "oci.runc_create", "enforcement.action": "deny",
            "enforcement.reason": msg, "container.id": req.id, "containerd.namespace": req.namespace,
            "container.image.name": req.image or image,
            "k8s.pod.name": req.pod, "k8s.namespace.name": req.pod_namespace}


def test_oci_block():
    msg = "image verdict block: miner"
    req = GateRequest(namespace="k8s.io", id="c2", image="", pod="web-0", pod_namespace="shop", name="app")
    _same_or_more(legacy_oci(req, msg, "reg.example/miner:1"), record.flatten(oci_block_event(req, msg,
                                                                                                "reg.example/miner:1")))
    # Outside CRI (ctr run) there is no pod: the old record carried the keys empty, the flat record leaves
    # empty values out, as it does for every kind.
    bare = GateRequest(namespace="default", id="c3", image="reg.example/miner:1")
    old = {k: v for k, v in legacy_oci(bare, msg, "").items() if v != ""}
    new = record.flatten(oci_block_event(bare, msg))
    _same_or_more(old, new)
    assert "k8s.pod.name" not in new


# -- the post-start kill ---------------------------------------------------------------------------


def legacy_kill(verdict: dict, outcome: str) -> dict:
    block = {k: v for k, v in verdict.items() if k.startswith(("container.", "k8s.", "containerd."))}
    block.update({"event.name": "enforcement.block", "event.severity": "critical",
                  "enforcement.point": "containerd.kill", "enforcement.action": "kill",
                  "enforcement.outcome": outcome, "image.verdict": "block",
                  "enforcement.reason": f"image verdict block: {verdict.get('image.reason', '')}"})
    return block


def test_containerd_kill():
    v = Verdict("block", "malware EICAR in /opt/eicar.com", image=INFO.image, digest=INFO.image_digest)
    verdict = record.flatten(VerdictEvent(1, v, INFO))
    for outcome in ("killed", "kill failed: connection refused"):
        new = record.flatten(kill_event(INFO, v.reason, outcome, 1.5))
        _same_or_more(legacy_kill(verdict, outcome), new)
        assert new["enforcement.duration_ms"] == 1.5


# -- the policy ------------------------------------------------------------------------------------


def test_policy_event():
    old = {"event.name": "agent.policy", "event.severity": "info", "policy.source": "/etc/nw/policy.yaml",
           "policy.fingerprint": "0123456789ab"}
    _same_or_more(old, record.flatten(PolicyEvent(1, "/etc/nw/policy.yaml", "0123456789ab")))
