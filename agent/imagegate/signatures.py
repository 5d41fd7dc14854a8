"""Image signatures as registries hold them: cosign (key-based) and Notation (X.509, JWS), verified
with `cryptography`.

cosign (github.com/sigstore/cosign, specs/SIGNATURE_SPEC.md): the signatures of the image whose
manifest digest is sha256:HEX live in the same repository under the tag `sha256-HEX.sig`, an OCI
image manifest with one layer per signature. A layer is a simple-signing payload
  {"critical": {"identity": {"docker-reference": "reg/repo"},
                "image": {"docker-manifest-digest": "sha256:HEX"},
                "type": "cosign container image signature"}, "optional": {...}}
and its annotation `dev.cosignproject.cosign/signature` is the base64 signature of the payload
bytes: ECDSA (SHA-256, ASN.1 DER), Ed25519 (pure), or RSA PKCS#1 v1.5 (SHA-256). The key verifies
the payload; the payload's digest must be the image's.

Notation (notaryproject/specifications: signature-specification.md, signature-envelope-jws.md):
a signature is an OCI artifact whose `subject` is the image, artifactType
`application/vnd.cncf.notary.signature`, found through the referrers API (or its tag fallback),
with one `application/jose+json` layer: a flattened JWS JSON {payload, protected, header: {x5chain},
signature}. The protected header carries alg (PS256/384/512, ES256/384/512), cty
`application/vnd.cncf.notary.payload.v1+json` and crit (which must list the signing scheme); the
payload is {"targetArtifact": {"digest", "mediaType", "size"}}. The leaf of x5chain verifies the
JWS, the chain must end at a certificate the policy trusts. cryptography 38 has no path validation,
so the chain is checked here link by link: issuer names, signatures, validity, CA constraints, the
leaf's key usage and code-signing EKU.

Results: SignatureResult, verified (by which key or certificate) or not with a reason:
  unsigned           no signature at all for this digest
  other-key          a well-formed signature that no trusted key or certificate verifies (signed
                     by someone else, or its bytes altered: the maths cannot tell the two apart)
  invalid-signature  a malformed signature, a JWS that its own certificate does not verify, a bad
                     or expired certificate chain, a payload of the wrong type
  digest-mismatch    a trusted signature, over another image's digest (a signature copied over)
  unreadable         the signature artifacts cannot be read (bad JSON, too large, blob corrupt)
Never an exception for bad data; RegistryError only when the registry cannot be asked (down,
timeout, auth): the gate maps it to the policy's on_error. Results are cached per (repository,
digest, policy), bounded, a verified one for longer than a failed one (a signature pushed after
the image is seen on the next check).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.imagegate.registry import Reference, RegistryClient, RegistryError
from agent.policy.signatures import SignatureRule, TrustedCert, TrustedKey

COSIGN_SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_TYPE = "cosign container image signature"
NOTATION_ARTIFACT = "application/vnd.cncf.notary.signature"
NOTATION_JWS = "application/jose+json"
NOTATION_PAYLOAD = "application/vnd.cncf.notary.payload.v1+json"
NOTATION_SCHEME = "io.cncf.notary.signingScheme"
NOTATION_EXPIRY = "io.cncf.notary.expiry"
_NOTATION_KNOWN_CRIT = {NOTATION_SCHEME, NOTATION_EXPIRY, "io.cncf.notary.authenticSigningTime"}
_SCHEMES = ("notary.x509", "notary.x509.signingAuthority")
MAX_PAYLOAD = 64 << 10  # a simple-signing payload is a few hundred bytes
MAX_ENVELOPE = 512 << 10  # a JWS with a certificate chain: a few KB
MAX_SIGNATURES = 16  # per image and kind: more is an attack on our time, not a signing practice
MAX_CHAIN = 8
_BLOB_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

REASONS = ("verified", "unsigned", "other-key", "invalid-signature", "digest-mismatch", "unreadable")
# When nothing verified, the result says the most telling reason among the signatures seen.
_RANK = {"digest-mismatch": 4, "other-key": 3, "invalid-signature": 2, "unreadable": 1, "unsigned": 0}
# The registry answered, with bytes that are no usable signature: a result, not an error.
_DATA_ERRORS = ("digest", "too-large", "bad-document")
_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


# What the policy trusts (keys, certificates, identities) is agent/policy/signatures.py's: its SignatureRule (an
# entry of the policy's signatures: section, parsed with its line numbers at load) is the `policy` argument below;
# SignatureRule.trusting(keys, certs, identities) makes one without a policy file.


@dataclass(frozen=True)
class SignatureResult:
    verified: bool
    reason: str  # one of REASONS
    digest: str  # the image digest asked about
    kind: str = ""  # "cosign" | "notation": what verified, or the signature the reason is about
    signer: str = ""  # the trusted key's or certificate's name (and the leaf's subject for Notation)
    detail: str = ""  # one line for the finding
    signatures: int = 0  # signatures looked at

    def line(self) -> str:
        if self.verified:
            return f"signed ({self.kind}) by {self.signer}"
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


# --- verification ---------------------------------------------------------------------------------


class _Bad(Exception):
    """A signature failed with a reason (internal)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class SignatureVerifier:
    """Verifies images' signatures in their registry; thread-safe; one per agent.

    timeout: seconds for one verification in all (manifest, referrers, payloads); a registry slower
    than that is RegistryError(kind="timeout").
    """

    def __init__(self, client: RegistryClient, timeout: float = 10.0, cache_size: int = 1024,
                 ttl_verified: float = 3600.0, ttl_failed: float = 60.0):
        self.client = client
        self.timeout = timeout
        self.cache_size = max(1, cache_size)
        self.ttl_verified, self.ttl_failed = ttl_verified, ttl_failed
        self._cache: OrderedDict[tuple, tuple[float, SignatureResult]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"hits": 0, "misses": 0, "evicted": 0}

    def verify(self, ref: Reference | str, digest: str, policy: SignatureRule) -> SignatureResult:
        """Is the image `digest` in ref's repository signed as `policy` asks? RegistryError only
        when the registry cannot be asked."""
        try:
            r = Reference.parse(ref) if isinstance(ref, str) else ref
        except RegistryError as e:
            return SignatureResult(False, "unreadable", str(digest)[:80], detail=str(e))
        if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
            return SignatureResult(False, "unreadable", str(digest)[:80], detail="not a sha256 image digest")
        key = (r.name, digest, policy.fingerprint)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] > now:
                self._cache.move_to_end(key)
                self.stats["hits"] += 1
                return hit[1]
            self.stats["misses"] += 1
        with self.client.deadline(self.timeout):
            res = self._verify(r, digest, policy)
        with self._lock:
            self._cache[key] = (now + (self.ttl_verified if res.verified else self.ttl_failed), res)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
                self.stats["evicted"] += 1
        return res

    def verify_image(self, ref: Reference | str, digests: Sequence[str], policy: SignatureRule,
                     ) -> SignatureResult:
        """The first digest that verifies (the index's, then the platform manifest's: cosign signs
        whichever the signer named); else the most telling failure among them."""
        best = None
        for d in dict.fromkeys(digests):
            res = self.verify(ref, d, policy)
            if res.verified:
                return res
            if best is None or _RANK.get(res.reason, 0) > _RANK.get(best.reason, 0):
                best = res
        return best or SignatureResult(False, "unreadable", "", detail="no digest to verify")

    def _verify(self, ref: Reference, digest: str, policy: SignatureRule) -> SignatureResult:
        results: list[SignatureResult] = []
        if policy.keys:
            results += self._cosign(ref, digest, policy)
        if policy.certs:
            results += self._notation(ref, digest, policy)
        ok = [r for r in results if r.verified]
        n = len(results)
        if ok:
            return _with_count(ok[0], n)
        if not results:
            kinds = " or ".join(k for k, on in (("cosign", policy.keys), ("Notation", policy.certs)) if on)
            return SignatureResult(False, "unsigned", digest, detail=f"no {kinds} signature for {digest[:19]}")
        worst = max(results, key=lambda r: _RANK.get(r.reason, 0))
        return _with_count(worst, n)

    # -- cosign -----------------------------------------------------------------------------------

    def _cosign(self, ref: Reference, digest: str, policy: SignatureRule) -> list[SignatureResult]:
        tag = digest.replace(":", "-", 1) + ".sig"
        try:
            m = self.client.get_manifest(ref, tag)
        except RegistryError as e:
            if e.kind == "not-found":
                return []
            if e.kind in _DATA_ERRORS:
                return [SignatureResult(False, "unreadable", digest, "cosign", detail=f"signature manifest: {e}")]
            raise
        layers = m.doc.get("layers")
        if not isinstance(layers, list):
            return [SignatureResult(False, "unreadable", digest, "cosign", detail=f"{tag}: no layers list")]
        out = []
        for layer in layers[:MAX_SIGNATURES]:
            out.append(_guarded(self._cosign_one, "cosign", ref, digest, layer, policy))
        return out

    def _cosign_one(self, ref: Reference, digest: str, layer, policy: SignatureRule) -> SignatureResult:
        if not isinstance(layer, dict) or not _BLOB_DIGEST.match(str(layer.get("digest"))):
            raise _Bad("unreadable", "signature layer is not a descriptor")
        ann = layer.get("annotations") if isinstance(layer.get("annotations"), dict) else {}
        sig_b64 = ann.get(COSIGN_SIG_ANNOTATION)
        if not isinstance(sig_b64, str) or not sig_b64:
            raise _Bad("unreadable", f"signature layer has no {COSIGN_SIG_ANNOTATION} annotation")
        try:
            sig = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError):
            raise _Bad("invalid-signature", "the signature annotation is not base64") from None
        try:
            payload = self.client.read_blob(ref, layer["digest"], MAX_PAYLOAD)
        except RegistryError as e:
            if e.kind in _DATA_ERRORS or e.kind == "not-found":
                raise _Bad("unreadable", f"signature payload: {e}") from None
            raise
        signer = _cosign_key(sig, payload, policy.keys)
        if signer is None:
            raise _Bad("other-key", "cosign signature verified by none of the trusted keys "
                                    f"({', '.join(k.name for k in policy.keys)[:200]})")
        try:
            doc = json.loads(payload)
            crit = doc["critical"]
            typ = crit["type"]
            named = crit["image"]["docker-manifest-digest"]
            identity = (crit.get("identity") or {}).get("docker-reference", "")
        except (ValueError, TypeError, KeyError, AttributeError):
            raise _Bad("invalid-signature", "signed payload is not a cosign simple-signing document") from None
        if typ != COSIGN_TYPE:
            raise _Bad("invalid-signature", f"signed payload's type is {str(typ)[:80]!r}, not {COSIGN_TYPE!r}")
        if named != digest:
            raise _Bad("digest-mismatch", f"signature by {signer.name} is for {str(named)[:80]}, the image is "
                                          f"{digest}")
        if policy.identities and identity not in policy.identities:
            raise _Bad("other-key", f"signature by {signer.name} names {str(identity)[:120]!r}, not one of the "
                                    "allowed identities")
        return SignatureResult(True, "verified", digest, "cosign", signer.name,
                               detail=f"cosign signature by {signer.name} ({signer.fingerprint[:19]})"
                                      + (f" for {identity}" if isinstance(identity, str) and identity else ""))

    # -- Notation ---------------------------------------------------------------------------------

    def _notation(self, ref: Reference, digest: str, policy: SignatureRule) -> list[SignatureResult]:
        try:
            descs = self.client.referrers(ref, digest, NOTATION_ARTIFACT)
        except RegistryError as e:
            if e.kind in _DATA_ERRORS:
                return [SignatureResult(False, "unreadable", digest, "notation", detail=f"referrers: {e}")]
            raise
        out = []
        for d in descs[:MAX_SIGNATURES]:
            out.append(_guarded(self._notation_one, "notation", ref, digest, d, policy))
        return out

    def _notation_one(self, ref: Reference, digest: str, desc: dict, policy: SignatureRule) -> SignatureResult:
        try:
            m = self.client.get_manifest(ref, desc["digest"])
        except RegistryError as e:
            if e.kind in _DATA_ERRORS or e.kind == "not-found":
                raise _Bad("unreadable", f"signature manifest: {e}") from None
            raise
        layers = m.doc.get("layers")
        layer = layers[0] if isinstance(layers, list) and layers and isinstance(layers[0], dict) else None
        if layer is None or not _BLOB_DIGEST.match(str(layer.get("digest"))):
            raise _Bad("unreadable", "Notation signature manifest has no envelope layer")
        if layer.get("mediaType") != NOTATION_JWS:
            raise _Bad("invalid-signature", f"Notation envelope {str(layer.get('mediaType'))[:60]!r} is not "
                                            "supported (JWS only)")
        try:
            env = self.client.read_blob(ref, layer["digest"], MAX_ENVELOPE)
        except RegistryError as e:
            if e.kind in _DATA_ERRORS or e.kind == "not-found":
                raise _Bad("unreadable", f"signature envelope: {e}") from None
            raise
        return _verify_jws(env, digest, policy.certs)


