"""Client side of the collector's transport security: one channel factory for the exporter and
for `nodewarden events`.

Addresses: `host:port`, or `unix:/path/to.sock` (gRPC's own syntax). TLS is on when any of
ca/cert/key is given: `ca` verifies the collector (the system roots when empty), `cert` +
`key` present a client certificate (mutual TLS). A token is sent on every call as
`authorization: Bearer <token>` metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

# Keepalive finds a collector that vanished without a FIN (node down, network cut) in about
# 45 s instead of the kernel's ~15 minutes; the collector's server options permit it.
_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 15_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class ClientSecurity:
    tls_ca: str = ""  # PEM file of the CA that signed the collector's certificate
    tls_cert: str = ""  # PEM client certificate (mutual TLS)
    tls_key: str = ""  # PEM client key (mutual TLS)
    tls: bool = False  # TLS with the system roots, when no file is given
    server_name: str = ""  # expected name in the collector's certificate, if not the address's host
    token: str = ""
    token_file: str = ""  # read at connect time, so a rotated token is picked up

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls or self.tls_ca or self.tls_cert or self.tls_key)

    def read_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file:
            return Path(self.token_file).read_text().strip()
        return ""


def metadata(sec: ClientSecurity) -> tuple[tuple[str, str], ...]:
    token = sec.read_token()
    return (("authorization", f"Bearer {token}"),) if token else ()


def make_channel(address: str, sec: ClientSecurity, max_message_bytes: int = 16 << 20,
                 options: tuple | list = ()) -> grpc.Channel:
    """`options`: more channel arguments, after ours (profilesync.py: its own reconnect backoff and
    subchannel pool, so one client's outage backoff does not delay another's first call)."""
    options = _KEEPALIVE + [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ] + list(options)
    if not sec.uses_tls:
        return grpc.insecure_channel(address, options=options)
    if bool(sec.tls_cert) != bool(sec.tls_key):
        raise ValueError("mutual TLS needs both a client certificate and its key")
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(sec.tls_ca).read_bytes() if sec.tls_ca else None,
        private_key=Path(sec.tls_key).read_bytes() if sec.tls_key else None,
        certificate_chain=Path(sec.tls_cert).read_bytes() if sec.tls_cert else None,
    )
    if sec.server_name:
        options.append(("grpc.ssl_target_name_override", sec.server_name))
    return grpc.secure_channel(address, creds, options=options)
