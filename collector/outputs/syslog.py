"""syslog: RFC 5424 messages over UDP (RFC 5426: one message per datagram), TCP (RFC 6587's octet
counting: "<length> <message>", which survives newlines in command lines, unlike LF framing) or TLS
(RFC 5425: the same octet counting inside TLS).

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID key="value" ...] BOM MSG

PRI = facility * 8 + the event's severity (critical 2, high 3, medium 4, low 5, info 6, debug 7);
HOSTNAME the node the event came from; MSGID its event.name; the structured data holds the key
fields (rule, severity, action, node, namespace, pod, container, image, event id) so that a
receiver can index them without parsing MSG; MSG is the one-line summary, or the whole flat record
as JSON with `format: json`. The SD-ID defaults to nodewarden@32473 (32473 is the enterprise number
RFC 5612 sets aside for examples: set `sd_id` to your own).
"""

from __future__ import annotations

import re
import socket
import ssl
from urllib.parse import urlsplit

import orjson

from collector.outputs.base import Output, OutputError, SendError, action, detail, rule, title

FACILITIES = {name: i for i, name in enumerate(
    ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
     "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
     "local7"))}
LEVELS = {"critical": 2, "high": 3, "medium": 4, "warning": 4, "low": 5, "info": 6, "debug": 7}
_SD = (("rule", lambda r: rule(r)), ("severity", lambda r: r.get("event.severity")),
       ("action", lambda r: action(r)), ("node", lambda r: r.get("host.name")),
       ("namespace", lambda r: r.get("k8s.namespace.name")), ("pod", lambda r: r.get("k8s.pod.name")),
       ("container", lambda r: r.get("container.id")), ("image", lambda r: r.get("container.image.name")))
_SD_NAME = re.compile(r'[!-~]{1,32}')  # printable US-ASCII, no space
_BAD_SD_NAME = re.compile(r'[= \]"]')
_BOM = "\ufeff"


def _header_word(s, n: int) -> str:
    """HOSTNAME, APP-NAME and MSGID: printable ASCII without spaces, at most n characters; "-" if none."""
    s = "".join(ch for ch in str(s or "") if "!" <= ch <= "~")[:n]
    return s or "-"


def _sd_value(s) -> str:
    return str(s).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def timestamp(rfc3339: str) -> str:
    """RFC 5424 takes at most 6 digits of fraction; record.py writes 9."""
    m = re.fullmatch(r"(.{19})(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339 or "")
    if not m:
        return "-"
    return f"{m.group(1)}{(m.group(2) or '')[:7]}{m.group(3)}"


def frame(event_id: int, rec: dict, facility: int, app: str = "nodewarden", sd_id: str = "nodewarden@32473",
          fmt: str = "text") -> bytes:
    """One RFC 5424 message (no transport framing)."""
    pri = facility * 8 + LEVELS.get(str(rec.get("event.severity", "")), 6)
    params = [(k, f(rec)) for k, f in _SD] + [("id", event_id)]
    sd = "[" + sd_id + "".join(f' {k}="{_sd_value(v)}"' for k, v in params if v not in (None, "")) + "]"
    if fmt == "json":
        msg = orjson.dumps({**rec, "collector.event.id": event_id}).decode()
    else:
        why = detail(rec)
        msg = f"{title(rec)}{': ' + why if why else ''}"
    head = (f"<{pri}>1 {timestamp(rec.get('timestamp', ''))} {_header_word(rec.get('host.name'), 255)} "
            f"{_header_word(app, 48)} - {_header_word(rec.get('event.name'), 32)} ")
    return (head + sd + " " + _BOM + msg).encode("utf-8", "backslashreplace")


class Syslog(Output):
    type = "syslog"
    own_keys = frozenset({"address", "facility", "app_name", "sd_id", "format", "max_datagram", "tls_ca",
                          "tls_insecure"})

    def __init__(self, spec: dict, where: str):
        super().__init__(spec, where)
        addr = spec.get("address")
        u = urlsplit(addr) if isinstance(addr, str) else None
        try:
            port = u.port if u else None
        except ValueError:
            port = None
        if u is None or u.scheme not in ("udp", "tcp", "tls") or not u.hostname or not port:
            raise OutputError(f"{where}: address must be udp://host:port, tcp://host:port or tls://host:port, "
                              f"not {addr!r}")
        self.proto, self.addr = u.scheme, (u.hostname, port)
        self.ctx = None
        if self.proto == "tls":
            ca = spec.get("tls_ca")
            try:
                self.ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
            except (OSError, ssl.SSLError) as e:
                raise OutputError(f"{where}: tls_ca: {e}") from None
            if spec.get("tls_insecure"):
                self.ctx.check_hostname = False
                self.ctx.verify_mode = ssl.CERT_NONE
        fac = spec.get("facility", "local0")
        if fac not in FACILITIES:
            raise OutputError(f"{where}: facility {fac!r}: expected one of {', '.join(FACILITIES)}")
        self.facility = FACILITIES[fac]
        self.app = spec.get("app_name", "nodewarden")
        self.sd_id = spec.get("sd_id", "nodewarden@32473")
        if not isinstance(self.sd_id, str) or not _SD_NAME.fullmatch(self.sd_id) or _BAD_SD_NAME.search(self.sd_id):
            raise OutputError(f"{where}: sd_id must be 1-32 printable characters without = ] \" or space")
        self.fmt = spec.get("format", "text")
        if self.fmt not in ("text", "json"):
            raise OutputError(f"{where}: format must be text or json")
        # UDP: what one datagram carries; RFC 5426 asks receivers for 2048 at least, IPv4 allows 65507
        self.max_datagram = spec.get("max_datagram", 8192)
        if not isinstance(self.max_datagram, int) or not 480 <= self.max_datagram <= 65507:
            raise OutputError(f"{where}: max_datagram must be 480..65507")
        self._sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            try:
                family = socket.getaddrinfo(*self.addr, type=socket.SOCK_STREAM)[0][0]
                if self.proto == "udp":
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    s.connect(self.addr)  # a fixed peer: ICMP refusals come back as errors
                else:
                    s = socket.create_connection(self.addr, timeout=self.opts.timeout)
                    if self.ctx is not None:
                        s = self.ctx.wrap_socket(s, server_hostname=self.addr[0])
                s.settimeout(self.opts.timeout)
            except OSError as e:
                raise SendError(f"{self.proto}://{self.addr[0]}:{self.addr[1]}: {e}") from None
            self._sock = s
        return self._sock

    def send(self, items: list) -> None:
        while items and not self.abandoned:
            i, rec = items[0]
            msg = frame(i, rec, self.facility, self.app, self.sd_id, self.fmt)
            s = self._socket()
            try:
                if self.proto == "udp":
                    s.send(msg[: self.max_datagram])
                else:
                    s.sendall(b"%d %s" % (len(msg), msg))
            except OSError as e:
                self.close()
                raise SendError(f"{self.proto}://{self.addr[0]}:{self.addr[1]}: {e}") from None
            items.pop(0)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
