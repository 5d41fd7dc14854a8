"""The OCI Distribution client (agent/imagegate/registry.py) against a real registry: Debian's
docker-registry on loopback (tests/harness/registry.py), images pushed with skopeo. References
and docker config auth as the user writes them; manifests (OCI, Docker schema2, an index with a
platform chosen), streamed and verified blobs, referrers through the tag fallback; Basic and token
auth; every failure one RegistryError line (404, bad credentials, digest mismatch, oversized,
registry down, registry hanging) within the timeout; and a scan through RegistrySource equal to
the scan of the same image's OCI tarball."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time

import pytest

from agent.imagegate.config import ImageGateConfig
from agent.imagegate.registry import (
    CHUNK,
    MAX_MANIFEST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    Credentials,
    DockerConfigAuth,
    Reference,
    RegistryClient,
    RegistryError,
    RegistrySource,
    parse_challenge,
)
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import open_path
from tests.harness import registry as harness
from tests.harness.oci import MEDIA_MANIFEST, build_image
from tests.harness.registry import LocalRegistry


def _require(auth=None):
    why = harness.missing_requirements(auth)
    if why:
        pytest.skip(f"real registry: {why}")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    return build_image(d / "app.tar", "nodewarden.test/app:1", {"/opt/app/hello.txt": b"hello registry\n"})


@pytest.fixture(scope="module")
def reg(tmp_path_factory, image):
    _require()
    r = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    try:
        r.push_oci_archive(image.path, "team/app:1")
        yield r
    finally:
        r.stop()


@pytest.fixture
def client():
    c = RegistryClient(timeout=5)
    yield c
    c.close()


# --- references and auth config (no registry) ----------------------------------------------------


@pytest.mark.parametrize("text,want", [
    ("alpine", ("docker.io", "library/alpine", "latest", "")),
    ("alpine:3.19", ("docker.io", "library/alpine", "3.19", "")),
    ("bitnami/redis", ("docker.io", "bitnami/redis", "latest", "")),
    ("index.docker.io/library/alpine:3", ("docker.io", "library/alpine", "3", "")),
    ("ghcr.io/org/team/app:v1.2", ("ghcr.io", "org/team/app", "v1.2", "")),
    ("localhost/app", ("localhost", "app", "latest", "")),
    ("127.0.0.1:5000/a/b@sha256:" + "a" * 64, ("127.0.0.1:5000", "a/b", "", "sha256:" + "a" * 64)),
    ("reg.example:443/x:t@sha256:" + "b" * 64, ("reg.example:443", "x", "t", "sha256:" + "b" * 64)),
])
def test_reference_normalisation(text, want):
    r = Reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == want
    assert Reference.parse(str(r)) == r


@pytest.mark.parametrize("text", ["", " alpine", "Alpine", "a/b:bad tag", "a@sha256:12", "a/../b", "a:" + "x" * 200,
                                  "ghcr.io/", 5])
def test_bad_reference_is_one_line(text):
    with pytest.raises(RegistryError) as e:
        Reference.parse(text)
    assert e.value.kind == "reference" and "\n" not in str(e.value)


def test_docker_hub_talks_to_registry_1():
    assert Reference.parse("alpine").api_host == "registry-1.docker.io"
    assert Reference.parse("alpine").name == "docker.io/library/alpine"


def test_docker_config(tmp_path):
    b64 = base64.b64encode(b"alice:pw:with:colons").decode()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": b64},
        "registry.example:5000": {"username": "bob", "password": "hunter2"},
        "http://other.example/": {"identitytoken": "refresh-xyz"},
        "empty.example": {},
    }, "credsStore": "desktop"}))
    a = DockerConfigAuth(str(cfg), explicit={"flag.example": Credentials("carol", "x")})
    assert a.get("docker.io") == Credentials("alice", "pw:with:colons")
    assert a.get("registry.example:5000") == Credentials("bob", "hunter2")
    assert a.get("other.example").identity_token == "refresh-xyz"
    assert a.get("empty.example") is None and a.get("unknown.example") is None
    assert a.get("flag.example").username == "carol"
    assert "hunter2" not in repr(a.get("registry.example:5000"))


@pytest.mark.parametrize("text,msg", [
    ("{not json", "registry auth config"),
    (json.dumps({"auths": []}), "'auths' is not an object"),
    (json.dumps({"auths": {"r.example": {"auth": "!!notbase64"}}}), "not base64 of user:password"),
    (json.dumps({"auths": {"r.example": {"auth": base64.b64encode(b"nocolon").decode()}}}), "not base64"),
])
def test_docker_config_errors_are_one_line(tmp_path, text, msg):
    cfg = tmp_path / "config.json"
    cfg.write_text(text)
    with pytest.raises(RegistryError) as e:
        DockerConfigAuth(str(cfg))
    assert msg in str(e.value) and "\n" not in str(e.value) and e.value.kind == "auth"


def test_missing_docker_config_is_no_credentials(tmp_path):
    assert DockerConfigAuth(str(tmp_path / "nope.json")).get("docker.io") is None


def test_challenge_parsing():
    s, p = parse_challenge('Bearer realm="https://auth.example/token",service="reg.example",'
                           'scope="repository:a/b:pull,push"')
    assert s == "bearer" and p == {"realm": "https://auth.example/token", "service": "reg.example",
                                   "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    assert parse_challenge("") == ("", {})


# --- a real registry ------------------------------------------------------------------------------


def test_manifest_and_streamed_blobs(reg, image, client):
    ref = Reference.parse(f"{reg.host}/team/app:1")
    root, m = client.resolve_platform(ref)
    assert root.digest == m.digest == image.manifest_digest and m.media_type == MEDIA_MANIFEST
    sizes = [len(c) for c in client.blob_chunks(ref, image.layer_digests[0])]
    assert len(sizes) > 1 and max(sizes) <= CHUNK  # streamed, never one read of the whole layer
    assert sum(sizes) == m.doc["layers"][0]["size"]
    cfg = json.loads(client.read_blob(ref, image.config_digest, 1 << 20))
    assert cfg["rootfs"]["diff_ids"] == list(image.diff_ids)
    by_digest = client.get_manifest(ref.with_digest(image.manifest_digest))
    assert by_digest.raw == m.raw
    assert client.head_manifest(ref, "1") == image.manifest_digest
    assert client.head_manifest(ref, "nope") is None


def test_docker_schema2_manifest(reg, image, client):
    r = subprocess.run([harness.SKOPEO, "copy", "--quiet", "--dest-tls-verify=false", "--format", "v2s2",
                        f"oci-archive:{image.path}", f"docker://{reg.host}/team/app-docker:1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ref = Reference.parse(f"{reg.host}/team/app-docker:1")
    root, m = client.resolve_platform(ref)
    assert m.media_type == MEDIA_DOCKER_MANIFEST and m.doc["config"]["digest"] == image.config_digest
    # a scan through the adapter reads the same layer bytes (skopeo recompresses nothing: same digest)
    assert [d["digest"] for d in m.doc["layers"]] == list(image.layer_digests)


def test_index_picks_the_platform(reg, image, client, tmp_path):
    other = build_image(tmp_path / "other.tar", "nodewarden.test/other:1", {"/opt/other": b"arm\n"})
    reg.push_oci_archive(other.path, "team/multi:arm-only")
    ref = Reference.parse(f"{reg.host}/team/multi:1")
    reg.push_oci_archive(image.path, "team/multi:amd-only")
    sizes = {d: len(client.get_manifest(ref, d).raw) for d in (image.manifest_digest, other.manifest_digest)}
    index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [
        {"mediaType": MEDIA_MANIFEST, "digest": other.manifest_digest, "size": sizes[other.manifest_digest],
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": MEDIA_MANIFEST, "digest": image.manifest_digest, "size": sizes[image.manifest_digest],
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    idx_digest = reg.push_manifest("team/multi", "1", index, MEDIA_OCI_INDEX)
    root, m = client.resolve_platform(ref, ("linux", "amd64", ""))
    assert root.digest == idx_digest and root.is_index and m.digest == image.manifest_digest
    _, m = client.resolve_platform(ref, ("linux", "arm64", "v8"))
    assert m.digest == other.manifest_digest
    with pytest.raises(RegistryError, match="no manifest for linux/s390x") as e:
        client.resolve_platform(ref, ("linux", "s390x", ""))
    assert "\n" not in str(e.value)
    # the scanner's adapter: the node's platform, or the one asked for
    res = RegistrySource(client, ref, ("linux", "arm64", "v8")).resolve()
    assert res.digest == idx_digest and res.manifest_digest == other.manifest_digest
    assert RegistrySource(client, ref, ("linux", "amd64", "")).resolve().manifest_digest == image.manifest_digest


def test_not_found_is_one_line(reg, client):
    for ref, what in ((f"{reg.host}/team/app:nope", "manifest team/app:nope"),
                      (f"{reg.host}/team/absent:1", "manifest team/absent:1")):
        with pytest.raises(RegistryError) as e:
            client.get_manifest(Reference.parse(ref))
        assert e.value.kind == "not-found" and what in str(e.value) and "404" in str(e.value)
        assert "\n" not in str(e.value)
    with pytest.raises(RegistryError) as e:
        list(client.blob_chunks(Reference.parse(f"{reg.host}/team/app:1"), "sha256:" + "0" * 64))
    assert e.value.kind == "not-found" and "BLOB_UNKNOWN" in str(e.value)


def test_blob_digest_mismatch(tmp_path, client):
    _require()
    img = build_image(tmp_path / "t.tar", "nodewarden.test/t:1", {"/opt/t": b"tampered later\n"})
    with LocalRegistryRunning(tmp_path / "reg") as r:
        r.push_oci_archive(img.path, "team/t:1")
        r.corrupt_blob(img.layer_digests[0])
        ref = Reference.parse(f"{r.host}/team/t:1")
        with pytest.raises(RegistryError) as e:
            list(client.blob_chunks(ref, img.layer_digests[0]))
        assert e.value.kind == "digest" and "digest mismatch" in str(e.value) and "\n" not in str(e.value)
        # without verification the bytes come through (the scanner hashes them itself)
        assert sum(len(c) for c in client.blob_chunks(ref, img.layer_digests[0], verify=False)) > 0
        # a manifest served for a digest reference must hash to it
        r.corrupt_blob(img.manifest_digest, r.blob_path(img.manifest_digest).read_bytes().replace(b"{", b"{ ", 1))
        with pytest.raises(RegistryError) as e:
            client.get_manifest(ref.with_digest(img.manifest_digest))
        assert e.value.kind == "digest" and "\n" not in str(e.value)


class HostileRegistry:
    """A server that answers like a registry would not: a manifest larger than any (with and
    without Content-Length). distribution itself refuses to serve one, so this is a few lines of
    http.server speaking HTTP/1.1."""

    def __init__(self, body: bytes, length: bool):
        import http.server

        body_, length_ = body, length

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", MEDIA_MANIFEST)
                if length_:
                    self.send_header("Content-Length", str(len(body_)))
                    self.end_headers()
                    self.wfile.write(body_)
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body_), 65536):
                        part = body_[i:i + 65536]
                        try:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        except OSError:
                            return  # the client stopped reading: what it should do
                    self.wfile.write(b"0\r\n\r\n")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("length", [True, False])
def test_oversized_manifest(client, length):
    big = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "pad": "x" * (MAX_MANIFEST + 10)}).encode()
    with HostileRegistry(big, length) as host:
        with pytest.raises(RegistryError) as e:
            client.get_manifest(Reference.parse(f"{host}/team/big:1"))
    assert e.value.kind == "too-large" and "larger than" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_blob_redirect_drops_credentials(client):
    """Registries send blob GETs to storage elsewhere (S3, a CDN) with a redirect: followed, and
    the registry's credentials stay with the registry (urllib3 drops Authorization across hosts)."""
    import hashlib
    import http.server

    data = b"layer bytes from the storage host" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    seen = {}

    class Storage(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen["storage_auth"] = self.headers.get("Authorization")
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    storage = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Storage)

    class Registry(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if not self.headers.get("Authorization"):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            seen["registry_auth"] = self.headers.get("Authorization")
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.2:{storage.server_address[1]}/bucket/blob?sig=1")
            self.send_header("Content-Length", "0")
            self.end_headers()

    registry = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    for srv in (storage, registry):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{registry.server_address[1]}"
        c = RegistryClient(DockerConfigAuth(explicit={host: Credentials("u", "p")}), timeout=5)
        got = b"".join(c.blob_chunks(Reference.parse(f"{host}/team/app:1"), digest))
        assert got == data and seen["registry_auth"].startswith("Basic ") and seen["storage_auth"] is None
    finally:
        for srv in (storage, registry):
            srv.shutdown()
            srv.server_close()


def test_referrers_tag_fallback(reg, image, client):
    """distribution 2.8 has no referrers API (404): the fallback index at sha256-<hex> answers."""
    ref = Reference.parse(f"{reg.host}/team/app:1")
    assert client.referrers(ref, image.manifest_digest) == []
    cfg = reg.push_blob("team/app", b"{}")
    blob = reg.push_blob("team/app", b"an artifact")
    art = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "artifactType": "application/x.nw-test",
           "config": {"mediaType": "application/vnd.oci.empty.v1+json", **cfg},
           "layers": [{"mediaType": "application/octet-stream", **blob}],
           "subject": {"mediaType": MEDIA_MANIFEST, "digest": image.manifest_digest, "size": 1}}
    raw = json.dumps(art).encode()
    d = reg.push_manifest("team/app", "sha256:" + __import__("hashlib").sha256(raw).hexdigest(), raw)
    fallback = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [
        {"mediaType": MEDIA_MANIFEST, "digest": d, "size": len(raw), "artifactType": "application/x.nw-test"}]}
    reg.push_manifest("team/app", image.manifest_digest.replace(":", "-"), fallback, MEDIA_OCI_INDEX)
    got = client.referrers(ref, image.manifest_digest)
    assert [x["digest"] for x in got] == [d]
    assert client.referrers(ref, image.manifest_digest, "application/x.nw-test") == got
    assert client.referrers(ref, image.manifest_digest, "application/other") == []


