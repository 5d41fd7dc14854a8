"""Image signatures in a real registry (Debian's docker-registry on loopback), verified by
agent/imagegate/signatures.py. The signatures are made here with `cryptography` from the formats'
published facts and pushed the way the tools push them (tests/harness/registry.py):
- cosign: the `sha256-HEX.sig` image, simple-signing payloads, the signature annotation; ECDSA
  P-256 and Ed25519 keys;
- Notation: a JWS envelope signed by a leaf certificate of a test CA, attached through the
  referrers tag fallback (distribution 2.8 has no referrers API).
A signed image verifies; a tampered image (the signature copied onto another digest), one signed by
another key or CA, an unsigned one do not, each with its reason; the registry stopped is a
RegistryError within the verifier's timeout, and a cached verdict outlives it."""

from __future__ import annotations

import base64
import datetime
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agent.imagegate.registry import Reference, RegistryClient, RegistryError
from agent.imagegate.signatures import SignatureVerifier
from agent.policy.signatures import SignatureConfigError, SignatureRule, TrustedCert, TrustedKey
from tests.harness import registry as harness
from tests.harness.oci import MEDIA_MANIFEST, build_image
from tests.harness.registry import (
    LocalRegistry,
    cosign_sign,
    cosign_signature,
    make_ca,
    make_leaf,
    notation_attach,
    notation_envelope,
    simple_signing_payload,
)

pytestmark = pytest.mark.e2e


