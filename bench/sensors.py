"""Sensor overhead and consumption, measured in one run (root).

1. Syscall loops (bench/load.c, compiled here) timed in interleaved rounds without the agent, then with
   `nodewarden run --json` running; the median of the per-round ratios and their spread.
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

LOOPS = [  # name, args, target ratio (issue 17)
    ("exec loop (fork+exec /bin/true)", ["exec", "2000"], 1.03),
    ("open/close read-only (not watched)", ["open_ro", "200000", "/etc/hostname"], 1.15),
    ("open/close write, ignored prefix", ["open_w", "200000", "/dev/null"], 1.15),
    ("open-for-write, watched path", ["open_w", "100000", "{tmp}/watched"], 1.3),
    ("loopback TCP connect+accept", ["connect", "20000"], 1.05),
]


def build(tmp: str) -> str:
    exe = os.path.join(tmp, "load")
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(ROOT, "bench", "load.c")], check=True)
    return exe


def time_loop(exe: str, args: list[str]) -> tuple[int, int]:
    """(wall ns, CPU ns) of one run of the loop."""
    out = subprocess.run([exe, *args], check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


class Agent:
    def __init__(self, env: dict[str, str] | None = None):  # env: settings (NODEWARDEN_<SECTION>_<KEY>)
        self.lines = 0
        self.ready = threading.Event()
        self.p = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(120):
            self.stop()
            raise SystemExit("agent did not become ready")

    def _read(self):
        for line in self.p.stdout:
            self.lines += 1
            if b'"agent.ready"' in line:
                self.ready.set()

    def stop(self):
        self.p.terminate()
        self.p.wait(30)


def _spread(xs: list[float]) -> str:
    return f"{min(xs):.3f}-{max(xs):.3f}"


def overhead(exe: str, tmp: str, reps: int, clock: str = "wall", env: dict | None = None) -> list[tuple]:
    """Interleaved rounds: each loop once without the agent, then the agent started and each loop once with it,
    then the agent stopped. Each round gives one ratio per loop (a pair run minutes apart at most, so a
    machine that gets busier or quieter moves both sides of it); the row is the median of those ratios and
    their spread. clock: "wall" (elapsed) or "cpu" (user + system of the loop and its children: the probes
    run in the traced task, and a shared machine's waits for a CPU are left out)."""
    loops = [(name, [a.format(tmp=tmp) for a in args], target) for name, args, target in LOOPS]
    pick = 0 if clock == "wall" else 1
    base: dict[str, list[int]] = {name: [] for name, _, _ in loops}
    with_agent: dict[str, list[int]] = {name: [] for name, _, _ in loops}
    for _ in range(reps):
        for name, args, _ in loops:
            base[name].append(time_loop(exe, args)[pick])
        agent = Agent(env)
        try:
            for name, args, _ in loops:
                with_agent[name].append(time_loop(exe, args)[pick])
        finally:
            agent.stop()
    rows = []
    for name, args, target in loops:
        n = int(args[1])
        ratios = [w / b for w, b in zip(with_agent[name], base[name], strict=True)]
        ratio = statistics.median(ratios)
        rows.append((name, f"{statistics.median(base[name]) / n:.0f} ns",
                     f"{statistics.median(with_agent[name]) / n:.0f} ns", f"{ratio:.3f}x", _spread(ratios),
                     f"<= {target}x", "ok" if ratio <= target else "MISSED"))
    return rows


_BPF_PROG_GET_NEXT_ID, _BPF_PROG_GET_FD_BY_ID, _BPF_OBJ_GET_INFO_BY_FD = 11, 13, 15
_RUN_TIME_AT = 192  # offsetof(struct bpf_prog_info, run_time_ns), then run_cnt (uapi, stable)


def _bpf(cmd: int, attr: bytes):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(attr, 128)
    return libc.syscall(321, cmd, buf, 128), buf  # __NR_bpf on x86-64


def _prog_times(ids: set[int]) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the programs `ids` (kernel.bpf_stats_enabled must be on)."""
    import ctypes
    import struct

    total = runs = 0
    for pid in ids:
        fd, _ = _bpf(_BPF_PROG_GET_FD_BY_ID, struct.pack("<I", pid))
        if fd < 0:
            continue
        info = ctypes.create_string_buffer(256)
        _bpf(_BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, 256, ctypes.addressof(info)))
        os.close(fd)
        t, n = struct.unpack_from("<QQ", info.raw, _RUN_TIME_AT)
        total, runs = total + t, runs + n
    return total, runs


def _agent_prog_ids(pid: int) -> set[int]:
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                ids.update(int(line.split()[1]) for line in f if line.startswith("prog_id:"))
        except OSError:
            continue
    return ids


def probe_cost(exe: str, tmp: str, env: dict | None = None) -> list[tuple]:
    """Time spent in the agent's own BPF programs per loop iteration (kernel.bpf_stats_enabled): what the
    probes cost, whatever else the machine runs (other agents' programs are not counted). Not the whole
    overhead: a syscall tracepoint's own dispatch and record, and the reader's CPU, are outside it; the
    stats' clock reads add some ns per run."""
    loops = [(name, [a.format(tmp=tmp) for a in args]) for name, args, _ in LOOPS]
    stats = "/proc/sys/kernel/bpf_stats_enabled"
    with open(stats) as f:
        was = f.read().strip()
    agent = Agent(env)
    rows = []
    try:
        ids = _agent_prog_ids(agent.p.pid)
        with open(stats, "w") as f:
            f.write("1")
        for name, args in loops:
            t0, n0 = _prog_times(ids)
            time_loop(exe, args)
            t1, n1 = _prog_times(ids)
            n = int(args[1])
            rows.append((name, f"{(t1 - t0) / n:.0f} ns", f"{(n1 - n0) / n:.1f}"))
    finally:
        with open(stats, "w") as f:
            f.write(was)
        agent.stop()
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


def main(reps: int = 5, clock: str = "wall", overhead_only: bool = False, probe_costs: bool = False,
         fold_window: float | None = None) -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench.sensors needs root")
    env = {} if fold_window is None else {"NODEWARDEN_PROBES_FOLD_WINDOW": str(fold_window)}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        print(f"Sensor overhead: {reps} interleaved rounds (without, then with the agent), {clock} time per "
              "iteration (medians); ratio = median of the per-round ratios, spread = their lowest-highest\n")
        _table(("loop", "without", "with agent", "ratio", "spread", "target", ""), overhead(exe, tmp, reps, clock, env))
        if probe_costs:
            print("\nTime in the agent's own BPF programs (kernel.bpf_stats_enabled), per iteration\n")
            _table(("loop", "in probes", "program runs"), probe_cost(exe, tmp, env))
        if overhead_only:
            return
        print("\nConsumption at a fixed offered load (bench probe on getppid, real pipeline, JSON to /dev/null)\n")
        rows = [consumption(exe, rate, 2.0) for rate in (100_000, 300_000, 600_000)]
        _table(("offered", "produced", "read from ring", "kernel drops", "queue drops", "processed",
                "processed rate", "all accounted"), rows)
        print("\ntarget: the agent consumes >= 500,000 events/s with zero unaccounted loss")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="interleaved rounds (each starts the agent once)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: user+system time of the loop (steadier on a shared machine)")
    ap.add_argument("--overhead-only", action="store_true", help="skip the consumption part")
    ap.add_argument("--fold-window", type=float, metavar="S",
                    help="the agent's probes.fold_window (default: the agent's, 1 s; 0 = off). The watched loop "
                         "opens one file again and again: with folding on, the kernel sends one record a second")
    ap.add_argument("--probe-cost", action="store_true",
                    help="also the time in the agent's own BPF programs per iteration (steady on a shared machine)")
    a = ap.parse_args()
    if a.reps < 1:
        raise SystemExit("--reps must be at least 1")
    main(a.reps, a.clock, a.overhead_only, a.probe_cost, a.fold_window)
