"""NRI's wire protocol on its byte level: ttrpc frames, mux frames, the envelopes' field numbers,
and ttrpc dispatch, all in memory. Expected bytes are written out from the protocol's definition
(containerd/ttrpc PROTOCOL.md, containerd/nri pkg/net/multiplex), not produced by the code under test.
"""

from __future__ import annotations

import struct
import threading
from concurrent.futures import Future

import pytest

from agent.enforce import mux, nri, ttrpc
from agent.enforce.ttrpc import Code, TtrpcError


class InlineExecutor:
    """Runs submitted work at once, so dispatch tests see the answer right after feed()."""

    def submit(self, fn, *args):
        fut = Future()
        fut.set_result(fn(*args))
        return fut


def parse_ttrpc(buf: bytes) -> list[tuple[int, int, int, bytes]]:
    """Independent decoder for assertions: (stream id, type, flags, data) of every whole frame."""
    out = []
    while buf:
        length, sid, mtype, flags = struct.unpack(">IIBB", buf[:10])
        out.append((sid, mtype, flags, buf[10 : 10 + length]))
        buf = buf[10 + length :]
    return out


# -- ttrpc framing ---------------------------------------------------------------------------------


def test_ttrpc_header_layout():
    frame = ttrpc.encode_frame(3, ttrpc.TYPE_REQUEST, 0, b"abc")
    assert frame == b"\x00\x00\x00\x03" b"\x00\x00\x00\x03" b"\x01" b"\x00" b"abc"
    assert ttrpc.encode_frame(0x01020304, ttrpc.TYPE_DATA, ttrpc.FLAG_REMOTE_CLOSED | ttrpc.FLAG_NO_DATA) == (
        b"\x00\x00\x00\x00\x01\x02\x03\x04\x03\x05"
    )


def test_ttrpc_frames_split_across_reads():
    wire = ttrpc.encode_frame(1, 1, 0, b"hello") + ttrpc.encode_frame(3, 2, 0, b"")
    reader = ttrpc.FrameReader()
    got = []
    for i in range(len(wire)):  # one byte per read: every split point of header and data
        got += reader.feed(wire[i : i + 1])
    assert [(f.stream_id, f.type, f.data) for f in got] == [(1, 1, b"hello"), (3, 2, b"")]


def test_ttrpc_frames_joined_in_one_read():
    wire = b"".join(ttrpc.encode_frame(sid, 1, 0, bytes([sid]) * sid) for sid in (1, 3, 5))
    got = ttrpc.FrameReader().feed(wire + ttrpc.encode_frame(7, 1, 0, b"xyz")[:4])
    assert [(f.stream_id, f.data) for f in got] == [(1, b"\x01"), (3, b"\x03" * 3), (5, b"\x05" * 5)]


def test_ttrpc_max_message_size():
    assert len(ttrpc.encode_frame(1, 1, 0, b"\0" * ttrpc.MAX_DATA)) == ttrpc.MAX_DATA + 10
    with pytest.raises(TtrpcError) as e:
        ttrpc.encode_frame(1, 1, 0, b"\0" * (ttrpc.MAX_DATA + 1))
    assert e.value.code == Code.RESOURCE_EXHAUSTED


def test_ttrpc_oversized_frame_is_skipped_and_stream_continues():
    big = ttrpc.MAX_DATA + 5
    wire = struct.pack(">IIBB", big, 9, 1, 0) + b"\xaa" * big + ttrpc.encode_frame(11, 1, 0, b"next")
    reader = ttrpc.FrameReader()
    got = []
    for off in range(0, len(wire), 1 << 20):
        got += reader.feed(wire[off : off + (1 << 20)])
    assert [(f.stream_id, f.oversized, f.data) for f in got] == [(9, big, b""), (11, 0, b"next")]


# -- mux framing -----------------------------------------------------------------------------------


def test_mux_header_layout_and_conn_ids():
    assert (mux.PLUGIN_SERVICE_CONN, mux.RUNTIME_SERVICE_CONN) == (1, 2)
    assert mux.encode(2, b"hi") == b"\x00\x00\x00\x02\x00\x00\x00\x02hi"
    with pytest.raises(ValueError):
        mux.encode(0, b"x")


def test_mux_chunks_large_messages_for_the_go_reader():
    data = bytes(range(256)) * 40  # 10240 bytes
    wire = mux.encode(1, data)
    frames, off = [], 0
    while off < len(wire):
        cid, n = struct.unpack(">II", wire[off : off + 8])
        frames.append((cid, wire[off + 8 : off + 8 + n]))
        off += 8 + n
    assert [len(p) for _, p in frames] == [4096, 4096, 2048]
    assert all(cid == 1 for cid, _ in frames) and b"".join(p for _, p in frames) == data


