"""Signatures at the image gate (issue 16): the policy's `signatures:` section judged by the real GateService for
images containerd holds (Debian's containerd), their signatures in a real registry (Debian's docker-registry on
loopback), made by the test with `cryptography` as cosign makes and pushes them (tests/harness/registry.py).
A signed image passes; a tampered one, one signed by another key and an unsigned one are blocked with their reason;
with the registry stopped, an image not yet checked gets the entry's on_error verdict within the gate's timeout."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.enrich.containerd_client import ContainerdClient
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.service import GateService
from agent.policy.store import PolicyStore
from tests.harness import registry as harness
from tests.harness.containerd import unique_id
from tests.harness.oci import build_image
from tests.harness.registry import LocalRegistry, cosign_sign, cosign_signature, simple_signing_payload

pytestmark = pytest.mark.e2e
NAMES = ("signed", "unsigned", "otherkey", "tampered", "late")


@pytest.fixture(scope="module")
def world(containerd, tmp_path_factory):
    why = harness.missing_requirements()
    if why:
        pytest.skip(f"real registry: {why}")
    root = tmp_path_factory.mktemp("gatesig")
    reg = LocalRegistry(root / "registry").start()
    tag = unique_id("s")
    images = {}
    try:
        for i, name in enumerate(NAMES):
            ref = f"{reg.host}/team-{tag}/{name}:1"
            img = build_image(root / f"{name}.tar", ref, {"/opt/v": f"{i}\n".encode()})
            reg.push_oci_archive(img.path, ref.split("/", 1)[1])
            containerd.import_image(img)  # the node pulled it: containerd holds it under the same name and digest
            images[name] = img
        release = ec.generate_private_key(ec.SECP256R1())
        stranger = ec.generate_private_key(ec.SECP256R1())

        def sign(name, key, digest=None):
            payload = simple_signing_payload(f"{reg.host}/team-{tag}/{name}", digest or images[name].manifest_digest)
            pair = (payload, cosign_signature(key, payload))
            cosign_sign(reg, f"team-{tag}/{name}", images[name].manifest_digest, [pair])

        sign("signed", release)
        sign("otherkey", stranger)
        sign("tampered", release, digest=images["signed"].manifest_digest)  # a signature copied from another image
        sign("late", release)
        keyfile = root / "release.pub"
        keyfile.write_bytes(release.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
        policy = root / "policy.yaml"
        policy.write_text(f"""on_timeout: {{after: 10s, action: allow}}
categories: {{baseline: {{alert: off}}}}
signatures:
  - images: ["{reg.host}/team-{tag}/*"]
    keys: [{keyfile}]
    action: block
    on_error: block
""")
        gate = GateService(ImageGateConfig(cache_path="", advisory_db="", signature_timeout=3.0),
                           PolicyStore(str(policy)), lambda: ContainerdClient(str(containerd.socket)), lambda ev: None)
        yield reg, images, gate, containerd.namespace
        gate.stop()
    finally:
        reg.stop()
        for img in images.values():
            containerd.ctr("images", "rm", img.name, check=False)


def _sig(verdict):
    found = [d for d in verdict.findings if d.finding.rule.startswith("signature:")]
    assert len(found) == 1, [d.finding.rule for d in verdict.findings]
    return found[0]


def test_signed_image_passes_with_the_key_named(world):
    _reg, images, gate, ns = world
    v = gate.evaluate_image(ns, images["signed"].name, timeout=20)
    d = _sig(v)
    assert v.verdict == "allow", v.reason
    assert (d.finding.rule, d.action, d.finding.category) == ("signature:verified", "none", "integrity")
    assert "release.pub" in d.finding.detail and d.decided_by == "signatures[0]: verified"


@pytest.mark.parametrize("name,rule", [("unsigned", "signature:unsigned"), ("otherkey", "signature:other-key"),
                                       ("tampered", "signature:digest-mismatch")])
def test_bad_signatures_are_blocked_with_their_reason(world, name, rule):
    _reg, images, gate, ns = world
    v = gate.evaluate_image(ns, images[name].name, timeout=20)
    d = _sig(v)
    assert v.verdict == "block" and not v.timed_out, v.reason
    assert (d.finding.rule, d.action, d.decided_by) == (rule, "block", "signatures[0].action block")
    assert v.reason.startswith(f"integrity/critical {rule}"), v.reason


def test_registry_down_is_the_entrys_on_error_within_the_timeout(world):
    reg, images, gate, ns = world
    reg.stop()
    t0 = time.monotonic()
    v = gate.evaluate_image(ns, images["late"].name, timeout=20)
    took = time.monotonic() - t0
    d = _sig(v)
    assert v.verdict == "block" and not v.timed_out, v.reason
    assert (d.finding.rule, d.decided_by) == ("signature:unverifiable", "signatures[0].on_error block")
    assert "could not be checked" in d.finding.detail
    assert took < 10, took  # well inside on_timeout.after: the registry's failure, not the gate's timeout
    v = gate.evaluate_image(ns, images["signed"].name, timeout=20)  # checked before: the cached result holds
    assert v.verdict == "allow", v.reason
