"""A client for OCI Distribution registries (Docker Hub, Harbor, GHCR, `docker-registry`...): just
what the image gate and `nodewarden scan <ref>` need: references, auth, manifests, streamed blobs,
referrers.

Why our own client on urllib3 rather than a library: the OCI clients on PyPI either pull whole blobs
into memory or shell out (oras-py buffers blobs, has its own auth state and no per-call deadline;
docker-py needs a daemon). The protocol we use is six GET/HEAD requests; urllib3 (already in the
environment, well kept, pooled, TLS-verifying) carries them with a deadline on every call, and the
bytes of a layer go straight from the socket to the streamed layer reader, never whole in memory.

- `Reference.parse("alpine")` -> docker.io/library/alpine:latest, Docker's normalisation.
- Auth: a docker-style config.json (`auths`: `auth` base64 or `username`/`password`, keys with or
  without scheme), or explicit credentials (`--registry-auth user:password`). A 401 answers with a
  challenge: `Bearer realm=,service=,scope=` -> a token from the realm (with Basic credentials when
  we have them, anonymous otherwise), cached per scope until it expires; `Basic` -> the credentials.
- Manifests: OCI and Docker v2 schema2; an index (manifest list) resolves to one platform (this
  node's by default). Size capped (`MAX_MANIFEST`), digest checked against the reference's.
- Blobs stream in chunks and are hashed on the way; a mismatch is a RegistryError at the end (the
  scan's adapter, `RegistrySource`, lets the scanner hash instead, so a tampered layer is the same
  integrity finding as in a tarball).
- Referrers: `GET /v2/<name>/referrers/<digest>`; where the registry has no such API (distribution
  2.8), the tag-schema fallback `sha256-<hex>` (OCI distribution-spec 1.1).

Every failure is one RegistryError line naming the registry, what was asked and why (`kind` says
which: unreachable, timeout, tls, not-found, auth, denied, digest, too-large, bad-document (the
registry answered, with a document we cannot use), protocol (any other HTTP failure), reference). It is a
SourceError, so the scanner never caches it and the gate maps it to the policy's on_error.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import urllib3

from agent.imagegate.model import ImageError, SourceError
from agent.imagegate.source import INDEX_TYPES, Source, check_digest, pick_platform

MAX_MANIFEST = 4 << 20  # a manifest is a few KB; an index of many platforms tens of KB
MAX_TOKEN = 1 << 20
CHUNK = 1 << 20
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
ACCEPT = ", ".join((MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST))

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$")
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


class RegistryError(SourceError):
    """A registry request failed: one line for the user; `kind` for the caller's decision."""

    def __init__(self, msg: str, kind: str = "protocol", status: int = 0):
        super().__init__(msg.splitlines()[0][:500] if msg else kind)
        self.kind = kind
        self.status = status  # the HTTP status when the registry answered one


