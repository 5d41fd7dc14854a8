"""Agent memory and idle CPU (issue 17): the real `nodewarden run`, measured from outside.

`python -m bench.memory [--minutes M] [--rate N] [--idle S]` (root). Starts the agent with every default
probe family and JSON events to /dev/null, waits for /readyz, and reports from /proc/PID/smaps_rollup:
USS (Private_Clean + Private_Dirty: what the agent alone costs the node) and RSS after start and after
`--idle` seconds, its CPU over that idle time, whether libbcc or LLVM is mapped (they must not be: the
probes are compiled in a short-lived child, agent/sensors/childload.py), the same with the embedded
collector, then USS every 10 s for `--minutes` under a steady `--rate` writing opens per second (each a
file.open event through decode, enrich, rules and output: the agent runs with probes.fold_window 0, as the
load reopens one file) and the slope of a least-squares line through
those samples after the first minute (MB/min). Each number is printed beside its target. Without a
containerd at its default socket the agent runs with containers.enabled false (the bench says so): its
watcher would otherwise retry once a second, which no idle node with containerd does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TARGET_USS_MB = 80.0
TARGET_IDLE_CPU = 1.0  # % of one core
# MB/min under load. "Flat": under 5 MB over 10 minutes; the bounded queue between reader and pipeline
# (agent.queue_batches x agent.batch_max records) fills and empties by more than that from one sample to the next.
TARGET_SLOPE = 0.5
TICK = 10.0  # seconds between samples under load
CONTAINERD = "/run/containerd/containerd.sock"  # containers.containerd_socket's default

# The load: write-opens of one file at a fixed rate, in 2 ms ticks (a pure Python loop; os.open/os.close is
# ~2 us here, so 100,000/s costs it about a third of a core).
LOAD = """
import os, sys, time
rate, seconds, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
tick, done, t0 = 0.002, 0, time.monotonic()
while (now := time.monotonic()) - t0 < seconds:
    want = int((now - t0) * rate)
    for _ in range(min(want - done, rate)):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    done = max(done, want)
    time.sleep(tick)
