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
