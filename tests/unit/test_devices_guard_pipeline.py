"""The real Pipeline on a replay source (agent/sensors/replay.py) hands the device guard its file events: a
container's open of /dev/nvidia3 (its cgroup resolved through the container table) comes back as a
device.unauthorized_open alert through Pipeline.emit, right behind the open's own record; other files and
the host's opens raise nothing; with the guard off the pipeline never calls it."""

from __future__ import annotations

import time

from agent.config import DeviceGuardConfig
from agent.devices.guard import OPEN_RULE, DeviceGuard, NullDeviceGuard
from agent.enrich.container_table import ContainerTable
from agent.enrich.enricher import ContainerResolver
from agent.outputs.metrics import Metrics
from agent.pipeline import Pipeline
from agent.sensors.replay import ReplayProbes
from tests.unit.replay_records import exec_rec, open_rec
from tests.unit.test_pipeline import CG, CID, Sink, _config, _container

BATCHES = [[exec_rec("/bin/sh", ["sh", "-c", "x"], cgroup_id=CG), open_rec("/dev/nvidia3", cgroup_id=CG),
            open_rec("/tmp/x", cgroup_id=CG), open_rec("/dev/nvidia0")]]  # the last one: a host process


def _pipeline(guard_factory):
    table = ContainerTable()
    _container(table)
    sink = Sink()
    holder = {}
    guard = guard_factory(lambda ev: holder["p"].emit(ev))
    p = holder["p"] = Pipeline(_config(), [sink], metrics=Metrics(), containers=ContainerResolver(table),
                               probes=ReplayProbes(BATCHES), device_guard=guard)
    return p, sink, guard


def test_container_device_open_alerts_through_the_pipeline():
    p, sink, guard = _pipeline(lambda emit: DeviceGuard(DeviceGuardConfig(pod_resources_socket=""), emit,
                                                        spec_source=lambda ns, cid: {"process": {"env": []}}))
    guard.start()
    p.start()
    try:
        (alert,) = sink.wait_for(lambda r: r["event.name"] == "alert")
        time.sleep(0.3)  # anything else would have come by now
    finally:
        p.stop()
        guard.stop()
    assert (alert["rule.id"], alert["container.id"], alert["file.path"]) == (OPEN_RULE, CID, "/dev/nvidia3")
    assert [r["rule.id"] for r in sink.records if r["event.name"] == "alert"] == [OPEN_RULE]
    assert guard.counts["opens"] == 1  # /tmp/x and the host's open never reached its queue
    assert p.metrics.alerts.labels(OPEN_RULE, "high")._value.get() == 1


def test_guard_off_is_never_called():
    p, sink, guard = _pipeline(lambda emit: NullDeviceGuard())
    assert p._devguard is None
    p.start()
    try:
        sink.wait_for(lambda r: r.get("file.path") == "/dev/nvidia0")
    finally:
        p.stop()
    assert "alert" not in sink.names()
