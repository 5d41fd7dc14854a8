"""GateService with a fake containerd client over an OCI layout: listener path, dedupe, timeout,
evaluate(), errors; the image.verdict record; the scan and db commands."""

import json
import threading
import time
from types import SimpleNamespace

import orjson
import pytest

from agent.cli import main as cli
from agent.events import ContainerInfo, VerdictEvent
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.service import GateService
from agent.outputs.record import flatten
from agent.policy.store import PolicyStore
from tests.unit.imagegate_helpers import EICAR, busybox_layer, entry, osv_advisory, raw_tar, write_layout

BASE = busybox_layer()


class FakeClient:
    def __init__(self, layouts: dict, containers: dict, delay: float = 0.0):
        self.layouts, self.containers, self.delay = layouts, containers, delay
        self.reads = 0

    def container(self, ns, cid):
        c = self.containers.get(cid)
        if c is None:
            return None
        image, labels, spec = c
        return SimpleNamespace(image=image, labels=labels, spec=SimpleNamespace(value=json.dumps(spec).encode()))

    def image(self, ns, name):
        built = self.layouts.get(name)
        if built is None:
            return None
        d = built.digest
        return SimpleNamespace(
            target=SimpleNamespace(media_type="application/vnd.oci.image.manifest.v1+json", digest=d, size=0)
        )

    def read_content(self, ns, digest, offset=0, size=0, timeout=60):
        for built in self.layouts.values():
            p = built.path / "blobs" / "sha256" / digest.split(":", 1)[1]
            if p.exists():
                self.reads += 1
                time.sleep(self.delay)
                yield p.read_bytes()
                return
        raise RuntimeError("NOT_FOUND")

    def close(self):
        pass


SPEC = {  # a hardened spec: no baseline findings
    "process": {"user": {"uid": 1000}, "noNewPrivileges": True, "apparmorProfile": "default"},
    "root": {"readonly": True},
    "linux": {
        "namespaces": [{"type": t} for t in ("pid", "ipc", "network", "uts", "mount")],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"},
        "resources": {"memory": {"limit": 1 << 28}, "pids": {"limit": 100}},
    },
}


@pytest.fixture
def world(tmp_path):
    bad = write_layout(tmp_path / "bad", [BASE, raw_tar([entry("opt/e", EICAR)])], name="reg/bad:1")
    good = write_layout(tmp_path / "good", [BASE], name="reg/good:1")
    containers = {
        "c-bad": ("reg/bad:1", {}, SPEC),
        "c-good": ("reg/good:1", {}, SPEC),
        "c-skip": ("reg/bad:1", {"io.kubernetes.pod.namespace": "kube-system"}, SPEC),
    }
    policy = tmp_path / "policy.yaml"
    policy.write_text("scope: {namespaces: {exclude: [kube-system]}}\non_timeout: {after: 5s, action: block}\n")
    return SimpleNamespace(layouts={"reg/bad:1": bad, "reg/good:1": good}, containers=containers, policy=policy)


def _service(world, delay=0.0, **cfg):
    out, client = [], FakeClient(world.layouts, world.containers, delay)
    gate = GateService(
        ImageGateConfig(cache_path="", advisory_db="", **cfg),
        PolicyStore(str(world.policy)),
        lambda: client,
        lambda ev: out.append(flatten(ev)),  # the gate emits typed VerdictEvents
    )
    return gate, out, client


def _info(cid, **kw):
    return ContainerInfo(id=cid, namespace="default", image=kw.pop("image", ""), created_ns=1, **kw)


def _wait(out, n, timeout=10):
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return out


