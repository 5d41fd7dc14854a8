"""`nodewarden devices`: this node's GPUs and XPUs, like nvidia-smi's summary, with their health and the
containers using each one.

From the running agent's status.json (its device poller's state, and the device guard's recent device-node
opens from containers) when an agent runs; else the backends are opened here, once (inventory and one
sample per device, no health events, processes without containers: there is no container table), the
whole read under --timeout so that a hung driver cannot hang the command.
"""

from __future__ import annotations

import sys
import threading
import time

import orjson

from agent.commands.status import read_agent

NAME = "devices"
HELP = "show this node's GPUs/XPUs (health, memory, power, the containers using them), like nvidia-smi"

MIB = 1024 * 1024


def add_arguments(p) -> None:
    p.add_argument("--state-dir", default="/var/lib/nodewarden", help="the agent's state dir (default %(default)s)")
    p.add_argument("--config", metavar="FILE", help="YAML config file (devices: backends), for the direct read")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--direct", action="store_true", help="open the drivers here even when an agent runs")
    p.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                   help="longest the direct read may take (default %(default)s)")


def from_agent(state_dir: str) -> dict | None:
    rep = read_agent(state_dir)
    if not rep or "devices" not in rep:
        return None
    dev = rep.get("devices") or {}
    return {"source": f"agent pid {rep.get('pid')}", "backends": dev.get("backends", []),
            "devices": dev.get("devices", []), "device_guard": rep.get("device_guard") or {"enabled": False}}


def _read_backend(backend, out: dict) -> None:
    """One backend's inventory and one sample of each device, as the poller's status entries (filled in
    `out` as it goes, so what was read before a hang is still shown)."""
    from agent.devices.base import DeviceError, NoDriver
    from agent.devices.poller import Attributor, DeviceState, state_dict
    from agent.events import DeviceSampleEvent

    entry = out["backend"]
    try:
        backend.open()
    except NoDriver as e:
        entry.update(state="no driver", reason=str(e))
        return
    except Exception as e:  # a driver that fails to start: say so, never a traceback
        entry.update(state="error", reason=f"{type(e).__name__}: {e}")
        return
    entry["state"] = "open"
    try:
        users = Attributor(None)
        for info in backend.inventory(time.time_ns()):
            st = DeviceState(info=info)
            try:
                r = backend.sample(info.device)
                procs = tuple(users.user(pid, used, mig) for pid, used, mig in r.processes)
                st.sample = DeviceSampleEvent(time.time_ns(), info.device, dict(r.values), r.throttle, procs,
                                              tuple(r.errors))
                st.users = {(u.pid, u.mig): u for u in procs}
            except DeviceError as e:
                st.health = "error"
                st.errors[str(e)[:120]] += 1
            out["devices"].append(state_dict(st))
    except DeviceError as e:
        entry.update(state="error", reason=str(e))
    finally:
        try:
            backend.close()
        except Exception:  # best effort, as the poller's close
            pass