# --- references ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    registry: str  # as written by the user ("docker.io", "127.0.0.1:5000")
    repository: str  # "library/alpine"
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, ref: str) -> Reference:
        """Docker's normalisation: no registry -> docker.io, a one-component name on docker.io ->
        library/NAME, no tag and no digest -> :latest. The first component is a registry when it
        has a '.' or a ':' or is 'localhost' (what `docker pull` decides)."""
        if not isinstance(ref, str) or not ref or len(ref) > 1024 or ref != ref.strip():
            raise RegistryError(f"invalid image reference {str(ref)[:100]!r}", "reference")
        rest, digest = ref, ""
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not re.match(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$", digest):
                raise RegistryError(f"invalid digest in reference {ref[:200]!r}", "reference")
        tag = ""
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
            if not _TAG.match(tag):
                raise RegistryError(f"invalid tag {tag[:130]!r} in reference {ref[:200]!r}", "reference")
        parts = rest.split("/")
        if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            registry, path = parts[0], parts[1:]
            if not _HOST.match(registry):
                raise RegistryError(f"invalid registry {registry[:100]!r} in reference {ref[:200]!r}", "reference")
        else:
            registry, path = DOCKER_HUB, parts
        if registry in ("index.docker.io", "registry-1.docker.io"):
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and len(path) == 1:
            path = ["library", *path]
        if not path or not all(_COMPONENT.match(p) for p in path):
            raise RegistryError(f"invalid repository name in reference {ref[:200]!r} (lowercase, [a-z0-9._-])",
                                "reference")
        if not tag and not digest:
            tag = "latest"
        return cls(registry, "/".join(path), tag, digest)

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """registry/repository, what cosign's docker-reference names."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


# --- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # Docker's refresh token (OAuth2); sent as the token request's password

    def __repr__(self) -> str:  # never in a log line
        return f"Credentials(username={self.username!r}, password=***)"


def parse_user_password(text: str) -> Credentials:
    """`--registry-auth user:password` (or the base64 `auth` of a docker config)."""
    if not isinstance(text, str) or ":" not in text:
        raise RegistryError("registry credentials must be user:password", "auth")
    user, pw = text.split(":", 1)
    if not user:
        raise RegistryError("registry credentials have an empty user name", "auth")
    return Credentials(user, pw)


def _config_key_host(key: str) -> str:
    """`https://index.docker.io/v1/`, `registry.example:5000`, `http://r/` -> the host[:port]."""
    k = key.strip()
    if "://" in k:
        k = urllib.parse.urlsplit(k).netloc or k
    k = k.split("/", 1)[0]
    return DOCKER_HUB if k in ("index.docker.io", "registry-1.docker.io", "docker.io") else k


class DockerConfigAuth:
    """Credentials per registry from a docker-style config.json (`auths` only: the credential
    helpers, `credsStore`/`credHelpers`, run programs, which a node agent must not do on an image's
    behalf). Unreadable config -> RegistryError naming the file; a missing file is no credentials."""

    def __init__(self, path: str | None = None, explicit: dict[str, Credentials] | None = None):
        self.path = path
        self._by_host: dict[str, Credentials] = {}
        if path:
            self._load(path)
        for host, cred in (explicit or {}).items():
            self._by_host[_config_key_host(host)] = cred

    @classmethod
    def default_path(cls) -> str | None:
        """$DOCKER_CONFIG/config.json, ~/.docker/config.json, then the kubelet's /var/lib/kubelet/config.json."""
        cands = []
        if os.environ.get("DOCKER_CONFIG"):
            cands.append(os.path.join(os.environ["DOCKER_CONFIG"], "config.json"))
        cands += [os.path.expanduser("~/.docker/config.json"), "/var/lib/kubelet/config.json"]
        return next((p for p in cands if os.path.isfile(p)), None)

    def _load(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read(MAX_MANIFEST + 1))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise RegistryError(f"registry auth config {path}: {str(e).splitlines()[0] if str(e) else e}",
                                "auth") from None
        auths = doc.get("auths") if isinstance(doc, dict) else None
        if auths is None:
            return
        if not isinstance(auths, dict):
            raise RegistryError(f"registry auth config {path}: 'auths' is not an object", "auth")
        for key, ent in auths.items():
            if not isinstance(ent, dict):
                continue
            cred = None
            if isinstance(ent.get("auth"), str) and ent["auth"]:
                try:
                    cred = parse_user_password(base64.b64decode(ent["auth"], validate=True).decode())
                except (ValueError, RegistryError):
                    raise RegistryError(f"registry auth config {path}: auths[{key[:100]!r}].auth is not "
                                        "base64 of user:password", "auth") from None
            elif isinstance(ent.get("username"), str) and ent["username"]:
                cred = Credentials(ent["username"], str(ent.get("password") or ""))
            if isinstance(ent.get("identitytoken"), str) and ent["identitytoken"]:
                cred = Credentials((cred.username if cred else "") or "<token>", cred.password if cred else "",
                                   ent["identitytoken"])
            if cred is not None:
                self._by_host[_config_key_host(key)] = cred

    def get(self, registry: str) -> Credentials | None:
        return self._by_host.get(_config_key_host(registry))


# --- the client ---------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    h = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    h = h.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"` -> ("bearer", {...})."""
    scheme, _, rest = (header or "").strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


@dataclass
class Manifest:
    """One manifest (or index) document as the registry served it."""

    digest: str  # sha256 of the bytes we received
    media_type: str
    raw: bytes
    doc: dict = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or "manifests" in self.doc


class RegistryClient:
    """One client per process (or per scan): connection pools and tokens are shared, thread-safe.

    timeout: seconds per request (connect and each read); deadline: an optional absolute
    time.monotonic() for a whole operation, which `with client.deadline(seconds)` sets for the
    calls inside it (the gate's timeout covers the manifest, the referrers and the signature blobs).
    insecure: registries spoken to over plain HTTP (loopback ones always are; Docker's default).
    """

    def __init__(self, auth: DockerConfigAuth | None = None, timeout: float = 30.0,
                 insecure: tuple[str, ...] | list[str] = (), ca_file: str | None = None,
                 user_agent: str = "nodewarden-imagegate"):
        self.auth = auth or DockerConfigAuth()
        self.timeout = float(timeout)
        self.insecure = {_config_key_host(h) for h in insecure}
        # Redirects (blob GETs go to S3/CDN) are followed; urllib3 drops Authorization on a
        # redirect to another host. No retries: a registry that fails fails the call, in one line.
        retries = urllib3.Retry(total=8, connect=0, read=0, status=0, other=0, redirect=5, raise_on_redirect=True)
        kw = {"ca_certs": ca_file} if ca_file else {}
        self.http = urllib3.PoolManager(num_pools=16, maxsize=4, retries=retries, **kw)
        self.user_agent = user_agent
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._basic: set[str] = set()  # hosts that asked for Basic: send it up front next time
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- deadline -----------------------------------------------------------------------------

    class _Deadline:
        def __init__(self, client: RegistryClient, seconds: float):
            self.client, self.seconds = client, seconds

        def __enter__(self):
            self.prev = getattr(self.client._local, "deadline", None)
            end = time.monotonic() + self.seconds
            self.client._local.deadline = min(end, self.prev) if self.prev else end
            return self

        def __exit__(self, *exc):
            self.client._local.deadline = self.prev

    def deadline(self, seconds: float) -> RegistryClient._Deadline:
        return RegistryClient._Deadline(self, seconds)

    def _timeout(self, what: str) -> urllib3.Timeout:
        t = self.timeout
        end = getattr(self._local, "deadline", None)
        if end is not None:
            left = end - time.monotonic()
            if left <= 0:
                raise RegistryError(f"{what}: deadline passed", "timeout")
            t = min(t, left)
        return urllib3.Timeout(connect=t, read=t)

    # -- requests -----------------------------------------------------------------------------

    def _base(self, ref: Reference) -> str:
        host = ref.api_host
        scheme = "http" if (_is_loopback(host) or _config_key_host(host) in self.insecure) else "https"
        return f"{scheme}://{host}"

    def _request(self, method: str, ref: Reference, path: str, what: str, headers: dict | None = None,
                 stream: bool = False, scope_actions: str = "pull", ok=(200,), raw: bool = False,
                 ) -> urllib3.BaseHTTPResponse:
        """One request with the auth dance: a 401 with a challenge -> credentials or a token -> once
        more. `what` names the call in errors ("manifest alpine:3"). The caller closes a stream.
        raw: the body as sent (a blob's bytes are what its digest names; a transport encoding on
        them would be a registry bug we report as a mismatch); otherwise Content-Encoding is undone."""
        url = self._base(ref) + path
        scope = f"repository:{ref.repository}:{scope_actions}"
        hdrs = {"User-Agent": self.user_agent, **(headers or {})}
        authz = self._cached_auth(ref, scope)
        for attempt in range(2):
            h = dict(hdrs)
            if authz:
                h["Authorization"] = authz
            resp = self._send(method, url, h, stream, f"{ref.registry}: {what}", raw)
            if resp.status == 401 and attempt == 0:
                challenge = resp.headers.get("WWW-Authenticate", "")
                self._discard(resp)
                authz = self._answer(ref, scope, challenge, what)
                continue
            break
        if resp.status in ok:
            return resp
        status = resp.status
        detail = self._error_detail(resp, stream)
        self._discard(resp)
        kind = {401: "auth", 403: "denied", 404: "not-found"}.get(status, "protocol")
        label = {401: "unauthorized", 403: "denied", 404: "not found", 429: "rate limited"}.get(status, "HTTP")
        raise RegistryError(f"registry {ref.registry}: {what}: {label} ({status}){detail}", kind, status)

    def _send(self, method: str, url: str, headers: dict, stream: bool, what: str, raw: bool = False,
              ) -> urllib3.BaseHTTPResponse:
        try:
            return self.http.request(method, url, headers=headers, preload_content=not stream,
                                     timeout=self._timeout(what), decode_content=not raw)
        except RegistryError:
            raise
        except urllib3.exceptions.MaxRetryError as e:
            raise RegistryError(f"registry {what}: {_net_reason(e.reason)}", _net_kind(e.reason)) from None
        except urllib3.exceptions.HTTPError as e:
            raise RegistryError(f"registry {what}: {_net_reason(e)}", _net_kind(e)) from None
        except OSError as e:
            raise RegistryError(f"registry {what}: {e.strerror or e}", "unreachable") from None

    @staticmethod
    def _discard(resp) -> None:
        try:
            resp.drain_conn()
        except Exception:  # a broken connection is dropped by the pool either way
            pass
        resp.release_conn()

    @staticmethod
    def _error_detail(resp, stream: bool) -> str:
        """The registry's own error code, if its body is the spec's {"errors": [{code, message}]}."""
        try:
            body = (resp.read(4096) if stream else resp.data) or b""
            errs = json.loads(body).get("errors") if body else None
            if isinstance(errs, list) and errs and isinstance(errs[0], dict):
                code, msg = str(errs[0].get("code", ""))[:60], str(errs[0].get("message", ""))[:160]
                return f": {code} {msg}".rstrip()
        except Exception:
            pass
        return ""

    def _cached_auth(self, ref: Reference, scope: str) -> str | None:
        with self._lock:
            tok = self._tokens.get((ref.api_host, scope))
            if tok and tok[1] > time.monotonic():
                return f"Bearer {tok[0]}"
            basic = ref.api_host in self._basic
        if basic:
            cred = self.auth.get(ref.registry)
            if cred:
                return _basic_header(cred)
        return None

    def _answer(self, ref: Reference, scope: str, challenge: str, what: str) -> str:
        scheme, params = parse_challenge(challenge)
        cred = self.auth.get(ref.registry)
        if scheme == "basic":
            if not cred:
                raise RegistryError(f"registry {ref.registry}: {what}: needs credentials (Basic auth) and none "
                                    "are configured for it", "auth")
            with self._lock:
                self._basic.add(ref.api_host)
            return _basic_header(cred)
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(f"registry {ref.registry}: {what}: unauthorized, and its challenge "
                                f"{challenge[:100]!r} is not Basic or Bearer", "auth")
        return f"Bearer {self._token(ref, params, params.get('scope') or scope, scope, cred, what)}"

    def _token(self, ref: Reference, params: dict, scope: str, key: str, cred: Credentials | None,
               what: str) -> str:
        """The token flow of the Docker registry token spec: GET realm?service=&scope= (Basic
        credentials if any) -> {"token"|"access_token", "expires_in"}. Cached under `key`, the
        scope the next request will look up (the challenge may spell it otherwise)."""
        realm = params["realm"]
        u = urllib.parse.urlsplit(realm)
        if u.scheme not in ("https", "http") or not u.netloc:
            raise RegistryError(f"registry {ref.registry}: token realm {realm[:100]!r} is not an http(s) URL", "auth")
        if u.scheme == "http" and not _is_loopback(u.netloc) and _config_key_host(u.netloc) not in self.insecure:
            # Credentials to a plain-HTTP realm would travel in the clear.
            raise RegistryError(f"registry {ref.registry}: token realm {realm[:100]!r} is plain HTTP", "auth")
        q = [("service", params["service"])] if params.get("service") else []
        q += [("scope", s) for s in scope.split(" ") if s]
        if cred and cred.identity_token:
            q.append(("offline_token", "true"))
        url = realm + ("&" if u.query else "?") + urllib.parse.urlencode(q)
        headers = {"User-Agent": self.user_agent}
        if cred:
            headers["Authorization"] = _basic_header(cred)
        resp = self._send("GET", url, headers, True, f"{ref.registry}: token for {what}")
        try:
            body = _read_capped(resp, MAX_TOKEN, f"registry {ref.registry}: token response")
        finally:
            self._discard(resp)
        if resp.status != 200:
            kind = "auth" if resp.status in (401, 403) else "protocol"
            why = "credentials refused" if resp.status in (401, 403) else "token server failed"
            raise RegistryError(f"registry {ref.registry}: {what}: {why} ({resp.status} from {u.netloc})", kind)
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            if not isinstance(token, str) or not token:
                raise ValueError("no token")
            expires = doc.get("expires_in")
            expires = float(expires) if isinstance(expires, (int, float)) and expires > 0 else 60.0
        except (ValueError, AttributeError):
            raise RegistryError(f"registry {ref.registry}: token server {u.netloc} answered without a token",
                                "auth") from None
        with self._lock:
            if len(self._tokens) > 1024:  # bounded: forget all; tokens are cheap to get again
                self._tokens.clear()
            self._tokens[(ref.api_host, key)] = (token, time.monotonic() + max(1.0, expires - 10))
        return token

    # -- the API ------------------------------------------------------------------------------

    def ping(self, ref: Reference) -> None:
        """GET /v2/: the registry answers (200, or 401 which the auth answers)."""
        self._discard(self._request("GET", ref, "/v2/", "ping"))

    def get_manifest(self, ref: Reference, reference: str | None = None) -> Manifest:
        """The manifest or index at a tag or digest (default: the reference's digest, else tag).
        Capped at MAX_MANIFEST; a digest reference must match the bytes received."""
        target = reference or ref.digest or ref.tag
        what = f"manifest {ref.repository}:{target}" if not target.startswith("sha") else \
            f"manifest {ref.repository}@{target}"
        path = f"/v2/{ref.repository}/manifests/{urllib.parse.quote(target, safe=':')}"
        resp = self._request("GET", ref, path, what, {"Accept": ACCEPT}, stream=True)
        try:
            cl = resp.headers.get("Content-Length")
            if cl and cl.isdigit() and int(cl) > MAX_MANIFEST:
                raise RegistryError(f"registry {ref.registry}: {what}: {cl} bytes, larger than "
                                    f"{MAX_MANIFEST}", "too-large")
            raw = _read_capped(resp, MAX_MANIFEST, f"registry {ref.registry}: {what}")
        finally:
            self._discard(resp)
        media = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        want = target if target.startswith(("sha256:", "sha512:")) else ""
        alg = want.split(":", 1)[0] if want else "sha256"
        digest = f"{alg}:{hashlib.new(alg, raw).hexdigest()}"
        if want and digest != want:
            raise RegistryError(f"registry {ref.registry}: {what}: digest mismatch: the bytes served hash to "
                                f"{digest}", "digest")
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise RegistryError(f"registry {ref.registry}: {what}: not valid JSON ({e})", "bad-document") from None
        if not isinstance(doc, dict):
            raise RegistryError(f"registry {ref.registry}: {what}: not a JSON object", "bad-document")
        media = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else media
        if doc.get("schemaVersion") == 1 or "signed+json" in media or (
                "docker" in media and media.endswith("manifest.v1+json")):
            raise RegistryError(f"registry {ref.registry}: {what}: Docker schema 1 manifest (deprecated, "
                                "unsigned content); push the image again with a current client", "bad-document")
        if not media:
            media = MEDIA_OCI_INDEX if "manifests" in doc else MEDIA_OCI_MANIFEST
        return Manifest(digest, media, raw, doc)

    def head_manifest(self, ref: Reference, reference: str) -> str | None:
        """The digest at a tag (Docker-Content-Digest), None when the tag does not exist."""
        path = f"/v2/{ref.repository}/manifests/{urllib.parse.quote(reference, safe=':')}"
        try:
            resp = self._request("HEAD", ref, path, f"manifest {ref.repository}:{reference}", {"Accept": ACCEPT})
        except RegistryError as e:
            if e.kind == "not-found":
                return None
            raise
        self._discard(resp)
        d = resp.headers.get("Docker-Content-Digest", "")
        return d if re.match(r"^sha256:[0-9a-f]{64}$", d) else ""

    def resolve_platform(self, ref: Reference, platform: tuple[str, str, str] | None = None,
                         ) -> tuple[Manifest, Manifest]:
        """(root, image manifest): the root at the reference and, if it is an index, the manifest
        for `platform` ((os, arch, variant), default this node's) inside it."""
        root = self.get_manifest(ref)
        m = root
        for _ in range(4):
            if not m.is_index:
                break
            try:
                desc = pick_platform(m.doc.get("manifests") if isinstance(m.doc.get("manifests"), list) else [],
                                     str(ref), platform)
            except ImageError as e:
                raise RegistryError(str(e), "not-found") from None
            m = self.get_manifest(ref, desc["digest"])
        else:
            raise RegistryError(f"registry {ref.registry}: {ref}: index nesting too deep")
        if m.media_type not in MANIFEST_TYPES and not isinstance(m.doc.get("layers"), list):
            raise RegistryError(f"registry {ref.registry}: {ref}: {m.media_type or 'document'} is not an image "
                                "manifest", "bad-document")
        return root, m

    def blob_chunks(self, ref: Reference, digest: str, verify: bool = True, max_size: int = -1,
                    ) -> Iterator[bytes]:
        """The blob's bytes in chunks of about CHUNK, straight from the socket (never whole in
        memory). verify: hash on the way and raise RegistryError(kind="digest") after the last
        chunk if the bytes are not `digest`. max_size >= 0: RegistryError(kind="too-large") past it."""
        check_digest(digest)
        what = f"blob {ref.repository}@{digest[:19]}"
        resp = self._request("GET", ref, f"/v2/{ref.repository}/blobs/{digest}", what, stream=True, raw=True)
        alg = digest.split(":", 1)[0]
        h = hashlib.new(alg)
        n = 0
        try:
            while True:
                try:
                    self._timeout(what)  # the operation's deadline, between chunks of a slow stream
                    chunk = resp.read(CHUNK)
                except urllib3.exceptions.HTTPError as e:
                    raise RegistryError(f"registry {ref.registry}: {what}: {_net_reason(e)}", _net_kind(e)) from None
                except OSError as e:
                    raise RegistryError(f"registry {ref.registry}: {what}: {e.strerror or e}", "unreachable") from None
                if not chunk:
                    break
                n += len(chunk)
                if 0 <= max_size < n:
                    raise RegistryError(f"registry {ref.registry}: {what}: larger than {max_size} bytes", "too-large")
                if verify:
                    h.update(chunk)
                yield chunk
        finally:
            self._discard(resp)
        if verify and f"{alg}:{h.hexdigest()}" != digest:
            raise RegistryError(f"registry {ref.registry}: {what}: digest mismatch: the bytes served hash to "
                                f"{alg}:{h.hexdigest()}", "digest")

    def read_blob(self, ref: Reference, digest: str, max_size: int) -> bytes:
        """A small blob (a signature payload, a config) whole, verified, capped at max_size."""
        return b"".join(self.blob_chunks(ref, digest, True, max_size))

    def referrers(self, ref: Reference, digest: str, artifact_type: str = "") -> list[dict]:
        """Descriptors of the manifests whose `subject` is `digest`: the referrers API, or, where
        the registry has none (404), the tag-schema fallback index at `sha256-<hex>`. No referrers:
        an empty list. artifact_type filters (the API may filter already; we check again)."""
        check_digest(digest)
        path = f"/v2/{ref.repository}/referrers/{digest}"
        if artifact_type:
            path += "?" + urllib.parse.urlencode({"artifactType": artifact_type})
        what = f"referrers of {ref.repository}@{digest[:19]}"
        doc = None
        try:
            resp = self._request("GET", ref, path, what, {"Accept": MEDIA_OCI_INDEX}, stream=True)
        except RegistryError as e:
            # 404 is the spec's "no referrers API"; some registries say 400, 405 or 501 instead.
            if e.kind != "not-found" and e.status not in (400, 405, 501):
                raise
            resp = None
        if resp is not None:
            try:
                raw = _read_capped(resp, MAX_MANIFEST, f"registry {ref.registry}: {what}")
            finally:
                self._discard(resp)
            ctype = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = None
            if ctype != MEDIA_OCI_INDEX and not (isinstance(doc, dict) and isinstance(doc.get("manifests"), list)):
                doc = None  # something that is not the API answered 200 (a catch-all proxy page)
        if doc is None:
            try:
                doc = self.get_manifest(ref, digest.replace(":", "-", 1)).doc
            except RegistryError as e:
                if e.kind == "not-found":
                    return []
                raise
        out = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(out, list):
            raise RegistryError(f"registry {ref.registry}: {what}: the answer is not an index", "bad-document")
        good = [d for d in out if isinstance(d, dict) and isinstance(d.get("digest"), str)
                and re.match(r"^sha256:[0-9a-f]{64}$", d["digest"])]
        if artifact_type:
            good = [d for d in good if d.get("artifactType") == artifact_type]
        return good

    def close(self) -> None:
        self.http.clear()


def _basic_header(cred: Credentials) -> str:
    pw = cred.identity_token or cred.password
    return "Basic " + base64.b64encode(f"{cred.username}:{pw}".encode()).decode()


def _read_capped(resp, cap: int, what: str) -> bytes:
    parts, n = [], 0
    try:
        while chunk := resp.read(64 << 10):
            n += len(chunk)
            if n > cap:
                raise RegistryError(f"{what}: larger than {cap} bytes", "too-large")
            parts.append(chunk)
    except urllib3.exceptions.HTTPError as e:
        raise RegistryError(f"{what}: {_net_reason(e)}", _net_kind(e)) from None
    except OSError as e:
        raise RegistryError(f"{what}: {e.strerror or e}", "unreachable") from None
    return b"".join(parts)


def _net_kind(e) -> str:
    if isinstance(e, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass in urllib3
        return "unreachable"
    if isinstance(e, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(e, urllib3.exceptions.SSLError):
        return "tls"
    if isinstance(e, urllib3.exceptions.MaxRetryError) and "redirect" in str(e).lower():
        return "protocol"
    return "unreachable"


def _net_reason(e) -> str:
    """A network failure in a few words: 'connection refused', 'timed out after 2.0s', 'TLS: ...'."""
    if isinstance(e, urllib3.exceptions.NewConnectionError):
        s = str(e)
        m = re.search(r"\[Errno -?\d+\] ([^')]+)", s)
        return "unreachable: " + (m.group(1).strip().lower() if m else "cannot connect")
    if isinstance(e, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError)):
        return "timed out"
    if isinstance(e, urllib3.exceptions.TimeoutError):
        return "timed out"
    if isinstance(e, urllib3.exceptions.SSLError):
        return "TLS: " + str(e).splitlines()[0][:200]
    if isinstance(e, urllib3.exceptions.ProtocolError):
        return "connection broken: " + (str(e.args[0]) if e.args else "")[:150]
    s = str(e).splitlines()[0] if str(e) else type(e).__name__
    return s[:200]


# --- the scanner's adapter ----------------------------------------------------------------------


class RegistrySource(Source):
    """An image in a registry as a Source (agent/imagegate/source.py): `ImageScanner.scan()` reads
    it as it reads an OCI tarball. root() fetches the manifest (or index) at the reference; chunks()
    serves manifests from what was fetched and streams every other blob from the registry.

    The adapter does not verify blobs itself: the scanner hashes every blob it reads (read_json and
    LayerScanner), so a tampered layer from a registry is the same integrity finding as in a
    tarball. Registry failures are RegistryError (a SourceError): never cached, on_error.
    """

    def __init__(self, client: RegistryClient, ref: Reference | str, platform: tuple[str, str, str] | None = None):
        self.client = client
        self.ref = Reference.parse(ref) if isinstance(ref, str) else ref
        self.platform = platform  # (os, arch, variant) of an index to scan; None: this node's
        self.name = str(self.ref)
        self._manifests: dict[str, bytes] = {}
        self._manifest_digests: set[str] = set()
        self._root: dict | None = None

    def root(self) -> dict:
        if self._root is None:
            m = self.client.get_manifest(self.ref)
            self._remember(m)
            self._root = {"mediaType": m.media_type, "digest": m.digest, "size": len(m.raw)}
        return self._root

    def _remember(self, m: Manifest) -> None:
        if len(self._manifests) < 16:  # an index and its chosen manifest: a handful of KB
            self._manifests[m.digest] = m.raw
        if m.is_index and isinstance(m.doc.get("manifests"), list):
            for d in m.doc["manifests"][:4096]:
                if isinstance(d, dict) and isinstance(d.get("digest"), str):
                    self._manifest_digests.add(d["digest"])

    def chunks(self, digest: str) -> Iterator[bytes]:
        check_digest(digest)
        if digest in self._manifests:
            yield self._manifests[digest]
            return
        if digest in self._manifest_digests:
            m = self.client.get_manifest(self.ref, digest)
            self._remember(m)
            yield m.raw
            return
        yield from self.client.blob_chunks(self.ref, digest, verify=False)

    def close(self) -> None:
        pass  # the client's pools belong to the caller