def _guarded(check, kind: str, ref: Reference, digest: str, item, policy) -> SignatureResult:
    """One signature checked; whatever its bytes make go wrong is a result, never an exception
    (RegistryError excepted: the registry could not be asked, which is the caller's on_error)."""
    try:
        return check(ref, digest, item, policy)
    except _Bad as b:
        return SignatureResult(False, b.reason, digest, kind, detail=b.detail)
    except RegistryError:
        raise
    except Exception as e:  # hostile input we did not foresee (deep JSON nesting: RecursionError)
        return SignatureResult(False, "unreadable", digest, kind,
                               detail=f"signature not readable: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                               if str(e) else f"signature not readable: {type(e).__name__}")


def _with_count(r: SignatureResult, n: int) -> SignatureResult:
    return SignatureResult(r.verified, r.reason, r.digest, r.kind, r.signer, r.detail, n)


def _cosign_key(sig: bytes, payload: bytes, keys: Sequence[TrustedKey]) -> TrustedKey | None:
    for k in keys:
        try:
            if isinstance(k.key, ec.EllipticCurvePublicKey):
                k.key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(k.key, ed25519.Ed25519PublicKey):
                k.key.verify(sig, payload)
            elif isinstance(k.key, rsa.RSAPublicKey):
                k.key.verify(sig, payload, padding.PKCS1v15(), hashes.SHA256())
            else:
                continue
            return k
        except (InvalidSignature, ValueError):  # ValueError: bytes that are no DER signature at all
            continue
    return None


def _b64url(s) -> bytes:
    if not isinstance(s, str):
        raise ValueError("not a string")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _verify_jws(env: bytes, digest: str, anchors: Sequence[TrustedCert]) -> SignatureResult:
    """A Notation JWS envelope (flattened JSON serialization) against the trust anchors."""
    try:
        jws = json.loads(env)
        protected_b64, payload_b64, sig_b64 = jws["protected"], jws["payload"], jws["signature"]
        protected = json.loads(_b64url(protected_b64))
        payload = json.loads(_b64url(payload_b64))
        sig = _b64url(sig_b64)
        chain_b64 = (jws.get("header") or {}).get("x5chain")
        if not isinstance(protected, dict) or not isinstance(payload, dict):
            raise ValueError("not objects")
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        raise _Bad("unreadable", "Notation envelope is not a JWS (JSON serialization)") from None
    alg = protected.get("alg")
    if not isinstance(alg, str) or alg[:2] not in ("PS", "ES") or alg[2:] not in _HASHES:
        raise _Bad("invalid-signature", f"JWS alg {str(alg)[:20]!r} is not one Notation allows")
    if protected.get("cty") != NOTATION_PAYLOAD:
        raise _Bad("invalid-signature", f"JWS cty {str(protected.get('cty'))[:80]!r} is not {NOTATION_PAYLOAD}")
    crit = protected.get("crit")
    if not isinstance(crit, list) or NOTATION_SCHEME not in crit:
        raise _Bad("invalid-signature", f"JWS crit does not list {NOTATION_SCHEME}")
    for c in crit:
        if c not in _NOTATION_KNOWN_CRIT or c not in protected:
            raise _Bad("invalid-signature", f"JWS critical header {str(c)[:60]!r} is unknown or absent")
    if protected.get(NOTATION_SCHEME) not in _SCHEMES:
        raise _Bad("invalid-signature", f"signing scheme {str(protected.get(NOTATION_SCHEME))[:60]!r} unknown")
    now = datetime.datetime.now(datetime.UTC)
    if NOTATION_EXPIRY in protected:
        try:
            expiry = datetime.datetime.fromisoformat(str(protected[NOTATION_EXPIRY]).replace("Z", "+00:00"))
            if expiry.tzinfo is None:
                raise ValueError
        except ValueError:
            raise _Bad("invalid-signature", "JWS expiry is not an RFC 3339 time") from None
        if expiry < now:
            raise _Bad("invalid-signature", f"signature expired at {protected[NOTATION_EXPIRY]}")
    if not isinstance(chain_b64, list) or not chain_b64 or len(chain_b64) > MAX_CHAIN:
        raise _Bad("invalid-signature", "JWS header has no x5chain certificate chain")
    try:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in chain_b64]
    except (ValueError, TypeError, binascii.Error):
        raise _Bad("invalid-signature", "x5chain holds something that is not a DER certificate") from None
    leaf = chain[0]
    subject = leaf.subject.rfc4514_string()[:120]
    h = _HASHES[alg[2:]]()
    signing_input = f"{protected_b64}.{payload_b64}".encode()
    try:
        pub = leaf.public_key()
        if alg.startswith("ES"):
            if not isinstance(pub, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            half = len(sig) // 2
            if len(sig) % 2 or half == 0:
                raise InvalidSignature
            der = encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
            pub.verify(der, signing_input, ec.ECDSA(h))
        else:
            if not isinstance(pub, rsa.RSAPublicKey):
                raise InvalidSignature
            pub.verify(sig, signing_input, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise _Bad("invalid-signature", f"JWS signature does not verify with its own certificate ({subject})") \
            from None
    anchor = _chain_to(chain, anchors, now)
    target = payload.get("targetArtifact") if isinstance(payload.get("targetArtifact"), dict) else {}
    named = target.get("digest")
    if named != digest:
        raise _Bad("digest-mismatch", f"Notation signature by {subject} is for {str(named)[:80]}, the image is "
                                      f"{digest}")
    return SignatureResult(True, "verified", digest, "notation", f"{anchor.name} ({subject})",
                           detail=f"Notation signature by {subject}, chained to {anchor.name}")


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    pub = parent.public_key()
    try:
        h = child.signature_hash_algorithm
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(), h)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(h))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes)
        else:
            return False
        return True
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_cert(cert: x509.Certificate, now, leaf: bool) -> None:
    name = cert.subject.rfc4514_string()[:120]
    if not (cert.not_valid_before.replace(tzinfo=datetime.UTC) <= now
            <= cert.not_valid_after.replace(tzinfo=datetime.UTC)):
        raise _Bad("invalid-signature", f"certificate {name} is not valid now (valid {cert.not_valid_before:%Y-%m-%d}"
                                        f" to {cert.not_valid_after:%Y-%m-%d})")
    if not leaf:
        if not _is_ca(cert):
            raise _Bad("invalid-signature", f"certificate {name} issues another but is not a CA")
        return
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            raise _Bad("invalid-signature", f"signing certificate {name} lacks the digitalSignature key usage")
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
            raise _Bad("invalid-signature", f"signing certificate {name} is not for code signing (EKU)")
    except x509.ExtensionNotFound:
        pass