def test_mux_frames_split_and_joined():
    wire = mux.encode(1, b"a" * 5000) + mux.encode(2, b"b" * 10)
    reader = mux.FrameReader()
    got = []
    for off in range(0, len(wire), 7):
        got += reader.feed(wire[off : off + 7])
    assert [(c, len(p)) for c, p in got] == [(1, 4096), (1, 904), (2, 10)]
    assert [(c, len(p)) for c, p in mux.FrameReader().feed(wire)] == [(1, 4096), (1, 904), (2, 10)]


def test_mux_accepts_big_frames_from_the_go_writer_and_refuses_absurd_ones():
    # Go writes the tail of a large ttrpc message as one frame of up to 10 + 4 MiB.
    big = b"z" * (mux.MAX_PAYLOAD)
    assert mux.FrameReader().feed(struct.pack(">II", 1, len(big)) + big) == [(1, big)]
    with pytest.raises(ttrpc.ProtocolError):
        mux.FrameReader().feed(struct.pack(">II", 1, mux.MAX_PAYLOAD + 1))


class GoTtrpcReadEmulation:
    """How the runtime reads one mux conn: ttrpc's bufio.Reader (4096 bytes) over mux.conn.Read,
    which fails with ENOMEM when a frame is longer than the buffer offered. bufio reads into its
    own 4096-byte buffer, except when it is empty and the caller wants >= 4096 bytes: then it reads
    straight into the caller's buffer, which ttrpc sizes to the rest of the message."""

    def __init__(self):
        self.buf = b""
        self.need = 0  # bytes still missing from the current ttrpc message

    def frame(self, payload: bytes) -> None:
        cap = self.need if self.need >= 4096 else 4096
        if len(payload) > cap:
            raise OSError("ENOMEM: mux frame longer than the reader's buffer")
        self.buf += payload
        while True:
            if len(self.buf) < 10:
                self.need = 0
                return
            length = struct.unpack(">I", self.buf[:4])[0]
            if len(self.buf) < 10 + length:
                self.need = 10 + length - len(self.buf)
                return
            self.buf = self.buf[10 + length :]


def test_chunking_satisfies_the_go_reader():
    message = ttrpc.encode_response(1, payload=b"p" * 200_000)
    go = GoTtrpcReadEmulation()
    for _, payload in mux.FrameReader().feed(mux.encode(1, message)):
        go.frame(payload)
    assert go.buf == b""
    # The emulation is not vacuous: the same message as one frame is what the runtime cannot read.
    with pytest.raises(OSError, match="ENOMEM"):
        GoTtrpcReadEmulation().frame(message)


# -- protobuf envelopes: field numbers ---------------------------------------------------------------


def test_field_numbers_on_the_wire():
    api, env = nri.pb(), ttrpc.pb()
    assert api.RegisterPluginRequest(plugin_name="nw", plugin_idx="10").SerializeToString() == (
        b"\x0a\x02nw" b"\x12\x0210"
    )
    # events is field 2 (varint): CREATE_CONTAINER (4) and START_CONTAINER (6) are bits 3 and 5.
    assert api.ConfigureResponse(events=nri.SUBSCRIBED_EVENTS).SerializeToString() == b"\x10\x28"
    assert api.SynchronizeResponse(more=True).SerializeToString() == b"\x10\x01"
    req = env.Request(service="s", method="m", payload=b"p", timeout_nano=5)
    assert req.SerializeToString() == b"\x0a\x01s" b"\x12\x01m" b"\x1a\x01p" b"\x20\x05"
    assert env.Response(status=env.Status(code=7, message="no"), payload=b"x").SerializeToString() == (
        b"\x0a\x06" b"\x08\x07\x12\x02no" b"\x12\x01x"
    )
    cfg = api.ConfigureRequest.FromString(b"\x12\x0acontainerd\x1a\x02v2\x28\xd0\x0f")
    assert (cfg.runtime_name, cfg.runtime_version, cfg.request_timeout) == ("containerd", "v2", 2000)


# -- ttrpc dispatch --------------------------------------------------------------------------------


def _request(sid: int, method: str, payload: bytes = b"", flags: int = 0) -> bytes:
    req = ttrpc.pb().Request(service="svc", method=method, payload=payload, timeout_nano=2_000_000_000)
    return ttrpc.encode_frame(sid, ttrpc.TYPE_REQUEST, flags, req.SerializeToString())


def _answers(sent: list[bytes]) -> list[tuple[int, int, str, bytes]]:
    out = []
    for sid, mtype, _, data in parse_ttrpc(b"".join(sent)):
        assert mtype == ttrpc.TYPE_RESPONSE
        resp = ttrpc.pb().Response.FromString(data)
        out.append((sid, resp.status.code, resp.status.message, resp.payload))
    return out


