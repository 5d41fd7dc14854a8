"""The node's posture: what the practice guides ask of running containers, checked over all of them at once.

    assessor = PostureAssessor(client_factory, PostureConfig(max_age_days=30))
    findings = assessor.assess(table.snapshot())      # running containers; pod sandboxes are left out
    -> [PostureFinding("image-sprawl", "docker.io/library/nginx: 2 digests run: ...", (ContainerInfo, ...)), ...]

Checks (each finding names the containers and pods concerned):
- long-running: a container started more than `max_age_days` ago (it runs what its image was then: patches
  since have not reached it).
- stale-base: its image says which base it was built on (the OCI annotations or labels
  `org.opencontainers.image.base.name` / `.base.digest`) and the node has that base name at another digest now:
  the image needs a rebuild. An image that does not say, or a base not on the node, is not judged.
- image-sprawl: several digests of one repository (the image name without tag or digest) run at once: several
  versions of one image, as after a rollout that did not finish or a tag pushed over.
- no-limits: no memory limit or no CPU limit (CFS quota) in the container's OCI spec.
- root / privileged: the process runs as uid 0 / the container is privileged (agent/imagegate/baseline.py's
  reading of the same spec).

Specs and image documents are read from containerd, each once per container or image digest (bounded caches): a
report every interval costs a listing, not a re-read. Nothing here raises on a container it cannot read: that
container is counted in `unreadable` and the rest are judged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import orjson

from agent.config import PostureConfig
from agent.events import ContainerInfo, PostureFinding, PostureReport
from agent.imagegate import baseline
from agent.imagegate.model import ImageError, Severity, SourceError
from agent.imagegate.source import ContainerdSource

log = logging.getLogger("nodewarden.imagegate")

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
CHECKS = ("long-running", "stale-base", "image-sprawl", "no-limits", "root", "privileged")
_SANDBOX = ("io.cri-containerd.kind", "sandbox")  # CRI's pause container: limits and user are not the pod's
_CACHE = 4096
_MAX_SPEC = 8 << 20


def repository(image: str) -> str:
    """`reg:5000/a/b:1.2@sha256:..` -> `reg:5000/a/b`: the name several versions of one image share."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