print(done)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smaps(pid: int) -> dict[str, float]:
    """USS and RSS in MB, from smaps_rollup."""
    kb = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                kb[parts[0].rstrip(":")] = int(parts[1])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0) + kb.get("Private_Hugetlb", 0)
    return {"uss": uss / 1024, "rss": kb.get("Rss", 0) / 1024}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def llvm_mapped(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return sorted({ln.split()[-1] for ln in f if "libbcc" in ln or "LLVM" in ln})


class Agent:
    """`nodewarden run` in a temporary state dir, events to /dev/null, its log kept for errors."""

    def __init__(self, tmp: str, collector: bool):
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(dir=tmp)
        # fold_window 0: the load reopens one file, which the kernel would otherwise fold into one record a
        # second (probes.fold_window): the run measures the pipeline under the offered rate, not the fold
        lines = ["agent:", f"  state_dir: {self.dir}", f"  metrics_listen: 127.0.0.1:{self.port}",
                 "output:", "  format: json", "probes:", "  fold_window: 0"]
        if not os.path.exists(CONTAINERD):  # else the watcher retries every second: no idle node does that
            lines += ["containers:", "  enabled: false"]
        if collector:
            lines += ["export:", "  collector: embedded", f"  embedded_listen: 127.0.0.1:{_free_port()}",
                      "  embedded_http: ''"]
        cfgfile = os.path.join(self.dir, "config.yaml")
        with open(cfgfile, "w") as f:
            f.write("\n".join(lines) + "\n")
        exe = shutil.which("nodewarden") or os.path.join(os.path.dirname(sys.executable), "nodewarden")
        self.log = open(os.path.join(self.dir, "agent.log"), "w+")
        self.proc = subprocess.Popen([exe, "run", "--config", cfgfile], stdout=subprocess.DEVNULL,
                                     stderr=self.log, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.started_s = self._wait_ready()

    def _wait_ready(self, timeout: float = 600) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"the agent exited ({self.proc.returncode}): {self.log.read()[-1500:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"the agent was not ready after {timeout:.0f} s")

    def metric(self, name: str) -> dict[str, float]:
        """{labels: value} of one metric's samples."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            out = {}
            for line in r.read().decode().splitlines():
                if line.startswith(name + "{") or line.startswith(name + " "):
                    labels, value = line.rsplit(" ", 1)
                    out[labels[len(name):]] = float(value)
            return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def idle(tmp: str, collector: bool, seconds: float) -> list[tuple]:
    a = Agent(tmp, collector)
    try:
        start = smaps(a.pid)
        e0 = sum(a.metric("nodewarden_events_total").values())
        c0, t0 = cpu_seconds(a.pid), time.monotonic()
        time.sleep(seconds)
        cpu = 100 * (cpu_seconds(a.pid) - c0) / (time.monotonic() - t0)
        # Whether the node was idle: other work on it (a test suite, a build) is watched too.
        events = sum(a.metric("nodewarden_events_total").values()) - e0
        end, mapped = smaps(a.pid), llvm_mapped(a.pid)
    finally:
        a.stop()
    what = "embedded collector" if collector else "agent"
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    return [
        (f"{what}: started (ready after {a.started_s:.0f} s)", f"USS {start['uss']:.1f} MB, RSS {start['rss']:.1f} MB",
         f"USS <= {TARGET_USS_MB:.0f} MB", ok(start["uss"] <= TARGET_USS_MB)),
        (f"{what}: after {seconds:.0f} s idle", f"USS {end['uss']:.1f} MB, RSS {end['rss']:.1f} MB",
         f"USS <= {TARGET_USS_MB:.0f} MB", ok(end["uss"] <= TARGET_USS_MB)),
        (f"{what}: CPU over {seconds:.0f} s idle", f"{cpu:.2f} % of a core ({events / seconds:,.0f} events/s)",
         f"< {TARGET_IDLE_CPU:.0f} %",
         ok(cpu < TARGET_IDLE_CPU)),
        (f"{what}: libbcc / LLVM mapped", ", ".join(os.path.basename(m) for m in mapped) or "no", "no",
         ok(not mapped)),
    ]


def settled(a: Agent, quiet_s: float = 1.0, most_s: float = 10.0) -> tuple[float, dict[str, float]]:
    """The file.open events out and the drops once the counters stop moving: the load's last records
    are still in the ring buffer and the pipeline when it exits, and read at once they would look lost."""
    def read() -> tuple[float, dict[str, float]]:
        opened = sum(v for k, v in a.metric("nodewarden_events_total").items() if '"file.open"' in k)
        return opened, a.metric("nodewarden_drops_total")

    last, since, end = read(), time.monotonic(), time.monotonic() + most_s
    while time.monotonic() < end and time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB/min."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return 60 * sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def loaded(tmp: str, rate: int, minutes: float) -> list[tuple]:
    a = Agent(tmp, collector=False)
    target = os.path.join(a.dir, "written")
    seconds = minutes * 60
    load = subprocess.Popen([sys.executable, "-c", LOAD, str(rate), str(seconds), target], stdout=subprocess.PIPE)
    samples, t0 = [], time.monotonic()
    c0 = cpu_seconds(a.pid)
    try:
        while load.poll() is None:
            time.sleep(TICK)
            t = time.monotonic() - t0
            samples.append((t, smaps(a.pid)["uss"]))
            print(f"  {t:5.0f} s  USS {samples[-1][1]:.1f} MB", flush=True)
        cpu = 100 * (cpu_seconds(a.pid) - c0) / (time.monotonic() - t0)
        done = int(load.communicate()[0] or 0)
        opened, drops = settled(a)
    finally:
        if load.poll() is None:
            load.kill()
        a.stop()
    steady = [p for p in samples if p[0] >= 60] or samples
    s = slope(steady)
    span = f"{min(u for _, u in steady):.1f}-{max(u for _, u in steady):.1f} MB"
    return [
        (f"under {rate:,} opens/s: offered", f"{done:,} opens in {seconds:.0f} s ({done / seconds:,.0f}/s)", "", ""),
        ("  file.open events out", f"{opened:,.0f} (+ drops - offered: {opened + sum(drops.values()) - done:+,.0f};"
         " other processes' opens count too)", "", ""),
        ("  drops, by stage", ", ".join(f"{_label(k)} {v:,.0f}" for k, v in
                                       sorted(drops.items(), key=lambda kv: -kv[1]) if v) or "none", "counted", ""),
        ("  agent CPU", f"{cpu:.0f} % of a core", "", ""),
        (f"  USS after the first minute ({len(steady)} samples)", span, "bounded", ""),
        ("  USS slope", f"{s:+.3f} MB/min", f"|slope| < {TARGET_SLOPE} MB/min",
         "ok" if abs(s) < TARGET_SLOPE else "MISSED"),
    ]


def _label(labels: str) -> str:
    """'{stage="queue"}' -> 'queue'."""
    return labels.split("=", 1)[-1].strip('{}"')


def _table(rows) -> None:
    headers = ("measure", "value", "target", "")
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for r in (headers, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)), flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of the loaded run (default 10)")
    p.add_argument("--rate", type=int, default=100_000, help="writing opens per second under load")
    p.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement (default 60)")
    p.add_argument("--skip-load", action="store_true", help="only the idle measurements")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.memory needs root (it loads the probes)")
    if not os.path.exists(CONTAINERD):
        print(f"no containerd at {CONTAINERD}: the agent runs with containers.enabled false\n")
    with tempfile.TemporaryDirectory(prefix="nw-bench-memory-") as tmp:
        rows = idle(tmp, False, args.idle) + idle(tmp, True, args.idle)
        _table(rows)
        if not args.skip_load:
            print(f"\nUSS every {TICK:.0f} s under load:", flush=True)
            _table(loaded(tmp, args.rate, args.minutes))


if __name__ == "__main__":
    main()
