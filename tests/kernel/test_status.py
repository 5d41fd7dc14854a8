"""`nodewarden status`: the kernel's points are found by loading programs; a running agent reports its own."""

import os

import orjson

from agent.commands.status import collect
from agent.enforce.points import probe_kernel


def test_kernel_points_are_probed():
    points = probe_kernel()
    assert set(points) == {"kernel_exec_kill", "bpf_lsm", "fentry"}
    assert points["kernel_exec_kill"]["available"] is True  # DESIGN.md: tracepoints + bpf_send_signal load here
    for st in points.values():
        assert st["detail"]


def test_status_reads_a_running_agents_report(tmp_path):
    rep = {"pid": os.getpid(), "started": 1.0, "enforcement": {
        "kernel_exec_kill": {"active": True, "detail": "2 deny_exec rules (block), drift block, 3 containers covered"}}}
    (tmp_path / "status.json").write_bytes(orjson.dumps(rep))
    out = collect(str(tmp_path), probe=False)
    assert out["agent"]["running"] and out["agent"]["pid"] == os.getpid()
    assert out["points"]["kernel_exec_kill"]["active"] is True
    assert out["points"]["nri"]["active"] is False and out["points"]["nri"]["detail"]


def test_status_without_agent(tmp_path):
    (tmp_path / "status.json").write_bytes(orjson.dumps({"pid": 999999999}))  # a dead agent's leftover
    out = collect(str(tmp_path), probe=False)
    assert out["agent"] == {"running": False}
