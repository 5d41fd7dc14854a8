"""Device poller benchmark: what GPU reporting costs the agent (no root).

Default (no GPU needed): the real NVIDIA backend and pynvml over the fake libnvidia-ml.so.1
(tests/devices/fake_nvml.c) with 8 GPUs, each listing 2 processes (real `sleep`s this bench starts).
  1. CPU per sample per device: the poller's threads (schedule, driver worker, emitter) plus what the
     agent does with each record (the flattener and a JSON line), in a child process, over a window.
  2. The agent's added CPU with 8 devices at a 1 s interval, in % of one core (target: under 0.5 %),
     less the same child's CPU over the same window with the poller off.
  3. One sample in the driver binding alone (backend.sample, in a loop): the floor under 1.
With the fake driver the driver's own work is nearly nothing: 1-3 measure pynvml and us.

--real (on a GPU machine, with its driver): the same on the node's own GPUs, then the inventory, and
our values beside `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` taken at the same moment.

    python -m bench.devices [--real] [--seconds 20] [--devices 8] [--interval 1] [--events] [--agent]

As root the default run also measures the whole agent (`nodewarden run`, process probes), devices on
(the fake GPUs at 1 s) against off, from its /proc/<pid>/stat CPU ticks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MIB = 1024 * 1024


def write_fake_config(path: str, n: int, pids: list[int], events: bool = False) -> None:
    """n fake GPUs, 2 of the pids on each. Without `events` the GPUs support no NVML event: the fake's
    nvmlEventSetWait polls its files every 5 ms while it waits (its own cost, not NVML's, which blocks
    in the kernel), so by default the poller's health wait is a plain sleep, as on a GPU without events."""
    lines = ["driver_version 550.54.15", "cuda_version 12040"]
    for i in range(n):
        lines += ["device", f"uuid GPU-{i:08x}-0000-0000-0000-bench0000000", "name NVIDIA H100 80GB HBM3",
                  f"serial 16509230{i:05d}", f"pci_bus_id 00000000:{0x18 + i:02X}:00.0", f"minor {i}",
                  "mem_total 85899345920", "mem_used 2147483648", "gpu_util 63", "mem_util 20", "temperature 51",
                  "power_mw 312250", "energy_mj 123456789", "sm_clock 1980", "mem_clock 2619", "pcie_replay 0",
                  *[f"process compute {pid} 1073741824" for pid in pids[2 * i:2 * i + 2]],
                  *([] if events else ["event_types 0x10000"])]  # a bit the fake has not: none
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# -- the child: one poller, measured ----------------------------------------------------------------


def child(seconds: float, interval: float, library: str) -> dict:
    import orjson

    from agent.config import DevicesConfig
    from agent.devices import build
    from agent.devices.nvidia import NvidiaBackend
    from agent.outputs import record

    counts = {"records": 0, "samples": 0}
    sink = open(os.devnull, "wb")  # noqa: SIM115 (the child's lifetime)

    def emit(ev) -> None:  # what the agent does with a record before its outputs' I/O: flatten, encode
        rec = record.flatten(ev)
        sink.write(orjson.dumps(rec) + b"\n")
        counts["records"] += 1
        counts["samples"] += ev.name == "device.sample"

    cpu = time.process_time  # every thread of the process, in ns resolution (os.times counts 10 ms ticks)

    # baseline: this process, imports done, idle for the same window
    c0, w0 = cpu(), time.monotonic()
    time.sleep(seconds)
    base = (cpu() - c0) / (time.monotonic() - w0)
    cfg = DevicesConfig(interval_s=interval, call_timeout_s=5.0, inventory_interval_s=60.0)
    backend = NvidiaBackend(library=library)
    p = build(cfg, emit, backends=[backend])
    p.start()
    p.wait_open(30)
    time.sleep(min(interval, 1.0) + 0.2)  # the first round (inventory, first samples) is not the steady state
    s0, c0, w0 = counts["samples"], cpu(), time.monotonic()
    time.sleep(seconds)
    c1, w1, s1 = cpu(), time.monotonic(), counts["samples"]
    devices = p.snapshot()
    p.stop()
    # the binding alone: one device's sample in a loop (the driver call, pynvml, our Reading)
    dev = devices[0].info.device
    backend.open()
    n, t0, k0 = 0, time.perf_counter(), cpu()
    while time.perf_counter() - t0 < 2.0:
        backend.sample(dev)
        n += 1
    alone_cpu = (cpu() - k0) / n
    alone_wall = (time.perf_counter() - t0) / n
    backend.close()
    return {"devices": len(devices), "samples": s1 - s0, "window_s": w1 - w0, "cpu_s": c1 - c0,
            "base_share": base, "alone_cpu_s": alone_cpu, "alone_wall_s": alone_wall,
            "sample_s": [st.sample_s for st in devices]}


