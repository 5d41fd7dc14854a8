"""The whole agent on a node: the event pipeline plus the services beside it, each only when configured.

    containerd watcher -> container table -> attribution (pipeline), exec-rule coverage (enforce),
                                             image gate (verdicts, post-start kill, flagged files)
    policy store (hot reload) -> image gate, in-kernel exec rules
    NRI plugin -> image gate (pre-start verdicts)
    exporter -> collector (embedded or remote); metrics server; status.json for `nodewarden status`

Start order: collector, exporter, watcher (first listing), probes, rules, gates; stop in reverse.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from agent.config import Config
from agent.ledger import Ledger
from agent.outputs import record
from agent.outputs.metrics import Metrics
from agent.pipeline import Output, Pipeline

log = logging.getLogger("nodewarden")


class Agent:
    def __init__(self, cfg: Config, log_output: Output):
        self.cfg = cfg
        self.metrics = Metrics()
        self.collector = None  # the embedded collector's handle
        self.exporter = None
        self.watcher = None
        self.containers = None
        self.enforcer = None  # in-kernel exec rules
        self.policy = None  # PolicyStore, when a policy file is given
        self.gate = None  # the image gate service
        self.nri = None  # the NRI plugin
        self.oci = None  # the server nodewarden-runc asks at `runc create`
        self._client = None  # containerd client for post-start kills
        self.started = 0.0
        self._stopping = threading.Event()
        outputs: list[Output] = [log_output]
        drop_sources = []
        resolver = None
        if cfg.containers.enabled:
            from agent.enrich.containerd import ContainerdConfig, ContainerTable, ContainerWatcher
            from agent.enrich.enricher import ContainerResolver

            c = cfg.containers
            self.containers = ContainerTable()
            self.watcher = ContainerWatcher(ContainerdConfig(socket=c.containerd_socket, proc_root=c.proc_root,
                                                             backoff_max=c.reconnect_max), self.containers)
            resolver = ContainerResolver(self.containers)
            drop_sources.append(self.watcher.drops)
            drop_sources.append(lambda: self.gate.drops() if self.gate is not None else {})
        if cfg.export.collector:
            self.exporter = self._exporter()
            outputs.append(self._submit_all)
            drop_sources.append(lambda: {f"exporter.{k}": v for k, v in self.exporter.drops.items()})
        # What a SIGKILLed previous run held in memory: counted against the spool the exporter writes.
        self.ledger = Ledger(os.path.join(cfg.agent.state_dir, "ledger"),
                             spool_dir=self.exporter.cfg.spool_dir if self.exporter is not None else None)
        self.pipeline = Pipeline(cfg, outputs, metrics=self.metrics, containers=resolver, drop_sources=drop_sources,
                                 ledger=self.ledger)

    # -- construction helpers ---------------------------------------------------------------------

    def _state(self, path: str, default_name: str) -> str:
        return path or os.path.join(self.cfg.agent.state_dir, default_name)

    def _exporter(self):
        from agent.outputs.grpc_channel import ClientSecurity
        from agent.outputs.grpc_exporter import Exporter, ExporterConfig

        e = self.cfg.export
        security = ClientSecurity(tls_ca=e.tls_ca, tls_cert=e.tls_cert, tls_key=e.tls_key, tls=e.tls,
                                  server_name=e.server_name, token_file=e.token_file)
        return Exporter(ExporterConfig(address=e.collector, node=self.cfg.agent.node_name, security=security,
                                       spool_dir=self._state(e.spool_dir, "spool"),
                                       spool_max_bytes=e.spool_max_bytes))

    def _submit_all(self, records: list[dict]) -> None:
        submit = self.exporter.submit
        for r in records:
            submit(r)

    def _client_factory(self):
        from agent.enrich.containerd_client import ContainerdClient

        return ContainerdClient(self.cfg.containers.containerd_socket)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Raises on what must stop the agent: a bad policy, probes that do not load, a collector that cannot listen."""
        cfg = self.cfg
        os.makedirs(cfg.agent.state_dir, exist_ok=True)
        self.ledger.open()  # before the exporter appends to its spool: the ledger reads the spool's count
        if cfg.agent.policy_file:
            from agent.policy.store import PolicyStore

            self.policy = PolicyStore(cfg.agent.policy_file, on_change=self._policy_changed)
        if cfg.agent.metrics_listen:
            self.metrics.serve(cfg.agent.metrics_listen)
        if self.exporter is not None:
            if cfg.export.collector == "embedded":
                from collector.server import CollectorConfig, serve

                e = cfg.export
                self.collector = serve(CollectorConfig(listen=[e.embedded_listen],
                                                       db=self._state(e.embedded_db, "events.db")))
                self.exporter.cfg.address = self.collector.address
            self.exporter.start()
        if self.watcher is not None:
            self.watcher.start()  # never raises: retries in the background while containerd is absent
            # agent.ready means events of containers that already run are attributed: wait for the
            # first listing, briefly (containerd may be absent; then containers come as it appears).
            self.watcher.wait_synced(cfg.containers.sync_timeout)
        self.pipeline.start(before_ready=self._start_enforcement if self.policy is not None else None)
        self.started = time.time()
        self._write_status()
        threading.Thread(target=self._status_loop, name="nw-status", daemon=True).start()

    def _start_enforcement(self) -> None:
        """Once the probes are loaded, before agent.ready: exec rules, the image gate, the NRI plugin."""
        from agent.enforce.execkill import ExecEnforcer

        policy = self.policy.current
        self.enforcer = ExecEnforcer(self.pipeline.probes)
        self.enforcer.apply(policy.runtime)
        self.pipeline.describe_rule = self.enforcer.describe
        if self.containers is not None:
            self.containers.add_listener(self._on_container)  # first, so none falls between the two
            for info in self.containers.snapshot():
                self._on_container("task", info)
        if self.containers is not None and self.cfg.imagegate.enabled:
            from agent.imagegate.service import GateService

            self.gate = GateService(self.cfg.imagegate, self.policy, client_factory=self._client_factory,
                                    emit=self._on_verdict)
            self.gate.start()  # starts the policy reload thread too
            self.gate.attach(self.containers)
            for info in self.containers.snapshot():  # those the first listing found: checked too
                self.gate.on_container("task", info)
            self.watcher.on_image = self.gate.prescan  # images pulled from now on are scanned ahead
        else:
            self.policy.start()
        if self.gate is not None and self.cfg.enforce.oci_gate:
            from agent.enforce.ocigate import GateServer

            e = self.cfg.enforce
            os.makedirs(os.path.dirname(e.gate_socket), exist_ok=True)
            self.oci = GateServer(e.gate_socket, self._oci_decide, timeout=policy.timeout,
                                  timeout_action=policy.timeout_action)
            self.oci.start()
        if self.gate is not None and self.cfg.enforce.nri:
            from agent.enforce.nri import NriConfig, NriPlugin

            e = self.cfg.enforce
            self.nri = NriPlugin(self._nri_decide, NriConfig(socket_path=e.nri_socket, plugin_index=e.nri_index,
                                                             timeout_action=policy.timeout_action))
            self.nri.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.nri is not None:
            self.nri.stop()
        if self.oci is not None:
            self.oci.stop()
        self.pipeline.stop()
        if self.gate is not None:
            self.gate.stop()
        elif self.policy is not None:
            self.policy.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.exporter is not None:
            self.exporter.stop(timeout=5.0)
        if self.collector is not None:
            self.collector.stop()
        self.ledger.close()  # after the exporter: its last spool appends are counted
        self.metrics.stop()

    # -- policy, containers, verdicts -------------------------------------------------------------

    def _policy_changed(self, policy) -> None:
        if self.enforcer is not None:
            self.enforcer.apply(policy.runtime)
        self._emit({"event.name": "agent.policy", "event.severity": "info", "policy.source": policy.source,
                    "policy.fingerprint": policy.fingerprint})

    def _on_container(self, kind: str, info) -> None:
        """Container table listener: put each container's cgroup under the runtime rules."""
        if info is None or not info.cgroup_id:
            return
        if kind == "delete":
            self.enforcer.cover(info.cgroup_id, False)
        elif kind in ("task", "exec", "container"):
            self.enforcer.cover(info.cgroup_id)

    def _emit(self, rec: dict) -> None:
        rec.setdefault("timestamp", record.rfc3339(time.time_ns()))
        self.pipeline.deliver([rec])

    def _on_verdict(self, rec: dict) -> None:
        """An image.verdict from the gate: report it, deny the files it flagged, kill a running container
        it blocks (the post-start path: the agent was down, a gate was missing, or the scan finished late)."""
        self._emit(rec)
        cid, ns = rec.get("container.id", ""), rec.get("containerd.namespace", "")
        info = self.containers.lookup(ns, cid) if (cid and ns) else None
        if info is None:
            return
        flagged = [f["path"] for f in rec.get("image.findings", [])
                   if f.get("category") == "malware" and f.get("path") and f.get("action", "none") != "none"]
        if flagged and info.cgroup_id and self.enforcer is not None:
            self.enforcer.flag_paths(info.cgroup_id, flagged)
        if rec.get("image.verdict") == "block" and info.pid and info.state == "running" \
                and self.cfg.enforce.post_start_kill:
            self._kill(ns, info, rec)

    def _kill(self, ns: str, info, verdict: dict) -> None:
        try:
            if self._client is None:
                self._client = self._client_factory()
            self._client.kill(ns, info.id, signal=9, all=True)
            outcome = "killed"
        except Exception as e:  # containerd away: say so; the next relisting brings it back to us
            outcome = f"kill failed: {e}".splitlines()[0][:300]
        block = {k: v for k, v in verdict.items() if k.startswith(("container.", "k8s.", "containerd."))}
        block.update({"event.name": "enforcement.block", "event.severity": "critical",
                      "enforcement.point": "containerd.kill", "enforcement.action": "kill",
                      "enforcement.outcome": outcome, "image.verdict": "block",
                      "enforcement.reason": f"image verdict block: {verdict.get('image.verdict.reason', '')}"})
        self._emit(block)

    def _nri_decide(self, pod, container):
        """NRI CreateContainer: the image gate's verdict by image reference (containerd has no record yet)."""
        from agent.enforce.nri import Decision

        v = self.gate.evaluate_image("k8s.io", container.image, k8s_namespace=pod.namespace,
                                     labels=dict(container.labels))
        if v.verdict != "block":
            return Decision(True)
        msg = f"image verdict block: {v.reason}"
        self._emit({"event.name": "enforcement.block", "event.severity": "critical",
                    "enforcement.point": "nri.create_container", "enforcement.action": "deny",
                    "enforcement.reason": msg, "container.name": container.name,
                    "container.image.name": container.image, "k8s.pod.name": pod.name,
                    "k8s.namespace.name": pod.namespace})
        return Decision(False, msg, retriable=bool(getattr(v, "timed_out", False)))

    def _oci_decide(self, req):
        """`runc create` through nodewarden-runc: containerd has the container record by then."""
        from agent.enforce.ocigate import Decision

        if req.container_type == "sandbox":  # the CRI pause container: nothing of the user's runs in it
            return Decision(True, "sandbox")
        try:
            v = self.gate.evaluate(req.namespace, req.id)
        except Exception:  # containerd does not know it (a bare runc user?): judge the image by name
            if not req.image:
                return Decision(True, "no image to check")
            v = self.gate.evaluate_image(req.namespace, req.image, k8s_namespace=req.pod_namespace)
        if v.verdict != "block":
            return Decision(True, v.verdict)
        msg = f"image verdict block: {v.reason}"
        self._emit({"event.name": "enforcement.block", "event.severity": "critical",
                    "enforcement.point": "oci.runc_create", "enforcement.action": "deny",
                    "enforcement.reason": msg, "container.id": req.id, "containerd.namespace": req.namespace,
                    "container.image.name": req.image or getattr(v, "image", ""),
                    "k8s.pod.name": req.pod, "k8s.namespace.name": req.pod_namespace})
        return Decision(False, msg)

    # -- status -----------------------------------------------------------------------------------

    def enforcement_status(self) -> dict[str, dict]:
        """What this agent enforces now, for `nodewarden status`."""
        e = self.enforcer
        if e is None:
            kernel = {"active": False, "detail": "no policy: start with --policy FILE (runtime: section)"}
        else:
            r = e.rules
            kernel = {"active": bool(r.deny_exec or r.drift != "off"),
                      "detail": f"{len(r.deny_exec)} deny_exec rules ({r.action}), drift {r.drift}, "
                                f"{len(e.covered)} containers covered"}
        out = {"kernel_exec_kill": kernel}
        if self.nri is not None:
            st = self.nri.status()
            out["nri"] = {"active": bool(getattr(st, "connected", False)), "detail": str(getattr(st, "reason", st))}
        if self.oci is not None:
            out["oci_gate"] = {"active": True, "detail": f"serving {self.cfg.enforce.gate_socket}; "
                                                         f"{_wrapper_installed()}"}
        if self.gate is not None:
            out["post_start_kill"] = {"active": self.cfg.enforce.post_start_kill,
                                      "detail": "containers the image gate blocks are killed through containerd"}
        return out

    def _write_status(self) -> None:
        import orjson

        rep = {"pid": os.getpid(), "started": self.started, "node": self.cfg.agent.node_name,
               "enforcement": self.enforcement_status()}
        path = os.path.join(self.cfg.agent.state_dir, "status.json")
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(rep))
            os.replace(tmp, path)  # readers never see half a file
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)

    def _status_loop(self) -> None:
        while not self._stopping.wait(5.0):
            self._write_status()


def _wrapper_installed(config: str = "/etc/containerd/config.toml") -> str:
    """Whether containerd's config points runc at nodewarden-runc (what makes the OCI gate bite)."""
    try:
        with open(config) as f:
            text = f.read()
    except OSError:
        return f"cannot read {config}: check that runc's BinaryName is nodewarden-runc (docs/ocigate.md)"
    if "nodewarden-runc" in text:
        return f"{config} sets nodewarden-runc as runc's binary"
    return f"{config} does not name nodewarden-runc: containers are not gated here (docs/ocigate.md)"