def test_scan_through_registry_equals_tarball(reg, image, client):
    """The adapter feeds the scanner the same documents and layer bytes as the OCI tarball."""
    scanner = ImageScanner(ImageGateConfig(cache_path=""))
    via_tar = scanner.scan(open_path(str(image.path)))
    scanner = ImageScanner(ImageGateConfig(cache_path=""))  # a fresh cache: the registry path really reads
    src = RegistrySource(client, f"{reg.host}/team/app:1")
    via_reg = scanner.scan(src)
    assert via_reg.digest == via_tar.digest == image.manifest_digest
    assert via_reg.manifest_digest == via_tar.manifest_digest and via_reg.layers == via_tar.layers
    assert sorted(f.to_dict()["rule"] for f in via_reg.findings) == sorted(
        f.to_dict()["rule"] for f in via_tar.findings)
    assert via_reg.bytes_scanned == via_tar.bytes_scanned > 0
    assert via_reg.image == f"{reg.host}/team/app:1"


def test_scan_of_tampered_layer_is_an_integrity_finding(tmp_path, client):
    _require()
    img = build_image(tmp_path / "t.tar", "nodewarden.test/t:1")
    with LocalRegistryRunning(tmp_path / "reg") as r:
        r.push_oci_archive(img.path, "team/t:1")
        r.corrupt_blob(img.layer_digests[0])
        rep = ImageScanner(ImageGateConfig(cache_path="")).scan(RegistrySource(client, f"{r.host}/team/t:1"))
        assert "blob-digest-mismatch" in {f.rule for f in rep.findings}


