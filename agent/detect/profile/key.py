"""Which workload a container belongs to: the profile key.

Replicas of one workload run the same image the same way, so they share one profile: for a
Kubernetes pod the owning workload (Deployment, StatefulSet, DaemonSet, Job) guessed from the
pod's name and whatever owner labels the runtime passed on; for a plain container its name (or
id). The image digest is part of the key, so a new image version learns afresh.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from agent.events import ContainerInfo

# Kubernetes' name suffixes come from k8s.io/apimachinery rand.SafeEncodeString's alphabet (no vowels,
# no 0/1/3: never a word): a ReplicaSet's pod-template-hash (6-10 of them) and a pod's 5-letter suffix.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
# The pod suffix is matched loosely ([a-z0-9]): documentation writes "web-7d4b9c8f6-abcde"; the hash
# before it, strictly, keeps "my-service-abcde" a plain name.
_DEPLOYMENT_POD = re.compile(rf"^(.+)-{_SAFE}{{6,10}}-[a-z0-9]{{5}}$")
_SUFFIXED_POD = re.compile(rf"^(.+)-{_SAFE}{{5}}$")  # DaemonSet, Job, or a ReplicaSet's pod
_ORDINAL_POD = re.compile(r"^(.+)-(\d+)$")  # StatefulSet
_CRONJOB_RUN = re.compile(r"^(.+)-\d{8,}$")  # a CronJob's Job: <cronjob>-<scheduled minute>

# Labels that name the owner outright when the runtime copies the pod's labels onto the container.
_JOB_LABELS = ("batch.kubernetes.io/job-name", "job-name")
_STS_LABEL = "statefulset.kubernetes.io/pod-name"
_HASH_LABEL = "pod-template-hash"
_REVISION_LABEL = "controller-revision-hash"  # StatefulSet and DaemonSet pods


@dataclass(frozen=True, slots=True)
class Workload:
    namespace: str  # pod namespace, or the containerd namespace when there is no pod
    kind: str  # Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, Pod; "" when no pod
    owner: str  # the owning workload's name; "" when no pod
    container: str  # container name; its id when it has none
    image: str
    image_digest: str = ""

    @property
    def key(self) -> str:
        """Stable and unique: the file name, the collector's key and the kernel slot all derive from it."""
        return (f"{self.namespace}/{self.kind or '-'}/{self.owner or '-'}/{self.container}"
                f"@{self.image_digest or self.image}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> Workload:
        """From a document's "workload" object; ValueError (one line) when it is not one."""
        if not isinstance(d, dict):
            raise ValueError("workload is not an object")
        vals = {}
        for name in ("namespace", "kind", "owner", "container", "image", "image_digest"):
            v = d.get(name, "")
            if not isinstance(v, str):
                raise ValueError(f"workload.{name} is not a string")
            vals[name] = v
        if not vals["container"]:
            raise ValueError("workload.container is empty")
        return cls(**vals)


def owner_of(pod_name: str, labels: dict[str, str]) -> tuple[str, str]:
    """(kind, owner name) of a pod, from owner labels when present, else from the shape of its name."""
    for lab in _JOB_LABELS:
        job = labels.get(lab)
        if job:
            m = _CRONJOB_RUN.match(job)
            return "Job", m.group(1) if m else job
    if labels.get(_STS_LABEL):
        m = _ORDINAL_POD.match(pod_name)
        return "StatefulSet", m.group(1) if m else pod_name
    h = labels.get(_HASH_LABEL)
    if h and f"-{h}-" in pod_name:
        return "Deployment", pod_name[: pod_name.rindex(f"-{h}-")]
    if labels.get(_REVISION_LABEL):
        m = _SUFFIXED_POD.match(pod_name)
        if m:
            return "DaemonSet", m.group(1)
    m = _DEPLOYMENT_POD.match(pod_name)
    if m:
        return "Deployment", m.group(1)
    m = _ORDINAL_POD.match(pod_name)
    if m:
        return "StatefulSet", m.group(1)
    m = _SUFFIXED_POD.match(pod_name)
    if m:
        # Without labels a DaemonSet's, a Job's and a bare ReplicaSet's pods look alike; the kind only has to
        # be the same on every node for the same pod names, which it is.
        return "DaemonSet", m.group(1)
    return "Pod", pod_name


def workload_of(c: ContainerInfo) -> Workload:
    labels = dict(c.labels)
    image = c.image or ""
    if c.pod_name:
        kind, owner = owner_of(c.pod_name, labels)
        return Workload(c.pod_namespace or c.namespace, kind, owner, c.name or c.id, image, c.image_digest)
    return Workload(c.namespace, "", "", c.name or c.id, image, c.image_digest)
