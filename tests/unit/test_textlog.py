"""The text view (agent/outputs/log.py TextLog): one readable line per alert, verdict and block."""

from __future__ import annotations

import io

from agent.events import (
    AlertEvent,
    ContainerInfo,
    Decided,
    EnforcementEvent,
    Enriched,
    ExecEvent,
    FileEvent,
    Finding,
    Op,
    ProcInfo,
    Verdict,
    VerdictEvent,
)
from agent.outputs.log import TextLog
from agent.outputs.record import flatten, from_enriched
from agent.vocab import Severity

TS = 1_795_000_000_123_456_789  # 2026-11-18T...:20.123
POD = ContainerInfo(id="ab" * 32, image="nginx:1.25", pod_name="web-0", pod_namespace="shop")
_C = dict(ts_ns=TS, pid=77, tid=77, ppid=1, uid=0, gid=0, cgroup_id=9, mntns=1, comm="cat", truncated=False)
READ = Enriched(FileEvent(op=Op.FILE_OPEN, path="/etc/shadow", path2="", ret=3, flags=0, mode=0, dirfd=-100, fd=3,
                          owner_uid=0, owner_gid=0, **_C),
                ProcInfo(77, 1, "/bin/cat", ("cat", "/etc/shadow"), 0, 0), None, POD)


def _line(typed) -> str:
    out = io.BytesIO()
    TextLog(out).emit([flatten(typed)])
    text = out.getvalue().decode()
    assert text.count("\n") == 1
    return text.rstrip("\n")


def test_alert_line_says_severity_rule_what_and_where():
    line = _line(AlertEvent(TS, "NW-100", "read of shadow", "d", Severity.HIGH, subject=READ, count=3))
    assert line.endswith("alert            HIGH [NW-100] read of shadow: file.open pid=77 cat /etc/shadow "
                         "/etc/shadow (x3) [abababababab nginx:1.25 pod=shop/web-0]")
    line = _line(AlertEvent(TS, "NW-2", "miner", "d", Severity.CRITICAL, output="xmrig in web-0", action="kill"))
    assert line.endswith("alert            CRITICAL [NW-2] miner: xmrig in web-0 action=kill")


def test_verdict_line():
    f = Decided(Finding("malware", Severity.CRITICAL, "eicar", path="/e"), "block", "categories.malware.block")
    line = _line(VerdictEvent(TS, Verdict("block", "malware: eicar in /e", [f], image="evil:1"), POD))
    # the container's own image name first (what it was started as), then the verdict's
    assert line.endswith("image.verdict    BLOCK nginx:1.25: malware: eicar in /e (1 finding) "
                         "[abababababab pod=shop/web-0]")
    line = _line(VerdictEvent(TS, Verdict("block", "scan timed out", image="big:1", timed_out=True)))
    assert line.endswith("image.verdict    BLOCK big:1: scan timed out (0 findings) timed out")


def test_enforcement_line():
    shell = Enriched(ExecEvent(op=Op.EXEC, filename="/bin/sh", argv=("sh", "-c", "id"), **_C), None, None, POD)
    line = _line(EnforcementEvent(TS, "kernel.exec", "kill", "deny_exec /bin/sh", outcome="killed", subject=shell))
    assert line.endswith("enforcement.block kill at kernel.exec: deny_exec /bin/sh -> killed pid=77 sh -c id "
                         "[abababababab nginx:1.25 pod=shop/web-0]")


def test_kernel_event_line_unchanged():
    out = TextLog.format(from_enriched(READ))
    assert out.endswith("file.open        pid=77 ppid=1 uid=0 cat [abababababab nginx:1.25]: /etc/shadow ret=3")


def test_profile_change_line():
    from agent.events import ProfileChange

    line = _line(ProfileChange(TS, "shop/Deployment/web/app@sha256:ab", "protecting", "learning", "locked by user",
                               items=(("exec", 12), ("edge", 20))))
    assert line.endswith("profile.change   shop/Deployment/web/app@sha256:ab: learning -> protecting "
                         "(locked by user); exec 12 edge 20")
