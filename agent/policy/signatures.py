"""The policy's `signatures:` section: which images must be signed, by whom, and what happens when they are not.

    signatures:
      - images: ["registry.example.com/payments/*"]   # reference globs (fnmatch); first matching entry wins
        keys: [keys/payments.pub]        # cosign public keys: PEM files (relative to the policy file) or inline PEM;
                                         #   ECDSA P-256, Ed25519 or RSA
        certificates: [certs/ca.pem]     # Notation: trusted root/intermediate certificates (PEM bundles), same forms
        identities: [registry.example.com/payments/api]  # cosign: the signed docker-reference (default: any)
        action: block                    # unsigned, or signed by no trusted key: block (default) | alert
        on_error: block                  # the registry cannot be asked or its answer cannot be read:
                                         #   allow | alert | block (default: the policy's on_error.action)

An image no entry names is not checked. An entry needs at least one key or certificate. Keys and certificates are
read and parsed when the policy loads (a bad PEM, a file that is not there or a DSA key rejects the whole policy
with its line), so the gate never meets a key it cannot use. Verification itself is in the image gate
(agent/imagegate/signatures.py); this module only models and validates.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from agent.policy.nodes import Walker

_KEYS = ("images", "keys", "certificates", "identities", "action", "on_error")
ACTIONS = ("alert", "block")
ON_ERROR = ("allow", "alert", "block")
_MAX_PEM = 64 << 10  # a public key is under 1 KiB and a chain a few; beyond this it is not what it says


class SignatureConfigError(ValueError):
    """A key or certificate that cannot be used (the policy loader turns it into an error with its line)."""


@dataclass(frozen=True)
class TrustedKey:
    """A cosign public key: ECDSA P-256, Ed25519 or RSA (cosign's own kinds)."""

    name: str  # the file it came from, or "inline #N": named in findings as "verified by"
    key: object = field(compare=False, repr=False)  # cryptography's public key object
    fingerprint: str = ""  # sha256 of the SubjectPublicKeyInfo DER

    @classmethod
    def from_pem(cls, pem: bytes | str, name: str = "") -> TrustedKey:
        return _public_key(name or "(inline)", pem.encode() if isinstance(pem, str) else pem)[0]

    @classmethod
    def from_file(cls, path: str, name: str = "") -> TrustedKey:
        return cls.from_pem(_read_pem(path), name or os.path.basename(path))


@dataclass(frozen=True)
class TrustedCert:
    """A Notation trust anchor: a root or intermediate CA certificate (or the signing one itself)."""

    name: str
    cert: object = field(compare=False, repr=False)  # cryptography.x509.Certificate
    fingerprint: str = ""  # sha256 of the certificate DER

    @classmethod
    def from_pem(cls, pem: bytes | str, name: str = "") -> list[TrustedCert]:
        """Every certificate of a PEM bundle."""
        return _certificate(name or "(inline)", pem.encode() if isinstance(pem, str) else pem)

    @classmethod
    def from_file(cls, path: str, name: str = "") -> list[TrustedCert]:
        return cls.from_pem(_read_pem(path), name or os.path.basename(path))


@dataclass(frozen=True)
class SignatureRule:
    """One entry: what must have signed the images it names. The verifier (agent/imagegate/signatures.py) reads
    keys, certs, identities and fingerprint."""

    images: tuple[str, ...]
    keys: tuple[TrustedKey, ...] = ()
    certs: tuple[TrustedCert, ...] = ()
    action: str = "block"
    on_error: str | None = None  # None: the policy's on_error.action
    index: int = 0  # its place in the list: findings name `signatures[N]`
    identities: tuple[str, ...] = ()  # cosign: the payload's docker-reference must be one of these (empty: any)

    def matches(self, image: str) -> bool:
        return bool(image) and any(fnmatchcase(image, g) for g in self.images)

    @classmethod
    def trusting(cls, keys=(), certs=(), identities=()) -> SignatureRule:
        """An entry for every image, for callers without a policy file (tests, a one-off check)."""
        return cls(("*",), tuple(keys), tuple(certs), identities=tuple(identities))

    @property
    def fingerprint(self) -> str:
        """Of what it trusts: a verifier's cached result holds for this entry only."""
        h = hashlib.sha256()
        for part in (*(k.fingerprint for k in self.keys), "|", *(c.fingerprint for c in self.certs), "|",
                     *self.identities):
            h.update(part.encode() + b"\0")
        return h.hexdigest()[:24]


@dataclass(frozen=True)
class SignaturePolicy:
    rules: tuple[SignatureRule, ...] = ()

    def rule_for(self, image: str) -> SignatureRule | None:
        """The first entry whose globs match `image`, or None (the image need not be signed)."""
        for r in self.rules:
            if r.matches(image):
                return r
        return None


def walk(w: Walker, node, base_dir: str = ".", where: str = "signatures") -> SignaturePolicy:
    rules = []
    for i, item in enumerate(w.sequence(node, where)):
        at = f"{where}[{i}]"
        fields = w.mapping(item, at, _KEYS)
        if not fields:
            w.err(item, at, "expected a mapping with images and keys or certificates")
            continue
        images = tuple(g for _n, g in w.strings(fields["images"][1], f"{at}.images")) if "images" in fields else ()
        if not images:
            w.err(item, at, "images: at least one image reference glob is needed")
        keys = tuple(_pems(w, fields["keys"][1], f"{at}.keys", base_dir, _public_key)) if "keys" in fields else ()
        certs = (tuple(_pems(w, fields["certificates"][1], f"{at}.certificates", base_dir, _certificate))
                 if "certificates" in fields else ())
        if "keys" not in fields and "certificates" not in fields:
            w.err(item, at, "needs keys (cosign) or certificates (Notation): whom must the image be signed by?")
        action = _choice(w, fields, "action", at, ACTIONS) or "block"
        on_error = _choice(w, fields, "on_error", at, ON_ERROR)
        ids = (tuple(x for _n, x in w.strings(fields["identities"][1], f"{at}.identities"))
               if "identities" in fields else ())
        rules.append(SignatureRule(images, keys, certs, action, on_error, i, ids))
    return SignaturePolicy(tuple(rules))


def _choice(w: Walker, fields: dict, key: str, at: str, allowed: tuple[str, ...]) -> str | None:
    if key not in fields:
        return None
    node = fields[key][1]
    text = w.scalar(node, f"{at}.{key}")
    if text is not None and text.lower() not in allowed:
        w.err(node, f"{at}.{key}", f"expected {' or '.join(allowed)}, got {text[:80]!r}")
        return None
    return text.lower() if text is not None else None


def _pems(w: Walker, node, where: str, base_dir: str, parse):
    """Each item: inline PEM text, or a file (relative to the policy's directory); parsed by `parse`."""
    for j, (item, text) in enumerate(w.strings(node, where)):
        at = f"{where}[{j}]"
        if "-----BEGIN " in text:
            name, data = f"inline #{j}", text.encode()
        else:
            try:
                data = _read_pem(text if os.path.isabs(text) else os.path.join(base_dir, text), text)
            except SignatureConfigError as e:
                w.err(item, at, str(e))
                continue
            name = text
        try:
            yield from parse(name, data)
        except ValueError as e:
            w.err(item, at, f"{name[:80]!r}: {e}")


def _read_pem(path: str, shown: str = "") -> bytes:
    shown = (shown or path)[:80]
    try:
        # O_NONBLOCK: a FIFO named as a key must not hang the policy load in open()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SignatureConfigError(f"{shown!r}: not a regular file")
            data = f.read(_MAX_PEM + 1)
    except OSError as e:
        raise SignatureConfigError(f"{shown!r}: cannot read: {e.strerror}") from None
    if len(data) > _MAX_PEM:
        raise SignatureConfigError(f"{shown!r}: larger than {_MAX_PEM} bytes")
    return data


def _public_key(name: str, data: bytes) -> list[TrustedKey]:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SignatureConfigError(f"not a PEM public key ({' '.join(str(e).split())[:120]})") from None
    ok = (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)) or isinstance(
        key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey)
    if not ok:
        raise SignatureConfigError(f"{type(key).__name__.removeprefix('_')}: only ECDSA P-256, Ed25519 and RSA "
                                   "keys (cosign's kinds) are supported")
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return [TrustedKey(name, key, "sha256:" + hashlib.sha256(der).hexdigest())]


def _certificate(name: str, data: bytes) -> list[TrustedCert]:
    """Every certificate of a PEM bundle (a root and its intermediates in one file)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes

    out = []
    for block in data.split(b"-----END CERTIFICATE-----")[:64]:
        if b"-----BEGIN CERTIFICATE-----" not in block:
            continue
        try:
            cert = x509.load_pem_x509_certificate(block + b"-----END CERTIFICATE-----\n")
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise SignatureConfigError(f"not a PEM certificate ({' '.join(str(e).split())[:120]})") from None
        out.append(TrustedCert(name, cert, "sha256:" + cert.fingerprint(hashes.SHA256()).hex()))
    if not out:
        raise SignatureConfigError("no PEM certificate in it")
    return out
