"""ttrpc, the RPC protocol containerd speaks to shims and NRI plugins, for unary calls.

Wire format (github.com/containerd/ttrpc, PROTOCOL.md, channel.go): a 10-byte header, then the data.

    data length  u32 big-endian   at most 4 MiB (MAX_DATA); longer messages are refused
    stream id    u32 big-endian   odd for client-initiated streams, increasing per connection
    type         u8               1 request, 2 response, 3 data (streams; unused by NRI)
    flags        u8               1 remote closed, 2 remote open, 4 no data

A request's data is a ttrpc.Request {service, method, payload, timeout_nano, metadata}; the answer on
the same stream id is a ttrpc.Response {status (google.rpc.Status layout), payload}. The messages
are in proto/nri/ttrpc/ttrpc.proto.

This module knows nothing about sockets: `Server` and `Client` are fed the bytes of one logical
connection (`feed`, in whatever pieces they arrive) and write whole encoded messages through a
`send` callable, so that the NRI mux (agent/enforce/mux.py) or a test can carry them. Streaming
(request flag `remote open`, data frames) is not supported: NRI uses unary calls only, and such
requests are answered with an error status, as the Go server does for what it cannot handle.
"""

from __future__ import annotations

import functools
import itertools
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from enum import IntEnum

from agent import genproto

log = logging.getLogger(__name__)

HEADER = struct.Struct(">IIBB")
HEADER_LEN = HEADER.size  # 10
MAX_DATA = 4 << 20  # ttrpc's messageLengthMax: larger data is discarded and answered RESOURCE_EXHAUSTED

TYPE_REQUEST = 0x1
TYPE_RESPONSE = 0x2
TYPE_DATA = 0x3

FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4


class Code(IntEnum):
    """gRPC status codes (google.rpc.Code), which ttrpc reuses in Response.status.code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class TtrpcError(Exception):
    """An error status: raised by a handler to answer with it, or by Client.call when the peer did."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{_code_name(code)}: {message}")
        self.code = int(code)
        self.message = message


class ProtocolError(Exception):
    """The byte stream cannot be parsed any further; the connection has to be dropped."""


class ConnectionClosed(Exception):
    """The connection went away while a call was waiting for its answer."""


def _code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return f"code {code}"


@functools.cache
def pb():
    """The generated ttrpc envelope module (proto/nri/ttrpc/ttrpc.proto)."""
    return genproto.load("nri.ttrpc.ttrpc_pb2")


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    data: bytes
    # Length of data that exceeded MAX_DATA and was skipped (then `data` is empty): the receiver
    # answers RESOURCE_EXHAUSTED on the stream, as ttrpc's channel does, and keeps the connection.
    oversized: int = 0


def encode_frame(stream_id: int, mtype: int, flags: int, data: bytes = b"") -> bytes:
    """One ttrpc frame; raises TtrpcError(RESOURCE_EXHAUSTED) for data over MAX_DATA."""
    if len(data) > MAX_DATA:
        raise TtrpcError(Code.RESOURCE_EXHAUSTED, f"message length {len(data)} exceeds maximum {MAX_DATA}")
    return HEADER.pack(len(data), stream_id, mtype, flags) + data


class FrameReader:
    """Incremental frame decoder: feed it bytes in any split, get whole frames back."""

    def __init__(self, max_data: int = MAX_DATA):
        self._buf = bytearray()
        self._max = max_data
        self._skip = 0  # bytes of an oversized frame still to discard
        self._skipped: Frame | None = None

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        return list(self._frames())

    def _frames(self) -> Iterator[Frame]:
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return
                yield self._skipped
                self._skipped = None
            if len(self._buf) < HEADER_LEN:
                return
            length, stream_id, mtype, flags = HEADER.unpack_from(self._buf)
            if length > self._max:
                # Discard rather than buffer it: the peer gets an error on that stream only.
                self._skip = length
                self._skipped = Frame(stream_id, mtype, flags, b"", oversized=length)
                del self._buf[:HEADER_LEN]
                continue
            if len(self._buf) < HEADER_LEN + length:
                return
            payload = bytes(self._buf[HEADER_LEN : HEADER_LEN + length])
            del self._buf[: HEADER_LEN + length]
            yield Frame(stream_id, mtype, flags, payload)


def encode_response(stream_id: int, payload: bytes = b"", code: int = Code.OK, message: str = "") -> bytes:
    m = pb()
    resp = m.Response(payload=payload)
    if code != Code.OK:
        resp.status.code = int(code)
        resp.status.message = message
    return encode_frame(stream_id, TYPE_RESPONSE, 0, resp.SerializeToString())


# A handler gets the request payload and the caller's deadline (time.monotonic() based, or None
# when the request carried no timeout) and returns the response payload, or raises TtrpcError.
Handler = Callable[[bytes, float | None], bytes]


