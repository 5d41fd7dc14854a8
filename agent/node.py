"""The whole agent on a node: the event pipeline plus the services beside it, each only when configured.
This module wires; what each part decides lives in its stage (verdicts, kills and gate decisions in
agent/enforce/).

    containerd watcher -> container table -> attribution (pipeline), exec-rule coverage (enforce),
                                             image gate -> VerdictHandler (report, flagged files, post-start kill)
    policy store (owned here; hot reload) -> exec rules, image gate, gates' timeout action (read per decision),
                                             detection rules (built before a policy takes effect, swapped whole),
                                             their kill rules (enforce/detectkill.py: exec entries in the
                                             kernel, user-space kills around the detector)
    NRI plugin, OCI gate -> GateDecider (image gate verdict; covers the container's cgroup from its create)
    exporter -> collector (embedded or remote); metrics server; status.json for `nodewarden status`

Everything is built in the constructor; start() only starts, in this order: collector, exporter, policy
reload, image gate, watcher (first listing), probes, exec rules, gates; stop() in reverse.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

from agent import sdnotify
from agent.config import Config
from agent.ledger import Ledger
from agent.outputs.metrics import Metrics
from agent.pipeline import Output, Pipeline, settle_gc
from agent.sensors.loader import ProbeSet

log = logging.getLogger("nodewarden")


class Agent:
    def __init__(self, cfg: Config, log_output: Output):
        """Raises PolicyError on a policy file that does not load (the agent must not start on it)."""
        self.cfg = cfg
        self.metrics = Metrics()
        self.collector = None  # the embedded collector's handle, once started
        self.profile_sync = None  # profiles pushed to and fetched from the collector (outputs/profilesync.py)
        self.started = 0.0
        self._stopping = threading.Event()
        self.watchdog = None  # pings systemd's watchdog once started (agent/sdnotify.py)
        self._checked: tuple = (None, None)  # (policy, KillSetup) built by the store's check, used on change
        self.policy = self._policy_store()  # PolicyStore, when a policy file is given: the one owner
        self.probes = ProbeSet(self._probe_config())
        # The exec allow-lists of protecting profiles (enforce/profilekill.py), or its null object
        from agent.enforce.profilekill import build as build_profile_kill

        self.profilekill = build_profile_kill(self.probes)
        # The detector (with the kill rules' user-space kills around it) and the kill rules' exec entries.
        self.kills = self._detect_setup(self.policy.current if self.policy is not None else None)
        self.enforcer = self._enforcer()  # in-kernel exec rules
        self.containers = self.watcher = resolver = None
        self.lifecycle = None  # container and image lifecycle records (agent/enrich/lifecycle.py), with the watcher
        self.killer = None  # post-start kills through containerd (made with the image gate)
        if cfg.containers.enabled:
            from agent.enrich.containerd import ContainerTable
            from agent.enrich.enricher import ContainerResolver

            self.containers = ContainerTable()
            # held events wait longer while the watcher still has containerd events to apply (enrich/hold.py)
            resolver = ContainerResolver(self.containers,
                                         behind=lambda: self.watcher is not None and self.watcher.behind())
        self.exporter = self._exporter() if cfg.export.collector else None
        outputs: list[Output] = [log_output] + ([self.exporter.submit_batch] if self.exporter is not None else [])
        self.profiles = self._profiles()  # the behaviour model per workload (agent/detect/profile), or its null
        self.webshell = self._webshell()  # the run-time web-shell check (before the pipeline: it feeds it)
        self.devguard = self._device_guard()  # unauthorized device use (before the pipeline: it feeds it)
        # What a SIGKILLed previous run held in memory: counted against the spool the exporter writes.
        self.ledger = Ledger(os.path.join(cfg.agent.state_dir, "ledger"),
                             spool_dir=self.exporter.cfg.spool_dir if self.exporter is not None else None)
        self.pipeline = Pipeline(cfg, outputs, metrics=self.metrics, containers=resolver, probes=self.probes,
                                 drop_sources=[self._stage_drops], ledger=self.ledger,
                                 describe_rule=self._describe_rule(),
                                 detector=self.kills.detector, webshell=self.webshell,
                                 device_guard=self.devguard, profiles=self.profiles)
        self._log_detect(self.kills)
        self.gate = self._gate()  # the image gate service
        if self.gate is not None:
            self.metrics.add_gate(self.gate)  # verdicts, cache hits, scan durations
        if self.exporter is not None:
            self.metrics.add_exporter(self.exporter)  # queued, spooled, sent, dropped by reason
        if self.containers is not None:
            self.watcher = self._watcher()
            if self.enforcer is not None:
                self.containers.add_listener(self._on_container)  # before the gate: covered, then judged
            if self.gate is not None:
                self.containers.add_listener(self.gate.on_container)
            if self.profiles.enabled:  # live replicas (the learning clock), protecting containers covered
                self.containers.add_listener(self.profiles.on_container)
        self.decider = self._decider()
        self.oci = self._oci_gate()  # the server nodewarden-runc asks at `runc create`
        self.nri = self._nri_plugin()
        self.devices = self._devices()  # GPU/XPU poller (agent/devices), or its null object
        self.posture = self._posture()  # posture.report every posture.interval, or its null object
        self.resources = self._resources()  # container and host resource samples (agent/resources), or its null
        self.devices.add_listener(self.devguard.observe_device)  # the inventory, and samples' processes
        if self.containers is not None:
            self.containers.add_listener(self.devguard.on_container)

    # -- construction -----------------------------------------------------------------------------

    def _state(self, path: str, default_name: str) -> str:
        return path or os.path.join(self.cfg.agent.state_dir, default_name)

    def _policy_store(self):
        if not self.cfg.agent.policy_file:
            return None
        from agent.policy.store import PolicyStore

        return PolicyStore(self.cfg.agent.policy_file, on_change=self._policy_changed,
                           on_reject=self._policy_rejected, check=self._check_detect)

    def _check_detect(self, policy) -> None:
        """The store's check: the policy's detection rules must compile and its kill rules must be able to
        kill (else PolicyError: refused whole)."""
        self._checked = (policy, self._build_detect(policy.detect))

    def _detect_setup(self, policy):
        """The KillSetup for a policy (None: no policy file, the bundled rules): the one the store's check
        built for it, else built now (the bundled rules alone must compile: a bad install stops the agent)."""
        checked, kills = self._checked
        if policy is not None and checked is policy:
            return kills
        return self._build_detect(policy.detect if policy is not None else None)

    @staticmethod
    def _build_detect(section):
        from agent.detect.engine import build
        from agent.enforce.detectkill import setup
        from agent.policy.loader import PolicyError

        detector, errors = build(section)
        kills = setup(detector, section)
        if errors or kills.errors:
            raise PolicyError([*errors, *kills.errors])
        return kills

    @staticmethod
    def _log_detect(kills) -> None:
        detector = kills.detector
        r = detector.result
        if detector.enabled:
            log.info("detection: %d rules in force, %d not loaded%s", r.rules, len(r.skipped),
                     "".join(f"; {name}: {why}" for name, why in r.skipped[:20]))
            if kills.placements:
                log.info("detection: %s%s", kills.describe(), "".join(
                    f"; {p.rule_id}: from user space ({p.user})" for p in kills.placements[:20] if p.user))
        else:
            log.info("detection: off (detect.enabled: false)")

    def _probe_config(self):
        """The probes as configured, plus the cgroup family when exec rules are loaded: its cgroup_mkdir
        hook covers a container from its create on (docs/enforcement.md). Its records are internal (the
        container resolver's), so adding it prints nothing new."""
        p = self.cfg.probes
        if (self.policy is None and not self.cfg.profiles.enabled) or "cgroup" in p.families:
            return p
        log.info("probe family 'cgroup' added: exec rules and protecting profiles cover containers from their "
                 "cgroup's creation")
        return dataclasses.replace(p, families=(*p.families, "cgroup"))

    def _enforcer(self):
        if self.policy is None:
            return None
        from agent.enforce.execkill import ExecEnforcer

        enforcer = ExecEnforcer(self.probes, profiles=self.profilekill)
        # recorded now, written into the maps at start
        enforcer.apply(self.policy.current.runtime, detect=self.kills.kernel)
        return enforcer

    def _describe_rule(self):
        """(rule, cgroup id) -> (category, text) of a kill the kernel made: the exec rules' describe hands
        a profile's kills to the ProfileKill; without exec rules, only profiles kill in the kernel."""
        if self.enforcer is not None:
            return self.enforcer.describe
        if self.profilekill.enabled:
            return lambda rule, cgroup_id: self.profilekill.describe(rule)
        return None

    def _profiles(self):
        """The profile engine (learning, deviations, protecting through the kernel allow-lists, shared
        through the collector when there is one), or NullProfiles (profiles.enabled: false)."""
        from agent.detect.profile import build
        from agent.outputs.profilesync import build as build_sync

        cfg = self.cfg
        if not cfg.profiles.enabled:
            return build(cfg, None)
        from agent.policy.profiles import ProfilePolicy

        policy = self.policy.current.profiles if self.policy is not None else ProfilePolicy()
        self.profile_sync = build_sync(self.exporter.cfg if self.exporter is not None else None, cfg.profiles)
        return build(cfg, policy, kill=self.profilekill if self.profilekill.enabled else None,
                     sync=self.profile_sync if self.profile_sync.enabled else None)

    def _webshell(self):
        """The run-time web-shell check, or its null object (webshell.enabled: false, or no file probe)."""
        from agent.detect.webshell_watch import NullWebshellWatch, WebshellWatch

        cfg = self.cfg
        if not cfg.webshell.enabled or "file" not in cfg.probes.families:
            return NullWebshellWatch()
        hashdb = None
        path = getattr(cfg.imagegate, "hash_db", "")
        if path:
            from agent.imagegate.hashdb import WatchedHashDB

            hashdb = WatchedHashDB(path)  # a missing store finds nothing until one is imported
        policy = self.policy.current.webshell if self.policy is not None else None
        return WebshellWatch(cfg.webshell, lambda ev: self.pipeline.emit(ev), policy=policy, probes=self.probes,
                             hashdb=hashdb, proc_root=cfg.containers.proc_root)

    def _exporter(self):
        from agent.outputs.grpc_channel import ClientSecurity
        from agent.outputs.grpc_exporter import Exporter, ExporterConfig

        e = self.cfg.export
        security = ClientSecurity(tls_ca=e.tls_ca, tls_cert=e.tls_cert, tls_key=e.tls_key, tls=e.tls,
                                  server_name=e.server_name, token_file=e.token_file)
        address = _connect_address(e.embedded_listen) if e.collector == "embedded" else e.collector
        return Exporter(ExporterConfig(address=address, node=self.cfg.agent.node_name, security=security,
                                       spool_dir=self._state(e.spool_dir, "spool"),
                                       spool_max_bytes=e.spool_max_bytes))

    def _gate(self):
        if self.policy is None or self.containers is None or not self.cfg.imagegate.enabled:
            return None
        from agent.enforce.kill import ContainerKiller, VerdictHandler
        from agent.imagegate.scanner import ImageScanner
        from agent.imagegate.service import GateService

        self.killer = ContainerKiller(self._client_factory) if self.cfg.enforce.post_start_kill else None
        handler = VerdictHandler(self.pipeline.emit, self.containers, self.enforcer, self.killer, policy=self.policy)
        # The baseline compares namespaces through the host's /proc: the one the watcher reads too.
        scanner = ImageScanner(self.cfg.imagegate, proc_root=self.cfg.containers.proc_root)
        containers = self.containers
        return GateService(self.cfg.imagegate, self.policy, client_factory=self._client_factory, emit=handler,
                           scanner=scanner, running=lambda: containers.snapshot())

    def _watcher(self):
        from agent.enrich.containerd import ContainerdConfig, ContainerWatcher
        from agent.enrich.lifecycle import build as build_lifecycle

        c = self.cfg.containers
        table = self.pipeline.table  # an exec's command, when its process was gone before /proc was read
        self.lifecycle = build_lifecycle(self.cfg.lifecycle, lambda ev: self.pipeline.emit(ev),
                                         argv_of=lambda pid: (p.argv if (p := table.get(pid)) else ()))
        return ContainerWatcher(ContainerdConfig(socket=c.containerd_socket, proc_root=c.proc_root,
                                                 backoff_max=c.reconnect_max), self.containers,
                                on_image=self.gate.prescan if self.gate is not None else None,
                                lifecycle=self.lifecycle)

    def _decider(self):
        if self.gate is None:
            return None
        from agent.enforce.decide import GateDecider

        return GateDecider(self.gate, self.policy, self.pipeline.emit, self.enforcer,
                           profiles=self.profiles if self.profiles.enabled else None,
                           lookup=self.containers.lookup if self.containers is not None else None)

    def _oci_gate(self):
        if self.decider is None or not self.cfg.enforce.oci_gate:
            return None
        from agent.enforce.ocigate import GateServer

        d = self.decider
        return GateServer(self.cfg.enforce.gate_socket, d.oci, timeout=d.timeout, timeout_action=d.timeout_action)

    def _nri_plugin(self):
        if self.decider is None or not self.cfg.enforce.nri:
            return None
        from agent.enforce.nri import NriConfig, NriPlugin

        e = self.cfg.enforce
        return NriPlugin(self.decider.nri, NriConfig(socket_path=e.nri_socket, plugin_index=e.nri_index,
                                                     timeout_action=self.policy.current.timeout_action),
                         timeout_action=self.decider.timeout_action)

    def _posture(self):
        from agent.imagegate.posture import NullPostureReporter, PostureAssessor, PostureReporter

        if self.containers is None or not self.cfg.posture.enabled:
            return NullPostureReporter()
        assessor = PostureAssessor(self._client_factory, self.cfg.posture, proc_root=self.cfg.containers.proc_root)
        return PostureReporter(assessor, self.containers.snapshot, lambda ev: self.pipeline.emit(ev),
                               self.cfg.posture.interval)

    def _resources(self):
        """The resource sampler: container.resources and host.resources into the pipeline, its last sample to
        /metrics (nodewarden_container_*, nodewarden_host_*), nw.container_memory_at_limit."""
        from agent.resources import build

        resources = build(self.cfg, emit=lambda ev: self.pipeline.emit(ev), containers=self.containers)
        if resources.enabled:
            self.metrics.add_resources(resources)
        return resources

    def _devices(self):
        """The device poller: its records enter the pipeline like any other; its state feeds /metrics
        (DCGM_* gauges) and status.json (`nodewarden devices`)."""
        from agent.devices import build

        devices = build(self.cfg, emit=lambda ev: self.pipeline.emit(ev), containers=self.containers)
        if devices.enabled:
            self.metrics.add_devices(devices.snapshot, self.cfg.agent.node_name)
        return devices

    def _device_guard(self):
        """The device guard (agent/devices/guard.py): containers opening or using GPUs/XPUs they were not
        allocated; allocations from the kubelet's pod-resources socket, else each container's spec from
        containerd. Its null object when device_guard.enabled is false."""
        from agent.devices.guard import DeviceGuard, NullDeviceGuard, containerd_specs

        g = self.cfg.device_guard
        if not g.enabled:
            return NullDeviceGuard()
        specs = containerd_specs(self._client_factory, g.rpc_timeout_s) if self.containers is not None else None
        return DeviceGuard(g, lambda ev: self.pipeline.emit(ev), spec_source=specs,
                           prefixes=self.cfg.probes.watch_devices)

    def _client_factory(self):
        from agent.enrich.containerd_client import ContainerdClient

        return ContainerdClient(self.cfg.containers.containerd_socket)

    # -- outputs and accounting -------------------------------------------------------------------

    def _stage_drops(self) -> dict[str, int]:
        """The other stages' loss counters, for the pipeline's agent.drops and metrics."""
        out: dict[str, int] = {}
        if self.watcher is not None:
            out.update(self.watcher.drops())
            out.update(self.lifecycle.drops())  # lifecycle.queue (full), lifecycle.emit (outputs refused)
        if self.gate is not None:
            out.update(self.gate.drops())
        if self.exporter is not None:
            out.update({f"exporter.{k}": v for k, v in self.exporter.drops.items()})
        out.update(self.webshell.drops())  # webshell.scan (queue full), webshell.unreadable
        out.update(self.devguard.drops())  # devguard.queue (full), devguard.unjudged, devguard.folded
        out.update(self.devices.drops())  # devices.queue (record queue full), devices.skipped (driver held)
        out.update(self.resources.drops())  # resources.cut (over max_containers), resources.late (overran)
        out.update({f"profile_kill.{k}": v for k, v in self.profilekill.drops().items()})  # allow-lists' losses
        if self.enforcer is not None:  # containers the exec rules could not cover from their create on
            c = self.enforcer.counters
            out.update({"enforce.cover_unresolved": c["cover_unresolved"], "enforce.pending_full": c["pending_full"]})
        return out

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Raises on what must stop the agent: probes that do not load, a collector that cannot listen."""
        cfg = self.cfg
        os.makedirs(cfg.agent.state_dir, exist_ok=True)
        self.ledger.open()  # before the exporter appends to its spool: the ledger reads the spool's count
        if cfg.agent.metrics_listen:
            self.metrics.serve(cfg.agent.metrics_listen)
        if self.exporter is not None:
            if cfg.export.collector == "embedded":
                from collector.server import CollectorConfig, serve

                e = cfg.export
                self.collector = serve(CollectorConfig(listen=[e.embedded_listen],
                                                       db=self._state(e.embedded_db, "events.db"),
                                                       http_listen=e.embedded_http, http_optional=True))
            self.exporter.start()
        for part in (self.policy, self.gate):  # the gate's workers before the first listing fills its queue
            if part is not None:
                part.start()
        if self.watcher is not None:
            self.watcher.start()  # never raises: retries in the background while containerd is absent
            # agent.ready means events of containers that already run are attributed: wait for the
            # first listing, briefly (containerd may be absent; then containers come as it appears).
            self.watcher.wait_synced(cfg.containers.sync_timeout)
        self.devguard.start()  # before the probes: device-node opens queue for it from the first event
        sdnotify.status("loading probes (the first start on a kernel compiles them: up to a minute)")
        self.pipeline.start(before_ready=self._start_enforcement)
        self.devices.start()  # after agent.ready: device records follow it like every other event
        if self.lifecycle is not None:
            self.lifecycle.start()  # after agent.ready; what the watcher saw before waits in its queue
        self.posture.start()
        self.resources.start()  # after agent.ready, like the devices
        settle_gc()
        self.started = time.time()
        self._write_status()
        threading.Thread(target=self._status_loop, name="nw-status", daemon=True).start()
        # systemd (Type=notify, agent/sdnotify.py): started once the probes are attached; a no-op elsewhere
        sdnotify.ready(f"watching {self.cfg.agent.node_name}: probes {','.join(self.cfg.probes.families)} attached")
        # healthy while the reader and worker threads run (they end only at stop, or on a bug that kills one)
        self.watchdog = sdnotify.Watchdog(lambda: all(t.is_alive() for t in self.pipeline._threads))
        self.watchdog.start()

    def _start_enforcement(self) -> None:
        """Once the probes are loaded, before agent.ready: the exec rules and every container covered so
        far go into the maps (and the web roots, for the web-shell check); then the pre-start gates."""
        self.webshell.start()
        self.profilekill.start()  # the allow-lists of profiles loaded from the state dir, recorded until now
        if self.enforcer is not None:
            self.enforcer.start()
        if self.oci is not None:
            os.makedirs(os.path.dirname(self.cfg.enforce.gate_socket), exist_ok=True)
            self.oci.start()
        if self.nri is not None:
            self.nri.start()

    def stop(self) -> None:
        self._stopping.set()
        sdnotify.stopping()
        if self.watchdog is not None:
            self.watchdog.stop()
        for part in (self.nri, self.oci):
            if part is not None:
                part.stop()
        self.devices.stop()  # before the pipeline: its last records still go out
        if self.lifecycle is not None:
            self.lifecycle.stop()  # likewise
        self.posture.stop()
        self.resources.stop()  # before the pipeline: its last records still go out
        self.pipeline.stop()
        self.profiles.close()  # the final flush: every change on disk (and queued for the collector)
        if self.profile_sync is not None:
            self.profile_sync.close()
        self.webshell.stop()
        self.devguard.stop()
        for part in (self.gate, self.policy, self.watcher):
            if part is not None:
                part.stop()
        if self.killer is not None:
            self.killer.close()
        if self.exporter is not None:
            self.exporter.stop(timeout=5.0)
        if self.collector is not None:
            self.collector.stop()
        self.metrics.stop()

    # -- listeners --------------------------------------------------------------------------------

    def _policy_changed(self, policy) -> None:
        from agent.events import PolicyEvent

        try:
            kills = self._detect_setup(policy)
        except Exception:  # the store's check built it already; never leave the old rules half replaced
            log.exception("detection rules not replaced")
            kills = None
        if self.enforcer is not None:  # the old kill rules' exec entries stay when the new ones did not build
            self.enforcer.apply(policy.runtime, detect=kills.kernel if kills is not None else None)
        if kills is not None:
            self.kills = kills
            self._log_detect(kills)
            self.pipeline.set_detector(kills.detector)
        self.webshell.set_policy(policy.webshell)
        self.profiles.set_policy(policy.profiles)
        self.pipeline.emit(PolicyEvent(time.time_ns(), policy.source, policy.fingerprint))

    def _policy_rejected(self, message: str) -> None:
        from agent.events import PolicyEvent

        p = self.policy.current  # the policy that stays in force
        self.pipeline.emit(PolicyEvent(time.time_ns(), p.source, p.fingerprint, error=message))

    def _on_container(self, kind: str, info) -> None:
        """Container table listener: put each container's cgroup under the runtime rules."""
        if info is None:
            return
        if kind == "delete":
            if info.cgroup_id:
                self.enforcer.cover(info.cgroup_id, False)
            self.enforcer.uncover_path(info.cgroup_path)
        elif kind in ("task", "exec", "container") and info.cgroup_id:
            self.enforcer.cover(info.cgroup_id)

    # -- status -----------------------------------------------------------------------------------

    def enforcement_status(self) -> dict[str, dict]:
        """What this agent enforces now, for `nodewarden status`."""
        e = self.enforcer
        if e is None:
            kernel = {"active": False, "detail": "no policy: start with --policy FILE (runtime: section)"}
        else:
            r = e.rules
            host = sum(1 for x in r.deny_exec if x.scope != "containers")
            kernel = {"active": bool(r.deny_exec or r.drift != "off"),
                      "detail": f"{len(r.deny_exec)} deny_exec rules ({r.action}; {host} for the host), "
                                f"drift {r.drift}, {len(e.covered)} containers covered, "
                                f"{len(e.pending)} by cgroup path from their create"}
        out = {"kernel_exec_kill": kernel}
        k = self.kills
        if k.placements:
            counts = getattr(k.detector, "kill_counts", {})
            in_kernel = "" if e is None or e.rules.action == "block" else \
                " (runtime.action is alert: the exec entries are not in the kernel, user space kills)"
            out["detect_kill"] = {"active": True, "detail": f"{k.describe()}{in_kernel}; "
                                                            + ", ".join(f"{n} {w}" for w, n in counts.items())}
        if (ws := self.webshell.status()) is not None:
            out["webshell"] = ws
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

    def detection_status(self) -> dict:
        """The detection rules in force, and those of a rules file that cannot run here (name, why)."""
        d = self.pipeline.detector
        return {"enabled": d.enabled, "rules": d.result.rules,
                "not_loaded": [{"rule": name, "why": why} for name, why in d.result.skipped]}

    def _write_status(self) -> None:
        import orjson

        rep = {"pid": os.getpid(), "started": self.started, "node": self.cfg.agent.node_name,
               "enforcement": self.enforcement_status(), "detection": self.detection_status(),
               "devices": self.devices.status(), "posture": self.posture.status(),
               "resources": self.resources.status(),
               "device_guard": self.devguard.status(),
               "profiles": {**self.profiles.counters(), "kernel": self.profilekill.counters()}
               if self.profiles.enabled else {"enabled": False}}
        path = os.path.join(self.cfg.agent.state_dir, "status.json")
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(rep))
            os.replace(tmp, path)  # readers never see half a file
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)

    def _status_loop(self) -> None:
        syncs = 0
        while not self._stopping.wait(5.0):
            self._write_status()
            if self.watcher is not None and self.profiles.enabled and self.watcher.counters["syncs"] != syncs:
                # a (re)listing tombstones the containers that went while containerd was away without
                # telling listeners: the profiles' replica clocks must stop counting them
                syncs = self.watcher.counters["syncs"]
                self.profiles.reconcile(self.containers.snapshot())


def _connect_address(listen: str) -> str:
    """Where the exporter reaches the embedded collector that will listen on `listen` (as
    collector.server's bind reports it): a wildcard host is reached on loopback."""
    if listen.startswith("unix:"):
        return listen
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"{host}:{port}"


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
