"""Network sensor: connect, accept, bind, listen; packet/raw sockets, sockets dup'ed onto stdio,
unconnected UDP sends (probes/net.bpf.c)."""

from __future__ import annotations

import socket
import struct

from agent.events import NetEvent, Op
from agent.sensors import native
from agent.sensors.abi import NET_EVENT, Probe
from agent.sensors.common import ADDR_MAX, BootClock, Sensor, check_size, escape, header_args

NET_SIZE = NET_EVENT.size
_FIXED = NET_EVENT.span("ret", "_pad")
_TAIL = NET_EVENT.span("fd2", "protocol")
_TAIL_AT = NET_EVENT.offsets["fd2"]
_FIXED_AT = NET_EVENT.offsets["ret"]
_ADDR_AT = NET_EVENT.offsets["addr"]

_OTHER_FAMILIES = {socket.AF_PACKET: "packet", socket.AF_NETLINK: "netlink"}
_SOCK_RAW = 3
_SOCK_TRANSPORT = {1: "tcp", 2: "udp", _SOCK_RAW: "raw", 5: "sctp"}  # SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET


def parse_sockaddr(raw: bytes) -> tuple[str, str, int]:
    """(family, address, port) of a raw sockaddr; ("", "", 0) for one we cannot read."""
    if len(raw) < 2:
        return "", "", 0
    (family,) = struct.unpack_from("<H", raw)
    if family == socket.AF_INET and len(raw) >= 8:
        (port,) = struct.unpack_from("!H", raw, 2)
        return "ipv4", socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        (port,) = struct.unpack_from("!H", raw, 2)
        return "ipv6", socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    if family == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":  # abstract namespace: shown with a leading @ like ss(8) does
            name = "@" + escape(path[1:].split(b"\0", 1)[0])
        else:
            name = escape(path.split(b"\0", 1)[0])
        return "unix", name, 0
    if family in _OTHER_FAMILIES:
        return _OTHER_FAMILIES[family], "", 0
    return f"af{family}", "", 0


_FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6", socket.AF_UNIX: "unix", **_OTHER_FAMILIES}


def _socket_family(raw: bytes) -> str:
    """socket()'s record: addr holds the 2-byte family alone (a short AF_INET sockaddr elsewhere is one
    the kernel could not read, which parse_sockaddr says with "af2")."""
    if len(raw) < 2:
        return ""
    (family,) = struct.unpack_from("<H", raw)
    return _FAMILIES.get(family, f"af{family}")


def decode_net(buf: bytes, clock: BootClock) -> NetEvent:
    check_size(buf, NET_SIZE, "net")
    ret, fd, sock_type, addr_len, backlog, _ = _FIXED.unpack_from(buf, _FIXED_AT)
    fd2, protocol = _TAIL.unpack_from(buf, _TAIL_AT)
    raw = buf[_ADDR_AT : _ADDR_AT + min(addr_len, ADDR_MAX)]
    if buf[0] == Op.NET_SOCKET:
        family, address, port = _socket_family(raw), "", 0
    else:
        family, address, port = parse_sockaddr(raw)
    if family == "unix":
        transport = "unix"
    elif family in ("ipv4", "ipv6", ""):
        transport = _SOCK_TRANSPORT.get(sock_type, "")
    else:  # packet, netlink...: a SOCK_DGRAM there is not UDP
        transport = "raw" if sock_type == _SOCK_RAW else ""
    return NetEvent(*header_args(buf, clock), ret, fd, family, transport, address, port, backlog, fd2, protocol)


SENSOR = Sensor(
    name="net",
    source="net.bpf.c",
    probe=Probe.NET,
    # the compiled decoder when built (agent/sensors/native.py), decode_net being its reference
    decoders=dict.fromkeys((Op.NET_CONNECT, Op.NET_ACCEPT, Op.NET_BIND, Op.NET_LISTEN, Op.NET_SOCKET, Op.NET_DUP,
                             Op.NET_SENDTO), native.decoder("net", decode_net)),
    optional_tracepoints=(("syscalls", "accept"), ("syscalls", "dup2")),  # legacy calls arm64 lacks
)
