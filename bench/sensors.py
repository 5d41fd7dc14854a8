"""Sensor overhead and consumption, measured in one run (root).

1. Syscall loops (bench/load.c, compiled here) timed without the agent, then with
   `nodewarden run --json` running, and the ratio of the two medians.
2. The agent's consumption at fixed offered loads: a getppid() loop paced to a rate, seen by the
   bench probe family, read by the real pipeline (decode, enrich, JSON to /dev/null). Reports the
   reader's rate, drops at every stage, and whether produced == delivered + dropped.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOOPS = [  # name, args, target ratio
    ("exec loop (fork+exec /bin/true)", ["exec", "2000"], 1.05),
    ("open/close read-only (not watched)", ["open_ro", "200000", "/etc/hostname"], 1.10),
    ("open/close write, ignored prefix", ["open_w", "200000", "/dev/null"], 1.10),
    ("open-for-write, watched path", ["open_w", "100000", "{tmp}/watched"], 1.5),
    ("loopback TCP connect+accept", ["connect", "20000"], 1.10),
]


def build(tmp: str) -> str:
    exe = os.path.join(tmp, "load")
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(ROOT, "bench", "load.c")], check=True)
    return exe


def time_loop(exe: str, args: list[str], reps: int) -> float:
    runs = [int(subprocess.run([exe, *args], check=True, capture_output=True, text=True).stdout) for _ in range(reps)]
    return statistics.median(runs)


class Agent:
    def __init__(self):
        self.lines = 0
        self.ready = threading.Event()
        self.p = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, cwd=ROOT)
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60):
            raise SystemExit("agent did not become ready")

    def _read(self):
        for line in self.p.stdout:
            self.lines += 1
            if b'"agent.ready"' in line:
                self.ready.set()

    def stop(self):
        self.p.terminate()
        self.p.wait(30)


def overhead(exe: str, tmp: str, reps: int) -> list[tuple]:
    loops = [(name, [a.format(tmp=tmp) for a in args], target) for name, args, target in LOOPS]
    base = {name: time_loop(exe, args, reps) for name, args, _ in loops}
    agent = Agent()
    try:
        with_agent = {name: time_loop(exe, args, reps) for name, args, _ in loops}
    finally:
        agent.stop()
    rows = []
    for name, args, target in loops:
        n = int(args[1])
        ratio = with_agent[name] / base[name]
        rows.append((name, f"{base[name] / n:.0f} ns", f"{with_agent[name] / n:.0f} ns", f"{ratio:.3f}x",
                     f"<= {target}x", "ok" if ratio <= target else "MISSED"))
    return rows


def consumption(exe: str, rate: int, seconds: float) -> tuple:
    from agent import config
    from agent.outputs.log import JsonLog
    from agent.pipeline import Pipeline

    cfg = config.load(None, env={}, overrides={"probes.families": "bench", "probes.target_tgid": 1 << 31})
    devnull = open(os.devnull, "wb")
    bench_out = [0]

    def count(records):
        bench_out[0] += sum(1 for r in records if r["event.name"] == "bench.tick")

    pipe = Pipeline(cfg, [JsonLog(devnull).emit, count])
    pipe.start()
    load = subprocess.Popen([exe, "rate", str(rate), str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    pipe.probes.set_target_tgid(load.pid)
    t0 = time.monotonic()
    out, _ = load.communicate(b"g")
    produced, elapsed_ns = (int(x) for x in out.split())
    while pipe.received < produced - pipe.drop_totals().get("kernel.bench", 0) and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    pipe.stop()
    caught_up = time.monotonic() - t0
    devnull.close()
    drops = pipe.drop_totals()
    kernel, queued, bad = drops.get("kernel.bench", 0), drops.get("queue", 0), drops.get("decode", 0)
    exact = produced == pipe.received + kernel and pipe.received == bench_out[0] + queued + bad
    return (f"{rate:,}/s", f"{produced:,}", f"{pipe.received / (elapsed_ns / 1e9):,.0f}/s", f"{kernel:,}",
            f"{queued:,}", f"{bench_out[0]:,}", f"{bench_out[0] / caught_up:,.0f}/s", "yes" if exact else "NO")

def _table(headers, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True))  # noqa: E731
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def main(reps: int = 5) -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench.sensors needs root")
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        print("Sensor overhead: median of", reps, "runs each, per-iteration time without and with the agent\n")
        _table(("loop", "without", "with agent", "ratio", "target", ""), overhead(exe, tmp, reps))
        print("\nConsumption at a fixed offered load (bench probe on getppid, real pipeline, JSON to /dev/null)\n")
        rows = [consumption(exe, rate, 2.0) for rate in (100_000, 300_000, 600_000)]
        _table(("offered", "produced", "read from ring", "kernel drops", "queue drops", "processed",
                "processed rate", "all accounted"), rows)
        print("\ntarget: the agent consumes >= 500,000 events/s with zero unaccounted loss")


if __name__ == "__main__":
    main()