# --- auth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_auth_flows(tmp_path, image, mode):
    _require(mode)
    with LocalRegistryRunning(tmp_path / "reg", auth=mode) as r:
        r.push_oci_archive(image.path, "team/private:1")
        ref = Reference.parse(f"{r.host}/team/private:1")
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps({"auths": {r.host: {"auth": base64.b64encode(
            f"{harness.USER}:{harness.PASSWORD}".encode()).decode()}}}))
        good = RegistryClient(DockerConfigAuth(str(cfg)), timeout=5)
        _, m = good.resolve_platform(ref)
        assert m.digest == image.manifest_digest
        assert sum(len(c) for c in good.blob_chunks(ref, image.layer_digests[0])) > 0
        if mode == "token":
            asked = [q for q in r.token.requests if q["query"].get("scope") == ["repository:team/private:pull"]]
            assert len(asked) == 1 and asked[0]["auth"]  # one token for the manifest and the blob: cached
        for creds, want in ((None, "needs credentials" if mode == "htpasswd" else "credentials refused"),
                            (Credentials(harness.USER, "wrong"), "unauthorized" if mode == "htpasswd"
                             else "credentials refused")):
            bad = RegistryClient(DockerConfigAuth(explicit={r.host: creds} if creds else None), timeout=5)
            with pytest.raises(RegistryError) as e:
                bad.get_manifest(ref)
            assert e.value.kind == "auth" and want in str(e.value) and "\n" not in str(e.value), str(e.value)
            assert harness.PASSWORD not in str(e.value)


