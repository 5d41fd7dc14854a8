"""agent/detect/profile/key.py and model.py: which workload a container is, a profile's items, their
compression, the document form (round trip, every bad field a ValueError of one line), merging, and the
memory of a profile of typical size."""

from __future__ import annotations

import copy
import tracemalloc

import orjson
import pytest

from agent.detect.profile.key import Workload, owner_of, workload_of
from agent.detect.profile.model import KINDS, PEER_GROUP, WRITE_GROUP, Profile
from agent.events import ContainerInfo

POD = "io.kubernetes.pod.name"
POD_NS = "io.kubernetes.pod.namespace"
CNAME = "io.kubernetes.container.name"


def pod_container(pod: str, cid: str, ns: str = "shop", name: str = "web", extra=()) -> ContainerInfo:
    labels = tuple(sorted({POD: pod, POD_NS: ns, CNAME: name, **dict(extra)}.items()))
    return ContainerInfo(id=cid, name=name, image="docker.io/library/nginx:1.25", image_digest="sha256:" + "a" * 64,
                         namespace="k8s.io", pod_name=pod, pod_namespace=ns, labels=labels)


# -- key ----------------------------------------------------------------------------------------------

def test_replicas_of_a_deployment_share_one_key():
    a = workload_of(pod_container("web-7d4b9c8f6-abcde", "c1"))
    b = workload_of(pod_container("web-7d4b9c8f6-fghjk", "c2"))
    assert a.kind == "Deployment" and a.owner == "web"
    assert a.key == b.key == f"shop/Deployment/web/web@sha256:{'a' * 64}"


@pytest.mark.parametrize("pod,labels,kind,owner", [
    ("db-0", {}, "StatefulSet", "db"),
    ("db-12", {"statefulset.kubernetes.io/pod-name": "db-12"}, "StatefulSet", "db"),
    ("node-exporter-x7k2p", {"controller-revision-hash": "5c6b7"}, "DaemonSet", "node-exporter"),
    ("backup-28123456-q9wzt", {"batch.kubernetes.io/job-name": "backup-28123456"}, "Job", "backup"),
    ("migrate-q9wzt", {"job-name": "migrate"}, "Job", "migrate"),
    ("api-5f9c7b-xk2lp", {"pod-template-hash": "5f9c7b"}, "Deployment", "api"),
    ("api-6d5f8c4b9d-xk2lp", {}, "Deployment", "api"),
    ("standalone", {}, "Pod", "standalone"),
])
def test_owner_guessed_from_labels_and_name(pod, labels, kind, owner):
    assert owner_of(pod, labels) == (kind, owner)


def test_a_container_outside_a_pod():
    c = ContainerInfo(id="abc123", image="busybox:1", namespace="default")
    w = workload_of(c)
    assert (w.namespace, w.kind, w.owner, w.container) == ("default", "", "", "abc123")
    assert w.key == "default/-/-/abc123@busybox:1"
    named = workload_of(ContainerInfo(id="abc123", name="tool", image="busybox:1", namespace="default"))
    assert named.key == "default/-/-/tool@busybox:1"


# -- items ----------------------------------------------------------------------------------------------

def new_profile() -> Profile:
    return Profile(Workload("ns", "Deployment", "web", "web", "img:1", "sha256:ab"), 100.0)


def test_learn_and_known():
    p = new_profile()
    assert p.known("exec", "/bin/sh") is None
    assert p.learn("exec", "/bin/sh", 101.0, 512)
    assert p.known("exec", "/bin/sh") == [101.0, 101.0, 1]
    assert p.revision == 1 and p.stable_since == 101.0 and p.quiet_run_s == 0.0


def test_cap_counts_overflow():
    p = new_profile()
    for i in range(3):
        assert p.learn("exec", f"/bin/x{i}", 1.0, 3)
    assert not p.learn("exec", "/bin/x3", 1.0, 3)
    assert p.overflow == {"exec": 1}
    assert len(p.items["exec"]) == 3


