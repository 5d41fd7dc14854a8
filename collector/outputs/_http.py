"""One kept-alive HTTP(S) connection per output, from the standard library (http.client): an
output's thread posts one request at a time, so a pool would buy nothing."""

from __future__ import annotations

import http.client
import ssl
from urllib.parse import urlsplit

from collector.outputs.base import OutputError, SendError

HTTP_KEYS = frozenset({"url", "headers", "tls_ca", "tls_insecure"})


class Poster:
    def __init__(self, spec: dict, where: str, timeout: float, path: str = ""):
        url = spec.get("url")
        if not isinstance(url, str) or not url:
            raise OutputError(f"{where}: url is required (http://host:port/path or https://...)")
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise OutputError(f"{where}: url {url!r}: expected http://host[:port]/path or https://...")
        try:
            self.port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise OutputError(f"{where}: url {url!r}: bad port") from None
        headers = spec.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in headers.items()):
            raise OutputError(f"{where}: headers must map names to strings")
        self.host = u.hostname
        self.path = (u.path.rstrip("/") + path if path else u.path or "/") + (f"?{u.query}" if u.query else "")
        self.headers = {"User-Agent": "nodewarden-collector", **headers}
        if u.username:  # http://user:pass@host: basic auth, as curl takes it
            import base64

            cred = base64.b64encode(f"{u.username}:{u.password or ''}".encode()).decode()
            self.headers.setdefault("Authorization", f"Basic {cred}")
        self.timeout = timeout
        self.ctx = None
        if u.scheme == "https":
            ca = spec.get("tls_ca")
            self.ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
            if spec.get("tls_insecure"):
                self.ctx.check_hostname = False
                self.ctx.verify_mode = ssl.CERT_NONE
        self.url = f"{u.scheme}://{u.netloc.rsplit('@', 1)[-1]}{self.path}"
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.ctx is not None:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ctx)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def post(self, body: bytes, content_type: str = "application/json") -> None:
        """Raises SendError: retry=True for what may pass later (no connection, timeout, 5xx, 408, 429)."""
        conn = self._connect()
        try:
            conn.request("POST", self.path, body=body, headers={**self.headers, "Content-Type": content_type})
            resp = conn.getresponse()
            text = resp.read(512)
        except (OSError, http.client.HTTPException) as e:
            self.close()  # a half-used connection is not reused
            raise SendError(f"POST {self.url}: {e.__class__.__name__}: {e}") from None
        if resp.will_close:
            self.close()
        if 200 <= resp.status < 300:
            return
        why = f"POST {self.url}: HTTP {resp.status}: {text.decode('utf-8', 'replace').strip()[:200]}"
        raise SendError(why, retry=resp.status >= 500 or resp.status in (408, 429))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