class Server:
    """Serves unary ttrpc requests arriving on one logical connection.

    Handlers run on `executor`, never on the thread that feeds bytes, so that a slow handler does
    not stop the connection from reading (or the plugin's own calls from getting their answers).
    """

    def __init__(self, send: Callable[[bytes], None], handlers: dict[tuple[str, str], Handler], executor: Executor):
        self._send = send
        self._handlers = dict(handlers)
        self._executor = executor
        self._reader = FrameReader()
        self._last_stream = 0

    def feed(self, data: bytes) -> None:
        for frame in self._reader.feed(data):
            self._on_frame(frame)

    def _on_frame(self, f: Frame) -> None:
        if f.oversized:
            self._reply(f.stream_id, code=Code.RESOURCE_EXHAUSTED,
                        message=f"message length {f.oversized} exceeds maximum message size of {MAX_DATA}")
        elif f.stream_id % 2 != 1:
            self._reply(f.stream_id, code=Code.INVALID_ARGUMENT,
                        message="StreamID must be odd for client initiated streams")
        elif f.type == TYPE_DATA:
            self._reply(f.stream_id, code=Code.INVALID_ARGUMENT, message="StreamID is no longer active")
        elif f.type == TYPE_REQUEST:
            self._on_request(f)
        # Other types are ignored, for compatibility with future protocol versions (as ttrpc does).

    def _on_request(self, f: Frame) -> None:
        if f.stream_id <= self._last_stream:
            self._reply(f.stream_id, code=Code.INVALID_ARGUMENT,
                        message="StreamID cannot be re-used and must increment")
            return
        self._last_stream = f.stream_id
        try:
            req = pb().Request.FromString(f.data)
        except Exception as e:  # protobuf raises DecodeError; any failure means a bad request
            self._reply(f.stream_id, code=Code.INVALID_ARGUMENT, message=f"unmarshal request error: {e}")
            return
        if f.flags & FLAG_REMOTE_OPEN:
            self._reply(f.stream_id, code=Code.UNIMPLEMENTED, message="streaming requests are not supported")
            return
        handler = self._handlers.get((req.service, req.method))
        if handler is None:
            self._reply(f.stream_id, code=Code.UNIMPLEMENTED, message=f"{req.service}/{req.method} not implemented")
            return
        deadline = time.monotonic() + req.timeout_nano / 1e9 if req.timeout_nano > 0 else None
        self._executor.submit(self._run, handler, f.stream_id, req.service, req.method, req.payload, deadline)

    def _run(self, handler: Handler, stream_id: int, service: str, method: str, payload: bytes,
             deadline: float | None) -> None:
        try:
            out = handler(payload, deadline)
        except TtrpcError as e:
            self._reply(stream_id, code=e.code, message=e.message)
            return
        except Exception as e:  # a handler bug must still answer, or the runtime waits out its timeout
            log.exception("ttrpc handler %s/%s failed", service, method)
            self._reply(stream_id, code=Code.INTERNAL, message=f"{method}: {type(e).__name__}: {e}")
            return
        self._reply(stream_id, payload=out)

    def _reply(self, stream_id: int, payload: bytes = b"", code: int = Code.OK, message: str = "") -> None:
        try:
            try:
                frame = encode_response(stream_id, payload, code, message)
            except TtrpcError as e:
                frame = encode_response(stream_id, code=e.code, message=e.message)
            self._send(frame)
        except OSError as e:  # the connection is gone; its reader notices and reports it
            log.debug("ttrpc: cannot answer stream %d: %s", stream_id, e)


class Client:
    """Makes unary ttrpc calls on one logical connection and matches answers to them by stream id."""

    def __init__(self, send: Callable[[bytes], None]):
        self._send = send
        self._reader = FrameReader()
        self._ids = itertools.count(1, 2)  # client streams are odd and increasing
        self._lock = threading.Lock()  # guards _pending and _closed
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._closed: str | None = None

    def call(self, service: str, method: str, payload: bytes, timeout: float) -> bytes:
        """Send one request and wait up to `timeout` s; returns the response payload.

        Raises TtrpcError (the peer's error status), TimeoutError, ConnectionClosed or OSError.
        """
        fut: Future = Future()
        # Allocate the id and send under one lock: the server refuses ids that arrive out of order.
        # It is not the lock feed() takes, so a slow send never holds up the answers being read.
        with self._send_lock:
            with self._lock:
                if self._closed is not None:
                    raise ConnectionClosed(self._closed)
                stream_id = next(self._ids)
                self._pending[stream_id] = fut
            try:
                req = pb().Request(service=service, method=method, payload=payload, timeout_nano=int(timeout * 1e9))
                self._send(encode_frame(stream_id, TYPE_REQUEST, 0, req.SerializeToString()))
            except BaseException:
                with self._lock:
                    self._pending.pop(stream_id, None)
                raise
        try:
            resp = fut.result(timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"{service}/{method}: no answer within {timeout:.1f}s") from None
        finally:
            with self._lock:
                self._pending.pop(stream_id, None)
        if resp.HasField("status") and resp.status.code != Code.OK:
            raise TtrpcError(resp.status.code, resp.status.message)
        return resp.payload

    def feed(self, data: bytes) -> None:
        for f in self._reader.feed(data):
            if f.type != TYPE_RESPONSE:
                continue  # a unary client expects nothing else; ignore, as ttrpc does
            with self._lock:
                fut = self._pending.pop(f.stream_id, None)
            if fut is None:
                continue  # the call already timed out
            if f.oversized:
                fut.set_exception(TtrpcError(Code.RESOURCE_EXHAUSTED, f"response of {f.oversized} bytes refused"))
                continue
            try:
                fut.set_result(pb().Response.FromString(f.data))
            except Exception as e:  # a response that does not parse fails only its own call
                fut.set_exception(ProtocolError(f"bad response on stream {f.stream_id}: {e}"))

    def close(self, reason: str = "connection closed") -> None:
        """Fail every waiting call; later calls raise ConnectionClosed."""
        with self._lock:
            self._closed = reason
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(reason))
