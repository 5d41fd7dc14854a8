"""What the image policy says about a container, before any image is read: is it in scope, is its
image whitelisted. The verdict itself (which needs the image gate's ImageReport) is made in
agent/imagegate/decide.py: the image gate applies the policy, the policy knows nothing of the
gate's records.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from agent.policy.model import ImagePolicy


def in_scope(policy: ImagePolicy, namespace: str, labels: dict[str, str]) -> tuple[bool, str]:
    ns = policy.namespaces
    if not any(fnmatchcase(namespace, g) for g in ns.include):
        return False, f"namespace {namespace!r} not in scope.namespaces.include"
    for g in ns.exclude:
        if fnmatchcase(namespace, g):
            return False, f"namespace {namespace!r} excluded by scope.namespaces.exclude {g!r}"
    for key, glob in policy.label_include:
        if key not in labels or not fnmatchcase(labels[key], glob):
            return False, f"label {key}={glob} required by scope.labels.include"
    for key, glob in policy.label_exclude:
        if key in labels and fnmatchcase(labels[key], glob):
            return False, f"label {key}={labels[key]} excluded by scope.labels.exclude"
    return True, ""


def whitelisted(policy: ImagePolicy, image: str, digests: tuple[str, ...]) -> str:
    for g in policy.whitelist_images:
        if image and fnmatchcase(image, g):
            return f"image {image!r} whitelisted by whitelist.images {g!r}"
    for d in digests:
        if d and d in policy.whitelist_digests:
            return f"digest {d} whitelisted by whitelist.digests"
    return ""
