"""The resource sampler (agent/resources/sampler.py) over a real ContainerTable and cgroup v2 files written by
the test in the kernel's format: a record per running container with its counters, CPU percent from two samples,
the network of the container's own namespace (a fixture /proc), the memory-limit alert once per episode,
deleted containers leaving the state and the metrics, the loss counters; the metrics collector's labels and
`promtool check metrics` on its output; the null object and the build checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.config import ResourcesConfig
from agent.enrich.container_table import ContainerTable
from agent.events import AlertEvent, ContainerResourcesEvent, HostResourcesEvent
from agent.outputs.resource_metrics import ResourceCollector
from agent.resources import BuildError, NullResources, build
from agent.resources.cgroupfs import Layout
from agent.resources.sampler import MEMORY_RULE, LimitWatch, Sampler, _Tracked
from tests.unit.test_resources_cgroup import V2_FILES, _write

LIMIT = 16 << 20
NET_DEV = ("Inter-|   Receive                                                |  Transmit\n"
           " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
           "carrier compressed\n"
           "    lo:  999    9    0    0    0     0          0         0   999     9    0    0    0     0     0     0\n"
           "  eth0: 5000   40    0    2    0     0          0         0  7000    50    0    0    0     0     0     0\n")


class Node:
    """A v2 cgroup tree and a /proc with pids 1 (the host's netns) and 4242, 4343 (their own)."""

    def __init__(self, tmp: Path):
        self.cg, self.proc = tmp / "cgroup", tmp / "proc"
        for pid in (1, 4242, 4343):
            (self.proc / str(pid) / "ns").mkdir(parents=True)
            (self.proc / str(pid) / "ns" / "net").write_text("")  # a file of its own: an inode of its own
            (self.proc / str(pid) / "net").mkdir()
            (self.proc / str(pid) / "net" / "dev").write_text(NET_DEV)
        self.table = ContainerTable()
        self.layout = Layout(2, str(self.cg))

    def container(self, cid: str, pid: int, pod: str = "web-1", ns: str = "shop", name: str = "web",
                  kind: str = "container"):
        _write(self.cg / "k8s.io" / cid, V2_FILES)
        labels = {"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": ns,
                  "io.cri-containerd.kind": kind}
        if kind == "container":
            labels["io.kubernetes.container.name"] = name

        def fn(e):
            e.state, e.pid, e.cgroup_path, e.image = "running", pid, f"/k8s.io/{cid}", "nginx:1"
            e.labels = tuple(sorted(labels.items()))
            return "task"

        self.table.update("k8s.io", cid, fn)

    def set(self, cid: str, name: str, text: str) -> None:
        (self.cg / "k8s.io" / cid / name).write_text(text)

    def sampler(self, **kw) -> tuple[Sampler, list]:
        got: list = []
        cfg = ResourcesConfig(interval_s=0.05, **kw)
        return Sampler(cfg, got.append, containers=self.table, proc_root=str(self.proc), layout=self.layout), got


def test_records_counters_cpu_and_network(tmp_path):
    node = Node(tmp_path)
    node.container("aaa", 4242)
    s, got = node.sampler()
    first = s.sample_once()
    assert [type(e) for e in first] == [ContainerResourcesEvent] and got == first
    ev = first[0]
    assert ev.container.id == "aaa" and ev.container.pod_name == "web-1" and ev.cgroup_path == "/k8s.io/aaa"
    u = ev.usage
    assert (u.memory_usage, u.memory_limit, u.pids, u.pids_limit) == (16515072, LIMIT, 3, 64)
    assert (u.net_rx_bytes, u.net_tx_bytes, u.net_rx_packets, u.net_tx_packets, u.net_rx_dropped) == (5000, 7000, 40,
                                                                                                        50, 2)
    assert ev.cpu_percent is None  # one sample: no rate yet
    assert ev.memory_percent == round(100 * (16515072 - 2097152) / LIMIT, 2)
    node.set("aaa", "cpu.stat", "usage_usec 2234567\nuser_usec 1500000\nsystem_usec 734567\n")
    (second,) = s.sample_once()
    assert second.cpu_percent is not None and second.cpu_percent > 0  # 1 s of CPU in a few ms: a big number


def test_pod_sandbox_is_not_sampled(tmp_path):
    node = Node(tmp_path)
    node.container("aaa", 4242)
    node.container("pause", 4343, kind="sandbox")
    s, _ = node.sampler()
    assert [e.container.id for e in s.sample_once()] == ["aaa"]


def test_host_network_namespace_is_not_the_containers(tmp_path):
    node = Node(tmp_path)
    os.unlink(node.proc / "4242" / "ns" / "net")
    os.link(node.proc / "1" / "ns" / "net", node.proc / "4242" / "ns" / "net")  # hostNetwork: pid 1's netns
    node.container("aaa", 4242)
    s, _ = node.sampler()
    (ev,) = s.sample_once()
    assert ev.usage.net_rx_bytes is None and ev.usage.memory_usage == 16515072


def test_memory_alert_once_per_episode(tmp_path):
    node = Node(tmp_path)
    node.container("aaa", 4242)
    node.container("bbb", 4343, pod="db-0", name="db")
    at = f"{LIMIT}\n"
    node.set("aaa", "memory.current", at)
    node.set("aaa", "memory.stat", "anon 16777216\nfile 0\ninactive_file 0\n")
    s, got = node.sampler(memory_alert_percent=95.0, memory_alert_samples=3)

    def alerts_after(n: int) -> list[AlertEvent]:
        out = []
        for _ in range(n):
            out += [e for e in s.sample_once() if isinstance(e, AlertEvent)]
        return out

    assert alerts_after(2) == []
    (a,) = alerts_after(1)  # the third sample in a row at the limit
    assert a.rule_id == MEMORY_RULE and a.container.id == "aaa" and a.severity.label == "medium"
    assert "shop/web-1/web" in a.output and "16.0 MiB of its 16.0 MiB limit (100%)" in a.output
    assert alerts_after(5) == []  # the same episode
    node.set("aaa", "memory.current", f"{LIMIT // 2}\n")
    assert alerts_after(1) == []  # below: the episode ends
    node.set("aaa", "memory.current", at)
    assert alerts_after(2) == [] and len(alerts_after(1)) == 1  # a new episode, three samples again
    assert s.stats["alerts"] == 2


def test_limit_watch_edges():
    w, t = LimitWatch(95.0, 2), _Tracked()
    assert [w.update(t, p) for p in (95.0, 99.0, 100.0, None, 96.0, 96.0)] == [False, True, False, False, False, True]
    off = LimitWatch(0.0, 1)
    assert not off.update(_Tracked(), 100.0)  # 0 percent: the alert is off


def test_deleted_container_leaves_state_and_metrics(tmp_path):
    node = Node(tmp_path)
    node.container("aaa", 4242)
    node.container("bbb", 4343, pod="db-0", name="db")
    s, _ = node.sampler()
    s.sample_once()
    assert {e.container.id for e in s.snapshot()[0]} == {"aaa", "bbb"}
    node.table.mark_deleted("k8s.io", "bbb")  # the listener drops it now, not at the next sample
    assert {e.container.id for e in s.snapshot()[0]} == {"aaa"}
    text = _scrape(s)
    assert 'pod="db-0"' not in text and 'pod="web-1"' in text
    shutil.rmtree(node.cg / "k8s.io" / "aaa")  # its task gone before the table hears of it
    assert s.sample_once() == [] and s.stats["gone"] == 1


def test_cut_and_drops(tmp_path):
    node = Node(tmp_path)
    node.container("aaa", 4242)
    node.container("bbb", 4343, pod="db-0", name="db")
    s, _ = node.sampler(max_containers=1)
    assert len(s.sample_once()) == 1
    assert s.drops() == {"resources.cut": 1, "resources.late": 0, "resources.emit": 0}


def test_emit_failure_is_counted(tmp_path):
    node = Node(tmp_path)
    node.container("aaa", 4242)

    def broken(ev):
        raise RuntimeError("output down")

    s = Sampler(ResourcesConfig(), broken, containers=node.table, proc_root=str(node.proc), layout=node.layout)
    s.sample_once()
    assert s.drops()["resources.emit"] == 1


def test_thread_samples_and_stops(tmp_path):
    node = Node(tmp_path)
    node.container("aaa", 4242)
    s, got = node.sampler()
    s.start()
    try:
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        s.stop()
    assert len(got) >= 3 and not s._thread.is_alive()


def _scrape(s) -> str:
    reg = CollectorRegistry()
    reg.register(ResourceCollector(s.snapshot, s.status))
    return generate_latest(reg).decode()


def test_metrics_labels_values_and_promtool(tmp_path):
    node = Node(tmp_path)
    node.container("aaa", 4242)
    s, _ = node.sampler()
    from agent.resources.host import HostSampler

    s.host = HostSampler("/proc", ("/",))
    s.sample_once()
    s.sample_once()
    text = _scrape(s)
    who = '{container="web",namespace="shop",pod="web-1"}'
    lines = set(text.splitlines())
    for line in (f"nodewarden_container_cpu_seconds_total{who} 1.234567",
                 f"nodewarden_container_memory_bytes{who} 1.6515072e+07",
                 f"nodewarden_container_memory_limit_bytes{who} 1.6777216e+07",
                 f"nodewarden_container_pids{who} 3.0", f"nodewarden_container_pids_limit{who} 64.0",
                 f"nodewarden_container_io_read_bytes_total{who} 1.052672e+06",
                 f"nodewarden_container_network_receive_bytes_total{who} 5000.0",
                 f"nodewarden_container_oom_kills_total{who} 1.0", "nodewarden_resources_samples_total 2.0",
                 "nodewarden_resources_containers 1.0"):
        assert line in lines, (line, text)
    assert any(ln.startswith("nodewarden_host_memory_total_bytes ") for ln in lines)
    assert any(ln.startswith('nodewarden_host_filesystem_size_bytes{path="/"} ') for ln in lines)
    assert any(ln.startswith('nodewarden_host_cpu_seconds_total{mode="idle"} ') for ln in lines)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (Debian's prometheus package)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_same_labels_one_series(tmp_path):
    """A restarted container's old and new task under one pod/container name: one series, the newer."""
    node = Node(tmp_path)
    node.container("old", 4242)
    node.container("new", 4343)
    node.table.update("k8s.io", "new", lambda e: setattr(e, "started_ns", 10**18) or None)
    node.set("new", "pids.current", "9\n")
    s, _ = node.sampler()
    s.sample_once()
    pids = [ln for ln in _scrape(s).splitlines() if ln.startswith("nodewarden_container_pids{")]
    assert pids == ['nodewarden_container_pids{container="web",namespace="shop",pod="web-1"} 9.0']


def test_build_null_and_checks():
    assert isinstance(build(ResourcesConfig(enabled=False)), NullResources)
    assert NullResources().snapshot() == ([], None) and NullResources().drops() == {}
    for bad in ({"interval_s": 0}, {"memory_alert_percent": 150}, {"memory_alert_samples": 0}):
        with pytest.raises(BuildError):
            build(ResourcesConfig(**bad))
    s = build(ResourcesConfig(host=True))
    assert isinstance(s, Sampler) and isinstance(s.sample_once()[-1], HostResourcesEvent)


def test_every_family_documented(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    node = Node(tmp_path)
    node.container("aaa", 4242)
    s, _ = node.sampler()
    from agent.resources.host import HostSampler

    s.host = HostSampler("/proc", ("/",))
    s.sample_once()
    s.sample_once()
    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    names = [fam.name + ("_total" if fam.type == "counter" else "")
             for fam in text_string_to_metric_families(_scrape(s))]
    assert len(names) > 40
    assert not [n for n in names if f"`{n}`" not in doc]


def test_v1_paths_from_the_task_else_containerds(tmp_path):
    """v1: each controller's path from the task's /proc/<pid>/cgroup; in a cgroup namespace of our own those are
    relative to its root ("/../.."), and containerd's path (the host's) is read instead."""
    from agent.events import ContainerInfo
    from agent.resources.sampler import ContainerReader
    from tests.unit.test_resources_cgroup import _v1_tree

    layout = _v1_tree(tmp_path / "cg", "/k8s.io/abc")
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    info = ContainerInfo("abc", pid=7, cgroup_path="/k8s.io/abc")
    (proc / "7" / "cgroup").write_text("5:memory:/k8s.io/abc\n4:cpu,cpuacct:/k8s.io/abc\n3:pids:/elsewhere\n")
    u, path = ContainerReader(layout, str(proc)).read(info, _Tracked())
    assert path == "/k8s.io/abc" and u.memory_usage == 16384000 and u.pids is None  # pids: the task's own path
    (proc / "7" / "cgroup").write_text("5:memory:/../../k8s.io/abc\n3:pids:/../../k8s.io/abc\n")
    u, path = ContainerReader(layout, str(proc)).read(info, _Tracked())
    assert path == "/k8s.io/abc" and u.memory_usage == 16384000 and u.pids == 5