def test_listener_emits_verdicts_once(world):
    gate, out, client = _service(world)
    gate.start()
    try:
        for kind in ("container", "task", "exec"):
            gate.on_container(kind, _info("c-bad", image="reg/bad:1"))
        gate.on_container("container", _info("c-good", image="reg/good:1"))
        gate.on_container("container", _info("c-skip"))
        _wait(out, 3)
        time.sleep(0.2)
    finally:
        gate.stop()
    by = {r["container.id"]: r for r in out}
    assert len(out) == 3
    assert by["c-bad"]["image.verdict"] == "block" and by["c-bad"]["event.name"] == "image.verdict"
    assert by["c-bad"]["event.severity"] == "critical"
    assert any(f["rule"] == "yara:EICAR_Test_File" and f["action"] == "block" for f in by["c-bad"]["image.findings"])
    assert by["c-good"]["image.verdict"] == "allow" and by["c-good"]["image.findings"] == []
    assert by["c-skip"]["image.verdict"] == "allow" and "out of scope" in by["c-skip"]["image.reason"]
    assert isinstance(by["c-bad"]["image.scan.duration_ms"], float)
    orjson.dumps(out)  # every record serializes


def test_evaluate_cached_and_timeout(world):
    gate, out, client = _service(world, delay=0.3)
    gate.start()
    try:
        v = gate.evaluate("default", "c-bad", timeout=0.1)
        assert v.timed_out and v.verdict == "block"  # on_timeout.action
        v = gate.evaluate("default", "c-bad", timeout=10)  # the same scan, still in flight
        assert v.verdict == "block" and not v.timed_out
        reads = client.reads
        v = gate.evaluate("default", "c-bad", timeout=10)
        assert v.cache_hit == "verdict" and client.reads == reads
        v = gate.evaluate("default", "nope", timeout=5)
        assert v.verdict == "allow" and "not found" in v.error
    finally:
        gate.stop()
    assert out == []  # evaluate() emits nothing


def test_queue_full_drops_and_counts(world):
    gate, out, _ = _service(world, queue_size=1)  # not started: nothing drains the queue
    for i in range(5):
        gate.on_container("container", _info(f"x{i}"))
    assert gate.stats()["dropped"] == 4
    gate.stop()


def test_listener_never_blocks(world):
    gate, out, _ = _service(world, delay=0.2)
    gate.start()
    try:
        t0 = time.monotonic()
        gate.on_container("container", _info("c-bad", image="reg/bad:1"))
        assert time.monotonic() - t0 < 0.05
    finally:
        gate.stop()


def test_containerd_down_is_an_error_verdict(world):
    def broken():
        raise ConnectionError("socket gone")

    gate = GateService(ImageGateConfig(cache_path="", advisory_db=""), PolicyStore(str(world.policy)), broken, print)
    v = gate.evaluate("default", "c-bad", timeout=5)
    assert v.error and "socket gone" in v.error and v.verdict == "allow"
    gate.stop()


def test_record_shape():
    from agent.imagegate.model import Decided, Finding, Severity, Verdict

    f = Finding("vulnerability", Severity.HIGH, "osv:X", "/s", advisory="X", fixed="2")
    v = Verdict("alert", "why", [Decided(f, "alert", "categories.vulnerability.alert >= medium")] * 300)
    rec = flatten(VerdictEvent(0, v, _info("c1", image="img", pod_name="p", pod_namespace="ns")))
    assert rec["timestamp"] == "1970-01-01T00:00:00.000000000Z"
    assert rec["k8s.namespace.name"] == "ns" and rec["container.image.name"] == "img"
    assert len(rec["image.findings"]) == 200 and rec["image.findings_count"] == 300
    assert rec["image.findings_omitted"] == 100  # the record says how many it left out
    assert rec["image.findings"][0]["advisory"] == "X" and rec["event.severity"] == "high"


