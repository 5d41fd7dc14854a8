"""The policy's `signatures:` section: keys and certificates parsed at load, every mistake one line with its place."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from agent.policy.loader import PolicyError, parse


def _pub(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_files_relative_to_the_policy_inline_pem_and_first_match_wins(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team.pub").write_text(_pub(ec.generate_private_key(ec.SECP256R1())))
    (tmp_path / "ca.pem").write_text(_ca_pem())
    inline = _pub(ed25519.Ed25519PrivateKey.generate()).replace("\n", "\n        ")
    text = f"""signatures:
  - images: ["reg.local/pay/*"]
    keys:
      - keys/team.pub
      - |
        {inline}
    action: alert
    on_error: allow
  - images: ["reg.local/*"]
    certificates: [ca.pem]
"""
    p = parse(text, str(tmp_path / "policy.yaml"))
    first, second = p.signatures.rules
    assert [k.name for k in first.keys] == ["keys/team.pub", "inline #1"]
    assert isinstance(first.keys[0].key, ec.EllipticCurvePublicKey)
    assert isinstance(first.keys[1].key, ed25519.Ed25519PublicKey)
    assert (first.action, first.on_error) == ("alert", "allow")
    assert (second.action, second.on_error, second.index) == ("block", None, 1)
    assert second.certs[0].cert.subject.rfc4514_string() == "CN=test root"
    assert p.signatures.rule_for("reg.local/pay/api:1") is first
    assert p.signatures.rule_for("reg.local/web:2") is second
    assert p.signatures.rule_for("docker.io/library/nginx:1") is None


def test_no_section_checks_nothing():
    assert parse("categories: {}\n").signatures.rule_for("reg.local/x:1") is None


@pytest.mark.parametrize("entry,needle", [
    ('{images: ["a/*"]}', "needs keys (cosign) or certificates"),
    ("{keys: [k.pub]}", "images: at least one image reference glob"),
    ('{images: ["a/*"], keys: [missing.pub]}', "signatures[0].keys[0]: 'missing.pub': cannot read"),
    ('{images: ["a/*"], keys: [junk.pub]}', "not a PEM public key"),
    ('{images: ["a/*"], keys: [p384.pub]}', "only ECDSA P-256, Ed25519 and RSA"),
    ('{images: ["a/*"], certificates: [junk.pub]}', "no PEM certificate in it"),
    ('{images: ["a/*"], keys: [k.pub], action: deny}', "signatures[0].action: expected alert or block"),
    ('{images: ["a/*"], keys: [k.pub], on_error: maybe}', "expected allow or alert or block"),
    ('{images: ["a/*"], keys: [k.pub], trust: all}', "unknown key 'trust'"),
])
def test_each_mistake_rejects_the_policy_with_its_line(tmp_path, entry, needle):
    (tmp_path / "k.pub").write_text(_pub(ec.generate_private_key(ec.SECP256R1())))
    (tmp_path / "junk.pub").write_text("-- not a key --\n")
    (tmp_path / "p384.pub").write_text(_pub(ec.generate_private_key(ec.SECP384R1())))
    name = str(tmp_path / "policy.yaml")
    with pytest.raises(PolicyError) as e:
        parse(f"signatures:\n  - {entry}\n", name)
    assert len(e.value.errors) == 1 and e.value.errors[0].startswith(f"{name}:2:"), e.value.errors
    assert needle in e.value.errors[0], e.value.errors


def test_not_a_list_is_one_error():
    with pytest.raises(PolicyError, match=r"<policy>:1:13: signatures: expected a list"):
        parse("signatures: yes\n")


def test_a_fifo_or_directory_as_a_key_is_refused_not_waited_on(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.pub")
    (tmp_path / "dir.pub").mkdir()
    with pytest.raises(PolicyError) as e:
        parse('signatures:\n  - {images: ["a/*"], keys: [fifo.pub, dir.pub]}\n', str(tmp_path / "p.yaml"))
    assert [m.rsplit(": ", 1)[-1] for m in e.value.errors] == ["not a regular file", "Is a directory"], e.value.errors