def run_child(seconds: float, interval: float, library: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.devices", "--child", str(seconds), str(interval), library],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=seconds * 3 + 120)
    if out.returncode != 0:
        raise SystemExit(f"bench child failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(r: dict, interval: float) -> None:
    share = r["cpu_s"] / r["window_s"]
    added = max(0.0, share - r["base_share"])
    per = r["cpu_s"] / max(1, r["samples"])
    print(f"  {r['devices']} devices at {interval:g} s: {r['samples']} samples in {r['window_s']:.1f} s")
    print(f"  CPU per sample per device (poller + flatten + JSON): {per * 1e6:.0f} us")
    print(f"  the agent's added CPU: {added * 100:.3f} % of one core (idle child {r['base_share'] * 100:.3f} %)"
          f"   target < 0.5 %")
    print(f"  one sample in the binding alone: {r['alone_cpu_s'] * 1e6:.0f} us CPU, "
          f"{r['alone_wall_s'] * 1e6:.0f} us wall")
    ss = sorted(r["sample_s"])
    if ss:
        print(f"  time in the driver per sample (poller's view): median {ss[len(ss) // 2] * 1e6:.0f} us, "
              f"max {ss[-1] * 1e6:.0f} us")


# -- a real GPU machine: inventory and nvidia-smi beside us ----------------------------------------------

# nvidia-smi --query-gpu field -> (what we call it, how to get ours from (info, reading values))
SMI_FIELDS = [
    ("index", lambda i, v: i.device.index),
    ("uuid", lambda i, v: i.device.uuid),
    ("name", lambda i, v: i.device.model),
    ("pci.bus_id", lambda i, v: i.device.pci_bus_id),
    ("serial", lambda i, v: i.serial),
    ("driver_version", lambda i, v: i.driver_version),
    ("memory.total", lambda i, v: i.memory_total // MIB if i.memory_total is not None else None),
    ("memory.used", lambda i, v: v.get("mem_used", 0) // MIB if "mem_used" in v else None),
    ("memory.free", lambda i, v: v.get("mem_free", 0) // MIB if "mem_free" in v else None),
    ("utilization.gpu", lambda i, v: v.get("gpu_util")),
    ("utilization.memory", lambda i, v: v.get("mem_util")),
    ("temperature.gpu", lambda i, v: v.get("temperature")),
    ("power.draw", lambda i, v: v.get("power_w")),
    ("power.limit", lambda i, v: i.power_limit_w),
    ("clocks.sm", lambda i, v: v.get("sm_clock")),
    ("clocks.mem", lambda i, v: v.get("mem_clock")),
    ("ecc.mode.current", lambda i, v: i.ecc_mode),
    ("mig.mode.current", lambda i, v: i.mig_mode),
    ("pcie.link.gen.current", lambda i, v: None),  # not ours: a column for the eye
]


def _same(ours, smi: str) -> str:
    if ours in (None, "") or smi in ("[N/A]", "N/A", "[Not Supported]"):
        return "-"
    try:
        a, b = float(ours), float(smi)
        return "yes" if abs(a - b) <= max(1.0, 0.02 * abs(b)) else "NO"
    except (TypeError, ValueError):
        return "yes" if str(ours).strip().lower() == smi.strip().lower() else "NO"


def real_gpu(seconds: float, interval: float) -> None:
    from agent.devices.nvidia import NvidiaBackend

    smi = shutil.which("nvidia-smi")
    b = NvidiaBackend()
    b.open()
    try:
        t0 = time.perf_counter()
        infos = b.inventory(time.time_ns())
        print(f"inventory: {len(infos)} GPUs in {(time.perf_counter() - t0) * 1e3:.1f} ms")
        for i in infos:
            d = i.device
            print(f"  {d.index} {d.uuid} {d.model} {d.pci_bus_id} /dev/nvidia{d.minor} serial={i.serial} "
                  f"driver={i.driver_version} cuda={i.cuda_version} mem={(i.memory_total or 0) // MIB}MiB "
                  f"power_limit={i.power_limit_w}W ecc={i.ecc_mode} mig={i.mig_mode} "
                  f"mig_devices={[m.uuid for m in i.mig_devices]}")
        costs = []
        for i in infos:
            t0 = time.perf_counter()
            for _ in range(20):
                b.sample(i.device)
            costs.append((time.perf_counter() - t0) / 20)
        print("sampling cost per device (wall, 20 samples each): "
              + ", ".join(f"gpu{i.device.index} {c * 1e3:.2f} ms" for i, c in zip(infos, costs, strict=True)))
        if smi is None:
            print("nvidia-smi not found: no side-by-side table")
            return
        query = ",".join(f for f, _ in SMI_FIELDS)
        readings = {i.device.uuid: b.sample(i.device) for i in infos}  # the same moment, give or take ms
        out = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=60)
        rows = [[c.strip() for c in ln.split(",")] for ln in out.stdout.strip().splitlines()]
        for i in infos:
            row = next((r for r in rows if len(r) > 1 and r[1] == i.device.uuid), None)
            print(f"\nGPU {i.device.index} ({i.device.uuid}): ours | nvidia-smi | same")
            if row is None:
                print(f"  nvidia-smi did not list it: {out.stdout[:200]!r} {out.stderr[:200]!r}")
                continue
            vals = readings[i.device.uuid].values
            for (field, get), smi_val in zip(SMI_FIELDS, row, strict=False):
                ours = get(i, vals)
                print(f"  {field:<22} {ours!s:<40} {smi_val:<40} {_same(ours, smi_val)}")
            r = readings[i.device.uuid]
            print(f"  throttle reasons: {', '.join(r.throttle) or 'none'}; processes: {list(r.processes)}; "
                  f"failed readings: {r.errors}")
    finally:
        b.close()
    print(f"\npoller on this node's GPUs, {interval:g} s interval, {seconds:g} s:")
    report(run_child(seconds, interval, "", dict(os.environ)), interval)


def fake_gpus(seconds: float, interval: float, n: int, events: bool = False) -> None:
    from tests.devices.build import fake_nvml

    lib = fake_nvml()
    sleepers = [subprocess.Popen(["sleep", str(seconds * 3 + 120)]) for _ in range(2 * n)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "nvml.conf")
            write_fake_config(cfg, n, [s.pid for s in sleepers], events)
            env = {**os.environ, "LD_LIBRARY_PATH": str(lib.parent), "FAKE_NVML_CONFIG": cfg}
            print(f"fake NVML ({lib}), {n} GPUs with 2 processes each, {seconds:g} s window, "
                  f"{'the fake event wait (it polls every 5 ms)' if events else 'no NVML events'}:")
            report(run_child(seconds, interval, str(lib), env), interval)
    finally:
        for s in sleepers:
            s.kill()
            s.wait()


def _agent_cpu(env: dict, seconds: float) -> tuple[float, int]:
    """CPU seconds a `nodewarden run` spends over `seconds` once it is ready, and its device.sample lines."""
    p = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--json", "--no-containers", "--families",
                          "process"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    lines: list[bytes] = []
    try:
        for line in p.stdout:
            if b'"agent.ready"' in line:
                break
        import threading

        t = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
        t.start()
        time.sleep(2.0)  # the devices' first round
        tick = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        n0, c0 = len(lines), cpu()
        time.sleep(seconds)
        c1, n1 = cpu(), len(lines)
    finally:
        p.terminate()
        p.wait(timeout=30)
    return c1 - c0, sum(b'"device.sample"' in ln for ln in lines[n0:n1])


def agent_added(seconds: float, n: int) -> None:
    """The whole agent (root: BPF), devices on (fake GPUs) against off, on a quiet machine."""
    from tests.devices.build import fake_nvml

    lib = fake_nvml()
    sleepers = [subprocess.Popen(["sleep", str(seconds * 3 + 300)]) for _ in range(2 * n)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "nvml.conf")
            write_fake_config(cfg, n, [s.pid for s in sleepers])
            base = {**os.environ, "NODEWARDEN_AGENT_STATE_DIR": os.path.join(tmp, "state")}
            on = {**base, "LD_LIBRARY_PATH": str(lib.parent), "FAKE_NVML_CONFIG": cfg,
                  "NODEWARDEN_DEVICES_INTERVAL_S": "1", "NODEWARDEN_DEVICES_BACKENDS": "nvidia"}
            off = {**base, "NODEWARDEN_DEVICES_ENABLED": "false"}
            c_off, _ = _agent_cpu(off, seconds)
            c_on, samples = _agent_cpu(on, seconds)
            print(f"whole agent (nodewarden run --json, process probes, quiet machine), {seconds:g} s each:")
            print(f"  devices off: {c_off / seconds * 100:.2f} % of one core; {n} fake GPUs at 1 s: "
                  f"{c_on / seconds * 100:.2f} % ({samples} device.sample lines)")
            print(f"  added: {(c_on - c_off) / seconds * 100:.2f} % of one core   target < 0.5 % "
                  "(clock-tick resolution: +-0.1 % over 20 s)")
    finally:
        for s in sleepers:
            s.kill()
            s.wait()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.devices")
    ap.add_argument("--real", action="store_true", help="this node's GPUs and driver, beside nvidia-smi")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--agent", action="store_true", help="also the whole agent, devices on against off (root)")
    ap.add_argument("--events", action="store_true", help="fake GPUs with NVML events (the fake's wait polls)")
    ap.add_argument("--child", nargs=3, metavar=("SECONDS", "INTERVAL", "LIBRARY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(float(args.child[0]), float(args.child[1]), args.child[2])))
        return
    if args.real:
        real_gpu(args.seconds, args.interval)
    else:
        fake_gpus(args.seconds, args.interval, args.devices, args.events)
        if args.agent or os.geteuid() == 0:
            agent_added(args.seconds, args.devices)


if __name__ == "__main__":
    main()