def test_peers_of_one_subnet_collapse_into_a_cidr():
    p = new_profile()
    for i in range(PEER_GROUP + 1):
        p.learn("peer", f"tcp/10.1.2.{i}:443", 1.0, 512)
    p.learn("peer", "tcp/10.1.3.1:443", 1.0, 512)
    p.learn("peer", "udp/10.1.2.1:443", 1.0, 512)
    assert set(p.items["peer"]) == {"tcp/10.1.2.0/24:443", "tcp/10.1.3.1:443", "udp/10.1.2.1:443"}
    assert p.items["peer"]["tcp/10.1.2.0/24:443"][2] == PEER_GROUP + 1
    assert p.known("peer", "tcp/10.1.2.200:443") is not None
    assert p.known("peer", "tcp/10.1.2.200:80") is None
    assert p.known("peer", "tcp/10.1.4.1:443") is None


def test_ipv6_peers_collapse_per_64():
    p = new_profile()
    for i in range(PEER_GROUP + 1):
        p.learn("peer", f"tcp/fd00:1:2:3::{i + 1:x}:443", 1.0, 512)
    assert list(p.items["peer"]) == ["tcp/fd00:1:2:3::/64:443"]
    assert p.known("peer", "tcp/fd00:1:2:3:ffff::1:443") is not None


def test_write_dirs_collapse_into_a_prefix():
    p = new_profile()
    p.learn("write", "/var/cache", 1.0, 512)
    for i in range(WRITE_GROUP + 1):
        p.learn("write", f"/var/cache/app/s{i}", 1.0, 512)
    assert set(p.items["write"]) == {"/var/cache", "/var/cache/app/**"}
    assert p.known("write", "/var/cache/app/new/deeper") is not None
    assert p.known("write", "/var/cache/app") is None  # d/** holds what lies below d, not d
    assert p.known("write", "/var/cache") is not None
    assert p.known("write", "/var/other") is None


def test_write_never_collapses_to_the_root():
    p = new_profile()
    for i in range(WRITE_GROUP + 3):
        p.learn("write", f"/d{i}", 1.0, 512)
    assert len(p.items["write"]) == WRITE_GROUP + 3


# -- documents ---------------------------------------------------------------------------------------------

def filled() -> Profile:
    p = new_profile()
    p.learn("exec", "/usr/sbin/nginx", 101.0, 512)
    p.learn("edge", "/bin/sh>/usr/sbin/nginx", 101.0, 512)
    p.learn("user", "101", 101.0, 512)
    p.learn("peer", "tcp/127.0.0.1:8080", 102.0, 512)
    p.learn("listen", "tcp/80", 102.0, 512)
    p.learn("write", "/tmp/app", 103.0, 512)
    p.deviations["exec"]["/bin/nc"] = [200.0, 200.0, 1]
    p.mode, p.locked_by, p.mode_ts, p.run_s = "monitoring", "auto", 150.0, 3600.0
    return p


def test_document_round_trip():
    p = filled()
    doc = orjson.loads(orjson.dumps(p.to_doc()))
    assert doc["format"] == 1 and doc["key"] == p.key and doc["items"]["exec"] == {"/usr/sbin/nginx": [101.0, 101.0, 1]}
    q = Profile.from_doc(doc)
    assert q.to_doc() == p.to_doc()


def _bad(mutate):
    doc = filled().to_doc()
    mutate(doc)
    return doc


@pytest.mark.parametrize("mutate,word", [
    (lambda d: d.update(format=2), "format"),
    (lambda d: d.update(key="other"), "key"),
    (lambda d: d.update(mode="sleeping"), "mode"),
    (lambda d: d.update(locked_by="bob"), "locked_by"),
    (lambda d: d.update(created="yesterday"), "created"),
    (lambda d: d.update(run_s=float("nan")), "run_s"),
    (lambda d: d.update(revision=-1), "revision"),
    (lambda d: d.update(items=[]), "items"),
    (lambda d: d["items"].update(exec=[1]), "items.exec"),
    (lambda d: d["items"]["exec"].update({"/x": [1, 2]}), "first, last, count"),
    (lambda d: d["items"]["exec"].update({"/x": [1, 2, -3]}), "count"),
    (lambda d: d["items"]["exec"].update({"": [1, 2, 3]}), "key"),
    (lambda d: d.update(workload="w"), "workload"),
    (lambda d: d["workload"].update(container=""), "container"),
    (lambda d: d.update(overflow={"exec": "many"}), "overflow"),
])
def test_bad_documents_raise_one_line(mutate, word):
    with pytest.raises(ValueError) as e:
        Profile.from_doc(_bad(mutate))
    assert word in str(e.value) and "\n" not in str(e.value)


