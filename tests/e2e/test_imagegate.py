"""The image gate against a real (private) containerd: images imported with `ctr images import`,
read back through containerd's content API, and containers started with `ctr run`, evaluated by
the GateService attached to the real container watcher."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher
from agent.enrich.containerd_client import ContainerdClient
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.decide import decide
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.service import GateService
from agent.imagegate.source import ContainerdSource
from agent.outputs.record import flatten
from agent.policy.model import ImagePolicy
from agent.policy.store import PolicyStore
from tests.harness.containerd import unique_id, wait_until
from tests.unit.imagegate_helpers import (
    DPKG_STATUS,
    EICAR,
    MINER,
    OS_RELEASE_DEBIAN,
    PRIVATE_KEY,
    WEBSHELL,
    osv_advisory,
    write_osv_dir,
)

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGES = {  # name: (extra files, expected (category, rule), verdict under the default policy)
    "eicar": ({"/opt/eicar.com": EICAR}, ("malware", "yara:EICAR_Test_File"), "block"),
    "miner": ({"/usr/bin/kworker": (MINER, 0o755)}, ("malware", "yara:CoinMiner_XMRig_Binary"), "block"),
    "webshell": ({"/var/www/html/x.php": WEBSHELL}, ("malware", "webshell:php.request-to-exec"), "block"),
    "key": ({"/root/.ssh/id_rsa": (PRIVATE_KEY, 0o600)}, ("secret", "yara:Secret_Private_Key"), "alert"),
    "vuln": (
        {"/var/lib/dpkg/status": DPKG_STATUS, "/etc/os-release": OS_RELEASE_DEBIAN},
        ("vulnerability", "osv:DSA-5678-1"),
        "block",
    ),
}


@pytest.fixture(scope="module")
def osv_db(tmp_path_factory):
    adv = osv_advisory("DSA-5678-1", "Debian:12", "openssl", "3.0.13-1~deb12u1", "critical")
    return str(write_osv_dir(tmp_path_factory.mktemp("osv"), [adv]))


@pytest.fixture(scope="module")
def client(containerd):
    c = ContainerdClient(str(containerd.socket))
    yield c
    c.close()


def test_images_read_from_content_store(containerd, image_builder, client, osv_db):
    scanner = ImageScanner(ImageGateConfig(cache_path="", advisory_db=osv_db))
    for kind, (files, (cat, rule), verdict) in IMAGES.items():
        img = image_builder(f"nodewarden.test/gate-{kind}:1", files)
        rep = scanner.scan(ContainerdSource(client, containerd.namespace, img.name))
        assert rep.digest == img.manifest_digest and rep.layers == list(img.layer_digests)
        assert (cat, rule) in {(f.category, f.rule) for f in rep.findings}, kind
        assert not [f for f in rep.findings if f.category == "integrity" and f.severity.label != "info"], kind
        assert decide(rep, ImagePolicy()).verdict == verdict, kind
    clean = image_builder("nodewarden.test/gate-clean:1")
    rep = scanner.scan(ContainerdSource(client, containerd.namespace, clean.name))
    assert [f.rule for f in rep.findings] == ["image-runs-as-root"]  # busybox sets no USER; nothing else
    again = scanner.scan(ContainerdSource(client, containerd.namespace, clean.name))
    assert again.cache_hit == "verdict"


def test_scan_command_on_containerd_ref(containerd, image_builder, osv_db):
    img = image_builder("nodewarden.test/gate-eicar:1", IMAGES["eicar"][0])
    clean = image_builder("nodewarden.test/gate-clean:1")
    base = [sys.executable, "-m", "agent.cli", "scan", "--containerd-socket", str(containerd.socket),
            "-n", containerd.namespace, "--db", osv_db]  # fmt: skip
    r = subprocess.run([*base, img.name], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "EICAR" in r.stdout, r.stderr
    r = subprocess.run([*base, clean.name], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*base, "nodewarden.test/absent:0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr and r.stderr.count("\n") == 1


def test_gate_service_on_container_start(containerd, image_builder, osv_db, tmp_path):
    eicar = image_builder("nodewarden.test/gate-eicar:1", IMAGES["eicar"][0])
    clean = image_builder("nodewarden.test/gate-clean:1")
    policy = tmp_path / "policy.yaml"
    policy.write_text("on_timeout: {after: 20s, action: allow}\n")
    records: list[dict] = []
    lock = threading.Lock()

    def emit(rec):
        with lock:
            records.append(rec)

    table = ContainerTable()
    cfg = ImageGateConfig(cache_path=str(tmp_path / "cache.db"), advisory_db=osv_db)
    gate = GateService(cfg, PolicyStore(str(policy)), lambda: ContainerdClient(str(containerd.socket)),
                       lambda ev: emit(flatten(ev))).start()  # the gate emits typed VerdictEvents
    table.add_listener(gate.on_container)
    watcher = ContainerWatcher(
        ContainerdConfig(socket=str(containerd.socket), namespaces=(containerd.namespace,)), table
    )
    watcher.start()
    ids = {"bad": unique_id("gate"), "good": unique_id("gate"), "priv": unique_id("gate")}
    try:
        containerd.run(eicar, "sleep", "30", cid=ids["bad"])
        containerd.run(clean, "sleep", "30", cid=ids["good"])
        containerd.ctr("run", "-d", "--null-io", "--privileged", clean.name, ids["priv"], "sleep", "30")

        def by_id():
            with lock:
                got = {r.get("container.id"): r for r in records}
            return got if all(i in got for i in ids.values()) else None

        got = wait_until(by_id, timeout=60)
        assert got, f"verdicts seen: {[r.get('container.id') for r in records]}"
        bad, good, priv = got[ids["bad"]], got[ids["good"]], got[ids["priv"]]
        assert bad["image.verdict"] == "block" and bad["container.image.name"] == eicar.name
        assert bad["container.image.digest"] == eicar.manifest_digest
        assert {f["category"] for f in good["image.findings"]} <= {"baseline"}  # ctr's spec: root, no seccomp...
        assert good["image.verdict"] in ("allow", "alert")
        pf = {f["rule"]: f for f in priv["image.findings"]}
        assert pf["privileged"]["severity"] == "critical" and pf["privileged"]["cis"].endswith("5.4")
        v = gate.evaluate(containerd.namespace, ids["bad"], timeout=20)
        assert v.verdict == "block" and v.cache_hit == "verdict"
        v = gate.evaluate_image(containerd.namespace, eicar.name, timeout=20)  # no container record needed
        assert v.verdict == "block" and "/opt/eicar.com" in {d.finding.path for d in v.findings}
        assert gate.stats()["dropped"] == 0
    finally:
        watcher.stop()
        gate.stop()
        for cid in ids.values():
            containerd.remove(cid)


def test_malformed_config_in_content_store_gets_on_error(containerd, tmp_path):
    """An image whose config says `"rootfs": 5`, in containerd's content store (imported without
    unpacking: containerd itself never reads the config then): the gate's verdict is the policy's
    on_error one with the reason, and `nodewarden scan REF` exits 2 with one line (issue 9)."""
    from tests.harness.oci import build_image, pack_layout, rewrite_config, unpack_layout

    name = f"nodewarden.test/gate-brokencfg-{unique_id('b')}:1"
    img = build_image(tmp_path / "ok.tar", name)
    layout = unpack_layout(img, tmp_path / "layout")
    rewrite_config(layout, img, rootfs=5)
    containerd.ctr("images", "import", "--no-unpack", str(pack_layout(layout, tmp_path / "broken.tar")))
    policy = tmp_path / "policy.yaml"
    policy.write_text("on_error: {action: block}\n")
    gate = GateService(ImageGateConfig(cache_path="", advisory_db=""), PolicyStore(str(policy)),
                       lambda: ContainerdClient(str(containerd.socket)), lambda ev: None)
    try:
        v = gate.evaluate_image(containerd.namespace, name, timeout=20)
        r = subprocess.run([sys.executable, "-m", "agent.cli", "scan", name, "--db", "", "--containerd-socket",
                            str(containerd.socket), "-n", containerd.namespace], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
    finally:
        gate.stop()
        containerd.ctr("images", "rm", name, check=False)
    assert v.verdict == "block" and not v.timed_out
    assert "rootfs is an integer, expected an object" in v.error
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "rootfs is an integer" in r.stderr, r.stderr
