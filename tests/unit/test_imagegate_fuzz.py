"""The whole scan (ImageScanner over an OCI layout directory) over mutated index, manifest and
config documents: every case ends in a Verdict (allow/alert/block under the policy) or in an
ImageError, never in another exception (which would skip the gate's decision, issue 9)."""

from __future__ import annotations

import copy
import json
import random

import pytest

from agent.imagegate.config import ImageGateConfig
from agent.imagegate.decide import decide
from agent.imagegate.model import ImageError, Verdict
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import OciDirSource
from agent.policy.model import ImagePolicy
from tests.harness.oci import MEDIA_INDEX, build_image, unpack_layout, write_blob

DEEP = json.loads("[" * 300 + "]" * 300)
VALUES = [5, 1.5, -1, 0, 2**63, 2**64 - 1, 1e300, -(2**63), "x", "", "sha256:" + "0" * 64, [], {}, None, True,
          [5], [None], {"a": 1}, {"digest": 5}, DEEP]
_DROP = object()


def _paths(doc, prefix=()):
    """Every path (tuple of keys and indexes) into doc, the root excluded."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


def _set(doc, path, value):
    doc = copy.deepcopy(doc)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if value is _DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


class World:
    """One layout directory whose documents each case rewrites (blobs are content-addressed, so
    the blobs of one case never clobber another's)."""

    def __init__(self, tmp):
        img = build_image(tmp / "img.tar", "nodewarden.test/fuzz:1", {"/opt/hello": b"hello\n"})
        self.dir = unpack_layout(img, tmp / "layout")
        self.index = json.loads((self.dir / "index.json").read_text())
        self.manifest = self._blob(self.index["manifests"][0]["digest"])
        self.config = self._blob(self.manifest["config"]["digest"])
        self.config["config"]["User"] = "65534"  # no baseline finding: the pristine image is allowed
        self.layer = self.manifest["layers"][0]["digest"]
        self.scanner = ImageScanner(ImageGateConfig(cache_path="", advisory_db=""))
        self.policy = ImagePolicy()

    def _blob(self, digest):
        return json.loads((self.dir / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes())

    def put(self, doc) -> dict:
        return write_blob(self.dir, doc if isinstance(doc, bytes) else json.dumps(doc).encode())

    def write(self, index=None, manifest=None, config=None, image_index=None):
        """index.json -> [image index ->] manifest -> config; None: the pristine document, linked
        to the (possibly mutated) documents below it."""
        if manifest is None:
            manifest = {**self.manifest, "config": {**self.manifest["config"], **self.put(config or self.config)}}
        mdesc = {**self.index["manifests"][0], **self.put(manifest)}
        if image_index is not None:
            mdesc = {"mediaType": MEDIA_INDEX, **self.put(image_index(mdesc)), "annotations": mdesc["annotations"]}
        if index is None:
            index = {**self.index, "manifests": [mdesc]}
        (self.dir / "index.json").write_bytes(index if isinstance(index, bytes) else json.dumps(index).encode())

    def outcome(self) -> str:
        try:
            src = OciDirSource(str(self.dir))
            v = decide(self.scanner.scan(src), self.policy)
        except ImageError as e:
            assert str(e) and "\n" not in str(e)
            return "error"
        assert isinstance(v, Verdict) and v.verdict in ("allow", "alert", "block")
        return v.verdict


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("fuzz"))


def _nested(world):
    def image_index(mdesc):
        plat = {"os": "linux", "architecture": world.index["manifests"][0]["platform"]["architecture"]}
        return {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [{**mdesc, "platform": plat}]}

    return image_index


def test_pristine_image_is_allowed(world):
    world.write()
    assert world.outcome() == "allow"
    world.write(image_index=_nested(world))
    assert world.outcome() == "allow"


def test_issue_cases_are_one_line_image_errors(world):
    for key, value in (("rootfs", 5), ("config", 1.5), ("rootfs", {"diff_ids": 5}), ("config", {"Labels": [1]})):
        world.write(config={**world.config, key: value})
        with pytest.raises(ImageError, match=key):
            world.scanner.scan(OciDirSource(str(world.dir)))


@pytest.mark.parametrize("doc", ["index", "manifest", "config", "image_index"])
def test_every_field_swapped_or_deleted(world, doc):
    outcomes = {}
    if doc == "image_index":
        base = _nested(world)({**world.index["manifests"][0], **world.put(world.manifest)})
    else:
        base = getattr(world, doc)
    for path in list(_paths(base)):
        for value in (_DROP, *VALUES):
            mutated = _set(base, path, value)
            if doc == "image_index":
                world.write(image_index=lambda _m, d=mutated: d)
            else:
                world.write(**{doc: mutated})
            o = world.outcome()
            outcomes[o] = outcomes.get(o, 0) + 1
    assert outcomes.get("error") and sum(outcomes.values()) > 100


def test_wrong_digests(world):
    other = {"config": world.manifest["config"]["digest"], "layer": world.layer,
             "missing": "sha256:" + "1" * 64, "sha512": "sha512:" + "2" * 128}
    seen = set()
    for d in other.values():
        m = copy.deepcopy(world.manifest)
        m["layers"][0]["digest"] = d
        world.write(manifest=m)
        seen.add(world.outcome())
        m = copy.deepcopy(world.manifest)
        m["config"]["digest"] = d
        world.write(manifest=m)
        seen.add(world.outcome())
    tampered = {**world.config, "architecture": "tampered"}
    m = copy.deepcopy(world.manifest)
    m["config"] = {**m["config"], "digest": world.put(tampered)["digest"]}
    blob = world.dir / "blobs" / "sha256" / m["config"]["digest"].split(":")[1]
    blob.write_bytes(json.dumps(world.config).encode())
    world.write(manifest=m)
    seen.add(world.outcome())  # the blob no longer matches its digest: a CRITICAL integrity finding
    assert seen >= {"error", "block"}


def test_raw_bytes_and_deep_nesting(world):
    for raw in (b"", b"[]", b"5", b"{", b"\xff\xfe", b'{"manifests": [' * 2000, json.dumps(DEEP).encode()):
        world.write(index=raw)
        assert world.outcome() == "error"
        world.write(config=raw if raw.startswith(b"{") else None)
        world.outcome()
    chain = {**world.index["manifests"][0], **world.put(world.manifest)}
    for _ in range(6):  # indexes nested past what an image has
        chain = {"mediaType": MEDIA_INDEX, **world.put({"mediaType": MEDIA_INDEX, "manifests": [chain]})}
    world.write(index={**world.index, "manifests": [chain]})
    assert world.outcome() == "error"


def test_random_mutations(world):
    rnd = random.Random(9)
    docs = {"index": world.index, "manifest": world.manifest, "config": world.config}
    for _ in range(300):
        muts = {}
        for name in rnd.sample(sorted(docs), rnd.randint(1, 3)):
            doc = docs[name]
            for _ in range(rnd.randint(1, 3)):
                paths = list(_paths(doc))
                if not paths:
                    break
                doc = _set(doc, rnd.choice(paths), rnd.choice((_DROP, *VALUES)))
            muts[name] = doc
        world.write(**muts)
        world.outcome()


SPEC = {  # every part of a runtime spec that the baseline checks read
    "process": {"user": {"uid": 1000}, "noNewPrivileges": True, "apparmorProfile": "default",
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"], "effective": ["CAP_CHOWN"]}},
    "root": {"readonly": True},
    "mounts": [{"type": "bind", "source": "/etc", "destination": "/host", "options": ["rbind", "ro", "rshared"]}],
    "linux": {
        "namespaces": [{"type": "pid", "path": "/proc/self/ns/pid"}, {"type": "network"}],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}, "maskedPaths": ["/proc/kcore"],
        "resources": {"memory": {"limit": 1 << 28}, "pids": {"limit": 100},
                      "devices": [{"allow": True, "type": "a"}]},
        "devices": [{"path": "/dev/fuse"}],
    },
}


def test_runtime_spec_swapped_or_deleted(world):
    from agent.imagegate import baseline

    world.write()
    for path in list(_paths(SPEC)):
        for value in (_DROP, *VALUES):
            spec = _set(SPEC, path, value)
            assert isinstance(baseline.check_spec(spec), list)
            assert world.scanner.scan(OciDirSource(str(world.dir)), spec).image  # spec_digest included