def _chain_to(chain: list[x509.Certificate], anchors: Sequence[TrustedCert], now) -> TrustedCert:
    """The trust anchor that x5chain (leaf first) leads to; _Bad otherwise."""
    _check_cert(chain[0], now, leaf=True)
    by_der = {a.cert.public_bytes(serialization.Encoding.DER): a for a in anchors}
    for i, cert in enumerate(chain):
        der = cert.public_bytes(serialization.Encoding.DER)
        if der in by_der:  # the chain reached a trusted certificate itself
            return by_der[der]
        for a in anchors:  # or a trusted certificate issued this one
            if _issued_by(cert, a.cert):
                _check_cert(a.cert, now, leaf=False)
                return a
        if i + 1 < len(chain):
            nxt = chain[i + 1]
            if not _issued_by(cert, nxt):
                raise _Bad("invalid-signature", f"x5chain is broken: {cert.subject.rfc4514_string()[:80]} is "
                                                f"not issued by {nxt.subject.rfc4514_string()[:80]}")
            _check_cert(nxt, now, leaf=False)
    leaf = chain[0].subject.rfc4514_string()[:120]
    raise _Bad("other-key", f"Notation signature by {leaf}: its chain leads to none of the trusted certificates "
                            f"({', '.join(a.name for a in anchors)[:200]})")
