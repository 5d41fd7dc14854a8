"""Re-judging what runs (issue 16): a running container whose image turns vulnerable after `nodewarden db import`
gets a new image.verdict, with the previous verdict beside it, without restarting anything; killed only where the
policy's `rejudge.action` says kill. Real containerd (Debian's), real watcher, real `db import` through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from agent.enforce.kill import ContainerKiller, VerdictHandler
from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher
from agent.enrich.containerd_client import ContainerdClient
from agent.events import EnforcementEvent, VerdictEvent
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.service import GateService
from agent.policy.store import PolicyStore
from tests.harness.containerd import unique_id, wait_until
from tests.unit.imagegate_helpers import DPKG_STATUS, OS_RELEASE_DEBIAN, osv_advisory

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# ctr's spec runs as root without seccomp: baseline findings alert; off here, so the first verdict is allow
POLICY = "on_timeout: {after: 20s, action: allow}\ncategories: {baseline: {alert: off}}\n"
VULN_FILES = {"/var/lib/dpkg/status": DPKG_STATUS, "/etc/os-release": OS_RELEASE_DEBIAN}


class World:
    def __init__(self, containerd, image_builder, tmp_path, policy_text: str):
        self.containerd = containerd
        self.image = image_builder(f"nodewarden.test/rejudge-{unique_id('i')}:1", VULN_FILES)
        self.db = tmp_path / "advisories"
        self.src = tmp_path / "osv"
        self.src.mkdir()
        policy = self.policy_path = tmp_path / "policy.yaml"
        policy.write_text(policy_text)
        self.events: list = []
        self.lock = threading.Lock()
        self.table = ContainerTable()
        factory = lambda: ContainerdClient(str(containerd.socket))  # noqa: E731
        self.policy = PolicyStore(str(policy))
        handler = VerdictHandler(self._emit, self.table, killer=ContainerKiller(factory), policy=self.policy)
        cfg = ImageGateConfig(cache_path=str(tmp_path / "cache.db"), advisory_db=str(self.db), refresh_interval=0.2)
        self.gate = GateService(cfg, self.policy, factory, handler, running=self.table.snapshot)
        self.table.add_listener(self.gate.on_container)
        self.watcher = ContainerWatcher(
            ContainerdConfig(socket=str(containerd.socket), namespaces=(containerd.namespace,)), self.table)
        self.cid = unique_id("rj")

    def _emit(self, ev) -> None:
        with self.lock:
            self.events.append(ev)

    def verdicts(self) -> list:
        with self.lock:
            return [e.verdict for e in self.events if isinstance(e, VerdictEvent) and e.container is not None
                    and e.container.id == self.cid]

    def start(self):
        self.gate.start()
        self.watcher.start()
        self.containerd.run(self.image, "sleep", "120", cid=self.cid)
        first = wait_until(lambda: self.verdicts() or None, timeout=60)
        assert first and first[0].verdict == "allow" and first[0].previous == "", first  # no advisories yet
        return first[0]

    def import_advisory(self) -> None:
        adv = osv_advisory("DSA-5678-1", "Debian:12", "openssl", "3.0.13-1~deb12u1", "critical")
        (self.src / "dsa.json").write_text(json.dumps(adv))
        r = subprocess.run([sys.executable, "-m", "agent.cli", "db", "import", str(self.src), "--db", str(self.db)],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr

    def task_pid(self) -> int:
        info = self.table.lookup(self.containerd.namespace, self.cid)
        return info.pid if info is not None and info.state == "running" else 0

    def stop(self):
        self.watcher.stop()
        self.gate.stop()
        self.containerd.remove(self.cid)


def test_a_running_container_is_judged_again_after_db_import(containerd, image_builder, tmp_path):
    w = World(containerd, image_builder, tmp_path, POLICY)
    try:
        w.start()
        pid = wait_until(lambda: w.task_pid() or None, timeout=20)
        assert pid
        w.import_advisory()
        got = wait_until(lambda: [v for v in w.verdicts() if v.previous] or None, timeout=30)
        assert got, [(v.verdict, v.reason) for v in w.verdicts()]
        v = got[0]
        assert (v.verdict, v.previous, v.trigger) == ("block", "allow", "advisories"), v
        assert "osv:DSA-5678-1" in v.reason
        # a re-match, not a re-read: every layer came from the cache
        assert v.cache_hit == "layers", v.cache_hit
        # default rejudge.action alert: reported, not killed; the same process still runs
        assert w.task_pid() == pid and os.path.exists(f"/proc/{pid}")
        assert not [e for e in w.events if isinstance(e, EnforcementEvent)]
        assert w.gate.stats()["rejudge_changed"] == 1
        # a policy change is a trigger too: the advisory accepted by a whitelist of the image's digest
        w.policy_path.write_text(POLICY + f"whitelist: {{digests: ['{w.image.manifest_digest}']}}\n")
        assert w.policy.check()
        again = wait_until(lambda: [v for v in w.verdicts() if v.trigger == "policy"] or None, timeout=30)
        assert again and (again[0].verdict, again[0].previous) == ("allow", "block"), again
        assert "whitelisted" in again[0].reason
    finally:
        w.stop()


def test_rejudge_kill_kills_a_newly_blocked_container(containerd, image_builder, tmp_path):
    w = World(containerd, image_builder, tmp_path, POLICY + "rejudge: {action: kill}\n")
    try:
        w.start()
        assert wait_until(lambda: w.task_pid() or None, timeout=20)
        w.import_advisory()
        kills = wait_until(lambda: [e for e in w.events if isinstance(e, EnforcementEvent)] or None, timeout=30)
        assert kills and kills[0].point == "containerd.kill" and kills[0].outcome == "killed", kills
        assert "osv:DSA-5678-1" in kills[0].reason
        assert wait_until(lambda: w.task_pid() == 0, timeout=20)
    finally:
        w.stop()