def test_from_doc_rejects_non_objects():
    for d in (None, [], "x", 3):
        with pytest.raises(ValueError):
            Profile.from_doc(d)


def test_from_doc_trims_to_the_caps_and_counts():
    doc = filled().to_doc()
    doc["items"]["exec"] = {f"/bin/{i}": [1.0, float(i), 1] for i in range(10)}
    p = Profile.from_doc(doc, max_items=4)
    assert set(p.items["exec"]) == {"/bin/9", "/bin/8", "/bin/7", "/bin/6"}  # the most recently seen
    assert p.overflow["exec"] == 6


def test_unknown_kinds_are_ignored():
    doc = filled().to_doc()
    doc["items"]["syscall"] = {"openat": [1.0, 1.0, 1]}
    assert "syscall" not in Profile.from_doc(doc).items


# -- merge ----------------------------------------------------------------------------------------------------

def test_merge_unions_items_and_takes_the_newest_mode():
    a, b = filled(), filled()
    b.items["exec"]["/usr/sbin/nginx"] = [50.0, 500.0, 7]
    b.learn("exec", "/bin/true", 300.0, 512)
    b.mode, b.locked_by, b.mode_ts = "protecting", "user", 400.0
    assert a.merge(b)
    assert a.items["exec"]["/usr/sbin/nginx"] == [50.0, 500.0, 7]
    assert "/bin/true" in a.items["exec"]
    assert (a.mode, a.locked_by, a.mode_ts) == ("protecting", "user", 400.0)
    assert not a.merge(copy.deepcopy(b))  # idempotent afterwards
    older = filled()
    older.mode, older.mode_ts = "learning", 1.0
    assert not a.merge(older)
    assert a.mode == "protecting"


def test_merge_learned_item_is_no_longer_a_deviation():
    a, b = filled(), filled()
    b.learn("exec", "/bin/nc", 300.0, 512)
    a.merge(b)
    assert "/bin/nc" not in a.deviations["exec"] and "/bin/nc" in a.items["exec"]


def test_merge_other_key_raises():
    other = Profile(Workload("ns", "", "", "x", "img"), 1.0)
    with pytest.raises(ValueError):
        filled().merge(other)


# -- memory ----------------------------------------------------------------------------------------------------

def typical(n: int) -> Profile:
    """40 execs, 60 edges, 3 users, 20 peers, 4 listens, 30 write dirs, keys as long as real ones."""
    p = Profile(Workload("prod-shop", "Deployment", f"checkout-{n}", "app", "registry.example.com/shop/checkout:2.4.1",
                         f"sha256:{n:064x}"), 1.7e9)
    ts = 1.7e9 + n
    for i in range(40):
        p.learn("exec", f"/usr/local/lib/app/bin/worker-{n}-{i:03d}", ts, 512)
    for i in range(60):
        p.learn("edge", f"/usr/local/bin/supervisor-{n}>/usr/local/lib/app/bin/worker-{i:03d}", ts, 512)
    for i in range(3):
        p.learn("user", str(1000 + i), ts, 512)
    for i in range(20):
        p.learn("peer", f"tcp/10.{n % 250}.{i}.17:{5432 + i}", ts, 512)
    for i in range(4):
        p.learn("listen", f"tcp/{8080 + i}", ts, 512)
    for i in range(30):
        p.learn("write", f"/var/lib/app-{n}/data{i // 5}/part{i % 5:02d}", ts, 512)  # 6 x 5: none collapse
    return p


def test_typical_profile_fits_in_64_kib():
    typical(0)  # warm up interned constants
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    held = [typical(n) for n in range(1, 51)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename")) / len(held)
    assert sum(len(t) for t in held[0].items.values()) == 157
    print(f"typical profile: {size:.0f} bytes")
    assert size <= 64 * 1024, f"{size:.0f} bytes per profile"
    assert all(k in KINDS for k in held[0].items)