def test_scan_command_exit_codes(tmp_path, capsys):
    bad = write_layout(tmp_path / "bad", [BASE, raw_tar([entry("opt/e", EICAR)])])
    good = write_layout(tmp_path / "good.tar", [BASE], as_tar=True)
    assert cli(["scan", str(bad.path), "--db", ""]) == 1
    assert "BLOCK" in capsys.readouterr().out
    assert cli(["scan", str(good.path), "--json", "--db", ""]) == 0
    rec = orjson.loads(capsys.readouterr().out)
    assert rec["image.verdict"] == "allow" and rec["event.name"] == "image.verdict"
    pol = tmp_path / "p.yaml"
    pol.write_text("categories:\n  malware: {block: hgih}\n")
    assert cli(["scan", str(bad.path), "--policy", str(pol)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{pol}:2:" in err
    pol.write_text("whitelist: {images: ['nodewarden.test/*']}\n")
    assert cli(["scan", str(bad.path), "--policy", str(pol), "--db", ""]) == 0
    assert cli(["scan", str(tmp_path / "missing"), "--containerd-socket", str(tmp_path / "no.sock")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_db_command(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.json").write_text(json.dumps(osv_advisory("DSA-1", "Debian:12", "bash", "5")))
    (src / "b.json").write_text("{")
    db = tmp_path / "db"
    assert cli(["db", "import", str(src), "--db", str(db)]) == 1
    assert "imported 1 advisories" in capsys.readouterr().out
    assert cli(["db", "info", "--db", str(db)]) == 0
    assert "1 advisories" in capsys.readouterr().out
    assert cli(["db", "import", str(tmp_path / "none"), "--db", str(db)]) == 2


def test_concurrent_scans_read_each_layer_once(world):
    gate, out, client = _service(world, delay=0.2, workers=2)
    world.containers["c-bad2"] = ("reg/bad:1", {}, {**SPEC, "hostname": "other"})
    res = []
    ts = [threading.Thread(target=lambda c=c: res.append(gate.evaluate("default", c, 10))) for c in ("c-bad", "c-bad2")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    gate.stop()
    assert [v.verdict for v in res] == ["block", "block"]
    # 2 layers + manifest + config per image; shared layers read once
    assert client.reads <= 2 + 2 * 2


def test_evaluate_image_by_reference(world):
    from agent.imagegate.service import flagged_paths

    gate, out, client = _service(world)
    try:
        v = gate.evaluate_image("default", "reg/bad:1", k8s_namespace="shop", labels={"a": "b"}, spec=SPEC, timeout=10)
        assert v.verdict == "block" and flagged_paths(v) == ["/opt/e"]
        assert gate.evaluate_image("default", "reg/bad:1", k8s_namespace="kube-system").verdict == "allow"
        v = gate.evaluate_image("default", "reg/none:1", timeout=5)
        assert v.error and "not found" in v.error
        assert flagged_paths(gate.evaluate_image("default", "reg/good:1", spec=SPEC)) == []
    finally:
        gate.stop()


def _broken_config_layout(tmp_path, name):
    """A busybox image whose config says `"rootfs": 5` (issue 9: it used to pass the gate unjudged)."""
    from tests.harness.oci import build_image, unpack_layout, write_blob

    img = build_image(tmp_path / "broken.tar", name)
    d = unpack_layout(img, tmp_path / "broken")
    index = json.loads((d / "index.json").read_text())
    blob = d / "blobs" / "sha256"
    manifest = json.loads((blob / img.manifest_digest.split(":")[1]).read_bytes())
    config = {**json.loads((blob / img.config_digest.split(":")[1]).read_bytes()), "rootfs": 5}
    manifest["config"] = {**manifest["config"], **write_blob(d, json.dumps(config).encode())}
    mdesc = write_blob(d, json.dumps(manifest).encode())
    index["manifests"][0].update(mdesc)
    (d / "index.json").write_text(json.dumps(index))
    return SimpleNamespace(path=d, digest=mdesc["digest"])


def test_broken_config_gets_the_on_error_verdict(world, tmp_path):
    world.layouts["reg/broken:1"] = _broken_config_layout(tmp_path, "reg/broken:1")
    world.containers["c-broken"] = ("reg/broken:1", {}, SPEC)
    world.containers["c-odd"] = ("reg/good:1", 5, SPEC)  # containerd's record in a shape no one expects
    world.policy.write_text("on_error: {action: block}\n")
    gate, out, _ = _service(world)
    gate.start()
    try:
        gate.on_container("container", _info("c-broken", image="reg/broken:1"))
        gate.on_container("container", _info("c-odd", image="reg/good:1"))
        _wait(out, 2)
    finally:
        gate.stop()
    by = {r["container.id"]: r for r in out}
    assert by["c-broken"]["image.verdict"] == "block"
    assert "rootfs is an integer" in by["c-broken"]["image.scan.error"]
    assert by["c-odd"]["image.verdict"] == "block" and "internal error" in by["c-odd"]["image.scan.error"]
    assert gate.stats()["errors"] >= 1
