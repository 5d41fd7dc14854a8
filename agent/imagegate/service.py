"""GateService: the image gate inside the agent.

Wiring (agent/commands/run.py / agent/pipeline.py, by the pipeline's owner):

    from agent.enrich.containerd_client import ContainerdClient
    from agent.imagegate.config import ImageGateConfig
    from agent.imagegate.service import GateService
    from agent.policy.store import PolicyStore

    store = PolicyStore(args.policy)             # --policy FILE; None = built-in defaults.
                                                 # Raises PolicyError on a bad file: exit 2 with str(e).
    gate = GateService(ImageGateConfig(cache_path=f"{state_dir}/imagegate/cache.db",
                                       advisory_db=f"{state_dir}/advisories"),
                       store,
                       client_factory=lambda: ContainerdClient(containerd_socket),
                       emit=pipeline.emit)     # one typed VerdictEvent per verdict; the outputs flatten it
    table.add_listener(gate.on_container)   # "container"/"task" -> queued, never blocks
    gate.start()             # worker threads (the store's reload thread is its owner's: agent/node.py)
    ...
    gate.stop()              # on shutdown (after the watcher stops)

    # pre-start gate (enforcement issue), any thread:
    verdict = gate.evaluate(namespace, container_id, timeout=None)   # None: the policy's on_timeout.after
    if verdict.verdict == "block": refuse the start
    # when containerd has no container record yet (NRI CreateContainer): by image reference
    verdict = gate.evaluate_image("k8s.io", ctr.image, k8s_namespace=pod.namespace, labels=ctr.labels)
    flagged = flagged_paths(verdict)  # malware files that acted: for ExecKill.flag_paths(cgroup, paths)

Each new container (first "container" or "task" notice for a (namespace, id)) is queued (bounded:
`queue_size`; overflow is dropped and counted in stats()["dropped"]); a worker fetches the container
(image name, labels, OCI spec) from containerd, checks scope and whitelist, scans the image through
the caches and emits one `image.verdict` record. A scan that outlives the policy's on_timeout.after
emits the on_timeout verdict then (image.scan.timed_out: true), keeps going, and emits the full
verdict when done (the result is cached either way). evaluate() returns a Verdict and emits nothing.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson

from agent.events import ContainerInfo, VerdictEvent
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.decide import decide, pre_decide, timeout_verdict
from agent.imagegate.layer import SourceError
from agent.imagegate.model import ImageReport, Verdict
from agent.imagegate.scanner import ImageScanner, spec_digest
from agent.imagegate.signing import SignatureGate
from agent.imagegate.source import ContainerdSource, ImageError
from agent.policy.store import PolicyStore
from agent.ratelog import RateLog

log = logging.getLogger("nodewarden.imagegate")

_LABEL_POD_NS = "io.kubernetes.pod.namespace"
_MAX_SPEC = 8 << 20
_SEEN = 65536


class GateService:
    def __init__(
        self,
        config,
        policy_store: PolicyStore,
        client_factory: Callable,
        emit: Callable[[VerdictEvent], None],
        scanner: ImageScanner | None = None,
        running: Callable[[], list[ContainerInfo]] | None = None,
    ):
        self.cfg: ImageGateConfig = getattr(config, "imagegate", config) or ImageGateConfig()
        self.policy = policy_store
        self._client_factory = client_factory
        self._client = None
        self._emit = emit
        self.scanner = scanner or ImageScanner(self.cfg)
        # the policy's signatures: section (issue 16); its registry client is made on the first image it names
        self.signer = SignatureGate(self.cfg)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, self.cfg.queue_size))
        self._pool = cf.ThreadPoolExecutor(max_workers=max(1, self.cfg.workers), thread_name_prefix="imagegate-scan")
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str], cf.Future] = {}
        self._seen: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counts = {
            k: 0
            for k in ("queued", "dropped", "evaluated", "allow", "alert", "block", "timeouts", "errors", "emit_errors",
                      "prescanned", "prescan_skipped")
        }
        self._prescans = 0  # image scans started by prescan() and not finished
        # (seconds, result) per image scan: the agent's metrics (Metrics.add_gate); None when not exported
        self.observe_scan: Callable[[float, str], None] | None = None
        self._rlog = RateLog(log)
        # Re-judging what runs: the containers running now (the ContainerTable's), the last verdict each got,
        # and what the last judgements were made with (policy fingerprint, the scanner's cache prefixes).
        self._running = running
        self._last: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._judged_with = self._judgement_basis()
        for k in ("rejudged", "rejudge_changed", "rejudge_skipped"):
            self._counts[k] = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> GateService:
        for i in range(max(1, self.cfg.workers)):
            t = threading.Thread(target=self._worker, name=f"imagegate-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        for e in self.scanner.rule_errors:
            log.warning("image gate rule problem: %s", e)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "queue": self._queue.qsize(), **self.scanner.cache.stats,
                    **{f"signatures_{k}": n for k, n in self.signer.counts.items()}}

    def drops(self) -> dict[str, int]:
        """Losses for the agent's drop accounting (agent.drops, nodewarden_drops_total): containers not
        evaluated because the queue was full, verdicts that could not be emitted."""
        with self._lock:
            return {"imagegate.queue": self._counts["dropped"], "imagegate.emit": self._counts["emit_errors"]}

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    # --- the listener (watcher thread: must not block) ------------------------------------------

    def on_container(self, kind: str, info: ContainerInfo) -> None:
        if info.state in ("deleted", "stopped"):
            with self._lock:
                self._last.pop((info.namespace, info.id), None)
        if kind not in ("container", "task") or info.state == "deleted" or self._stop.is_set():
            return
        key = (info.namespace, info.id, info.created_ns)
        with self._lock:
            if key in self._seen:
                return
            self._seen[key] = None
            while len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
        try:
            self._queue.put_nowait(info)
            self._count("queued")
        except queue.Full:
            self._count("dropped")
            self._rlog.warning("queue_full", "image gate queue full: container %s not evaluated (counted in "
                               "nodewarden_drops_total{stage=\"imagegate.queue\"})", info.id)

    def _worker(self) -> None:
        while not self._stop.is_set():
            try:
                info = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._refresh()
                continue
            try:
                self._handle(info)
            except Exception:  # a bug here must not stop the worker
                self._count("errors")
                log.exception("image gate: evaluating %s failed", info.id)

    def _refresh(self) -> None:
        try:
            self.scanner.refresh()
        except Exception:
            log.exception("image gate: reloading rules or advisory database failed; old ones stay")
        basis = self._judgement_basis()
        with self._lock:  # every idle worker ticks here: one of them re-judges each change
            was, self._judged_with = self._judged_with, basis
        if basis != was:
            trigger = "policy" if basis[0] != was[0] else "rules" if basis[1] != was[1] else "advisories"
            self.rejudge(trigger)

    def _judgement_basis(self) -> tuple[str, str, str]:
        """What a verdict depends on besides the image: the policy, the rules (the layer results' cache prefix)
        and the advisory database (the image results' prefix). A change of any is a reason to judge again."""
        eng = self.scanner.engine
        return self.policy.current.fingerprint, eng.layer_prefix, eng.image_prefix

    # --- re-judging what runs (issue 16) ----------------------------------------------------------

    def rejudge(self, trigger: str) -> int:
        """Judge the image of every running container again (the advisories, rules or policy changed; the
        caches keep each layer's files and packages, so a changed advisory database is a re-match, not a
        re-read), and report each verdict that changed as an image.verdict with the previous one beside it.
        Never blocks: the judgements run on the scan pool. Returns how many were submitted."""
        if self._running is None or self._stop.is_set():
            return 0
        try:
            running = [c for c in self._running() if c.state == "running" and c.id]
        except Exception:
            self._rlog.exception("rejudge_list", "image gate: listing running containers failed; not re-judged")
            return 0
        n = 0
        for info in running:
            with self._lock:
                previous = self._last.get((info.namespace, info.id))
            if previous is None:  # never judged (its verdict is still coming): nothing to compare with
                self._count("rejudge_skipped")
                continue
            key = ("rejudge", trigger, info.namespace, info.id, self._judged_with)
            fut = self._submit(info.namespace, info.id, key=key)
            fut.add_done_callback(lambda f, i=info, p=previous, t=trigger: self._rejudged(f, i, p, t))
            n += 1
        if n:
            log.info("image gate: %s changed; judging the images of %d running containers again", trigger, n)
        return n

    def _rejudged(self, fut: cf.Future, info: ContainerInfo, previous: str, trigger: str) -> None:
        try:
            verdict = fut.result()
        except (cf.CancelledError, Exception):  # the pool shut down: the agent is stopping
            return
        if verdict.error:  # containerd away or the image unreadable now: not a judgement of the image; keep the last
            self._count("rejudge_skipped")
            return
        self._count("rejudged")
        key = (info.namespace, info.id)
        with self._lock:
            if key not in self._last:  # stopped meanwhile
                return
            self._last[key] = verdict.verdict
        if verdict.verdict == previous:
            return
        self._count("rejudge_changed")
        verdict = dataclasses.replace(verdict, previous=previous, trigger=trigger)
        self._send(verdict, info)

    def _handle(self, info: ContainerInfo) -> None:
        fut = self._submit(info.namespace, info.id)
        timeout = self.policy.current.timeout
        try:
            verdict = fut.result(timeout=timeout)
        except cf.TimeoutError:
            self._count("timeouts")
            policy = self.policy.current
            self._send(timeout_verdict(policy, info.image, info.image_digest, timeout), info)
            verdict = fut.result()  # the scan goes on (bounded by containerd read timeouts)
        self._send(verdict, info)

    def _send(self, verdict: Verdict, info: ContainerInfo) -> None:
        if not verdict.timed_out and info.state != "stopped":
            with self._lock:
                self._last[(info.namespace, info.id)] = verdict.verdict
                self._last.move_to_end((info.namespace, info.id))
                while len(self._last) > _SEEN:
                    self._last.popitem(last=False)
        self._count("evaluated")
        self._count(verdict.verdict if verdict.verdict in ("allow", "alert", "block") else "errors")
        try:
            self._emit(VerdictEvent(time.time_ns(), verdict, info))
        except Exception:
            self._count("emit_errors")
            log.exception("image gate: emit failed")

    # --- evaluation -----------------------------------------------------------------------------

    def evaluate(self, namespace: str, container_id: str, timeout: float | None = None) -> Verdict:
        """The verdict for one container, within timeout seconds (None: the policy's
        on_timeout.after); past it, the policy's on_timeout verdict while the scan goes on."""
        policy = self.policy.current
        wait = policy.timeout if timeout is None else timeout
        fut = self._submit(namespace, container_id)
        t0 = time.monotonic()
        try:
            return fut.result(timeout=wait)
        except cf.TimeoutError:
            self._count("timeouts")
            return timeout_verdict(policy, "", "", time.monotonic() - t0)

    def evaluate_image(
        self,
        namespace: str,
        image: str,
        *,
        k8s_namespace: str = "",
        labels: dict[str, str] | None = None,
        spec: dict | None = None,
        timeout: float | None = None,
    ) -> Verdict:
        """The verdict for an image reference in a containerd namespace, for a pre-start gate that
        runs before containerd has the container record (NRI CreateContainer). Scope uses
        k8s_namespace (else namespace) and labels; spec, when given, gets the baseline checks."""
        policy = self.policy.current
        wait = policy.timeout if timeout is None else timeout
        key = ("image", namespace, image, spec_digest(spec))
        fut = self._submit(
            namespace,
            image,
            key=key,
            fn=self._evaluate_image,
            args=(namespace, image, k8s_namespace, dict(labels or {}), spec),
        )
        t0 = time.monotonic()
        try:
            return fut.result(timeout=wait)
        except cf.TimeoutError:
            self._count("timeouts")
            return timeout_verdict(policy, image, "", time.monotonic() - t0)

    def prescan(self, namespace: str, image: str) -> None:
        """Scan an image as soon as containerd has it (pulled, created, or listed at start), so that the
        layer findings are cached before any container of it starts. Never blocks; past `queue_size`
        scans in flight the image is left for the container start to scan (counted, not lost)."""
        with self._lock:
            if self._prescans >= self.cfg.queue_size:
                self._counts["prescan_skipped"] += 1
                return
            self._prescans += 1
        key = ("image", namespace, image, spec_digest(None))
        fut = self._submit(namespace, image, key=key, fn=self._evaluate_image,
                           args=(namespace, image, namespace, {}, None))
        self._count("prescanned")

        def done(_f) -> None:
            with self._lock:
                self._prescans -= 1

        fut.add_done_callback(done)

    def _submit(self, namespace: str, container_id: str, key=None, fn=None, args=None) -> cf.Future:
        key = key or (namespace, container_id)
        with self._lock:
            fut = self._inflight.get(key)
            if fut is not None:
                return fut
            fut = self._pool.submit(self._guarded, fn or self._evaluate, *(args or (namespace, container_id)))
            self._inflight[key] = fut
        fut.add_done_callback(lambda f, k=key: self._done(k, f))
        return fut

    def _done(self, key, fut) -> None:
        with self._lock:
            if self._inflight.get(key) is fut:
                del self._inflight[key]

    def _guarded(self, fn, *args) -> Verdict:
        """Runs fn on the scan pool; whatever it raises becomes the on_error verdict. An exception
        that escaped would reach no one but the log: no image.verdict, no post-start kill, and a
        pre-start gate would take it for a timeout (issue 9)."""
        try:
            return fn(*args)
        except Exception as e:
            msg = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self._rlog.error("unexpected", "image gate: evaluating %s failed unexpectedly (%s); on_error verdict",
                             args[1] if len(args) > 1 else "?", msg)
            log.debug("image gate: the failure's traceback", exc_info=True)
            return self._error(f"internal error: {msg}")

    def _get_client(self):
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def _evaluate(self, namespace: str, container_id: str) -> Verdict:
        """Runs on the scan pool. Never raises: failures become error verdicts (on_error.action)."""
        try:
            client = self._get_client()
            rec = client.container(namespace, container_id)
        except Exception as e:
            return self._error(f"containerd: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if rec is None:
            return self._error(f"container {container_id} not found in namespace {namespace}")
        image, labels = rec.image, dict(rec.labels)
        spec = None
        raw = getattr(rec.spec, "value", b"")
        if raw and len(raw) <= _MAX_SPEC:
            try:
                spec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                spec = None
        scope_ns = labels.get(_LABEL_POD_NS) or namespace
        return self._scan_image(client, namespace, image, scope_ns, labels, spec if isinstance(spec, dict) else None)

    def _evaluate_image(self, namespace: str, image: str, scope_ns: str, labels: dict, spec: dict | None) -> Verdict:
        try:
            client = self._get_client()
        except Exception as e:
            return self._error(f"containerd: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return self._scan_image(client, namespace, image, scope_ns or namespace, labels, spec)

    def _scan_image(
        self, client, namespace: str, image: str, scope_ns: str, labels: dict, spec: dict | None
    ) -> Verdict:
        src = ContainerdSource(client, namespace, image, blob_timeout=self.cfg.blob_timeout)
        try:
            digest = src.root()["digest"]
        except (ImageError, SourceError) as e:
            return self._error(str(e))
        early = pre_decide(self.policy.current, image, digest, scope_ns, labels)
        if early is not None:
            return early
        t0 = time.monotonic()
        try:
            report = self.scanner.scan(src, spec)
        except (ImageError, SourceError) as e:
            report = ImageReport(image=image, digest="", error=str(e))
        if self.observe_scan is not None:
            self.observe_scan(time.monotonic() - t0, _scan_result(report))
        policy = self.policy.current
        signature = None
        if policy.signatures.rules and not report.error:
            signature = self.signer.check(policy, image, (report.digest or digest, report.manifest_digest))
        return decide(report, policy, signature)

    def _error(self, msg: str) -> Verdict:
        self._count("errors")
        p = self.policy.current
        return Verdict(p.error_action, f"{msg} (on_error.action)", error=msg, policy=p.fingerprint)


def _scan_result(report: ImageReport) -> str:
    """A scan's result for nodewarden_imagegate_scans_total: error, cached (the whole result, or every
    layer, from the cache), partial (some layers) or scanned."""
    if report.error:
        return "error"
    return {"verdict": "cached", "layers": "cached", "partial": "partial"}.get(report.cache_hit, "scanned")


def flagged_paths(verdict: Verdict) -> list[str]:
    """Files of malware findings that acted (alert or block): what an exec guard can deny."""
    return sorted(
        {
            d.finding.path
            for d in verdict.findings
            if d.finding.category == "malware" and d.finding.path and d.action != "none"
        }
    )
