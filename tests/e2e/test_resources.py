"""`nodewarden run` on a real containerd: container.resources records and /metrics of containers with memory and
pids limits, checked against the containers' own cgroup files (and their network namespace's /proc/<pid>/net/dev)
read by the test right after the record; host.resources against /proc/meminfo; the memory-limit alert raised once
for the container that sits at its limit and never for the one below it; the series of a deleted container gone
from /metrics; `promtool check metrics` clean.

The containers fill /dev/shm (a tmpfs charged to their memory cgroup, not reclaimable without swap) with a known
amount and then sleep, so the counters hold still between the agent's sample and the test's read. ctr has no
--pids-limit: the test writes pids.max into the container's pids cgroup itself (the kernel's interface, as the
kubelet's runtime does). This machine runs cgroup v1; on a v2 node the same test reads the unified files.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness.containerd import unique_id
from tests.kernel.conftest import AgentProcess

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF probes, containers)")]

MIB = 1 << 20
POD = {"io.kubernetes.pod.name": "res-pod", "io.kubernetes.pod.namespace": "res-ns",
       "io.kubernetes.container.name": "app"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _run(containerd, image, cid: str, limit: int, fill_mib: int, labels: dict | None = None,
         net_host: bool = False, direct_mib: int = 0) -> int:
    """A container that fills /dev/shm with fill_mib MiB, writes direct_mib MiB to its rootfs with O_DIRECT (block
    I/O on the host's disk, charged to the container), then sleeps. With direct_mib it waits for the test's
    /dev/shm/go first (the test sets up the cgroup and the network before)."""
    label_args = [a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")]
    if net_host:
        label_args.append("--net-host")
    script = (("while [ ! -e /dev/shm/go ]; do sleep 0.05; done; " if direct_mib else "")
              + f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={fill_mib} 2>/dev/null; "
              + (f"dd if=/dev/zero of=/direct bs=1M count={direct_mib} oflag=direct 2>/dev/null; "
                 if direct_mib else "")
              + "exec sleep 300")
    containerd.ctr("run", "-d", "--null-io", "--memory-limit", str(limit), *label_args, image.name, cid, "sh", "-c",
                   script)
    return containerd.task_pid(cid)


def _disk_of(path: str) -> str:
    """major:minor of the whole disk under path's filesystem (blk-throttle rules take a disk, not a partition)."""
    dev = os.stat(path).st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve()
    if (sys_dev / "partition").exists():
        sys_dev = sys_dev.parent
    return (sys_dev / "dev").read_text().strip()


class Veth:
    """A veth pair into the container's network namespace (ctr gives it only lo), and datagrams sent into it: the
    container's eth0 counts them. Deleting the host end deletes both."""

    HOST, PEER = "169.254.77.1", "169.254.77.2"

    def __init__(self, pid: int):
        self.name = f"nwres{pid % 100000}"
        subprocess.run(["ip", "link", "add", self.name, "type", "veth", "peer", "name", "eth0", "netns", str(pid)],
                       check=True, capture_output=True)
        # IPv6 off in the container's namespace: no router solicitations or DAD sent on their own, so its
        # counters hold still once the test's datagrams (and the ICMP answers to them) are through.
        ns = ["nsenter", "-t", str(pid), "-n"]
        for cmd in ([*ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                    [*ns, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"],
                    ["ip", "addr", "add", f"{self.HOST}/30", "dev", self.name], ["ip", "link", "set", self.name, "up"],
                    [*ns, "ip", "addr", "add", f"{self.PEER}/30", "dev", "eth0"],
                    [*ns, "ip", "link", "set", "eth0", "up"]):
            subprocess.run(cmd, check=True, capture_output=True)

    def send(self, n: int, size: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(n):
                s.sendto(b"x" * size, (self.PEER, 9))
                time.sleep(0.01)

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)


class Files:
    """The container's cgroup files, located by the test from /proc/<pid>/cgroup and the mounts."""

    def __init__(self, pid: int):
        self.pid = pid
        with open(f"/proc/{pid}/cgroup") as f:
            lines = [ln.split(":", 2) for ln in f.read().splitlines()]
        mounts = {}
        with open("/proc/self/mounts") as f:
            for ln in f:
                dev, point, fstype, opts = ln.split()[:4]
                if fstype == "cgroup2":
                    mounts.setdefault("", point)
                elif fstype == "cgroup":
                    for o in opts.split(","):
                        mounts.setdefault(o, point)
        self.v2 = not any(h != "0" for h, _, _ in lines) or "memory" not in mounts
        self.dirs = {}
        for hier, ctls, path in lines:
            for ctl in ([""] if hier == "0" else ctls.split(",")):
                if ctl in mounts:
                    self.dirs[ctl] = Path(mounts[ctl]) / path.lstrip("/")

    def read(self, ctl: str, name: str) -> str:
        return (self.dirs["" if self.v2 else ctl] / name).read_text()

    def num(self, ctl: str, name: str) -> int | None:
        text = self.read(ctl, name).split()[0]
        return None if text == "max" or int(text) >= 1 << 62 else int(text)  # no limit

    def keyed(self, ctl: str, name: str) -> dict[str, int]:
        return {k: int(v) for k, v in (ln.split() for ln in self.read(ctl, name).splitlines())}

    def set_pids_max(self, n: int) -> None:
        (self.dirs["" if self.v2 else "pids"] / "pids.max").write_text(f"{n}\n")

    def count_block_io(self, disk: str) -> None:
        """cgroup v1 keeps blkio.throttle.* counts only for a disk with a throttle rule in the cgroup (blk-throttle
        skips the others; io.stat on v2 counts every disk): a rule no write reaches, as an operator's would."""
        if not self.v2:
            (self.dirs["blkio"] / "blkio.throttle.write_bps_device").write_text(f"{disk} {1 << 40}\n")

    def expected(self) -> dict:
        """What the record should say, read now from the files themselves."""
        if self.v2:
            cpu, mem = self.keyed("cpu", "cpu.stat"), self.keyed("memory", "memory.stat")
            usage, inactive = self.num("memory", "memory.current"), mem["inactive_file"]
            out = {"container.cpu.usage_ns": cpu["usage_usec"] * 1000, "container.memory.usage": usage,
                   "container.memory.limit": self.num("memory", "memory.max"),
                   "container.pids.current": self.num("pids", "pids.current"),
                   "container.pids.limit": self.num("pids", "pids.max")}
        else:
            mem = self.keyed("memory", "memory.stat")
            usage, inactive = self.num("memory", "memory.usage_in_bytes"), mem["total_inactive_file"]
            out = {"container.cpu.usage_ns": self.num("cpuacct", "cpuacct.usage"), "container.memory.usage": usage,
                   "container.memory.limit": self.num("memory", "memory.limit_in_bytes"),
                   "container.memory.limit_hits": self.num("memory", "memory.failcnt"),
                   "container.pids.current": self.num("pids", "pids.current"),
                   "container.pids.limit": self.num("pids", "pids.max")}
        out["container.memory.working_set"] = usage - inactive
        if self.v2:
            io = [dict(kv.split("=") for kv in ln.split()[1:]) for ln in self.read("io", "io.stat").splitlines()]
            out["container.disk.read.bytes"] = sum(int(d["rbytes"]) for d in io)
            out["container.disk.write.bytes"] = sum(int(d["wbytes"]) for d in io)
        else:
            rows = [ln.split() for ln in self.read("blkio", "blkio.throttle.io_service_bytes_recursive").splitlines()]
            out["container.disk.read.bytes"] = sum(int(r[2]) for r in rows if len(r) == 3 and r[1] == "Read")
            out["container.disk.write.bytes"] = sum(int(r[2]) for r in rows if len(r) == 3 and r[1] == "Write")
        with open(f"/proc/{self.pid}/net/dev") as f:  # rx bytes is column 1, tx bytes column 9; lo left out
            rows = [ln.split(":", 1)[1].split() for ln in f.read().splitlines()[2:] if ln.split(":")[0].strip() != "lo"]
        out["container.network.ingress.bytes"] = sum(int(r[0]) for r in rows)
        out["container.network.egress.bytes"] = sum(int(r[8]) for r in rows)
        return out


@pytest.fixture
def agent_env(tmp_path, monkeypatch):
    for k, v in {"NODEWARDEN_RESOURCES_INTERVAL_S": "0.5", "NODEWARDEN_RESOURCES_MEMORY_ALERT_PERCENT": "80",
                 "NODEWARDEN_RESOURCES_MEMORY_ALERT_SAMPLES": "2", "NODEWARDEN_AGENT_STATE_DIR": str(tmp_path / "st"),
                 "NODEWARDEN_IMAGEGATE_CACHE_PATH": str(tmp_path / "cache.db")}.items():
        monkeypatch.setenv(k, v)


def test_resources_match_cgroup_files(agent_env, containerd, busybox_image, tmp_path):
    port = _free_port()
    agent = AgentProcess("--containerd-socket", str(containerd.socket), "--metrics", f"127.0.0.1:{port}")
    cid, hog = unique_id("res"), unique_id("reshog")
    try:
        pid = _run(containerd, busybox_image, cid, 64 * MIB, 24, labels=POD, direct_mib=8)
        hog_pid = _run(containerd, busybox_image, hog, 32 * MIB, 28, net_host=True)
        files = Files(pid)
        files.set_pids_max(64)
        files.count_block_io(_disk_of(str(containerd.root)))
        veth = Veth(pid)
        veth.send(20, 1000)
        Path(f"/proc/{pid}/root/dev/shm/go").write_text("")  # the container's own /dev/shm, through its root
        deadline = time.monotonic() + 20  # dd done: its 24 MiB of shm charged, sh exec'd into sleep
        while (files.expected()["container.memory.usage"] < 24 * MIB or files.expected()["container.disk.write.bytes"]
               < 8 * MIB or files.expected()["container.network.ingress.bytes"] < 20 * 1000) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        quiet = None  # and the counters still for a second: nothing in flight on the veth
        while (now := files.expected()) != quiet and time.monotonic() < deadline:
            quiet = now
            time.sleep(1.0)
        after = time.time_ns()

        def ours(r):
            return (r["event.name"] == "container.resources" and r.get("container.id") == cid
                    and r.get("container.pids.limit") == 64 and _ts(r) > after)

        rec = agent.wait_for(ours, timeout=30)[0]
        want = files.expected()  # read the moment the record is here: the container sleeps, nothing moves
        _compare(rec, want)
        print("record vs files:", {k: (rec.get(k), v) for k, v in want.items()})
        assert rec["container.cgroup.version"] == (2 if files.v2 else 1)
        assert (rec["k8s.pod.name"], rec["k8s.namespace.name"], rec["container.name"]) == ("res-pod", "res-ns", "app")
        assert rec["container.image.name"] == busybox_image.name and rec["event.severity"] == "info"
        assert rec["container.memory.working_set"] >= 24 * MIB
        assert rec["container.memory.percent"] == pytest.approx(100 * rec["container.memory.working_set"] / (64 * MIB),
                                                                abs=0.01)
        assert rec["container.pids.current"] == 1  # sh exec'd sleep
        assert rec["container.network.ingress.bytes"] >= 20 * 1000 and rec["container.network.ingress.packets"] >= 20
        assert rec["container.disk.write.bytes"] >= 8 * MIB
        _check_alerts(agent, cid, hog, Files(hog_pid))
        _check_host(agent)
        _check_metrics(port, cid, want)
    finally:
        if "veth" in locals():
            veth.close()
        for c in (cid, hog):
            containerd.remove(c)
    try:
        _check_gone(port, cid)
    finally:
        assert agent.stop() == 0


def _ts(r) -> int:
    from nwwire.codec import parse_timestamp

    return parse_timestamp(r["timestamp"])


def _compare(rec: dict, want: dict) -> None:
    tolerance = {"container.cpu.usage_ns": 50_000_000, "container.memory.usage": MIB,
                 "container.memory.working_set": MIB}
    for key, val in want.items():
        if val is None:  # no limit: no key
            assert key not in rec, (key, rec[key])
        else:
            assert abs(rec[key] - val) <= tolerance.get(key, 0), (key, rec[key], val)


def _check_alerts(agent, cid: str, hog: str, files: Files) -> None:
    (alert,) = agent.wait_for(lambda r: r["event.name"] == "alert" and r["rule.id"] == "nw.container_memory_at_limit",
                              timeout=30)
    assert alert["container.id"] == hog and alert["event.severity"] == "medium"
    assert "of its 32.0 MiB limit" in alert["alert.output"]
    time.sleep(2.0)  # four more samples: the same episode, no second alert; never one for the container below
    alerts = agent.find(lambda r: r["event.name"] == "alert" and r["rule.id"] == "nw.container_memory_at_limit")
    assert [a["container.id"] for a in alerts] == [hog]
    last = agent.find(lambda r: r["event.name"] == "container.resources" and r.get("container.id") == hog)[-1]
    assert last["container.memory.percent"] >= 80 and last["container.memory.limit"] == 32 * MIB
    assert abs(last["container.memory.usage"] - files.expected()["container.memory.usage"]) <= MIB
    assert "container.network.ingress.bytes" not in last  # --net-host: the host's traffic is not the container's


def _check_host(agent) -> None:
    rec = agent.wait_for(lambda r: r["event.name"] == "host.resources", timeout=10)[-1]
    with open("/proc/meminfo") as f:
        total = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal:"))
    assert rec["host.memory.total"] == total and rec["host.cpu.count"] == os.cpu_count()
    (fs,) = rec["host.filesystems"]
    st = os.statvfs("/")
    assert fs["path"] == "/" and fs["total"] == st.f_blocks * st.f_frsize


def _check_metrics(port: int, cid: str, want: dict) -> None:
    text = _metrics(port)
    who = '{container="app",namespace="res-ns",pod="res-pod"}'
    lines = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln and ln[0] != "#"}
    assert lines[f"nodewarden_container_memory_limit_bytes{who}"] == 64 * MIB
    assert lines[f"nodewarden_container_pids_limit{who}"] == 64
    assert lines[f"nodewarden_container_pids{who}"] == 1
    assert abs(lines[f"nodewarden_container_memory_bytes{who}"] - want["container.memory.usage"]) <= MIB
    assert abs(lines[f"nodewarden_container_cpu_seconds_total{who}"] * 1e9 - want["container.cpu.usage_ns"]) <= 5e7
    assert lines["nodewarden_host_memory_total_bytes"] > 0 and lines['nodewarden_host_filesystem_size_bytes{path="/"}']
    assert 'nodewarden_drops_total{stage="resources.cut"} 0.0' in text
    promtool = shutil.which("promtool")
    if promtool is not None:
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def _check_gone(port: int, cid: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        text = _metrics(port)
        if 'pod="res-pod"' not in text or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert 'pod="res-pod"' not in text