def test_server_dispatch_and_errors():
    sent: list[bytes] = []
    deadlines = []

    def echo(payload, deadline):
        deadlines.append(deadline)
        return payload.upper()

    def deny(payload, deadline):
        raise TtrpcError(Code.PERMISSION_DENIED, "verdict: block")

    def broken(payload, deadline):
        raise KeyError("bug")

    server = ttrpc.Server(sent.append, {("svc", "Echo"): echo, ("svc", "Deny"): deny, ("svc", "Bug"): broken},
                          InlineExecutor())
    wire = (_request(1, "Echo", b"abc") + _request(3, "Deny") + _request(5, "Nope") + _request(4, "Echo")
            + _request(3, "Echo") + _request(7, "Bug") + _request(9, "Echo", flags=ttrpc.FLAG_REMOTE_OPEN))
    for off in range(0, len(wire), 5):
        server.feed(wire[off : off + 5])
    got = _answers(sent)
    assert got[0] == (1, 0, "", b"ABC")
    assert got[1][:3] == (3, Code.PERMISSION_DENIED, "verdict: block")
    assert got[2][:2] == (5, Code.UNIMPLEMENTED) and "svc/Nope" in got[2][2]
    assert got[3][:2] == (4, Code.INVALID_ARGUMENT)  # even id: not a client stream
    assert got[4][:2] == (3, Code.INVALID_ARGUMENT)  # re-used id
    assert got[5][:2] == (7, Code.INTERNAL)
    assert got[6][:2] == (9, Code.UNIMPLEMENTED)  # streaming
    assert deadlines[0] is not None


def test_server_answers_oversized_request_and_keeps_serving():
    sent: list[bytes] = []
    server = ttrpc.Server(sent.append, {("svc", "Echo"): lambda p, d: p}, InlineExecutor())
    big = ttrpc.MAX_DATA + 1
    server.feed(struct.pack(">IIBB", big, 1, 1, 0) + b"\0" * big + _request(3, "Echo", b"ok"))
    got = _answers(sent)
    assert got[0][:2] == (1, Code.RESOURCE_EXHAUSTED)
    assert got[1] == (3, 0, "", b"ok")


def test_client_matches_answers_by_stream_id():
    sent: list[bytes] = []
    client = ttrpc.Client(sent.append)
    results = {}

    def call(name, method):
        try:
            results[name] = client.call("svc", method, name.encode(), timeout=5)
        except Exception as e:  # noqa: BLE001 - the test inspects whatever was raised
            results[name] = e

    threads = [threading.Thread(target=call, args=(n, m)) for n, m in (("a", "Ok"), ("b", "Fail"))]
    for t in threads:
        t.start()
    while len(sent) < 2:
        threading.Event().wait(0.01)
    reqs = {ttrpc.pb().Request.FromString(d).method: sid for sid, _, _, d in parse_ttrpc(b"".join(sent))}
    assert sorted(reqs.values()) == [1, 3]  # odd and increasing
    # Answer in reverse order, the error one split in two reads.
    fail = ttrpc.encode_response(reqs["Fail"], code=Code.NOT_FOUND, message="gone")
    client.feed(fail[:6])
    client.feed(fail[6:] + ttrpc.encode_response(reqs["Ok"], payload=b"A"))
    for t in threads:
        t.join(5)
    assert results["a"] == b"A"
    assert isinstance(results["b"], TtrpcError) and results["b"].code == Code.NOT_FOUND


def test_client_close_fails_pending_and_later_calls():
    client = ttrpc.Client(lambda b: None)
    out = []
    t = threading.Thread(target=lambda: out.append(pytest.raises(ttrpc.ConnectionClosed,
                                                                 client.call, "s", "m", b"", 5)))
    t.start()
    threading.Event().wait(0.05)
    client.close("runtime went away")
    t.join(5)
    assert out and "runtime went away" in str(out[0].value)
    with pytest.raises(ttrpc.ConnectionClosed):
        client.call("s", "m", b"", 1)
    with pytest.raises(TimeoutError):
        ttrpc.Client(lambda b: None).call("s", "m", b"", 0.05)


# -- NRI pieces ------------------------------------------------------------------------------------


def test_event_mask_and_container_info():
    assert nri.event_mask(nri.EVENT_CREATE_CONTAINER, nri.EVENT_START_CONTAINER) == 0b101000
    api = nri.pb()
    old = api.Container(id="c1", name="app", annotations={nri.IMAGE_NAME_ANNOTATION: "docker.io/x:1"})
    assert nri._container_info(old).image == "docker.io/x:1"  # NRI < v0.10: annotation only
    new = api.Container(id="c2", image=api.Image(name="reg/y:2", digest="sha256:ab"),
                        annotations={nri.IMAGE_NAME_ANNOTATION: "ignored"})
    info = nri._container_info(new)
    assert (info.image, info.image_digest) == ("reg/y:2", "sha256:ab")


def test_config_validation():
    for bad in (dict(plugin_index="1"), dict(plugin_index="ab"), dict(plugin_name="a b"),
                dict(timeout_action="maybe"), dict(decision_timeout=0)):
        with pytest.raises(ValueError):
            nri.NriConfig(**bad).validate()
    nri.NriConfig().validate()
