"""Which enforcement points this node can use, found by trying them, and why the others cannot be.

DESIGN.md: tracepoint, raw_tracepoint and tp_btf programs load on the CI kernel while fentry and
BPF-LSM programs are refused (EPERM), though they may load on real nodes; so each point is checked
by loading a minimal program, not assumed from the kernel version. The programs load in the probe
loader child (agent/sensors/childload.py, mode "points"), so asking never maps LLVM into the agent.
"""

from __future__ import annotations

import os

PROGRAMS = {
    # The in-kernel exec kill: a tracepoint program that may call bpf_send_signal().
    "kernel_exec_kill": "TRACEPOINT_PROBE(sched, sched_process_exec) { if (bpf_get_current_pid_tgid() == 1) "
                        "bpf_send_signal(9); return 0; }",
    "bpf_lsm": "LSM_PROBE(bprm_check_security, struct linux_binprm *bprm) { return 0; }",
    "fentry": "KFUNC_PROBE(do_exit) { return 0; }",
}


def _lsm_enabled() -> tuple[bool, str]:
    try:
        with open("/sys/kernel/security/lsm") as f:
            lsms = f.read().strip()
    except OSError:
        return False, "securityfs not mounted: cannot read the active LSM list"
    if "bpf" not in lsms.split(","):
        return False, f"'bpf' is not in the active LSMs ({lsms}); boot with lsm=...,bpf"
    return True, lsms


def probe_kernel(cache_dir: str = "/var/cache/nodewarden") -> dict[str, dict]:
    """{point: {"available": bool, "detail": str}} for the BPF-based points, by loading each in the probe
    loader child (agent/sensors/childload.py): bcc and LLVM never enter this process, and libbcc's
    refusal text goes to the log at debug level while the status says it in one line."""
    from agent.sensors import childload

    try:
        reply, fds = childload.run({"mode": "points", "cache_dir": os.path.abspath(cache_dir), "programs": PROGRAMS})
        for fd in fds:  # none are sent for points; closed should a future child send any
            os.close(fd)
        out = {name: dict(reply["points"][name]) for name in PROGRAMS}
    except (childload.ChildError, KeyError, TypeError) as e:
        return {name: {"available": False, "detail": f"cannot compile BPF here: {e}"} for name in PROGRAMS}
    ok, detail = _lsm_enabled()
    if out["bpf_lsm"]["available"] and not ok:
        out["bpf_lsm"] = {"available": False, "detail": detail}
    elif not out["bpf_lsm"]["available"]:
        out["bpf_lsm"]["detail"] += f"; {detail}"
    return out