class PostureAssessor:
    def __init__(self, client_factory: Callable, config: PostureConfig | None = None, proc_root: str = "/proc",
                 clock: Callable[[], float] = time.time):
        self._factory = client_factory
        self.config = config or PostureConfig()
        self.proc_root = proc_root
        self._clock = clock
        self._client = None
        self._lock = threading.Lock()
        self._specs: OrderedDict[tuple[str, str, int], dict | None] = OrderedDict()
        self._bases: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()
        self.unreadable = 0  # containers or images that could not be read in the last assessment
        self.assessed = 0  # running containers the last assessment judged (pod sandboxes not counted)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _get_client(self):
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def assess(self, containers: Iterable[ContainerInfo]) -> list[PostureFinding]:
        running = [c for c in containers if c.state == "running" and c.id and _SANDBOX not in c.labels]
        self.unreadable, self.assessed = 0, len(running)
        out: list[PostureFinding] = []
        out += self._long_running(running)
        out += self._sprawl(running)
        out += self._stale_bases(running)
        out += self._spec_checks(running)
        return out

    def report(self, containers: Iterable[ContainerInfo]) -> PostureReport:
        """The posture.report record of one assessment."""
        findings = self.assess(containers)
        # privileged containers are the one check that is a finding of the image gate's high kind; the others
        # are hygiene: low, so that a report with findings stands out from an empty one without paging anyone
        sev = (Severity.MEDIUM if any(f.check == "privileged" for f in findings)
               else Severity.LOW if findings else Severity.INFO)
        return PostureReport(time.time_ns(), tuple(findings), self.assessed, self.unreadable, sev)

    # --- checks -------------------------------------------------------------------------------

    def _long_running(self, running: list[ContainerInfo]) -> list[PostureFinding]:
        limit_s = self.config.max_age_days * 86400
        now = self._clock()
        old = [(c, now - (c.started_ns or c.created_ns) / 1e9) for c in running if (c.started_ns or c.created_ns)]
        old = sorted(((c, age) for c, age in old if age > limit_s), key=lambda x: -x[1])
        days = self.config.max_age_days
        return [PostureFinding("long-running", f"running for {age / 86400:.1f} days (over {days:g})", (c,))
                for c, age in old]

    def _sprawl(self, running: list[ContainerInfo]) -> list[PostureFinding]:
        by_repo: dict[tuple[str, str], dict[str, list[ContainerInfo]]] = {}
        for c in running:
            if c.image and c.image_digest:
                by_repo.setdefault((c.namespace, repository(c.image)), {}).setdefault(c.image_digest, []).append(c)
        out = []
        for (_ns, repo), digests in sorted(by_repo.items()):
            if len(digests) > 1:
                parts = ", ".join(f"{d[:19]} ({len(cs)}: {', '.join(sorted({x.image for x in cs}))})"
                                  for d, cs in sorted(digests.items()))
                out.append(PostureFinding("image-sprawl", f"{repo}: {len(digests)} digests run at once: {parts}",
                                          tuple(c for cs in digests.values() for c in cs)))
        return out

    def _stale_bases(self, running: list[ContainerInfo]) -> list[PostureFinding]:
        images: dict[tuple[str, str, str], list[ContainerInfo]] = {}
        for c in running:
            if c.image and c.image_digest:
                images.setdefault((c.namespace, c.image, c.image_digest), []).append(c)
        if not images:
            return []
        out = []
        node: dict[str, dict[str, str]] = {}
        for (ns, name, digest), cs in sorted(images.items()):
            base_name, base_digest = self._base_of(ns, name, digest)
            if not base_name or not base_digest:
                continue
            if ns not in node:
                node[ns] = self._node_images(ns)
            now_digest = node[ns].get(base_name) or node[ns].get(_with_latest(base_name), "")
            if now_digest and now_digest != base_digest:
                out.append(PostureFinding(
                    "stale-base", f"{name} was built on {base_name}@{base_digest[:19]}; the node's {base_name} is "
                                  f"{now_digest[:19]} now: rebuild the image", tuple(cs)))
        return out

    def _spec_checks(self, running: list[ContainerInfo]) -> list[PostureFinding]:
        out = []
        for c in running:
            spec = self._spec(c)
            if spec is None:
                continue
            res = _d(_d(spec.get("linux")).get("resources"))
            missing = []
            limit = _d(res.get("memory")).get("limit")
            if not (type(limit) is int and limit > 0):
                missing.append("memory")
            quota = _d(res.get("cpu")).get("quota")
            if not (type(quota) is int and quota > 0):
                missing.append("CPU")
            if missing:
                out.append(PostureFinding("no-limits", f"no {' or '.join(missing)} limit", (c,)))
            rules = {f.rule: f for f in baseline.check_spec(spec, self.proc_root)}
            if "privileged" in rules:
                out.append(PostureFinding("privileged", rules["privileged"].detail, (c,)))
            if "runs-as-root" in rules:
                out.append(PostureFinding("root", rules["runs-as-root"].detail, (c,)))
        return out

    # --- reading from containerd (cached) ------------------------------------------------------

    def _spec(self, c: ContainerInfo) -> dict | None:
        key = (c.namespace, c.id, c.created_ns)
        with self._lock:
            if key in self._specs:
                return self._specs[key]
        spec = None
        try:
            rec = self._get_client().container(c.namespace, c.id)
            raw = getattr(getattr(rec, "spec", None), "value", b"") if rec is not None else b""
            if raw and len(raw) <= _MAX_SPEC:
                doc = orjson.loads(raw)
                spec = doc if isinstance(doc, dict) else None
        except Exception as e:  # grpc.RpcError, a spec that is not JSON: this container is not judged
            log.debug("posture: spec of %s/%s: %s", c.namespace, c.id, e)
        if spec is None:
            self.unreadable += 1
            return None
        with self._lock:
            self._specs[key] = spec
            while len(self._specs) > _CACHE:
                self._specs.popitem(last=False)
        return spec

    def _base_of(self, ns: str, name: str, digest: str) -> tuple[str, str]:
        key = (ns, digest)
        with self._lock:
            if key in self._bases:
                return self._bases[key]
        found = ("", "")
        src = ContainerdSource(self._get_client(), ns, name)
        try:
            res = src.resolve()
            labels = _d(_d(res.config.get("config")).get("Labels"))
            meta = {**labels, **_annotations(src, res.manifest_digest)}
            b_name, b_digest = meta.get(BASE_NAME), meta.get(BASE_DIGEST)
            if isinstance(b_name, str) and isinstance(b_digest, str):
                found = (b_name, b_digest)
        except Exception as e:  # ImageError, SourceError, grpc.RpcError: an image we cannot read: base not judged
            self.unreadable += 1
            log.debug("posture: image %s: %s", name, e)
            return found
        with self._lock:
            self._bases[key] = found
            while len(self._bases) > _CACHE:
                self._bases.popitem(last=False)
        return found

    def _node_images(self, ns: str) -> dict[str, str]:
        try:
            return {img.name: img.target.digest for img in self._get_client().images(ns)}
        except Exception as e:
            self.unreadable += 1
            log.debug("posture: images of %s: %s", ns, e)
            return {}


def _annotations(src: ContainerdSource, manifest_digest: str) -> dict:
    """The manifest's annotations (where OCI puts base.name/base.digest); {} when unreadable."""
    try:
        doc = src.read_json({"digest": manifest_digest}, "manifest", [])
    except (ImageError, SourceError):
        return {}
    ann = doc.get("annotations")
    return ann if isinstance(ann, dict) else {}


def _with_latest(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] or "@" in name else f"{name}:latest"


def _d(v) -> dict:
    return v if isinstance(v, dict) else {}


class PostureReporter:
    """One posture.report every `interval` seconds on a thread of its own (containerd calls never hold the event
    path), the first one interval after start; `report_now()` for a request."""

    enabled = True

    def __init__(self, assessor: PostureAssessor, containers: Callable[[], list[ContainerInfo]],
                 emit: Callable[[PostureReport], None], interval: float):
        self.assessor = assessor
        self._containers = containers
        self._emit = emit
        self.interval = max(1.0, interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports = 0
        self.errors = 0
        self.last: PostureReport | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nw-posture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.assessor.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report_now()

    def report_now(self) -> PostureReport | None:
        try:
            report = self.assessor.report(self._containers())
            self._emit(report)
        except Exception:  # a bug or containerd away must not end the reports: the next interval tries again
            self.errors += 1
            log.exception("posture: the report failed; next in %.0f s", self.interval)
            return None
        self.reports += 1
        self.last = report
        return report

    def status(self) -> dict:
        last = self.last
        return {"reports": self.reports, "errors": self.errors,
                "last": {f.check: sum(1 for g in last.findings if g.check == f.check) for f in last.findings}
                if last is not None else None}


class NullPostureReporter:
    """posture.enabled false (or no container watcher): nothing runs."""

    enabled = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def status(self) -> dict:
        return {"enabled": False}