def direct(cfg, timeout: float) -> dict:
    """Open each configured backend here, each in a thread of its own under the time limit."""
    from agent.devices import BuildError, make_backend

    backends, devices = [], []
    for name in dict.fromkeys(cfg.devices.backends):
        entry = {"vendor": name, "state": "", "reason": ""}
        backends.append(entry)
        try:
            backend = make_backend(name, cfg.devices)
        except (BuildError, ImportError) as e:
            entry.update(state="no driver" if isinstance(e, ImportError) else "error", reason=str(e))
            continue
        out = {"backend": entry, "devices": []}
        t = threading.Thread(target=_read_backend, args=(backend, out), name=f"nw-devread-{name}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():  # stuck in the driver: the daemon thread goes with the process
            entry.update(state="unresponsive", reason=f"the driver did not answer within {timeout:g} s")
        devices += out["devices"]
    return {"source": "direct", "backends": backends, "devices": devices, "device_guard": {"enabled": False}}


def _mib(v) -> str:
    return f"{int(v) // MIB}MiB" if isinstance(v, int | float) else "-"


def _num(v, unit: str, fmt: str = "{:.0f}") -> str:
    return (fmt.format(v) + unit) if isinstance(v, int | float) else "-"


def _users(d: dict, opens: list[dict]) -> str:
    """The containers using device d: those its processes belong to, then those the device guard saw open its
    node (/dev/nvidiaN, /dev/xpuN); "host" for host processes, "-" for none."""
    names: dict[str, None] = {}
    for p in d.get("processes", []):
        c = p.get("container_id", "")
        names[(p.get("container_name") or c[:12]) if c else "host"] = None
    node = f"/dev/{'xpu' if d['vendor'] == 'kunlun' else 'nvidia'}{d.get('minor', -1)}"
    for o in opens:
        if o.get("path") == node and o.get("container_id"):
            names[o.get("container_name") or o["container_id"][:12]] = None
    return ",".join(names) or "-"


def render(rep: dict) -> str:
    lines = [f"source: {rep['source']}"]
    for b in rep["backends"]:
        lines.append(f"  {b['vendor']}: {b['state'] or '?'}{'  (' + b['reason'] + ')' if b.get('reason') else ''}")
    devs = sorted(rep["devices"], key=lambda d: (d["vendor"], d["index"]))
    if not devs:
        lines.append("no devices")
    else:
        opens = (rep.get("device_guard") or {}).get("opens", [])
        lines.append(f"{'DEV':<10} {'NAME':<26} {'BUS-ID':<17} {'TEMP':>5} {'POWER / CAP':>13} "
                     f"{'MEMORY USED / TOTAL':>21} {'UTIL':>5}  {'HEALTH':<12} CONTAINERS")
        for d in devs:
            v = d.get("values") or {}
            total = d.get("memory_total") or v.get("mem_total")
            cap = d.get("power_limit_w")
            health = d.get("health", "?") + (f" (xid {d['last_xid']})" if d.get("last_xid") else "")
            lines.append(f"{d['vendor'][:6] + ' ' + str(d['index']):<10} {d.get('model', '')[:26]:<26} "
                         f"{d.get('pci_bus_id', '')[:17]:<17} {_num(v.get('temperature'), 'C'):>5} "
                         f"{_num(v.get('power_w'), 'W') + ' / ' + _num(cap, 'W'):>13} "
                         f"{_mib(v.get('mem_used')) + ' / ' + _mib(total):>21} {_num(v.get('gpu_util'), '%'):>5}  "
                         f"{health:<12} {_users(d, opens)}")
        procs = [(d, p) for d in devs for p in d.get("processes", [])]
        lines.append("")
        lines.append("processes:" if procs else "processes: none")
        for d, p in procs:
            c = p.get("container_id", "")
            who = f"{p.get('container_name') or c[:12]} ({c[:12]})" if c else "host"
            pod = f"  pod {p['namespace']}/{p['pod']}" if p.get("pod") else ""
            mig = f" mig {p['mig']}" if p.get("mig") else ""
            lines.append(f"  {d['vendor'][:6]} {d['index']}{mig}  pid {p['pid']:<8} {p.get('comm', '')[:16]:<16} "
                         f"{_mib(p.get('used_memory')):>9}  {who}{pod}")
    g = rep.get("device_guard") or {}
    if g.get("enabled"):
        lines.append("")
        lines.append(f"device guard: allocations from the kubelet ({g.get('kubelet', '?')}), else the OCI spec; "
                     f"{g.get('alerts', 0)} alerts")
        for o in g.get("opens", [])[-10:]:
            pod = f" pod {o['namespace']}/{o['pod']}" if o.get("pod") else ""
            lines.append(f"  {o['path']:<16} opened by pid {o['pid']} in {o.get('container_name') or ''} "
                         f"({o['container_id'][:12]}){pod}{'' if o.get('ret', 0) >= 0 else ' (refused)'}")
    return "\n".join(lines)


def main(args) -> int:
    from agent import config

    rep = None if args.direct else from_agent(args.state_dir)
    if rep is None:
        try:
            cfg = config.load(args.config)
        except config.ConfigError as e:
            print(f"nodewarden devices: {e}", file=sys.stderr)
            return 2
        rep = direct(cfg, args.timeout)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rep, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(rep))
    return 0
