"""The posture report (issue 16) against a real containerd (Debian's): a container without limits, two digests of one
image name running at once, an image whose base has a newer digest on the node, and one with limits that the
no-limits check leaves alone; through `nodewarden posture --json` and the assessor the agent runs."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from agent.config import PostureConfig
from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher
from agent.enrich.containerd_client import ContainerdClient
from agent.imagegate.posture import PostureAssessor, repository
from tests.harness.containerd import unique_id

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_repository_names():
    assert repository("reg:5000/a/b:1.2") == "reg:5000/a/b"
    assert repository("reg:5000/a/b@sha256:" + "0" * 64) == "reg:5000/a/b"
    assert repository("reg:5000/a/b") == "reg:5000/a/b"
    assert repository("nginx:1") == "nginx"


@pytest.fixture
def node(containerd, image_builder):
    tag = unique_id("p")
    app = f"nodewarden.test/posture-{tag}"
    base = image_builder(f"nodewarden.test/posture-base-{tag}:1", {"/etc/base-version": b"2\n"})
    stale_from = "sha256:" + "ab" * 32  # the base's digest when the app was built: not the node's any more
    v1 = image_builder(f"{app}:1", {"/app": b"one\n"},
                       labels={"org.opencontainers.image.base.name": base.name,
                               "org.opencontainers.image.base.digest": stale_from})
    v2 = image_builder(f"{app}:2", {"/app": b"two\n"},
                       labels={"org.opencontainers.image.base.name": base.name,
                               "org.opencontainers.image.base.digest": base.manifest_digest})
    ids = {"v1": unique_id("p1"), "v2": unique_id("p2"), "limited": unique_id("pl")}
    containerd.run(v1, "sleep", "120", cid=ids["v1"])
    containerd.run(v2, "sleep", "120", cid=ids["v2"])
    containerd.ctr("run", "-d", "--null-io", "--memory-limit", str(64 << 20), "--cpu-quota", "50000",
                   "--cpu-period", "100000", v2.name, ids["limited"], "sleep", "120")
    try:
        yield app, base, ids
    finally:
        for cid in ids.values():
            containerd.remove(cid)


def _ours(findings: list[dict], ids: dict) -> dict[str, list[dict]]:
    """check -> findings that name one of this test's containers (the shared containerd may hold others)."""
    out: dict[str, list[dict]] = {}
    for f in findings:
        if any(c.get("container.id") in ids.values() for c in f["containers"]):
            out.setdefault(f["check"], []).append(f)
    return out


def test_posture_command_reports_sprawl_stale_base_and_missing_limits(containerd, node):
    app, base, ids = node
    r = subprocess.run([sys.executable, "-m", "agent.cli", "posture", "--json", "--containerd-socket",
                        str(containerd.socket), "-n", containerd.namespace, "--max-age-days", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    rec = orjson.loads(r.stdout)
    assert rec["event.name"] == "posture.report" and rec["posture.containers"] >= 3
    got = _ours(rec["posture.findings"], ids)
    sprawl = got["image-sprawl"]
    assert len(sprawl) == 1 and sprawl[0]["detail"].startswith(f"{app}: 2 digests run at once")
    assert {c["container.id"] for c in sprawl[0]["containers"]} == set(ids.values())
    stale = got["stale-base"]
    assert [c["container.id"] for f in stale for c in f["containers"]] == [ids["v1"]]
    assert base.name in stale[0]["detail"] and "rebuild" in stale[0]["detail"]
    no_limits = {c["container.id"]: f["detail"] for f in got["no-limits"] for c in f["containers"]}
    assert no_limits == {ids["v1"]: "no memory or CPU limit", ids["v2"]: "no memory or CPU limit"}
    root = {c["container.id"] for f in got["root"] for c in f["containers"]}
    assert root == set(ids.values())  # ctr sets no user: uid 0, as the image says (busybox has no USER)
    assert "long-running" not in got and "privileged" not in got
    for f in rec["posture.findings"]:  # every container named as every record names it
        for c in f["containers"]:
            assert set(c) <= {"container.id", "container.name", "container.image.name", "container.image.digest",
                              "container.runtime",
                              "k8s.pod.name", "k8s.namespace.name", "containerd.namespace"}, c


def test_assessor_long_running_and_text(containerd, node):
    _app, _base, ids = node
    table = ContainerTable()
    ContainerWatcher(ContainerdConfig(socket=str(containerd.socket), namespaces=(containerd.namespace,)),
                     table).sync_once()
    far_future = lambda: 4102444800.0  # noqa: E731  2100-01-01: every container is older than 30 days then
    a = PostureAssessor(lambda: ContainerdClient(str(containerd.socket)), PostureConfig(max_age_days=30),
                        clock=far_future)
    try:
        report = a.report(table.snapshot())
    finally:
        a.close()
    long = {c.id for f in report.findings if f.check == "long-running" for c in f.containers}
    assert set(ids.values()) <= long
    assert report.severity.label == "low"

    from agent.commands.posture import text

    out = text(report)
    assert out.startswith(f"posture: {report.containers} running containers") and "image-sprawl" in out


def test_containerd_away_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agent.cli", "posture", "--containerd-socket",
                        str(tmp_path / "none.sock"), "--timeout", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "containerd" in r.stderr, r.stderr