def _pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class World:
    """One registry, a few images and keys for the whole module."""

    def __init__(self, root):
        self.reg = LocalRegistry(root / "registry").start()
        self.images = {}
        for name, extra in (("signed", b"1"), ("ed", b"2"), ("otherkey", b"3"), ("unsigned", b"4"),
                            ("tampered", b"5"), ("notation", b"6"), ("many", b"7"), ("broken", b"8")):
            img = build_image(root / f"{name}.tar", f"nodewarden.test/{name}:1", {"/opt/v": extra})
            self.reg.push_oci_archive(img.path, f"team/{name}:1")
            self.images[name] = img
        self.p256 = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.stranger = ec.generate_private_key(ec.SECP256R1())
        self.keys = SignatureRule.trusting(keys=(TrustedKey.from_pem(_pem(self.p256), "release-p256"),
                                          TrustedKey.from_pem(_pem(self.ed), "release-ed25519")))
        self.ca_key, self.ca = make_ca("NodeWarden Test CA")
        self.other_ca_key, self.other_ca = make_ca("Someone Else CA")
        self.certs = SignatureRule.trusting(certs=tuple(TrustedCert.from_pem(_cert_pem(self.ca), "test-ca")))

    def ref(self, name: str) -> Reference:
        return Reference.parse(f"{self.reg.host}/team/{name}:1")

    def digest(self, name: str) -> str:
        return self.images[name].manifest_digest

    def sign(self, name: str, key, digest: str | None = None, typ: str | None = None) -> tuple[bytes, str]:
        payload = simple_signing_payload(f"{self.reg.host}/team/{name}", digest or self.digest(name),
                                         **({"typ": typ} if typ else {}))
        return payload, cosign_signature(key, payload)

    def subject(self, name: str) -> dict:
        raw = self.reg.blob_path(self.digest(name)).read_bytes()
        return {"mediaType": MEDIA_MANIFEST, "digest": self.digest(name), "size": len(raw)}

    def target(self, name: str) -> dict:
        return self.subject(name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    why = harness.missing_requirements()
    if why:
        pytest.skip(f"real registry: {why}")
    w = World(tmp_path_factory.mktemp("sigs"))
    try:
        cosign_sign(w.reg, "team/signed", w.digest("signed"), [w.sign("signed", w.p256)])
        cosign_sign(w.reg, "team/ed", w.digest("ed"), [w.sign("ed", w.ed)])
        cosign_sign(w.reg, "team/otherkey", w.digest("otherkey"), [w.sign("otherkey", w.stranger)])
        # the tampered image carries the signed image's signature, copied under its own digest's tag
        cosign_sign(w.reg, "team/tampered", w.digest("tampered"), [w.sign("tampered", w.p256, w.digest("signed"))])
        # several signatures: a stranger's first, then ours
        cosign_sign(w.reg, "team/many", w.digest("many"), [w.sign("many", w.stranger), w.sign("many", w.ed)])
        yield w
    finally:
        w.reg.stop()


@pytest.fixture
def verifier(world):
    c = RegistryClient(timeout=5)
    yield SignatureVerifier(c, timeout=5)
    c.close()


# --- cosign ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,signer", [("signed", "release-p256"), ("ed", "release-ed25519")])
def test_cosign_signed_image_verifies(world, verifier, name, signer):
    res = verifier.verify(world.ref(name), world.digest(name), world.keys)
    assert res.verified and res.reason == "verified" and res.kind == "cosign" and res.signer == signer
    assert f"{world.reg.host}/team/{name}" in res.detail and res.signatures == 1
    assert res.line().startswith(f"signed (cosign) by {signer}")


@pytest.mark.parametrize("name,reason,text", [
    ("otherkey", "other-key", "none of the trusted keys"),
    ("unsigned", "unsigned", "no cosign signature"),
    ("tampered", "digest-mismatch", "is for sha256:"),
])
def test_cosign_not_verified_with_reason(world, verifier, name, reason, text):
    res = verifier.verify(world.ref(name), world.digest(name), world.keys)
    assert not res.verified and res.reason == reason and text in res.detail, res
    assert "\n" not in res.line()


def test_cosign_one_good_signature_among_several(world, verifier):
    res = verifier.verify(world.ref("many"), world.digest("many"), world.keys)
    assert res.verified and res.signer == "release-ed25519" and res.signatures == 2


def test_cosign_key_of_the_other_algorithm_does_not_verify(world, verifier):
    only_ed = SignatureRule.trusting(keys=(TrustedKey.from_pem(_pem(world.ed), "ed-only"),))
    res = verifier.verify(world.ref("signed"), world.digest("signed"), only_ed)
    assert res.reason == "other-key"


def test_cosign_identity_constraint(world, verifier):
    pol = SignatureRule.trusting(keys=world.keys.keys, identities=("registry.example/team/signed",))
    assert verifier.verify(world.ref("signed"), world.digest("signed"), pol).reason == "other-key"
    pol = SignatureRule.trusting(keys=world.keys.keys, identities=(f"{world.reg.host}/team/signed",))
    assert verifier.verify(world.ref("signed"), world.digest("signed"), pol).verified


def _flip_last_bit(sig_b64: str) -> str:
    raw = base64.b64decode(sig_b64)
    return base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()  # still DER: s is off by one bit


def test_cosign_broken_signatures(world, verifier, tmp_path):
    """Each way a signature can be bad, on an image of its own: the reason names it."""
    def not_base64(n, d):
        return [(world.sign(n, world.p256, d)[0], "%%% not base64 %%%")]

    def flipped(n, d):
        payload, sig = world.sign(n, world.p256, d)
        return [(payload, _flip_last_bit(sig))]

    def wrong_type(n, d):
        return [world.sign(n, world.p256, d, typ="something else")]

    def not_json(n, d):
        return [(b"not json", cosign_signature(world.p256, b"not json"))]

    cases = {}
    for i, make in enumerate((not_base64, flipped, wrong_type, not_json)):
        name = f"broken{i}"
        img = build_image(tmp_path / f"{name}.tar", f"nodewarden.test/{name}:1", {"/opt/b": make.__name__.encode()})
        world.reg.push_oci_archive(img.path, f"team/{name}:1")
        cosign_sign(world.reg, f"team/{name}", img.manifest_digest, make(name, img.manifest_digest))
        res = verifier.verify(Reference.parse(f"{world.reg.host}/team/{name}:1"), img.manifest_digest, world.keys)
        cases[make.__name__] = (res.reason, res.detail)
    assert cases["not_base64"][0] == "invalid-signature"
    assert cases["flipped"][0] == "other-key"  # an altered signature and another key's look the same
    assert cases["wrong_type"][0] == "invalid-signature" and "type" in cases["wrong_type"][1]
    assert cases["not_json"][0] == "invalid-signature"


def test_cosign_payload_corrupt_in_the_registry(world, verifier):
    """The payload blob served is not the one the signature manifest names: unreadable."""
    payload, sig = world.sign("broken", world.p256)
    cosign_sign(world.reg, "team/broken", world.digest("broken"), [(payload, sig)])
    import hashlib
    world.reg.corrupt_blob("sha256:" + hashlib.sha256(payload).hexdigest())
    res = verifier.verify(world.ref("broken"), world.digest("broken"), world.keys)
    assert res.reason == "unreadable" and "digest mismatch" in res.detail


# --- Notation -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notation_images(world, tmp_path_factory):
    """Images with Notation signatures of each kind, attached through the referrers fallback tag."""
    root = tmp_path_factory.mktemp("notation")
    leaf_ec_key, leaf_ec = make_leaf(world.ca_key, world.ca, "signer-ec")
    leaf_rsa_key, leaf_rsa = make_leaf(world.ca_key, world.ca, "signer-rsa",
                                       key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    other_key, other_leaf = make_leaf(world.other_ca_key, world.other_ca, "stranger")
    tls_key, tls_leaf = make_leaf(world.ca_key, world.ca, "tls-only", code_signing=False)
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = {}

    def image(name):
        img = build_image(root / f"{name}.tar", f"nodewarden.test/n-{name}:1", {"/opt/n": name.encode()})
        world.reg.push_oci_archive(img.path, f"team/n-{name}:1")
        raw = world.reg.blob_path(img.manifest_digest).read_bytes()
        subject = {"mediaType": MEDIA_MANIFEST, "digest": img.manifest_digest, "size": len(raw)}
        out[name] = (Reference.parse(f"{world.reg.host}/team/n-{name}:1"), img.manifest_digest)
        return f"team/n-{name}", subject

    repo, s = image("ec")
    notation_attach(world.reg, repo, s, notation_envelope(leaf_ec_key, [leaf_ec, world.ca], s))
    repo, s = image("rsa")  # the chain without the root: the trust anchor completes it
    notation_attach(world.reg, repo, s, notation_envelope(leaf_rsa_key, [leaf_rsa], s))
    repo, s = image("stranger")
    notation_attach(world.reg, repo, s, notation_envelope(other_key, [other_leaf, world.other_ca], s))
    repo, s = image("copied")  # a valid signature of another image, attached to this one
    notation_attach(world.reg, repo, s, notation_envelope(leaf_ec_key, [leaf_ec, world.ca],
                                                          {**s, "digest": world.digest("signed")}))
    repo, s = image("tampered")
    env = json.loads(notation_envelope(leaf_ec_key, [leaf_ec, world.ca], s))
    env["signature"] = env["signature"][:-4] + ("AAAA" if not env["signature"].endswith("AAAA") else "BBBB")
    notation_attach(world.reg, repo, s, json.dumps(env).encode())
    repo, s = image("expired")
    notation_attach(world.reg, repo, s, notation_envelope(leaf_ec_key, [leaf_ec], s,
                                                          {"io.cncf.notary.expiry": past},
                                                          ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"]))
    repo, s = image("tls")
    notation_attach(world.reg, repo, s, notation_envelope(tls_key, [tls_leaf, world.ca], s))
    repo, s = image("unknowncrit")
    notation_attach(world.reg, repo, s, notation_envelope(leaf_ec_key, [leaf_ec], s, {"x-made-up": 1},
                                                          ["io.cncf.notary.signingScheme", "x-made-up"]))
    repo, s = image("garbage")
    notation_attach(world.reg, repo, s, b"{this is not a JWS")
    repo, s = image("deep")  # nesting past Python's recursion limit: RecursionError in json.loads
    notation_attach(world.reg, repo, s, b"[" * 300_000)
    image("none")
    return out


@pytest.mark.parametrize("name", ["ec", "rsa"])
def test_notation_signature_verifies_against_the_ca(world, verifier, notation_images, name):
    ref, digest = notation_images[name]
    res = verifier.verify(ref, digest, world.certs)
    assert res.verified and res.kind == "notation" and res.signer.startswith("test-ca") and f"signer-{name}" in \
        res.signer, res


@pytest.mark.parametrize("name,reason,text", [
    ("stranger", "other-key", "leads to none of the trusted certificates"),
    ("copied", "digest-mismatch", "is for sha256:"),
    ("tampered", "invalid-signature", "does not verify with its own certificate"),
    ("expired", "invalid-signature", "expired"),
    ("tls", "invalid-signature", "code signing"),
    ("unknowncrit", "invalid-signature", "x-made-up"),
    ("garbage", "unreadable", "not a JWS"),
    ("deep", "unreadable", "RecursionError"),
    ("none", "unsigned", "no Notation signature"),
])
def test_notation_not_verified_with_reason(world, verifier, notation_images, name, reason, text):
    ref, digest = notation_images[name]
    res = verifier.verify(ref, digest, world.certs)
    assert not res.verified and res.reason == reason and text in res.detail, res


def test_notation_against_another_ca(world, verifier, notation_images):
    ref, digest = notation_images["ec"]
    pol = SignatureRule.trusting(certs=tuple(TrustedCert.from_pem(_cert_pem(world.other_ca), "other-ca")))
    res = verifier.verify(ref, digest, pol)
    assert res.reason == "other-key" and "other-ca" in res.detail


def test_keys_and_certificates_together(world, verifier, notation_images):
    both = SignatureRule.trusting(keys=world.keys.keys, certs=world.certs.certs)
    ref, digest = notation_images["ec"]
    assert verifier.verify(ref, digest, both).kind == "notation"
    assert verifier.verify(world.ref("signed"), world.digest("signed"), both).kind == "cosign"
    res = verifier.verify(world.ref("unsigned"), world.digest("unsigned"), both)
    assert res.reason == "unsigned" and "cosign or Notation" in res.detail


# --- policy, bad input, cache, registry down ------------------------------------------------------


def test_the_policys_own_entry_is_what_the_verifier_takes(world, verifier, notation_images, tmp_path):
    """agent/policy's `signatures:` entry (keys and certificates parsed at load) goes to verify() as it is."""
    from agent.policy.loader import parse

    (tmp_path / "release.pub").write_bytes(_pem(world.p256))
    (tmp_path / "ca.pem").write_bytes(_cert_pem(world.ca))
    pol = parse(f"""signatures:
  - images: ["{world.reg.host}/team/*"]
    keys: [release.pub]
    certificates: [ca.pem]
""", str(tmp_path / "policy.yaml")).signatures
    rule = pol.rule_for(f"{world.reg.host}/team/signed:1")
    res = verifier.verify(world.ref("signed"), world.digest("signed"), rule)
    assert res.verified and res.signer == "release.pub"
    ref, digest = notation_images["ec"]
    assert verifier.verify(ref, digest, rule).kind == "notation"
    assert verifier.verify(world.ref("otherkey"), world.digest("otherkey"), rule).reason == "other-key"


def test_keys_and_certificates_from_pem(world, tmp_path):
    (tmp_path / "k.pem").write_bytes(_pem(world.p256))
    (tmp_path / "ca.pem").write_bytes(_cert_pem(world.ca) + _cert_pem(world.other_ca))
    k = TrustedKey.from_file(str(tmp_path / "k.pem"))
    assert k.name == "k.pem" and k.fingerprint.startswith("sha256:")
    assert [c.name for c in TrustedCert.from_file(str(tmp_path / "ca.pem"))] == ["ca.pem", "ca.pem"]
    for make, arg, msg in ((TrustedKey.from_pem, "not pem", "not a PEM public key"),
                           (TrustedKey.from_file, str(tmp_path / "absent.pem"), "No such file"),
                           (TrustedCert.from_pem, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                            "not a PEM certificate"),
                           (TrustedCert.from_pem, "nothing", "no PEM certificate")):
        with pytest.raises(SignatureConfigError, match=msg) as e:
            make(arg)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("digest", ["", "sha256:xyz", None, "md5:" + "0" * 32])
def test_bad_input_is_a_result_not_an_exception(world, verifier, digest):
    res = verifier.verify(world.ref("signed"), digest, world.keys)
    assert not res.verified and res.reason == "unreadable"
    assert verifier.verify("Not A Ref", world.digest("signed"), world.keys).reason == "unreadable"


def test_verify_image_tries_each_digest(world, verifier):
    res = verifier.verify_image(world.ref("signed"), ["sha256:" + "0" * 64, world.digest("signed")], world.keys)
    assert res.verified
    res = verifier.verify_image(world.ref("tampered"), ["sha256:" + "0" * 64, world.digest("tampered")], world.keys)
    assert res.reason == "digest-mismatch"  # the most telling of unsigned and digest-mismatch


def test_registry_stopped(tmp_path):
    """Registry down: RegistryError within the verifier's timeout (the gate's on_error); what was
    verified before stays verified from the cache."""
    why = harness.missing_requirements()
    if why:
        pytest.skip(f"real registry: {why}")
    reg = LocalRegistry(tmp_path / "reg").start()
    try:
        img = build_image(tmp_path / "a.tar", "nodewarden.test/a:1")
        reg.push_oci_archive(img.path, "team/a:1")
        key = ec.generate_private_key(ec.SECP256R1())
        payload = simple_signing_payload(f"{reg.host}/team/a", img.manifest_digest)
        cosign_sign(reg, "team/a", img.manifest_digest, [(payload, cosign_signature(key, payload))])
        pol = SignatureRule.trusting(keys=(TrustedKey.from_pem(_pem(key), "k"),))
        v = SignatureVerifier(RegistryClient(timeout=30), timeout=2)
        ref = Reference.parse(f"{reg.host}/team/a:1")
        assert v.verify(ref, img.manifest_digest, pol).verified
        assert v.verify(ref, img.manifest_digest, pol).verified and v.stats["hits"] == 1
    finally:
        reg.stop()
    assert v.verify(ref, img.manifest_digest, pol).verified  # cached
    t0 = time.monotonic()
    with pytest.raises(RegistryError) as e:
        v.verify(ref, "sha256:" + "1" * 64, pol)
    assert time.monotonic() - t0 < 2.5 and e.value.kind == "unreachable" and "\n" not in str(e.value)


def test_cache_is_bounded(world):
    v = SignatureVerifier(RegistryClient(timeout=5), timeout=5, cache_size=2)
    for name in ("signed", "ed", "unsigned"):
        v.verify(world.ref(name), world.digest(name), world.keys)
    assert len(v._cache) == 2 and v.stats["evicted"] == 1 and v.stats["misses"] == 3
