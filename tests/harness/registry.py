"""A private OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on loopback.

`LocalRegistry(root, auth=None|"htpasswd"|"token")` writes a config with its own storage dir under
root and a free port on 127.0.0.1, `start()` waits for /v2/ to answer, `stop()` ends it (SIGTERM,
then SIGKILL). Auth modes:
- "htpasswd": Basic auth against an htpasswd file made with Debian's `htpasswd -B` (bcrypt, which
  distribution insists on);
- "token": the registry token flow: the registry answers 401 `Bearer realm=...`, a token server in
  this process (`TokenServer`) checks Basic credentials and issues an ES256 JWT whose x5c header
  carries a self-signed certificate the registry trusts (its rootcertbundle), as distribution's
  token authenticator verifies it.

Images go in with Debian's skopeo (`push_oci_archive`), artifacts the way cosign and notation push
them with `push_blob` / `push_manifest` (the distribution API: POST upload, PUT ?digest=, PUT
manifest). `corrupt_blob()` rewrites a blob in the storage dir, as a broken or hostile registry
would serve it. Nothing listens beyond 127.0.0.1; everything lives under root.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import urllib3

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
HTPASSWD = shutil.which("htpasswd") or "/usr/bin/htpasswd"
USER, PASSWORD = "nwtest", "s3cret-pw"


def missing_requirements(auth: str | None = None) -> str | None:
    """Why a registry cannot run here, or None."""
    for path, pkg in ((REGISTRY, "docker-registry"), (SKOPEO, "skopeo")):
        if not os.path.exists(path):
            return f"{path} not installed (scripts/setup.sh test installs Debian's {pkg})"
    if auth == "htpasswd" and not os.path.exists(HTPASSWD):
        return f"{HTPASSWD} not installed (Debian's apache2-utils)"
    return None


def free_port() -> int:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenServer:
    """The Docker registry token spec's token endpoint, for one user: GET /token?service=&scope=
    with Basic credentials -> {"token", "expires_in"}; scopes granted as asked (a test registry)."""

    def __init__(self, root: Path, service: str, issuer: str = "nodewarden-test-issuer"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.service, self.issuer = service, issuer
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nodewarden test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.bundle = Path(root) / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self.requests: list[dict] = []  # what was asked: the test checks the flow happened
        self._httpd: http.server.ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def issue(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for s in scopes:
            parts = s.split(":")
            if len(parts) >= 3:
                access.append({"type": parts[0], "name": ":".join(parts[1:-1]), "actions": parts[-1].split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": self.issuer, "sub": USER, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def start(self) -> None:
        server = self
        want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet: the test output is the registry's
                pass

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                server.requests.append({"path": u.path, "query": q, "auth": bool(self.headers.get("Authorization"))})
                if u.path != "/token" or self.headers.get("Authorization") != want:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.issue(q.get("scope", [])), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, name="nw-test-token", daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class LocalRegistry:
    def __init__(self, root: Path, auth: str | None = None):
        self.root = Path(root)
        self.storage = self.root / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.token: TokenServer | None = None
        self._log = None
        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=30))

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def _config(self) -> Path:
        auth = ""
        if self.auth == "htpasswd":
            pw = self.root / "htpasswd"
            out = subprocess.run([HTPASSWD, "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True,
                                 timeout=30).stdout
            pw.write_text(out)
            auth = f"auth:\n  htpasswd:\n    realm: nodewarden-test\n    path: {pw}\n"
        elif self.auth == "token":
            self.token = TokenServer(self.root, service=f"nw-test-registry-{self.port}")
            self.token.start()
            auth = (f"auth:\n  token:\n    realm: {self.token.realm}\n    service: {self.token.service}\n"
                    f"    issuer: {self.token.issuer}\n    rootcertbundle: {self.token.bundle}\n")
        elif self.auth:
            raise ValueError(f"unknown auth mode {self.auth!r}")
        text = f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {self.storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{self.port}
  secret: nodewarden-test-{uuid.uuid4().hex}
{auth}"""
        p = self.root / "config.yml"
        p.write_text(text)
        return p

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        cfg = self._config()
        self._log = open(self.log_path, "ab")
        # Its own process group: stop() signals the registry, never the test runner.
        self.proc = subprocess.Popen([REGISTRY, "serve", str(cfg)], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.proc.returncode}: {self.log_tail()}")
            try:
                r = self.http.request("GET", f"http://{self.host}/v2/", timeout=1.0)
                if r.status in (200, 401):
                    return self
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer on {self.host} in {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.token is not None:
            self.token.stop()
            self.token = None

    # -- pushing ----------------------------------------------------------------------------------

    def _creds_args(self, flag: str) -> list[str]:
        return [flag, f"{USER}:{PASSWORD}"] if self.auth else []

    def push_oci_archive(self, archive: str | os.PathLike, repo_tag: str) -> None:
        """`skopeo copy oci-archive:ARCHIVE docker://HOST/REPO:TAG`, digests preserved."""
        cmd = [SKOPEO, "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
               *self._creds_args("--dest-creds"), f"oci-archive:{archive}", f"docker://{self.host}/{repo_tag}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"skopeo copy failed ({r.returncode}): {r.stderr.strip()[-1000:]}")

    def _auth_header(self, repo: str) -> dict:
        if self.auth == "htpasswd":
            return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        if self.auth == "token":
            return {"Authorization": "Bearer " + self.token.issue([f"repository:{repo}:pull,push"])}
        return {}

    def push_blob(self, repo: str, data: bytes) -> dict:
        """Monolithic upload (POST, then PUT ?digest=); returns {digest, size}."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        base = f"http://{self.host}"
        h = self._auth_header(repo)
        r = self.http.request("POST", f"{base}/v2/{repo}/blobs/uploads/", headers=h)
        if r.status != 202:
            raise RuntimeError(f"blob upload start: {r.status} {r.data[:300]!r}")
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else base + loc
        sep = "&" if "?" in loc else "?"
        r = self.http.request("PUT", f"{loc}{sep}digest={digest}", body=data,
                              headers={**h, "Content-Type": "application/octet-stream"})
        if r.status != 201:
            raise RuntimeError(f"blob upload: {r.status} {r.data[:300]!r}")
        return {"digest": digest, "size": len(data)}

    def push_manifest(self, repo: str, reference: str, manifest: dict | bytes,
                      media_type: str = "application/vnd.oci.image.manifest.v1+json") -> str:
        """PUT a manifest (or index) at a tag or digest; returns its digest."""
        raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        r = self.http.request("PUT", f"http://{self.host}/v2/{repo}/manifests/{reference}", body=raw,
                              headers={**self._auth_header(repo), "Content-Type": media_type})
        if r.status != 201:
            raise RuntimeError(f"manifest put {repo}:{reference}: {r.status} {r.data[:300]!r}")
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def corrupt_blob(self, digest: str, data: bytes | None = None) -> None:
        """The registry will serve other bytes under this digest (distribution does not re-hash on read)."""
        p = self.blob_path(digest)
        if data is None:  # one byte in the middle flipped: same size, other hash
            b = bytearray(p.read_bytes())
            b[len(b) // 2] ^= 0xFF
            data = bytes(b)
        p.write_bytes(data)


# --- signatures as cosign and notation push them (made here from the formats' published facts) ----

COSIGN_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
NOTARY_ARTIFACT = "application/vnd.cncf.notary.signature"


def simple_signing_payload(docker_reference: str, digest: str, typ: str = "cosign container image signature"
                           ) -> bytes:
    """cosign's payload (specs/SIGNATURE_SPEC.md), compact JSON as cosign writes it."""
    return json.dumps({"critical": {"identity": {"docker-reference": docker_reference},
                                    "image": {"docker-manifest-digest": digest}, "type": typ},
                       "optional": None}, separators=(",", ":")).encode()


def cosign_signature(private_key, payload: bytes) -> str:
    """base64 of the signature over the payload bytes: ECDSA SHA-256 DER, or Ed25519."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        sig = private_key.sign(payload, ec.ECDSA(hashes.SHA256()))
    else:
        sig = private_key.sign(payload)
    return base64.b64encode(sig).decode()


def cosign_sign(reg: LocalRegistry, repo: str, digest: str, signatures: list[tuple[bytes, str]]) -> str:
    """Push cosign's signature image for `digest`: tag sha256-HEX.sig, one layer per (payload,
    base64 signature), the signature in the layer's annotation. Returns the manifest digest."""
    layers = []
    for payload, sig in signatures:
        layers.append({"mediaType": COSIGN_LAYER, **reg.push_blob(repo, payload),
                       "annotations": {COSIGN_ANNOTATION: sig}})
    config = json.dumps({"architecture": "", "os": "", "config": {}, "rootfs": {
        "type": "layers", "diff_ids": [d["digest"] for d in layers]}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **reg.push_blob(repo, config)},
                "layers": layers}
    return reg.push_manifest(repo, digest.replace(":", "-") + ".sig", manifest)


def make_ca(name: str, key=None, days: int = 30):
    """A self-signed CA certificate (key P-256 unless given) -> (key, cert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "NodeWarden tests")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert, name: str, key=None, code_signing: bool = True, days: int = 10):
    """A signing certificate issued by the CA (Notation wants digitalSignature and the code-signing
    EKU) -> (key, cert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    eku = [ExtendedKeyUsageOID.CODE_SIGNING] if code_signing else [ExtendedKeyUsageOID.SERVER_AUTH]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def notation_envelope(key, chain: list, target: dict, protected_extra: dict | None = None,
                      crit: list | None = None) -> bytes:
    """A Notation JWS envelope (signature-envelope-jws.md), flattened JSON serialization: ES256
    for an EC key (signature r||s), PS256 for RSA. target: {mediaType, digest, size}."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    ecdsa = isinstance(key, ec.EllipticCurvePrivateKey)
    protected = {"alg": "ES256" if ecdsa else "PS256",
                 "crit": crit if crit is not None else ["io.cncf.notary.signingScheme"],
                 "cty": "application/vnd.cncf.notary.payload.v1+json",
                 "io.cncf.notary.signingScheme": "notary.x509",
                 "io.cncf.notary.signingTime": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 **(protected_extra or {})}
    p64 = _b64url(json.dumps(protected, separators=(",", ":")).encode())
    payload64 = _b64url(json.dumps({"targetArtifact": target}, separators=(",", ":")).encode())
    signing_input = f"{p64}.{payload64}".encode()
    if ecdsa:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = key.sign(signing_input, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                       hashes.SHA256())
    return json.dumps({"payload": payload64, "protected": p64, "header": {
        "x5chain": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain],
        "io.cncf.notary.signingAgent": "nodewarden-tests/1"}, "signature": _b64url(sig)}).encode()


def notation_attach(reg: LocalRegistry, repo: str, subject: dict, envelope: bytes) -> str:
    """Push the signature artifact with `subject` and add it to the referrers tag-schema fallback
    index `sha256-HEX` (distribution 2.8 has no referrers API), as notation does against such a
    registry. subject: {mediaType, digest, size}. Returns the signature manifest's digest."""
    empty = reg.push_blob(repo, b"{}")
    env = reg.push_blob(repo, envelope)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": NOTARY_ARTIFACT,
                "config": {"mediaType": OCI_EMPTY, **empty},
                "layers": [{"mediaType": "application/jose+json", **env}], "subject": subject,
                "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}
    raw = json.dumps(manifest).encode()
    digest = reg.push_manifest(repo, "sha256:" + hashlib.sha256(raw).hexdigest(), raw)
    tag = subject["digest"].replace(":", "-")
    r = reg.http.request("GET", f"http://{reg.host}/v2/{repo}/manifests/{tag}",
                         headers={**reg._auth_header(repo), "Accept": OCI_INDEX})
    index = json.loads(r.data) if r.status == 200 else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw),
                               "artifactType": NOTARY_ARTIFACT})
    reg.push_manifest(repo, tag, index, OCI_INDEX)
    return digest
