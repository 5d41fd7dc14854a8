"""`nodewarden status`: the enforcement points active on this node, and why the others are not."""

from __future__ import annotations

import os
import sys
import time

import orjson

NAME = "status"
HELP = "show which enforcement points are active on this node (NRI, OCI gate, in-kernel kill, BPF-LSM) and why"

STATUS_FILE = "status.json"  # written by a running agent into its state dir


def add_arguments(p) -> None:
    p.add_argument("--state-dir", default="/var/lib/nodewarden", help="the agent's state dir (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--no-probe", action="store_true", help="do not load test BPF programs (faster)")


def read_agent(state_dir: str) -> dict:
    """The running agent's own report, or {} when none runs."""
    try:
        with open(os.path.join(state_dir, STATUS_FILE), "rb") as f:
            rep = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return {}
    pid = rep.get("pid", 0)
    if not pid or not os.path.exists(f"/proc/{pid}"):
        return {}
    return rep


def collect(state_dir: str, probe: bool = True) -> dict:
    agent = read_agent(state_dir)
    points: dict[str, dict] = {}
    if probe:
        from agent.enforce.points import probe_kernel

        for name, st in probe_kernel().items():
            points[name] = {"active": False, "available": st["available"], "detail": st["detail"]}
    for name, st in (agent.get("enforcement") or {}).items():
        points.setdefault(name, {"available": True}).update(st)
    if not agent:
        for st in points.values():
            if st.get("available"):
                st["detail"] = "available; no agent is running here to use it"
    nri_sock = "/var/run/nri/nri.sock"
    points.setdefault("nri", {"active": False, "available": os.path.exists(nri_sock),
                              "detail": f"{nri_sock} exists" if os.path.exists(nri_sock) else
                              f"no {nri_sock}: containerd < 1.7, or NRI disabled in its config"})
    points.setdefault("oci_gate", {"active": False, "available": True,
                                   "detail": "not served: start the agent with the gate enabled (docs/ocigate.md)"})
    return {"agent": {"running": bool(agent), **({k: agent[k] for k in ("pid", "started") if k in agent})},
            "points": points}


def main(args) -> int:
    rep = collect(args.state_dir, probe=not args.no_probe)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rep, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    a = rep["agent"]
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["started"])) if a.get("started") else ""
    print(f"agent: {'running, pid ' + str(a['pid']) + ' since ' + since if a['running'] else 'not running'}")
    for name, st in sorted(rep["points"].items()):
        state = "ACTIVE" if st.get("active") else ("available" if st.get("available") else "unavailable")
        print(f"  {name:<18} {state:<12} {st.get('detail', '')}")
    return 0
