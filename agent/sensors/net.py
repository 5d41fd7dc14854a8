"""Network sensor: connect, accept, bind, listen; packet/raw sockets, sockets dup'ed onto stdio,
unconnected UDP sends (probes/net.bpf.c)."""

from __future__ import annotations

import socket
import struct

from agent.events import NetEvent, Op
from agent.sensors.abi import NET_EVENT, Probe
from agent.sensors.common import ADDR_MAX, BootClock, Sensor, check_size, escape, header_args

NET_SIZE = NET_EVENT.size
_FIXED = NET_EVENT.span("ret", "_pad")
_TAIL = NET_EVENT.span("fd2", "protocol")
_TAIL_AT = NET_EVENT.offsets["fd2"]
_FIXED_AT = NET_EVENT.offsets["ret"]
_ADDR_AT = NET_EVENT.offsets["addr"]

_OTHER_FAMILIES = {socket.AF_PACKET: "packet", socket.AF_NETLINK: "netlink"}
_SOCK_TRANSPORT = {1: "tcp", 2: "udp", 3: "raw", 5: "sctp"}  # SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET


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
    if family in _OTHER_FAMILIES:  # socket(): the record carries only the family
        return _OTHER_FAMILIES[family], "", 0
    return f"af{family}", "", 0


def decode_net(buf: bytes, clock: BootClock) -> NetEvent:
    check_size(buf, NET_SIZE, "net")
    ret, fd, sock_type, addr_len, backlog, _ = _FIXED.unpack_from(buf, _FIXED_AT)
    fd2, protocol = _TAIL.unpack_from(buf, _TAIL_AT)
    family, address, port = parse_sockaddr(buf[_ADDR_AT : _ADDR_AT + min(addr_len, ADDR_MAX)])
    transport = "unix" if family == "unix" else _SOCK_TRANSPORT.get(sock_type, "")
    return NetEvent(*header_args(buf, clock), ret, fd, family, transport, address, port, backlog, fd2, protocol)


SENSOR = Sensor(
    name="net",
    source="net.bpf.c",
    probe=Probe.NET,
    decoders={op: decode_net for op in (Op.NET_CONNECT, Op.NET_ACCEPT, Op.NET_BIND, Op.NET_LISTEN, Op.NET_SOCKET,
                                        Op.NET_DUP, Op.NET_SENDTO)},
    optional_tracepoints=(("syscalls", "accept"),),
)
