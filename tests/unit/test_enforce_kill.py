"""VerdictHandler, the image gate's emit callback: report every verdict, kill a running container only on
its image's block verdict, never on a timeout verdict (issue 9, found with containerd 2.x: on_timeout block
killed running pods, their sandboxes too, while their scans were still going)."""

from __future__ import annotations

from agent.enforce.kill import ContainerKiller, VerdictHandler
from agent.enrich.container_table import ContainerTable
from agent.events import EnforcementEvent, Verdict, VerdictEvent


class FakeContainerd:
    """containerd's Tasks.Kill, recorded (a stand-in for the external runtime, not our code)."""

    def __init__(self, fail: str = ""):
        self.kills: list[tuple] = []
        self.fail = fail

    def kill(self, namespace, container_id, signal=9, all=False):
        if self.fail:
            raise ConnectionError(self.fail)
        self.kills.append((namespace, container_id, signal, all))

    def close(self):
        pass


def _world(fail: str = ""):
    table = ContainerTable()

    def running(e):
        e.cgroup_id, e.state, e.image, e.pid = 7, "running", "reg.example/bad:1", 4242
        return "task"

    info = table.update("k8s.io", "c1", running)
    client = FakeContainerd(fail)
    out: list = []
    return VerdictHandler(out.append, table, None, ContainerKiller(lambda: client)), info, client, out


def test_block_verdict_kills_the_running_container():
    handler, info, client, out = _world()
    handler(VerdictEvent(1, Verdict("block", "malware EICAR"), info))
    assert client.kills == [("k8s.io", "c1", 9, True)]
    assert isinstance(out[0], VerdictEvent) and isinstance(out[1], EnforcementEvent)
    assert (out[1].point, out[1].outcome, out[1].container.id) == ("containerd.kill", "killed", "c1")


def test_timeout_verdict_reports_but_does_not_kill():
    handler, info, client, out = _world()
    handler(VerdictEvent(1, Verdict("block", "scan not finished after 0.2s (on_timeout.action block)",
                                    timed_out=True), info))
    assert client.kills == [] and len(out) == 1  # reported; the full verdict decides
    handler(VerdictEvent(2, Verdict("allow", "no findings"), info))
    assert client.kills == []


def test_a_failed_kill_is_reported_with_why():
    handler, info, _, out = _world(fail="containerd is away")
    handler(VerdictEvent(1, Verdict("block", "malware EICAR"), info))
    assert out[1].outcome == "kill failed: containerd is away"
