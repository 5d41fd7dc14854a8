"""NRI's connection multiplexer: several logical byte streams over the one plugin socket.

Wire format (github.com/containerd/nri, pkg/net/multiplex): every frame is an 8-byte header, then
the payload.

    conn id        u32 big-endian   0 is reserved; NRI uses 1 and 2 (below)
    payload length u32 big-endian   at most 10 + 4 MiB (one whole ttrpc frame)

Opening a logical connection sends nothing: both ends just agree on the ids. On NRI's socket the
plugin serves the runtime's calls (Configure, Synchronize, CreateContainer ...) on conn 1 and calls
the runtime (RegisterPlugin) on conn 2; each conn carries one ttrpc connection.

Chunking, and why: the Go end hands each mux frame to ttrpc as the result of one Read, and ttrpc
reads through a bufio.Reader whose buffer is 4096 bytes. A frame longer than the buffer the reader
offers fails with ENOMEM and the runtime drops the connection, so a frame that starts a ttrpc
message must fit in 4096 bytes. We therefore cut every outgoing message into frames of at most
PEER_READ_CHUNK bytes, which any reader accepts; frames we receive may be up to MAX_PAYLOAD (the Go
writer sends the tail of a large message as one frame).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator

from agent.enforce.ttrpc import HEADER_LEN as TTRPC_HEADER_LEN
from agent.enforce.ttrpc import MAX_DATA as TTRPC_MAX_DATA
from agent.enforce.ttrpc import ProtocolError

log = logging.getLogger(__name__)

HEADER = struct.Struct(">II")
HEADER_LEN = HEADER.size  # 8
PLUGIN_SERVICE_CONN = 1  # the runtime calls the plugin's Plugin service here
RUNTIME_SERVICE_CONN = 2  # the plugin calls the runtime's Runtime service here
MAX_PAYLOAD = TTRPC_HEADER_LEN + TTRPC_MAX_DATA  # the Go writer never sends more in one frame
PEER_READ_CHUNK = 4096  # Go's bufio default size: the largest frame the runtime's ttrpc can read
_RECV_SIZE = 64 << 10
_SEND_TIMEOUT_S = 5  # a runtime that stops reading must not wedge our handlers forever


def encode(conn_id: int, data: bytes, max_frame: int = PEER_READ_CHUNK) -> bytes:
    """`data` on `conn_id` as one or more frames of at most `max_frame` payload bytes each."""
    if conn_id == 0:
        raise ValueError("mux conn id 0 is reserved")
    if not data:
        return HEADER.pack(conn_id, 0)
    parts = []
    for off in range(0, len(data), max_frame):
        chunk = data[off : off + max_frame]
        parts.append(HEADER.pack(conn_id, len(chunk)))
        parts.append(chunk)
    return b"".join(parts)


class FrameReader:
    """Incremental mux decoder: feed bytes in any split, get (conn id, payload) pairs back."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        return list(self._frames())

    def _frames(self) -> Iterator[tuple[int, bytes]]:
        while len(self._buf) >= HEADER_LEN:
            conn_id, length = HEADER.unpack_from(self._buf)
            if length > self._max:
                # No correct peer sends this, and there is no way to resynchronise: drop the trunk.
                raise ProtocolError(f"mux frame of {length} bytes on conn {conn_id} exceeds {self._max}")
            if len(self._buf) < HEADER_LEN + length:
                return
            payload = bytes(self._buf[HEADER_LEN : HEADER_LEN + length])
            del self._buf[: HEADER_LEN + length]
            yield conn_id, payload


class Mux:
    """The multiplexer over one connected socket. `run()` reads until the socket closes."""

    def __init__(self, sock: socket.socket, max_frame: int = PEER_READ_CHUNK):
        self._sock = sock
        self._max_frame = max_frame
        self._write_lock = threading.Lock()
        self._handlers: dict[int, Callable[[bytes], None]] = {}
        self._closed = threading.Event()
        self.dropped_frames = 0  # frames for conn ids nobody opened (the Go mux drops them too)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", _SEND_TIMEOUT_S, 0))
        except OSError:  # not a real socket (a test double): sends then block as they would anyway
            pass

    def register(self, conn_id: int, on_data: Callable[[bytes], None]) -> None:
        """Deliver payloads arriving on `conn_id` to `on_data`, on the reading thread, in order."""
        if conn_id == 0:
            raise ValueError("mux conn id 0 is reserved")
        self._handlers[conn_id] = on_data

    def send(self, conn_id: int, data: bytes) -> None:
        """Write one whole upper-layer message on `conn_id`; raises OSError if the socket is gone.

        The lock keeps the frames of one message contiguous on the trunk: the peer reassembles each
        conn's byte stream from frames, so another message's frames must not land inside it.
        """
        if self._closed.is_set():
            raise BrokenPipeError("mux closed")
        frames = encode(conn_id, data, self._max_frame)
        with self._write_lock:
            try:
                self._sock.sendall(frames)
            except OSError:
                self.close()  # part of a message may be out: the stream cannot be trusted anymore
                raise

    def run(self) -> str:
        """Read and dispatch until EOF, an error or close(); returns why it stopped."""
        reader = FrameReader()
        try:
            while not self._closed.is_set():
                data = self._sock.recv(_RECV_SIZE)
                if not data:
                    return "connection closed by the runtime"
                for conn_id, payload in reader.feed(data):
                    handler = self._handlers.get(conn_id)
                    if handler is None:
                        self.dropped_frames += 1
                        continue
                    handler(payload)
            return "closed"
        except ProtocolError as e:
            return f"protocol error: {e}"
        except OSError as e:
            return "closed" if self._closed.is_set() else f"read error: {e}"
        except Exception as e:  # a bug in a handler: drop this connection, the plugin reconnects
            log.exception("mux: handler failed")
            return f"internal error: {type(e).__name__}: {e}"
        finally:
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in run()
        except OSError:
            pass
        self._sock.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()
