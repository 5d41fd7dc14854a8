"""`nodewarden scan` of a registry reference (issue 16), against a real registry (Debian's docker-registry on
loopback): the same verdict and findings as the same image from its OCI tarball; credentials from a docker-style
config or --username/--password (Basic auth through htpasswd); the policy's signatures checked in the same registry;
a stopped registry is one line and status 2."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness import registry as harness
from tests.harness.oci import build_image
from tests.harness.registry import PASSWORD, USER, LocalRegistry, cosign_sign, cosign_signature, simple_signing_payload
from tests.unit.imagegate_helpers import EICAR

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _scan(*args, env=None):
    return subprocess.run([sys.executable, "-m", "agent.cli", "scan", "--db", "", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, **(env or {})})


def _findings(rec: dict) -> list:
    return sorted((f["category"], f["rule"], f.get("path", "")) for f in rec["image.findings"])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("scanreg")
    return {"bad": build_image(root / "bad.tar", "nodewarden.test/scanreg-bad:1", {"/opt/eicar.com": EICAR}),
            "clean": build_image(root / "clean.tar", "nodewarden.test/scanreg-clean:1", {"/opt/v": b"1\n"})}


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory, images):
    why = harness.missing_requirements()
    if why:
        pytest.skip(f"real registry: {why}")
    reg = LocalRegistry(tmp_path_factory.mktemp("reg-open")).start()
    try:
        for name, img in images.items():
            reg.push_oci_archive(img.path, f"team/{name}:1")
        yield reg
    finally:
        reg.stop()


def test_registry_ref_gives_the_tarballs_verdict(open_registry, images):
    for name, status in (("bad", 1), ("clean", 0)):
        tar = _scan(str(images[name].path), "--json")
        reg = _scan(f"docker://{open_registry.host}/team/{name}:1", "--json")
        assert (tar.returncode, reg.returncode) == (status, status), (tar.stderr, reg.stderr)
        a, b = json.loads(tar.stdout), json.loads(reg.stdout)
        assert a["image.verdict"] == b["image.verdict"] and a["image.reason"] == b["image.reason"]
        assert _findings(a) == _findings(b) and a["container.image.digest"] == b["container.image.digest"]
        assert b["container.image.name"] == f"{open_registry.host}/team/{name}:1"
        assert "containerd.namespace" not in b


def test_a_ref_not_in_containerd_is_pulled_from_its_registry(open_registry, tmp_path):
    """--image-src containerd,registry (the default): no containerd here, so the registry."""
    r = _scan(f"{open_registry.host}/team/bad:1", "--containerd-socket", str(tmp_path / "none.sock"))
    assert r.returncode == 1 and "EICAR" in r.stdout, r.stderr
    r = _scan(f"{open_registry.host}/team/bad:1", "--image-src", "containerd",
              "--containerd-socket", str(tmp_path / "none.sock"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr, r.stderr
    r = _scan(f"{open_registry.host}/team/absent:1", "--image-src", "registry")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not-found" in r.stderr or "not found" in r.stderr, \
        r.stderr
    r = _scan(f"{open_registry.host}/team/bad:1", "--image-src", "disk")
    assert r.returncode == 2 and "--image-src" in r.stderr
    r = _scan(f"docker://{open_registry.host}/team/bad:1", "--platform", "linux")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--platform 'linux'" in r.stderr, r.stderr


def test_credentials_from_a_docker_config_or_flags(tmp_path, images):
    why = harness.missing_requirements("htpasswd")
    if why:
        pytest.skip(f"registry with Basic auth: {why}")
    reg = LocalRegistry(tmp_path / "reg", auth="htpasswd").start()
    try:
        reg.push_oci_archive(images["bad"].path, "team/bad:1")
        ref = f"docker://{reg.host}/team/bad:1"
        r = _scan(ref, env={"DOCKER_CONFIG": str(tmp_path / "nothing")})
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "auth" in r.stderr, r.stderr
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode())
                                                        .decode()}}}))
        r = _scan(ref, "--registry-auth-file", str(cfg))
        assert r.returncode == 1 and "EICAR" in r.stdout, r.stderr
        r = _scan(ref, "--username", USER, env={"NODEWARDEN_PASSWORD": PASSWORD, "DOCKER_CONFIG": str(tmp_path)})
        assert r.returncode == 1 and "EICAR" in r.stdout, r.stderr
        r = _scan(ref, "--username", USER, "--password", "wrong", env={"DOCKER_CONFIG": str(tmp_path / "x")})
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    finally:
        reg.stop()


def test_signatures_checked_in_the_registry_and_a_stopped_registry(tmp_path, images):
    why = harness.missing_requirements()
    if why:
        pytest.skip(f"real registry: {why}")
    reg = LocalRegistry(tmp_path / "reg").start()
    try:
        for name in ("signed", "unsigned"):
            reg.push_oci_archive(images["clean"].path if name == "signed" else images["bad"].path, f"team/{name}:1")
        key = ec.generate_private_key(ec.SECP256R1())
        digest = images["clean"].manifest_digest
        payload = simple_signing_payload(f"{reg.host}/team/signed", digest)
        cosign_sign(reg, "team/signed", digest, [(payload, cosign_signature(key, payload))])
        (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        policy = tmp_path / "policy.yaml"
        policy.write_text(f'signatures:\n  - {{images: ["{reg.host}/team/*"], keys: [k.pub]}}\n')
        r = _scan(f"docker://{reg.host}/team/signed:1", "--policy", str(policy), "--json", "--all")
        assert r.returncode == 0, r.stderr
        rules = {f["rule"]: f for f in json.loads(r.stdout)["image.findings"]}
        assert "k.pub" in rules["signature:verified"]["detail"]
        (tmp_path / "clean-policy.yaml").write_text(
            f'categories: {{malware: {{block: off, alert: off}}}}\n'
            f'signatures:\n  - {{images: ["{reg.host}/team/*"], keys: [k.pub]}}\n')
        r = _scan(f"docker://{reg.host}/team/unsigned:1", "--policy", str(tmp_path / "clean-policy.yaml"), "--json")
        assert r.returncode == 1, r.stderr
        assert json.loads(r.stdout)["image.reason"].startswith("integrity/critical signature:unsigned")
    finally:
        reg.stop()
    r = _scan(f"docker://{reg.host}/team/signed:1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unreachable" in r.stderr, r.stderr
