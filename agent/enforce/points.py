"""Which enforcement points this node can use, found by trying them, and why the others cannot be.

DESIGN.md: tracepoint, raw_tracepoint and tp_btf programs load on the CI kernel while fentry and
BPF-LSM programs are refused (EPERM), though they may load on real nodes; so each point is checked
by loading a minimal program, not assumed from the kernel version.
"""

from __future__ import annotations

import contextlib
import os

_PROGRAMS = {
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


@contextlib.contextmanager
def _quiet_stderr():
    """libbcc prints the verifier's refusal on fd 2; the status says it in one line instead."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def probe_kernel(cache_dir: str = "/var/cache/nodewarden") -> dict[str, dict]:
    """{point: {"available": bool, "detail": str}} for the BPF-based points, by loading each."""
    from agent.kernel import headers

    out: dict[str, dict] = {}
    try:
        headers.ensure_tracefs()
        src = headers.kernel_source(cache_dir)
        if src:
            os.environ["BCC_KERNEL_SOURCE"] = src
        from bcc import BPF
    except Exception as e:  # no bcc, no headers: every BPF point is out, for the same reason
        return {name: {"available": False, "detail": f"cannot compile BPF here: {e}"} for name in _PROGRAMS}
    for name, text in _PROGRAMS.items():
        try:
            with _quiet_stderr():
                b = BPF(text=text)
            b.cleanup()
            out[name] = {"available": True, "detail": "a test program loaded and attached"}
        except Exception as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if "super-user" in msg or "Permission" in msg or "EPERM" in msg:
                msg = "the kernel refused the program (EPERM)"
            out[name] = {"available": False, "detail": msg}
    ok, detail = _lsm_enabled()
    if out["bpf_lsm"]["available"] and not ok:
        out["bpf_lsm"] = {"available": False, "detail": detail}
    elif not out["bpf_lsm"]["available"]:
        out["bpf_lsm"]["detail"] += f"; {detail}"
    return out