# --- down and hanging -----------------------------------------------------------------------------


def test_registry_down_within_timeout(tmp_path, image):
    _require()
    r = LocalRegistry(tmp_path / "reg").start()
    r.push_oci_archive(image.path, "team/app:1")
    host = r.host
    r.stop()
    c = RegistryClient(timeout=2)
    t0 = time.monotonic()
    with pytest.raises(RegistryError) as e:
        c.get_manifest(Reference.parse(f"{host}/team/app:1"))
    assert time.monotonic() - t0 < 2.5
    assert e.value.kind == "unreachable" and "refused" in str(e.value) and "\n" not in str(e.value)


def test_registry_hanging_within_timeout():
    """A registry that accepts and never answers: the request ends at its timeout, one line."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        c = RegistryClient(timeout=1.0)
        ref = Reference.parse(f"127.0.0.1:{srv.getsockname()[1]}/team/app:1")
        t0 = time.monotonic()
        with pytest.raises(RegistryError) as e:
            c.get_manifest(ref)
        assert time.monotonic() - t0 < 2.0 and e.value.kind == "timeout" and "\n" not in str(e.value)
        # a deadline over several calls: the second finds it passed
        with c.deadline(0.5):
            t0 = time.monotonic()
            with pytest.raises(RegistryError):
                c.get_manifest(ref)
            with pytest.raises(RegistryError) as e:
                c.get_manifest(ref)
            assert e.value.kind == "timeout" and time.monotonic() - t0 < 1.5
    finally:
        stop.set()
        t.join(2)
        for s in held:
            s.close()
        srv.close()


class LocalRegistryRunning:
    """A registry of the test's own, stopped on exit (tests that rewrite its storage)."""

    def __init__(self, root, auth=None):
        self.r = LocalRegistry(root, auth)

    def __enter__(self) -> LocalRegistry:
        return self.r.start()

    def __exit__(self, *exc):
        self.r.stop()
